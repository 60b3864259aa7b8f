//! Parsing and validation of `#[job(...)]`.

use proc_macro2::Span;
use syn::{DeriveInput, LitInt, LitStr, Path};

/// The options given in `#[job(...)]`, validated.
#[derive(Default)]
pub(crate) struct JobAttrs {
    pub(crate) queue: Option<LitStr>,
    pub(crate) name: Option<LitStr>,
    pub(crate) max_attempts: Option<LitInt>,
    /// Milliseconds, and where they were written.
    pub(crate) timeout: Option<(u64, Span)>,
    pub(crate) backoff: Option<Path>,
    pub(crate) exchange: Option<LitStr>,
    pub(crate) exchange_type: Option<LitStr>,
    pub(crate) rpc: bool,
    pub(crate) step: bool,
    pub(crate) blocking: bool,
    pub(crate) max_running: Option<LitInt>,
    /// `rate = "100/s"`: the count and the period in milliseconds.
    pub(crate) rate: Option<(u32, u64, Span)>,
    pub(crate) burst: Option<LitInt>,
    pub(crate) rate_key: Option<LitStr>,
    /// `unique_for = "10m"`: milliseconds.
    pub(crate) unique_for: Option<(u64, Span)>,
    pub(crate) unique_key: Option<LitStr>,
    /// `unique_until = "window"`.
    pub(crate) unique_window: Option<LitStr>,
    /// `expires_in = "1h"`: milliseconds.
    pub(crate) expires_in: Option<(u64, Span)>,
    /// `priority = 7`: the type's default priority (0 to 9).
    pub(crate) priority: Option<LitInt>,
    /// `priorities`: its queue takes priorities.
    pub(crate) priorities: bool,
    /// `ordered_by = "account_id"`: one job at a time per value of that field, in order.
    pub(crate) ordered_by: Option<LitStr>,
    /// `shards = 16`: how many shard queues an ordered type's keys spread over.
    pub(crate) shards: Option<LitInt>,
    /// The fields' names in the body, when known (named fields, no `#[serde]` attribute).
    pub(crate) fields: Option<Vec<String>>,
}

const KEYS: &str =
    "expected `queue`, `name`, `max_attempts`, `timeout`, `backoff`, `exchange`, `exchange_type`, `rpc`, `step`, `blocking`, `max_running`, `rate`, `burst`, `rate_key`, `unique_for`, `unique_key`, `unique_until`, `expires_in`, `priority`, `priorities`, `ordered_by` or `shards`";

/// The longest queue name: the broker allows 255 bytes for a routing key, and a
/// delayed job's key is 56 bytes of delay bits before the queue name.
/// (jobs-core's `topology::MAX_QUEUE_NAME` has the same value.)
const MAX_QUEUE_NAME: usize = 190;

pub(crate) fn parse(input: &DeriveInput) -> syn::Result<JobAttrs> {
    let mut attrs = JobAttrs::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("job")) {
        attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
            let twice = || meta.error(format!("`{key}` is given twice"));
            match key.as_str() {
                "exchange" | "exchange_type" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), format!("`{key}` takes a string literal, as in `{key} = \"...\"`"))
                    })?;
                    if key == "exchange_type" && !matches!(value.value().as_str(), "fanout" | "direct" | "topic") {
                        return Err(syn::Error::new_spanned(
                            &value,
                            "`exchange_type` is \"fanout\", \"direct\" or \"topic\"",
                        ));
                    }
                    if key == "exchange" {
                        validate("queue", &value)?;
                    }
                    let slot = if key == "exchange" { &mut attrs.exchange } else { &mut attrs.exchange_type };
                    if slot.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "queue" | "name" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), format!("`{key}` takes a string literal, as in `{key} = \"...\"`"))
                    })?;
                    validate(&key, &value)?;
                    let slot = if key == "queue" { &mut attrs.queue } else { &mut attrs.name };
                    if slot.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "rpc" => {
                    if attrs.rpc {
                        return Err(twice());
                    }
                    attrs.rpc = true;
                }
                "step" => {
                    if attrs.step {
                        return Err(twice());
                    }
                    attrs.step = true;
                }
                "blocking" => {
                    if attrs.blocking {
                        return Err(twice());
                    }
                    attrs.blocking = true;
                }
                "priorities" => {
                    if attrs.priorities {
                        return Err(twice());
                    }
                    attrs.priorities = true;
                }
                "priority" => {
                    let value: LitInt = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`priority` takes a whole number from 0 to 9, as in `priority = 7`")
                    })?;
                    if !matches!(value.base10_parse::<u8>(), Ok(0..=9)) {
                        return Err(syn::Error::new_spanned(&value, "`priority` must be from 0 to 9 (9 runs first)"));
                    }
                    if attrs.priority.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "max_running" => {
                    let value: LitInt = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`max_running` takes a whole number, as in `max_running = 5`")
                    })?;
                    match value.base10_parse::<u16>() {
                        Ok(n) if n >= 1 => {}
                        _ => return Err(syn::Error::new_spanned(&value, "`max_running` must be from 1 to 65535")),
                    }
                    if attrs.max_running.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "rate" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`rate` takes a string literal, as in `rate = \"100/s\"`")
                    })?;
                    let (count, per) = parse_rate(&value.value()).ok_or_else(|| {
                        syn::Error::new_spanned(
                            &value,
                            "`rate` is a count from 1 and a period of at most a day (`s`, `m`, `h`, or a number of them), as in \"100/s\", \"10/m\" or \"5/10s\"",
                        )
                    })?;
                    if attrs.rate.replace((count, per, value.span())).is_some() {
                        return Err(twice());
                    }
                }
                "burst" => {
                    let value: LitInt = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`burst` takes a whole number, as in `burst = 20`")
                    })?;
                    match value.base10_parse::<u32>() {
                        Ok(n) if n >= 1 => {}
                        _ => return Err(syn::Error::new_spanned(&value, "`burst` must be from 1 to 4294967295")),
                    }
                    if attrs.burst.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "ordered_by" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`ordered_by` takes a field's name, as in `ordered_by = \"account_id\"`")
                    })?;
                    if attrs.ordered_by.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "shards" => {
                    let value: LitInt = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`shards` takes a whole number, as in `shards = 16`")
                    })?;
                    match value.base10_parse::<u16>() {
                        Ok(1..=256) => {}
                        _ => return Err(syn::Error::new_spanned(&value, "`shards` must be from 1 to 256")),
                    }
                    if attrs.shards.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "rate_key" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`rate_key` takes a field's name, as in `rate_key = \"customer_id\"`")
                    })?;
                    if attrs.rate_key.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "unique_for" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`unique_for` takes a string literal, as in `unique_for = \"10m\"`")
                    })?;
                    let ms = parse_duration(&value.value()).filter(|ms| *ms <= 86_400_000).ok_or_else(|| {
                        syn::Error::new_spanned(
                            &value,
                            "`unique_for` is a duration of at most a day, as in \"90s\", \"10m\" or \"2h\"",
                        )
                    })?;
                    if attrs.unique_for.replace((ms, value.span())).is_some() {
                        return Err(twice());
                    }
                }
                "expires_in" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`expires_in` takes a string literal, as in `expires_in = \"1h\"`")
                    })?;
                    let ms = parse_duration(&value.value()).ok_or_else(|| {
                        syn::Error::new_spanned(&value, "`expires_in` is a duration, as in \"90s\", \"10m\" or \"2h\"")
                    })?;
                    if attrs.expires_in.replace((ms, value.span())).is_some() {
                        return Err(twice());
                    }
                }
                "unique_key" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`unique_key` takes a field's name, as in `unique_key = \"user_id\"`")
                    })?;
                    if attrs.unique_key.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "unique_until" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`unique_until` takes a string literal, as in `unique_until = \"window\"`")
                    })?;
                    if !matches!(value.value().as_str(), "end" | "window") {
                        return Err(syn::Error::new_spanned(
                            &value,
                            "`unique_until` is \"end\" (the key is given back as the job ends, the default) or \"window\" (held for the whole unique_for)",
                        ));
                    }
                    if attrs.unique_window.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "max_attempts" => {
                    let value: LitInt = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`max_attempts` takes a whole number, as in `max_attempts = 5`")
                    })?;
                    match value.base10_parse::<u32>() {
                        Ok(n) if n >= 1 => {}
                        _ => {
                            return Err(syn::Error::new_spanned(&value, "`max_attempts` must be from 1 to 4294967295"))
                        }
                    }
                    if attrs.max_attempts.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                "timeout" => {
                    let value: LitStr = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(e.span(), "`timeout` takes a duration string, as in `timeout = \"90s\"`")
                    })?;
                    let millis = parse_duration(&value.value()).ok_or_else(|| {
                        syn::Error::new_spanned(
                            &value,
                            "`timeout` must be a number and a unit (`ms`, `s`, `m`, `h`), more than 0, as in \"90s\"",
                        )
                    })?;
                    if attrs.timeout.replace((millis, value.span())).is_some() {
                        return Err(twice());
                    }
                }
                "backoff" => {
                    let value: Path = meta.value()?.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "`backoff` takes the path of a `fn(u32) -> Duration`, as in `backoff = my_backoff`",
                        )
                    })?;
                    if attrs.backoff.replace(value).is_some() {
                        return Err(twice());
                    }
                }
                _ => return Err(meta.error(format!("unknown `job` attribute key; {KEYS}"))),
            }
            Ok(())
        })?;
    }
    if let (Some(kind), None) = (&attrs.exchange_type, &attrs.exchange) {
        return Err(syn::Error::new_spanned(kind, "`exchange_type` needs `exchange = \"...\"`"));
    }
    if let (Some(exchange), true) = (&attrs.exchange, attrs.priorities || attrs.priority.is_some()) {
        return Err(syn::Error::new_spanned(
            exchange,
            "`priority` and `priorities` are for a queue's jobs; a job sent through an exchange goes to every subscriber's queue",
        ));
    }
    if attrs.step && attrs.rpc {
        return Err(syn::Error::new(
            Span::call_site(),
            "a job is a call (`rpc`) or a chain's step (`step`), not both: a step hands its output to the next step, a call to its caller",
        ));
    }
    if let (true, Some(exchange)) = (attrs.step, &attrs.exchange) {
        return Err(syn::Error::new_spanned(
            exchange,
            "a chain's step goes to a queue: a step routed through an exchange would run on every subscriber, or none",
        ));
    }
    if let (Some(limit), Some(_)) = (&attrs.max_running, &attrs.exchange) {
        return Err(syn::Error::new_spanned(
            limit,
            "`max_running` limits a queue's jobs: a job routed through an exchange runs on every subscriber",
        ));
    }
    if let (Some((_, _, span)), Some(_)) = (&attrs.rate, &attrs.exchange) {
        return Err(syn::Error::new(
            *span,
            "`rate` limits a queue's jobs: a job routed through an exchange runs on every subscriber",
        ));
    }
    if let (None, Some(burst)) = (&attrs.rate, &attrs.burst) {
        return Err(syn::Error::new_spanned(burst, "`burst` needs `rate = \"...\"`"));
    }
    attrs.fields = wire_fields(input);
    if let Some(key) = &attrs.rate_key {
        if attrs.rate.is_none() {
            return Err(syn::Error::new_spanned(key, "`rate_key` needs `rate = \"...\"`"));
        }
        let fields = attrs.fields.clone().unwrap_or_default();
        // With serde renames the body's names are serde's to say: not checked here.
        if attrs.fields.is_some() && !fields.contains(&key.value()) {
            return Err(syn::Error::new_spanned(
                key,
                format!("`rate_key` names a field of the job; this one has: {}", fields.join(", ")),
            ));
        }
    }
    if let Some(key) = &attrs.unique_key {
        if attrs.unique_for.is_none() {
            return Err(syn::Error::new_spanned(key, "`unique_key` needs `unique_for = \"...\"`"));
        }
        let fields = attrs.fields.clone().unwrap_or_default();
        if attrs.fields.is_some() && !fields.contains(&key.value()) {
            return Err(syn::Error::new_spanned(
                key,
                format!("`unique_key` names a field of the job; this one has: {}", fields.join(", ")),
            ));
        }
    }
    if let (None, Some(until)) = (&attrs.unique_for, &attrs.unique_window) {
        return Err(syn::Error::new_spanned(until, "`unique_until` needs `unique_for = \"...\"`"));
    }
    if let (Some((_, span)), Some(_)) = (&attrs.unique_for, &attrs.exchange) {
        return Err(syn::Error::new(
            *span,
            "`unique_for` is for a queue's jobs: a job routed through an exchange runs on every subscriber",
        ));
    }
    if let (Some(queue), Some(_)) = (&attrs.queue, &attrs.exchange) {
        return Err(syn::Error::new_spanned(queue, "a job goes to a `queue` or through an `exchange`, not both"));
    }
    check_ordered(&attrs)?;
    Ok(attrs)
}

/// `ordered_by` names a field, and goes with none of what would let a
/// key's jobs pass one another or run two at once.
fn check_ordered(attrs: &JobAttrs) -> syn::Result<()> {
    let Some(key) = &attrs.ordered_by else {
        return match &attrs.shards {
            Some(shards) => Err(syn::Error::new_spanned(shards, "`shards` needs `ordered_by = \"...\"`")),
            None => Ok(()),
        };
    };
    let fields = attrs.fields.clone().unwrap_or_default();
    if attrs.fields.is_some() && !fields.contains(&key.value()) {
        return Err(syn::Error::new_spanned(
            key,
            format!("`ordered_by` names a field of the job; this one has: {}", fields.join(", ")),
        ));
    }
    let clash = [
        (attrs.exchange.is_some(), "`exchange` (a job routed through an exchange runs on every subscriber)"),
        (attrs.rpc, "`rpc` (a call waits for its answer, not for the key's earlier jobs)"),
        (attrs.step, "`step` (a chain's steps keep their own order)"),
        (attrs.max_running.is_some(), "`max_running` (an ordered type runs one job per shard at a time already)"),
        (attrs.rate.is_some(), "`rate` (a rate's waits go through the delay queues, past the key's next jobs)"),
        (attrs.unique_for.is_some(), "`unique_for` (the two are not combined yet)"),
        (
            attrs.blocking,
            "`blocking` (a run that blocks its thread cannot be dropped when its shard must go to another worker)",
        ),
        (
            attrs.priorities || attrs.priority.is_some(),
            "`priority` and `priorities` (a priority would pass the key's earlier jobs)",
        ),
    ];
    match clash.iter().find(|(set, _)| *set) {
        Some((_, what)) => Err(syn::Error::new_spanned(key, format!("`ordered_by` does not go with {what}"))),
        None => Ok(()),
    }
}

/// The names of a struct's fields as they are in its body: its named
/// fields' names, when no `#[serde(...)]` attribute could rename them.
fn wire_fields(input: &DeriveInput) -> Option<Vec<String>> {
    let serde = |attrs: &[syn::Attribute]| attrs.iter().any(|a| a.path().is_ident("serde"));
    let syn::Data::Struct(data) = &input.data else { return None };
    if serde(&input.attrs) || data.fields.iter().any(|f| serde(&f.attrs) || f.ident.is_none()) {
        return None;
    }
    Some(data.fields.iter().filter_map(|f| f.ident.as_ref().map(|i| i.to_string())).collect())
}

fn validate(key: &str, value: &LitStr) -> syn::Result<()> {
    let text = value.value();
    let problem = match key {
        "queue" if text.is_empty() => Some("the queue name cannot be empty".to_owned()),
        "queue" if text.len() > MAX_QUEUE_NAME => Some(format!("the queue name is longer than {MAX_QUEUE_NAME} bytes")),
        "queue" if text.starts_with("amq.") => {
            Some("queue names starting with `amq.` are reserved by RabbitMQ".to_owned())
        }
        "queue" if text.split('.').any(|w| w == "*" || w == "#") => {
            Some("a queue name cannot have `*` or `#` as a dot-separated word".to_owned())
        }
        "name" if text.is_empty() => Some("the job name cannot be empty".to_owned()),
        "name" if text.len() > 255 => Some("the job name is longer than 255 bytes".to_owned()),
        _ => None,
    };
    match problem {
        Some(message) => Err(syn::Error::new_spanned(value, message)),
        None => Ok(()),
    }
}

/// `"250ms"`, `"90s"`, `"5m"`, `"2h"` to milliseconds; `None` if malformed or 0.
fn parse_duration(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return None,
    };
    number.checked_mul(factor).filter(|ms| *ms > 0)
}

/// `"100/s"`, `"10/m"`, `"5/10s"` to a count and a period in milliseconds
/// (as jobs-core's `Rate::parse` reads them); `None` if malformed or 0.
fn parse_rate(text: &str) -> Option<(u32, u64)> {
    let (count, period) = text.trim().split_once('/')?;
    let count: u32 = count.trim().parse().ok().filter(|n| *n > 0)?;
    let period = period.trim();
    let split = period.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = period.split_at(split);
    let number: u64 = if number.is_empty() { 1 } else { number.parse().ok()? };
    let unit_ms = match unit.trim() {
        "ms" => 1,
        "s" | "sec" | "second" => 1_000,
        "m" | "min" | "minute" => 60_000,
        "h" | "hour" => 3_600_000,
        _ => return None,
    };
    Some((count, number.checked_mul(unit_ms).filter(|ms| *ms > 0 && *ms <= 86_400_000)?))
}

#[cfg(test)]
mod tests {
    use super::{parse_duration, parse_rate};

    #[test]
    fn rates() {
        assert_eq!(parse_rate("100/s"), Some((100, 1_000)));
        assert_eq!(parse_rate("10/m"), Some((10, 60_000)));
        assert_eq!(parse_rate("5/10s"), Some((5, 10_000)));
        assert_eq!(parse_rate("0/s"), None);
        assert_eq!(parse_rate("10/d"), None);
        assert_eq!(parse_rate("10"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Some(90_000));
        assert_eq!(parse_duration("250ms"), Some(250));
        assert_eq!(parse_duration("2h"), Some(7_200_000));
        assert_eq!(parse_duration("0s"), None);
        assert_eq!(parse_duration("90"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5 days"), None);
    }
}
