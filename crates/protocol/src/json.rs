//! A read-only JSON tree that borrows its strings from the event text.
//!
//! Ingest reads a handful of fields from every event (for grouping, the title, tags) and
//! stores the rest as it came. `serde_json::Value` would copy every key and string of a
//! ~2 KB event into its own allocation and a sorted map; this tree borrows every string
//! that has no escapes and keeps object members as a list. Lookups behave as on a
//! `serde_json::Value` parsed from the same text: where an object repeats a key, the
//! last one counts, and [`Value::members`] lists an object sorted by key.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Number;

/// One JSON value, strings borrowed where the text allows.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Bool(bool),
    Number(Number),
    String(Cow<'a, str>),
    Array(Vec<Value<'a>>),
    /// Members in text order, repeated keys included.
    Object(Vec<(Cow<'a, str>, Value<'a>)>),
}

impl<'a> Value<'a> {
    /// Parses JSON text; accepts and rejects exactly what `serde_json::from_str` does for
    /// a `serde_json::Value`.
    pub fn parse(text: &'a str) -> serde_json::Result<Value<'a>> {
        serde_json::from_str(text)
    }

    /// An object's member (the last, if the key repeats).
    pub fn get(&self, key: &str) -> Option<&Value<'a>> {
        match self {
            Value::Object(members) => members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value<'a>]> {
        match self {
            Value::Array(items) => Some(items),
            _ => None,
        }
    }

    pub fn is_object(&self) -> bool {
        matches!(self, Value::Object(_))
    }

    /// An object's members as a `serde_json::Map` iterates them: one per key (the last),
    /// sorted by key.
    pub fn members(&self) -> Option<Vec<(&str, &Value<'a>)>> {
        let Value::Object(members) = self else {
            return None;
        };
        let mut sorted: Vec<(&str, &Value<'a>)> =
            members.iter().map(|(k, v)| (k.as_ref(), v)).collect();
        // Stable: of equal keys, text order remains, so the last is kept below.
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut out: Vec<(&str, &Value<'a>)> = Vec::with_capacity(sorted.len());
        for (k, v) in sorted {
            match out.last_mut() {
                Some(last) if last.0 == k => *last = (k, v),
                _ => out.push((k, v)),
            }
        }
        Some(out)
    }

    /// The value as `serde_json::Value` (copying it).
    pub fn to_owned_value(&self) -> serde_json::Value {
        match self {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Number(n) => serde_json::Value::Number(n.clone()),
            Value::String(s) => serde_json::Value::String(s.clone().into_owned()),
            Value::Array(items) => items.iter().map(Value::to_owned_value).collect(),
            Value::Object(members) => serde_json::Value::Object(
                members
                    .iter()
                    .map(|(k, v)| (k.clone().into_owned(), v.to_owned_value()))
                    .collect(),
            ),
        }
    }
}

/// Compact JSON, exactly as `serde_json::Value` displays the same value.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.to_owned_value().fmt(f)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Value<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

/// The same visits as `serde_json::Value`'s own visitor, so numbers and strings come out
/// the same.
impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value<'de>, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value<'de>, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value<'de>, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value<'de>, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Value<'de>, E> {
        Ok(Value::String(Cow::Owned(v)))
    }

    fn visit_none<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value<'de>, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value<'de>, D::Error> {
        Deserialize::deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value<'de>, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(Key(key)) = map.next_key()? {
            members.push((key, map.next_value()?));
        }
        Ok(Value::Object(members))
    }
}

/// An object key, borrowed where the text allows.
struct Key<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    #[test]
    fn strings_without_escapes_are_borrowed() {
        let text = r#"{"a": "plain", "b\u0031": "esc\"aped"}"#;
        let v = Value::parse(text).unwrap();
        let Value::Object(members) = &v else {
            panic!("object")
        };
        assert!(matches!(members[0].0, Cow::Borrowed("a")));
        assert!(matches!(
            members[0].1,
            Value::String(Cow::Borrowed("plain"))
        ));
        assert_eq!(members[1].0, "b1");
        assert_eq!(v.get("b1").and_then(Value::as_str), Some("esc\"aped"));
    }

    #[test]
    fn repeated_keys_read_as_the_last_one() {
        let text = r#"{"k": 1, "z": [], "k": "two", "a": null}"#;
        let v = Value::parse(text).unwrap();
        let tree: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v.get("k").and_then(Value::as_str), Some("two"));
        assert_eq!(v.to_owned_value(), tree);
        let keys: Vec<&str> = v.members().unwrap().iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["a", "k", "z"]);
        assert_eq!(v.members().unwrap()[1].1.as_str(), Some("two"));
        assert_eq!(v.to_string(), tree.to_string());
    }

    #[test]
    fn numbers_read_as_serde_json_reads_them() {
        let text = "[1, -1, 18446744073709551615, 1.5e300, 2.50, -0.0, 1e2]";
        let v = Value::parse(text).unwrap();
        let tree: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v.to_owned_value(), tree);
        assert_eq!(v.to_string(), tree.to_string());
        assert_eq!(
            v.to_string(),
            json!([1, -1, 18446744073709551615u64, 1.5e300, 2.5, -0.0, 100.0]).to_string()
        );
    }

    proptest! {
        #[test]
        fn accepts_and_rejects_what_serde_json_does(text in r#"[\[\]{}",:0-9a-z.\\ -]{0,40}"#) {
            let ours = Value::parse(&text).map(|v| v.to_owned_value()).ok();
            let theirs = serde_json::from_str::<serde_json::Value>(&text).ok();
            prop_assert_eq!(ours, theirs);
        }
    }
}
