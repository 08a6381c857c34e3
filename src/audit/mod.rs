//! The audit log: one record per decided action, append-only, hash-chained and durable.
//!
//! The request path only enqueues ([`AuditLog::submit`]); a single writer thread owns the file,
//! makes records durable in batches (group commit with `fdatasync`) and only then acknowledges
//! them through a [`Receipt`]. [`verify`] checks a log offline and reports the first broken,
//! missing, duplicated, reordered, altered or torn record; [`query`] filters records.
//!
//! This module knows nothing about HTTP or the Action types: callers hand it an [`Entry`], an
//! already-serialized JSON object whose fields are stored as they are.
//!
//! # Record format
//!
//! This is a public interface: tools outside portcullis read and verify it.
//!
//! One line per record, UTF-8, `\n`-terminated:
//!
//! ```text
//! {"seq":S,"time":"T","prev":"P",<entry fields>,"hash":"H"}
//! ```
//!
//! * `seq`: u64, starting at 1, +1 per record, continuing across rotated files.
//! * `time`: RFC 3339 UTC with microseconds, e.g. `2026-12-01T18:20:00.123456Z`, taken by the
//!   writer when it formats the record.
//! * `prev`: the previous record's `hash`; for the very first record `sha256:` followed by 64
//!   zeros.
//! * `<entry fields>`: the inner bytes of the JSON object the caller supplied, e.g.
//!   `"type":"decision","action":{…},"decision":{…},"policy_digest":"sha256:…","latency_us":12`.
//!   The entry may not contain the keys `seq`, `time`, `prev` or `hash`. An empty entry adds no
//!   fields (and no comma).
//! * `hash` = `sha256:` + lowercase hex(sha256(B)), where B is the line's exact bytes with the
//!   trailing `,"hash":"H"}` replaced by `}`, i.e. `{"seq":S,"time":"T","prev":"P",<entry
//!   fields>}`. Hashing exact bytes rather than a re-serialization makes verification
//!   independent of JSON formatting. `hash` is always the last field.
//!
//! A line must also be a JSON object without duplicate keys (at any depth); a line such as
//! `{"seq":1,"seq":2,…}` never verifies, even with a matching hash.
//!
//! # Files
//!
//! The active file is `F` (the configured path). With rotation, a full `F` is renamed to
//! `F.000001`, `F.000002`, … (the next number, at least six digits) and a new empty `F` starts;
//! the chain continues (the first record of the new `F` has `prev` = the last hash of the
//! newest segment). Readers take the segments in numeric order, then `F`, as one chain.
//!
//! # Durability and failure
//!
//! * [`Durability::Durable`] (default): a receipt resolves `Ok(seq)` only after the batch that
//!   holds the record was written and `fdatasync`ed and the configured path still names the
//!   file that was written. [`Durability::Buffered`] acknowledges after the write; records
//!   survive a killed process but not a power loss.
//! * A record may exist without its receipt having resolved (crash between `fdatasync` and the
//!   acknowledgement, or a receipt that was dropped); the converse — an acknowledged record that
//!   is not in the file — never happens.
//! * A failed write, `fdatasync` or identity check fails every receipt of that batch with
//!   [`AuditError::Unavailable`]. Their sequence numbers are not used, the file is truncated
//!   back to the end of the last acknowledged record and the handle is dropped. The writer is
//!   then in a failed state ([`AuditStats::failed`]). `submit` keeps enqueueing (the receipts
//!   fail fast while the cause persists); before each batch the writer reopens the file and
//!   resumes only if it still ends with the last acknowledged record. The first batch that is
//!   durable again clears the failed state. There is no timer and no retry loop: recovery is
//!   driven by traffic.
//! * On open, a torn tail left by a crash (a last line without `\n`, or trailing lines that do
//!   not parse or whose hash does not match) is logged, copied to `F.torn-<offset>-<unix
//!   seconds>` and truncated away; [`Recovery::truncated`] reports it. Only the tail is read, at
//!   most 32 MiB of it; if no valid record is found there, opening fails with
//!   [`AuditError::Corrupt`] rather than truncating more.
//!
//! A hash chain without an external anchor cannot show that records were removed from the end
//! (or that a whole log was rewritten with fresh hashes). Keep the last `seq` and `hash` that
//! [`verify`] reports somewhere else if that matters.

mod query;
mod record;
mod verify;
mod writer;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

pub use query::{Filter, query};
pub use record::Entry;
pub use verify::{Problem, ProblemKind, VerifyReport, verify};
pub use writer::{AuditLog, AuditStats, Receipt};

/// Everything that can go wrong in the audit log.
///
/// Cloneable so that one batch failure can be reported to every receipt of the batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// A file-system operation failed.
    #[error("audit log: cannot {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "open", "fdatasync".
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: Arc<io::Error>,
    },
    /// Another writer holds the exclusive lock on the log file.
    #[error("audit log {path} is locked by another writer")]
    Locked {
        /// The log file.
        path: PathBuf,
    },
    /// The submission queue is full; the record was not accepted.
    #[error("audit queue is full")]
    QueueFull,
    /// The log cannot be written right now; the record was not written.
    #[error("audit log unavailable: {reason}")]
    Unavailable {
        /// Why, including the underlying error.
        reason: String,
    },
    /// The log was closed.
    #[error("audit log is closed")]
    Closed,
    /// The entry cannot be stored.
    #[error("invalid audit entry: {0}")]
    InvalidEntry(String),
    /// The configuration cannot work.
    #[error("invalid audit configuration: {0}")]
    InvalidConfig(String),
    /// A file holds something that is not a valid record where one was required.
    #[error("audit log {file} line {line}: {reason}")]
    Corrupt {
        /// The file.
        file: PathBuf,
        /// 1-based line number, or 0 when the position is a byte range (see `reason`).
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The output callback of [`query`] failed.
    #[error("audit query: cannot write output: {0}")]
    Output(#[source] Arc<io::Error>),
}

/// When a record counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Acknowledge after `fdatasync`: an acknowledged record survives a crash or power loss.
    #[default]
    Durable,
    /// Acknowledge after `write`: survives a killed process, not a power loss.
    Buffered,
}

/// How to open an [`AuditLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditConfig {
    /// The active log file. Its directory must exist; the file is created (mode 0600) if missing.
    pub path: PathBuf,
    /// When a record is acknowledged.
    pub durability: Durability,
    /// Records that may wait for the writer; a full queue fails `submit` with `QueueFull`.
    pub queue_capacity: usize,
    /// Most records written and synced together in one batch.
    pub max_batch: usize,
    /// Rotate the active file once it reaches this size, if set.
    pub rotate_bytes: Option<u64>,
}

/// What [`AuditLog::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The last record in the log (0 for an empty log); the next record gets `last_seq + 1`.
    pub last_seq: u64,
    /// The torn tail that was cut off, if any.
    pub truncated: Option<TornTail>,
}

/// Bytes after the last valid record that were removed on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where the removed bytes began (the new file length).
    pub offset: u64,
    /// How many bytes were removed.
    pub bytes: u64,
    /// What was wrong with them.
    pub reason: String,
    /// Where a copy of the removed bytes was kept, if it could be written.
    pub saved_to: Option<PathBuf>,
}

// === impl AuditError ===

impl AuditError {
    /// Builds a closure that wraps an `io::Error` with what was done to which path.
    pub(crate) fn io(op: &'static str, path: &std::path::Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| AuditError::Io {
            op,
            path,
            source: Arc::new(source),
        }
    }
}

// === impl AuditConfig ===

impl AuditConfig {
    /// Default queue capacity.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 65536;
    /// Default batch size.
    pub const DEFAULT_MAX_BATCH: usize = 4096;

    /// A durable configuration with default queue and batch sizes and no rotation.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        AuditConfig {
            path: path.into(),
            durability: Durability::Durable,
            queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
            max_batch: Self::DEFAULT_MAX_BATCH,
            rotate_bytes: None,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), AuditError> {
        if self.queue_capacity == 0 {
            // A zero-capacity sync_channel is a rendezvous: try_send would fail almost always.
            return Err(AuditError::InvalidConfig(
                "queue_capacity must be at least 1".into(),
            ));
        }
        if self.max_batch == 0 {
            return Err(AuditError::InvalidConfig(
                "max_batch must be at least 1".into(),
            ));
        }
        if self.rotate_bytes == Some(0) {
            return Err(AuditError::InvalidConfig(
                "rotate_bytes must be at least 1".into(),
            ));
        }
        if self.path.file_name().is_none() {
            return Err(AuditError::InvalidConfig(format!(
                "path {} does not name a file",
                self.path.display()
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_rejects_zero_sizes() {
        let mut cfg = AuditConfig::new("/tmp/x.log");
        assert!(cfg.validate().is_ok());
        cfg.queue_capacity = 0;
        assert!(matches!(cfg.validate(), Err(AuditError::InvalidConfig(_))));
        let mut cfg = AuditConfig::new("/tmp/x.log");
        cfg.max_batch = 0;
        assert!(cfg.validate().is_err());
        let mut cfg = AuditConfig::new("/tmp/x.log");
        cfg.rotate_bytes = Some(0);
        assert!(cfg.validate().is_err());
        assert!(AuditConfig::new("/").validate().is_err());
    }

    #[test]
    fn errors_say_what_and_where() {
        let err = AuditError::io("open", std::path::Path::new("/var/log/a.log"))(io::Error::from(
            io::ErrorKind::NotFound,
        ));
        let text = err.to_string();
        assert!(text.contains("open"), "{text}");
        assert!(text.contains("/var/log/a.log"), "{text}");
        let err = AuditError::Corrupt {
            file: "/x/a.log".into(),
            line: 7,
            reason: "not a JSON object".into(),
        };
        assert_eq!(
            err.to_string(),
            "audit log /x/a.log line 7: not a JSON object"
        );
    }
}
