//! Offline verification of a whole log: segments in order, then the active file, as one chain.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::audit::AuditError;
use crate::audit::record::{self, GENESIS, LineFault, LineInfo, LineReader, Record};

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Valid, correctly chained records before the first problem (all of them if none).
    pub records: u64,
    /// The files read, in chain order.
    pub files: Vec<PathBuf>,
    /// `seq` of the last valid record (0 if there is none).
    pub last_seq: u64,
    /// `hash` of the last valid record (the genesis value if there is none).
    pub last_hash: String,
    /// The first problem found, if any; verification stops there.
    pub problem: Option<Problem>,
}

/// The first place where the log stops being a valid chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file holding the offending line.
    pub file: PathBuf,
    /// 1-based line number within `file`.
    pub line: u64,
    /// The offending record's `seq`, when it can be read.
    pub seq: Option<u64>,
    /// What kind of problem.
    pub kind: ProblemKind,
    /// A sentence for people.
    pub detail: String,
}

/// What is wrong at a [`Problem`].
///
/// A line is checked in this order: torn, then hash, then syntax and fields, then its place in
/// the chain. With `E` = previous `seq` + 1:
///
/// | line | kind |
/// |---|---|
/// | last line of a file without `\n` | `TornTail` |
/// | stored hash ≠ sha256 of the bytes | `Altered` |
/// | not a JSON object, duplicate keys, missing or mistyped field, `seq` 0 | `Malformed` |
/// | `seq` = E but `prev` ≠ previous hash | `Altered` (the link is broken: the previous record was replaced, or this one was rewritten with a fresh hash) |
/// | `seq` > E and some `seq` in `E..seq` appears later | `Reordered` |
/// | `seq` > E and none of `E..seq` appears later | `Missing` |
/// | `seq` < E (already seen) | `Duplicated` |
///
/// Every `seq` below `E` has been seen exactly once when a line is checked, so a smaller `seq`
/// is always a repeat; a record that moved is found where the sequence first jumps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProblemKind {
    /// The record's bytes or its link to the previous record were changed.
    Altered,
    /// Records are missing from the sequence.
    Missing,
    /// A `seq` appears a second time.
    Duplicated,
    /// Records are out of order.
    Reordered,
    /// The line is not a record.
    Malformed,
    /// The last line is incomplete (no trailing newline).
    TornTail,
}

/// The chain as verified so far.
struct Chain {
    records: u64,
    last_seq: u64,
    last_hash: String,
}

/// A problem before its location is attached.
struct Finding {
    kind: ProblemKind,
    seq: Option<u64>,
    detail: String,
}

/// Verifies the log at `path` (its segments `path.NNNNNN` in order, then `path`).
///
/// Returns `Err` only when the files cannot be read; problems in their content are reported in
/// [`VerifyReport::problem`]. An empty log is valid.
pub fn verify(path: &Path) -> Result<VerifyReport, AuditError> {
    let files = record::log_files(path)?;
    let mut reader = LineReader::new(files.clone());
    let mut chain = Chain {
        records: 0,
        last_seq: 0,
        last_hash: GENESIS.to_owned(),
    };
    let mut problem = None;
    while let Some(info) = reader.next_line()? {
        match check_line(&chain, &info, reader.bytes()) {
            Ok(rec) => chain.push(rec),
            Err(mut finding) => {
                if finding.kind == ProblemKind::Missing {
                    finding = look_ahead(finding, &chain, &mut reader)?;
                }
                problem = Some(Problem {
                    file: files[info.file].clone(),
                    line: info.number,
                    seq: finding.seq,
                    kind: finding.kind,
                    detail: finding.detail,
                });
                break;
            }
        }
    }
    Ok(VerifyReport {
        records: chain.records,
        files,
        last_seq: chain.last_seq,
        last_hash: chain.last_hash,
        problem,
    })
}

fn check_line(chain: &Chain, info: &LineInfo, bytes: &[u8]) -> Result<Record, Finding> {
    let finding = |kind, detail: String| Finding {
        kind,
        seq: peek_seq(bytes),
        detail,
    };
    if info.too_long {
        return Err(finding(
            ProblemKind::Malformed,
            format!("line is longer than {} bytes", record::MAX_LINE_BYTES),
        ));
    }
    if !info.terminated {
        return Err(finding(
            ProblemKind::TornTail,
            format!("last line ({} bytes) has no trailing newline", bytes.len()),
        ));
    }
    let rec = record::parse_line(bytes).map_err(|fault| match fault {
        LineFault::Altered(d) => finding(ProblemKind::Altered, d),
        LineFault::Malformed(d) => finding(ProblemKind::Malformed, d),
    })?;
    check_link(chain, &rec)?;
    Ok(rec)
}

/// Checks that `rec` is the record that must follow the chain.
fn check_link(chain: &Chain, rec: &Record) -> Result<(), Finding> {
    let seq = rec.seq;
    let expected = chain.last_seq.saturating_add(1);
    let (kind, detail) = if seq == 0 {
        (ProblemKind::Malformed, "seq must be at least 1".to_owned())
    } else if seq < expected {
        let last = chain.last_seq;
        let detail = format!("seq {seq} appears again (the previous record was {last})");
        (ProblemKind::Duplicated, detail)
    } else if seq > expected {
        // Missing unless the skipped records turn up later (see look_ahead).
        let detail = format!(
            "seq {seq} follows {}: records {expected} to {} are missing",
            chain.last_seq,
            seq - 1
        );
        (ProblemKind::Missing, detail)
    } else if rec.prev != chain.last_hash {
        (ProblemKind::Altered, broken_link(chain, rec))
    } else {
        return Ok(());
    };
    Err(Finding {
        kind,
        seq: Some(seq),
        detail,
    })
}

fn broken_link(chain: &Chain, rec: &Record) -> String {
    let what = if chain.records == 0 {
        "the genesis value".to_owned()
    } else {
        format!("the hash of record {}", chain.last_seq)
    };
    format!(
        "prev {} is not {what} ({}): the chain is broken here",
        rec.prev, chain.last_hash
    )
}

/// Decides between `Missing` and `Reordered` by looking for the skipped `seq`s further on.
fn look_ahead(
    finding: Finding,
    chain: &Chain,
    reader: &mut LineReader,
) -> Result<Finding, AuditError> {
    let expected = chain.last_seq + 1;
    let Some(found) = finding.seq else {
        return Ok(finding);
    };
    while let Some(info) = reader.next_line()? {
        let Some(seq) = peek_seq(reader.bytes()) else {
            continue;
        };
        if (expected..found).contains(&seq) {
            let file = reader.files()[info.file].display().to_string();
            return Ok(Finding {
                kind: ProblemKind::Reordered,
                seq: Some(found),
                detail: format!(
                    "seq {found} appears where {expected} was expected; seq {seq} comes later \
                     ({file} line {})",
                    info.number
                ),
            });
        }
    }
    Ok(finding)
}

/// Best-effort `seq` of a line that may not be valid.
fn peek_seq(bytes: &[u8]) -> Option<u64> {
    // The writer always starts a line with `{"seq":`; avoid a full parse for those.
    if let Some(rest) = bytes.strip_prefix(b"{\"seq\":") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(seq) = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse().ok())
        {
            return Some(seq);
        }
    }
    serde_json::from_slice::<serde_json::Value>(bytes)
        .ok()?
        .get("seq")?
        .as_u64()
}

// === impl Chain ===

impl Chain {
    fn push(&mut self, rec: Record) {
        self.records += 1;
        self.last_seq = rec.seq;
        self.last_hash = rec.hash;
    }
}

// === impl VerifyReport ===

impl VerifyReport {
    /// No problem was found.
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

// === impl Problem ===

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} line {}: {}: {}",
            self.file.display(),
            self.line,
            self.kind,
            self.detail
        )
    }
}

// === impl ProblemKind ===

impl ProblemKind {
    /// The stable lower-case name, as printed by `portcullis audit verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProblemKind::Altered => "altered",
            ProblemKind::Missing => "missing",
            ProblemKind::Duplicated => "duplicated",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Malformed => "malformed",
            ProblemKind::TornTail => "torn_tail",
        }
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::*;
    use crate::audit::{AuditConfig, AuditLog, Entry};

    /// Writes `n` records to a fresh log and returns its lines (each with `\n`).
    fn write_log(path: &Path, n: u64) -> Vec<Vec<u8>> {
        let (log, _) = AuditLog::open(AuditConfig::new(path)).unwrap();
        for i in 0..n {
            let entry = Entry::from_serialize(&json!({"type": "decision", "n": i})).unwrap();
            log.submit(entry).unwrap().wait().unwrap();
        }
        log.close().unwrap();
        split_lines(&fs::read(path).unwrap())
    }

    fn split_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
        bytes
            .split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    }

    fn rewrite(path: &Path, lines: &[Vec<u8>]) {
        fs::write(path, lines.concat()).unwrap();
    }

    fn problem(path: &Path) -> Problem {
        verify(path).unwrap().problem.expect("a problem")
    }

    #[test]
    fn clean_log_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        write_log(&path, 5);
        let report = verify(&path).unwrap();
        assert!(report.is_ok(), "{:?}", report.problem);
        assert_eq!(report.records, 5);
        assert_eq!(report.last_seq, 5);
        assert_eq!(report.files, vec![path.clone()]);
        assert!(report.last_hash.starts_with("sha256:"));
    }

    #[test]
    fn empty_file_is_valid_and_missing_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        assert!(matches!(verify(&path), Err(AuditError::Io { .. })));
        fs::write(&path, b"").unwrap();
        let report = verify(&path).unwrap();
        assert!(report.is_ok());
        assert_eq!((report.records, report.last_seq), (0, 0));
        assert_eq!(report.last_hash, GENESIS);
    }

    #[test]
    fn edited_byte_is_altered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut lines = write_log(&path, 5);
        let pos = lines[2].windows(8).position(|w| w == b"decision").unwrap();
        lines[2][pos] = b'D';
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Altered, 3, Some(3)));
        assert_eq!(verify(&path).unwrap().records, 2);
    }

    #[test]
    fn deleted_line_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut lines = write_log(&path, 5);
        lines.remove(2);
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Missing, 3, Some(4)));
    }

    #[test]
    fn duplicated_line_is_duplicated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut lines = write_log(&path, 5);
        let copy = lines[1].clone();
        lines.insert(2, copy);
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!(
            (p.kind, p.line, p.seq),
            (ProblemKind::Duplicated, 3, Some(2))
        );
        // A copy appended at the end is a repeat, too.
        let mut lines = write_log(&dir.path().join("b.log"), 5);
        lines.push(lines[0].clone());
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!(
            (p.kind, p.line, p.seq),
            (ProblemKind::Duplicated, 6, Some(1))
        );
    }

    #[test]
    fn swapped_lines_are_reordered() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut lines = write_log(&path, 5);
        lines.swap(2, 3);
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!(
            (p.kind, p.line, p.seq),
            (ProblemKind::Reordered, 3, Some(4))
        );
        assert!(p.detail.contains("line 4"), "{}", p.detail);
    }

    #[test]
    fn truncated_mid_line_is_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut lines = write_log(&path, 5);
        let half = lines[4].len() / 2;
        lines[4].truncate(half);
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line, p.seq), (ProblemKind::TornTail, 5, Some(5)));
        assert_eq!(verify(&path).unwrap().records, 4);
    }

    #[test]
    fn rehashed_replacement_breaks_the_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let lines = write_log(&path, 3);
        // Forge record 2 with a different entry but a correct hash of its own.
        let rec1 = record::parse_line(lines[0].trim_ascii_end()).unwrap();
        let mut forged = Vec::new();
        let entry = Entry::from_serialize(&json!({"type": "forged"})).unwrap();
        record::append_line(
            &mut forged,
            2,
            "2026-12-01T18:20:00.123456Z",
            &rec1.hash,
            &entry,
        );
        rewrite(&path, &[lines[0].clone(), forged, lines[2].clone()]);
        let p = problem(&path);
        assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Altered, 3, Some(3)));
        assert!(p.detail.contains("chain is broken"), "{}", p.detail);
    }

    #[test]
    fn garbage_and_duplicate_keys_are_malformed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let mut lines = write_log(&path, 3);
        lines.insert(1, b"not json\n".to_vec());
        rewrite(&path, &lines);
        let p = problem(&path);
        assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Malformed, 2, None));

        // `{"seq":2,"seq":2,…}` with a hash computed over exactly those bytes.
        let lines = write_log(&dir.path().join("b.log"), 1);
        let rec1 = record::parse_line(lines[0].trim_ascii_end()).unwrap();
        let body = format!(
            "{{\"seq\":2,\"seq\":2,\"time\":\"2026-12-01T18:20:00.123456Z\",\"prev\":\"{}\"}}",
            rec1.hash
        );
        let hash = record::hash_bytes(body.as_bytes());
        let forged = format!("{},\"hash\":\"{hash}\"}}\n", &body[..body.len() - 1]);
        rewrite(&path, &[lines[0].clone(), forged.into_bytes()]);
        let p = problem(&path);
        assert_eq!((p.kind, p.line), (ProblemKind::Malformed, 2));
        assert!(p.detail.contains("duplicate"), "{}", p.detail);
    }

    #[test]
    fn first_record_must_start_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let lines = write_log(&path, 3);
        rewrite(&path, &lines[1..]);
        let p = problem(&path);
        assert_eq!((p.kind, p.line, p.seq), (ProblemKind::Missing, 1, Some(2)));
    }

    #[test]
    fn problem_displays_file_line_and_kind() {
        let p = Problem {
            file: "/l/a.log".into(),
            line: 3,
            seq: Some(3),
            kind: ProblemKind::TornTail,
            detail: "x".into(),
        };
        assert_eq!(p.to_string(), "/l/a.log line 3: torn_tail: x");
    }
}
