//! Server-sent events: an incremental parser of a stream's bytes into events (Anthropic's and
//! Gemini's streams, the Responses API's), and the writer of one event.

/// One server-sent event: its `event:` name, when it has one, and its `data:` lines joined.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field (Anthropic names each event; OpenAI's and Gemini's have none).
    pub event: Option<String>,
    /// The `data:` lines, joined with `\n`.
    pub data: String,
}

/// The most bytes one line, and one event's `data`, may hold ([`SseParser::new`]'s limit): a
/// stream that sends more without ending it is refused rather than buffered without bound.
pub const MAX_EVENT_BYTES: usize = 16 << 20;

/// A stream that broke the parser's limit: a line or an event's data longer than it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseError {
    /// A line went on past the limit without ending.
    LineTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
    /// An event's `data` lines together went past the limit before its blank line.
    EventTooLong {
        /// The limit, in bytes.
        limit: usize,
    },
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (what, limit) = match self {
            SseError::LineTooLong { limit } => ("a line", *limit),
            SseError::EventTooLong { limit } => ("an event", *limit),
        };
        if limit % (1 << 20) == 0 {
            write!(f, "{what} of the stream is over {} MiB", limit >> 20)
        } else {
            write!(f, "{what} of the stream is over {limit} bytes")
        }
    }
}

impl std::error::Error for SseError {}

/// Cuts a stream's bytes into events as they arrive: [`SseParser::push`] takes each piece of
/// the body and returns the events it completed. Lines end with `\n`, `\r\n` or `\r`; comment
/// lines (`: ping`) and fields other than `event` and `data` are skipped; an event with no data
/// is not returned. A line or an event's data longer than the limit ([`MAX_EVENT_BYTES`]) is
/// an [`SseError`], and so is every push after it.
#[derive(Debug)]
pub struct SseParser {
    /// Bytes of a line not ended yet.
    partial: Vec<u8>,
    /// The event being read.
    event: Option<String>,
    data: Option<String>,
    /// The last byte was `\r` (a `\n` after it ends nothing).
    after_cr: bool,
    /// The most bytes a line, and an event's data, may hold.
    limit: usize,
    /// The limit was broken: the stream is not read further.
    failed: Option<SseError>,
}

impl Default for SseParser {
    fn default() -> Self {
        SseParser::with_limit(MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser at the start of a stream, with the [`MAX_EVENT_BYTES`] limit.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// A parser whose lines and events may hold at most `limit` bytes.
    pub fn with_limit(limit: usize) -> Self {
        SseParser {
            partial: Vec::new(),
            event: None,
            data: None,
            after_cr: false,
            limit,
            failed: None,
        }
    }

    /// Feeds `bytes`; returns the events they completed, in order, or the limit they broke
    /// (the events completed before it are dropped with the stream).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        if let Some(error) = self.failed {
            return Err(error);
        }
        let mut events = Vec::new();
        for &byte in bytes {
            if self.after_cr {
                self.after_cr = false;
                if byte == b'\n' {
                    continue;
                }
            }
            match byte {
                b'\n' | b'\r' => {
                    self.after_cr = byte == b'\r';
                    let line = std::mem::take(&mut self.partial);
                    self.line(&line, &mut events)?;
                }
                _ => {
                    if self.partial.len() >= self.limit {
                        return Err(self.fail(SseError::LineTooLong { limit: self.limit }));
                    }
                    self.partial.push(byte);
                }
            }
        }
        Ok(events)
    }

    /// The event left when the stream ends without the blank line that would end it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        if self.failed.is_some() {
            return None;
        }
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, &mut events).ok()?;
        }
        self.line(b"", &mut events).ok()?;
        events.pop()
    }

    /// Records `error` and drops what was buffered.
    fn fail(&mut self, error: SseError) -> SseError {
        self.failed = Some(error);
        self.partial = Vec::new();
        self.event = None;
        self.data = None;
        error
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            let event = self.event.take();
            if let Some(data) = self.data.take() {
                events.push(SseEvent { event, data });
            }
            return Ok(());
        }
        if line.first() == Some(&b':') {
            return Ok(());
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(at) => {
                let value = &line[at + 1..];
                (&line[..at], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match name {
            b"event" => self.event = Some(value.into_owned()),
            b"data" => match &mut self.data {
                Some(data) => {
                    if data.len() + 1 + value.len() > self.limit {
                        return Err(self.fail(SseError::EventTooLong { limit: self.limit }));
                    }
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            _ => {}
        }
        Ok(())
    }
}

/// One event as its bytes on the wire: `event: {event}` (when named), `data: {data}`, a blank
/// line. `data` must be one line (JSON as serde_json writes it is).
pub fn write_event(out: &mut Vec<u8>, event: Option<&str>, data: &[u8]) {
    if let Some(event) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_split_anywhere_come_out_whole_and_in_order() {
        let wire = b"event: message_start\r\ndata: {\"a\":1}\r\n\r\n: ping\n\nevent: ping\ndata: {}\n\ndata: x\ndata: y\n\n";
        let whole = SseParser::new().push(wire).unwrap();
        assert_eq!(
            whole,
            vec![
                SseEvent {
                    event: Some("message_start".into()),
                    data: "{\"a\":1}".into()
                },
                SseEvent {
                    event: Some("ping".into()),
                    data: "{}".into()
                },
                SseEvent {
                    event: None,
                    data: "x\ny".into()
                },
            ]
        );
        for cut in 0..wire.len() {
            let mut parser = SseParser::new();
            let mut events = parser.push(&wire[..cut]).unwrap();
            events.extend(parser.push(&wire[cut..]).unwrap());
            assert_eq!(events, whole, "cut at {cut}");
        }
    }

    #[test]
    fn an_event_without_its_blank_line_is_given_at_the_end() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: {\"done\":true}").unwrap().is_empty());
        assert_eq!(
            parser.finish(),
            Some(SseEvent {
                event: None,
                data: "{\"done\":true}".into()
            })
        );
        assert_eq!(parser.finish(), None);
    }

    #[test]
    fn an_event_is_written_as_it_is_read() {
        let mut out = Vec::new();
        write_event(&mut out, Some("content_block_delta"), b"{\"x\":1}");
        write_event(&mut out, None, b"[DONE]");
        let events = SseParser::new().push(&out).unwrap();
        assert_eq!(events[0].event.as_deref(), Some("content_block_delta"));
        assert_eq!(events[0].data, "{\"x\":1}");
        assert_eq!(events[1].event, None);
        assert_eq!(events[1].data, "[DONE]");
    }

    #[test]
    fn a_line_or_an_event_over_the_limit_is_an_error_not_a_growing_buffer() {
        // A line of exactly the limit is read; one byte more is refused, however it arrives.
        let mut parser = SseParser::with_limit(16);
        let line = format!("data: {}\n\n", "x".repeat(10));
        assert_eq!(parser.push(line.as_bytes()).unwrap().len(), 1);
        let mut parser = SseParser::with_limit(16);
        assert!(parser.push(b"data: 0123456789").unwrap().is_empty());
        assert_eq!(parser.push(b"a"), Err(SseError::LineTooLong { limit: 16 }));
        // Every push after it, and the end, give nothing more.
        assert_eq!(
            parser.push(b"\n\n"),
            Err(SseError::LineTooLong { limit: 16 })
        );
        assert_eq!(parser.finish(), None);
        // Short lines whose data adds up past the limit.
        let mut parser = SseParser::with_limit(16);
        assert_eq!(
            parser.push(b"data: 0123456\ndata: 0123456\ndata: 0123456\n"),
            Err(SseError::EventTooLong { limit: 16 })
        );
        // The default limit, and its message.
        let mut parser = SseParser::new();
        let error = parser.push(&vec![b'x'; MAX_EVENT_BYTES + 1]).unwrap_err();
        assert_eq!(error.to_string(), "a line of the stream is over 16 MiB");
    }
}
