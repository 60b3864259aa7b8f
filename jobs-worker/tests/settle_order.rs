//! A failed delivery is acked only after its retry or dead copy is confirmed.
//! The link between worker and broker breaks right at the copy's publish:
//! whatever the worker sent before it (an ack, if it acked first) arrives, the
//! copy does not. Acking first would lose the job; the worker must instead
//! leave it unacked, so the broker hands it out again. It may run twice; it
//! is never lost.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use jobs_core::plumbing::{header_str, headers};
use jobs_core::{EnqueueOptions, Job, JobContext, JobError, Perform};
use jobs_test::*;
use serde::{Deserialize, Serialize};

/// The relay's publish trap, armed by the job's first run.
static TRAP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
static RUNS: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[derive(Debug, Serialize, Deserialize, Job)]
struct Refuses {
    tag: String,
}

impl Perform for Refuses {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        let first = {
            let mut runs = RUNS.lock().unwrap();
            runs.push(self.tag.clone());
            runs.iter().filter(|t| **t == self.tag).count() == 1
        };
        if first {
            // The next publish on the link (this failure's dead copy) breaks it.
            TRAP.get().unwrap().store(true, Ordering::SeqCst);
        }
        Err(JobError::fatal("bad input"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_lost_at_the_dead_copy_loses_no_job() {
    let relay = Relay::start().await;
    TRAP.set(relay.publish_trap()).unwrap();
    let Fixture { queue, raw, client, worker: running, cleanup: _cleanup } =
        Fixture::start_with(config_for(&relay.url), "settle-order", Duration::from_secs(5)).await;
    let dead = format!("{queue}.dead");
    let id = client.enqueue_with(&Refuses { tag: queue.clone() }, EnqueueOptions::new().queue(&queue)).await.unwrap();

    wait_until("the job in dead", Duration::from_secs(30), || async { counts(&raw, &dead).await.0 == 1 }).await;
    assert!(!TRAP.get().unwrap().load(Ordering::SeqCst), "the trap went off");
    let runs = RUNS.lock().unwrap().iter().filter(|t| **t == queue).count();
    assert!(runs >= 2, "the first dead copy was lost with the link, so the job ran again: {runs} runs");
    let channel = raw.open_channel(None).await.unwrap();
    let (props, _) = get(&channel, &dead).await.unwrap();
    assert_eq!(props.message_id().map(String::as_str), Some(id.as_str()));
    assert_eq!(header_str(&props, headers::ERROR_KIND), Some("fatal"));
    assert!(get(&channel, &dead).await.is_none(), "dead once");
    running.stop().await.unwrap();
    assert_acked(&raw, &queue).await;
}
