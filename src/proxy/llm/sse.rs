//! Server-sent events from an upstream, split into whole events without copying: each event
//! keeps its original bytes (so what is released is byte for byte what the provider sent) and
//! its parsed `event` name and `data`.

use bytes::{Bytes, BytesMut};

/// One event: its exact bytes, blank line included, and its fields.
#[derive(Debug, Clone)]
pub struct Frame {
    pub raw: Bytes,
    /// The `event:` field, if any.
    pub event: Option<String>,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Splits a byte stream into [`Frame`]s. An event is ended by a blank line (`\n\n` or
/// `\r\n\r\n`); one longer than `max` bytes is an error, never a truncated event.
pub struct Splitter {
    buf: BytesMut,
    /// Bytes of `buf` already searched for an event end.
    scanned: usize,
    max: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SseError {
    TooLarge(usize),
    NotUtf8,
}

impl std::fmt::Display for SseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SseError::TooLarge(max) => write!(f, "an event is over llm.max_event_bytes ({max})"),
            SseError::NotUtf8 => f.write_str("an event is not valid UTF-8"),
        }
    }
}

impl Splitter {
    pub fn new(max: usize) -> Splitter {
        Splitter {
            buf: BytesMut::new(),
            scanned: 0,
            max,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next whole event, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, SseError> {
        let Some(end) = self.find_end() else {
            if self.buf.len() > self.max {
                return Err(SseError::TooLarge(self.max));
            }
            return Ok(None);
        };
        if end > self.max {
            return Err(SseError::TooLarge(self.max));
        }
        let raw = self.buf.split_to(end).freeze();
        self.scanned = 0;
        parse(raw).map(Some)
    }

    /// Bytes of an event that never ended.
    pub fn rest(&self) -> &[u8] {
        &self.buf
    }

    fn find_end(&mut self) -> Option<usize> {
        let b = &self.buf[..];
        let mut i = self.scanned.saturating_sub(3);
        while i < b.len() {
            if b[i] == b'\n' {
                if b.get(i + 1) == Some(&b'\n') {
                    return Some(i + 2);
                }
                if b.get(i + 1) == Some(&b'\r') && b.get(i + 2) == Some(&b'\n') {
                    return Some(i + 3);
                }
            }
            i += 1;
        }
        self.scanned = b.len();
        None
    }
}

fn parse(raw: Bytes) -> Result<Frame, SseError> {
    let text = std::str::from_utf8(&raw).map_err(|_| SseError::NotUtf8)?;
    let mut event = None;
    let mut data = String::new();
    let mut first = true;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = Some(value.to_string()),
            "data" => {
                if !first {
                    data.push('\n');
                }
                data.push_str(value);
                first = false;
            }
            _ => {}
        }
    }
    Ok(Frame { raw, event, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(s: &mut Splitter) -> Vec<Frame> {
        let mut out = Vec::new();
        while let Some(f) = s.next_frame().unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn events_keep_their_bytes_at_any_split() {
        let stream =
            b"event: a\ndata: {\"x\":1}\n\ndata: one\ndata: two\r\n\r\n: comment\ndata: [DONE]\n\n";
        for cut in 0..stream.len() {
            let mut s = Splitter::new(1024);
            s.push(&stream[..cut]);
            let mut got = all(&mut s);
            s.push(&stream[cut..]);
            got.extend(all(&mut s));
            assert_eq!(got.len(), 3, "cut at {cut}");
            assert_eq!(got[0].event.as_deref(), Some("a"));
            assert_eq!(got[0].data, "{\"x\":1}");
            assert_eq!(got[1].data, "one\ntwo");
            assert_eq!(got[2].data, "[DONE]");
            let joined: Vec<u8> = got.iter().flat_map(|f| f.raw.to_vec()).collect();
            assert_eq!(joined, stream, "cut at {cut}");
            assert!(s.rest().is_empty());
        }
    }

    #[test]
    fn an_oversize_event_is_an_error() {
        let mut s = Splitter::new(16);
        s.push(b"data: 0123456789abcdef");
        assert_eq!(s.next_frame().unwrap_err(), SseError::TooLarge(16));
        let mut s = Splitter::new(16);
        s.push(b"data: 0123456789abcdef\n\n");
        assert_eq!(s.next_frame().unwrap_err(), SseError::TooLarge(16));
    }

    #[test]
    fn an_unfinished_event_stays_in_rest() {
        let mut s = Splitter::new(1024);
        s.push(b"data: {\"a\":");
        assert!(s.next_frame().unwrap().is_none());
        assert_eq!(s.rest(), b"data: {\"a\":");
    }
}
