//! The `job_control` example, quick: the urgent jobs start first, the
//! weighted queues share the worker 6:3:1 within ±10%, the progress job ends.
#![allow(clippy::unwrap_used)]

#[tokio::test]
async fn the_job_control_example_shows_priorities_weights_and_progress() {
    let raw = jobs_test::raw_connection().await; // fail clearly when no broker
    let queues =
        ["job-control-render", "job-control-critical", "job-control-default", "job-control-low", "job-control-resize"];
    let _cleanup = jobs_test::Cleanup::queues(&queues);
    jobs_test::delete_queues(&raw, &queues).await;
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_job_control"))
        .arg("--quick")
        .env("JOBS__AMQP__URL", jobs_test::amqp_url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "job_control failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("they started 1, 2, 3, 4, 5 of 105"), "the urgent jobs first:\n{stdout}");
    let weights = stdout.lines().find(|l| l.starts_with("weighted queues")).unwrap();
    for (queue, share) in [("job-control-critical", 60.0), ("job-control-default", 30.0), ("job-control-low", 10.0)] {
        let at = weights.find(&format!("{queue} (weight")).unwrap();
        let percent: f64 = weights[at..].split('(').nth(2).unwrap().split('%').next().unwrap().parse().unwrap();
        assert!(
            (percent - share).abs() <= share * 0.1,
            "{queue}: {percent}% of the starts, {share}% wanted:\n{weights}"
        );
    }
    assert!(stdout.contains("progress: done"), "{stdout}");
}

/// (account, entry, start ms, end ms) of each run the lines tell; a run not
/// ended ends at `cut` (its process was killed then).
fn entries(lines: &[String], cut: u128) -> Vec<(u64, u64, u128, u128)> {
    let number = |line: &str, after: &str| -> Option<u128> {
        line.split(after).nth(1)?.split_whitespace().next()?.trim().parse().ok()
    };
    let mut open: Vec<(u64, u64, u128)> = Vec::new();
    let mut done = Vec::new();
    for line in lines {
        let (Some(seq), Some(account), Some(at)) =
            (number(line, " entry "), number(line, " of account "), number(line, " at "))
        else {
            continue;
        };
        let (seq, account) = (seq as u64, account as u64);
        if line.contains("] applying entry ") {
            open.push((account, seq, at));
        } else if let Some(n) = open.iter().position(|o| o.0 == account && o.1 == seq) {
            let (account, seq, start) = open.remove(n);
            done.push((account, seq, start, at));
        }
    }
    // (One started between the cut's reading and the kill ends at its start.)
    done.extend(open.into_iter().map(|(account, seq, start)| (account, seq, start, cut.max(start))));
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_s_entries_apply_in_order_through_a_kill_9_of_the_worker_holding_its_shard() {
    use jobs_core::Job;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};
    let vhost = jobs_test::TestVhost::create("ordered").await;
    let url = vhost.url();
    let raw = jobs_test::raw_connection_to(&url).await;
    let worker = |id: &str| {
        let args = ["--queues", examples::ordered::ApplyEntry::QUEUE, "--id", id];
        jobs_test::Process::start_with(id, env!("CARGO_BIN_EXE_worker"), &args, &[("JOBS__AMQP__URL", &url)])
    };
    let mut first = worker("ordered-first");
    for n in 0..4 {
        jobs_test::wait_for_consumers(&raw, &format!("ledger.shard.{n}"), 1).await;
    }
    let second = worker("ordered-second");
    second.wait_line("worker ready", Duration::from_secs(30)).await;
    // 8 accounts × 12 entries of 150 ms, entry by entry across the accounts.
    let jobs: Vec<examples::ordered::ApplyEntry> = (0..12)
        .flat_map(|seq| (0..8).map(move |account| examples::ordered::ApplyEntry { account, seq, millis: 150 }))
        .collect();
    let client = jobs_core::Client::new(jobs_test::config_for(&url));
    client.enqueue_many(&jobs).await.unwrap();
    jobs_test::wait_until("20 entries applied on the first worker", Duration::from_secs(60), || async {
        first.count("] applied entry ") >= 20
    })
    .await;
    let killed_at = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis();
    first.signal(9);
    first.wait_exit(Duration::from_secs(10)).await;
    let applied = |lines: &[String]| lines.iter().filter(|l| l.contains("] applied entry ")).count();
    jobs_test::wait_until("every entry applied", Duration::from_secs(90), || async {
        let runs: std::collections::HashSet<(u64, u64)> = entries(&first.lines(), killed_at)
            .into_iter()
            .filter(|r| r.3 < killed_at)
            .chain(entries(&second.lines(), u128::MAX))
            .filter(|r| r.3 != u128::MAX)
            .map(|r| (r.0, r.1))
            .collect();
        runs.len() == 96 || applied(&second.lines()) > 96
    })
    .await;
    let mut runs = entries(&first.lines(), killed_at);
    let on_first = runs.clone();
    let unfinished: Vec<(u64, u64)> = runs.iter().filter(|r| r.3 >= killed_at).map(|r| (r.0, r.1)).collect();
    runs.extend(entries(&second.lines(), u128::MAX));
    println!("{} runs; the kill -9 cut {unfinished:?} short", runs.len());
    assert!(!unfinished.is_empty(), "the kill came mid-run");
    for account in 0..8u64 {
        let mut own: Vec<_> = runs.iter().filter(|r| r.0 == account).collect();
        own.sort_by_key(|r| r.2);
        let seqs: Vec<u64> = own.iter().map(|r| r.1).collect();
        // In order, each entry once, but for the one the kill cut short
        // (or whose ack it beat), which runs again before the account's next.
        let mut once = seqs.clone();
        once.dedup();
        assert_eq!(once, (0..12).collect::<Vec<_>>(), "account {account}: entries in order: {seqs:?}");
        for pair in own.windows(2).filter(|pair| pair[0].1 == pair[1].1) {
            let (before, after) = (on_first.contains(pair[0]), on_first.contains(pair[1]));
            assert!(before && !after, "account {account}: only a run of the killed worker runs again");
        }
        assert!(
            unfinished
                .iter()
                .filter(|(a, _)| *a == account)
                .all(|(_, seq)| seqs.iter().filter(|s| *s == seq).count() == 2),
            "account {account}: the entry cut short ran again"
        );
        for pair in own.windows(2) {
            assert!(
                pair[1].2 >= pair[0].3,
                "account {account}: entry {} started before entry {} ended",
                pair[1].1,
                pair[0].1
            );
        }
    }
    jobs_test::wait_until("the shards empty", Duration::from_secs(30), || async {
        let mut empty = true;
        for n in 0..4 {
            empty &= jobs_test::counts(&raw, &format!("ledger.shard.{n}")).await.0 == 0;
        }
        empty
    })
    .await;
    // `worker queues` lists the shards, each with the worker running it now
    // (as the management API says: its consumers' state is seconds behind).
    let queues = || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_worker"))
            .args(["queues"])
            .env("JOBS__AMQP__URL", &url)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let shown = |said: &str| {
        (0..4).all(|n| {
            let row =
                said.lines().find(|l| l.trim_start().starts_with(&format!("ledger.shard.{n} "))).unwrap_or_default();
            row.contains(&format!("shard {n} of 4: ApplyEntry one at a time per account, run by ordered-second"))
        })
    };
    let start = std::time::Instant::now();
    let mut said = queues();
    while !shown(&said) && start.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        said = queues();
    }
    assert!(shown(&said), "{said}");
    second.stop().await;
}
