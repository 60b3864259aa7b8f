//! A message body shown without knowing its job type: MessagePack read into
//! JSON for people (the dead-job pages, `worker dead show`), within bounds.
//! Bodies come from anyone who may publish, so the reader never recurses
//! without a bound, never reserves memory a length prefix asks for before
//! the bytes are there, and stops at a number of values; past a bound it says
//! why the body cannot be shown instead.

use base64::Engine;
use serde_json::{Map, Number, Value};

/// How deep arrays and maps may nest.
pub(crate) const MAX_DEPTH: usize = 128;
/// The largest body shown.
pub(crate) const MAX_BODY: usize = 1 << 20;
/// The most values (scalars and containers) shown.
pub(crate) const MAX_VALUES: usize = 100_000;

/// Why a body is not shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum NotShown {
    /// Over [`MAX_BODY`] bytes.
    #[error("the body is {0} bytes, over the {MAX_BODY} shown")]
    TooLarge(usize),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("it nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// More than [`MAX_VALUES`] values.
    #[error("it holds more than {MAX_VALUES} values")]
    TooMany,
    /// Not MessagePack: what is wrong, at which byte.
    #[error("not MessagePack: {what} at byte {at}")]
    Malformed {
        /// What is wrong.
        what: &'static str,
        /// Where.
        at: usize,
    },
}

/// `body` as JSON, or why it cannot be shown. One MessagePack value, and
/// nothing after it.
///
/// # Errors
/// [`NotShown`], with the reason.
pub(crate) fn to_json(body: &[u8]) -> Result<Value, NotShown> {
    if body.len() > MAX_BODY {
        return Err(NotShown::TooLarge(body.len()));
    }
    let mut reader = Reader { bytes: body, at: 0, values: 0 };
    let value = reader.value(0)?;
    if reader.at != body.len() {
        return Err(NotShown::Malformed { what: "bytes after the value", at: reader.at });
    }
    Ok(value)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    values: usize,
}

impl<'a> Reader<'a> {
    fn malformed(&self, what: &'static str) -> NotShown {
        NotShown::Malformed { what, at: self.at }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], NotShown> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.bytes.len());
        let Some(end) = end else { return Err(self.malformed("the body ends early")) };
        let bytes = &self.bytes[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn byte(&mut self) -> Result<u8, NotShown> {
        Ok(self.take(1)?[0])
    }

    fn uint(&mut self, n: usize) -> Result<u64, NotShown> {
        Ok(self.take(n)?.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
    }

    fn int(&mut self, n: usize) -> Result<i64, NotShown> {
        let raw = self.uint(n)?;
        let shift = 64 - 8 * n as u32;
        Ok(((raw << shift) as i64) >> shift)
    }

    /// A length prefix of `n` bytes, checked against what is left: each of
    /// `len` items needs `per_item` bytes at least, so no length asks for
    /// more than the body could hold.
    fn len(&mut self, n: usize, per_item: usize) -> Result<usize, NotShown> {
        let len = self.uint(n)? as usize;
        if len.saturating_mul(per_item) > self.bytes.len() - self.at {
            return Err(self.malformed("a length longer than the body"));
        }
        Ok(len)
    }

    fn value(&mut self, depth: usize) -> Result<Value, NotShown> {
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(NotShown::TooMany);
        }
        let marker = self.byte()?;
        Ok(match marker {
            0x00..=0x7f => Value::from(marker),
            0x80..=0x8f => self.map(usize::from(marker & 0x0f), depth)?,
            0x90..=0x9f => self.array(usize::from(marker & 0x0f), depth)?,
            0xa0..=0xbf => self.str(usize::from(marker & 0x1f))?,
            0xc0 => Value::Null,
            0xc1 => return Err(self.malformed("the reserved marker 0xc1")),
            0xc2 => Value::Bool(false),
            0xc3 => Value::Bool(true),
            0xc4 => {
                let n = self.len(1, 1)?;
                self.bin(n)?
            }
            0xc5 => {
                let n = self.len(2, 1)?;
                self.bin(n)?
            }
            0xc6 => {
                let n = self.len(4, 1)?;
                self.bin(n)?
            }
            0xc7 => {
                let n = self.len(1, 1)?;
                self.ext(n)?
            }
            0xc8 => {
                let n = self.len(2, 1)?;
                self.ext(n)?
            }
            0xc9 => {
                let n = self.len(4, 1)?;
                self.ext(n)?
            }
            0xca => {
                let bits = self.uint(4)? as u32;
                float(f64::from(f32::from_bits(bits)))
            }
            0xcb => float(f64::from_bits(self.uint(8)?)),
            0xcc => Value::from(self.uint(1)?),
            0xcd => Value::from(self.uint(2)?),
            0xce => Value::from(self.uint(4)?),
            0xcf => Value::from(self.uint(8)?),
            0xd0 => Value::from(self.int(1)?),
            0xd1 => Value::from(self.int(2)?),
            0xd2 => Value::from(self.int(4)?),
            0xd3 => Value::from(self.int(8)?),
            0xd4 => self.ext(1)?,
            0xd5 => self.ext(2)?,
            0xd6 => self.ext(4)?,
            0xd7 => self.ext(8)?,
            0xd8 => self.ext(16)?,
            0xd9 => {
                let n = self.len(1, 1)?;
                self.str(n)?
            }
            0xda => {
                let n = self.len(2, 1)?;
                self.str(n)?
            }
            0xdb => {
                let n = self.len(4, 1)?;
                self.str(n)?
            }
            0xdc => {
                let n = self.len(2, 1)?;
                self.array(n, depth)?
            }
            0xdd => {
                let n = self.len(4, 1)?;
                self.array(n, depth)?
            }
            0xde => {
                let n = self.len(2, 2)?;
                self.map(n, depth)?
            }
            0xdf => {
                let n = self.len(4, 2)?;
                self.map(n, depth)?
            }
            0xe0..=0xff => Value::from(i64::from(marker as i8)),
        })
    }

    fn array(&mut self, len: usize, depth: usize) -> Result<Value, NotShown> {
        if depth >= MAX_DEPTH {
            return Err(NotShown::TooDeep);
        }
        if len > self.bytes.len() - self.at {
            return Err(self.malformed("a length longer than the body"));
        }
        // Reserve for a few items only: a length is a claim, checked against
        // the bytes left, but every level of nesting may claim them all again.
        let mut items = Vec::with_capacity(len.min(256));
        for _ in 0..len {
            items.push(self.value(depth + 1)?);
        }
        Ok(Value::Array(items))
    }

    fn map(&mut self, len: usize, depth: usize) -> Result<Value, NotShown> {
        if depth >= MAX_DEPTH {
            return Err(NotShown::TooDeep);
        }
        if len.saturating_mul(2) > self.bytes.len() - self.at {
            return Err(self.malformed("a length longer than the body"));
        }
        let mut map = Map::new();
        for _ in 0..len {
            // JSON keys are text: a key that is not a string shows as its JSON.
            let key = match self.value(depth + 1)? {
                Value::String(key) => key,
                other => other.to_string(),
            };
            let value = self.value(depth + 1)?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }

    fn str(&mut self, len: usize) -> Result<Value, NotShown> {
        // Text that is not UTF-8 is shown with replacement characters, not refused.
        Ok(Value::String(String::from_utf8_lossy(self.take(len)?).into_owned()))
    }

    fn bin(&mut self, len: usize) -> Result<Value, NotShown> {
        let bytes = self.take(len)?;
        let mut map = Map::new();
        map.insert("binary_base64".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)));
        Ok(Value::Object(map))
    }

    fn ext(&mut self, len: usize) -> Result<Value, NotShown> {
        let kind = self.int(1)?;
        let bytes = self.take(len)?;
        let mut map = Map::new();
        map.insert("ext_type".into(), Value::from(kind));
        map.insert("data_base64".into(), Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)));
        Ok(Value::Object(map))
    }
}

/// A float as JSON; one JSON cannot hold (NaN, infinite) is `null`.
fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Serialize;

    #[derive(Serialize)]
    struct Job {
        to: String,
        n: i32,
        tags: Vec<u8>,
        nested: Option<Box<Job>>,
        ratio: f64,
    }

    #[test]
    fn a_job_reads_as_rmp_serde_writes_it() {
        let job = Job {
            to: "ann@example.com".into(),
            n: -7,
            tags: vec![1, 2],
            nested: Some(Box::new(Job { to: "é".into(), n: 1 << 20, tags: vec![], nested: None, ratio: 0.5 })),
            ratio: 1.25,
        };
        let body = rmp_serde::to_vec_named(&job).unwrap();
        let expected = serde_json::json!({
            "to": "ann@example.com", "n": -7, "tags": [1, 2], "ratio": 1.25,
            "nested": { "to": "é", "n": 1048576, "tags": [], "nested": null, "ratio": 0.5 }
        });
        assert_eq!(to_json(&body), Ok(expected));
        let generic: Value = rmp_serde::from_slice(&body).unwrap();
        assert_eq!(to_json(&body).unwrap(), generic, "as the unbounded generic decoder reads it");
    }

    #[test]
    fn hostile_bodies_are_not_shown_and_say_why() {
        let mut deep = vec![0x91u8; 200_000];
        deep.push(0xc0);
        assert_eq!(to_json(&deep), Err(NotShown::TooDeep));
        let just = [vec![0x91u8; MAX_DEPTH], vec![0xc0]].concat();
        assert!(to_json(&just).is_ok(), "{MAX_DEPTH} levels are shown");
        // An array of 4 G items in nine bytes: refused before any allocation.
        assert!(matches!(to_json(&[0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0]), Err(NotShown::Malformed { .. })));
        assert!(matches!(to_json(&[0xdb, 0xff, 0xff, 0xff, 0xff, b'a']), Err(NotShown::Malformed { .. })));
        assert!(matches!(to_json(&[0xdf, 0x7f, 0xff, 0xff, 0xff]), Err(NotShown::Malformed { .. })));
        let many = [vec![0xdd, 0x00, 0x02, 0x00, 0x00], vec![0x01; 0x20000]].concat();
        assert_eq!(to_json(&many), Err(NotShown::TooMany));
        assert_eq!(to_json(&vec![0xc0; MAX_BODY + 1]), Err(NotShown::TooLarge(MAX_BODY + 1)));
        // Every level claims all the bytes left: nothing is reserved for the claims.
        let claim = ((MAX_BODY - 5 * MAX_DEPTH) as u32).to_be_bytes();
        let mut claims = Vec::new();
        for _ in 0..MAX_DEPTH - 1 {
            claims.push(0xdd);
            claims.extend_from_slice(&claim);
        }
        claims.resize(MAX_BODY, 0xc0);
        assert!(matches!(to_json(&claims), Err(NotShown::Malformed { .. } | NotShown::TooMany | NotShown::TooDeep)));
        assert!(matches!(to_json(&[0xc1]), Err(NotShown::Malformed { .. })));
        assert!(matches!(to_json(&[0xc0, 0xc0]), Err(NotShown::Malformed { what: "bytes after the value", at: 1 })));
        assert!(matches!(to_json(&[]), Err(NotShown::Malformed { .. })));
        assert!(to_json(&[0xc0]).unwrap().is_null());
    }

    #[test]
    fn odd_but_valid_values_are_shown() {
        // Invalid UTF-8 in a string, a binary, an ext, a non-string key, NaN, a duplicate key.
        assert_eq!(to_json(&[0xa2, 0xff, b'a']).unwrap(), Value::String("\u{fffd}a".into()));
        assert_eq!(to_json(&[0xc4, 0x02, 0x01, 0x02]).unwrap(), serde_json::json!({ "binary_base64": "AQI=" }));
        assert_eq!(to_json(&[0xd4, 0x05, 0x09]).unwrap(), serde_json::json!({ "ext_type": 5, "data_base64": "CQ==" }));
        assert_eq!(to_json(&[0x81, 0x01, 0xc3]).unwrap(), serde_json::json!({ "1": true }));
        let nan = [vec![0xcb], f64::NAN.to_bits().to_be_bytes().to_vec()].concat();
        assert_eq!(to_json(&nan).unwrap(), Value::Null);
        assert_eq!(to_json(&[0x82, 0xa1, b'k', 0x01, 0xa1, b'k', 0x02]).unwrap(), serde_json::json!({ "k": 2 }));
        assert_eq!(to_json(&[0xd0, 0x80]).unwrap(), Value::from(-128), "signed bytes");
        assert_eq!(to_json(&[0xff]).unwrap(), Value::from(-1), "negative fixint");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_bytes_give_a_value_or_a_reason(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = to_json(&bytes);
        }

        #[test]
        fn any_prefix_of_a_nested_body_gives_a_value_or_a_reason(depth in 0usize..300, cut in 0usize..400) {
            let body = [vec![0x91u8; depth], vec![0xa3, b'a', b'b', b'c']].concat();
            let result = to_json(&body[..cut.min(body.len())]);
            // The 129th array marker is where nesting goes past the bound.
            if depth > MAX_DEPTH && cut > MAX_DEPTH {
                prop_assert_eq!(result, Err(NotShown::TooDeep));
            }
        }

        #[test]
        fn whatever_serde_writes_reads_back(value in arbitrary_json()) {
            let body = rmp_serde::to_vec_named(&value).unwrap();
            prop_assert_eq!(to_json(&body), Ok(value));
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            "[a-zé]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z]{0,6}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
