//! `portcullis audit verify | query | replay`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Failure, load_config, policy};
use crate::audit::{self, Filter};
use crate::gate::to_input;
use crate::input;

#[derive(Subcommand, Debug)]
pub enum AuditCommand {
    /// Check the hash chain; report the first altered, missing, duplicated or reordered
    /// record, or a torn last line. Exit 1 when the log does not verify.
    Verify { file: PathBuf },
    /// Print the records that match every filter given, as JSON lines.
    Query {
        file: PathBuf,
        #[arg(long)]
        agent: Option<String>,
        #[arg(long)]
        session: Option<String>,
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        outcome: Option<String>,
        #[arg(long)]
        rule: Option<String>,
        /// RFC 3339 time, inclusive.
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// RFC 3339 time, exclusive.
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Re-decide every recorded Action with another policy set; print those whose outcome
    /// would change.
    Replay {
        file: PathBuf,
        #[arg(long)]
        policies: PathBuf,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn run(cmd: AuditCommand) -> Result<ExitCode, Failure> {
    match cmd {
        AuditCommand::Verify { file } => verify(&file),
        AuditCommand::Query {
            file,
            agent,
            session,
            kind,
            outcome,
            rule,
            since,
            until,
            limit,
        } => {
            let filter = Filter {
                agent,
                session,
                kind,
                outcome,
                rule,
                since,
                until,
                limit,
            };
            query(&file, &filter)
        }
        AuditCommand::Replay {
            file,
            policies,
            config,
        } => replay(&file, policies, config.as_deref()),
    }
}

fn verify(file: &Path) -> Result<ExitCode, Failure> {
    let report = audit::verify(file)?;
    match &report.problem {
        None => {
            println!(
                "ok: {} records in {} file(s), last seq {}, last hash {}",
                report.records,
                report.files.len(),
                report.last_seq,
                report.last_hash
            );
            Ok(ExitCode::SUCCESS)
        }
        Some(p) => {
            println!("{p}");
            Ok(ExitCode::from(1))
        }
    }
}

fn query(file: &Path, filter: &Filter) -> Result<ExitCode, Failure> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    audit::query(file, filter, &mut |record| {
        serde_json::to_writer(&mut out, record).map_err(std::io::Error::other)?;
        out.write_all(b"\n")
    })?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn replay(file: &Path, policies: PathBuf, config: Option<&Path>) -> Result<ExitCode, Failure> {
    let config = load_config(config)?;
    let set = policy::load_set(&config, Some(policies))?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut changed = 0u64;
    let mut total = 0u64;
    let everything = Filter::default();
    audit::query(file, &everything, &mut |record| {
        if record.get("type").and_then(Value::as_str) != Some("decision") {
            return Ok(());
        }
        total += 1;
        let line = replay_one(&set, record).map_err(std::io::Error::other)?;
        if let Some(line) = line {
            changed += 1;
            serde_json::to_writer(&mut out, &line).map_err(std::io::Error::other)?;
            out.write_all(b"\n")?;
        }
        Ok(())
    })
    .with_context(|| format!("replaying {}", file.display()))?;
    out.flush()?;
    eprintln!("replayed {total} decisions: {changed} would change");
    Ok(ExitCode::SUCCESS)
}

/// Re-decide the recorded (already normalized) Action; `Some` when the outcome changes. The
/// action is not normalized again: the file system may have changed since, and the record is
/// what was decided.
fn replay_one(set: &crate::policy::PolicySet, record: &Value) -> Result<Option<Value>, String> {
    let seq = record.get("seq").cloned().unwrap_or(Value::Null);
    let action = record
        .get("action")
        .cloned()
        .ok_or("record has no action")?;
    let old = record
        .pointer("/decision/outcome")
        .and_then(Value::as_str)
        .ok_or("record has no decision.outcome")?
        .to_string();
    let action = input::action_from_value(action).map_err(|e| format!("record {seq}: {e}"))?;
    let decision = set.decide(to_input(&action).map_err(|e| format!("record {seq}: {e}"))?);
    if decision.outcome.as_str() == old {
        return Ok(None);
    }
    Ok(Some(json!({
        "seq": seq,
        "id": action.id,
        "kind": action.kind,
        "old": old,
        "new": decision.outcome,
        "reasons": decision.reasons,
        "policy_digest": decision.policy_digest,
    })))
}
