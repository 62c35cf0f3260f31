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

/// Cuts a stream's bytes into events as they arrive: [`SseParser::push`] takes each piece of
/// the body and returns the events it completed. Lines end with `\n`, `\r\n` or `\r`; comment
/// lines (`: ping`) and fields other than `event` and `data` are skipped; an event with no data
/// is not returned.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of a line not ended yet.
    partial: Vec<u8>,
    /// The event being read.
    event: Option<String>,
    data: Option<String>,
    /// The last byte was `\r` (a `\n` after it ends nothing).
    after_cr: bool,
}

impl SseParser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds `bytes`; returns the events they completed, in order.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
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
                    self.line(&line, &mut events);
                }
                _ => self.partial.push(byte),
            }
        }
        events
    }

    /// The event left when the stream ends without the blank line that would end it.
    pub fn finish(&mut self) -> Option<SseEvent> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, &mut events);
        }
        self.line(b"", &mut events);
        events.pop()
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            let event = self.event.take();
            if let Some(data) = self.data.take() {
                events.push(SseEvent { event, data });
            }
            return;
        }
        if line.first() == Some(&b':') {
            return;
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
                    data.push('\n');
                    data.push_str(&value);
                }
                None => self.data = Some(value.into_owned()),
            },
            _ => {}
        }
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
        let whole = SseParser::new().push(wire);
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
            let mut events = parser.push(&wire[..cut]);
            events.extend(parser.push(&wire[cut..]));
            assert_eq!(events, whole, "cut at {cut}");
        }
    }

    #[test]
    fn an_event_without_its_blank_line_is_given_at_the_end() {
        let mut parser = SseParser::new();
        assert!(parser.push(b"data: {\"done\":true}").is_empty());
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
        let events = SseParser::new().push(&out);
        assert_eq!(events[0].event.as_deref(), Some("content_block_delta"));
        assert_eq!(events[0].data, "{\"x\":1}");
        assert_eq!(events[1].event, None);
        assert_eq!(events[1].data, "[DONE]");
    }
}
