//! The job types a worker serves, listed in code, so that no linker can drop
//! them: `jobs![EmailJob, ReportJob]`.

use jobs_core::plumbing::{registrations, Registration};
use jobs_core::Job;

/// A list of job types, each checked by the compiler where it is named.
///
/// ```
/// # use jobs_core::prelude::*;
/// # #[derive(Serialize, Deserialize, Job)] struct EmailJob;
/// # impl Perform for EmailJob { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
/// # #[derive(Serialize, Deserialize, Job)] struct ReportJob;
/// # impl Perform for ReportJob { async fn perform(self, _: JobContext) -> Result<(), JobError> { Ok(()) } }
/// let jobs = jobs_worker::jobs![EmailJob, ReportJob];
/// assert_eq!(jobs.names(), ["EmailJob", "ReportJob"]);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Jobs {
    registrations: Vec<&'static Registration>,
    /// Types named that have no registration (a hand-written `Job` impl).
    unregistered: Vec<&'static str>,
    /// Periodic jobs given in code.
    schedules: Vec<crate::Schedule>,
}

impl Jobs {
    /// No job types.
    pub fn new() -> Self {
        Jobs::default()
    }

    /// Adds job type `J`.
    #[must_use]
    pub fn with<J: Job>(mut self) -> Self {
        match J::__registration() {
            Some(registration) => self.registrations.push(registration),
            None => self.unregistered.push(J::NAME),
        }
        self
    }

    /// Every job type the link-time registry found in this binary
    /// (`#[derive(Job)]` registers each). A convenience: see the README for
    /// when a linker can leave types out, and list them with [`jobs!`](crate::jobs!) instead.
    pub fn linked() -> Self {
        Jobs { registrations: registrations().collect(), unregistered: Vec::new(), schedules: Vec::new() }
    }

    /// Adds the job types of `other`.
    #[must_use]
    pub fn and(mut self, other: Jobs) -> Self {
        self.registrations.extend(other.registrations);
        self.unregistered.extend(other.unregistered);
        self.schedules.extend(other.schedules);
        self
    }

    /// Adds a periodic job, for [`main_with`](crate::main_with) and its
    /// admin commands (`worker schedules`): `jobs![ReportJob].schedule(Schedule::new("nightly-report", "0 3 * * *", ReportJob { .. }))`.
    /// Its job type must be one of these; the config's `[[schedules]]` come on top.
    #[must_use]
    pub fn schedule(mut self, schedule: crate::Schedule) -> Self {
        self.schedules.push(schedule);
        self
    }

    pub(crate) fn schedules(&self) -> &[crate::Schedule] {
        &self.schedules
    }

    /// The names of the job types, in the order given.
    pub fn names(&self) -> Vec<&'static str> {
        self.registrations.iter().map(|r| r.name()).chain(self.unregistered.iter().copied()).collect()
    }

    pub(crate) fn registrations(&self) -> &[&'static Registration] {
        &self.registrations
    }

    pub(crate) fn unregistered(&self) -> Option<&'static str> {
        self.unregistered.first().copied()
    }
}

/// The job types a worker serves: `jobs![EmailJob, ReportJob]` is
/// `Jobs::new().with::<EmailJob>().with::<ReportJob>()`. Pass it to
/// [`main_with`](crate::main_with) or [`WorkerBuilder::jobs`](crate::WorkerBuilder::jobs).
#[macro_export]
macro_rules! jobs {
    ($($job:ty),* $(,)?) => {
        $crate::Jobs::new()$(.with::<$job>())*
    };
}
