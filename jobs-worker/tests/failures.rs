//! With no attempts left, a failing, a fatal and a panicking job land in `<queue>.dead` with the error in
//! their headers; the worker keeps serving.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::plumbing::{header_str, header_u64, headers};
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(max_attempts = 1)]
struct Flaky {
    mode: String,
}

static DONE: Mutex<Vec<String>> = Mutex::new(Vec::new());

impl Perform for Flaky {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        match self.mode.as_str() {
            "fail" => Err(std::io::Error::other("the mail server said no"))?,
            "fatal" => Err(JobError::fatal("address does not exist")),
            "panic" => panic!("index out of bounds in the job"),
            _ => {
                DONE.lock().unwrap().push(ctx.job_id().to_string());
                Ok(())
            }
        }
    }
}

#[tokio::test]
async fn failed_and_panicking_jobs_are_dead_lettered_and_the_worker_goes_on() {
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start("failures", Duration::from_secs(5)).await;
    let dead = format!("{queue}.dead");

    let on = || EnqueueOptions::new().queue(&queue);
    let mut ids = Vec::new();
    for mode in ["fail", "fatal", "panic"] {
        ids.push(client.enqueue_with(&Flaky { mode: mode.into() }, on()).await.unwrap());
    }
    let good = client.enqueue_with(&Flaky { mode: "ok".into() }, on()).await.unwrap();
    wait_until("the good job after the bad ones", Duration::from_secs(20), || async {
        DONE.lock().unwrap().contains(&good.to_string())
    })
    .await;
    wait_until("three dead jobs", Duration::from_secs(10), || async { counts(&raw, &dead).await.0 == 3 }).await;

    let channel = raw.open_channel(None).await.unwrap();
    let mut seen = Vec::new();
    while let Some((props, body)) = get(&channel, &dead).await {
        let id = props.message_id().cloned().unwrap();
        let kind = header_str(&props, headers::ERROR_KIND).unwrap().to_owned();
        let error = header_str(&props, headers::ERROR).unwrap().to_owned();
        assert_eq!(header_str(&props, headers::QUEUE), Some(queue.as_str()));
        assert_eq!(header_str(&props, headers::WORKER), Some("failures-worker"));
        assert!(header_u64(&props, headers::FAILED_AT).unwrap() > 1_700_000_000);
        assert_eq!(header_u64(&props, headers::ATTEMPT), Some(1));
        assert_eq!(props.message_type().map(String::as_str), Some("Flaky"));
        assert_eq!(props.delivery_mode(), Some(2));
        let job: Flaky = jobs_core::plumbing::decode(&body).unwrap();
        seen.push((id, job.mode, kind, error));
    }
    seen.sort();
    let mut expected = vec![
        (ids[0].to_string(), "fail", "failed", "the mail server said no"),
        (ids[1].to_string(), "fatal", "fatal", "address does not exist"),
        (ids[2].to_string(), "panic", "panicked", "panicked: index out of bounds in the job"),
    ];
    expected.sort();
    let seen: Vec<_> = seen.iter().map(|(a, b, c, d)| (a.clone(), b.as_str(), c.as_str(), d.as_str())).collect();
    assert_eq!(seen, expected);
    assert!(!running.is_finished(), "the worker still runs");
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await; // nothing left behind in the queue, nor held
}
