//! Filtering records of a log: segments in order, then the active file.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::audit::AuditError;
use crate::audit::record::{self, LineReader};

/// Which records [`query`] returns. Every set field must match; an unset field matches all.
///
/// A record that lacks the field a filter looks at does not match that filter.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// `action.agent.id` equals this.
    pub agent: Option<String>,
    /// `action.session.id` equals this.
    pub session: Option<String>,
    /// `action.kind` equals this.
    pub kind: Option<String>,
    /// `decision.outcome` equals this.
    pub outcome: Option<String>,
    /// Some element of `decision.reasons` has `rule` equal to this.
    pub rule: Option<String>,
    /// `time` is at or after this.
    pub since: Option<DateTime<Utc>>,
    /// `time` is before this.
    pub until: Option<DateTime<Utc>>,
    /// Stop after this many matches.
    pub limit: Option<u64>,
}

/// Calls `out` with every record of the log at `path` that matches `filter`, in log order, and
/// returns how many matched.
///
/// Records are parsed strictly (duplicate keys are an error) but their hashes are not checked:
/// that is [`crate::audit::verify`]'s job. An unterminated last line of the active file is
/// skipped, since a live writer may be in the middle of appending it; any other line that is not
/// a JSON object is [`AuditError::Corrupt`].
pub fn query(
    path: &Path,
    filter: &Filter,
    out: &mut dyn FnMut(&Value) -> std::io::Result<()>,
) -> Result<u64, AuditError> {
    let mut count = 0;
    if filter.limit == Some(0) {
        return Ok(count);
    }
    let mut reader = LineReader::new(record::log_files(path)?);
    while let Some(info) = reader.next_line()? {
        let file = &reader.files()[info.file];
        let corrupt = |reason: String| AuditError::Corrupt {
            file: file.clone(),
            line: info.number,
            reason,
        };
        let last_file = info.file + 1 == reader.files().len();
        if info.too_long {
            return Err(corrupt(format!(
                "line is longer than {} bytes",
                record::MAX_LINE_BYTES
            )));
        }
        if !info.terminated {
            if last_file {
                break;
            }
            return Err(corrupt("line has no trailing newline".into()));
        }
        let value = record::parse_strict(reader.bytes()).map_err(corrupt)?;
        if !value.is_object() {
            return Err(corrupt("not a JSON object".into()));
        }
        if filter.matches(&value) {
            out(&value).map_err(|e| AuditError::Output(Arc::new(e)))?;
            count += 1;
            if filter.limit.is_some_and(|limit| count >= limit) {
                break;
            }
        }
    }
    Ok(count)
}

// === impl Filter ===

impl Filter {
    /// Whether `record` (a whole record object) passes every set field of the filter.
    pub fn matches(&self, record: &Value) -> bool {
        equals(record, "/action/agent/id", &self.agent)
            && equals(record, "/action/session/id", &self.session)
            && equals(record, "/action/kind", &self.kind)
            && equals(record, "/decision/outcome", &self.outcome)
            && self.matches_rule(record)
            && self.matches_time(record)
    }

    fn matches_rule(&self, record: &Value) -> bool {
        let Some(rule) = &self.rule else {
            return true;
        };
        record
            .pointer("/decision/reasons")
            .and_then(Value::as_array)
            .is_some_and(|reasons| {
                reasons
                    .iter()
                    .any(|r| r.get("rule").and_then(Value::as_str) == Some(rule))
            })
    }

    fn matches_time(&self, record: &Value) -> bool {
        if self.since.is_none() && self.until.is_none() {
            return true;
        }
        let Some(time) = record
            .get("time")
            .and_then(Value::as_str)
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc))
        else {
            return false;
        };
        self.since.is_none_or(|since| time >= since) && self.until.is_none_or(|until| time < until)
    }
}

fn equals(record: &Value, pointer: &str, want: &Option<String>) -> bool {
    match want {
        None => true,
        Some(want) => record.pointer(pointer).and_then(Value::as_str) == Some(want.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use serde_json::json;

    use super::*;
    use crate::audit::{AuditConfig, AuditLog, Entry};

    fn decision(agent: &str, session: &str, kind: &str, outcome: &str, rules: &[&str]) -> Value {
        let reasons: Vec<Value> = rules
            .iter()
            .map(|r| json!({"rule": r, "message": "m"}))
            .collect();
        json!({
            "type": "decision",
            "action": {"kind": kind, "agent": {"id": agent}, "session": {"id": session}},
            "decision": {"outcome": outcome, "reasons": reasons},
        })
    }

    fn write(path: &Path, entries: &[Value], rotate: Option<u64>) {
        let mut cfg = AuditConfig::new(path);
        cfg.rotate_bytes = rotate;
        let (log, _) = AuditLog::open(cfg).unwrap();
        for e in entries {
            log.submit(Entry::from_serialize(e).unwrap())
                .unwrap()
                .wait()
                .unwrap();
        }
        log.close().unwrap();
    }

    fn run(path: &Path, filter: &Filter) -> Vec<u64> {
        let mut seqs = Vec::new();
        let n = query(path, filter, &mut |v| {
            seqs.push(v["seq"].as_u64().unwrap());
            Ok(())
        })
        .unwrap();
        assert_eq!(n, seqs.len() as u64);
        seqs
    }

    fn sample(path: &Path, rotate: Option<u64>) {
        let entries = [
            decision("a", "s1", "tool_call", "allow", &[]),
            decision(
                "b",
                "s2",
                "file",
                "deny",
                &["files.write_outside_workspace"],
            ),
            decision("a", "s2", "exec", "deny", &["exec.rm_rf", "policy_error"]),
            json!({"type": "approval", "approver": "alice"}),
            decision("a", "s1", "tool_call", "ask", &["ask.human"]),
        ];
        write(path, &entries, rotate);
    }

    #[test]
    fn filters_match_the_documented_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        sample(&path, None);
        let by = |f: Filter| run(&path, &f);
        assert_eq!(by(Filter::default()), vec![1, 2, 3, 4, 5]);
        assert_eq!(
            by(Filter {
                agent: Some("a".into()),
                ..Filter::default()
            }),
            vec![1, 3, 5]
        );
        assert_eq!(
            by(Filter {
                session: Some("s2".into()),
                ..Filter::default()
            }),
            vec![2, 3]
        );
        assert_eq!(
            by(Filter {
                kind: Some("tool_call".into()),
                ..Filter::default()
            }),
            vec![1, 5]
        );
        assert_eq!(
            by(Filter {
                outcome: Some("deny".into()),
                ..Filter::default()
            }),
            vec![2, 3]
        );
        assert_eq!(
            by(Filter {
                rule: Some("policy_error".into()),
                ..Filter::default()
            }),
            vec![3]
        );
    }

    #[test]
    fn filters_combine_and_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        sample(&path, None);
        let by = |f: Filter| run(&path, &f);
        let both = Filter {
            agent: Some("a".into()),
            outcome: Some("deny".into()),
            ..Filter::default()
        };
        assert_eq!(by(both), vec![3]);
        assert_eq!(
            by(Filter {
                limit: Some(2),
                ..Filter::default()
            }),
            vec![1, 2]
        );
        assert_eq!(
            by(Filter {
                limit: Some(0),
                ..Filter::default()
            }),
            Vec::<u64>::new()
        );
    }

    #[test]
    fn time_window_is_since_inclusive_until_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        sample(&path, None);
        let mut times = Vec::new();
        query(&path, &Filter::default(), &mut |v| {
            let t = DateTime::parse_from_rfc3339(v["time"].as_str().unwrap()).unwrap();
            times.push(t.with_timezone(&Utc));
            Ok(())
        })
        .unwrap();
        let since = Filter {
            since: Some(times[2]),
            ..Filter::default()
        };
        assert!(run(&path, &since).contains(&3));
        let until = Filter {
            until: Some(times[0]),
            ..Filter::default()
        };
        assert!(run(&path, &until).is_empty());
        let record = json!({"seq": 1});
        assert!(
            !since.matches(&record),
            "a record without time never matches a window"
        );
    }

    #[test]
    fn reads_segments_then_active_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        sample(&path, Some(300));
        assert!(dir.path().join("a.log.000001").exists());
        assert_eq!(run(&path, &Filter::default()), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn unterminated_last_line_is_skipped_and_garbage_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        sample(&path, None);
        let mut bytes = fs::read(&path).unwrap();
        bytes.extend_from_slice(b"{\"seq\":6,\"ti");
        fs::write(&path, &bytes).unwrap();
        assert_eq!(run(&path, &Filter::default()).len(), 5);
        bytes.extend_from_slice(b"\n");
        fs::write(&path, &bytes).unwrap();
        let err = query(&path, &Filter::default(), &mut |_| Ok(())).unwrap_err();
        assert!(matches!(err, AuditError::Corrupt { line: 6, .. }), "{err}");
    }

    #[test]
    fn output_errors_stop_the_query() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        sample(&path, None);
        let err = query(&path, &Filter::default(), &mut |_| {
            Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        })
        .unwrap_err();
        assert!(matches!(err, AuditError::Output(_)));
    }
}
