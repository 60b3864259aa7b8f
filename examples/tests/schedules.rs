//! Periodic jobs across worker processes, each test on a vhost of its own
//! (the leadership `jobs.scheduler` is one per vhost): a schedule every
//! second from `[[schedules]]` fires each tick once (ids made from the tick,
//! none twice, none missing), by the one worker that leads; after a kill -9
//! of the leader, another leads within seconds and ticks go on, as each
//! schedule's `catch_up` says (at most the tick of the kill twice, under its
//! one id). With every worker down for a while, the new leader catches up.
//! A leader whose link goes silent stops firing before another leads, and
//! the two fire no tick both.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jobs_test::*;

const POLICIES: [&str; 3] = ["skip", "last", "all"];
const LEADS: &str = "this worker leads the scheduler";

fn worker(url: &str, config: &Path, queue: &str, id: &str) -> Process {
    worker_with(url, config, queue, id, &[])
}

fn worker_with(url: &str, config: &Path, queue: &str, id: &str, env: &[(&str, &str)]) -> Process {
    let args = ["--config", config.to_str().unwrap(), "--queues", queue, "--extra-queues", queue, "--id", id];
    let mut env = env.to_vec();
    env.push(("JOBS__AMQP__URL", url));
    Process::start_with(id, env!("CARGO_BIN_EXE_worker"), &args, &env)
}

/// A config file of `[[schedules]]` in a directory of the test's own, removed when dropped.
struct Config {
    dir: PathBuf,
}

impl Config {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("jobs-{name}-{}", unique("cfg")));
        std::fs::create_dir_all(&dir).unwrap();
        Config { dir }
    }

    fn write(&self, file: &str, toml: &str) -> PathBuf {
        let path = self.dir.join(file);
        std::fs::write(&path, toml).unwrap();
        path
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A schedule every second named `name`, whose jobs say `message`, to `queue`.
fn every_second(name: &str, message: &str, queue: &str, catch_up: &str) -> String {
    format!(
        "[[schedules]]\nname = \"{name}\"\ncron = \"* * * * * *\"\njob = \"Task\"\nargs = {{ message = \"{message}\" }}\nqueue = \"{queue}\"\ncatch_up = \"{catch_up}\"\n\n"
    )
}

/// The ticks (Unix seconds) the schedule `schedule` fired, by the `fired` lines of `lines`: tick → times.
fn fired_in(lines: &[String], schedule: &str) -> BTreeMap<i64, usize> {
    let mut ticks = BTreeMap::new();
    let needle = format!("fired schedule={schedule} ");
    for line in lines.iter().filter(|l| l.contains(&needle)) {
        let id = line.split("job.id=").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap();
        let second: i64 = id.rsplit('-').next().unwrap().parse().unwrap_or_else(|_| panic!("a tick id: {id}"));
        *ticks.entry(second).or_default() += 1;
    }
    ticks
}

/// [`fired_in`] over the output of several workers.
fn fired(workers: &[&Process], schedule: &str) -> BTreeMap<i64, usize> {
    let mut all = BTreeMap::new();
    for worker in workers {
        for (tick, n) in fired_in(&worker.lines(), schedule) {
            *all.entry(tick).or_default() += n;
        }
    }
    all
}

/// The seconds of the ticks whose jobs say `message` that ran, in output lines.
fn ran_in(lines: &[String], message: &str) -> BTreeSet<i64> {
    let needle = format!("Received '{message}' (job ");
    lines
        .iter()
        .filter_map(|line| line.split(needle.as_str()).nth(1).and_then(|rest| rest.split(')').next()))
        .map(|id| id.rsplit('-').next().unwrap().parse().unwrap_or_else(|_| panic!("a tick id: {id}")))
        .collect()
}

fn twice(ticks: &BTreeMap<i64, usize>) -> Vec<(i64, usize)> {
    ticks.iter().filter(|(_, n)| **n > 1).map(|(t, n)| (*t, *n)).collect()
}

/// The seconds with no tick between the first and the last.
fn missing(ticks: &BTreeMap<i64, usize>) -> Vec<i64> {
    let (Some(first), Some(last)) = (ticks.keys().next(), ticks.keys().last()) else { return Vec::new() };
    (*first..=*last).filter(|s| !ticks.contains_key(s)).collect()
}

/// The longest run of seconds with no tick, between the first and the last.
fn longest_gap(ticks: &BTreeMap<i64, usize>) -> i64 {
    let seconds: Vec<i64> = ticks.keys().copied().collect();
    seconds.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(0)
}

/// How many ticks a `catching up` line says it fires (`firing=16`).
fn firing(line: &str) -> usize {
    let rest = line.split("firing=").nth(1).unwrap_or_else(|| panic!("no count in {line}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

fn catch_ups<'a>(lines: &'a [String], schedule: &str) -> Vec<&'a String> {
    let needle = format!("schedule={schedule} ");
    lines.iter().filter(|l| l.contains("catching up on missed ticks") && l.contains(&needle)).collect()
}

fn now_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_fires_every_tick_once_and_another_takes_over_after_a_kill_9() {
    let vhost = TestVhost::create("sched-kill").await;
    let url = vhost.url();
    let queue = unique("ticks");
    let raw = raw_connection_to(&url).await;
    let config = Config::new("schedules");
    let names: Vec<String> = POLICIES.iter().map(|p| format!("{queue}-{p}")).collect();
    let toml: String = POLICIES.iter().zip(&names).map(|(p, name)| every_second(name, p, &queue, p)).collect();
    let file = config.write("jobs.toml", &toml);
    let mut workers: Vec<Process> = (0..3).map(|n| worker(&url, &file, &queue, &format!("sched-{n}"))).collect();
    wait_for_consumers(&raw, &queue, 3).await;
    // Twenty seconds of ticks once the first one fired.
    let all_fired = |workers: &[Process], name: &str| fired(&workers.iter().collect::<Vec<_>>(), name);
    wait_until("twenty ticks of each schedule", Duration::from_secs(60), || async {
        names.iter().all(|name| all_fired(&workers, name).len() >= 20)
    })
    .await;
    let leaders: Vec<usize> = (0..3).filter(|&n| workers[n].has(LEADS)).collect();
    assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");
    for (policy, name) in POLICIES.iter().zip(&names) {
        let ticks = all_fired(&workers, name);
        assert!(twice(&ticks).is_empty(), "{policy}: one leader fires each tick once: {ticks:?}");
        assert!(missing(&ticks).is_empty(), "{policy}: every second fired: missing {:?}", missing(&ticks));
        let firers: Vec<usize> = (0..3).filter(|&n| !fired_in(&workers[n].lines(), name).is_empty()).collect();
        assert_eq!(firers, leaders, "{policy}: only the leader fires");
        // Each fired tick's job ran (once confirmed, it is stored).
        wait_until(&format!("{policy}: the fired ticks' jobs to run"), Duration::from_secs(20), || async {
            let ran: BTreeSet<i64> = workers.iter().flat_map(|w| ran_in(&w.lines(), policy)).collect();
            ticks.keys().all(|t| ran.contains(t))
        })
        .await;
    }

    // The leader dies; another leads within seconds and fires on.
    let mut dead = workers.remove(leaders[0]);
    dead.signal(9);
    let killed = Instant::now();
    dead.wait_exit(Duration::from_secs(10)).await;
    let before: Vec<usize> =
        names.iter().map(|name| all_fired(&workers, name).len() + fired(&[&dead], name).len()).collect();
    wait_until("a new leader", Duration::from_secs(15), || async { workers.iter().any(|w| w.has(LEADS)) }).await;
    let takeover = killed.elapsed();
    assert!(takeover < Duration::from_secs(5), "another leads within 5 s of the kill: {takeover:?}");
    wait_until("five ticks of each from the new leader", Duration::from_secs(30), || async {
        names
            .iter()
            .zip(&before)
            .all(|(name, n)| all_fired(&workers, name).len() + fired(&[&dead], name).len() >= n + 5)
    })
    .await;
    assert_eq!(workers.iter().filter(|w| w.has(LEADS)).count(), 1, "one new leader");
    let mut all: Vec<&Process> = workers.iter().collect();
    all.push(&dead);
    let lines: Vec<String> = all.iter().flat_map(|w| w.lines()).collect();
    for (policy, name) in POLICIES.iter().zip(&names) {
        let ticks = fired(&all, name);
        // The one window docs/periodic.md names: the leader killed after a
        // tick's job was confirmed and before its record; the new leader's
        // catch-up fires that tick again, under the same id. At most once.
        let repeated = twice(&ticks);
        assert!(
            repeated.len() <= 1 && repeated.iter().all(|(_, n)| *n == 2),
            "{policy}: at most one tick twice: {repeated:?}"
        );
        let caught = catch_ups(&lines, name);
        match *policy {
            "skip" => assert!(caught.is_empty(), "skip catches nothing up: {caught:?}"),
            "last" => assert!(caught.iter().all(|l| firing(l) == 1), "last: the latest missed tick once: {caught:?}"),
            _ => assert!(missing(&ticks).is_empty(), "all: every missed tick fired: missing {:?}", missing(&ticks)),
        }
    }
    for worker in workers.drain(..) {
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_worker_was_down_the_new_leader_catches_up_as_each_schedule_says() {
    let vhost = TestVhost::create("sched-down").await;
    let url = vhost.url();
    let queue = unique("catch-up");
    let raw = raw_connection_to(&url).await;
    let config = Config::new("catch-up");
    let toml: String = POLICIES.iter().map(|p| every_second(&format!("{queue}-{p}"), p, &queue, p)).collect();
    let file = config.write("jobs.toml", &toml);
    let first = worker(&url, &file, &queue, "catch-up-0");
    wait_for_consumers(&raw, &queue, 1).await;
    wait_until("three ticks of each", Duration::from_secs(30), || async {
        POLICIES.iter().all(|p| fired_in(&first.lines(), &format!("{queue}-{p}")).len() >= 3)
    })
    .await;
    let before = first.stop().await;
    // Every worker down for 10 s: ticks come and nobody fires them (the
    // downtime is the point of the test, so time passes here on purpose).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let second = worker(&url, &file, &queue, "catch-up-1");
    wait_until("the new leader's ticks", Duration::from_secs(30), || async {
        POLICIES.iter().all(|p| fired_in(&second.lines(), &format!("{queue}-{p}")).len() >= 3)
    })
    .await;
    let lines = second.stop().await;
    let both: Vec<String> = before.into_iter().chain(lines.iter().cloned()).collect();
    for policy in POLICIES {
        let name = format!("{queue}-{policy}");
        let ticks = fired_in(&both, &name);
        assert!(twice(&ticks).is_empty(), "{policy}: a tick fired twice: {:?}", twice(&ticks));
        let gap = longest_gap(&ticks);
        let caught = catch_ups(&lines, &name);
        match policy {
            "skip" => {
                assert!(gap >= 9, "skip: the downtime's ticks are not fired: gap {gap} in {ticks:?}");
                assert!(caught.is_empty(), "skip catches nothing up: {caught:?}");
            }
            "last" => {
                assert_eq!(caught.len(), 1, "last: one catch-up: {lines:#?}");
                assert_eq!(firing(caught[0]), 1, "the latest missed tick once: {}", caught[0]);
                assert!(gap >= 8, "last: the older missed ticks are not fired: gap {gap} in {ticks:?}");
            }
            _ => {
                assert_eq!(gap, 0, "all: every missed tick fired: {ticks:?}");
                assert!(caught.len() == 1 && firing(caught[0]) >= 9, "all: each missed tick: {caught:?}");
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_link_goes_silent_stops_firing_and_another_takes_over_with_no_tick_fired_by_both() {
    let vhost = TestVhost::create("sched-cut").await;
    let url = vhost.url();
    let relay = Relay::start().await;
    let relayed = format!("{}/{}", relay.url.rsplit_once('/').unwrap().0, percent_encode(&vhost.name));
    let queue = unique("cut");
    let name = format!("{queue}-tick");
    let raw = raw_connection_to(&url).await;
    let config = Config::new("cut");
    let file = config.write("jobs.toml", &every_second(&name, "tick", &queue, "last"));
    // The first leads through the relay, with AMQP heartbeats every 4 s: the
    // broker gives up on its link some 4 to 8 s after it goes silent.
    let first = worker_with(&relayed, &file, &queue, "cut-0", &[("JOBS__AMQP__HEARTBEAT", "4")]);
    first.wait_line(LEADS, Duration::from_secs(30)).await;
    let second = worker(&url, &file, &queue, "cut-1");
    wait_for_consumers(&raw, &queue, 2).await;
    wait_until("three ticks from the first", Duration::from_secs(30), || async {
        fired_in(&first.lines(), &name).len() >= 3
    })
    .await;
    assert!(!second.has(LEADS), "the second stands by");

    relay.cut();
    let cut = now_seconds();
    let fenced = "fires nothing until it does";
    first.wait_line(fenced, Duration::from_secs(15)).await;
    wait_until("the second to lead", Duration::from_secs(60), || async { second.has(LEADS) }).await;
    wait_until("three ticks from the second", Duration::from_secs(30), || async {
        fired_in(&second.lines(), &name).len() >= 3
    })
    .await;
    let (by_first, by_second) = (fired_in(&first.lines(), &name), fired_in(&second.lines(), &name));
    // Fired means confirmed, and nothing passes the relay after the cut.
    assert!(by_first.keys().all(|t| (*t as f64) < cut), "the first fired nothing after the cut: {by_first:?}");
    let both: Vec<&i64> = by_first.keys().filter(|t| by_second.contains_key(t)).collect();
    assert!(both.is_empty(), "no tick fired by both: {both:?}");
    assert!(twice(&by_second).is_empty(), "{by_second:?}");
    // The first comes back on new connections, as one that stands by.
    wait_until("the first to stand again", Duration::from_secs(60), || async {
        first.count("the scheduler lost its link to the broker") >= 1
    })
    .await;
    let later = fired_in(&first.lines(), &name);
    assert_eq!(later, by_first, "the deposed leader fires nothing more");
    drop(relay);
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_brings_leadership_and_schedules_back_with_no_tick_twice() {
    let node = TestNode::start("sched-restart");
    let url = node.url();
    let queue = unique("restart");
    let name = format!("{queue}-tick");
    let config = Config::new("restart");
    let file = config.write("jobs.toml", &every_second(&name, "tick", &queue, "last"));
    let workers: Vec<Process> = (0..2).map(|n| worker(&url, &file, &queue, &format!("restart-{n}"))).collect();
    let all = || workers.iter().collect::<Vec<_>>();
    wait_until("five ticks", Duration::from_secs(60), || async { fired(&all(), &name).len() >= 5 }).await;
    let leads = workers.iter().map(|w| w.count(LEADS)).sum::<usize>();
    node.restart();
    let before = fired(&all(), &name).len();
    wait_until("a leader again", Duration::from_secs(90), || async {
        workers.iter().map(|w| w.count(LEADS)).sum::<usize>() > leads
    })
    .await;
    wait_until("five ticks after the restart", Duration::from_secs(60), || async {
        fired(&all(), &name).len() >= before + 5
    })
    .await;
    let ticks = fired(&all(), &name);
    assert!(twice(&ticks).is_empty(), "no tick fired twice across the restart: {:?}", twice(&ticks));
    for worker in workers {
        worker.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_rolling_deploy_the_leaders_definitions_fire_and_the_other_worker_says_how_its_differ() {
    let vhost = TestVhost::create("sched-deploy").await;
    let url = vhost.url();
    let queue = unique("deploy");
    let raw = raw_connection_to(&url).await;
    let config = Config::new("deploy");
    let (same, old, new) = (format!("{queue}-same"), format!("{queue}-old"), format!("{queue}-new"));
    let old_file = config
        .write("old.toml", &(every_second(&same, "same", &queue, "last") + &every_second(&old, "old", &queue, "last")));
    let new_file = config
        .write("new.toml", &(every_second(&same, "same", &queue, "last") + &every_second(&new, "new", &queue, "last")));
    let beats = [("JOBS__WORKER__HEARTBEAT_INTERVAL", "1s")];
    let leader = worker_with(&url, &old_file, &queue, "deploy-old", &beats);
    leader.wait_line(LEADS, Duration::from_secs(30)).await;
    let follower = worker_with(&url, &new_file, &queue, "deploy-new", &beats);
    wait_for_consumers(&raw, &queue, 2).await;
    let differ = "differ from the leader's";
    follower.wait_line(differ, Duration::from_secs(30)).await;
    leader.wait_line("a worker has other schedule definitions", Duration::from_secs(30)).await;
    // Several beats later, each said it once.
    let seen = fired_in(&leader.lines(), &same).len();
    wait_until("five more ticks", Duration::from_secs(30), || async {
        fired_in(&leader.lines(), &same).len() >= seen + 5
    })
    .await;
    assert_eq!(follower.count(differ), 1, "said once: {:?}", follower.lines());
    assert_eq!(leader.count("a worker has other schedule definitions"), 1);
    let line = follower.lines().into_iter().find(|l| l.contains(differ)).unwrap();
    assert!(
        line.contains(&format!("only here: {new}")) && line.contains(&format!("only on the leader: {old}")),
        "{line}"
    );
    assert!(fired_in(&follower.lines(), &new).is_empty(), "the follower's own schedule does not fire while it follows");
    // The deploy ends: the old worker stops, the new one leads and fires its own.
    let old_lines = leader.stop().await;
    follower.wait_line(LEADS, Duration::from_secs(30)).await;
    wait_until("the new schedule's ticks", Duration::from_secs(30), || async {
        fired_in(&follower.lines(), &new).len() >= 3
    })
    .await;
    let lines = follower.stop().await;
    assert!(fired_in(&lines, &old).is_empty(), "the new leader does not fire the schedule it lacks");
    let both: Vec<String> = old_lines.into_iter().chain(lines).collect();
    assert!(twice(&fired_in(&both, &same)).is_empty(), "the schedule both define fired each tick once");
}

/// The ids of `tick` jobs that ran under a fresh id (not a tick's: no `-`).
fn fresh_runs(lines: &[String]) -> Vec<String> {
    let needle = "Received 'tick' (job ";
    lines
        .iter()
        .filter_map(|l| l.split(needle).nth(1).and_then(|rest| rest.split(')').next()))
        .filter(|id| !id.contains('-'))
        .map(str::to_owned)
        .collect()
}

/// `worker schedules` of the example binary with `config`, on `url`: (exit code, stdout, stderr).
fn schedules_command(url: &str, config: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--config", config.to_str().unwrap(), "schedules"];
    all.extend_from_slice(args);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
        .args(&all)
        .env("JOBS__AMQP__URL", url)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_schedules_lists_them_with_the_leader_runs_one_now_and_the_metrics_count_them() {
    let vhost = TestVhost::create("sched-cli").await;
    let url = vhost.url();
    let queue = unique("cli");
    let name = format!("{queue}-tick");
    let config = Config::new("cli");
    let file = config.write("jobs.toml", &every_second(&name, "tick", &queue, "last"));
    // No worker with schedules ever ran here: run now says so at once.
    let (code, _, err) = schedules_command(&url, &file, &["run", &name]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no worker with schedules has run on this vhost"), "{err}");
    // One ran and stopped: no leader answers, and the request expires unread.
    let raw = raw_connection_to(&url).await;
    let once = worker(&url, &file, &queue, "cli-once");
    once.wait_line(LEADS, Duration::from_secs(30)).await;
    once.stop().await;
    let started = Instant::now();
    let (code, _, err) = schedules_command(&url, &file, &["run", &name]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("none answered within"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    wait_until("the request to expire", Duration::from_secs(15), || async {
        try_counts(&raw, "jobs.scheduler.run").await.is_some_and(|(ready, _)| ready == 0)
    })
    .await;

    let port = spare_port();
    let addr = format!("127.0.0.1:{port}");
    let args = [
        "--config",
        file.to_str().unwrap(),
        "--queues",
        &queue,
        "--extra-queues",
        &queue,
        "--id",
        "cli-0",
        "--metrics-addr",
        &addr,
    ];
    let running = Process::start_with(
        "cli-0",
        env!("CARGO_BIN_EXE_worker"),
        &args,
        &[("JOBS__AMQP__URL", url.as_str()), ("JOBS__WORKER__HEARTBEAT_INTERVAL", "1s")],
    );
    wait_until("three ticks", Duration::from_secs(30), || async { fired_in(&running.lines(), &name).len() >= 3 }).await;
    assert!(fresh_runs(&running.lines()).is_empty(), "the expired request did not run");

    // The list: cron, time zone, next three, last fired, the leader.
    let row_of = || {
        let (code, out, err) = schedules_command(&url, &file, &["--json"]);
        assert_eq!(code, Some(0), "{err}");
        let list: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
        list.as_array().unwrap().iter().find(|r| r["name"] == name.as_str()).cloned().unwrap()
    };
    wait_until("the list to show the leader", Duration::from_secs(30), || async {
        let row = row_of();
        row["leader"] == "cli-0" && !row["last_fired"].is_null()
    })
    .await;
    let row = row_of();
    assert_eq!((row["cron"].as_str(), row["time_zone"].as_str()), (Some("* * * * * *"), Some("UTC")), "{row}");
    assert_eq!(row["next"].as_array().map(Vec::len), Some(3), "{row}");
    let (code, table, _) = schedules_command(&url, &file, &[]);
    assert!(code == Some(0) && table.contains("leader: cli-0") && table.contains(&name), "{table}");

    // Run now: a fresh id (not a tick's), and the job runs.
    let (code, out, err) = schedules_command(&url, &file, &["run", &name]);
    assert_eq!(code, Some(0), "{err}");
    let id = out.trim().to_owned();
    assert!(id.len() == 24 && !id.contains('-'), "a fresh id: {id}");
    running.wait_line(&format!("Received 'tick' (job {id})"), Duration::from_secs(20)).await;
    assert_eq!(fresh_runs(&running.lines()), vec![id.clone()], "run once");
    let (code, _, err) = schedules_command(&url, &file, &["run", "no-such-schedule"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no schedule `no-such-schedule`"), "{err}");

    // A hostile producer: garbage to the Run now queue, the record of ticks
    // and the leadership's queue. The leader goes on firing and answering.
    let channel = raw.open_channel(None).await.unwrap();
    for (queue, kind) in [
        ("jobs.scheduler.run", "jobs.RunSchedule"),
        ("jobs.schedule.ticks", "tick"),
        ("jobs.schedule.ticks", "last"),
        ("jobs.scheduler", "token"),
    ] {
        for body in [&b"\xc1 not MessagePack"[..], b"", &[0x92, 0x01]] {
            let props = jobs_test::amqprs::BasicProperties::default().with_message_type(kind).finish();
            let args = jobs_test::amqprs::channel::BasicPublishArguments::new("", queue);
            channel.basic_publish(props, body.to_vec(), args).await.unwrap();
        }
    }
    let seen = fired_in(&running.lines(), &name).len();
    wait_until("three more ticks after the garbage", Duration::from_secs(30), || async {
        fired_in(&running.lines(), &name).len() >= seen + 3
    })
    .await;
    let (code, out, err) = schedules_command(&url, &file, &["run", &name]);
    assert_eq!(code, Some(0), "Run now answers after the garbage: {err}");
    running.wait_line(&format!("Received 'tick' (job {})", out.trim()), Duration::from_secs(20)).await;
    assert!(!running.has("panicked"), "{:?}", running.lines());
    assert_eq!(running.count(LEADS), 1, "one lead all along");

    // The metrics.
    let (status, metrics) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{metrics}");
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert_eq!(value("jobs_scheduler_leader "), 1.0, "{metrics}");
    assert!(value(&format!("jobs_schedule_fired_total{{schedule=\"{name}\"}}")) >= 3.0, "{metrics}");
    assert!(value("jobs_schedule_lateness_seconds_count") >= 3.0, "{metrics}");
    running.stop().await;
}
