//! Flow control (`docs/flow-control.md`): a job type limited to two running
//! at once across every worker of the vhost, that stops cleanly when
//! cancelled. `charge 6` enqueues six; `worker --queues charges -n 4` on
//! two hosts runs at most two at a time between them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

/// Charges a customer's card: an outside API that allows two calls at once.
#[derive(Debug, Clone, Serialize, Deserialize, Job)]
#[job(queue = "charges", max_running = 2)]
pub struct ChargeCard {
    /// The customer.
    pub customer: u64,
    /// How long the call takes, milliseconds.
    pub millis: u64,
}

/// Milliseconds since the Unix epoch, as the lines print it.
fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

impl Perform for ChargeCard {
    async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
        println!(
            "{} [{}] charging customer {} (job {}) at {}",
            crate::clock(),
            ctx.worker(),
            self.customer,
            ctx.job_id(),
            now_ms()
        );
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(self.millis)) => {}
            _ = ctx.cancelled() => {
                println!("{} [{}] charge of customer {} cancelled at {}", crate::clock(), ctx.worker(), self.customer, now_ms());
                return Ok(());
            }
        }
        println!(
            "{} [{}] charged customer {} (job {}) at {}",
            crate::clock(),
            ctx.worker(),
            self.customer,
            ctx.job_id(),
            now_ms()
        );
        Ok(())
    }
}
