//! How a log line is formatted: tracing-subscriber's own formats (its default text, or its JSON
//! with `--log-format json`), with a short way for the lines logged on a request's path.
//!
//! The gateway logs one line per request (`answered`, with the status and the time taken, in
//! the request's span). tracing-subscriber formats every line through `core::fmt` and, for JSON,
//! a serializer that parses each span's fields back from their text; that was about a tenth of a
//! mocked request's instructions. [`Lines`] writes such a line itself: an event whose fields are
//! a plain message and numbers or booleans, with no colours, is written directly, with the same
//! text (or JSON) tracing-subscriber writes for it, byte for byte (the tests compare the two);
//! every other line, and every line when colours are on, is tracing-subscriber's.

use std::fmt::{self, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// tracing-subscriber's event format `generic` (its default text or its JSON, with its default
/// settings: timestamp, level, spans and target shown), and the short way for lines it can
/// write itself (see the module documentation).
pub(crate) struct Lines<F> {
    generic: F,
    json: bool,
}

impl<F> Lines<F> {
    /// Lines in tracing-subscriber's default text format, `generic`.
    pub(crate) fn text(generic: F) -> Self {
        Lines {
            generic,
            json: false,
        }
    }

    /// Lines in tracing-subscriber's JSON format, `generic`.
    pub(crate) fn json(generic: F) -> Self {
        Lines {
            generic,
            json: true,
        }
    }
}

impl<S, N, F> FormatEvent<S, N> for Lines<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.json || !writer.has_ansi_escapes() {
            if let Some(fields) = Fields::of(event) {
                let done = if self.json {
                    write_json(ctx, &mut writer, event, &fields)
                } else {
                    write_text(ctx, &mut writer, event, &fields)
                };
                if let Some(done) = done {
                    #[cfg(test)]
                    tests::SHORT.with(|short| short.set(short.get() + 1));
                    return done;
                }
            }
        }
        self.generic.format_event(ctx, writer, event)
    }
}

/// Most fields an event written the short way has.
const MOST_FIELDS: usize = 8;

/// Longest message written the short way.
const LONGEST_MESSAGE: usize = 96;

/// One field's value, as the short way writes it.
#[derive(Clone, Copy)]
enum Value {
    /// The message: its text is [`Fields::message`].
    Message,
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
}

/// An event's fields in their order, when each is a plain message (printable ASCII, no quote or
/// backslash, as both formats write it unchanged) or a number or a boolean under a plain name;
/// `None` for any other event.
struct Fields {
    values: [(&'static str, Value); MOST_FIELDS],
    len: usize,
    message: [u8; LONGEST_MESSAGE],
    message_len: usize,
    /// A field the short way does not write was seen.
    other: bool,
}

impl Fields {
    fn of(event: &Event<'_>) -> Option<Fields> {
        let mut fields = Fields {
            values: [("", Value::Bool(false)); MOST_FIELDS],
            len: 0,
            message: [0; LONGEST_MESSAGE],
            message_len: 0,
            other: false,
        };
        event.record(&mut fields);
        (!fields.other).then_some(fields)
    }

    fn iter(&self) -> impl Iterator<Item = &(&'static str, Value)> {
        self.values[..self.len].iter()
    }

    fn message(&self) -> &str {
        // Only printable ASCII is kept (`push_message`).
        std::str::from_utf8(&self.message[..self.message_len]).unwrap_or("")
    }

    fn push(&mut self, field: &Field, value: Value) {
        let name = field.name();
        if self.other || self.len == MOST_FIELDS || !plain(name) {
            self.other = true;
            return;
        }
        self.values[self.len] = (name, value);
        self.len += 1;
    }

    /// The message formatted into [`Fields::message`]; an event whose message is not plain or
    /// too long is not written the short way.
    fn push_message(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.message_len > 0 {
            // A second message field: not a line the short way writes.
            self.other = true;
            return;
        }
        let mut into = MessageBuffer {
            bytes: &mut self.message,
            len: 0,
        };
        if write!(into, "{value:?}").is_err() {
            self.other = true;
            return;
        }
        self.message_len = into.len;
        self.push(field, Value::Message);
    }
}

impl Visit for Fields {
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push(field, Value::U64(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push(field, Value::I64(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push(field, Value::F64(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.push_message(field, &format_args!("{value}"));
        } else {
            self.other = true;
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.push_message(field, value);
        } else {
            self.other = true;
        }
    }
}

/// A message's text, kept only while it is printable ASCII other than `"` and `\` (written the
/// same by the text format, escaped or not, and by the JSON format) and fits.
struct MessageBuffer<'a> {
    bytes: &'a mut [u8; LONGEST_MESSAGE],
    len: usize,
}

impl fmt::Write for MessageBuffer<'_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let end = self.len + text.len();
        if end > LONGEST_MESSAGE
            || !text
                .bytes()
                .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
        {
            return Err(fmt::Error);
        }
        self.bytes[self.len..end].copy_from_slice(text.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// A name written as it is in both formats (a field's, a span's, a target): letters, digits,
/// `_`, `:` and `.`, not tracing-subscriber's `r#` or `log.` names.
fn plain(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with("r#")
        && !name.starts_with("log.")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':' || b == b'.')
}

/// The level as tracing-subscriber's text format writes it (five characters, right-aligned).
fn text_level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => " INFO",
        Level::WARN => " WARN",
        _ => "ERROR",
    }
}

/// The level as tracing-subscriber's JSON format writes it.
fn json_level(level: &Level) -> &'static str {
    match *level {
        Level::TRACE => "TRACE",
        Level::DEBUG => "DEBUG",
        Level::INFO => "INFO",
        Level::WARN => "WARN",
        _ => "ERROR",
    }
}

/// The line in tracing-subscriber's default text format:
/// `2026-12-07T01:02:03.456789Z  INFO request{id=...}: ferrolite::gateway: answered status=200
/// elapsed_ms=0.25`; `None` (nothing written) when the short way cannot write it.
fn write_text<S, N>(
    ctx: &FmtContext<'_, S, N>,
    writer: &mut Writer<'_>,
    event: &Event<'_>,
    fields: &Fields,
) -> Option<fmt::Result>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    let mut time = [0u8; TIMESTAMP_LEN];
    let time = timestamp(wall_time(), &mut time)?;
    let written = (|| {
        writer.write_str(time)?;
        writer.write_char(' ')?;
        writer.write_str(text_level(meta.level()))?;
        writer.write_char(' ')?;
        if let Some(scope) = ctx.event_scope() {
            let mut seen = false;
            for span in scope.from_root() {
                writer.write_str(span.metadata().name())?;
                seen = true;
                let extensions = span.extensions();
                if let Some(formatted) = extensions.get::<FormattedFields<N>>() {
                    if !formatted.is_empty() {
                        writer.write_char('{')?;
                        writer.write_str(formatted)?;
                        writer.write_char('}')?;
                    }
                }
                writer.write_char(':')?;
            }
            if seen {
                writer.write_char(' ')?;
            }
        }
        writer.write_str(meta.target())?;
        writer.write_str(": ")?;
        let mut first = true;
        for &(name, value) in fields.iter() {
            if !first {
                writer.write_char(' ')?;
            }
            first = false;
            if let Value::Message = value {
                writer.write_str(fields.message())?;
                continue;
            }
            writer.write_str(name)?;
            writer.write_char('=')?;
            match value {
                Value::Message => {}
                Value::U64(n) => writer.write_str(itoa_u64(n, &mut [0; 20]))?,
                Value::I64(n) => write!(writer, "{n:?}")?,
                Value::F64(x) => write!(writer, "{x:?}")?,
                Value::Bool(b) => writer.write_str(if b { "true" } else { "false" })?,
            }
        }
        writer.write_char('\n')
    })();
    Some(written)
}

/// The line in tracing-subscriber's JSON format: `{"timestamp":...,"level":...,"fields":{...},
/// "target":...,"span":{...,"name":...},"spans":[...]}`; `None` (nothing written) when the short
/// way cannot write it (a span's fields not a JSON object, a name that would need escaping).
fn write_json<S, N>(
    ctx: &FmtContext<'_, S, N>,
    writer: &mut Writer<'_>,
    event: &Event<'_>,
    fields: &Fields,
) -> Option<fmt::Result>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    let meta = event.metadata();
    if !plain(meta.target()) {
        return None;
    }
    let current = event
        .parent()
        .and_then(|id| ctx.span(id))
        .or_else(|| ctx.lookup_current());
    let leaf = ctx.lookup_current();
    // Every span written must have a plain name and its fields as a JSON object, which
    // tracing-subscriber parses and writes again unchanged (its JSON fields are written sorted,
    // as it parses them back).
    let writable = |span: &tracing_subscriber::registry::SpanRef<'_, S>| {
        let extensions = span.extensions();
        plain(span.metadata().name())
            && extensions
                .get::<FormattedFields<N>>()
                .is_some_and(|formatted| json_object(formatted).is_some())
    };
    if let Some(span) = &current {
        if !writable(span) {
            return None;
        }
    }
    if let Some(leaf) = &leaf {
        if !leaf.scope().all(|span| writable(&span)) {
            return None;
        }
    }
    let mut time = [0u8; TIMESTAMP_LEN];
    let time = timestamp(wall_time(), &mut time)?;
    let write_span = |writer: &mut Writer<'_>,
                      span: &tracing_subscriber::registry::SpanRef<'_, S>|
     -> fmt::Result {
        let extensions = span.extensions();
        let inner = extensions
            .get::<FormattedFields<N>>()
            .and_then(|formatted| json_object(formatted))
            .unwrap_or("");
        writer.write_char('{')?;
        if !inner.is_empty() {
            writer.write_str(inner)?;
            writer.write_char(',')?;
        }
        writer.write_str("\"name\":\"")?;
        writer.write_str(span.metadata().name())?;
        writer.write_str("\"}")
    };
    let written = (|| {
        writer.write_str("{\"timestamp\":\"")?;
        writer.write_str(time)?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(json_level(meta.level()))?;
        writer.write_str("\",\"fields\":{")?;
        let mut first = true;
        for &(name, value) in fields.iter() {
            if !first {
                writer.write_char(',')?;
            }
            first = false;
            writer.write_char('"')?;
            writer.write_str(name)?;
            writer.write_str("\":")?;
            match value {
                Value::Message => {
                    writer.write_char('"')?;
                    writer.write_str(fields.message())?;
                    writer.write_char('"')?;
                }
                Value::U64(n) => writer.write_str(itoa_u64(n, &mut [0; 20]))?,
                Value::I64(n) => write!(writer, "{n}")?,
                Value::F64(x) => {
                    // serde_json's number, as tracing-subscriber's serializer writes it.
                    let mut bytes = [0u8; 32];
                    let mut cursor = std::io::Cursor::new(&mut bytes[..]);
                    serde_json::to_writer(&mut cursor, &x).map_err(|_| fmt::Error)?;
                    let len = usize::try_from(cursor.position()).map_err(|_| fmt::Error)?;
                    let text = std::str::from_utf8(&bytes[..len]).map_err(|_| fmt::Error)?;
                    writer.write_str(text)?;
                }
                Value::Bool(b) => writer.write_str(if b { "true" } else { "false" })?,
            }
        }
        writer.write_str("},\"target\":\"")?;
        writer.write_str(meta.target())?;
        writer.write_char('"')?;
        if let Some(span) = &current {
            writer.write_str(",\"span\":")?;
            write_span(writer, span)?;
        }
        if current.is_some() {
            writer.write_str(",\"spans\":[")?;
            if let Some(leaf) = &leaf {
                let mut first = true;
                for span in leaf.scope().from_root() {
                    if !first {
                        writer.write_char(',')?;
                    }
                    first = false;
                    write_span(writer, &span)?;
                }
            }
            writer.write_char(']')?;
        }
        writer.write_str("}\n")
    })();
    Some(written)
}

/// The inside of a JSON object's text (`{"id":"x"}` gives `"id":"x"`, `{}` gives the empty
/// text); `None` when the text is not an object's.
fn json_object(text: &str) -> Option<&str> {
    text.strip_prefix('{')?.strip_suffix('}')
}

/// `n` in decimal, written into `buffer`.
fn itoa_u64(mut n: u64, buffer: &mut [u8; 20]) -> &str {
    let mut at = buffer.len();
    loop {
        at -= 1;
        buffer[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    std::str::from_utf8(&buffer[at..]).unwrap_or("0")
}

/// The wall clock, as tracing-subscriber's default timer reads it for every other line (a log
/// line's time is the system's, paused or not in tests).
#[allow(clippy::disallowed_methods)]
fn wall_time() -> SystemTime {
    SystemTime::now()
}

/// The length of a timestamp, `2026-12-07T01:02:03.456789Z`.
const TIMESTAMP_LEN: usize = 27;

/// `time` as tracing-subscriber's default timer writes it (UTC, RFC 3339, microseconds), in
/// `buffer`; `None` before 1970 or past 9999 (left to tracing-subscriber).
fn timestamp(time: SystemTime, buffer: &mut [u8; TIMESTAMP_LEN]) -> Option<&str> {
    let since = time.duration_since(UNIX_EPOCH).ok()?;
    let seconds = since.as_secs();
    let micros = since.subsec_micros();
    let days = seconds / 86_400;
    let of_day = seconds % 86_400;
    let (year, month, day) = civil(i64::try_from(days).ok()?);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let digits = |buffer: &mut [u8; TIMESTAMP_LEN], at: usize, width: usize, mut n: u64| {
        for i in (at..at + width).rev() {
            buffer[i] = b'0' + (n % 10) as u8;
            n /= 10;
        }
    };
    digits(buffer, 0, 4, year.unsigned_abs());
    buffer[4] = b'-';
    digits(buffer, 5, 2, month);
    buffer[7] = b'-';
    digits(buffer, 8, 2, day);
    buffer[10] = b'T';
    digits(buffer, 11, 2, of_day / 3600);
    buffer[13] = b':';
    digits(buffer, 14, 2, of_day / 60 % 60);
    buffer[16] = b':';
    digits(buffer, 17, 2, of_day % 60);
    buffer[19] = b'.';
    digits(buffer, 20, 6, u64::from(micros));
    buffer[26] = b'Z';
    std::str::from_utf8(buffer).ok()
}

/// The proleptic Gregorian date (year, month, day) `days` after 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil(days: i64) -> (i64, u64, u64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month.unsigned_abs(), day.unsigned_abs())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::cell::Cell;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    use parking_lot::Mutex;

    thread_local! {
        /// Lines this thread wrote the short way.
        pub(super) static SHORT: Cell<usize> = const { Cell::new(0) };
    }

    /// The lines written, read back.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
        type Writer = Sink;

        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    /// The gateway's line, as `gateway::completions` logs it (its target, span and fields).
    fn answered(id: &str, status: u16, elapsed_ms: f64) {
        let span = tracing::info_span!("request", id = %id);
        span.in_scope(|| {
            tracing::info!(target: "ferrolite::gateway", status, elapsed_ms, "answered");
        });
    }

    /// Other lines: outside any span, in two spans, with a field the short way leaves to
    /// tracing-subscriber, a message that needs escaping, a warning with signed numbers.
    fn others() {
        tracing::info!(target: "ferrolite::gateway", status = 200u16, "answered");
        let outer = tracing::info_span!("serve", port = 4000u16);
        let inner = tracing::info_span!("request", id = "a-1");
        outer.in_scope(|| {
            inner.in_scope(|| {
                tracing::warn!(attempts = 3u32, delta = -5i64, ok = false, "retried");
                tracing::info!(group = "big", "picked");
                tracing::info!("a \"quoted\" message");
            })
        });
        let empty = tracing::info_span!("empty");
        empty.in_scope(|| tracing::error!(code = 1u64, "failed"));
    }

    fn emit() {
        for (status, elapsed_ms) in [
            (200, 0.0),
            (200, 0.123_456),
            (429, 12.5),
            (503, 1_234.567_8),
            (200, 1e-7),
            (200, 3.0e17),
            (400, f64::NAN),
        ] {
            answered("ferrolite-4242-17", status, elapsed_ms);
        }
        others();
    }

    /// The lines `emit` logs with tracing-subscriber's format (`short` false) or with [`Lines`].
    fn lines(json: bool, short: bool) -> Vec<String> {
        let sink = Sink::default();
        let builder = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(sink.clone());
        match (json, short) {
            (false, false) => tracing::subscriber::with_default(builder.finish(), emit),
            (false, true) => tracing::subscriber::with_default(
                builder.map_event_format(super::Lines::text).finish(),
                emit,
            ),
            (true, false) => tracing::subscriber::with_default(builder.json().finish(), emit),
            (true, true) => tracing::subscriber::with_default(
                builder.json().map_event_format(super::Lines::json).finish(),
                emit,
            ),
        }
        let text = String::from_utf8(sink.0.lock().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// A line's timestamp (the text format's first 27 characters, the JSON's `timestamp`) and
    /// the line with it blanked.
    fn split_time(line: &str, json: bool) -> (String, String) {
        let at = if json {
            line.find("\"timestamp\":\"").unwrap() + "\"timestamp\":\"".len()
        } else {
            0
        };
        let time = line[at..at + super::TIMESTAMP_LEN].to_owned();
        let rest = format!("{}{}", &line[..at], &line[at + super::TIMESTAMP_LEN..]);
        (time, rest)
    }

    fn same_lines_as_tracing_subscriber(json: bool) {
        SHORT.with(|short| short.set(0));
        let before = lines(json, false);
        assert_eq!(SHORT.with(Cell::get), 0);
        let short = lines(json, true);
        let written_short = SHORT.with(Cell::get);
        let after = lines(json, false);
        assert_eq!(before.len(), short.len());
        assert!(before.len() >= 12, "{before:#?}");
        // Every `answered` line, the one outside a span, the warning and the error; not the
        // string field nor the quoted message.
        assert_eq!(written_short, 7 + 3, "{short:#?}");
        for ((old, new), later) in before.iter().zip(&short).zip(&after) {
            let (old_time, old_rest) = split_time(old, json);
            let (new_time, new_rest) = split_time(new, json);
            let (later_time, _) = split_time(later, json);
            assert_eq!(new_rest, old_rest);
            assert!(
                old_time <= new_time && new_time <= later_time,
                "{old} / {new} / {later}"
            );
        }
    }

    #[test]
    fn the_text_lines_are_tracing_subscribers_byte_for_byte() {
        same_lines_as_tracing_subscriber(false);
        let line = &lines(false, true)[1];
        assert!(
            line.ends_with(
                " INFO request{id=ferrolite-4242-17}: ferrolite::gateway: answered status=200 \
                 elapsed_ms=0.123456"
            ),
            "{line}"
        );
    }

    #[test]
    fn the_json_lines_are_tracing_subscribers_byte_for_byte() {
        same_lines_as_tracing_subscriber(true);
        let line: serde_json::Value = serde_json::from_str(&lines(true, true)[1]).unwrap();
        assert_eq!(line["fields"]["status"], 200);
        assert_eq!(line["spans"][0]["id"], "ferrolite-4242-17");
    }

    #[test]
    fn coloured_text_lines_are_left_to_tracing_subscriber() {
        let coloured = |short: bool| {
            let sink = Sink::default();
            let builder = tracing_subscriber::fmt()
                .with_ansi(true)
                .with_writer(sink.clone());
            if short {
                let subscriber = builder.map_event_format(super::Lines::text).finish();
                tracing::subscriber::with_default(subscriber, || answered("a-1", 200, 0.5));
            } else {
                tracing::subscriber::with_default(builder.finish(), || answered("a-1", 200, 0.5));
            }
            let text = String::from_utf8(sink.0.lock().clone()).unwrap();
            text.split_once('Z').unwrap().1.to_owned()
        };
        SHORT.with(|short| short.set(0));
        let old = coloured(false);
        let new = coloured(true);
        assert_eq!(SHORT.with(Cell::get), 0);
        assert!(new.contains('\u{1b}'), "{new:?}");
        // The timestamps aside (up to their `Z`), the same line.
        assert_eq!(new, old);
    }

    #[test]
    fn timestamps_are_utc_rfc_3339_with_microseconds() {
        for (seconds, micros, text) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
            (951_868_799, 999_999, "2000-02-29T23:59:59.999999Z"),
            (1_796_607_030, 123_456, "2026-12-07T01:30:30.123456Z"),
            (4_107_542_399, 500_000, "2100-02-28T23:59:59.500000Z"),
            (253_402_300_799, 0, "9999-12-31T23:59:59.000000Z"),
        ] {
            let time = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_micros(micros);
            let mut buffer = [0; super::TIMESTAMP_LEN];
            assert_eq!(super::timestamp(time, &mut buffer), Some(text));
        }
        let past = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(super::timestamp(past, &mut [0; super::TIMESTAMP_LEN]), None);
    }
}
