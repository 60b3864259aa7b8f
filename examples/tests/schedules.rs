//! Periodic jobs across three worker processes: a schedule every second from
//! `[[schedules]]` fires each tick once (ids made from the tick, none twice,
//! none missing), by the one worker that leads; after a kill -9 of the
//! leader, another leads within seconds and ticks go on (at most the tick of
//! the kill twice, under its one id). With every worker down for a while, the
//! new leader catches up as each schedule's `catch_up` says.
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
        for (second, n) in ticks_in(&worker.lines(), "tick") {
            *ticks.entry(second).or_default() += n;
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
    // The one window docs/periodic.md names: the leader killed after a tick's
    // job was confirmed and before its record; the new leader's catch-up fires
    // that tick again, under the same id. At most once.
    let twice: Vec<(i64, usize)> = ticks(&all).into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.len() <= 1 && twice.iter().all(|(_, n)| *n == 2), "at most one tick twice: {twice:?}");
    assert_eq!(workers.iter().filter(|w| w.has("this worker leads the scheduler")).count(), 1, "one new leader");
    for worker in workers.drain(..) {
        worker.stop().await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The seconds of the ticks a schedule whose jobs say `message` fired, in a worker's output so far.
fn fired(worker: &Process, message: &str) -> BTreeMap<i64, usize> {
    ticks_in(&worker.lines(), message)
}

/// The longest run of seconds with no tick, between the first and the last.
fn longest_gap(ticks: &BTreeMap<i64, usize>) -> i64 {
    let seconds: Vec<i64> = ticks.keys().copied().collect();
    seconds.windows(2).map(|w| w[1] - w[0] - 1).max().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_every_worker_was_down_the_new_leader_catches_up_as_each_schedule_says() {
    let queue = unique("catch-up");
    let _cleanup = Cleanup::queues(&[&queue]);
    let raw = raw_connection().await;
    let dir = std::env::temp_dir().join(format!("jobs-catch-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("jobs.toml");
    let mut toml = String::new();
    for policy in ["skip", "last", "all"] {
        toml += &format!(
            "[[schedules]]\nname = \"{queue}-{policy}\"\ncron = \"* * * * * *\"\njob = \"Task\"\nargs = {{ message = \"{policy}\" }}\nqueue = \"{queue}\"\ncatch_up = \"{policy}\"\n\n"
        );
    }
    std::fs::write(&config, toml).unwrap();
    let first = worker(&config, &queue, "catch-up-0");
    wait_for_consumers(&raw, &queue, 1).await;
    wait_until("three ticks of each", Duration::from_secs(30), || async {
        ["skip", "last", "all"].iter().all(|p| fired(&first, p).len() >= 3)
    })
    .await;
    let before = first.stop().await;
    // Every worker down: ticks come and nobody fires them (the downtime is the
    // point of the test, so time passes here on purpose).
    tokio::time::sleep(Duration::from_secs(5)).await;
    let second = worker(&config, &queue, "catch-up-1");
    wait_until("the new leader's ticks", Duration::from_secs(30), || async {
        ["skip", "last", "all"].iter().all(|p| fired(&second, p).len() >= 3)
    })
    .await;
    let lines = second.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
    let both: Vec<String> = before.into_iter().chain(lines.iter().cloned()).collect();
    for policy in ["skip", "last", "all"] {
        let ticks = ticks_in(&both, policy);
        let twice: Vec<_> = ticks.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{policy}: a tick fired twice: {twice:?}");
        let gap = longest_gap(&ticks);
        let caught: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("catching up on missed ticks") && l.contains(&format!("{queue}-{policy}")))
            .collect();
        match policy {
            "skip" => {
                assert!(gap >= 4, "skip: the downtime's ticks are not fired: gap {gap} in {ticks:?}");
                assert!(caught.is_empty(), "skip catches nothing up: {caught:?}");
            }
            "last" => {
                assert_eq!(caught.len(), 1, "last: one catch-up: {lines:#?}");
                assert_eq!(firing(caught[0]), 1, "the latest missed tick once: {}", caught[0]);
                assert!(gap >= 3, "last: the older missed ticks are not fired: gap {gap} in {ticks:?}");
            }
            _ => {
                assert_eq!(gap, 0, "all: every missed tick fired: {ticks:?}");
                assert!(caught.len() == 1 && firing(caught[0]) >= 3, "all: each missed tick: {caught:?}");
            }
        }
    }
}

/// The seconds of the ticks whose jobs say `message`, in output lines.
fn ticks_in(lines: &[String], message: &str) -> BTreeMap<i64, usize> {
    let mut ticks = BTreeMap::new();
    let needle = format!("Received '{message}' (job ");
    for line in lines {
        let Some(id) = line.split(needle.as_str()).nth(1).and_then(|rest| rest.split(')').next()) else { continue };
        let second: i64 = id.rsplit('-').next().unwrap().parse().unwrap_or_else(|_| panic!("a tick id: {id}"));
        *ticks.entry(second).or_default() += 1;
    }
    ticks
}

/// How many ticks a `catching up` line says it fires (`firing=16`).
fn firing(line: &str) -> usize {
    let rest = line.split("firing=").nth(1).unwrap_or_else(|| panic!("no count in {line}"));
    rest.split(|c: char| !c.is_ascii_digit()).next().and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}
