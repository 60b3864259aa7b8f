//! The delay cascade's arithmetic: which level a delay starts at and the
//! routing key that spells the seconds left in bits, then the destination
//! queue. Level `n` holds a message `2ⁿ` s by queue TTL if its bit is set,
//! passes it down if not; `<prefix>.delivery` hands it to its queue.

use std::time::Duration;

/// Delay levels: delays up to `2^LEVELS - 1` seconds (about 8.5 years).
pub const LEVELS: u32 = 28;

/// The longest delay the cascade can hold.
pub const MAX_DELAY: Duration = Duration::from_secs((1 << LEVELS) - 1);

/// Prefix of the delay cascade's objects with classic queues; with quorum
/// queues it is `jobs.delay.quorum` (so both kinds can share a vhost).
pub const DELAY_PREFIX: &str = "jobs.delay";

/// The exchange and queue of delay level `level` of the cascade named `prefix`.
pub fn delay_level(prefix: &str, level: u32) -> String {
    format!("{prefix}.{level:02}")
}

/// The exchange of the cascade named `prefix` that hands due messages to their queue.
pub fn delivery_exchange(prefix: &str) -> String {
    format!("{prefix}.delivery")
}

/// Where to publish a message delayed by `delay` (rounded up to whole seconds,
/// capped at [`MAX_DELAY`]) for `queue`, in the cascade named `prefix`: the
/// exchange of the highest level it needs, and the routing key
/// `b27.b26.….b0.<queue>`. `None` for no delay.
pub fn delay_route(prefix: &str, delay: Duration, queue: &str) -> Option<(String, String)> {
    let secs = whole_seconds(delay).as_secs();
    if secs == 0 {
        return None;
    }
    let top = 63 - secs.leading_zeros();
    let mut key = String::with_capacity(2 * LEVELS as usize + queue.len());
    for level in (0..LEVELS).rev() {
        key.push(if secs & (1 << level) != 0 { '1' } else { '0' });
        key.push('.');
    }
    key.push_str(queue);
    Some((delay_level(prefix, top), key))
}

/// `delay` as the cascade holds it: rounded up to whole seconds (never
/// early), capped at [`MAX_DELAY`].
pub fn whole_seconds(delay: Duration) -> Duration {
    let secs = delay.as_secs().saturating_add(u64::from(delay.subsec_nanos() > 0));
    Duration::from_secs(secs.min(MAX_DELAY.as_secs()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::MAX_QUEUE_NAME;

    #[test]
    fn delay_routes_spell_the_seconds_in_bits_and_start_at_the_top_level() {
        assert_eq!(delay_route(DELAY_PREFIX, Duration::ZERO, "q"), None);
        let (exchange, key) = delay_route(DELAY_PREFIX, Duration::from_secs(5), "emails").unwrap();
        assert_eq!(exchange, "jobs.delay.02");
        assert_eq!(key, format!("{}1.0.1.emails", "0.".repeat(25)));
        // Rounded up: never early.
        let (exchange, key) = delay_route(DELAY_PREFIX, Duration::from_millis(1500), "q").unwrap();
        assert_eq!(exchange, "jobs.delay.01");
        assert!(key.ends_with(".0.1.0.q"), "{key}");
        let (exchange, key) = delay_route(DELAY_PREFIX, Duration::from_secs(3600), "q").unwrap();
        assert_eq!(exchange, "jobs.delay.11");
        let bits: String = key.split('.').take(LEVELS as usize).collect();
        assert_eq!(u64::from_str_radix(&bits, 2).unwrap(), 3600);
        assert_eq!(whole_seconds(Duration::MAX), MAX_DELAY, "no overflow to a zero delay");
        let (exchange, key) = delay_route(DELAY_PREFIX, Duration::from_secs(u64::MAX), "q").unwrap();
        assert_eq!(exchange, "jobs.delay.27");
        assert!(key.starts_with(&"1.".repeat(28)));
        let longest = "q".repeat(MAX_QUEUE_NAME);
        assert!(delay_route(DELAY_PREFIX, Duration::from_secs(1), &longest).unwrap().1.len() <= 255);
    }
}
