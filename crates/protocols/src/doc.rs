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
    /// `bytes` read as JSON: what `serde_json` reads as a `Value` (the same numbers, the same
    /// errors for what is not JSON, the same nesting limit), by a reader of its own.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Doc<'a>, ParseError> {
        // One check of the whole text instead of one per string (what makes a borrowed
        // string's slice valid UTF-8 without checking it again).
        let text = std::str::from_utf8(bytes).map_err(|e| ParseError {
            what: "invalid UTF-8",
            place: line_and_column(bytes, e.valid_up_to()),
        })?;
        let mut reader = Reader {
            text,
            at: 0,
            depth: 0,
        };
        let doc = reader.value()?;
        reader.skip_space();
        if reader.at != bytes.len() {
            return Err(reader.error("trailing characters"));
        }
        Ok(doc)
    }
}

/// Why a text is not JSON, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    what: &'static str,
    /// The line and column (from 1) where reading stopped.
    place: (usize, usize),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, column) = self.place;
        write!(f, "{} at line {line} column {column}", self.what)
    }
}

impl std::error::Error for ParseError {}

/// The line and column (both from 1) of byte `at` of `bytes`.
fn line_and_column(bytes: &[u8], at: usize) -> (usize, usize) {
    let before = bytes.get(..at).unwrap_or(bytes);
    let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
    let column = 1 + before.iter().rev().take_while(|&&b| b != b'\n').count();
    (line, column)
}

/// How deep arrays and objects may nest (`serde_json`'s limit: a hostile text cannot
/// exhaust the stack).
const MAX_DEPTH: usize = 127;

/// A JSON reader over a text already known to be UTF-8.
struct Reader<'a> {
    text: &'a str,
    at: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    fn error(&self, what: &'static str) -> ParseError {
        ParseError {
            what,
            place: line_and_column(self.bytes(), self.at),
        }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes().get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.at += 1;
        }
    }

    fn value(&mut self) -> Result<Doc<'a>, ParseError> {
        self.skip_space();
        match self.peek() {
            Some(b'"') => {
                self.at += 1;
                self.string().map(Doc::Str)
            }
            Some(b'{') => self.nested(Reader::object),
            Some(b'[') => self.nested(Reader::array),
            Some(b't') => self.word(b"true", Doc::Bool(true)),
            Some(b'f') => self.word(b"false", Doc::Bool(false)),
            Some(b'n') => self.word(b"null", Doc::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected value")),
            None => Err(self.error("EOF while parsing a value")),
        }
    }

    fn word(&mut self, word: &[u8], doc: Doc<'a>) -> Result<Doc<'a>, ParseError> {
        if self.bytes().get(self.at..self.at + word.len()) == Some(word) {
            self.at += word.len();
            Ok(doc)
        } else {
            Err(self.error("expected ident"))
        }
    }

    fn nested(
        &mut self,
        read: fn(&mut Reader<'a>) -> Result<Doc<'a>, ParseError>,
    ) -> Result<Doc<'a>, ParseError> {
        if self.depth == MAX_DEPTH {
            return Err(self.error("recursion limit exceeded"));
        }
        self.depth += 1;
        self.at += 1;
        let doc = read(self);
        self.depth -= 1;
        doc
    }

    fn array(&mut self) -> Result<Doc<'a>, ParseError> {
        self.skip_space();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Doc::Array(Vec::new()));
        }
        // Room for the usual few items and fields up front: growing a vector from empty
        // reallocates it twice for six fields.
        let mut items = Vec::with_capacity(4);
        loop {
            items.push(self.value()?);
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Doc::Array(items));
                }
                Some(_) => return Err(self.error("expected `,` or `]`")),
                None => return Err(self.error("EOF while parsing a list")),
            }
        }
    }

    fn object(&mut self) -> Result<Doc<'a>, ParseError> {
        self.skip_space();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Doc::Object(Vec::new()));
        }
        let mut fields = Vec::with_capacity(8);
        loop {
            self.skip_space();
            match self.peek() {
                Some(b'"') => self.at += 1,
                Some(_) => return Err(self.error("key must be a string")),
                None => return Err(self.error("EOF while parsing an object")),
            }
            let name = self.string()?;
            self.skip_space();
            match self.peek() {
                Some(b':') => self.at += 1,
                Some(_) => return Err(self.error("expected `:`")),
                None => return Err(self.error("EOF while parsing an object")),
            }
            fields.push((name, self.value()?));
            self.skip_space();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Doc::Object(fields));
                }
                Some(_) => return Err(self.error("expected `,` or `}`")),
                None => return Err(self.error("EOF while parsing an object")),
            }
        }
    }

    /// The string whose opening quote was just read: borrowed from the text unless it has an
    /// escape.
    fn string(&mut self) -> Result<Cow<'a, str>, ParseError> {
        let start = self.at;
        let stop = self.scan();
        if self.peek() == Some(b'"') {
            self.at += 1;
            return self
                .text
                .get(start..stop)
                .map(Cow::Borrowed)
                .ok_or_else(|| self.error("invalid UTF-8"));
        }
        let mut owned = String::with_capacity(stop - start + 16);
        owned.push_str(self.text.get(start..stop).unwrap_or_default());
        loop {
            match self.peek() {
                Some(b'"') => {
                    self.at += 1;
                    return Ok(Cow::Owned(owned));
                }
                Some(b'\\') => {
                    self.at += 1;
                    self.escape(&mut owned)?;
                }
                Some(_) => return Err(self.error("control character found while parsing a string")),
                None => return Err(self.error("EOF while parsing a string")),
            }
            let from = self.at;
            let stop = self.scan();
            owned.push_str(self.text.get(from..stop).unwrap_or_default());
        }
    }

    /// Moves to the next `"`, `\\` or control character (or the end), eight bytes at a
    /// time; returns where it stopped.
    fn scan(&mut self) -> usize {
        let mut at = self.at;
        while let Some(chunk) = self.bytes().get(at..at + 8) {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            let found = crate::out::escapes(u64::from_le_bytes(word));
            if found != 0 {
                at += found.trailing_zeros() as usize / 8;
                self.at = at;
                return at;
            }
            at += 8;
        }
        while let Some(&b) = self.bytes().get(at) {
            if b == b'"' || b == b'\\' || b < 0x20 {
                break;
            }
            at += 1;
        }
        self.at = at;
        at
    }

    /// The escape after a backslash, appended to `out`.
    fn escape(&mut self, out: &mut String) -> Result<(), ParseError> {
        let Some(b) = self.peek() else {
            return Err(self.error("EOF while parsing a string"));
        };
        self.at += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4()?;
                let code = match first {
                    0xD800..=0xDBFF => {
                        if self.bytes().get(self.at..self.at + 2) != Some(b"\\u") {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        self.at += 2;
                        let second = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.error("lone leading surrogate in hex escape"));
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    0xDC00..=0xDFFF => {
                        return Err(self.error("lone trailing surrogate in hex escape"));
                    }
                    code => code,
                };
                char::from_u32(code).ok_or_else(|| self.error("invalid unicode code point"))?
            }
            _ => return Err(self.error("invalid escape")),
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, ParseError> {
        let mut code = 0;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(b) => char::from(b).to_digit(16),
                None => return Err(self.error("EOF while parsing a string")),
            };
            let Some(digit) = digit else {
                return Err(self.error("invalid escape"));
            };
            code = code * 16 + digit;
            self.at += 1;
        }
        Ok(code)
    }

    /// A number: an integer that fits read here, any other as `serde_json` reads it (its
    /// floats, and integers too large for 64 bits, become the same `Number`).
    fn number(&mut self) -> Result<Doc<'a>, ParseError> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let digits = self.at;
        let mut whole: u64 = 0;
        let mut fits = true;
        match self.peek() {
            Some(b'0') => self.at += 1,
            Some(b'1'..=b'9') => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    match whole
                        .checked_mul(10)
                        .and_then(|w| w.checked_add(u64::from(d - b'0')))
                    {
                        Some(w) => whole = w,
                        None => fits = false,
                    }
                    self.at += 1;
                }
            }
            _ => return Err(self.error("invalid number")),
        }
        let mut integer = true;
        if self.peek() == Some(b'.') {
            integer = false;
            self.at += 1;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            integer = false;
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.digits()?;
        }
        if integer && fits && self.at > digits {
            if !negative {
                return Ok(Doc::Number(whole.into()));
            }
            // `-0` is a float to `serde_json` (and so left to it below).
            if let Some(n) = 0i64.checked_sub_unsigned(whole).filter(|&n| n < 0) {
                return Ok(Doc::Number(n.into()));
            }
        }
        let text = self.text.get(start..self.at).unwrap_or_default();
        serde_json::from_str::<Number>(text)
            .map(Doc::Number)
            .map_err(|_| ParseError {
                what: "number out of range",
                place: line_and_column(self.bytes(), start),
            })
    }

    /// One or more digits.
    fn digits(&mut self) -> Result<(), ParseError> {
        let from = self.at;
        while let Some(b'0'..=b'9') = self.peek() {
            self.at += 1;
        }
        if self.at == from {
            return Err(self.error("invalid number"));
        }
        Ok(())
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

    /// What `serde_json` reads of `text`, and what a `Doc` reads, as values.
    fn both(text: &[u8]) -> (Result<Value, String>, Result<Value, String>) {
        (
            serde_json::from_slice::<Value>(text).map_err(|e| e.to_string()),
            Doc::parse(text)
                .map(|doc| to_value(&doc))
                .map_err(|e| e.to_string()),
        )
    }

    /// `text` with every character past ASCII written as a `\u` escape (two for one past the
    /// Basic Multilingual Plane), as some writers send JSON.
    fn ascii_escaped(text: &str) -> String {
        let mut out = String::new();
        for c in text.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
        out
    }

    #[test]
    fn numbers_escapes_nesting_and_broken_texts_read_as_serde_json_reads_them() {
        let deep =
            |n: usize, open: &str, close: &str| format!("{}{}", open.repeat(n), close.repeat(n));
        let mut texts: Vec<String> = [
            "0",
            "-0",
            "-0.0",
            "1",
            "-1",
            "1e400",
            "-1e400",
            "2.5E-3",
            "1E+2",
            "1e-400",
            "-9223372036854775808",
            "-9223372036854775809",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "123456789012345678901234567890",
            "0.1",
            "3.141592653589793",
            "01",
            "-01",
            "1.",
            ".5",
            "1e",
            "1e+",
            "-",
            "+1",
            "1.5.2",
            r#""\ud83d\ude00""#,
            r#""\ud83d""#,
            r#""\ude00""#,
            r#""\ud83dx""#,
            r#""\ud83d\u0041""#,
            r#""\u00e9\u00E9""#,
            r#""\uZZZZ""#,
            r#""\u12""#,
            r#""\q""#,
            r#""a\"b\\c\/d\b\f\n\r\t""#,
            "\"tab\there\"",
            "\"unterminated",
            "\"esc\\",
            "",
            " ",
            "  {}  ",
            "{} x",
            "[1,]",
            "[,1]",
            "{\"a\":1,}",
            "{\"a\" 1}",
            "{1:2}",
            "{\"a\":}",
            "[1 2]",
            "tru",
            "nul",
            "falsey",
            "true",
            "null",
            "[true,false,null]",
            "{\"a\":{\"b\":[]},\"a\":2}",
            "[\"é😀\u{2028}\"]",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for n in [126, 127, 128, 200] {
            texts.push(deep(n, "[", "]"));
            texts.push(format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n)));
        }
        for text in &texts {
            let (expected, read) = both(text.as_bytes());
            assert_eq!(
                read.is_ok(),
                expected.is_ok(),
                "{text:?}: {read:?} vs {expected:?}"
            );
            if let (Ok(read), Ok(expected)) = (&read, &expected) {
                assert_eq!(read, expected, "{text:?}");
            }
        }
        // Not UTF-8, inside a string and outside one.
        for bytes in [&b"\"\xff\""[..], b"[\"a\xc3\"]", b"\xef\xbb\xbf{}"] {
            assert!(both(bytes).0.is_err() && both(bytes).1.is_err());
        }
        // The error says where.
        let error = Doc::parse(b"{\"a\":\n  tru}").unwrap_err().to_string();
        assert_eq!(error, "expected ident at line 2 column 3");
    }

    proptest::proptest! {
        #[test]
        fn a_doc_reads_any_json_as_a_value_does(value in crate::out::tests::json_value()) {
            let compact = serde_json::to_string(&value).unwrap();
            let pretty = serde_json::to_string_pretty(&value).unwrap();
            let escaped = ascii_escaped(&compact);
            for text in [&compact, &pretty, &escaped] {
                // Against what `serde_json` reads back, not `value`: its floats do not always
                // read back to the last bit.
                let (expected, read) = both(text.as_bytes());
                proptest::prop_assert!(read.is_ok(), "{text}: {read:?}");
                proptest::prop_assert_eq!(read, expected);
            }
        }

        #[test]
        fn a_doc_refuses_what_serde_json_refuses(
            value in crate::out::tests::json_value(),
            edits in proptest::collection::vec(
                (0usize..10_000, 0usize..3, proptest::sample::select(
                    b"{}[],:\"\\0123456789-+.eEutfnl \t\n\x01\x7f\xff\xc3\xa9".to_vec())),
                1..4,
            ),
        ) {
            let mut text = serde_json::to_vec(&value).unwrap();
            for (at, kind, byte) in edits {
                let at = at % (text.len() + 1);
                match kind {
                    0 => text.insert(at, byte),
                    1 if at < text.len() => text[at] = byte,
                    _ if at < text.len() => {
                        text.remove(at);
                    }
                    _ => text.push(byte),
                }
            }
            let (expected, read) = both(&text);
            proptest::prop_assert_eq!(read.is_ok(), expected.is_ok(), "{:?}: {:?} vs {:?}",
                String::from_utf8_lossy(&text), read, expected);
            if let (Ok(read), Ok(expected)) = (read, expected) {
                proptest::prop_assert_eq!(read, expected);
            }
        }
    }
}
