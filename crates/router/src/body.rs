//! An answer's body as the upstream's bytes: [`Body`].
//!
//! A deployment's answer (a whole response or one streamed chunk) passes through the router and
//! the gateway as the bytes the upstream sent, checked once to be one JSON object. Nothing builds
//! a tree of it on the way: the few fields the router reads (`usage`, `choices[].finish_reason`,
//! a stream chunk's text) are read from the bytes with borrowed, partial deserializes, and the
//! one field the gateway changes (`model`, set back to the name the client asked for) is spliced
//! in where it stands, so the client gets the upstream's key order, whitespace, number spellings
//! and escapes exactly.
//!
//! ```
//! use ferrolite_router::Body;
//!
//! let body = Body::parse(r#"{"id":"x","model":"gpt-4o-2024-08-06","usage":{"prompt_tokens":3,"completion_tokens":2}}"#)?;
//! assert_eq!(body.usage().map(|u| u.total_tokens), Some(5));
//! assert_eq!(
//!     &body.with_model("gpt-4o")[..],
//!     br#"{"id":"x","model":"gpt-4o","usage":{"prompt_tokens":3,"completion_tokens":2}}"#
//! );
//! # Ok::<(), ferrolite_router::BodyError>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use ferrolite_types::Usage;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level fields whose places a body remembers when it is checked (the ones the router
/// and the gateway read or change on every answer).
const KNOWN: [&str; 4] = ["model", "usage", "choices", "error"];
const MODEL: usize = 0;
const USAGE: usize = 1;

/// A deployment's answer body: the upstream's bytes, checked to be one JSON value (an object for
/// anything [`Body::parse`] accepts), with the places of the fields read on every call.
///
/// Cloning is cheap (the bytes are shared). Two bodies are equal when their bytes are.
#[derive(Clone)]
pub struct Body {
    bytes: Bytes,
    layout: Layout,
}

/// An answer that is not one JSON object.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The bytes are not JSON (a syntax error, a truncated text, bytes that are not UTF-8).
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The bytes are JSON, but not an object.
    #[error("not a JSON object")]
    NotAnObject,
    /// More than 4 GiB.
    #[error("over 4 GiB")]
    TooLarge,
}

/// Where a top-level field stands in the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Place {
    /// Whether it is the object's first field.
    first: bool,
    /// Where a removal starts when it is not the first: the comma before it.
    comma: usize,
    /// The key's opening quote; `None` when the key is written with escapes.
    key: Option<usize>,
    /// The value's first byte and the byte past its end.
    start: usize,
    end: usize,
}

/// What checking a body found: kept small (a body is moved with every answer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Layout {
    /// Whether the body is an object (else it passes through unedited).
    object: bool,
    /// A known key repeats or is written with escapes: edits go through a tree, which reads
    /// such an object as any JSON parser does.
    irregular: bool,
    /// The number of top-level fields.
    fields: u32,
    /// The values of the [`KNOWN`] fields (the last, when a key repeats): first byte and the
    /// byte past the end; `(0, 0)` when absent (no value starts at 0 in an object).
    known: [(u32, u32); KNOWN.len()],
}

impl Body {
    /// Checks `bytes` as one JSON object (UTF-8, complete, nothing after it) and remembers where
    /// its `model`, `usage`, `choices` and `error` fields stand. One pass over the bytes; no
    /// tree is built.
    pub fn parse(bytes: impl Into<Bytes>) -> Result<Body, BodyError> {
        let bytes = bytes.into();
        if u32::try_from(bytes.len()).is_err() {
            return Err(BodyError::TooLarge);
        }
        let open = first_non_space(&bytes, 0);
        if bytes.get(open) != Some(&b'{') {
            // Still a JSON error when it is not JSON at all.
            serde_json::from_slice::<IgnoredAny>(&bytes)?;
            return Err(BodyError::NotAnObject);
        }
        let layout = scan(&bytes)?;
        Ok(Body { bytes, layout })
    }

    /// A body of any JSON value (an answer a library's own backend made up, a test's); only an
    /// object is ever edited.
    fn any(bytes: Bytes) -> Result<Body, BodyError> {
        match Body::parse(bytes.clone()) {
            Ok(body) => Ok(body),
            Err(BodyError::NotAnObject) => Ok(Body {
                bytes,
                layout: Layout::default(),
            }),
            Err(error) => Err(error),
        }
    }

    /// The body of `value` as JSON (for bodies a backend builds as a tree: tests, examples).
    pub fn from_value(value: &serde_json::Value) -> Body {
        // A `Value` always serialises, and always to JSON this module reads back.
        let bytes = Bytes::from(serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec()));
        Body::any(bytes).unwrap_or_else(|_| Body::null())
    }

    /// The JSON `null`.
    fn null() -> Body {
        Body {
            bytes: Bytes::from_static(b"null"),
            layout: Layout::default(),
        }
    }

    /// The body as a tree, built on demand (for code that needs one: tests, reports). Fails
    /// only for what a tree cannot hold and the bytes can, such as a number beyond `f64`
    /// (`1e400`).
    pub fn to_value(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_slice(&self.bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes as text (a body is UTF-8: it was checked when it was made).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes).unwrap_or_default()
    }

    /// The bytes, shared.
    pub fn bytes(&self) -> Bytes {
        self.bytes.clone()
    }

    /// The length of the bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether there are no bytes (never, for a checked body).
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether the body is a JSON object.
    pub fn is_object(&self) -> bool {
        self.layout.object
    }

    /// A top-level field's JSON text, as the upstream wrote it; `None` when the body is not an
    /// object or has no such field (the last one, when a key repeats).
    pub fn raw(&self, name: &str) -> Option<&RawValue> {
        let place = self.place(name)?;
        let text = std::str::from_utf8(self.bytes.get(place.start..place.end)?).ok()?;
        serde_json::from_str(text).ok()
    }

    /// A top-level field read as `T` (borrowing from the body where `T` does); `None` when it
    /// is absent or is no `T`.
    pub fn get<'a, T: serde::Deserialize<'a>>(&'a self, name: &str) -> Option<T> {
        serde_json::from_str(self.raw(name)?.get()).ok()
    }

    /// A top-level string field, borrowed from the bytes when it has no escape (the body was
    /// checked as JSON when it was read, so a quoted run without a backslash is the string
    /// itself): a model name read for a span costs no parse. `None` when it is absent or no
    /// string.
    pub fn str(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        let place = self.place(name)?;
        let value = self.bytes.get(place.start..place.end)?;
        match value {
            [b'"', inner @ .., b'"'] if !inner.contains(&b'\\') => std::str::from_utf8(inner)
                .ok()
                .map(std::borrow::Cow::Borrowed),
            _ => self.get::<String>(name).map(std::borrow::Cow::Owned),
        }
    }

    /// Whether the top-level field `name` is an empty array (a stream's usage-only chunk has
    /// `"choices": []`).
    pub fn is_empty_array(&self, name: &str) -> bool {
        self.raw(name).is_some_and(is_empty_array)
    }

    /// The token usage the body reports (OpenAI's `usage`: `prompt_tokens`,
    /// `completion_tokens`, and `total_tokens` when given, else their sum; a count that is no
    /// unsigned integer counts 0): `None` without `usage` or with `"usage": null`. Cache reads
    /// are `prompt_tokens_details.cached_tokens` (else LiteLLM's `cache_read_input_tokens`),
    /// cache writes `prompt_tokens_details.cache_creation_tokens` (else LiteLLM's
    /// `cache_creation_input_tokens`). Read from the bytes of `usage` alone.
    pub fn usage(&self) -> Option<Usage> {
        let (start, end) = self.span(USAGE)?;
        let text = std::str::from_utf8(self.bytes.get(start..end)?).ok()?;
        usage_of(text)
    }

    /// The bytes with the top-level `model` set to `model` (added at the end when the body has
    /// none), every other byte as it was; a body that is not an object, unchanged. A body whose
    /// `model` already says `model` is shared, not copied.
    pub fn with_model(&self, model: &str) -> Bytes {
        if !self.layout.object {
            return self.bytes.clone();
        }
        if let Some((start, end)) = self.span(MODEL) {
            if !self.layout.irregular && self.bytes.get(start..end) == Some(&quoted(model)[..]) {
                return self.bytes.clone();
            }
        }
        let model = string_value(model);
        let mut out = Vec::with_capacity(self.bytes.len() + model.get().len());
        self.write_edited(&[("model", Some(&model))], &mut out);
        Bytes::from(out)
    }

    /// Appends the bytes with top-level fields edited: `(name, Some(value))` sets `name` to
    /// `value` (where it stands, or added at the end), `(name, None)` removes it. Every other
    /// byte is kept. A body that is not an object is appended unchanged.
    pub fn write_edited(&self, edits: &[(&str, Option<&RawValue>)], out: &mut Vec<u8>) {
        if !self.layout.object {
            out.extend_from_slice(&self.bytes);
            return;
        }
        if self.layout.irregular || !self.splice(edits, out) {
            self.edit_tree(edits, out);
        }
    }

    /// The place of a top-level field: remembered for the known ones, else found by a scan.
    fn place(&self, name: &str) -> Option<Place> {
        if !self.layout.object {
            return None;
        }
        match KNOWN.iter().position(|known| *known == name) {
            Some(i) => {
                let (start, end) = self.span(i)?;
                Some(place_of(&self.bytes, name, start, end))
            }
            None => find(&self.bytes, name),
        }
    }

    /// The value span of the known field `i`.
    fn span(&self, i: usize) -> Option<(usize, usize)> {
        match self.layout.known.get(i) {
            Some(&(start, end)) if end > 0 => Some((start as usize, end as usize)),
            _ => None,
        }
    }

    /// Writes the edited bytes by splicing; `false` (having written nothing) when the edits
    /// touch each other or a key with escapes, which the tree then does.
    fn splice(&self, edits: &[(&str, Option<&RawValue>)], out: &mut Vec<u8>) -> bool {
        let bytes = &self.bytes[..];
        // (from, to, what goes there) over the bytes, in order.
        let mut cuts: Vec<(usize, usize, Option<&RawValue>, &str)> =
            Vec::with_capacity(edits.len());
        let mut added: Vec<(&str, &RawValue)> = Vec::new();
        let mut removed = 0;
        for &(name, value) in edits {
            match (self.place(name), value) {
                (Some(place), _) if place.key.is_none() => return false,
                (Some(place), Some(value)) => {
                    cuts.push((place.start, place.end, Some(value), name))
                }
                (Some(place), None) => {
                    removed += 1;
                    if place.first {
                        // The first field goes with the comma after it.
                        let mut to = first_non_space(bytes, place.end);
                        if bytes.get(to) == Some(&b',') {
                            to = first_non_space(bytes, to + 1);
                        }
                        cuts.push((place.key.unwrap_or(place.start), to, None, name));
                    } else {
                        cuts.push((place.comma, place.end, None, name));
                    }
                }
                (None, Some(value)) => added.push((name, value)),
                (None, None) => {}
            }
        }
        cuts.sort_unstable_by_key(|cut| cut.0);
        if cuts.windows(2).any(|pair| pair[0].1 > pair[1].0) {
            return false;
        }
        let mut at = 0;
        for (from, to, value, _) in &cuts {
            out.extend_from_slice(&bytes[at..*from]);
            if let Some(value) = value {
                out.extend_from_slice(value.get().as_bytes());
            }
            at = *to;
        }
        // The closing `}`: the last byte that is not whitespace.
        let trailing = bytes.iter().rev().take_while(|b| is_space(**b)).count();
        let close = bytes.len().saturating_sub(trailing + 1);
        out.extend_from_slice(&bytes[at..close]);
        let remaining = (self.layout.fields as usize).saturating_sub(removed);
        for (i, (name, value)) in added.into_iter().enumerate() {
            if remaining + i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(&quoted(name));
            out.push(b':');
            out.extend_from_slice(value.get().as_bytes());
        }
        out.extend_from_slice(&bytes[close..]);
        true
    }

    /// The edits on a tree of the body, for the rare body splicing cannot edit (a repeated or
    /// escaped key): parsed, edited and written again. A body no tree can hold either (such a
    /// key and a number beyond `f64`) is written unedited.
    fn edit_tree(&self, edits: &[(&str, Option<&RawValue>)], out: &mut Vec<u8>) {
        let Ok(serde_json::Value::Object(mut object)) = self.to_value() else {
            out.extend_from_slice(&self.bytes);
            return;
        };
        for &(name, value) in edits {
            match value.map(|v| serde_json::from_str::<serde_json::Value>(v.get())) {
                Some(Ok(value)) => {
                    object.insert(name.to_string(), value);
                }
                Some(Err(_)) => {}
                None => {
                    object.remove(name);
                }
            }
        }
        let _ = serde_json::to_writer(&mut *out, &object);
    }
}

impl Default for Body {
    /// `{}`.
    fn default() -> Self {
        Body {
            bytes: Bytes::from_static(b"{}"),
            layout: Layout {
                object: true,
                ..Layout::default()
            },
        }
    }
}

impl PartialEq for Body {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Body")
            .field(&String::from_utf8_lossy(&self.bytes))
            .finish()
    }
}

impl fmt::Display for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<serde_json::Value> for Body {
    fn from(value: serde_json::Value) -> Self {
        Body::from_value(&value)
    }
}

impl From<&serde_json::Value> for Body {
    fn from(value: &serde_json::Value) -> Self {
        Body::from_value(value)
    }
}

impl serde::Serialize for Body {
    /// The bytes as they are (with `serde_json`: written verbatim).
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let raw: &RawValue =
            serde_json::from_str(self.as_str()).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> serde::Deserialize<'de> for Body {
    /// A JSON value's text as it was written (with `serde_json`).
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(deserializer)?;
        let text: Box<str> = raw.into();
        Body::any(Bytes::from(text.into_boxed_bytes())).map_err(de::Error::custom)
    }
}

/// Whether `byte` is JSON whitespace.
fn is_space(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}

/// The index of the first byte at or after `from` that is not JSON whitespace.
fn first_non_space(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while bytes.get(at).copied().is_some_and(is_space) {
        at += 1;
    }
    at
}

/// The index of the last byte before `before` that is not JSON whitespace (0 when none).
fn last_non_space(bytes: &[u8], before: usize) -> usize {
    let mut at = before;
    while at > 0 {
        at -= 1;
        if !bytes.get(at).copied().is_some_and(is_space) {
            return at;
        }
    }
    0
}

/// The place of the known field `name` (its key written without escapes) whose value spans
/// `start..end` in a checked object: what stands before the value is, backwards, whitespace,
/// `:`, whitespace, `"name"`, whitespace, and `,` or `{`.
fn place_of(bytes: &[u8], name: &str, start: usize, end: usize) -> Place {
    let colon = last_non_space(bytes, start);
    let closing = last_non_space(bytes, colon);
    let key = closing.saturating_sub(name.len() + 1);
    let comma = last_non_space(bytes, key);
    Place {
        first: bytes.get(comma) == Some(&b'{'),
        comma,
        key: Some(key),
        start,
        end,
    }
}

/// `text` as a JSON string's bytes.
fn quoted(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() + 2);
    // Writing a string to a vector cannot fail.
    let _ = serde_json::to_writer(&mut out, text);
    out
}

/// `text` as a JSON string value.
fn string_value(text: &str) -> Box<RawValue> {
    let quoted = String::from_utf8(quoted(text)).unwrap_or_default();
    RawValue::from_string(quoted).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// An object key as written: borrowed from the bytes, or decoded when it has escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Decoded(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(key) => key,
            Key::Decoded(key) => key,
        }
    }
}

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Borrowed(key))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key::Decoded(key.to_string()))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// The offset of `part` (a slice of `whole`) in `whole`.
fn offset(whole: &[u8], part: &str) -> Result<usize, serde_json::Error> {
    (part.as_ptr() as usize)
        .checked_sub(whole.as_ptr() as usize)
        .filter(|at| at + part.len() <= whole.len())
        .ok_or_else(|| de::Error::custom("a field outside the body"))
}

/// Checks the object `bytes` and lays out its top-level fields.
fn scan(bytes: &[u8]) -> Result<Layout, serde_json::Error> {
    struct Scan<'b> {
        bytes: &'b [u8],
    }
    impl<'de> Visitor<'de> for Scan<'_> {
        type Value = Layout;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Layout, A::Error> {
            let mut layout = Layout {
                object: true,
                ..Layout::default()
            };
            while let Some(key) = map.next_key::<Key<'de>>()? {
                let value: &'de RawValue = map.next_value()?;
                if let Some(i) = KNOWN.iter().position(|k| *k == key.as_str()) {
                    let start = offset(self.bytes, value.get()).map_err(de::Error::custom)?;
                    let end = start + value.get().len();
                    let span = (
                        u32::try_from(start).map_err(de::Error::custom)?,
                        u32::try_from(end).map_err(de::Error::custom)?,
                    );
                    layout.irregular |= matches!(key, Key::Decoded(_)) || layout.known[i].1 > 0;
                    layout.known[i] = span;
                }
                layout.fields = layout.fields.saturating_add(1);
            }
            Ok(layout)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let layout = de::Deserializer::deserialize_map(&mut deserializer, Scan { bytes })?;
    deserializer.end()?;
    Ok(layout)
}

/// The place of the last top-level field `name` of a checked object.
fn find(bytes: &[u8], name: &str) -> Option<Place> {
    struct Find<'b, 'n> {
        bytes: &'b [u8],
        name: &'n str,
    }
    impl<'de> Visitor<'de> for Find<'_, '_> {
        type Value = Option<Place>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<Place>, A::Error> {
            let mut found = None;
            while let Some(key) = map.next_key::<Key<'de>>()? {
                let value: &'de RawValue = map.next_value()?;
                if key.as_str() == self.name {
                    let start = offset(self.bytes, value.get()).map_err(de::Error::custom)?;
                    let end = start + value.get().len();
                    let mut place = place_of(self.bytes, self.name, start, end);
                    if matches!(key, Key::Decoded(_)) {
                        place.key = None;
                    }
                    found = Some(place);
                }
            }
            Ok(found)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    de::Deserializer::deserialize_map(&mut deserializer, Find { bytes, name })
        .ok()
        .flatten()
}

/// The fields `names` of the JSON object `json`, as written (the last of a repeated key);
/// `None` when `json` is not an object. A borrowed, partial read: nothing else is decoded.
pub(crate) fn fields<'a, const N: usize>(
    json: &'a str,
    names: [&str; N],
) -> Option<[Option<&'a RawValue>; N]> {
    struct Fields<'n, const N: usize> {
        names: [&'n str; N],
    }
    impl<'de, const N: usize> Visitor<'de> for Fields<'_, N> {
        type Value = [Option<&'de RawValue>; N];
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut found = [None; N];
            while let Some(key) = map.next_key::<Key<'de>>()? {
                match self.names.iter().position(|n| *n == key.as_str()) {
                    Some(i) => found[i] = Some(map.next_value::<&'de RawValue>()?),
                    None => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(found)
        }
    }
    let mut deserializer = serde_json::Deserializer::from_str(json);
    de::Deserializer::deserialize_map(&mut deserializer, Fields { names }).ok()
}

/// The items of the JSON array `json`, as written; `None` when it is not an array.
pub(crate) fn items(json: &str) -> Option<Vec<&RawValue>> {
    if !json.starts_with('[') {
        return None;
    }
    serde_json::from_str(json).ok()
}

/// The JSON string `json`, decoded; `None` when it is not a string.
pub(crate) fn string_of(json: &RawValue) -> Option<Cow<'_, str>> {
    let text = json.get();
    if !text.starts_with('"') {
        return None;
    }
    if !text.contains('\\') {
        return text.get(1..text.len() - 1).map(Cow::Borrowed);
    }
    serde_json::from_str::<String>(text).ok().map(Cow::Owned)
}

/// The length in bytes of the JSON string `json` decoded; 0 when it is not a string.
pub(crate) fn string_len(json: Option<&RawValue>) -> usize {
    json.and_then(string_of).map_or(0, |text| text.len())
}

/// Whether `json` is an empty array (`[]`, with any whitespace inside).
pub(crate) fn is_empty_array(json: &RawValue) -> bool {
    let text = json.get().as_bytes();
    text.first() == Some(&b'[') && first_non_space(text, 1) == text.len() - 1
}

/// The usage of an OpenAI `usage` object's JSON text (see [`Body::usage`]).
fn usage_of(json: &str) -> Option<Usage> {
    if json == "null" {
        return None;
    }
    let count =
        |raw: Option<&RawValue>| raw.and_then(|raw| serde_json::from_str::<u64>(raw.get()).ok());
    let [prompt, completion, total, details, read, created] = fields(
        json,
        [
            "prompt_tokens",
            "completion_tokens",
            "total_tokens",
            "prompt_tokens_details",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        ],
    )
    .unwrap_or_default();
    let [cached, creation, write, lifetimes] = details
        .and_then(|d| {
            fields(
                d.get(),
                [
                    "cached_tokens",
                    "cache_creation_tokens",
                    "cache_write_tokens",
                    "cache_creation_token_details",
                ],
            )
        })
        .unwrap_or_default();
    // LiteLLM's split of the cache writes by lifetime: the one-hour ones cost more.
    let [hour] = lifetimes
        .and_then(|l| fields(l.get(), ["ephemeral_1h_input_tokens"]))
        .unwrap_or_default();
    let mut usage = Usage::new(count(prompt).unwrap_or(0), count(completion).unwrap_or(0));
    if let Some(total) = count(total) {
        usage.total_tokens = total;
    }
    usage.cache_read_tokens = count(cached).or(count(read)).unwrap_or(0);
    usage.cache_write_tokens = count(creation)
        .or(count(write))
        .or(count(created))
        .unwrap_or(0);
    usage.cache_write_1h_tokens = count(hour).unwrap_or(0);
    Some(usage)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(text: &str) -> Body {
        Body::parse(text.as_bytes().to_vec()).unwrap()
    }

    fn model(text: &str, model: &str) -> String {
        String::from_utf8(body(text).with_model(model).to_vec()).unwrap()
    }

    #[test]
    fn the_model_is_replaced_where_it_stands_and_nothing_else_changes() {
        assert_eq!(
            model(
                r#"{ "z": 1e400, "model" : "up\u00e9", "a":12345678901234567890 }"#,
                "gpt-4o"
            ),
            r#"{ "z": 1e400, "model" : "gpt-4o", "a":12345678901234567890 }"#
        );
        assert_eq!(model(r#"{"model":"a"}"#, "b\"c"), r#"{"model":"b\"c"}"#);
    }

    #[test]
    fn a_missing_model_is_added_at_the_end() {
        assert_eq!(model(r#"{"id":"x"}"#, "m"), r#"{"id":"x","model":"m"}"#);
        assert_eq!(model("{ }\n", "m"), "{ \"model\":\"m\"}\n");
    }

    #[test]
    fn a_model_that_already_says_it_is_shared() {
        let answer = body(r#"{"model":"m","x":1}"#);
        assert_eq!(answer.with_model("m").as_ptr(), answer.as_bytes().as_ptr());
    }

    #[test]
    fn a_repeated_or_escaped_model_key_is_rewritten_as_a_parser_reads_it() {
        let edited = model(r#"{"model":"a","x":1,"model":"b"}"#, "m");
        let value: serde_json::Value = serde_json::from_str(&edited).unwrap();
        assert_eq!(value, serde_json::json!({"model": "m", "x": 1}));
        let edited = model(r#"{"mod\u0065l":"a","x":1}"#, "m");
        let value: serde_json::Value = serde_json::from_str(&edited).unwrap();
        assert_eq!(value, serde_json::json!({"model": "m", "x": 1}));
    }

    #[test]
    fn cache_reads_and_writes_are_read_from_the_usage() {
        let openai = body(
            r#"{"usage":{"prompt_tokens":120,"completion_tokens":5,"total_tokens":125,
                "prompt_tokens_details":{"cached_tokens":100,"audio_tokens":0}}}"#,
        )
        .usage()
        .unwrap();
        assert_eq!(
            (
                openai.prompt_tokens,
                openai.cache_read_tokens,
                openai.cache_write_tokens
            ),
            (120, 100, 0)
        );
        // LiteLLM's Anthropic usage: the counts under their own names as well.
        let anthropic = body(
            r#"{"usage":{"prompt_tokens":330,"completion_tokens":5,
                "prompt_tokens_details":{"cached_tokens":100},
                "cache_read_input_tokens":100,"cache_creation_input_tokens":200}}"#,
        )
        .usage()
        .unwrap();
        assert_eq!(
            (anthropic.cache_read_tokens, anthropic.cache_write_tokens),
            (100, 200)
        );
        assert_eq!(anthropic.cache_write_1h_tokens, 0);
        // And the writes' split by lifetime, as LiteLLM keeps it.
        let hour = body(
            r#"{"usage":{"prompt_tokens":330,"completion_tokens":5,
                "prompt_tokens_details":{"cached_tokens":100,
                    "cache_creation_token_details":{"ephemeral_5m_input_tokens":50,"ephemeral_1h_input_tokens":150}},
                "cache_read_input_tokens":100,"cache_creation_input_tokens":200}}"#,
        )
        .usage()
        .unwrap();
        assert_eq!(
            (hour.cache_write_tokens, hour.cache_write_1h_tokens),
            (200, 150)
        );
        let plain = body(r#"{"usage":{"prompt_tokens":3,"completion_tokens":4}}"#)
            .usage()
            .unwrap();
        assert_eq!(plain, Usage::new(3, 4));
    }

    #[test]
    fn fields_are_removed_with_their_commas() {
        let edit = |text: &str, edits: &[(&str, Option<&RawValue>)]| {
            let mut out = Vec::new();
            body(text).write_edited(edits, &mut out);
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            edit(r#"{"usage":{"a":1}, "id":"x"}"#, &[("usage", None)]),
            r#"{"id":"x"}"#
        );
        assert_eq!(
            edit(r#"{"id":"x", "usage":{"a":1}}"#, &[("usage", None)]),
            r#"{"id":"x"}"#
        );
        assert_eq!(edit(r#"{"usage":1}"#, &[("usage", None)]), r#"{}"#);
        assert_eq!(
            edit(
                r#"{"id":"x","model":"a","usage":{"a":1},"c":[]}"#,
                &[("model", Some(RawValue::NULL)), ("usage", None)]
            ),
            r#"{"id":"x","model":null,"c":[]}"#
        );
        assert_eq!(
            edit(
                r#"{"usage":1}"#,
                &[("usage", None), ("model", Some(RawValue::TRUE))]
            ),
            r#"{"model":true}"#
        );
        // Touching edits (the first two fields removed) go through the tree.
        let edited = edit(
            r#"{"model":1,"usage":2,"x":3}"#,
            &[("model", None), ("usage", None)],
        );
        assert_eq!(edited, r#"{"x":3}"#);
    }

    #[test]
    fn a_body_stays_small() {
        assert!(
            std::mem::size_of::<Body>() <= 72,
            "{}",
            std::mem::size_of::<Body>()
        );
    }

    #[test]
    fn bad_answers_are_refused() {
        assert!(matches!(Body::parse("[1]"), Err(BodyError::NotAnObject)));
        assert!(matches!(Body::parse("42"), Err(BodyError::NotAnObject)));
        assert!(matches!(Body::parse(r#"{"a":1"#), Err(BodyError::Json(_))));
        assert!(matches!(
            Body::parse(r#"{"a":1} x"#),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(
            Body::parse(b"{\"a\":\"\xff\"}".to_vec()),
            Err(BodyError::Json(_))
        ));
        assert!(matches!(Body::parse(""), Err(BodyError::Json(_))));
    }

    #[test]
    fn fields_are_read_lazily() {
        let answer = body(r#"{"choices":[{"finish_reason":"stop"}],"n":3,"model":"m"}"#);
        assert_eq!(answer.get::<u64>("n"), Some(3));
        assert_eq!(answer.get::<&str>("model"), Some("m"));
        assert_eq!(
            answer.raw("choices").map(RawValue::get),
            Some(r#"[{"finish_reason":"stop"}]"#)
        );
        assert!(answer.raw("absent").is_none());
    }

    #[test]
    fn a_string_field_is_borrowed_unless_it_has_an_escape() {
        use std::borrow::Cow;
        let answer =
            body(r#"{"model" : "gpt-4o", "id":"a\"b\u00e9", "n":3, "e":"", "x":{"model":"in"}}"#);
        assert!(matches!(answer.str("model"), Some(Cow::Borrowed("gpt-4o"))));
        assert_eq!(answer.str("id").as_deref(), Some("a\"bé"));
        assert!(matches!(answer.str("id"), Some(Cow::Owned(_))));
        assert_eq!(answer.str("e").as_deref(), Some(""));
        assert_eq!(answer.str("n"), None);
        assert_eq!(answer.str("x"), None);
        assert_eq!(answer.str("absent"), None);
        assert_eq!(
            Body::from_value(&serde_json::json!(["model"])).str("model"),
            None
        );
    }

    #[test]
    fn a_body_serialises_as_its_bytes() {
        let answer = body(r#"{"b":1,  "a":1e400}"#);
        let text = serde_json::to_string(&vec![answer.clone()]).unwrap();
        assert_eq!(text, r#"[{"b":1,  "a":1e400}]"#);
        let back: Vec<Body> = serde_json::from_str(&text).unwrap();
        assert_eq!(back, vec![answer]);
    }
}
