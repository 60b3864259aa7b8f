//! A smoke run of the benchmark with small counts: every row is measured for
//! both sides and prints a ratio. (No timing is asserted: speed is reported.)
#![allow(clippy::unwrap_used)]

#[tokio::test]
async fn the_benchmark_runs_and_prints_every_row() {
    drop(jobs_test::raw_connection().await); // fail clearly when no broker
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench"))
        .arg("--quick")
        .env("JOBS__AMQP__URL", jobs_test::amqp_url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "bench failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<&str> = stdout.lines().filter(|l| l.starts_with("| ") && !l.starts_with("| row")).collect();
    for expected in [
        "classic: enqueue, sequential awaited",
        "classic: enqueue, 64 concurrent (raw: pipelined)",
        "classic: enqueue, 512 concurrent (raw: pipelined, same messages)",
        "classic: enqueue_many, batches of 1000",
        "classic: drain, prefetch 1",
        "classic: drain, prefetch 1, heartbeats on (framework column) ÷ off (raw column)",
        "classic: drain, concurrency 1, link on its own thread (framework column) ÷ on the jobs' runtime (raw column)",
        "classic: drain, concurrency 50, max_running = 50 (framework column) ÷ unlimited (raw column)",
        "classic: enqueue_iter, 20000 jobs in one call",
        "classic: drain, prefetch 1, a queue with priorities, mixed 0-9",
        "classic: raw amqprs drain, prefetch 300, a queue with priorities, mixed (framework column) ÷ a plain queue (raw column)",
        "quorum: drain, concurrency 50, three weighted queues 6:3:1 (framework column) ÷ one unweighted queue (raw column)",
        "quorum: enqueue, sequential awaited, an ordered type (framework column) ÷ plain (raw column)",
        "quorum: drain, three workers, an ordered type of 16 shards, 1,000 keys (framework column) ÷ unordered at concurrency 16 each (raw column)",
        "classic: 100000 ctx.progress calls in one job (framework column) ÷ the loop without them (raw column)",
        "classic: latency at 200/s, prefetch 1, p99",
        "quorum: enqueue_many, batches of 1000",
        "quorum: drain, prefetch 1",
        "quorum: latency at 200/s, prefetch 1, p99",
        "worker RSS, idle",
    ] {
        let row = rows
            .iter()
            .find(|r| r.starts_with(&format!("| {expected} |")))
            .unwrap_or_else(|| panic!("no row {expected}:\n{stdout}"));
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if !expected.starts_with("worker") {
            let ratio: f64 = cells[4].parse().unwrap_or_else(|_| panic!("no ratio in {row}"));
            // A quick run's latency can meet one broker pause on one side: 0.00 is a ratio too.
            assert!(ratio.is_finite() && ratio >= 0.0, "{row}");
        }
    }
}

#[test]
fn bad_options_are_refused_with_what_they_take() {
    let bench = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench")).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, stderr) = bench(&["--only", "enqueue,speed"]);
    assert!(
        !ok && stderr.contains("invalid value 'speed' for '--only")
            && stderr.contains("possible values: enqueue, drain, heartbeats, link, bulk, latency, memory"),
        "{stderr}"
    );
    // `--help` says what there is, and runs nothing.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bench")).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && help.contains("Usage: bench"), "{help}");
    for part in [
        "enqueue",
        "drain",
        "heartbeats",
        "link",
        "limits",
        "priorities",
        "progress",
        "bulk",
        "latency",
        "memory",
        "--rounds",
        "--quick",
        "--drain-at",
    ] {
        assert!(help.contains(part), "--help lists {part}: {help}");
    }
    assert!(!help.contains("round 1"), "nothing was run: {help}");
    for bad in ["0", "10,x", ""] {
        let (ok, stderr) = bench(&["--drain-at", bad]);
        assert!(!ok && stderr.contains("--drain-at takes a list of prefetch counts"), "{bad}: {stderr}");
    }
}
