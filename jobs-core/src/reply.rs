//! The status of a call's answer, in its `x-reply-status` header: `ok` (the
//! body is the output) or the kind of failure (the body is the error's text).
//! One type for the worker that writes it and the client that reads it.

use std::fmt;

use crate::FailureKind;

/// How a called job ended, as its answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplyStatus {
    /// It returned its output: the body is the output, MessagePack.
    Ok,
    /// It failed, or could not run: the body is the error's text, a MessagePack string.
    Failed(FailureKind),
}

impl ReplyStatus {
    /// The header's value: `ok`, or the failure kind's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            ReplyStatus::Ok => "ok",
            ReplyStatus::Failed(kind) => kind.as_str(),
        }
    }

    /// The status named `name` (as [`ReplyStatus::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "ok" => Some(ReplyStatus::Ok),
            other => FailureKind::parse(other).map(ReplyStatus::Failed),
        }
    }
}

impl fmt::Display for ReplyStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_parse_back_and_ok_is_no_failure_kind() {
        assert_eq!(ReplyStatus::parse("ok"), Some(ReplyStatus::Ok));
        for kind in FailureKind::ALL {
            assert_ne!(kind.as_str(), "ok");
            assert_eq!(ReplyStatus::parse(ReplyStatus::Failed(kind).as_str()), Some(ReplyStatus::Failed(kind)));
        }
        assert_eq!(ReplyStatus::parse("OK"), None);
        assert_eq!(ReplyStatus::Failed(FailureKind::Timeout).to_string(), "timeout");
    }
}
