//! Periodic jobs: what a schedule is (a name, a cron expression in a time
//! zone, the job it enqueues, what to do about ticks missed while no worker
//! fired), given in code ([`Schedule`]) or in config (`[[schedules]]`), and
//! checked whole at start: a bad expression, an unknown time zone, args that
//! do not fit the job type, an unknown job type or two schedules of one name
//! stop the worker with one error that names the schedule and the key.

use jiff::tz::TimeZone;
use jobs_core::plumbing::Registration;
use jobs_core::Job;
use serde::Deserialize;

use crate::cron::Cron;
use crate::Error;

/// What a new leader does about ticks that came while no worker fired them
/// (`catch_up`): fire none, the latest once (the default), or each of them
/// (at most `scheduler.max_catch_up`, 100 by default). Missed means after the last tick
/// recorded in `jobs.schedule.ticks` (kept 7 days): a schedule with no record
/// there starts from now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Fire none of the missed ticks.
    Skip,
    /// Fire the latest missed tick once.
    #[default]
    Last,
    /// Fire every missed tick, oldest first.
    All,
}

impl CatchUp {
    /// Its name in config: `skip`, `last` or `all`.
    pub fn as_str(self) -> &'static str {
        match self {
            CatchUp::Skip => "skip",
            CatchUp::Last => "last",
            CatchUp::All => "all",
        }
    }
}

/// `[[schedules]]` in config: a schedule an operator adds without a build.
///
/// ```toml
/// [[schedules]]
/// name = "tick"                # unique
/// cron = "*/5 * * * * *"       # five fields, or six with seconds first
/// job = "Task"                 # a job type the worker links
/// args = { message = "tick" }  # the job's fields, checked against the type at start
/// time_zone = "UTC"            # default UTC; IANA names
/// catch_up = "last"            # skip | last (default) | all
/// queue = "reports"            # optional, as EnqueueOptions::queue
/// enabled = true
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Unique among the worker's schedules.
    pub name: String,
    /// The cron expression.
    pub cron: String,
    /// The job type's name.
    pub job: String,
    /// The job's fields (default: none).
    #[serde(default = "no_args")]
    pub args: serde_json::Value,
    /// An IANA time zone name (default `UTC`).
    #[serde(default = "utc")]
    pub time_zone: String,
    /// What to do about missed ticks (default `last`).
    #[serde(default)]
    pub catch_up: CatchUp,
    /// Another queue than the job type's.
    #[serde(default)]
    pub queue: Option<String>,
    /// `false` keeps the schedule defined but never fired.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn no_args() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// A schedule given in code:
/// `Schedule::new("nightly-report", "0 3 * * *", ReportJob { .. }).time_zone("Europe/Berlin")`,
/// handed to `Worker::builder().schedule(..)`. It is checked with the
/// config's schedules when the worker is built.
#[derive(Debug, Clone)]
pub struct Schedule {
    name: String,
    cron: String,
    job: &'static str,
    /// The job, encoded (or why it cannot be).
    body: Result<Vec<u8>, String>,
    time_zone: String,
    catch_up: CatchUp,
    queue: Option<String>,
    enabled: bool,
}

impl Schedule {
    /// Enqueues `job` at every tick of `cron` (five fields, or six with
    /// seconds first), in UTC unless [`Schedule::time_zone`] says otherwise.
    pub fn new<J: Job>(name: &str, cron: &str, job: J) -> Self {
        Schedule {
            name: name.to_owned(),
            cron: cron.to_owned(),
            job: J::NAME,
            body: jobs_core::plumbing::encode(&job).map_err(|e| e.to_string()),
            time_zone: utc(),
            catch_up: CatchUp::default(),
            queue: None,
            enabled: true,
        }
    }

    /// The IANA time zone its cron expression is read in (`Europe/Berlin`).
    #[must_use]
    pub fn time_zone(mut self, name: &str) -> Self {
        self.time_zone = name.to_owned();
        self
    }

    /// What a new leader does about missed ticks.
    #[must_use]
    pub fn catch_up(mut self, catch_up: CatchUp) -> Self {
        self.catch_up = catch_up;
        self
    }

    /// Sends its jobs to another queue than the job type's.
    #[must_use]
    pub fn queue(mut self, queue: &str) -> Self {
        self.queue = Some(queue.to_owned());
        self
    }

    /// `false` keeps it defined but never fired.
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }
}

/// A schedule checked against the worker's job types: ready to fire.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    /// Its name.
    pub(crate) name: String,
    /// When it fires.
    pub(crate) cron: Cron,
    /// Its expression, as given.
    pub(crate) cron_text: String,
    /// Where its expression is read.
    pub(crate) time_zone: TimeZone,
    /// The time zone's name, as given.
    pub(crate) time_zone_name: String,
    /// Its job type.
    pub(crate) registration: &'static Registration,
    /// The job, encoded.
    pub(crate) body: Vec<u8>,
    /// What to do about missed ticks.
    pub(crate) catch_up: CatchUp,
    /// Another queue than the job type's.
    pub(crate) queue: Option<String>,
    /// Whether it fires.
    pub(crate) enabled: bool,
}

impl Resolved {
    /// The options of each job it enqueues: its queue, when it names one.
    pub(crate) fn options(&self) -> jobs_core::EnqueueOptions {
        let options = jobs_core::EnqueueOptions::new();
        match &self.queue {
            Some(queue) => options.queue(queue),
            None => options,
        }
    }
}

/// The key of a schedule's setting in errors: `schedules.<name>.<key>`.
fn key(name: &str, field: &str) -> String {
    format!("schedules.{name}.{field}")
}

fn bad(name: &str, field: &str, message: String) -> Error {
    Error::Core(jobs_core::Error::Config { key: key(name, field), message })
}

/// Checks the schedules given in code and in config against the job types
/// the worker links, all of them, and names the first that is wrong.
///
/// # Errors
/// [`jobs_core::Error::Config`] with the key `schedules.<name>.<field>`.
pub(crate) fn resolve(
    code: &[Schedule],
    config: &[ScheduleConfig],
    types: &[&'static Registration],
) -> Result<Vec<Resolved>, Error> {
    let from_config = config.iter().map(|c| {
        let body = rmp_serde::to_vec_named(&c.args).map_err(|e| e.to_string());
        let job = types.iter().find(|r| r.name() == c.job).map(|r| r.name());
        (
            c.name.clone(),
            c.cron.clone(),
            job.ok_or(c.job.clone()),
            body,
            c.time_zone.clone(),
            c.catch_up,
            c.queue.clone(),
            c.enabled,
        )
    });
    let from_code = code.iter().map(|s| {
        (
            s.name.clone(),
            s.cron.clone(),
            Ok(s.job),
            s.body.clone(),
            s.time_zone.clone(),
            s.catch_up,
            s.queue.clone(),
            s.enabled,
        )
    });
    let mut resolved: Vec<Resolved> = Vec::new();
    for (name, cron, job, body, time_zone_name, catch_up, queue, enabled) in from_code.chain(from_config) {
        if name.trim().is_empty() {
            return Err(Error::Core(jobs_core::Error::Config {
                key: "schedules.name".into(),
                message: "a schedule needs a name".into(),
            }));
        }
        if resolved.iter().any(|r| r.name == name) {
            return Err(bad(&name, "name", "two schedules have this name; each needs its own".into()));
        }
        let cron_text = cron;
        let cron: Cron = cron_text.parse().map_err(|e| bad(&name, "cron", format!("{e}")))?;
        let time_zone = TimeZone::get(&time_zone_name).map_err(|_| {
            bad(&name, "time_zone", format!("`{time_zone_name}` is not a time zone this worker knows (IANA names such as `Europe/Berlin`, or `UTC`)"))
        })?;
        let job_name = job.map_err(|unknown| {
            let mut known: Vec<&str> = types.iter().map(|r| r.name()).collect();
            known.sort_unstable();
            bad(&name, "job", format!("no job type `{unknown}` in this worker; it links: {}", known.join(", ")))
        })?;
        let Some(registration) = types.iter().copied().find(|r| r.name() == job_name) else {
            return Err(bad(
                &name,
                "job",
                format!("job type `{job_name}` is not one this worker serves; add it to the worker's job types"),
            ));
        };
        let body = body.map_err(|e| bad(&name, "args", format!("cannot be encoded: {e}")))?;
        registration.check(&body).map_err(|e| bad(&name, "args", format!("do not fit job type `{job_name}`: {e}")))?;
        if let Some(queue) = &queue {
            jobs_core::plumbing::topology::validate_queue_name(queue)
                .map_err(|e| bad(&name, "queue", e.to_string()))?;
        }
        resolved.push(Resolved {
            name,
            cron,
            cron_text,
            time_zone,
            time_zone_name,
            registration,
            body,
            catch_up,
            queue,
            enabled,
        });
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use jobs_core::{JobContext, JobError, Perform};
    use serde::Serialize;

    use super::*;

    #[derive(Debug, Serialize, serde::Deserialize, jobs_core::Job)]
    struct Report {
        day: u32,
    }

    impl Perform for Report {
        async fn perform(self, _ctx: JobContext) -> Result<(), JobError> {
            Ok(())
        }
    }

    fn types() -> Vec<&'static Registration> {
        vec![Report::__registration().expect("derived")]
    }

    fn config(toml: &str) -> Vec<ScheduleConfig> {
        #[derive(Deserialize)]
        struct File {
            schedules: Vec<ScheduleConfig>,
        }
        let file: File = toml::from_str(toml).unwrap_or_else(|e| panic!("{e}"));
        file.schedules
    }

    fn error(code: &[Schedule], config: &[ScheduleConfig]) -> String {
        resolve(code, config, &types()).expect_err("refused").to_string()
    }

    #[test]
    fn schedules_from_code_and_config_resolve() {
        let code = [Schedule::new("nightly", "0 3 * * *", Report { day: 1 }).time_zone("Europe/Berlin")];
        let config = config(
            r#"
            [[schedules]]
            name = "tick"
            cron = "*/5 * * * * *"
            job = "Report"
            args = { day = 7 }
            catch_up = "all"
            queue = "reports"
            "#,
        );
        let resolved = resolve(&code, &config, &types()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(resolved.len(), 2);
        assert_eq!((resolved[0].name.as_str(), resolved[0].time_zone_name.as_str()), ("nightly", "Europe/Berlin"));
        let tick = &resolved[1];
        assert_eq!((tick.catch_up, tick.queue.as_deref(), tick.enabled), (CatchUp::All, Some("reports"), true));
        assert_eq!(tick.time_zone_name, "UTC", "the default");
        let job: Report = rmp_serde::from_slice(&tick.body).unwrap();
        assert_eq!(job.day, 7);
    }

    #[test]
    fn each_mistake_is_one_error_naming_the_schedule_and_the_key() {
        let one = |extra: &str| {
            config(&format!("[[schedules]]\nname = \"tick\"\njob = \"Report\"\nargs = {{ day = 1 }}\n{extra}"))
        };
        let cases = [
            (one("cron = \"61 * * * *\""), "schedules.tick.cron", "outside 0-59"),
            (one("cron = \"* * * * *\"\ntime_zone = \"Mars/Olympus\""), "schedules.tick.time_zone", "Mars/Olympus"),
            (
                config("[[schedules]]\nname = \"tick\"\ncron = \"* * * * *\"\njob = \"Report\"\nargs = { day = \"monday\" }"),
                "schedules.tick.args",
                "do not fit job type `Report`",
            ),
            (
                config("[[schedules]]\nname = \"tick\"\ncron = \"* * * * *\"\njob = \"Nope\""),
                "schedules.tick.job",
                "no job type `Nope`",
            ),
            (one("cron = \"* * * * *\"\nqueue = \"\""), "schedules.tick.queue", ""),
        ];
        for (config, key, says) in cases {
            let err = error(&[], &config);
            assert!(err.contains(key) && err.contains(says), "{key}: {err}");
        }
        let twice = [Schedule::new("tick", "* * * * *", Report { day: 1 })];
        let err = error(&twice, &one("cron = \"0 * * * *\""));
        assert!(err.contains("schedules.tick.name") && err.contains("two schedules"), "{err}");
        let err = error(&[Schedule::new("tick", "* * * *", Report { day: 1 })], &[]);
        assert!(err.contains("schedules.tick.cron") && err.contains("4 fields"), "{err}");
    }

    #[test]
    fn unknown_keys_in_a_schedule_are_refused() {
        #[derive(Debug, Deserialize)]
        struct File {
            #[allow(dead_code)]
            schedules: Vec<ScheduleConfig>,
        }
        let err = toml::from_str::<File>(
            "[[schedules]]\nname = \"a\"\ncron = \"* * * * *\"\njob = \"Report\"\ncatchup = \"all\"",
        )
        .expect_err("unknown key")
        .to_string();
        assert!(err.contains("catchup"), "{err}");
    }
}
