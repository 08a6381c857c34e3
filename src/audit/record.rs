//! The record format: building a line, checking a line, and finding lines on disk.

use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::audit::AuditError;

/// `prev` of the very first record.
pub(crate) const GENESIS: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// Largest entry body accepted by [`Entry`]; bounds the memory a single record can take.
pub(crate) const MAX_ENTRY_BYTES: usize = 8 << 20;

/// Largest line a reader accepts: an entry plus the fields the writer adds.
pub(crate) const MAX_LINE_BYTES: usize = MAX_ENTRY_BYTES + 512;

/// How far back from the end recovery looks for the last valid record. One unsynced batch is
/// at most `MAX_BATCH_BYTES` plus one line, so anything larger is not a torn tail.
pub(crate) const MAX_TAIL_SCAN: u64 = 32 << 20;

/// Where the writer stops adding records to a batch.
pub(crate) const MAX_BATCH_BYTES: usize = 8 << 20;

const RESERVED_KEYS: [&str; 4] = ["seq", "time", "prev", "hash"];
const HASH_PREFIX: &str = "sha256:";
const HASH_TEXT_LEN: usize = HASH_PREFIX.len() + 64;
const SUFFIX_HEAD: &[u8] = b",\"hash\":\"";
/// `,"hash":"sha256:<64 hex>"}`
const SUFFIX_LEN: usize = SUFFIX_HEAD.len() + HASH_TEXT_LEN + 2;
const TAIL_CHUNK: u64 = 64 << 10;

/// A validated JSON object body to be stored as the fields of one record.
///
/// Holds the serialized object without its braces; it never contains the reserved keys `seq`,
/// `time`, `prev` or `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    body: String,
}

/// A line that passed every check of the record format.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    pub seq: u64,
    pub prev: String,
    pub hash: String,
}

/// Why a line is not a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LineFault {
    /// Not a record at all: not JSON, duplicate keys, missing or mistyped fields.
    Malformed(String),
    /// Well-formed, but the stored hash does not match the bytes.
    Altered(String),
}

/// One line produced by [`LineReader`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct LineInfo {
    /// Index into the reader's file list.
    pub file: usize,
    /// 1-based line number within that file.
    pub number: u64,
    /// The line ended with `\n` (otherwise it is the unterminated end of the file).
    pub terminated: bool,
    /// The line is longer than [`MAX_LINE_BYTES`]; its bytes are cut short.
    pub too_long: bool,
}

/// Reads the lines of several files in order, with a bound on line length.
pub(crate) struct LineReader {
    files: Vec<PathBuf>,
    next_file: usize,
    current: Option<(usize, BufReader<File>)>,
    number: u64,
    buf: Vec<u8>,
}

/// Where the valid part of a file ends.
#[derive(Debug, Clone)]
pub(crate) struct TailScan {
    /// Offset just past the last valid record (0 if there is none).
    pub good_end: u64,
    /// The last valid record.
    pub last: Option<Record>,
    /// What is wrong with the bytes after `good_end`, if there are any.
    pub reason: Option<String>,
}

// === impl Entry ===

impl Entry {
    /// Validates a JSON object and keeps its serialized fields.
    pub fn from_json_object(obj: &Map<String, Value>) -> Result<Entry, AuditError> {
        if let Some(key) = RESERVED_KEYS.iter().find(|k| obj.contains_key(**k)) {
            return Err(AuditError::InvalidEntry(format!(
                "the key {key:?} is reserved for the record itself"
            )));
        }
        let text =
            serde_json::to_string(obj).map_err(|e| AuditError::InvalidEntry(e.to_string()))?;
        // An object always serializes as `{…}`; keep what is between the braces.
        let body = text
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .ok_or_else(|| AuditError::InvalidEntry("did not serialize as an object".into()))?;
        if body.len() > MAX_ENTRY_BYTES {
            return Err(AuditError::InvalidEntry(format!(
                "entry is {} bytes, more than the limit of {MAX_ENTRY_BYTES}",
                body.len()
            )));
        }
        Ok(Entry {
            body: body.to_owned(),
        })
    }

    /// Serializes `value`, which must serialize to a JSON object.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Entry, AuditError> {
        match serde_json::to_value(value) {
            Ok(Value::Object(obj)) => Entry::from_json_object(&obj),
            Ok(other) => Err(AuditError::InvalidEntry(format!(
                "entry must be a JSON object, not {}",
                json_type(&other)
            ))),
            Err(e) => Err(AuditError::InvalidEntry(e.to_string())),
        }
    }

    /// The stored fields: the object's serialization without its braces.
    pub fn fields(&self) -> &str {
        &self.body
    }

    /// Length of [`Entry::fields`] in bytes.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// The entry has no fields.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// === line building ===

/// `sha256:` + lowercase hex of the digest of `bytes`.
pub(crate) fn hash_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(HASH_TEXT_LEN);
    out.push_str(HASH_PREFIX);
    out.push_str(&hex::encode(Sha256::digest(bytes)));
    out
}

/// The record time format: RFC 3339, UTC, microseconds.
pub(crate) fn format_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Appends one complete record line (with `\n`) to `buf` and returns its hash.
pub(crate) fn append_line(
    buf: &mut Vec<u8>,
    seq: u64,
    time: &str,
    prev: &str,
    entry: &Entry,
) -> String {
    let start = buf.len();
    buf.extend_from_slice(b"{\"seq\":");
    buf.extend_from_slice(seq.to_string().as_bytes());
    buf.extend_from_slice(b",\"time\":\"");
    buf.extend_from_slice(time.as_bytes());
    buf.extend_from_slice(b"\",\"prev\":\"");
    buf.extend_from_slice(prev.as_bytes());
    buf.push(b'"');
    if !entry.is_empty() {
        buf.push(b',');
        buf.extend_from_slice(entry.body.as_bytes());
    }
    buf.push(b'}');
    // The hash covers exactly `{…}` as written; then the `}` is replaced by the hash field.
    let hash = hash_bytes(&buf[start..]);
    buf.pop();
    buf.extend_from_slice(SUFFIX_HEAD);
    buf.extend_from_slice(hash.as_bytes());
    buf.extend_from_slice(b"\"}\n");
    hash
}

// === line checking ===

/// Checks one line (without its `\n`) against the record format.
///
/// The hash is checked before the JSON so that any edit of a written record reads as `Altered`
/// even when it also breaks the syntax.
pub(crate) fn parse_line(line: &[u8]) -> Result<Record, LineFault> {
    if line.len() > MAX_LINE_BYTES {
        return Err(LineFault::Malformed(format!(
            "line is longer than {MAX_LINE_BYTES} bytes"
        )));
    }
    let (body, stored) = split_hash(line)?;
    let computed = {
        let mut hasher = Sha256::new();
        hasher.update(body);
        hasher.update(b"}");
        format!("{HASH_PREFIX}{}", hex::encode(hasher.finalize()))
    };
    if computed != stored {
        return Err(LineFault::Altered(format!(
            "stored hash {stored} does not match the record's bytes ({computed})"
        )));
    }
    let value = parse_strict(line).map_err(LineFault::Malformed)?;
    let Value::Object(mut fields) = value else {
        return Err(LineFault::Malformed("not a JSON object".into()));
    };
    let seq = take_field(&mut fields, "seq")?
        .as_u64()
        .ok_or_else(|| bad_field("seq", "an unsigned integer"))?;
    let time = take_str(&mut fields, "time")?;
    if DateTime::parse_from_rfc3339(&time).is_err() {
        return Err(bad_field("time", "an RFC 3339 timestamp"));
    }
    let prev = take_str(&mut fields, "prev")?;
    if !is_hash_text(prev.as_bytes()) {
        return Err(bad_field("prev", "a sha256 hash"));
    }
    take_field(&mut fields, "hash")?;
    Ok(Record {
        seq,
        prev,
        hash: stored.to_owned(),
    })
}

/// Splits `{…,"hash":"H"}` into `{…` and `H`.
fn split_hash(line: &[u8]) -> Result<(&[u8], &str), LineFault> {
    let malformed =
        || LineFault::Malformed("does not end with a `\"hash\":\"sha256:…\"` field".into());
    let split = line.len().checked_sub(SUFFIX_LEN).ok_or_else(malformed)?;
    let (body, suffix) = line.split_at(split);
    let hash = suffix
        .strip_prefix(SUFFIX_HEAD)
        .and_then(|s| s.strip_suffix(b"\"}"))
        .filter(|h| is_hash_text(h))
        .ok_or_else(malformed)?;
    // is_hash_text guarantees ASCII.
    let hash = std::str::from_utf8(hash).map_err(|_| malformed())?;
    Ok((body, hash))
}

fn is_hash_text(text: &[u8]) -> bool {
    text.len() == HASH_TEXT_LEN
        && text.starts_with(HASH_PREFIX.as_bytes())
        && text[HASH_PREFIX.len()..]
            .iter()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn take_field(fields: &mut Map<String, Value>, key: &str) -> Result<Value, LineFault> {
    fields
        .remove(key)
        .ok_or_else(|| LineFault::Malformed(format!("missing field `{key}`")))
}

fn take_str(fields: &mut Map<String, Value>, key: &str) -> Result<String, LineFault> {
    match take_field(fields, key)? {
        Value::String(s) => Ok(s),
        _ => Err(bad_field(key, "a string")),
    }
}

fn bad_field(key: &str, want: &str) -> LineFault {
    LineFault::Malformed(format!("field `{key}` is not {want}"))
}

/// Parses JSON with the same strict rules as Action input (duplicate keys, invalid UTF-8,
/// lone surrogates, numbers that do not fit), with room for the record around the Action.
pub(crate) fn parse_strict(bytes: &[u8]) -> Result<Value, String> {
    crate::input::parse_value_limited(bytes, usize::MAX, crate::input::MAX_DEPTH + 8)
        .map_err(|e| e.to_string())
}

// === impl LineFault ===

impl fmt::Display for LineFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineFault::Malformed(d) | LineFault::Altered(d) => f.write_str(d),
        }
    }
}

// === files ===

/// The rotated segments of `path`, oldest first, with their numbers.
pub(crate) fn segment_paths(path: &Path) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let (dir, name) = split_path(path)?;
    let mut found = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(AuditError::io("list directory", &dir))?;
    for entry in entries {
        let entry = entry.map_err(AuditError::io("list directory", &dir))?;
        let file_name = entry.file_name();
        let Some(number) = file_name
            .to_str()
            .and_then(|n| n.strip_prefix(name.as_str()))
            .and_then(|n| n.strip_prefix('.'))
            .filter(|n| n.len() >= 6 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        found.push((number, entry.path()));
    }
    found.sort();
    Ok(found)
}

/// The name of segment `number` of `path`: `F.NNNNNN`.
pub(crate) fn segment_path(path: &Path, number: u64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{number:06}"));
    PathBuf::from(name)
}

/// Every file of the log in chain order: segments, then the active file if it exists.
pub(crate) fn log_files(path: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let mut files: Vec<PathBuf> = segment_paths(path)?.into_iter().map(|(_, p)| p).collect();
    match std::fs::metadata(path) {
        Ok(_) => files.push(path.to_path_buf()),
        // A crash between rotating and creating the new active file leaves only segments.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !files.is_empty() => {}
        Err(e) => return Err(AuditError::io("open", path)(e)),
    }
    Ok(files)
}

/// The directory holding `path` and the file name.
pub(crate) fn split_path(path: &Path) -> Result<(PathBuf, String), AuditError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            AuditError::InvalidConfig(format!("{} does not name a UTF-8 file", path.display()))
        })?
        .to_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name))
}

// === impl LineReader ===

impl LineReader {
    pub(crate) fn new(files: Vec<PathBuf>) -> Self {
        LineReader {
            files,
            next_file: 0,
            current: None,
            number: 0,
            buf: Vec::new(),
        }
    }

    pub(crate) fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The bytes of the line last returned by [`LineReader::next_line`], without `\n`.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// Reads the next line of the current or a following file.
    pub(crate) fn next_line(&mut self) -> Result<Option<LineInfo>, AuditError> {
        loop {
            let Some((index, reader)) = self.current.as_mut() else {
                if !self.open_next()? {
                    return Ok(None);
                }
                continue;
            };
            self.buf.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            let read = reader
                .by_ref()
                .take(limit)
                .read_until(b'\n', &mut self.buf)
                .map_err(AuditError::io("read", &self.files[*index]))?;
            if read == 0 {
                self.current = None;
                continue;
            }
            self.number += 1;
            let terminated = self.buf.last() == Some(&b'\n');
            if terminated {
                self.buf.pop();
            }
            return Ok(Some(LineInfo {
                file: *index,
                number: self.number,
                terminated,
                too_long: self.buf.len() > MAX_LINE_BYTES,
            }));
        }
    }

    fn open_next(&mut self) -> Result<bool, AuditError> {
        let Some(path) = self.files.get(self.next_file) else {
            return Ok(false);
        };
        let file = File::open(path).map_err(AuditError::io("open", path))?;
        self.current = Some((self.next_file, BufReader::with_capacity(256 << 10, file)));
        self.next_file += 1;
        self.number = 0;
        Ok(true)
    }
}

// === tail scanning ===

/// Finds the last valid record among the first `end` bytes of `file`, reading backwards from
/// `end` in growing chunks, at most [`MAX_TAIL_SCAN`] bytes.
pub(crate) fn scan_tail(file: &File, end: u64, path: &Path) -> Result<TailScan, AuditError> {
    let mut window = TAIL_CHUNK.min(end);
    loop {
        let start = end - window;
        let buf = read_range(file, start, window, path)?;
        if let Some(scan) = scan_window(&buf, start, start == 0) {
            return Ok(scan);
        }
        if window >= MAX_TAIL_SCAN {
            return Err(AuditError::Corrupt {
                file: path.to_path_buf(),
                line: 0,
                reason: format!(
                    "no valid record in the last {window} bytes (from offset {start}); \
                     refusing to truncate, run `audit verify`"
                ),
            });
        }
        window = (window * 4).min(end).min(MAX_TAIL_SCAN);
    }
}

/// Reads exactly `len` bytes at `start`.
pub(crate) fn read_range(
    file: &File,
    start: u64,
    len: u64,
    path: &Path,
) -> Result<Vec<u8>, AuditError> {
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(start))
        .map_err(AuditError::io("seek", path))?;
    let mut buf = Vec::new();
    reader
        .take(len)
        .read_to_end(&mut buf)
        .map_err(AuditError::io("read", path))?;
    if (buf.len() as u64) < len {
        return Err(AuditError::io("read", path)(std::io::Error::from(
            std::io::ErrorKind::UnexpectedEof,
        )));
    }
    Ok(buf)
}

/// Looks for the last valid line in `buf` (which starts at file offset `base`). Returns `None`
/// when the answer depends on bytes before `buf`.
fn scan_window(buf: &[u8], base: u64, at_start: bool) -> Option<TailScan> {
    let mut end = buf.len();
    let mut reason: Option<String> = None;
    if buf.last().is_some_and(|b| *b != b'\n') {
        let start = line_start(buf, end, at_start)?;
        reason = Some(format!(
            "last line ({} bytes at offset {}) has no trailing newline",
            end - start,
            base + start as u64
        ));
        end = start;
    }
    // Invariant: buf[..end] is empty or ends with `\n`.
    while end > 0 {
        let start = line_start(buf, end - 1, at_start)?;
        match parse_line(&buf[start..end - 1]) {
            Ok(record) => {
                return Some(TailScan {
                    good_end: base + end as u64,
                    last: Some(record),
                    reason,
                });
            }
            Err(fault) => {
                reason.get_or_insert_with(|| {
                    format!("line at offset {}: {fault}", base + start as u64)
                });
                end = start;
            }
        }
    }
    Some(TailScan {
        good_end: base,
        last: None,
        reason,
    })
}

/// Start of the line whose content ends at `end`, if it lies within `buf`.
fn line_start(buf: &[u8], end: usize, at_start: bool) -> Option<usize> {
    match buf[..end].iter().rposition(|b| *b == b'\n') {
        Some(i) => Some(i + 1),
        None if at_start => Some(0),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(v: Value) -> Entry {
        Entry::from_serialize(&v).unwrap()
    }

    fn line(seq: u64, prev: &str, e: &Entry) -> (Vec<u8>, String) {
        let mut buf = Vec::new();
        let hash = append_line(&mut buf, seq, "2026-12-01T18:20:00.123456Z", prev, e);
        (buf, hash)
    }

    #[test]
    fn line_has_the_documented_layout_and_hash() {
        let e = entry(json!({"type": "decision", "latency_us": 12}));
        let (buf, hash) = line(1, GENESIS, &e);
        let text = String::from_utf8(buf).unwrap();
        let body = format!(
            "{{\"seq\":1,\"time\":\"2026-12-01T18:20:00.123456Z\",\"prev\":\"{GENESIS}\",\
             \"latency_us\":12,\"type\":\"decision\"}}"
        );
        assert_eq!(hash, hash_bytes(body.as_bytes()));
        let expected = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
        assert_eq!(text, expected);
        let rec = parse_line(text.trim_end().as_bytes()).unwrap();
        assert_eq!(rec.seq, 1);
        assert_eq!(rec.prev, GENESIS);
        assert_eq!(rec.hash, hash);
    }

    #[test]
    fn empty_entry_adds_no_comma() {
        let e = entry(json!({}));
        let (buf, _) = line(3, GENESIS, &e);
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.contains(&format!("\"prev\":\"{GENESIS}\",\"hash\"")),
            "{text}"
        );
        assert_eq!(parse_line(text.trim_end().as_bytes()).unwrap().seq, 3);
    }

    #[test]
    fn entry_rejects_reserved_keys_and_non_objects() {
        for key in RESERVED_KEYS {
            let mut obj = Map::new();
            obj.insert(key.to_owned(), json!(1));
            let err = Entry::from_json_object(&obj).unwrap_err();
            assert!(matches!(err, AuditError::InvalidEntry(_)), "{key}");
        }
        assert!(Entry::from_serialize(&json!([1, 2])).is_err());
        assert!(Entry::from_serialize(&"text").is_err());
        let nested = entry(json!({"action": {"seq": 1, "hash": "x"}}));
        assert_eq!(nested.fields(), r#""action":{"hash":"x","seq":1}"#);
    }

    #[test]
    fn entry_size_is_bounded() {
        let big = "x".repeat(MAX_ENTRY_BYTES);
        let err = Entry::from_serialize(&json!({ "big": big })).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn strict_parse_rejects_duplicates_and_bad_text() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(parse_strict(br#"[{"b":1},{"b":1}]"#).is_ok());
        assert!(parse_strict(b"{\"a\":\"\xff\"}").is_err());
        assert!(parse_strict(br#"{"a":"\ud800"}"#).is_err());
        let v = parse_strict(br#"{"f":0.1,"n":-3,"u":18446744073709551615}"#).unwrap();
        assert_eq!(v, json!({"f": 0.1, "n": -3, "u": u64::MAX}));
    }

    #[test]
    fn duplicate_key_line_with_matching_hash_is_malformed() {
        let body = format!(
            "{{\"seq\":1,\"seq\":2,\"time\":\"2026-12-01T18:20:00.123456Z\",\"prev\":\"{GENESIS}\"}}"
        );
        let hash = hash_bytes(body.as_bytes());
        let text = format!("{},\"hash\":\"{hash}\"}}", &body[..body.len() - 1]);
        let fault = parse_line(text.as_bytes()).unwrap_err();
        assert!(
            matches!(fault, LineFault::Malformed(ref d) if d.contains("duplicate")),
            "{fault:?}"
        );
    }

    #[test]
    fn edits_are_altered_and_garbage_is_malformed() {
        let e = entry(json!({"type": "decision"}));
        let (mut buf, _) = line(1, GENESIS, &e);
        buf.pop();
        let pos = buf.windows(8).position(|w| w == b"decision").unwrap();
        buf[pos] = b'D';
        assert!(matches!(parse_line(&buf), Err(LineFault::Altered(_))));
        assert!(matches!(parse_line(b"hello"), Err(LineFault::Malformed(_))));
        assert!(matches!(parse_line(b""), Err(LineFault::Malformed(_))));
    }

    #[test]
    fn segment_names_are_six_digits_and_sorted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        assert_eq!(segment_path(&path, 1), dir.path().join("audit.log.000001"));
        for name in [
            "audit.log.000010",
            "audit.log.000002",
            "audit.log.12",
            "audit.log.torn-1",
            "other.000001",
        ] {
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        let found: Vec<u64> = segment_paths(&path)
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(found, vec![2, 10]);
    }

    #[test]
    fn scan_window_finds_last_good_line() {
        let e = entry(json!({"k": "v"}));
        let (mut buf, h1) = line(1, GENESIS, &e);
        let (l2, h2) = line(2, &h1, &e);
        buf.extend_from_slice(&l2);
        let good = buf.len();
        let clean = scan_window(&buf, 0, true).unwrap();
        assert_eq!(clean.good_end, good as u64);
        assert_eq!(clean.last.unwrap().hash, h2);
        assert!(clean.reason.is_none());
        buf.extend_from_slice(b"{\"seq\":3,\"ti");
        let torn = scan_window(&buf, 0, true).unwrap();
        assert_eq!(torn.good_end, good as u64);
        assert!(torn.reason.unwrap().contains("no trailing newline"));
        buf.truncate(good);
        buf.extend_from_slice(b"garbage\n");
        let torn = scan_window(&buf, 0, true).unwrap();
        assert_eq!(torn.good_end, good as u64);
        // Without the start of the file, a window holding only garbage needs more bytes.
        assert!(scan_window(b"arbage\n", 100, false).is_none());
        let none = scan_window(b"junk", 0, true).unwrap();
        assert_eq!(none.good_end, 0);
        assert!(none.last.is_none());
    }
}
