use jobs_core::{Job, JobContext, JobError, Perform};
use serde::{Deserialize, Serialize};

fn every_minute(_attempt: u32) -> std::time::Duration {
    std::time::Duration::from_secs(60)
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "emails", name = "SendEmail", max_attempts = 5, timeout = "90s", backoff = every_minute, max_running = 5)]
struct EmailJob {
    to: String,
}

impl Perform for EmailJob {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
enum Defaults {
    A,
    B(u32),
}

impl Perform for Defaults {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "charges", rate = "5/s", burst = 2, rate_key = "customer_id")]
struct Charge {
    customer_id: u64,
}

impl Perform for Charge {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(unique_for = "10m", unique_key = "user_id", unique_until = "window", expires_in = "2h")]
struct Digest {
    user_id: u64,
}

impl Perform for Digest {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "reports", priority = 7)]
struct Report {
    id: u64,
}

impl Perform for Report {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[derive(Serialize, Deserialize, Job)]
#[job(queue = "reports", priorities)]
struct Export {
    id: u64,
}

impl Perform for Export {
    async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

fn main() {
    use jobs_core::UniqueUntil;
    assert_eq!((Report::PRIORITIES, Report::PRIORITY), (true, Some(7)));
    assert_eq!((Export::PRIORITIES, Export::PRIORITY), (true, None));
    assert_eq!((Charge::PRIORITIES, Charge::PRIORITY), (false, None));
    assert_eq!(
        (Digest::UNIQUE_FOR, Digest::UNIQUE_KEY, Digest::UNIQUE_UNTIL),
        (Some(std::time::Duration::from_secs(600)), Some("user_id"), UniqueUntil::Window)
    );
    assert_eq!((Charge::UNIQUE_FOR, Charge::UNIQUE_KEY, Charge::UNIQUE_UNTIL), (None, None, UniqueUntil::End));
    assert_eq!((Digest::EXPIRES_IN, Charge::EXPIRES_IN), (Some(std::time::Duration::from_secs(7200)), None));
    let rate = Charge::RATE.unwrap();
    assert_eq!((rate.count(), rate.per(), Charge::BURST, Charge::RATE_KEY), (5, std::time::Duration::from_secs(1), Some(2), Some("customer_id")));
    assert_eq!((EmailJob::RATE, EmailJob::BURST, EmailJob::RATE_KEY), (None, None, None));
    assert_eq!((Charge::FIELDS, EmailJob::FIELDS, Defaults::FIELDS), (&["customer_id"][..], &["to"][..], &[][..]));
    assert_eq!((EmailJob::NAME, EmailJob::QUEUE), ("SendEmail", "emails"));
    assert_eq!((Defaults::NAME, Defaults::QUEUE), ("Defaults", "default"));
    assert_eq!((EmailJob::MAX_ATTEMPTS, EmailJob::TIMEOUT), (5, std::time::Duration::from_secs(90)));
    assert_eq!(EmailJob::backoff(3), std::time::Duration::from_secs(60));
    assert_eq!((EmailJob::MAX_RUNNING, Defaults::MAX_RUNNING), (Some(5), None));
    assert_eq!((Defaults::MAX_ATTEMPTS, Defaults::TIMEOUT.as_secs()), (25, 1500));
    let names: Vec<_> = jobs_core::plumbing::registrations().map(|r| r.name()).collect();
    assert!(names.contains(&"SendEmail") && names.contains(&"Defaults"), "{names:?}");
}
