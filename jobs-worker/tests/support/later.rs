//! The job of the delay tests (`delays.rs`, `delays_restart.rs`): it notes
//! when it started, by tag.

use std::sync::Mutex;
use std::time::Instant;

use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize, Job)]
pub(crate) struct Later {
    pub(crate) tag: String,
}

static STARTED: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());

impl Perform for Later {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        STARTED.lock().unwrap_or_else(|e| e.into_inner()).push((self.tag, Instant::now()));
        Ok(())
    }
}

/// When the job tagged `tag` started, if it did.
pub(crate) fn started(tag: &str) -> Option<Instant> {
    STARTED.lock().unwrap_or_else(|e| e.into_inner()).iter().find(|s| s.0 == tag).map(|s| s.1)
}
