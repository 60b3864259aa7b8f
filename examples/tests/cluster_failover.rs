//! Losing a cluster node stops no worker and kills no job that never ran.
//! Three nodes, quorum queues, the tutorials' worker (a queue job type and a
//! broadcast type linked in); three workers connected to node 2 with nodes 1
//! and 3 as fallbacks; an app enqueuing 4,000 jobs to node 1. Node 2 stops
//! and comes back, then node 3: every confirmed job runs, none is dead, no
//! worker exits, the workers move to another node, and the jobs that ran
//! twice are no more than were running on the workers that lost the broker,
//! each one that a loss explains (its first run ended before its worker lost
//! the broker, as `docs/delivery-guarantees.md` says). Then the same while a
//! worker is killed -9 twice.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use examples::Task;
use jobs_core::{AmqpConfig, BrokerUrl, Client, QueueType};
use jobs_test::*;

const JOBS: usize = 4000;

fn worker(n: usize, urls: &[String]) -> Process {
    let fallbacks = format!("{},{}", urls[0], urls[2]);
    let env = [
        ("JOBS__AMQP__URL", urls[1].as_str()),
        ("JOBS__AMQP__FALLBACK_URLS", fallbacks.as_str()),
        ("JOBS__AMQP__QUEUE_TYPE", "quorum"),
        ("JOBS__AMQP__HEARTBEAT", "5"),
        // The connection lines say which node a worker is on.
        ("RUST_LOG", "warn,jobs_core::connection=info"),
    ];
    Process::start_with(&format!("w{n}"), env!("CARGO_BIN_EXE_worker"), &["--id", &format!("w{n}"), "-n", "4"], &env)
}

/// Milliseconds since midnight (UTC) of the first `HH:MM:SS.mmm` in `line`.
fn clock_ms(line: &str) -> Option<u64> {
    let bytes = line.as_bytes();
    (0..bytes.len().saturating_sub(11)).find_map(|i| {
        let t = &line.get(i..i + 12)?;
        let b = t.as_bytes();
        let digits = [0, 1, 3, 4, 6, 7, 9, 10, 11].iter().all(|&k| b[k].is_ascii_digit());
        if !(digits && b[2] == b':' && b[5] == b':' && b[8] == b'.') {
            return None;
        }
        let n = |r: std::ops::Range<usize>| t[r].parse::<u64>().ok();
        Some(((n(0..2)? * 60 + n(3..5)?) * 60 + n(6..8)?) * 1000 + n(9..12)?)
    })
}

/// Each run of a job of `round`: its message, the worker, and when it ended.
fn runs(workers: &[Process], round: &str) -> HashMap<String, Vec<(usize, u64)>> {
    let mut runs: HashMap<String, Vec<(usize, u64)>> = HashMap::new();
    let marker = format!("] Done '{round}-");
    for (w, worker) in workers.iter().enumerate() {
        for line in worker.lines() {
            if let Some(at) = line.find(&marker) {
                let job = line[at + 8..].trim_end_matches('\'').to_owned();
                runs.entry(job).or_default().push((w, clock_ms(&line).unwrap_or(0)));
            }
        }
    }
    runs
}

/// When each worker lost the broker (or was killed), in milliseconds since midnight.
fn losses(workers: &[Process], kills: &[(usize, u64)]) -> Vec<Vec<u64>> {
    let mut losses: Vec<Vec<u64>> = workers
        .iter()
        .map(|w| w.lines().iter().filter(|l| l.contains("lost the broker")).filter_map(|l| clock_ms(l)).collect())
        .collect();
    for (w, at) in kills {
        losses[*w].push(*at);
    }
    losses
}

/// The ports of the nodes a worker connected to, in order.
fn nodes_of(worker: &Process, urls: &[String]) -> Vec<usize> {
    let ports: Vec<&str> =
        urls.iter().map(|u| u.rsplit(':').next().and_then(|p| p.split('/').next()).unwrap_or("")).collect();
    worker
        .lines()
        .iter()
        .filter(|l| l.contains("connected to RabbitMQ"))
        .filter_map(|l| ports.iter().position(|p| l.contains(&format!(":{p}/"))))
        .collect()
}

fn now_ms() -> u64 {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    now.as_millis() as u64 % 86_400_000
}

/// Enqueues `JOBS` jobs to node 1 over about 20 s while `events` happen at their times.
/// Returns the kills: which worker, when.
async fn round(
    name: &str,
    urls: &[String],
    cluster: &TestCluster,
    workers: &mut Vec<Process>,
    kills: bool,
) -> Vec<(usize, u64)> {
    let mut killed = Vec::new();
    let mut amqp = AmqpConfig::with_url(&urls[0]).unwrap();
    amqp.fallback_urls = urls[1..].iter().map(|u| BrokerUrl::parse(u).unwrap()).collect();
    amqp.queue_type = QueueType::Quorum;
    amqp.reconnect_timeout = Duration::from_secs(90);
    let client = Client::new(amqp);
    let started = Instant::now();
    let mut step = 0;
    let mut confirmed = 0;
    // The outage schedule: node 2 (the workers' node) stops at 3 s and
    // returns at 8 s; node 3 stops at 11 s and returns at 16 s.
    let events: [(u64, &dyn Fn()); 4] = [
        (3, &|| cluster.ctl(2, &["stop_app"]).truncate(0)),
        (8, &|| {
            cluster.ctl(2, &["start_app"]);
            cluster.wait_running(1, 3);
        }),
        (11, &|| cluster.ctl(3, &["stop_app"]).truncate(0)),
        (16, &|| {
            cluster.ctl(3, &["start_app"]);
            cluster.wait_running(1, 3);
        }),
    ];
    for n in 0..JOBS {
        let at = started.elapsed();
        if step < events.len() && at >= Duration::from_secs(events[step].0) {
            (events[step].1)();
            if kills && step < 2 {
                // A worker killed -9, and started again (as systemd would).
                let victim = step;
                killed.push((victim, now_ms()));
                workers[victim].signal(9);
                workers[victim].wait_exit(Duration::from_secs(10)).await;
                workers.push(worker(workers.len(), urls));
            }
            step += 1;
        }
        client.enqueue(&Task { message: format!("{name}-{n}") }).await.expect("every enqueue is confirmed");
        confirmed += 1;
        let due = Duration::from_millis(5 * n as u64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    assert_eq!(confirmed, JOBS);
    client.close().await;
    killed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_losses_stop_no_worker_and_kill_no_job() {
    let cluster = TestCluster::start();
    let urls = cluster.urls.clone();
    let mut workers: Vec<Process> = (0..3).map(|n| worker(n, &urls)).collect();
    let raw = raw_connection_to(&urls[0]).await;
    wait_for_consumers(&raw, "task_queue", 3).await;

    for (name, kills) in [("outage", false), ("outage-and-kills", true)] {
        let before: Vec<usize> = workers.iter().map(|w| w.count("lost the broker")).collect();
        let killed = round(name, &urls, &cluster, &mut workers, kills).await;
        wait_until(&format!("{name}: every job to run"), Duration::from_secs(180), || async {
            runs(&workers, name).len() == JOBS
        })
        .await;
        let runs = runs(&workers, name);
        let running = workers.iter_mut().map(Process::is_running).filter(|running| *running).count();
        assert_eq!(running, workers.len() - killed.len(), "{name}: no worker exited by itself");
        for queue in ["task_queue.dead", "logs.dead", "chaos.dead", "hello.dead", "rpc_queue.dead"] {
            assert_eq!(counts(&raw, queue).await.0, 0, "{name}: nothing in {queue}");
        }
        // Who lost the broker in this round, and who was killed.
        let lost: Vec<usize> = workers
            .iter()
            .enumerate()
            .filter(|(w, worker)| worker.count("lost the broker") > before.get(*w).copied().unwrap_or(0))
            .map(|(w, _)| w)
            .collect();
        if name == "outage" {
            assert_eq!(lost, [0, 1, 2], "every worker was on node 2 and lost it");
            for worker in &workers {
                let nodes = nodes_of(worker, &urls);
                assert_eq!(nodes.first(), Some(&1), "{}: started on node 2: {nodes:?}", worker.name);
                assert!(nodes[1..].iter().any(|n| *n != 1), "{}: moved to another node: {nodes:?}", worker.name);
            }
        }
        // A duplicate is a job whose run ended before its worker lost the broker
        // or was killed (the ack went with the connection): at most what those
        // workers ran at once (4 each) per loss, and each explained by one.
        let losses = losses(&workers, &killed);
        // Every loss counts (a worker can lose the broker more than once in a round), and every kill.
        let lost_lines: usize = workers
            .iter()
            .enumerate()
            .map(|(w, worker)| worker.count("lost the broker").saturating_sub(before.get(w).copied().unwrap_or(0)))
            .sum();
        let events = lost_lines + killed.len();
        let duplicates: Vec<(&String, &Vec<(usize, u64)>)> = runs.iter().filter(|(_, r)| r.len() > 1).collect();
        let extra: usize = duplicates.iter().map(|(_, r)| r.len() - 1).sum();
        println!(
            "{name}: {JOBS} jobs confirmed, every one ran; {extra} extra runs; {events} losses of the broker or kills"
        );
        assert!(extra <= 4 * events.max(1), "{name}: {extra} extra runs for {events} losses: {duplicates:?}");
        for (job, runs) in &duplicates {
            let mut runs = (*runs).clone();
            runs.sort_by_key(|(_, at)| *at);
            for pair in runs.windows(2) {
                let ((w, first), (_, again)) = (pair[0], pair[1]);
                // One host, one clock: a second of room for the lines' rounding.
                let explained = losses[w].iter().any(|lost| lost + 1000 >= first && *lost <= again + 1000);
                assert!(
                    explained,
                    "{name}: {job} ran on w{w} at {first} and again at {again}, with no loss of w{w} between: {:?}",
                    losses[w]
                );
            }
        }
    }
    // In quorum mode every durable queue is a quorum queue: the broadcast's
    // dead queue and the delay cascade too (only the workers' own
    // subscription queues are exclusive, and the heartbeats and the returns
    // go to streams), so none is lost with its node.
    let listed = cluster.ctl(1, &["list_queues", "name", "type", "exclusive", "--formatter", "json"]);
    let queues: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    for queue in &queues {
        if ["jobs.events", "jobs.returns", "jobs.batches", "jobs.control", "jobs.unique"]
            .iter()
            .any(|journal| queue["name"] == *journal)
        {
            assert_eq!(queue["type"], "stream", "the journals are streams, replicated too: {queue}");
        } else if queue["exclusive"] != true {
            assert_eq!(queue["type"], "quorum", "{queue}");
        }
    }
    assert!(queues.iter().any(|q| q["name"] == "logs.dead"), "{listed}");
    for worker in workers.into_iter().filter_map(|mut w| w.is_running().then_some(w)) {
        worker.stop().await;
    }

    a_unique_key_holds_through_the_loss_of_the_keepers_node(&cluster).await;
    a_worker_started_while_a_node_is_down_consumes_and_reports_what_it_cannot_set_up(&cluster).await;
}

/// Two workers, on nodes 1 and 3; a unique job held (queued, not run); the
/// node of the worker keeping the keys stops. The other keeps them, read
/// back from the replicated stream; an app on node 2 tries the held key
/// every 50 ms throughout: no second job gets it (the slips counted: 0).
async fn a_unique_key_holds_through_the_loss_of_the_keepers_node(cluster: &TestCluster) {
    let urls = &cluster.urls;
    let keeper_of = |n: usize| {
        let fallbacks = format!("{},{}", urls[(n + 1) % 3], urls[(n + 2) % 3]);
        let env = [
            ("JOBS__AMQP__URL", urls[n].as_str()),
            ("JOBS__AMQP__FALLBACK_URLS", fallbacks.as_str()),
            ("JOBS__AMQP__QUEUE_TYPE", "quorum"),
            ("JOBS__AMQP__HEARTBEAT", "5"),
            ("RUST_LOG", "warn,jobs_worker::leadership=info"),
        ];
        let id = format!("unique-{n}");
        Process::start_with(
            &id,
            env!("CARGO_BIN_EXE_worker"),
            &["--id", &id, "--queues", "unique-idle", "--extra-queues", "unique-idle"],
            &env,
        )
    };
    let workers = [keeper_of(0), keeper_of(2)];
    let keeps = "this worker keeps the unique keys";
    wait_until("a keeper", Duration::from_secs(60), || async { workers.iter().any(|w| w.has(keeps)) }).await;
    let amqp =
        AmqpConfig { url: BrokerUrl::parse(&urls[1]).unwrap(), queue_type: QueueType::Quorum, ..AmqpConfig::default() };
    let client = Client::new(amqp);
    let job = examples::flow::RebuildIndex { index: "cluster".into(), millis: 0 };
    // No worker takes `reindex`: it stays queued, holding its key.
    let held = client.enqueue(&job).await.unwrap();
    let keeper = workers.iter().position(|w| w.has(keeps)).unwrap();
    let node = if keeper == 0 { 1 } else { 3 };
    cluster.ctl(node, &["stop_app"]);
    let stopped = Instant::now();
    let (mut slips, mut duplicates, mut unanswered) = (0, 0, 0);
    let mut taken_over: Option<Duration> = None;
    while stopped.elapsed() < Duration::from_secs(60) {
        match client.enqueue(&job).await {
            Ok(_) => slips += 1,
            Err(jobs_core::Error::Duplicate { existing }) => {
                assert_eq!(existing, held);
                duplicates += 1;
            }
            Err(_) => unanswered += 1,
        }
        if taken_over.is_none() && workers[1 - keeper].has(keeps) {
            taken_over = Some(stopped.elapsed());
        }
        if taken_over.is_some_and(|at| stopped.elapsed() > at + Duration::from_secs(3)) && duplicates > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("the keeper's node stopped: {duplicates} duplicates, {unanswered} not answered, {slips} slipped through; the other worker kept the keys after {taken_over:?}");
    assert!(taken_over.is_some(), "the other worker keeps the keys");
    assert_eq!(slips, 0, "no second job got the held key");
    let after = client.enqueue(&job).await.unwrap_err();
    assert!(matches!(&after, jobs_core::Error::Duplicate { existing } if *existing == held), "{after}");
    cluster.ctl(node, &["start_app"]);
    cluster.wait_running(2, 3);
    client.close().await;
    for worker in workers {
        worker.stop().await;
    }
}

/// A classic queue lives on one node. A worker started while that node is
/// down (its URL that node, its fallbacks the others) consumes the rest
/// within seconds, reports the queue it cannot set up yet, and sets it up
/// once the node is back.
async fn a_worker_started_while_a_node_is_down_consumes_and_reports_what_it_cannot_set_up(cluster: &TestCluster) {
    let urls = &cluster.urls;
    let node2 = raw_connection_to(&urls[1]).await;
    let channel = node2.open_channel(None).await.unwrap();
    for name in ["legacy", "legacy.dead"] {
        let declare = jobs_test::amqprs::channel::QueueDeclareArguments::durable_client_named(name);
        channel.queue_declare(declare).await.unwrap(); // classic, its home node 2
    }
    drop(node2);
    cluster.ctl(2, &["stop_app"]);

    let port = spare_port();
    let fallbacks = format!("{},{}", urls[0], urls[2]);
    let metrics = format!("127.0.0.1:{port}");
    let env = [
        ("JOBS__AMQP__URL", urls[1].as_str()),
        ("JOBS__AMQP__FALLBACK_URLS", fallbacks.as_str()),
        ("JOBS__AMQP__QUEUE_TYPE", "classic"),
        ("RUST_LOG", "info"),
    ];
    let args = ["--queues", "legacy,fresh", "--extra-queues", "legacy,fresh", "--metrics-addr", &metrics];
    let started = Instant::now();
    let worker = Process::start_with("classic", env!("CARGO_BIN_EXE_worker"), &args, &env);
    let node1 = raw_connection_to(&urls[0]).await;
    wait_for_consumers(&node1, "fresh", 1).await;
    assert!(started.elapsed() < Duration::from_secs(15), "consuming after {:?}", started.elapsed());
    worker.wait_line("cannot set up queue `legacy` yet", Duration::from_secs(10)).await;
    let (code, body) = http_get(port, "/healthz");
    assert_eq!(code, 200, "it works, partly: {body}");
    assert!(body.starts_with("degraded: not set up yet: queue `legacy` (") && body.contains("is down"), "{body}");

    cluster.ctl(2, &["start_app"]);
    worker.wait_line("queue `legacy` set up; consuming it", Duration::from_secs(60)).await;
    assert_eq!(http_get(port, "/healthz"), (200, "ok\n".to_owned()));
    assert!(worker.is_running_now(), "it never exited");
    worker.stop().await;
}
