//! `portcullis policy test` and `portcullis policy eval`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Mutex, mpsc};

use anyhow::Context as _;
use clap::Subcommand;
use serde::Serialize;
use serde_json::{Value, json};

use super::{Failure, load_config, policy_dir};
use crate::action::{Action, Decision, Outcome, Reason, Redaction};
use crate::audit::{AuditConfig, AuditLog};
use crate::config::Config;
use crate::gate::{Gate, Pending};
use crate::input;
use crate::normalize::Context;
use crate::policy::{Origin, PolicyFiles, PolicySet, testing};

/// How many decisions may wait for durability before output blocks (the pipeline depth).
const MAX_IN_FLIGHT: usize = 4096;
/// Lines per batch handed to a worker: enough to make the hand-off cheap, few enough that a
/// short input still spreads over every worker.
const BATCH: usize = 64;
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
        /// Threads that evaluate (default: one per CPU). Output and audit order are the
        /// input's whatever the number.
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=256))]
        jobs: Option<u16>,
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
            jobs,
        } => eval(
            config.as_deref(),
            policies,
            &input,
            explain,
            audit,
            jobs.map(usize::from),
        ),
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
    let extra = config.policy_data();
    let data = files.data(&extra)?;
    let report = testing::run(&files, &data)?;
    let parity = testing::parity(
        &files,
        &extra,
        &config.policy.entrypoint,
        config.policy.timeout,
    )?;
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
    let disagree = match &parity {
        testing::Parity::Interpreted { reason } => {
            writeln!(
                out,
                "PARITY not checked: the set runs on the interpreter ({reason})"
            )?;
            0
        }
        testing::Parity::Checked {
            checked,
            skipped,
            disagreements,
        } => {
            for d in disagreements {
                writeln!(
                    out,
                    "PARITY-FAIL {}: the compiled path decides {} as {}, the interpreter as {}",
                    d.file,
                    d.input,
                    serde_json::to_string(&d.compiled)?,
                    serde_json::to_string(&d.interpreted)?
                )?;
            }
            writeln!(
                out,
                "PARITY {} of {checked} test inputs decided alike on the compiled path and the interpreter ({skipped} not literal, skipped)",
                checked - disagreements.len()
            )?;
            disagreements.len()
        }
    };
    writeln!(
        out,
        "{} passed, {} failed",
        report.passed(),
        report.failed()
    )?;
    if report.failed() > 0 || report.results.is_empty() || disagree > 0 {
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
    jobs: Option<usize>,
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
    let workers = jobs.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let result = Evaluator::new(&gate, explain).run(reader, workers);
    if let Some(log) = audit {
        log.close()?;
    }
    result
}

/// A run of input lines handed to one worker: one buffer, no allocation per line.
#[derive(Default)]
struct Batch {
    text: Vec<u8>,
    /// Input line number and where the line is in `text`.
    lines: Vec<(usize, std::ops::Range<usize>)>,
}

/// What a worker made of one line: decided but not yet recorded, or why it cannot be.
type Evaluated = Result<Evaluation, anyhow::Error>;

/// One line decided on a worker, with its `--explain` output (worked out there too).
struct Evaluation {
    decided: crate::gate::Decided,
    explained: Option<Value>,
}

/// A batch on its way through a worker; its results come back on `reply`.
struct Job {
    batch: Batch,
    reply: mpsc::SyncSender<Vec<Evaluated>>,
}

/// Streams Actions through the Gate, printing decisions in input order once durable.
///
/// Parsing, normalization and evaluation touch nothing shared, so they run on worker threads
/// (a compiled program per thread); the main thread reads, then records and prints results in
/// input order, so the audit log and the output are the same as for a single thread. A bad
/// line stops the stream: lines after it may have been evaluated, but none is recorded.
struct Evaluator<'a> {
    gate: &'a Gate,
    explain: bool,
    /// Batches sent to workers, oldest first; their results are recorded in this order.
    batches: VecDeque<mpsc::Receiver<Vec<Evaluated>>>,
    /// Recorded decisions waiting for durability, oldest first.
    in_flight: VecDeque<(Pending, Option<Value>)>,
    out: BufWriter<std::io::StdoutLock<'static>>,
}

impl<'a> Evaluator<'a> {
    fn new(gate: &'a Gate, explain: bool) -> Evaluator<'a> {
        Evaluator {
            gate,
            explain,
            batches: VecDeque::new(),
            in_flight: VecDeque::new(),
            out: BufWriter::new(std::io::stdout().lock()),
        }
    }

    /// One JSON document (possibly spread over lines), or JSON lines. Stops at the first bad
    /// document: everything before it is decided and printed, nothing of it is recorded.
    fn run(
        mut self,
        mut reader: BufReader<Box<dyn Read>>,
        workers: usize,
    ) -> Result<ExitCode, Failure> {
        let mut line = Vec::new();
        let mut number = 0usize;
        // The first document decides the mode.
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return self.finish();
            }
            number += 1;
            if !line.iter().all(u8::is_ascii_whitespace) {
                break;
            }
        }
        match input::parse_value(&line) {
            Err(input::InputError::Json(e)) if e.is_eof() => {
                // Not JSON lines: the whole input is one (pretty-printed) document.
                reader.read_to_end(&mut line)?;
                let value = input::parse_value(&line).context("input")?;
                let decided = evaluate_value(self.gate, self.explain, value, 1);
                self.record(vec![decided])?;
                return self.finish();
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)
                    .context(format!("input line {number}"))
                    .into());
            }
            Ok(_) => {}
        }
        let (jobs, queue) = mpsc::sync_channel::<Job>(workers * 2);
        let queue = Mutex::new(queue);
        let (gate, explain) = (self.gate, self.explain);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| work(gate, explain, &queue));
            }
            let mut batch = Batch::default();
            batch.text.extend_from_slice(&line);
            batch.lines.push((number, 0..line.len()));
            let result = self.stream(&mut reader, &jobs, batch, number);
            drop(jobs); // the workers end once the queue is empty
            result
        })?;
        self.finish()
    }

    /// Read lines into batches for the workers, recording what comes back, until the input
    /// ends or a line is bad.
    fn stream(
        &mut self,
        reader: &mut BufReader<Box<dyn Read>>,
        jobs: &mpsc::SyncSender<Job>,
        mut batch: Batch,
        mut number: usize,
    ) -> Result<(), Failure> {
        let max_batches = MAX_IN_FLIGHT / BATCH;
        loop {
            if reader.buffer().is_empty() {
                // The next read may block (a pipe fed line by line): release every decision
                // that is waiting first, so none is held back behind input not yet written.
                self.send(jobs, std::mem::take(&mut batch))?;
                self.collect(0)?;
                self.drain(0)?;
            }
            let at = batch.text.len();
            if reader.read_until(b'\n', &mut batch.text)? == 0 {
                break;
            }
            number += 1;
            if batch.text[at..].iter().all(u8::is_ascii_whitespace) {
                batch.text.truncate(at);
                continue;
            }
            batch.lines.push((number, at..batch.text.len()));
            if batch.lines.len() == BATCH {
                self.send(jobs, std::mem::take(&mut batch))?;
                self.collect(max_batches)?;
            }
        }
        self.send(jobs, batch)?;
        self.collect(0)
    }

    fn send(&mut self, jobs: &mpsc::SyncSender<Job>, batch: Batch) -> Result<(), Failure> {
        if batch.lines.is_empty() {
            return Ok(());
        }
        let (reply, results) = mpsc::sync_channel(1);
        jobs.send(Job { batch, reply })
            .map_err(|_| anyhow::anyhow!("the evaluation workers stopped"))?;
        self.batches.push_back(results);
        Ok(())
    }

    /// Record the results of the oldest batches until at most `keep` are outstanding.
    fn collect(&mut self, keep: usize) -> Result<(), Failure> {
        while self.batches.len() > keep {
            let Some(results) = self.batches.pop_front() else {
                break;
            };
            // A worker that panicked drops its reply: that is an error, never a skipped batch.
            let results = results
                .recv()
                .map_err(|_| anyhow::anyhow!("an evaluation worker failed"))?;
            self.record(results)?;
        }
        Ok(())
    }

    /// Record results in order; at the first bad one, release what came before and stop.
    fn record(&mut self, results: Vec<Evaluated>) -> Result<(), Failure> {
        for r in results {
            match r {
                Ok(d) => {
                    let pending = self.gate.record_decided(d.decided);
                    self.in_flight.push_back((pending, d.explained));
                    self.drain(MAX_IN_FLIGHT)?;
                }
                Err(e) => {
                    self.drain(0)?;
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<ExitCode, Failure> {
        self.drain(0)?;
        self.out.flush()?;
        Ok(ExitCode::SUCCESS)
    }

    /// Print finished decisions until at most `keep` are still waiting.
    fn drain(&mut self, keep: usize) -> Result<(), Failure> {
        while self.in_flight.len() > keep {
            let Some((p, explained)) = self.in_flight.pop_front() else {
                break;
            };
            let id = p.action.id.clone();
            let secrets = p
                .action
                .content
                .as_ref()
                .is_some_and(|c| !c.findings.is_empty());
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
        let line = Printed {
            id,
            labels: &d.labels,
            outcome: d.outcome,
            policy_digest: &d.policy_digest,
            reasons: &d.reasons,
            redact: &d.redact,
            explain: explained,
        };
        if secrets {
            // A rule message may quote the input; the secret stays out of the output.
            let mut value = serde_json::to_value(&line).context("output")?;
            crate::normalize::mask_secrets(&mut value);
            serde_json::to_writer(&mut self.out, &value).context("stdout")?;
        } else {
            serde_json::to_writer(&mut self.out, &line).context("stdout")?;
        }
        self.out.write_all(b"\n")?;
        Ok(())
    }
}

/// One output line (keys in the order `serde_json::Value` would print them).
#[derive(Serialize)]
struct Printed<'a> {
    id: &'a str,
    labels: &'a [String],
    outcome: Outcome,
    policy_digest: &'a str,
    reasons: &'a [Reason],
    redact: &'a [Redaction],
    #[serde(skip_serializing_if = "Option::is_none")]
    explain: Option<Value>,
}

/// A worker: take batches until the queue closes, evaluate every line, reply in order.
fn work(gate: &Gate, explain: bool, queue: &Mutex<mpsc::Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(q) => q.recv(),
            Err(_) => return,
        };
        let Ok(Job { batch, reply }) = job else {
            return;
        };
        let mut results = Vec::with_capacity(batch.lines.len());
        for (number, range) in batch.lines {
            // A panic would leave the reader waiting on this worker (with one worker, forever):
            // it is this line's error instead, which stops the stream there.
            let decided = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let value = input::parse_value(&batch.text[range])
                    .with_context(|| format!("input line {number}"))?;
                evaluate_value(gate, explain, value, number)
            }))
            .unwrap_or_else(|_| {
                Err(anyhow::anyhow!(
                    "input line {number}: evaluation failed unexpectedly (a bug; see above)"
                ))
            });
            // Nothing after a bad line is recorded: stop evaluating there.
            let bad = decided.is_err();
            results.push(decided);
            if bad {
                break;
            }
        }
        // The reader has stopped waiting (an earlier batch was bad): nothing to do.
        let _ = reply.send(results);
    }
}

/// Normalize and decide one parsed document, without recording it.
fn evaluate_value(gate: &Gate, explain: bool, value: Value, number: usize) -> Evaluated {
    let decided = input::action_from_value(value)
        .map_err(crate::gate::GateError::from)
        .and_then(|a| gate.decide_unrecorded(a))
        .map_err(|e| anyhow::Error::new(e).context(format!("input line {number}")))?;
    let explained = explain.then(|| explanation(gate, decided.action()));
    Ok(Evaluation { decided, explained })
}

/// `<package>.fired` of the entrypoint's package when the set defines it (the default pack
/// gives every deny, ask, label and redaction, not only the winning outcome's), and the
/// normalized input the policy saw.
fn explanation(gate: &Gate, action: &Action) -> Value {
    let input = match crate::gate::to_input(action) {
        Ok(input) => input,
        Err(e) => return json!({"error": e}),
    };
    // What is shown goes to a terminal or a file: mask secrets as the audit log does.
    let mut shown = serde_json::to_value(action).unwrap_or(Value::Null);
    crate::normalize::mask_secrets(&mut shown);
    let package = gate
        .policy()
        .entrypoint()
        .rsplit_once('.')
        .map(|(pkg, _)| pkg.to_string())
        .unwrap_or_default();
    let rules = [format!("{package}.fired")];
    let fired = match gate.policy().evaluate_rules(&rules, input) {
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
