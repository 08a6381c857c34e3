//! `portcullis policy test` and `portcullis policy eval`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Value, json};

use super::{Failure, load_config, policy_dir};
use crate::action::Decision;
use crate::audit::{AuditConfig, AuditLog};
use crate::config::Config;
use crate::gate::{Gate, Pending};
use crate::input;
use crate::normalize::Context;
use crate::policy::{Origin, PolicyFiles, PolicySet, testing};

/// How many decisions may wait for durability before output blocks (the pipeline depth).
const MAX_IN_FLIGHT: usize = 4096;
/// Input buffer; larger than stdin's own, so reads bypass that one.
const READ_BUFFER: usize = 64 * 1024;

#[derive(Subcommand, Debug)]
pub enum PolicyCommand {
    /// Run the `test_*` rules of a policy directory (default: the configured or embedded pack).
    Test {
        dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Decide Actions: one JSON document, or JSON lines; one decision per line out.
    Eval {
        #[arg(long)]
        config: Option<PathBuf>,
        /// Policy directory (default: the configured or embedded pack).
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Input file, or `-` for standard input (the default).
        #[arg(long, default_value = "-")]
        input: String,
        /// Also print every rule that fired and the normalized input.
        #[arg(long)]
        explain: bool,
        /// Append each decision to this audit log; a decision is printed once it is durable.
        #[arg(long)]
        audit: Option<PathBuf>,
    },
}

pub fn run(cmd: PolicyCommand) -> Result<ExitCode, Failure> {
    match cmd {
        PolicyCommand::Test { dir, config } => test(dir, config.as_deref()),
        PolicyCommand::Eval {
            config,
            policies,
            input,
            explain,
            audit,
        } => eval(config.as_deref(), policies, &input, explain, audit),
    }
}

/// Load the policy set a command should use.
pub fn load_set(config: &Config, explicit: Option<PathBuf>) -> Result<PolicySet, Failure> {
    let files = match policy_dir(config, explicit) {
        Some(dir) => PolicyFiles::from_dir(&dir)?,
        None => PolicyFiles::embedded(),
    };
    let set = PolicySet::load(
        files,
        &config.policy_data(),
        &config.policy.entrypoint,
        config.policy.timeout,
    )?;
    tracing::info!(policy.digest = %set.digest(), policy.mode = ?set.mode(), "policy loaded");
    Ok(set)
}

pub fn describe_origin(set: &PolicySet) -> String {
    match &set.files().origin {
        Origin::Embedded => "embedded default pack".to_string(),
        Origin::Dir(d) => d.display().to_string(),
    }
}

fn test(dir: Option<PathBuf>, config: Option<&Path>) -> Result<ExitCode, Failure> {
    let config = load_config(config)?;
    let files = match policy_dir(&config, dir) {
        Some(dir) => PolicyFiles::from_dir(&dir)?,
        None => PolicyFiles::embedded(),
    };
    let data = files.data(&config.policy_data())?;
    let report = testing::run(&files, &data)?;
    let mut out = std::io::stdout().lock();
    for r in &report.results {
        let status = if r.passed { "PASS" } else { "FAIL" };
        match &r.error {
            Some(e) => writeln!(out, "{status} {} ({}): {e}", r.name, r.file)?,
            None => writeln!(out, "{status} {} ({})", r.name, r.file)?,
        }
    }
    for u in &report.unexercised {
        writeln!(out, "UNTESTED {}:{}: {}", u.file, u.line, u.head)?;
    }
    writeln!(
        out,
        "{} passed, {} failed",
        report.passed(),
        report.failed()
    )?;
    if report.failed() > 0 || report.results.is_empty() {
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(
    config: Option<&Path>,
    policies: Option<PathBuf>,
    input_path: &str,
    explain: bool,
    audit_path: Option<PathBuf>,
) -> Result<ExitCode, Failure> {
    let config = load_config(config)?;
    let set = load_set(&config, policies)?;
    let audit = match audit_path {
        Some(path) => {
            let cfg = AuditConfig {
                durability: config.audit.durability,
                rotate_bytes: config.audit.rotate_bytes,
                queue_capacity: config.audit.queue_capacity,
                ..AuditConfig::new(path)
            };
            let (log, recovery) = AuditLog::open(cfg)?;
            if let Some(torn) = &recovery.truncated {
                eprintln!(
                    "portcullis: audit log had a torn last record ({} bytes at offset {}: {}); cut it",
                    torn.bytes, torn.offset, torn.reason
                );
            }
            Some(log)
        }
        None => None,
    };
    let ctx = Context {
        roots: config.workspace.roots.clone(),
        resolve_symlinks: config.workspace.resolve_symlinks,
    };
    let gate = Gate::new(ctx, set, audit.clone());
    let source: Box<dyn Read> = if input_path == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        let file =
            std::fs::File::open(input_path).with_context(|| format!("cannot open {input_path}"))?;
        Box::new(file)
    };
    let reader = BufReader::with_capacity(READ_BUFFER, source);
    let result = Evaluator::new(&gate, explain).run(reader);
    if let Some(log) = audit {
        log.close()?;
    }
    result
}

/// Streams Actions through the Gate, printing decisions in input order once durable.
struct Evaluator<'a> {
    gate: &'a Gate,
    explain: bool,
    in_flight: VecDeque<Pending>,
    out: BufWriter<std::io::StdoutLock<'static>>,
}

impl<'a> Evaluator<'a> {
    fn new(gate: &'a Gate, explain: bool) -> Evaluator<'a> {
        Evaluator {
            gate,
            explain,
            in_flight: VecDeque::new(),
            out: BufWriter::new(std::io::stdout().lock()),
        }
    }

    /// One JSON document (possibly spread over lines), or JSON lines. Stops at the first bad
    /// document: everything before it is decided and printed, nothing of it is recorded.
    fn run(mut self, mut reader: BufReader<Box<dyn Read>>) -> Result<ExitCode, Failure> {
        let mut line = Vec::new();
        let mut number = 0usize;
        let mut first = true;
        loop {
            if reader.buffer().is_empty() {
                // The next read may block (a pipe fed line by line): release every decision
                // that is waiting first, so none is held back behind input not yet written.
                self.drain(0)?;
            }
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                break;
            }
            number += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed = input::parse_value(&line);
            let incomplete = matches!(&parsed, Err(input::InputError::Json(e)) if e.is_eof());
            if first && incomplete {
                // Not JSON lines: the whole input is one (pretty-printed) document.
                reader.read_to_end(&mut line)?;
                let value = input::parse_value(&line).context("input")?;
                self.submit(value, 1)?;
                break;
            }
            first = false;
            let value = parsed.with_context(|| format!("input line {number}"));
            match value {
                Ok(v) => self.submit(v, number)?,
                Err(e) => {
                    self.drain(0)?;
                    return Err(e.into());
                }
            }
        }
        self.drain(0)?;
        self.out.flush()?;
        Ok(ExitCode::SUCCESS)
    }

    fn submit(&mut self, value: Value, number: usize) -> Result<(), Failure> {
        let action = input::action_from_value(value);
        let pending = action
            .map_err(crate::gate::GateError::from)
            .and_then(|a| self.gate.decide(a));
        match pending {
            Ok(p) => self.in_flight.push_back(p),
            Err(e) => {
                self.drain(0)?;
                return Err(anyhow::Error::new(e)
                    .context(format!("input line {number}"))
                    .into());
            }
        }
        self.drain(MAX_IN_FLIGHT)
    }

    /// Print finished decisions until at most `keep` are still waiting.
    fn drain(&mut self, keep: usize) -> Result<(), Failure> {
        while self.in_flight.len() > keep {
            let Some(p) = self.in_flight.pop_front() else {
                break;
            };
            let id = p.action.id.clone();
            let secrets = p
                .action
                .content
                .as_ref()
                .is_some_and(|c| !c.findings.is_empty());
            let explained = self.explain.then(|| self.explanation(&p));
            let decision = p.finish();
            self.print(&id, &decision, explained, secrets)?;
        }
        if keep == 0 {
            self.out.flush()?;
        }
        Ok(())
    }

    fn print(
        &mut self,
        id: &str,
        d: &Decision,
        explained: Option<Value>,
        secrets: bool,
    ) -> Result<(), Failure> {
        let mut line = json!({
            "id": id,
            "outcome": d.outcome,
            "reasons": d.reasons,
            "labels": d.labels,
            "redact": d.redact,
            "policy_digest": d.policy_digest,
        });
        if secrets {
            // A rule message may quote the input; the secret stays out of the output.
            crate::normalize::mask_secrets(&mut line);
        }
        if let (Some(e), Value::Object(map)) = (explained, &mut line) {
            map.insert("explain".into(), e);
        }
        serde_json::to_writer(&mut self.out, &line).context("stdout")?;
        self.out.write_all(b"\n")?;
        Ok(())
    }

    /// `<package>.fired` of the entrypoint's package when the set defines it (the default pack
    /// gives every deny, ask, label and redaction, not only the winning outcome's), and the
    /// normalized input the policy saw.
    fn explanation(&self, p: &Pending) -> Value {
        let input = match crate::gate::to_input(&p.action) {
            Ok(input) => input,
            Err(e) => return json!({"error": e}),
        };
        // What is shown goes to a terminal or a file: mask secrets as the audit log does.
        let mut shown = serde_json::to_value(&p.action).unwrap_or(Value::Null);
        crate::normalize::mask_secrets(&mut shown);
        let package = self
            .gate
            .policy()
            .entrypoint()
            .rsplit_once('.')
            .map(|(pkg, _)| pkg.to_string())
            .unwrap_or_default();
        let rules = [format!("{package}.fired")];
        let fired = match self.gate.policy().evaluate_rules(&rules, input) {
            Ok(mut r) => match r.pop() {
                Some(Ok(v)) if v != regorus::Value::Undefined => {
                    serde_json::to_value(&v).unwrap_or(Value::Null)
                }
                Some(Ok(_)) | None => Value::Null,
                Some(Err(e)) => json!({"error": e}),
            },
            Err(e) => json!({"error": e}),
        };
        let mut explained = json!({"fired": fired, "input": shown});
        // Rule messages may quote the input (a command line), so they are masked too.
        crate::normalize::mask_secrets(&mut explained);
        explained
    }
}
