//! What a translator builds: a JSON tree that borrows from the body it translates ([`Out`]).
//!
//! A translation mostly moves a body's parts (texts, schemas, tool arguments) to new places
//! under new names. Building a `serde_json::Value` for it copies every string and allocates a
//! map node per object; an [`Out`] holds borrowed `&str` and `&Value` parts where the input has
//! them, objects as small vectors of fields, and is written straight to the bytes sent
//! ([`to_bytes`]), or made a `Value` for the callers that want a tree ([`Out::into_value`]).

use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::TranslateError;
use crate::doc::{self, Doc, Json};

/// A JSON value built by a translator, borrowing from the translated body where it can.
#[derive(Debug, Clone)]
pub(crate) enum Out<'a> {
    Null,
    Bool(bool),
    U64(u64),
    /// A string of the input (or a constant).
    Str(&'a str),
    /// A string made by the translation.
    String(String),
    /// A part of the input, as it is.
    Ref(&'a Value),
    /// A part of an input read as a [`Doc`], as it is.
    Doc(&'a Doc<'a>),
    /// A value made by the translation (rare paths).
    Owned(Value),
    /// JSON text of the input, checked, written as it is (a tool call's arguments).
    Raw(&'a RawValue),
    Array(Vec<Out<'a>>),
    Object(Obj<'a>),
}

/// An object: its fields in the order they were put, each name once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Obj<'a>(Vec<(&'a str, Out<'a>)>);

impl<'a> Obj<'a> {
    pub(crate) fn new() -> Self {
        Obj(Vec::new())
    }

    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Obj(Vec::with_capacity(capacity))
    }

    /// Sets `name` to `value` (in its place when it is already set, as a map's insert does).
    pub(crate) fn insert(&mut self, name: &'a str, value: impl Into<Out<'a>>) {
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v = value,
            None => self.0.push((name, value)),
        }
    }

    /// Adds a field the object does not have yet (the caller knows it does not).
    pub(crate) fn push(&mut self, name: &'a str, value: impl Into<Out<'a>>) {
        self.0.push((name, value.into()));
    }

    /// Removes `name`, returning its value.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Out<'a>> {
        let at = self.0.iter().position(|(k, _)| *k == name)?;
        Some(self.0.remove(at).1)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Out<'a>> {
        self.0.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| *k == name)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An object of the given fields, in order (each name once).
macro_rules! obj {
    ($($name:literal : $value:expr),* $(,)?) => {
        $crate::out::Out::Object($crate::out::Obj::from_fields(vec![
            $(($name, $crate::out::Out::from($value))),*
        ]))
    };
}
pub(crate) use obj;

impl<'a> Obj<'a> {
    pub(crate) fn from_fields(fields: Vec<(&'a str, Out<'a>)>) -> Self {
        Obj(fields)
    }
}

impl<'a> Out<'a> {
    /// The string field `name` of an object (built or borrowed).
    pub(crate) fn str_field(&self, name: &str) -> Option<&str> {
        match self {
            Out::Object(object) => object.get(name).and_then(Out::as_str),
            Out::Ref(value) => value.get(name).and_then(Value::as_str),
            Out::Doc(value) => Json::get(*value, name).and_then(Json::as_str),
            Out::Owned(value) => value.get(name).and_then(Value::as_str),
            _ => None,
        }
    }

    /// Whether an object (built or borrowed) has the field `name`.
    pub(crate) fn has_field(&self, name: &str) -> bool {
        match self {
            Out::Object(object) => object.contains_key(name),
            Out::Ref(value) => value.get(name).is_some(),
            Out::Doc(value) => Json::get(*value, name).is_some(),
            Out::Owned(value) => value.get(name).is_some(),
            _ => false,
        }
    }

    /// The string, when it is one.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Out::Str(s) => Some(s),
            Out::String(s) => Some(s),
            Out::Ref(value) => value.as_str(),
            Out::Doc(value) => Json::as_str(*value),
            Out::Owned(value) => value.as_str(),
            _ => None,
        }
    }

    /// The field `name` set on an object: a built one in place, a borrowed or owned one made a
    /// built one first (`false` when it is no object).
    pub(crate) fn set_field(&mut self, name: &'a str, value: impl Into<Out<'a>>) -> bool {
        let fields = match self {
            Out::Object(object) => {
                object.insert(name, value);
                return true;
            }
            Out::Ref(Value::Object(map)) => map
                .iter()
                .map(|(k, v)| (k.as_str(), Out::Ref(v)))
                .collect::<Vec<_>>(),
            Out::Doc(Doc::Object(fields)) => fields
                .iter()
                .map(|(k, v)| (k.as_ref(), Out::Doc(v)))
                .collect::<Vec<_>>(),
            Out::Owned(Value::Object(_)) => {
                if let Out::Owned(Value::Object(map)) = self {
                    map.insert(name.to_string(), value.into().into_value());
                }
                return true;
            }
            _ => return false,
        };
        let mut object = Obj(fields);
        object.insert(name, value);
        *self = Out::Object(object);
        true
    }

    /// The tree as a `Value`.
    pub(crate) fn into_value(self) -> Value {
        match self {
            Out::Null => Value::Null,
            Out::Bool(b) => Value::Bool(b),
            Out::U64(n) => Value::from(n),
            Out::Str(s) => Value::String(s.to_string()),
            Out::String(s) => Value::String(s),
            Out::Ref(value) => value.clone(),
            Out::Doc(value) => doc::to_value(value),
            Out::Owned(value) => value,
            // Checked JSON: it parses (a number beyond `f64` is the one thing a tree cannot
            // hold, and a tool call's arguments were parsed as a tree before they got here).
            Out::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            Out::Array(items) => Value::Array(items.into_iter().map(Out::into_value).collect()),
            Out::Object(Obj(fields)) => {
                let mut map = Map::new();
                for (name, value) in fields {
                    map.insert(name.to_string(), value.into_value());
                }
                Value::Object(map)
            }
        }
    }
}

/// `out` as JSON bytes, the body sent: the bytes `serde_json` would write, written by hand.
///
/// Most of a translated body is text moved from the input (prompts, answers, schemas), and
/// `serde_json` writes a string by looking up every byte in its escape table. Here a string
/// that needs no escape (no quote, backslash or control character: nearly every one) is
/// checked in one pass the compiler vectorises and copied whole; one that does is written by
/// `serde_json`. The small writes (a comma, a quote) are pushes, not `memmove` calls.
pub(crate) fn to_bytes(out: &Out<'_>) -> Result<Vec<u8>, TranslateError> {
    let mut bytes = Vec::with_capacity(4096);
    write_out(&mut bytes, out)?;
    Ok(bytes)
}

/// `out` as JSON text (a tool call's arguments), written as [`to_bytes`] writes it.
pub(crate) fn to_string(out: &Out<'_>) -> Result<String, TranslateError> {
    let mut bytes = Vec::new();
    write_out(&mut bytes, out)?;
    String::from_utf8(bytes).map_err(|e| TranslateError::new("", e.to_string()))
}

fn write_out(bytes: &mut Vec<u8>, out: &Out<'_>) -> Result<(), TranslateError> {
    match out {
        Out::Null => bytes.extend_from_slice(b"null"),
        Out::Bool(b) => write_bool(bytes, *b),
        Out::U64(n) => bytes.extend_from_slice(itoa::Buffer::new().format(*n).as_bytes()),
        Out::Str(s) => write_str(bytes, s)?,
        Out::String(s) => write_str(bytes, s)?,
        Out::Ref(value) => write_json(bytes, *value)?,
        Out::Doc(value) => write_json(bytes, *value)?,
        Out::Owned(value) => write_json(bytes, value)?,
        Out::Raw(raw) => bytes.extend_from_slice(raw.get().as_bytes()),
        Out::Array(items) => {
            bytes.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    bytes.push(b',');
                }
                write_out(bytes, item)?;
            }
            bytes.push(b']');
        }
        Out::Object(Obj(fields)) => {
            bytes.push(b'{');
            for (i, (name, value)) in fields.iter().enumerate() {
                if i > 0 {
                    bytes.push(b',');
                }
                write_str(bytes, name)?;
                bytes.push(b':');
                write_out(bytes, value)?;
            }
            bytes.push(b'}');
        }
    }
    Ok(())
}

/// A tree (a `Value` or a [`Doc`]) as `serde_json` writes a `Value` (compact; a `Doc`'s fields
/// in the order they were read), with [`to_bytes`]'s string path. Its depth is the parsed
/// input's, which `serde_json` bounds (128).
fn write_json<J: Json>(bytes: &mut Vec<u8>, value: &J) -> Result<(), TranslateError> {
    if let Some(s) = value.as_str() {
        write_str(bytes, s)?;
    } else if let Some(items) = value.as_array() {
        bytes.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                bytes.push(b',');
            }
            write_json(bytes, item)?;
        }
        bytes.push(b']');
    } else if value.is_object() {
        bytes.push(b'{');
        let mut first = true;
        value.each_field(&mut |name, value| {
            if !first {
                bytes.push(b',');
            }
            first = false;
            write_str(bytes, name)?;
            bytes.push(b':');
            write_json(bytes, value)
        })?;
        bytes.push(b'}');
    } else if let Some(n) = value.as_number() {
        serde_json::to_writer(&mut *bytes, n)
            .map_err(|e| TranslateError::new("", e.to_string()))?;
    } else if let Some(b) = value.as_bool() {
        write_bool(bytes, b);
    } else {
        bytes.extend_from_slice(b"null");
    }
    Ok(())
}

fn write_bool(bytes: &mut Vec<u8>, b: bool) {
    bytes.extend_from_slice(if b { b"true" } else { b"false" });
}

/// A JSON string: copied whole between quotes when nothing in it needs an escape (what
/// `serde_json` escapes: `"`, `\` and the control characters below U+0020), else written by
/// `serde_json`.
fn write_str(bytes: &mut Vec<u8>, s: &str) -> Result<(), TranslateError> {
    if needs_escape(s.as_bytes()) {
        return serde_json::to_writer(&mut *bytes, s)
            .map_err(|e| TranslateError::new("", e.to_string()));
    }
    bytes.reserve(s.len() + 2);
    bytes.push(b'"');
    bytes.extend_from_slice(s.as_bytes());
    bytes.push(b'"');
    Ok(())
}

/// The eight bytes of `word` (little-endian) with the high bit set in each that JSON escapes in
/// a string: a quote, a backslash or one below 0x20 (`(w - 0x0101..) & !w & 0x8080..` is
/// non-zero exactly when a byte of `w` is zero; its lowest set bit marks the first such byte).
/// The one test behind the writer's escape check and the reader's string scan.
pub(crate) fn escapes(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w & HIGHS;
    below(word, 0x20)
        | below(word ^ (ONES * u64::from(b'"')), 1)
        | below(word ^ (ONES * u64::from(b'\\')), 1)
}

/// Whether `text` holds a byte JSON escapes: a quote, a backslash or one below 0x20. Eight
/// bytes at a time (a word's bytes tested at once: `(w - 0x0101..) & !w & 0x8080..` is
/// non-zero exactly when a byte of `w` is zero), with no byte-by-byte loop: the last eight
/// bytes are tested as one word (overlapping the words before), and a text shorter than a word
/// is tested padded with spaces (which need no escape). Most strings a translation writes are
/// short names and values, for which this is one test.
fn needs_escape(text: &[u8]) -> bool {
    let escapes = |word: [u8; 8]| escapes(u64::from_le_bytes(word));
    let Some(last) = text.len().checked_sub(8) else {
        let mut word = [b' '; 8];
        if let Some(head) = word.get_mut(..text.len()) {
            head.copy_from_slice(text);
        }
        return escapes(word) != 0;
    };
    let mut found = 0;
    for chunk in text.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        found |= escapes(word);
    }
    if let Some(tail) = text.get(last..) {
        let mut word = [0u8; 8];
        word.copy_from_slice(tail);
        found |= escapes(word);
    }
    found != 0
}

impl Serialize for Out<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Null => serializer.serialize_unit(),
            Out::Bool(b) => serializer.serialize_bool(*b),
            Out::U64(n) => serializer.serialize_u64(*n),
            Out::Str(s) => serializer.serialize_str(s),
            Out::String(s) => serializer.serialize_str(s),
            Out::Ref(value) => value.serialize(serializer),
            Out::Doc(value) => doc::to_value(value).serialize(serializer),
            Out::Owned(value) => value.serialize(serializer),
            Out::Raw(raw) => raw.serialize(serializer),
            Out::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Out::Object(Obj(fields)) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (name, value) in fields {
                    map.serialize_entry(name, value)?;
                }
                map.end()
            }
        }
    }
}

impl<'a> From<&'a str> for Out<'a> {
    fn from(s: &'a str) -> Self {
        Out::Str(s)
    }
}

impl<'a> From<&'a String> for Out<'a> {
    fn from(s: &'a String) -> Self {
        Out::Str(s)
    }
}

impl From<String> for Out<'_> {
    fn from(s: String) -> Self {
        Out::String(s)
    }
}

impl<'a> From<&'a Value> for Out<'a> {
    fn from(value: &'a Value) -> Self {
        Out::Ref(value)
    }
}

impl From<Value> for Out<'_> {
    fn from(value: Value) -> Self {
        Out::Owned(value)
    }
}

impl From<u64> for Out<'_> {
    fn from(n: u64) -> Self {
        Out::U64(n)
    }
}

impl From<bool> for Out<'_> {
    fn from(b: bool) -> Self {
        Out::Bool(b)
    }
}

impl<'a> From<Vec<Out<'a>>> for Out<'a> {
    fn from(items: Vec<Out<'a>>) -> Self {
        Out::Array(items)
    }
}

impl<'a> From<Obj<'a>> for Out<'a> {
    fn from(object: Obj<'a>) -> Self {
        Out::Object(object)
    }
}

impl<'a> From<&'a RawValue> for Out<'a> {
    fn from(raw: &'a RawValue) -> Self {
        Out::Raw(raw)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_object_keeps_one_field_per_name_and_writes_what_its_tree_holds() {
        let input = json!({"schema": {"type": "object"}, "text": "hi \"there\""});
        let mut object = Obj::new();
        object.insert("text", input["text"].as_str().unwrap_or_default());
        object.insert("schema", &input["schema"]);
        object.insert("n", 3u64);
        object.insert("n", 4u64);
        let raw: &RawValue = serde_json::from_str(r#"{"a": [1, 2]}"#).unwrap();
        object.push("raw", raw);
        let out = Out::Object(object);
        let bytes = to_bytes(&out).unwrap();
        let parsed: Value = serde_json::from_slice(&bytes).unwrap();
        let tree = out.into_value();
        assert_eq!(parsed, tree);
        assert_eq!(
            tree,
            json!({"text": "hi \"there\"", "schema": {"type": "object"}, "n": 4, "raw": {"a": [1, 2]}})
        );
    }

    /// JSON values of every kind: strings with quotes, backslashes, control characters and
    /// non-ASCII text, integers, floats, nesting.
    pub(crate) fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[ -~\\t\\n\\x00-\\x1f\\x7fé\\x{2028}😀]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map("[a-z\"\\\\]{0,6}", inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn a_string_needs_an_escape_exactly_when_a_byte_of_it_does(
            text in "[ -~\\t\\n\\x00-\\x1f\\x7fé\\x{2028}😀]{0,40}",
        ) {
            let expected = text.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\');
            proptest::prop_assert_eq!(needs_escape(text.as_bytes()), expected);
        }

        #[test]
        fn the_hand_written_json_is_the_bytes_serde_json_writes(value in json_value()) {
            let mut object = Obj::new();
            object.push("ref", &value);
            object.push("owned", value.clone());
            if let Some(text) = value.as_str() {
                object.push("str", text);
                object.push("string", text.to_string());
            }
            object.push("list", vec![Out::Ref(&value), Out::U64(u64::MAX), Out::Bool(false), Out::Null]);
            let out = Out::Object(object);
            let expected = serde_json::to_vec(&out).unwrap();
            proptest::prop_assert_eq!(
                String::from_utf8(to_bytes(&out).unwrap()).unwrap(),
                String::from_utf8(expected).unwrap()
            );
        }
    }

    #[test]
    fn a_field_set_on_a_borrowed_object_keeps_its_other_fields() {
        let input = json!({"a": 1, "b": 2});
        let mut out = Out::Ref(&input);
        assert!(out.set_field("b", 3u64));
        assert_eq!(out.into_value(), json!({"a": 1, "b": 3}));
    }
}
