//! What the answer translators read: a JSON tree, either a `serde_json::Value` or a [`Doc`]
//! read from the canonical answer's bytes without copying its strings.
//!
//! A translated answer is the canonical answer parsed, then written in the caller's protocol.
//! Parsed into a `Value`, every string is copied into its own allocation and every object
//! becomes a map of owned keys, then all of it is freed: most of what an answer's translation
//! costs. A [`Doc`] borrows each string from the bytes (an escaped one is the exception, and is
//! unescaped into its own), and an object is a vector of its fields. The translators are
//! written once, against [`Json`], which both implement.

use std::borrow::Cow;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Number, Value};

use crate::TranslateError;
use crate::out::Out;

/// A JSON value borrowing its strings from the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Doc<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Doc<'a>>),
    /// The fields in the text's order; a name given twice is read as its last value (as a
    /// `Value` reads it).
    Object(Vec<(Cow<'a, str>, Doc<'a>)>),
}

impl<'a> Doc<'a> {
    /// `bytes` read as JSON.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Doc<'a>, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// What a translator reads of a JSON tree.
pub(crate) trait Json {
    /// Whether it is an object.
    fn is_object(&self) -> bool;
    /// The field `name` of an object.
    fn get(&self, name: &str) -> Option<&Self>;
    /// The string, when it is one.
    fn as_str(&self) -> Option<&str>;
    /// The items, when it is an array.
    fn as_array(&self) -> Option<&[Self]>
    where
        Self: Sized;
    /// The number, when it is a non-negative integer.
    fn as_u64(&self) -> Option<u64>;
    /// The number, when it is one.
    fn as_number(&self) -> Option<&Number>;
    /// The boolean, when it is one.
    fn as_bool(&self) -> Option<bool>;
    /// Calls `f` with each field of an object, in the order it keeps them (none for a value
    /// that is no object), until `f` fails.
    fn each_field(
        &self,
        f: &mut dyn FnMut(&str, &Self) -> Result<(), TranslateError>,
    ) -> Result<(), TranslateError>;
    /// The value to be written as it is.
    fn out(&self) -> Out<'_>;
}

impl Json for Value {
    fn is_object(&self) -> bool {
        Value::is_object(self)
    }

    fn get(&self, name: &str) -> Option<&Self> {
        Value::get(self, name)
    }

    fn as_str(&self) -> Option<&str> {
        Value::as_str(self)
    }

    fn as_array(&self) -> Option<&[Self]> {
        Value::as_array(self).map(Vec::as_slice)
    }

    fn as_u64(&self) -> Option<u64> {
        Value::as_u64(self)
    }

    fn as_number(&self) -> Option<&Number> {
        match self {
            Value::Number(n) => Some(n),
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        Value::as_bool(self)
    }

    fn each_field(
        &self,
        f: &mut dyn FnMut(&str, &Self) -> Result<(), TranslateError>,
    ) -> Result<(), TranslateError> {
        match self {
            Value::Object(map) => map.iter().try_for_each(|(k, v)| f(k, v)),
            _ => Ok(()),
        }
    }

    fn out(&self) -> Out<'_> {
        Out::Ref(self)
    }
}

impl<'a> Json for Doc<'a> {
    fn is_object(&self) -> bool {
        matches!(self, Doc::Object(_))
    }

    fn get(&self, name: &str) -> Option<&Self> {
        match self {
            Doc::Object(fields) => fields.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v),
            _ => None,
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            Doc::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&[Self]> {
        match self {
            Doc::Array(items) => Some(items),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match self {
            Doc::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    fn as_number(&self) -> Option<&Number> {
        match self {
            Doc::Number(n) => Some(n),
            _ => None,
        }
    }

    fn as_bool(&self) -> Option<bool> {
        match self {
            Doc::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn each_field(
        &self,
        f: &mut dyn FnMut(&str, &Self) -> Result<(), TranslateError>,
    ) -> Result<(), TranslateError> {
        match self {
            Doc::Object(fields) => fields.iter().try_for_each(|(k, v)| f(k, v)),
            _ => Ok(()),
        }
    }

    fn out(&self) -> Out<'_> {
        Out::Doc(self)
    }
}

impl<'de> Deserialize<'de> for Doc<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(DocVisitor)
    }
}

struct DocVisitor;

impl<'de> Visitor<'de> for DocVisitor {
    type Value = Doc<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Doc<'de>, E> {
        Ok(Doc::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Doc<'de>, E> {
        Ok(Doc::Bool(b))
    }

    fn visit_i64<E>(self, n: i64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(n.into()))
    }

    fn visit_u64<E>(self, n: u64) -> Result<Doc<'de>, E> {
        Ok(Doc::Number(n.into()))
    }

    fn visit_f64<E>(self, n: f64) -> Result<Doc<'de>, E> {
        // JSON text has no NaN or infinity; a `Value` reads what cannot be one as null too.
        Ok(Number::from_f64(n).map_or(Doc::Null, Doc::Number))
    }

    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Borrowed(s)))
    }

    fn visit_str<E>(self, s: &str) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Owned(s.to_string())))
    }

    fn visit_string<E>(self, s: String) -> Result<Doc<'de>, E> {
        Ok(Doc::Str(Cow::Owned(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Doc<'de>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Doc::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'de>, A::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(0).min(64));
        while let Some(key) = map.next_key::<Doc<'de>>()? {
            let Doc::Str(name) = key else {
                return Err(A::Error::custom("an object's key is not a string"));
            };
            fields.push((name, map.next_value()?));
        }
        Ok(Doc::Object(fields))
    }
}

/// A `Doc` as a `Value` (a name given twice keeps its last value).
pub(crate) fn to_value(doc: &Doc<'_>) -> Value {
    match doc {
        Doc::Null => Value::Null,
        Doc::Bool(b) => Value::Bool(*b),
        Doc::Number(n) => Value::Number(n.clone()),
        Doc::Str(s) => Value::String(s.to_string()),
        Doc::Array(items) => Value::Array(items.iter().map(to_value).collect()),
        Doc::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), to_value(v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_doc_reads_what_a_value_reads_borrowing_plain_strings() {
        let text = r#"{"a": "plain", "b": "esc\"aped", "n": [1, -2, 2.5, 1e300, null, true],
            "o": {"x": {}}, "a": "last"}"#;
        let doc = Doc::parse(text.as_bytes()).unwrap();
        let value: Value = serde_json::from_str(text).unwrap();
        assert_eq!(to_value(&doc), value);
        assert_eq!(Json::get(&doc, "a").and_then(Json::as_str), Some("last"));
        assert!(matches!(
            Json::get(&doc, "a"),
            Some(Doc::Str(Cow::Borrowed(_)))
        ));
        assert!(matches!(
            Json::get(&doc, "b"),
            Some(Doc::Str(Cow::Owned(_)))
        ));
        assert_eq!(
            Json::get(&doc, "n")
                .and_then(Json::as_array)
                .map(<[_]>::len),
            Some(6)
        );
        assert_eq!(
            Json::get(&doc, "n")
                .and_then(Json::as_array)
                .and_then(|n| n.first())
                .and_then(Json::as_u64),
            Some(1)
        );
        assert_eq!(value["o"], json!({"x": {}}));
        assert!(Doc::parse(b"{\"a\": }").is_err());
    }
}
