//! One job at a time per key, in order (`#[job(ordered_by = "account_id")]`).
//!
//! An ordered type's jobs go to one of its queue's shard queues,
//! `<queue>.shard.0` … `<queue>.shard.<n-1>`, chosen by the client from a
//! hash of the key (the field's value): FNV-1a (32 bits) of the value as
//! compact JSON (`"acct-1"` with its quotes, `42`), modulo the shard count,
//! so that any producer can choose as the Rust client does
//! (`docs/wire-format.md`). Each shard is a single-active-consumer quorum
//! queue: one worker takes its jobs, one at a time, and another when it
//! goes. A job of the type that reaches the base queue (a revived dead job,
//! a delayed one coming due, a producer that does not shard) is moved to its
//! shard by the worker that consumes the base queue, and joins its key's
//! line there.

use crate::Job;

/// The shard count of an ordered type that does not say (`shards = 8`).
pub const DEFAULT_SHARDS: u16 = 8;

/// The most shards a type may have.
pub const MAX_SHARDS: u16 = 256;

/// What an ordered type says: the field whose value is the key, and how many
/// shard queues its keys spread over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ordered {
    /// The field (`ordered_by`).
    pub by: &'static str,
    /// The shard count (`shards`), 1 to [`MAX_SHARDS`].
    pub shards: u16,
}

impl Ordered {
    /// Job type `J`'s, if it is ordered.
    pub const fn of<J: Job>() -> Option<Self> {
        match J::ORDERED_BY {
            Some(by) => Some(Ordered { by, shards: J::SHARDS }),
            None => None,
        }
    }

    /// Why this type's shard count cannot be used, if it cannot: it is 1 to [`MAX_SHARDS`].
    pub fn check(&self) -> Result<(), &'static str> {
        match self.shards {
            1..=MAX_SHARDS => Ok(()),
            _ => Err("an ordered type's shard count is from 1 to 256"),
        }
    }

    /// The shard of the job encoded in `body`: of its key's hash; a body
    /// without the field (or not a map) is shard 0, where it fails as it
    /// runs (it does not decode as its type).
    pub fn shard_of(&self, body: &[u8]) -> u16 {
        let key = crate::unique::field_of(body, self.by).unwrap_or_default();
        shard_of_key(&key, self.shards)
    }

    /// The shard queue of the job encoded in `body`, of base queue `queue`.
    pub fn shard_queue(&self, queue: &str, body: &[u8]) -> String {
        crate::names::shard_queue(queue, self.shard_of(body))
    }

    /// Every shard queue of base queue `queue`.
    pub fn shard_queues(&self, queue: &str) -> impl Iterator<Item = String> + '_ {
        let queue = queue.to_owned();
        (0..self.shards).map(move |n| crate::names::shard_queue(&queue, n))
    }
}

/// The shard of `key` (its value as compact JSON) among `shards`.
pub fn shard_of_key(key: &[u8], shards: u16) -> u16 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash % u32::from(shards.max(1))) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_has_one_shard_and_keys_spread_over_all() {
        // FNV-1a 32 of "" is its offset basis.
        assert_eq!(shard_of_key(b"", 1_000), (0x811c_9dc5u32 % 1_000) as u16);
        let ordered = Ordered { by: "account", shards: 16 };
        let body = |account: &str| rmp_serde::to_vec_named(&serde_json::json!({ "account": account, "n": 1 })).unwrap();
        assert_eq!(ordered.shard_of(&body("acct-7")), ordered.shard_of(&body("acct-7")));
        assert_eq!(ordered.shard_of(&body("acct-7")), shard_of_key(b"\"acct-7\"", 16));
        let mut seen = [0u32; 16];
        for n in 0..1_600 {
            seen[usize::from(ordered.shard_of(&body(&format!("acct-{n}"))))] += 1;
        }
        assert!(seen.iter().all(|count| (60..=140).contains(count)), "{seen:?}");
        // Garbage and a body without the field: shard 0 of the empty key, no panic.
        assert_eq!(ordered.shard_of(b"\xc1\xff"), shard_of_key(b"", 16));
        assert_eq!(ordered.shard_queue("sync", b"\x80"), format!("sync.shard.{}", shard_of_key(b"", 16)));
        assert_eq!(ordered.shard_queues("sync").count(), 16);
        assert!(ordered.check().is_ok() && Ordered { shards: 0, ..ordered }.check().is_err());
        assert!(Ordered { shards: MAX_SHARDS + 1, ..ordered }.check().is_err());
    }
}
