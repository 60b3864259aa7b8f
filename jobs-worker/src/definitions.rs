//! Schedule definitions compared across workers. In a rolling deploy, old
//! and new workers hold other schedules for a while; the leader's win (only
//! it fires), and each worker says so once. Every worker with schedules
//! puts a digest of its definitions in its heartbeats (the leader also each
//! schedule's digest) and reads the others' beats: a worker that follows
//! logs how its definitions differ from the leader's, once per leader and
//! digest; the leader logs, once per worker and digest, each worker whose
//! definitions differ from its own.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jobs_core::backoff::Backoff;
use jobs_core::plumbing::events::{EventReader, Heartbeat, ScheduleBeat, StartAt};
use jobs_core::plumbing::topology::Declarer;
use jobs_core::plumbing::{close_connection, connect};
use jobs_core::{report, AmqpConfig};
use tracing::{info, warn};

use crate::schedule::Resolved;
use crate::scheduler::Status;

/// 64-bit FNV-1a, written as 16 hex digits: stable across builds and hosts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    /// Adds `bytes`.
    pub(crate) fn write(mut self, bytes: &[u8]) -> Self {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        self
    }

    /// Adds `bytes`, then a separator (so that fields do not run together).
    pub(crate) fn field(self, bytes: &[u8]) -> Self {
        self.write(bytes).write(&[0xff])
    }

    pub(crate) fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// The digest of one schedule's definition: everything that decides what it fires and when.
pub(crate) fn digest(schedule: &Resolved) -> String {
    Fnv::new()
        .field(schedule.name.as_bytes())
        .field(schedule.cron_text.as_bytes())
        .field(schedule.time_zone_name.as_bytes())
        .field(schedule.registration.name().as_bytes())
        .field(&schedule.body)
        .field(schedule.queue.as_deref().unwrap_or("").as_bytes())
        .field(schedule.catch_up.as_str().as_bytes())
        .field(&[u8::from(schedule.enabled)])
        .hex()
}

/// The digest of a worker's definitions, from each schedule's name and digest.
pub(crate) fn digest_all<'a>(schedules: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let sorted: BTreeMap<&str, &str> = schedules.into_iter().collect();
    sorted.into_iter().fold(Fnv::new(), |fnv, (name, digest)| fnv.field(name.as_bytes()).field(digest.as_bytes())).hex()
}

/// How this worker's definitions differ from the leader's, in words:
/// `only here: a; only on the leader: b; defined otherwise: c`.
pub(crate) fn difference(own: &[(String, String)], leader: &[ScheduleBeat]) -> String {
    let theirs: BTreeMap<&str, &str> = leader.iter().map(|s| (s.name.as_str(), s.digest.as_str())).collect();
    let ours: BTreeMap<&str, &str> = own.iter().map(|(n, d)| (n.as_str(), d.as_str())).collect();
    let only_here: Vec<&str> = ours.keys().filter(|n| !theirs.contains_key(*n)).copied().collect();
    let only_there: Vec<&str> = theirs.keys().filter(|n| !ours.contains_key(*n)).copied().collect();
    let changed: Vec<&str> =
        ours.iter().filter(|(n, d)| theirs.get(*n).is_some_and(|t| t != *d)).map(|(n, _)| *n).collect();
    let mut parts = Vec::new();
    for (label, names) in [("only here", only_here), ("only on the leader", only_there), ("defined otherwise", changed)]
    {
        if !names.is_empty() {
            parts.push(format!("{label}: {}", names.join(", ")));
        }
    }
    if parts.is_empty() {
        "the same schedules, in another form".into()
    } else {
        parts.join("; ")
    }
}

/// Reads the other workers' beats and says once each way definitions differ, until dropped.
pub(crate) async fn watch(amqp: AmqpConfig, worker: String, status: Arc<Status>) {
    let mut told: HashSet<(String, String)> = HashSet::new();
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    loop {
        if let Err(err) = read(&amqp, &worker, &status, &mut told).await {
            info!(error = %report(&err), "schedule definitions of other workers are not read for now");
        }
        backoff.wait().await;
    }
}

async fn read(
    amqp: &AmqpConfig,
    worker: &str,
    status: &Status,
    told: &mut HashSet<(String, String)>,
) -> Result<(), jobs_core::Error> {
    let connection = connect(amqp, &format!("{worker}:schedule-definitions")).await?;
    let result = async {
        let declarer = Declarer::open(&connection).await?;
        amqp.topology().declare_events(&declarer).await?;
        declarer.close().await;
        let mut reader = EventReader::open(&connection, StartAt::Next).await?;
        while let Some((_, beat)) = reader.next().await {
            if beat.worker != worker && !beat.stopping {
                compare(worker, status, &beat, told);
            }
        }
        Ok(())
    }
    .await;
    close_connection(connection).await;
    result
}

/// Says how `beat`'s definitions differ from this worker's, if they do and it was not said yet.
fn compare(worker: &str, status: &Status, beat: &Heartbeat, told: &mut HashSet<(String, String)>) {
    let Some(theirs) = &beat.scheduler else { return };
    if theirs.digest == status.digest || !told.insert((beat.worker.clone(), theirs.digest.clone())) {
        return;
    }
    if theirs.leading {
        warn!(
            worker,
            leader = %beat.worker,
            digest = %status.digest,
            leader_digest = %theirs.digest,
            difference = %difference(&status.digests, &theirs.schedules),
            "this worker's schedule definitions differ from the leader's; the leader's are fired"
        );
    } else if status.leading() {
        warn!(
            worker = %beat.worker,
            digest = %theirs.digest,
            leader_digest = %status.digest,
            "a worker has other schedule definitions than this leader's; this leader's are fired"
        );
    } else {
        // Neither leads: said when one of them does.
        told.remove(&(beat.worker.clone(), theirs.digest.clone()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn beat(name: &str, digest: &str) -> ScheduleBeat {
        ScheduleBeat { name: name.into(), digest: digest.into(), ..Default::default() }
    }

    #[test]
    fn the_difference_names_each_schedule_that_differs() {
        let own = [("a".to_string(), "1".to_string()), ("b".into(), "2".into()), ("c".into(), "3".into())];
        let leader = [beat("b", "2"), beat("c", "4"), beat("d", "5")];
        assert_eq!(difference(&own, &leader), "only here: a; only on the leader: d; defined otherwise: c");
        assert_eq!(difference(&own[..1], &[beat("a", "1")]), "the same schedules, in another form");
    }

    #[test]
    fn a_digest_is_stable_and_follows_every_field() {
        assert_eq!(Fnv::new().field(b"nightly").hex(), Fnv::new().field(b"nightly").hex());
        assert_ne!(Fnv::new().field(b"ab").field(b"c").hex(), Fnv::new().field(b"a").field(b"bc").hex());
        let all = digest_all([("a", "1"), ("b", "2")]);
        assert_eq!(all, digest_all([("b", "2"), ("a", "1")]), "the order of definition does not count");
        assert_ne!(all, digest_all([("a", "1"), ("b", "3")]));
        assert_eq!(all.len(), 16);
    }
}
