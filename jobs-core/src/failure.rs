//! The kinds of failure: why an attempt failed or a message could not run.
//! One name each, written in the `x-error-kind` header of retried and dead
//! jobs, in the `kind` label of the `jobs_failed_total` and `jobs_dead_total`
//! metrics, in log lines, and in the status of a failed call's answer.

use std::fmt;

/// Why an attempt failed, or why a message could not be run at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FailureKind {
    /// `perform` returned an error: retried with backoff while attempts are left.
    Failed,
    /// `perform` returned an error marked final ([`JobError::fatal`](crate::JobError::fatal)): dead at once.
    Fatal,
    /// `perform` panicked: retried like `Failed`.
    Panicked,
    /// The attempt ran past the job type's timeout and was cancelled: retried like `Failed`.
    Timeout,
    /// The job came back unacked more than `amqp.max_crashes` times (it kills
    /// its worker): dead.
    Crashed,
    /// The body does not decode as its job type: dead at once.
    Undecodable,
    /// No job type of that name is linked into the worker (a newer deploy's
    /// type during a rolling upgrade, or a typo): retried with the default
    /// backoff, so that a worker that knows the type runs it; dead after the
    /// default number of attempts.
    UnknownType,
    /// Not a job message (no `type` or `message_id`, another content type, a
    /// body over `worker.max_message_size`): dead at once.
    BadMessage,
    /// Someone cancelled the job (`worker cancel <id>`), while it ran or
    /// before it came up: dead at once, whatever `perform` returned.
    Cancelled,
    /// Not started by its deadline (`#[job(expires_in = "1h")]`,
    /// `EnqueueOptions::expires_at`, a call past its caller's timeout), or its
    /// retry or wait would come after it: dead, not run.
    Expired,
}

impl FailureKind {
    /// Every kind, for tables and tests.
    pub const ALL: [FailureKind; 10] = [
        FailureKind::Failed,
        FailureKind::Fatal,
        FailureKind::Panicked,
        FailureKind::Timeout,
        FailureKind::Crashed,
        FailureKind::Undecodable,
        FailureKind::UnknownType,
        FailureKind::BadMessage,
        FailureKind::Cancelled,
        FailureKind::Expired,
    ];

    /// The kind's name on the wire, in metrics and in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Failed => "failed",
            FailureKind::Fatal => "fatal",
            FailureKind::Panicked => "panicked",
            FailureKind::Timeout => "timeout",
            FailureKind::Crashed => "crashed",
            FailureKind::Undecodable => "undecodable",
            FailureKind::UnknownType => "unknown_type",
            FailureKind::BadMessage => "bad_message",
            FailureKind::Cancelled => "cancelled",
            FailureKind::Expired => "expired",
        }
    }

    /// The kind named `name` (as [`FailureKind::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        FailureKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_snake_case_and_parse_back() {
        let mut seen = std::collections::HashSet::new();
        for kind in FailureKind::ALL {
            let name = kind.as_str();
            assert!(name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{name}");
            assert!(seen.insert(name), "{name} twice");
            assert_eq!(FailureKind::parse(name), Some(kind));
            assert_eq!(kind.to_string(), name);
        }
        assert_eq!(FailureKind::parse("unknown-type"), None);
    }
}
