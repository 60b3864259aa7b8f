//! Unique jobs: `#[job(unique_for = "10m")]` (with `unique_key = "field"`,
//! `unique_until = "window"`) or [`EnqueueOptions::unique_key`]. While a job
//! holds its key, another enqueue with the same key publishes nothing and
//! returns [`Error::Duplicate`] with the holder's id.
//!
//! The keys are held by one worker of the vhost, the unique keeper (a
//! leader, `jobs.unique.keeper`), in memory and recorded in the stream
//! [`UNIQUE`]. An enqueue asks the keeper first, over `jobs.unique.ask`
//! with direct reply-to: the keeper answers "new" only once the reservation
//! is recorded (confirmed), so a new keeper that reads the record back
//! holds every key the last one granted. The job is published only after a
//! "new"; a job the broker refused to store gives its key back at once.
//!
//! A key is held from the enqueue until the job ends (acked, or dead:
//! a dead job is not queued), and never longer than its `unique_for` (the
//! bound on a key whose end was never recorded: a worker killed between a
//! job's ack and its release). With `unique_until = "window"` it is held
//! for the whole `unique_for`, however soon the job ends.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::destination::{Declare, Destination};
use crate::journal::Journal;
use crate::message::Message;
use crate::registry::Registration;
use crate::replies::DIRECT_REPLY_TO;
use crate::session::Session;
use crate::window::One;
use crate::{Client, EnqueueOptions, Error, JobId};

/// The record of the keys held: reservations and releases, kept two days
/// (longer than the longest `unique_for`, [`MAX_UNIQUE_FOR`]).
pub const UNIQUE: Journal = Journal::new("jobs.unique", Duration::from_secs(2 * 86_400)).with_segment_bytes(8 << 20);
/// The queue the unique keeper answers on.
pub const UNIQUE_ASK: &str = "jobs.unique.ask";
/// The kind of a record of [`UNIQUE`] (a list of [`UniqueRecord`]s).
pub const UNIQUE_KIND: &str = "unique";
/// The longest a key may be held.
pub const MAX_UNIQUE_FOR: Duration = Duration::from_secs(86_400);
/// How long an ask waits in its queue for a keeper (then the broker drops it).
pub const UNIQUE_ASK_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an enqueue waits for the keeper's answer: past the ask's life
/// in its queue, so that no keeper takes an ask its enqueue gave up on.
pub const UNIQUE_ANSWER_WAIT: Duration = Duration::from_secs(8);
/// Keys longer than this are kept as their first bytes and a hash.
const MAX_KEY_BYTES: usize = 200;
/// A body up to this size is its own key (as hex); a longer one is hashed.
const MAX_BODY_KEY_BYTES: usize = 48;

/// When a unique job gives its key back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum UniqueUntil {
    /// When it ends (succeeds, or goes dead), or its `unique_for` is over, whichever is first.
    #[default]
    End,
    /// When its `unique_for` is over, however soon it ends (`unique_until = "window"`).
    Window,
}

impl UniqueUntil {
    /// The name in `#[job(unique_until = "...")]` and the `x-unique-until` header.
    pub fn as_str(&self) -> &'static str {
        match self {
            UniqueUntil::End => "end",
            UniqueUntil::Window => "window",
        }
    }
}

/// How one enqueue of a job is unique: its key and for how long.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uniqueness {
    /// `<Type>:<key>`, at most about 200 bytes.
    pub key: String,
    /// The longest the key is held.
    pub for_: Duration,
    /// When it is given back.
    pub until: UniqueUntil,
}

/// What an enqueue asks the keeper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniqueAsk {
    /// The key.
    pub key: String,
    /// The id of the job that would hold it.
    pub id: String,
    /// The job type (for the duplicate counts).
    pub job: String,
    /// How long it would hold it, in milliseconds.
    pub for_ms: u64,
    /// This hold's token: its release names it, so a release of an earlier
    /// hold (the same job before a `dead retry`) frees nothing.
    pub token: String,
}

/// The keeper's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UniqueAnswer {
    /// The key is the job's now (or was already: the same id asked again).
    New,
    /// Another job holds the key.
    Duplicate {
        /// The holder's id.
        existing: String,
    },
    /// The keeper holds as many keys as it may; nothing was reserved.
    Full {
        /// How many it holds.
        keys: u64,
    },
}

/// A record of [`UNIQUE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum UniqueRecord {
    /// `id` holds `key` until `until_ms` (ms since the epoch) at the latest.
    Reserve {
        /// The key.
        key: String,
        /// The holder.
        id: String,
        /// When the hold ends at the latest.
        until_ms: u64,
        /// The hold's token.
        token: String,
    },
    /// The hold `token` of `key` ends (when it holds it still; a release
    /// read before its reservation cancels it).
    Release {
        /// The key.
        key: String,
        /// The holder it was.
        id: String,
        /// The hold's token.
        token: String,
    },
}

/// Encodes records for [`UNIQUE`].
///
/// # Errors
/// [`Error::Encode`] (not seen: the records are plain data).
pub fn encode_records(records: &[UniqueRecord]) -> Result<Vec<u8>, Error> {
    rmp_serde::to_vec(records).map_err(|e| Error::Encode { job: "unique record", source: crate::Cause::new(e) })
}

/// Decodes a record of [`UNIQUE`]; `None` for anything else.
pub fn decode_records(body: &[u8]) -> Option<Vec<UniqueRecord>> {
    rmp_serde::from_slice(body).ok()
}

impl Uniqueness {
    /// How an enqueue of `body` (a job of type `job`) with `options` is
    /// unique: the type's `unique_for`, or the options'; `None`: it is not.
    ///
    /// # Errors
    /// [`Error::Unique`] for a `unique_key` without a `unique_for`, a
    /// `unique_for` over a day, or a `unique_key` field the body lacks.
    pub fn of(
        job: &str,
        registration: Option<&Registration>,
        options: &EnqueueOptions,
        body: &[u8],
    ) -> Result<Option<Self>, Error> {
        let for_ = options.unique_for.or_else(|| registration.and_then(Registration::unique_for));
        let Some(for_) = for_ else {
            if options.unique_key.is_some() {
                return Err(Error::Unique {
                    job: job.to_owned(),
                    reason: "a unique_key for a type without unique_for: give the type `#[job(unique_for = \"10m\")]`, or EnqueueOptions::unique_for".into(),
                });
            }
            return Ok(None);
        };
        if for_.is_zero() || for_ > MAX_UNIQUE_FOR {
            return Err(Error::Unique {
                job: job.to_owned(),
                reason: format!("unique_for is {for_:?}; it is from 1 ms to a day"),
            });
        }
        let until = registration.map(Registration::unique_until).unwrap_or_default();
        let field = registration.and_then(Registration::unique_key);
        let key = match (&options.unique_key, field) {
            (Some(given), _) => format!("{job}:{given}"),
            (None, Some(field)) => match field_of(body, field) {
                Some(value) => format!("{job}:{}", String::from_utf8_lossy(&value)),
                None => {
                    return Err(Error::Unique {
                        job: job.to_owned(),
                        reason: format!("its unique_key `{field}` is not a field of the job"),
                    })
                }
            },
            (None, None) if body.len() <= MAX_BODY_KEY_BYTES => format!("{job}#{}", hex(body)),
            (None, None) => format!("{job}#{:032x}", fnv1a128(body)),
        };
        Ok(Some(Uniqueness { key: short_key(key), for_, until }))
    }
}

impl Uniqueness {
    /// `message` marked with its key (`x-unique-key`, `x-unique-for`,
    /// `x-unique-until` for a window), for the worker that ends it and a
    /// `dead retry` of it.
    pub fn mark(&self, message: Message, token: &str) -> Message {
        use amqprs::FieldValue;
        let ms = i64::try_from(self.for_.as_millis()).unwrap_or(i64::MAX);
        let message = message
            .header(crate::codec::headers::UNIQUE_KEY, FieldValue::from(self.key.as_str()))
            .header(crate::codec::headers::UNIQUE_FOR, FieldValue::l(ms))
            .header(crate::codec::headers::UNIQUE_TOKEN, FieldValue::from(token));
        match self.until {
            UniqueUntil::End => message,
            UniqueUntil::Window => message.header(crate::codec::headers::UNIQUE_UNTIL, FieldValue::from("window")),
        }
    }
}

impl Uniqueness {
    /// What [`Uniqueness::mark`] wrote on a message (a dead job's, for its
    /// `dead retry`); `None` for a job that is not unique. A window not
    /// said, or over a day, is a day.
    pub fn marked(props: &amqprs::BasicProperties) -> Option<Self> {
        use crate::codec::{header_str, header_u64, headers};
        let key = header_str(props, headers::UNIQUE_KEY)?;
        let for_ = header_u64(props, headers::UNIQUE_FOR).map_or(MAX_UNIQUE_FOR, Duration::from_millis);
        let until = match header_str(props, headers::UNIQUE_UNTIL) {
            Some("window") => UniqueUntil::Window,
            _ => UniqueUntil::End,
        };
        Some(Uniqueness { key: key.to_owned(), for_: for_.min(MAX_UNIQUE_FOR), until })
    }
}

/// `key`, or its first bytes and a hash when longer than [`MAX_KEY_BYTES`].
pub fn short_key(key: String) -> String {
    if key.len() <= MAX_KEY_BYTES {
        return key;
    }
    let mut cut = MAX_KEY_BYTES - 33;
    while !key.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}~{:032x}", &key[..cut], fnv1a128(key.as_bytes()))
}

/// FNV-1a, 128 bits: the same in every build of every version (the keys of
/// producers and workers of different builds agree).
fn fnv1a128(bytes: &[u8]) -> u128 {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    bytes.iter().fold(OFFSET, |hash, b| (hash ^ u128::from(*b)).wrapping_mul(PRIME))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of `field` in a MessagePack map (a job's body), as JSON bytes.
pub fn field_of(body: &[u8], field: &str) -> Option<Vec<u8>> {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    struct FieldOf<'f>(&'f str);
    impl<'de> DeserializeSeed<'de> for FieldOf<'_> {
        type Value = Option<serde_json::Value>;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for FieldOf<'_> {
        type Value = Option<serde_json::Value>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a job's fields")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = None;
            while let Some(name) = map.next_key::<String>()? {
                if name == self.0 {
                    found = Some(map.next_value::<serde_json::Value>()?);
                } else {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            Ok(found)
        }
    }
    let mut decoder = rmp_serde::Deserializer::new(body);
    let value = FieldOf(field).deserialize(&mut decoder).ok()??;
    serde_json::to_vec(&value).ok()
}

/// Milliseconds since the epoch.
pub fn epoch_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Client {
    /// Asks the unique keeper for `unique.key` for job `id` of type `job`:
    /// the hold's token once it is the job's (recorded), [`Error::Duplicate`]
    /// when another job holds it. An ask that may have reached the keeper
    /// and got no answer gives its hold back (it may have been granted).
    pub(crate) async fn reserve_unique(&self, unique: &Uniqueness, id: &JobId, job: &str) -> Result<String, Error> {
        let ask_id = JobId::new();
        let token = ask_id.to_string();
        let ask = UniqueAsk {
            key: unique.key.clone(),
            id: id.to_string(),
            job: job.to_owned(),
            for_ms: u64::try_from(unique.for_.as_millis()).unwrap_or(u64::MAX),
            token: token.clone(),
        };
        let body =
            rmp_serde::to_vec(&ask).map_err(|e| Error::Encode { job: "unique ask", source: crate::Cause::new(e) })?;
        let listen = |session: std::sync::Arc<Session>| {
            let ask_id = ask_id.clone();
            async move {
                let replies = session.replies().await?;
                let answer = replies.expect(&ask_id);
                Ok((replies, answer))
            }
        };
        let message = Message::job("unique-ask", ask_id.clone(), body)
            .transient()
            .reply_to(DIRECT_REPLY_TO)
            .expires(UNIQUE_ASK_TIMEOUT);
        let destination = Destination::direct(UNIQUE_ASK);
        let mut one = One { message: &message, destination: &destination, done: false };
        let (published, listening) = self.publish_source(&destination, listen, &mut one, false).await;
        let unavailable = |reason: String| Error::Unique { job: job.to_owned(), reason };
        let answered = match (published, listening) {
            (Ok(_), Some((replies, answer))) => match tokio::time::timeout(UNIQUE_ANSWER_WAIT, answer).await {
                Ok(Ok((_, body))) => Ok(body),
                Ok(Err(_)) => Err(unavailable("the connection closed before the unique keeper answered".into())),
                Err(_) => {
                    replies.forget(&ask_id);
                    Err(unavailable(format!(
                        "the unique keeper did not answer within {UNIQUE_ANSWER_WAIT:?} (is a worker running?)"
                    )))
                }
            },
            (Err(stopped), listening) => {
                if let Some((replies, _)) = listening {
                    replies.forget(&ask_id);
                }
                match stopped.into_error() {
                    // No ask queue: no keeper ever, nothing to give back.
                    Error::Unroutable { .. } => {
                        return Err(unavailable(format!(
                        "no worker keeps the unique keys of this vhost (the queue {UNIQUE_ASK} does not exist): start a worker"
                    )))
                    }
                    other => Err(other),
                }
            }
            (Ok(_), None) => Err(unavailable("no connection to ask the unique keeper on".into())),
        };
        let body = match answered {
            Ok(body) => body,
            Err(err) => {
                self.give_back(unique, id, &token).await;
                return Err(err);
            }
        };
        match rmp_serde::from_slice::<UniqueAnswer>(&body) {
            Ok(UniqueAnswer::New) => Ok(token),
            Ok(UniqueAnswer::Duplicate { existing }) => {
                Err(Error::Duplicate { existing: JobId::from(existing.as_str()) })
            }
            Ok(UniqueAnswer::Full { keys }) => Err(unavailable(format!(
                "the unique keeper holds {keys} keys, as many as it may; nothing was reserved"
            ))),
            Err(e) => Err(unavailable(format!("the unique keeper's answer does not decode: {e}"))),
        }
    }

    /// Gives back the hold `token` of `unique.key` for `id`: one the keeper
    /// may have granted with an answer that never came, or one whose job was
    /// not stored (best effort: else it is held for its unique_for).
    pub(crate) async fn give_back(&self, unique: &Uniqueness, id: &JobId, token: &str) {
        let release = UniqueRecord::Release { key: unique.key.clone(), id: id.to_string(), token: token.to_owned() };
        let given = tokio::time::timeout(UNIQUE_ASK_TIMEOUT, self.release_unique(&[release])).await;
        if let Err(err) =
            given.unwrap_or_else(|_| Err(Error::Unique { job: unique.key.clone(), reason: "no answer".into() }))
        {
            tracing::debug!(job.id = %id, error = %crate::report(&err), "a unique key not given back; it is held for its unique_for");
        }
    }

    /// Records that `id` gives its key back (confirmed).
    ///
    /// # Errors
    /// As [`Client::enqueue`].
    pub async fn release_unique(&self, records: &[UniqueRecord]) -> Result<(), Error> {
        let message = Message::job(UNIQUE_KIND, JobId::new(), encode_records(records)?).transient();
        let destination = Destination { declare: Declare::Journal(UNIQUE), ..Destination::direct(UNIQUE.name()) };
        self.publish_one(&message, &destination, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_the_type_and_fields_or_a_field_or_given_and_never_long() {
        let options = EnqueueOptions::default().unique_for(Duration::from_secs(60));
        let body = rmp_serde::to_vec_named(&serde_json::json!({"to": "ann", "n": 1})).unwrap();
        let key = Uniqueness::of("Email", None, &options, &body).unwrap().unwrap().key;
        assert_eq!(key, format!("Email#{}", hex(&body)));
        let other = rmp_serde::to_vec_named(&serde_json::json!({"to": "bob", "n": 1})).unwrap();
        assert_ne!(Uniqueness::of("Email", None, &options, &other).unwrap().unwrap().key, key);
        let given = options.clone().unique_key("ann");
        assert_eq!(Uniqueness::of("Email", None, &given, &body).unwrap().unwrap().key, "Email:ann");
        let long = rmp_serde::to_vec_named(&serde_json::json!({"to": "a".repeat(500)})).unwrap();
        let hashed = Uniqueness::of("Email", None, &options, &long).unwrap().unwrap().key;
        assert_eq!(hashed.len(), "Email#".len() + 32);
        let very = short_key(format!("Email:{}", "é".repeat(300)));
        assert!(very.len() <= MAX_KEY_BYTES, "{}", very.len());
        assert_ne!(very, short_key(format!("Email:{}x", "é".repeat(300))));
        assert_eq!(field_of(&body, "to").as_deref(), Some(&b"\"ann\""[..]));
        assert_eq!(field_of(&body, "missing"), None);
    }

    #[test]
    fn a_key_without_a_window_and_a_window_past_a_day_are_refused() {
        let body = rmp_serde::to_vec_named(&serde_json::json!({"to": "ann"})).unwrap();
        let keyed = EnqueueOptions::default().unique_key("ann");
        assert!(matches!(Uniqueness::of("Email", None, &keyed, &body), Err(Error::Unique { .. })));
        let long = EnqueueOptions::default().unique_for(Duration::from_secs(2 * 86_400));
        assert!(matches!(Uniqueness::of("Email", None, &long, &body), Err(Error::Unique { .. })));
        assert_eq!(Uniqueness::of("Email", None, &EnqueueOptions::default(), &body).unwrap(), None);
    }

    #[test]
    fn records_go_through_the_wire() {
        let records = vec![
            UniqueRecord::Reserve { key: "a".into(), id: "1".into(), until_ms: 5, token: "t".into() },
            UniqueRecord::Release { key: "a".into(), id: "1".into(), token: "t".into() },
        ];
        assert_eq!(decode_records(&encode_records(&records).unwrap()), Some(records));
        assert_eq!(decode_records(b"garbage"), None);
        assert_eq!(fnv1a128(b""), 0x6c62272e07bb014262b821756295c58d);
    }
}
