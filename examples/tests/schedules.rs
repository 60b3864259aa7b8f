//! Periodic jobs across three worker processes: a schedule every second from
//! `[[schedules]]` fires each tick once (ids made from the tick, none twice,
//! none missing), by the one worker that leads; after a kill -9 of the
//! leader, another leads within seconds and ticks go on, none fired twice.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use jobs_test::*;

fn worker(config: &std::path::Path, queue: &str, id: &str) -> Process {
    let args = ["--config", config.to_str().unwrap(), "--queues", queue, "--extra-queues", queue, "--id", id];
    Process::start(id, env!("CARGO_BIN_EXE_worker"), &args)
}

/// Every job the workers ran: its tick (Unix seconds, from its id) → how many times.
fn ticks(workers: &[&Process]) -> BTreeMap<i64, usize> {
    let mut ticks = BTreeMap::new();
    for worker in workers {
        for line in worker.lines() {
            let Some(id) = line.split("Received 'tick' (job ").nth(1).and_then(|rest| rest.split(')').next()) else {
                continue;
            };
            let second: i64 = id.rsplit('-').next().unwrap().parse().unwrap_or_else(|_| panic!("a tick id: {id}"));
            *ticks.entry(second).or_default() += 1;
        }
    }
    ticks
}

fn assert_once_each(ticks: &BTreeMap<i64, usize>, what: &str) {
    let twice: Vec<_> = ticks.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "{what}: ticks fired more than once: {twice:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_fires_every_tick_once_and_another_takes_over_after_a_kill_9() {
    let queue = unique("ticks");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let dir = std::env::temp_dir().join(format!("jobs-schedules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("jobs.toml");
    std::fs::write(
        &config,
        format!("[[schedules]]\nname = \"{queue}\"\ncron = \"* * * * * *\"\njob = \"Task\"\nargs = {{ message = \"tick\" }}\nqueue = \"{queue}\"\n"),
    )
    .unwrap();
    let mut workers: Vec<Process> = (0..3).map(|n| worker(&config, &queue, &format!("sched-{n}"))).collect();
    wait_for_consumers(&raw, &queue, 3).await;
    // Eight seconds of ticks once the first one ran.
    wait_until("the first tick", Duration::from_secs(30), || async {
        !ticks(&workers.iter().collect::<Vec<_>>()).is_empty()
    })
    .await;
    wait_until("eight more ticks", Duration::from_secs(30), || async {
        ticks(&workers.iter().collect::<Vec<_>>()).len() >= 9
    })
    .await;
    let seen = ticks(&workers.iter().collect::<Vec<_>>());
    assert_once_each(&seen, "one leader");
    let (first, last) = (*seen.keys().next().unwrap(), *seen.keys().last().unwrap());
    let missing: Vec<i64> = (first..=last).filter(|s| !seen.contains_key(s)).collect();
    assert!(missing.is_empty(), "every second fired: missing {missing:?} in {seen:?}");
    let leaders: Vec<usize> = (0..3).filter(|&n| workers[n].has("this worker leads the scheduler")).collect();
    assert_eq!(leaders.len(), 1, "one leader: {leaders:?}");

    // The leader dies; another leads and fires on.
    let mut dead = workers.remove(leaders[0]);
    dead.signal(9);
    dead.wait_exit(Duration::from_secs(10)).await;
    let before = ticks(&[&dead]).len() + ticks(&workers.iter().collect::<Vec<_>>()).len();
    wait_until("a new leader", Duration::from_secs(15), || async {
        workers.iter().any(|w| w.has("this worker leads the scheduler"))
    })
    .await;
    wait_until("five ticks from the new leader", Duration::from_secs(30), || async {
        ticks(&[&dead]).len() + ticks(&workers.iter().collect::<Vec<_>>()).len() >= before + 5
    })
    .await;
    let mut all: Vec<&Process> = workers.iter().collect();
    all.push(&dead);
    assert_once_each(&ticks(&all), "across the takeover");
    assert_eq!(workers.iter().filter(|w| w.has("this worker leads the scheduler")).count(), 1, "one new leader");
    for worker in workers.drain(..) {
        worker.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
