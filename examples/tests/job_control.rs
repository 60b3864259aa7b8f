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
