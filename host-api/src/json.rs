//! Strict JSON parsing, shared by the host and plugins: an object that
//! names the same key twice is refused instead of keeping the last value.
//!
//! `serde_json` (like most parsers) lets the last of two equal keys win, so
//! `{"secrets": {"K": "123", "K": ""}}` would clear `K` while a reviewer,
//! a proxy or a log that reads the first value sees it set. A request body
//! parsed here cannot say two things at once.
//!
//! ```
//! use host_api::json::{JsonError, from_slice_strict};
//!
//! let v = from_slice_strict(br#"{"secrets": {"A": "1"}}"#).unwrap();
//! assert_eq!(v["secrets"]["A"], "1");
//!
//! let err = from_slice_strict(br#"{"secrets": {"K": "x", "K": ""}}"#).unwrap_err();
//! assert!(matches!(&err, JsonError::DuplicateKey { key, object } if key == "K" && object == "secrets"));
//! assert_eq!(err.to_string(), "the key `K` appears more than once in `secrets`");
//! ```

use std::{cell::RefCell, fmt};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Longest key or path (in characters) an error message quotes.
const MAX_QUOTED_CHARS: usize = 64;

/// Why a body is not strict JSON.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JsonError {
    /// Not JSON at all. Only the position is kept: the parser's own
    /// message can quote the body, which may hold a secret.
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
    },
    /// An object names a key twice.
    DuplicateKey {
        /// The repeated key, made printable and cut to 64 characters.
        key: String,
        /// Where the object is, as dotted keys and `[index]` (e.g.
        /// `secrets`), or empty for the top-level object; made printable
        /// and cut like the key.
        object: String,
    },
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Syntax { line, column } => {
                write!(
                    f,
                    "the body is not valid JSON (line {line}, column {column})"
                )
            }
            Self::DuplicateKey { key, object } if object.is_empty() => {
                write!(f, "the key `{key}` appears more than once in the body")
            }
            Self::DuplicateKey { key, object } => {
                write!(f, "the key `{key}` appears more than once in `{object}`")
            }
        }
    }
}

impl std::error::Error for JsonError {}

/// Parses `bytes` as JSON, refusing an object that names a key twice.
pub fn from_slice_strict(bytes: &[u8]) -> Result<Value, JsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Strict {
        at: None,
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    match parsed {
        Ok(value) => Ok(value),
        Err(error) => Err(duplicate.into_inner().unwrap_or(JsonError::Syntax {
            line: error.line(),
            column: error.column(),
        })),
    }
}

/// The first key named twice in one object of `bytes`, when `bytes` is
/// JSON; `None` when every key is unique or the body is not JSON at all
/// (whoever reads it reports that).
pub fn duplicate_key(bytes: &[u8]) -> Option<JsonError> {
    match from_slice_strict(bytes) {
        Err(error @ JsonError::DuplicateKey { .. }) => Some(error),
        _ => None,
    }
}

/// Where a value sits: its key or index, and its parent.
struct At<'a> {
    parent: Option<&'a At<'a>>,
    segment: Segment<'a>,
}

enum Segment<'a> {
    Key(&'a str),
    Index(usize),
}

impl At<'_> {
    fn render(at: Option<&At<'_>>) -> String {
        let mut segments = Vec::new();
        let mut next = at;
        while let Some(at) = next {
            segments.push(&at.segment);
            next = at.parent;
        }
        let mut out = String::new();
        for segment in segments.into_iter().rev() {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        printable(&out)
    }
}

/// Attacker-chosen text quoted in a message: control characters replaced,
/// cut to [`MAX_QUOTED_CHARS`].
fn printable(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_QUOTED_CHARS)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if text.chars().nth(MAX_QUOTED_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Builds a `Value` like serde_json's own visitor, but refuses duplicate
/// keys (recording the first in `duplicate`).
#[derive(Clone, Copy)]
struct Strict<'a> {
    at: Option<&'a At<'a>>,
    duplicate: &'a RefCell<Option<JsonError>>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
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

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        loop {
            let at = At {
                parent: self.at,
                segment: Segment::Index(items.len()),
            };
            let seed = Strict {
                at: Some(&at),
                duplicate: self.duplicate,
            };
            match seq.next_element_seed(seed)? {
                Some(item) => items.push(item),
                None => return Ok(Value::Array(items)),
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(JsonError::DuplicateKey {
                    key: printable(&key),
                    object: At::render(self.at),
                });
                return Err(de::Error::custom("duplicate key"));
            }
            let at = At {
                parent: self.at,
                segment: Segment::Key(&key),
            };
            let value = map.next_value_seed(Strict {
                at: Some(&at),
                duplicate: self.duplicate,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dup(body: &str) -> Option<(String, String)> {
        match duplicate_key(body.as_bytes()) {
            Some(JsonError::DuplicateKey { key, object }) => Some((key, object)),
            _ => None,
        }
    }

    #[test]
    fn values_parse_as_serde_json_parses_them() {
        let body = r#"{"a": [1, -2, 3.5, true, null, "x", {"b": {}}], "c": "\u00e9"}"#;
        let strict = from_slice_strict(body.as_bytes()).expect("valid");
        let loose: Value = serde_json::from_str(body).expect("valid");
        assert_eq!(strict, loose);
    }

    #[test]
    fn duplicates_are_found_at_any_depth_and_named_with_their_object() {
        assert_eq!(dup(r#"{"a":1,"a":2}"#), Some(("a".into(), String::new())));
        assert_eq!(
            dup(r#"{"secrets":{"K":123,"K":""}}"#),
            Some(("K".into(), "secrets".into()))
        );
        assert_eq!(
            dup(r#"{"secrets":{},"secrets":{"K":"v"}}"#),
            Some(("secrets".into(), String::new()))
        );
        assert_eq!(
            dup(r#"{"x":[{"ok":1},{"y":{"z":1,"z":1}}]}"#),
            Some(("z".into(), "x[1].y".into()))
        );
        // Escapes are decoded before comparing: "\u004b" is "K".
        assert_eq!(
            dup(r#"{"K":1,"\u004b":2}"#),
            Some(("K".into(), String::new()))
        );
        assert_eq!(dup(r#"{"a":{"b":1},"b":{"a":1}}"#), None);
    }

    #[test]
    fn quoted_keys_are_printable_and_short() {
        let key = format!("\n{}", "k".repeat(100));
        let body = format!(r#"{{"{k}":1,"{k}":2}}"#, k = key.replace('\n', "\\n"));
        let (shown, _) = dup(&body).expect("duplicate");
        assert!(!shown.contains('\n'), "{shown}");
        assert_eq!(shown.chars().count(), MAX_QUOTED_CHARS + 1);
    }

    #[test]
    fn invalid_json_is_a_syntax_error_with_a_position_only() {
        let err = from_slice_strict(b"{\"secret\": sk-not-quoted}").expect_err("invalid");
        assert!(matches!(err, JsonError::Syntax { line: 1, .. }), "{err:?}");
        assert!(!err.to_string().contains("sk-not"));
        assert_eq!(duplicate_key(b"{\"a\":1,"), None);
        assert!(from_slice_strict(b"{} {}").is_err(), "trailing data");
    }
}
