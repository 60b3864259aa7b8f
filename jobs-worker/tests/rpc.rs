//! Calls: typed answers over direct reply-to, many in flight on one client, a
//! failure as the answer, and a late answer dropped without harm.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use jobs_core::{Client, Error, Job, JobContext, JobError, Respond};
use jobs_test::*;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "test.rpc.square", rpc)]
struct Square {
    n: i64,
    sleep_ms: u64,
}

/// The calls the worker answered, in order.
static ANSWERED: std::sync::Mutex<Vec<i64>> = std::sync::Mutex::new(Vec::new());

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Answer {
    n: i64,
    square: i64,
}

impl Respond for Square {
    type Output = Answer;

    async fn respond(self, _ctx: JobContext) -> Result<Answer, JobError> {
        tokio::time::sleep(Duration::from_millis(self.sleep_ms)).await;
        ANSWERED.lock().unwrap().push(self.n);
        if self.n < 0 {
            return Err(JobError::msg(format!("{} is negative", self.n)));
        }
        Ok(Answer { n: self.n, square: self.n * self.n })
    }
}

#[tokio::test]
async fn calls_answer_in_parallel_fail_with_the_workers_error_and_drop_late_answers() {
    let raw = raw_connection().await;
    let _cleanup = Cleanup::queues(&[Square::QUEUE]);
    let client = Client::new(amqp_config());
    let running = spawn_worker(&amqp_url(), &[Square::QUEUE], 16, "rpc-worker", Duration::from_secs(5));
    wait_for_consumers(&raw, Square::QUEUE, 1).await;

    let mut calls = Vec::new();
    for n in 0..100 {
        let client = client.clone();
        calls.push(tokio::spawn(async move { client.call(&Square { n, sleep_ms: 20 }).await }));
    }
    for (n, call) in calls.into_iter().enumerate() {
        let n = n as i64;
        assert_eq!(call.await.unwrap().unwrap(), Answer { n, square: n * n });
    }

    let err = client.call(&Square { n: -3, sleep_ms: 0 }).await.unwrap_err();
    match err {
        Error::CallFailed { kind, error, .. } => {
            assert_eq!((kind.as_str(), error.as_str()), ("failed", "-3 is negative"))
        }
        other => panic!("expected CallFailed, got {other:?}"),
    }
    assert_eq!(
        counts(&raw, &format!("{}.dead", Square::QUEUE)).await.0,
        0,
        "a call's failure is its answer, not a dead job"
    );

    let err = client.call_with(&Square { n: 7, sleep_ms: 1500 }, Duration::from_millis(300)).await.unwrap_err();
    assert!(matches!(err, Error::CallTimeout { .. }), "{err:?}");
    // Its answer comes after the caller gave up: dropped; the client goes on.
    wait_until("the late answer", Duration::from_secs(10), || async { ANSWERED.lock().unwrap().contains(&7) }).await;
    assert_eq!(client.call(&Square { n: 9, sleep_ms: 0 }).await.unwrap(), Answer { n: 9, square: 81 });
    running.stop().await.unwrap();
}
