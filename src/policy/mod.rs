//! The policy engine: a directory of Rego modules plus data, compiled once, decided in-process.
//!
//! Load → digest → compile. The compiled path is regorus's RVM: the policy is compiled to
//! bytecode once ([`Program`], shared behind an `Arc`) and each thread keeps its own [`RegoVM`]
//! with that program and the data loaded, so a decision only swaps `input` and runs. Where the
//! RVM compiler cannot take a policy (regorus does not support every construct yet), the set
//! falls back to regorus's interpreter for the whole set and says so at load
//! ([`Mode::Interpreted`]); that is never silent. The default pack's program is compiled at
//! build time (`build.rs`) and only deserialized here, when the files are exactly that pack.
//!
//! Every failure while deciding — a runtime error, a time-limit hit, an undefined result, a
//! result of the wrong shape — is a deny with reason `policy_error`. Nothing here allows by
//! accident. Custom builtins: none are needed so far, because everything hard to do in Rego is
//! computed in `normalize` before evaluation (DESIGN §1).

mod embedded;
pub mod testing;

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::program::{DeserializationResult, Program};
use regorus::rvm::vm::RegoVM;
use regorus::utils::limits::{ExecutionTimerConfig, set_fallback_execution_timer_config};
use regorus::{CompiledPolicy, Engine, Value as RegoValue};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::action::{Decision, Outcome, Reason, Redaction, reason};

/// Instructions one decision may execute before it is cut off (a second bound besides time).
const MAX_INSTRUCTIONS: usize = 2_000_000;

/// Why a policy set could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no .rego files in {0}")]
    Empty(String),
    #[error("{0}")]
    Parse(String),
    #[error("data file {path}: {message}")]
    Data { path: String, message: String },
    #[error("cannot compile entrypoint {entrypoint}: {message}")]
    Compile { entrypoint: String, message: String },
}

/// Where the Rego came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Embedded,
    Dir(PathBuf),
}

/// The files of a policy set, before compilation.
#[derive(Debug, Clone)]
pub struct PolicyFiles {
    pub origin: Origin,
    /// `(name, text)` of every decision module, sorted by name.
    pub modules: Vec<(String, String)>,
    /// `(name, text)` of every `*_test.rego` module, sorted by name.
    pub tests: Vec<(String, String)>,
    /// `(name, text)` of every data file (`.json`, `.yaml`, `.yml`), sorted by name.
    pub data_files: Vec<(String, String)>,
}

/// How decisions are evaluated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// regorus RVM bytecode (the fast path).
    Compiled,
    /// regorus interpreter, because the RVM compiler refused the set; the reason says why.
    Interpreted { reason: String },
}

/// A loaded, compiled policy set. Cheap to share (`Arc` inside); decides from any thread.
#[derive(Clone)]
pub struct PolicySet {
    inner: Arc<Inner>,
}

struct Inner {
    generation: u64,
    digest: String,
    entrypoint: String,
    mode: Mode,
    files: PolicyFiles,
    data: RegoValue,
    timeout: Duration,
    exec: Exec,
}

enum Exec {
    Vm(Arc<Program>),
    Interpreter(CompiledPolicy),
}

/// The shape the entrypoint must produce. Anything else is a `policy_error`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecision {
    outcome: String,
    #[serde(default)]
    reasons: Vec<Reason>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    redact: Vec<Redaction>,
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// One VM per thread, for the set of one generation.
    static VM: RefCell<Option<ThreadVm>> = const { RefCell::new(None) };
}

/// A thread's own copy of a set's program and data, and a VM loaded with them. The copy is
/// deep: values are reference counted, and with one shared program every literal load and data
/// lookup on every thread would count on the same cache lines (measured: `policy eval` on two
/// threads used ~12% more CPU shared). The copy costs ~0.4 ms, once per thread and set.
struct ThreadVm {
    generation: u64,
    program: Arc<Program>,
    data: RegoValue,
    /// None after a run was cut off; rebuilt from the copy above.
    vm: Option<RegoVM>,
}

// === impl PolicyFiles ===

impl PolicyFiles {
    /// The default pack, compiled into the binary.
    pub fn embedded() -> PolicyFiles {
        let mut files = PolicyFiles {
            origin: Origin::Embedded,
            modules: Vec::new(),
            tests: Vec::new(),
            data_files: Vec::new(),
        };
        for (name, text) in embedded::FILES {
            files.add((*name).to_string(), (*text).to_string());
        }
        files.sort();
        files
    }

    /// Every `.rego`, `.json`, `.yaml` and `.yml` file directly in `dir`.
    pub fn from_dir(dir: &Path) -> Result<PolicyFiles, PolicyError> {
        let read_err = |source| PolicyError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut files = PolicyFiles {
            origin: Origin::Dir(dir.to_path_buf()),
            modules: Vec::new(),
            tests: Vec::new(),
            data_files: Vec::new(),
        };
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if !path.is_file() {
                continue;
            }
            let text = std::fs::read_to_string(&path).map_err(|source| PolicyError::Read {
                path: path.clone(),
                source,
            })?;
            files.add(path.display().to_string(), text);
        }
        files.sort();
        if files.modules.is_empty() {
            return Err(PolicyError::Empty(dir.display().to_string()));
        }
        Ok(files)
    }

    fn add(&mut self, name: String, text: String) {
        if name.ends_with("_test.rego") {
            self.tests.push((name, text));
        } else if name.ends_with(".rego") {
            self.modules.push((name, text));
        } else if [".json", ".yaml", ".yml"].iter().any(|e| name.ends_with(e)) {
            self.data_files.push((name, text));
        }
    }

    fn sort(&mut self) {
        self.modules.sort();
        self.tests.sort();
        self.data_files.sort();
    }

    /// Merge every data file and `extra` (the configuration's `data.config`) into one document.
    pub fn data(&self, extra: &serde_json::Value) -> Result<RegoValue, PolicyError> {
        let mut engine = Engine::new();
        for (name, text) in &self.data_files {
            let value = if name.ends_with(".json") {
                crate::input::parse_value(text.as_bytes())
                    .map(RegoValue::from)
                    .map_err(|e| e.to_string())
            } else {
                RegoValue::from_yaml_str(text).map_err(|e| e.to_string())
            };
            let value = value.map_err(|message| PolicyError::Data {
                path: name.clone(),
                message,
            })?;
            engine.add_data(value).map_err(|e| PolicyError::Data {
                path: name.clone(),
                message: e.to_string(),
            })?;
        }
        engine
            .add_data(RegoValue::from(extra.clone()))
            .map_err(|e| PolicyError::Data {
                path: "config".into(),
                message: e.to_string(),
            })?;
        Ok(engine.get_data())
    }

    /// A fresh interpreter engine holding the decision modules, and the tests when asked.
    pub fn engine(&self, data: &RegoValue, with_tests: bool) -> Result<Engine, PolicyError> {
        let mut engine = Engine::new();
        engine.set_rego_v0(false);
        engine.set_strict_builtin_errors(true);
        let tests = if with_tests { &self.tests[..] } else { &[] };
        for (name, text) in self.modules.iter().chain(tests) {
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| PolicyError::Parse(e.to_string()))?;
        }
        engine
            .add_data(data.clone())
            .map_err(|e| PolicyError::Data {
                path: "merged data".into(),
                message: e.to_string(),
            })?;
        Ok(engine)
    }
}

// === impl PolicySet ===

impl PolicySet {
    /// Load, digest and compile. `extra_data` is the configuration's part of `data`.
    pub fn load(
        files: PolicyFiles,
        extra_data: &serde_json::Value,
        entrypoint: &str,
        timeout: Duration,
    ) -> Result<PolicySet, PolicyError> {
        let data = files.data(extra_data)?;
        let digest = digest(&files, &data);
        let (exec, mode) = match precompiled(&files, entrypoint) {
            Some(program) => (Exec::Vm(program), Mode::Compiled),
            None => compile(&files, &data, entrypoint)?,
        };
        Ok(PolicySet {
            inner: Arc::new(Inner {
                generation: GENERATION.fetch_add(1, Ordering::Relaxed),
                digest,
                entrypoint: entrypoint.to_string(),
                mode,
                files,
                data,
                timeout,
                exec,
            }),
        })
    }

    /// The same set, forced onto the interpreter (benchmarks and differential tests).
    pub fn interpreted(&self) -> Result<PolicySet, PolicyError> {
        let mut engine = self.inner.files.engine(&self.inner.data, false)?;
        let compiled = engine
            .compile_with_entrypoint(&self.inner.entrypoint.as_str().into())
            .map_err(|e| PolicyError::Compile {
                entrypoint: self.inner.entrypoint.clone(),
                message: e.to_string(),
            })?;
        Ok(PolicySet {
            inner: Arc::new(Inner {
                generation: GENERATION.fetch_add(1, Ordering::Relaxed),
                digest: self.inner.digest.clone(),
                entrypoint: self.inner.entrypoint.clone(),
                mode: Mode::Interpreted {
                    reason: "forced".into(),
                },
                files: self.inner.files.clone(),
                data: self.inner.data.clone(),
                timeout: self.inner.timeout,
                exec: Exec::Interpreter(compiled),
            }),
        })
    }

    pub fn entrypoint(&self) -> &str {
        &self.inner.entrypoint
    }

    /// Evaluate other rules of the set with the interpreter, for `--explain`. Not the
    /// decision path: it parses the set again on every call.
    pub fn evaluate_rules(
        &self,
        rules: &[String],
        input: RegoValue,
    ) -> Result<Vec<Result<RegoValue, String>>, String> {
        let mut engine = self
            .inner
            .files
            .engine(&self.inner.data, false)
            .map_err(|e| e.to_string())?;
        engine.set_input(input);
        let mut out = Vec::with_capacity(rules.len());
        for rule in rules {
            let result = engine
                .eval_query(rule.clone(), false)
                .map_err(|e| e.to_string());
            out.push(result.map(|r| {
                r.result
                    .into_iter()
                    .next()
                    .and_then(|q| q.expressions.into_iter().next())
                    .map(|e| e.value)
                    .unwrap_or(RegoValue::Undefined)
            }));
        }
        Ok(out)
    }

    pub fn digest(&self) -> &str {
        &self.inner.digest
    }

    pub fn mode(&self) -> &Mode {
        &self.inner.mode
    }

    pub fn files(&self) -> &PolicyFiles {
        &self.inner.files
    }

    pub fn data(&self) -> &RegoValue {
        &self.inner.data
    }

    /// Decide one input. Never fails: every error is a deny with reason `policy_error`.
    pub fn decide(&self, input: RegoValue) -> Decision {
        match self.evaluate(input) {
            Ok(value) => self.to_decision(&value),
            Err(message) => self.policy_error(message),
        }
    }

    /// Evaluate the entrypoint and return the raw result (for `--explain`).
    pub fn evaluate(&self, input: RegoValue) -> Result<RegoValue, String> {
        match &self.inner.exec {
            Exec::Vm(program) => self.run_vm(program, input),
            Exec::Interpreter(compiled) => self.run_interpreter(compiled, input),
        }
    }

    fn run_vm(&self, program: &Arc<Program>, input: RegoValue) -> Result<RegoValue, String> {
        VM.with(|cell| {
            let mut slot = cell.borrow_mut();
            let thread = match &mut *slot {
                Some(t) if t.generation == self.inner.generation => t,
                stale => stale.insert(self.thread_copy(program)),
            };
            let vm = match &mut thread.vm {
                Some(vm) => vm,
                none => none.insert(self.new_vm(thread.program.clone(), thread.data.clone())?),
            };
            vm.set_input(input);
            let result = vm.execute().map_err(|e| e.to_string());
            // Drop the input now rather than holding it until the next decision.
            vm.set_input(RegoValue::Null);
            if result.is_err() {
                // A VM cut off mid-run (time or instruction limit) is not reused.
                thread.vm = None;
            }
            result
        })
    }

    /// This thread's deep copy of the program (through its binary form) and of the data
    /// (through JSON, which is what it was loaded from). Where a copy cannot be made the shared
    /// one is used: slower, never different.
    fn thread_copy(&self, program: &Arc<Program>) -> ThreadVm {
        let copy = match program
            .serialize_binary()
            .map(|b| Program::deserialize_binary(&b))
        {
            Ok(Ok(DeserializationResult::Complete(p))) => Arc::new(p),
            _ => {
                tracing::warn!("the compiled policy cannot be copied per thread; sharing it");
                program.clone()
            }
        };
        let data = match self
            .inner
            .data
            .to_json_str()
            .map(|j| RegoValue::from_json_str(&j))
        {
            Ok(Ok(data)) => data,
            _ => {
                tracing::warn!("the policy data cannot be copied per thread; sharing it");
                self.inner.data.clone()
            }
        };
        ThreadVm {
            generation: self.inner.generation,
            program: copy,
            data,
            vm: None,
        }
    }

    fn new_vm(&self, program: Arc<Program>, data: RegoValue) -> Result<RegoVM, String> {
        let mut vm = RegoVM::new();
        vm.load_program(program);
        vm.set_data(data).map_err(|e| e.to_string())?;
        vm.set_max_instructions(MAX_INSTRUCTIONS);
        vm.set_strict_builtin_errors(true);
        vm.set_execution_timer_config(Some(self.timer()));
        Ok(vm)
    }

    fn run_interpreter(
        &self,
        compiled: &CompiledPolicy,
        input: RegoValue,
    ) -> Result<RegoValue, String> {
        // A CompiledPolicy builds a fresh engine per call, and that engine takes its time limit
        // from the process-wide fallback, so set it each time (a set's timeout may differ).
        set_fallback_execution_timer_config(Some(self.timer()));
        compiled.eval_with_input(input).map_err(|e| e.to_string())
    }

    fn timer(&self) -> ExecutionTimerConfig {
        ExecutionTimerConfig {
            limit: self.inner.timeout,
            check_interval: NonZeroU32::MIN.saturating_add(63),
        }
    }

    fn to_decision(&self, value: &RegoValue) -> Decision {
        if *value == RegoValue::Undefined {
            return self.policy_error(format!("{} is undefined", self.inner.entrypoint));
        }
        let raw: RawDecision = match serde_json::to_value(value).and_then(serde_json::from_value) {
            Ok(raw) => raw,
            Err(e) => {
                return self.policy_error(format!(
                    "{} has the wrong shape: {e}",
                    self.inner.entrypoint
                ));
            }
        };
        let Some(outcome) = Outcome::parse(&raw.outcome) else {
            return self.policy_error(format!(
                "outcome {:?} is not allow, ask or deny",
                raw.outcome
            ));
        };
        if outcome != Outcome::Allow && raw.reasons.is_empty() {
            return self.policy_error(format!("a {outcome} decision must carry a reason"));
        }
        Decision {
            outcome,
            reasons: raw.reasons,
            labels: raw.labels,
            redact: raw.redact,
            policy_digest: self.inner.digest.clone(),
        }
    }

    fn policy_error(&self, message: String) -> Decision {
        tracing::warn!(policy.error = %message, "policy error; denying");
        Decision::deny(reason::POLICY_ERROR, message, &self.inner.digest)
    }
}

/// Parse and compile `files`: RVM bytecode where regorus can, else the interpreter.
fn compile(
    files: &PolicyFiles,
    data: &RegoValue,
    entrypoint: &str,
) -> Result<(Exec, Mode), PolicyError> {
    let mut engine = files.engine(data, false)?;
    let compiled = engine
        .compile_with_entrypoint(&entrypoint.into())
        .map_err(|e| PolicyError::Compile {
            entrypoint: entrypoint.to_string(),
            message: e.to_string(),
        })?;
    Ok(
        match Compiler::compile_from_policy(&compiled, &[entrypoint]) {
            Ok(program) => (Exec::Vm(program), Mode::Compiled),
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(policy.reason = %reason, "RVM cannot compile the policy set; using the interpreter");
                (Exec::Interpreter(compiled), Mode::Interpreted { reason })
            }
        },
    )
}

/// The program `build.rs` compiled from the default pack, when `files` hold exactly that
/// pack's modules and data files and `entrypoint` is the one it was compiled for. The bytecode
/// does not depend on `data` (the VM is given it at run time), so the configuration's part of
/// `data` (all under `data.config`) may differ.
fn precompiled(files: &PolicyFiles, entrypoint: &str) -> Option<Arc<Program>> {
    if embedded::PROGRAM.is_empty() || entrypoint != embedded::PROGRAM_ENTRYPOINT {
        return None;
    }
    let pack = PolicyFiles::embedded();
    if files.modules != pack.modules || files.data_files != pack.data_files {
        return None;
    }
    match Program::deserialize_binary(embedded::PROGRAM) {
        Ok(DeserializationResult::Complete(program)) => Some(Arc::new(program)),
        Ok(DeserializationResult::Partial(_)) => {
            tracing::warn!("the precompiled default pack is incomplete; compiling it");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "the precompiled default pack cannot be read; compiling it");
            None
        }
    }
}

/// sha256 over every module and data file (name and bytes) and the merged data.
fn digest(files: &PolicyFiles, data: &RegoValue) -> String {
    let mut h = Sha256::new();
    for (name, text) in files.modules.iter().chain(&files.data_files) {
        let short = Path::new(name)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
        let short = short.unwrap_or_else(|| name.clone());
        h.update((short.len() as u64).to_le_bytes());
        h.update(short.as_bytes());
        h.update((text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
    }
    // Values print with sorted keys, so the same data always hashes the same.
    h.update(data.to_string().as_bytes());
    format!("sha256:{}", hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests;
