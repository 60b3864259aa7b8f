//! The testing mode, with no broker: recorded jobs, inline runs, calls answered inline.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use jobs_core::{Client, EnqueueOptions, Job, JobContext, JobError, Perform, Respond, TestClient};
use serde::{Deserialize, Serialize};

static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(queue = "reports")]
struct Report {
    day: u32,
    fail: bool,
}

impl Perform for Report {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        LOG.lock().unwrap().push(format!("report {} attempt {}", self.day, ctx.attempt()));
        assert!(ctx.enqueued_at().is_some_and(|at| at <= std::time::SystemTime::now()), "enqueued_at in test mode");
        if self.fail {
            return Err(JobError::msg("printer on fire"));
        }
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(exchange = "alerts", exchange_type = "topic")]
struct Alert {
    text: String,
}

impl Perform for Alert {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Debug, Serialize, Deserialize, Job)]
#[job(rpc)]
struct Add {
    a: i32,
    b: i32,
}

impl Respond for Add {
    type Output = i32;
    async fn respond(self, _ctx: JobContext) -> Result<i32, JobError> {
        Ok(self.a + self.b)
    }
}

#[tokio::test]
async fn jobs_are_recorded_with_queue_delay_and_key_and_run_inline() {
    let test = TestClient::new();
    let client: Client = test.client();
    client.enqueue(&Report { day: 1, fail: false }).await.unwrap();
    client
        .enqueue_with(&Report { day: 2, fail: false }, EnqueueOptions::new().delay(Duration::from_secs(60)))
        .await
        .unwrap();
    client.enqueue_with(&Report { day: 3, fail: true }, EnqueueOptions::new().queue("urgent")).await.unwrap();
    client
        .enqueue_with(&Alert { text: "disk".into() }, EnqueueOptions::new().routing_key("db.critical"))
        .await
        .unwrap();
    client.enqueue_many(&[Report { day: 4, fail: false }]).await.unwrap();

    let queued = test.enqueued();
    assert_eq!(queued.len(), 5);
    assert_eq!(queued[1].delay, Some(Duration::from_secs(60)));
    assert_eq!(queued[2].queue, "urgent");
    assert_eq!((queued[3].queue.as_str(), queued[3].routing_key.as_deref()), ("alerts", Some("db.critical")));
    assert_eq!(test.jobs::<Report>().iter().map(|r| r.day).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_eq!(test.jobs::<Alert>()[0].text, "disk");

    assert!(test.run_next().await.unwrap());
    assert!(test.run_next().await.unwrap());
    let err = test.run_all().await.unwrap_err();
    assert_eq!((err.name.as_str(), err.error.as_str()), ("Report", "printer on fire"));
    assert_eq!(test.run_all().await.unwrap(), 2, "the alert and day 4 are left after the failure");
    assert!(!test.run_next().await.unwrap());
    assert_eq!(
        LOG.lock().unwrap().clone(),
        ["report 1 attempt 1", "report 2 attempt 1", "report 3 attempt 1", "report 4 attempt 1"]
    );
    assert_eq!(test.performed().len(), 4, "the failed job is not counted as performed");
    assert_eq!(client.call(&Add { a: 2, b: 3 }).await.unwrap(), 5, "calls are answered inline");

    client.enqueue(&Report { day: 5, fail: false }).await.unwrap();
    test.clear();
    assert!(test.enqueued().is_empty());
}
