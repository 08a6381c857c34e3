//! Strict JSON input: reject ambiguous documents instead of guessing (DESIGN §7.4).
//!
//! `serde_json` alone keeps the last of two duplicate keys and turns integers that do not fit
//! 64 bits into lossy floats; two parsers reading the same bytes could then see different
//! documents (one in the proxy, one in the tool server). This module parses with a visitor that
//! refuses those, and bounds depth and size, so the value the policy decides on is the only
//! reading of the bytes.
//!
//! Limits (documented in `docs/action.md`):
//! * size: [`MAX_DOCUMENT_BYTES`] per document;
//! * depth: [`MAX_DEPTH`] nested arrays/objects;
//! * numbers: integers must fit `i64`/`u64`; any other number must be finite and, when it has no
//!   fractional part, lie within ±2^53 (beyond that a float cannot say which integer was meant);
//! * strings: valid UTF-8, no lone surrogates (`\ud800`), which `serde_json` already rejects.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use crate::action::{Action, VERSION};

/// Largest accepted document, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// Deepest accepted nesting of arrays and objects.
pub const MAX_DEPTH: usize = 64;
/// 2^53: the largest integer a double represents exactly.
const MAX_EXACT_FLOAT_INT: f64 = 9_007_199_254_740_992.0;

/// Why an input document was refused.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("document is {size} bytes, over the limit of {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid UTF-8 at byte {offset}")]
    Utf8 { offset: usize },
    #[error("invalid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("invalid action at {path}: {message}")]
    Schema { path: String, message: String },
    #[error("unsupported version {found:?}: expected {VERSION:?}")]
    Version { found: String },
}

/// Parse bytes as one strict JSON value.
pub fn parse_value(bytes: &[u8]) -> Result<Value, InputError> {
    parse_value_limited(bytes, MAX_DOCUMENT_BYTES, MAX_DEPTH)
}

/// Parse bytes as one strict JSON value within other limits (the audit reader's records hold
/// an Action and more).
pub fn parse_value_limited(
    bytes: &[u8],
    max_bytes: usize,
    max_depth: usize,
) -> Result<Value, InputError> {
    if bytes.len() > max_bytes {
        return Err(InputError::TooLarge {
            size: bytes.len(),
            limit: max_bytes,
        });
    }
    // Checked up front so the error says what is wrong in plain words and where.
    let text = std::str::from_utf8(bytes).map_err(|e| InputError::Utf8 {
        offset: e.valid_up_to(),
    })?;
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict {
        depth: 0,
        max_depth,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parse bytes as one Action document: strict JSON, then the schema.
pub fn parse_action(bytes: &[u8]) -> Result<Action, InputError> {
    let value = parse_value(bytes)?;
    action_from_value(value)
}

/// Convert an already strict-parsed value to an Action, naming the path of a schema error.
pub fn action_from_value(value: Value) -> Result<Action, InputError> {
    let action: Action = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        InputError::Schema {
            path: if path == "." {
                "$".into()
            } else {
                format!("$.{path}")
            },
            message: e.into_inner().to_string(),
        }
    })?;
    if action.version != VERSION {
        return Err(InputError::Version {
            found: action.version,
        });
    }
    Ok(action)
}

/// A seed that carries the current depth into nested values.
#[derive(Clone, Copy)]
struct Strict {
    depth: usize,
    max_depth: usize,
}

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl Strict {
    fn nested<E: de::Error>(&self) -> Result<Strict, E> {
        if self.depth >= self.max_depth {
            return Err(E::custom(format_args!(
                "nesting deeper than {} levels",
                self.max_depth
            )));
        }
        Ok(Strict {
            depth: self.depth + 1,
            max_depth: self.max_depth,
        })
    }
}

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        if v.fract() == 0.0 && v.abs() > MAX_EXACT_FLOAT_INT {
            return Err(E::custom(format_args!(
                "number {v:e} does not fit: integers must fit 64 bits and other numbers ±2^53"
            )));
        }
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(inner)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let inner = self.nested()?;
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let v = map.next_value_seed(inner)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(s: &[u8]) -> String {
        parse_value(s).unwrap_err().to_string()
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(err(br#"{"a":1,"a":2}"#).contains("duplicate key \"a\""));
        let e = err(b"{\"tool\":{\"arguments\":{\"p\":\"/ws\",\n\"p\":\"/etc\"}}}");
        assert!(e.contains("duplicate key \"p\""), "{e}");
        assert!(e.contains("line 2"), "error names where: {e}");
    }

    #[test]
    fn lone_surrogates_and_bad_utf8_are_refused() {
        // serde_json names the problem ("lone leading surrogate", "unexpected end of hex
        // escape") and the position.
        assert!(err(br#"{"a":"\ud800"}"#).contains("hex escape"));
        assert!(err(br#"{"a":"\udc00x"}"#).contains("surrogate"));
        assert!(parse_value(b"{\"a\":\"\xff\"}").is_err());
        // A proper pair is fine.
        assert_eq!(
            parse_value(br#""\ud83d\ude00""#).unwrap(),
            Value::from("😀")
        );
    }

    #[test]
    fn numbers_that_do_not_fit_are_refused() {
        assert!(err(b"123456789012345678901234567890").contains("does not fit"));
        assert!(err(b"1e400").contains("number out of range"));
        assert!(err(b"-1e300").contains("does not fit"));
        assert_eq!(
            parse_value(b"18446744073709551615").unwrap(),
            Value::from(u64::MAX)
        );
        assert_eq!(
            parse_value(b"-9223372036854775808").unwrap(),
            Value::from(i64::MIN)
        );
        assert_eq!(parse_value(b"1.5").unwrap(), Value::from(1.5));
    }

    #[test]
    fn depth_is_bounded() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse_value(ok.as_bytes()).is_ok());
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert!(err(deep.as_bytes()).contains("nesting deeper than 64"));
    }

    #[test]
    fn size_is_bounded() {
        let big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        assert!(matches!(
            parse_value(&big),
            Err(InputError::TooLarge { .. })
        ));
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(parse_value(b"{} {}").is_err());
    }

    #[test]
    fn schema_errors_name_the_path() {
        let e =
            parse_action(br#"{"kind":"file","via":"decide","file":{"op":"chmod","path":"/x"}}"#)
                .unwrap_err()
                .to_string();
        assert!(e.contains("$.file.op"), "{e}");
        let e = parse_action(br#"{"version":"portcullis/v0","kind":"file","via":"decide"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("portcullis/v0"), "{e}");
    }
}
