//! The scheduler's rows. Lateness: three worker processes with one schedule
//! every second; the leader's `fired` log lines say how late each tick's job was
//! confirmed (fire time minus the tick's instant), beside raw amqprs waking
//! at each second and publishing one persistent message with a confirm, in
//! the same run. Load: one leader firing 1,000 schedules (each once a minute,
//! spread over the seconds), its CPU share and memory, beside a worker with
//! no schedules.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobs_core::plumbing::connect;
use jobs_core::AmqpConfig;
use jobs_worker::{Schedule, Worker, WorkerConfig};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::Noop;

/// The queue the schedules' jobs go to (not consumed; deleted after).
pub(crate) const SINK: &str = "bench.sched.sink";

/// `bench schedules <queue> <count>`: a worker consuming `queue` that fires
/// `count` schedules (none: a plain worker; one: every second; more: each
/// once a minute at second `n % 60`) to [`SINK`].
pub(crate) async fn child(queue: String, count: usize) -> Result<(), Box<dyn std::error::Error>> {
    jobs_worker::init_logging(&jobs_worker::LogConfig::default())?;
    let amqp = examples::amqp_config()?;
    let config = WorkerConfig { queues: vec![queue.clone()], ..WorkerConfig::default() };
    let mut builder = Worker::builder().job::<Noop>().queue(queue).amqp(amqp).config(config);
    for n in 0..count {
        let cron = if count == 1 { "* * * * * *".to_owned() } else { format!("{} * * * * *", n % 60) };
        let schedule = Schedule::new(&format!("bench-{n}"), &cron, Noop { sent_micros: 0 }).queue(SINK);
        // No catch-up: the rows time ticks fired on time, not a new leader's missed one.
        builder = builder.schedule(schedule.catch_up(jobs_worker::CatchUp::Skip));
    }
    builder.build()?.run(jobs_worker::stop_signal()).await?;
    Ok(())
}

fn spawn(queue: &str, count: usize) -> Result<tokio::process::Child, Box<dyn std::error::Error>> {
    Ok(tokio::process::Command::new(std::env::current_exe()?)
        .args(["schedules", queue, &count.to_string()])
        .env("RUST_LOG", "warn,jobs_worker::scheduler=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// The lateness (µs) of each tick fired over `secs` by three workers, and of
/// raw amqprs's timed publishes over as long.
pub(crate) async fn lateness(amqp: &AmqpConfig, secs: u64) -> Result<(Vec<u64>, Vec<u64>), Box<dyn std::error::Error>> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    let mut children = Vec::new();
    for n in 0..3 {
        let mut child = spawn(&format!("bench.sched.{n}"), 1)?;
        let stdout = child.stderr.take().ok_or("no log")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(ms) = fired_lateness_ms(&line) {
                    let _ = tx.send((ms * 1000.0) as u64);
                }
            }
        });
        children.push(child);
    }
    drop(tx);
    // From the first tick fired, `secs` of ticks.
    let first = tokio::time::timeout(Duration::from_secs(60), rx.recv()).await?.ok_or("no tick fired")?;
    let mut ours = vec![first];
    let until = Instant::now() + Duration::from_secs(secs);
    while let Ok(Some(late)) = tokio::time::timeout_at(until.into(), rx.recv()).await {
        ours.push(late);
    }
    for mut child in children {
        let _ = child.kill().await;
    }
    let raw = raw_lateness(amqp, secs).await?;
    Ok((ours, raw))
}

/// The `lateness_ms=` of a leader's `fired` line.
fn fired_lateness_ms(line: &str) -> Option<f64> {
    if !line.contains(" fired ") {
        return None;
    }
    line.split("lateness_ms=").nth(1)?.split_whitespace().next()?.parse().ok()
}

/// Raw amqprs: at each whole second, one persistent publish to [`SINK`] and
/// its confirm; how late the confirm came after the second (µs).
async fn raw_lateness(amqp: &AmqpConfig, secs: u64) -> Result<Vec<u64>, Box<dyn std::error::Error>> {
    let connection = connect(amqp, "bench-raw-timer").await?;
    let mut publisher = crate::raw::RawPublisher::open(&connection).await;
    let mut late = Vec::new();
    for _ in 0..secs {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?;
        let next = Duration::from_secs(now.as_secs() + 1);
        tokio::time::sleep(next - now).await;
        publisher.publish(SINK, b"tick".to_vec()).await;
        publisher.wait_confirms().await;
        let at = SystemTime::now().duration_since(UNIX_EPOCH)?;
        late.push(at.saturating_sub(next).as_micros() as u64);
    }
    let _ = connection.close().await;
    Ok(late)
}

/// CPU share (% of one core) and RSS (MB) over `secs` of a leader firing
/// `count` schedules, and of a worker with none, run one after the other.
pub(crate) async fn load(
    amqp: &AmqpConfig,
    count: usize,
    secs: u64,
) -> Result<([(f64, f64); 2], f64), Box<dyn std::error::Error>> {
    let mut out = [(0.0, 0.0); 2];
    let mut beat = 0.0;
    for (slot, n) in out.iter_mut().zip([count, 0]) {
        let mut child = spawn("bench.sched.load", n)?;
        let pid = child.id().ok_or("no pid")?;
        if n > 0 {
            // Measured once it leads (and has read the record of ticks).
            let stdout = child.stderr.take().ok_or("no log")?;
            let mut lines = BufReader::new(stdout).lines();
            tokio::time::timeout(Duration::from_secs(60), async {
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains(" fired ") {
                        break;
                    }
                }
            })
            .await?;
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        } else {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        let (cpu0, t0) = (cpu_ticks(pid)?, Instant::now());
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let (cpu1, elapsed) = (cpu_ticks(pid)?, t0.elapsed());
        if n > 0 {
            beat = largest_beat(amqp).await?;
        }
        let share = (cpu1 - cpu0) as f64 / clock_ticks_per_second() / elapsed.as_secs_f64() * 100.0;
        *slot = (share, crate::status_kb(pid, "VmRSS:")? / 1024.0);
        let _ = child.kill().await;
    }
    Ok((out, beat))
}

/// The largest heartbeat of the last minute in `jobs.events`, kB.
async fn largest_beat(amqp: &AmqpConfig) -> Result<f64, Box<dyn std::error::Error>> {
    let connection = connect(amqp, "bench-beats").await?;
    let since = SystemTime::now() - Duration::from_secs(60);
    let beats = jobs_core::plumbing::events::EventReader::recent(&connection, since, Duration::from_secs(1)).await?;
    let mut largest = 0;
    for beat in beats {
        largest = largest.max(beat.encode()?.len());
    }
    let _ = connection.close().await;
    Ok(largest as f64 / 1024.0)
}

/// User and system time of process `pid`, in clock ticks (`/proc/<pid>/stat`).
fn cpu_ticks(pid: u32) -> Result<u64, Box<dyn std::error::Error>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (u64, u64) =
        (fields.get(11).ok_or("no utime")?.parse()?, fields.get(12).ok_or("no stime")?.parse()?);
    Ok(utime + stime)
}

/// `getconf CLK_TCK`: 100 on Linux everywhere this runs.
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8_lossy(&out.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}
