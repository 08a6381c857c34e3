//! `portcullis policy test`: run the `test_*` rules of every `*_test.rego` module and report
//! which `deny`/`ask` rules no test made fire.
//!
//! Test rules are found by name: a line of a `*_test.rego` file that starts with `test_` at
//! column 0 is a test rule (the convention the pack follows; `opa fmt` writes rules there). The
//! report of rules no test exercised comes from regorus coverage: every partial set rule (a
//! line `name contains …` at column 0: where `deny` and `ask` reasons and the sets they are
//! grouped from are defined) counts as exercised when some test evaluated its head line, which
//! regorus marks when the rule produced a value. A rule written on one line counts as
//! exercised as soon as its body was evaluated.
//!
//! Test rules run on the interpreter only: regorus's RVM compiler rejects `with`, and tests are
//! built on it. A set that runs compiled is therefore checked for parity too: every literal
//! input a test gives (`with input as {…}`, with the `data.config` the same line gives, a
//! literal or a value of the test's package) is decided on both paths, and the decisions must
//! be equal. Inputs built from variables are counted as skipped.

use std::collections::BTreeSet;

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::time::Duration;

use regorus::Value as RegoValue;

use super::{Mode, PolicyError, PolicyFiles, PolicySet};
use crate::action::Decision;

/// One test's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestResult {
    /// `data.<package>.<rule>`
    pub name: String,
    pub file: String,
    pub passed: bool,
    /// Why it failed, when evaluation itself failed.
    pub error: Option<String>,
}

/// A partial set rule head (`deny contains …`, `write_denials contains …`) no test exercised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unexercised {
    pub file: String,
    pub line: u32,
    pub head: String,
}

/// Whether the compiled path decides the tests' inputs as the interpreter does.
#[derive(Debug, Clone, PartialEq)]
pub enum Parity {
    /// The set runs on the interpreter: there is no compiled path to compare.
    Interpreted { reason: String },
    Checked {
        checked: usize,
        /// Inputs (or their configuration) that are not literals.
        skipped: usize,
        disagreements: Vec<Disagreement>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    pub file: String,
    pub input: String,
    pub compiled: Decision,
    pub interpreted: Decision,
}

/// Everything `policy test` prints.
#[derive(Debug, Clone, Default)]
pub struct TestReport {
    pub results: Vec<TestResult>,
    pub unexercised: Vec<Unexercised>,
}

// === impl TestReport ===

impl TestReport {
    pub fn failed(&self) -> usize {
        self.results.iter().filter(|r| !r.passed).count()
    }

    pub fn passed(&self) -> usize {
        self.results.len() - self.failed()
    }
}

/// Run every test rule against the decision modules and `data`.
pub fn run(files: &PolicyFiles, data: &RegoValue) -> Result<TestReport, PolicyError> {
    let mut engine = files.engine(data, true)?;
    engine.set_enable_coverage(true);
    let mut report = TestReport::default();
    for (file, text) in &files.tests {
        for name in test_rules(text) {
            let result = engine.eval_rule(name.clone());
            let (passed, error) = match result {
                Ok(RegoValue::Bool(true)) => (true, None),
                Ok(RegoValue::Undefined) => (false, None),
                Ok(other) => (false, Some(format!("evaluated to {other}, not true"))),
                Err(e) => (false, Some(e.to_string())),
            };
            report.results.push(TestResult {
                name,
                file: file.clone(),
                passed,
                error,
            });
        }
    }
    let coverage = engine
        .get_coverage_report()
        .map_err(|e| PolicyError::Parse(e.to_string()))?;
    for (file, text) in &files.modules {
        let covered: BTreeSet<u32> = coverage
            .files
            .iter()
            .filter(|f| f.path == *file)
            .flat_map(|f| f.covered.iter().copied())
            .collect();
        for (line, head) in decision_heads(text) {
            if !covered.contains(&line) {
                report.unexercised.push(Unexercised {
                    file: file.clone(),
                    line,
                    head,
                });
            }
        }
    }
    Ok(report)
}

/// Decide every literal input of the tests on the compiled path and on the interpreter.
/// `extra_data` is the configuration's part of `data`; a test's `data.config` replaces its
/// `config`.
pub fn parity(
    files: &PolicyFiles,
    extra_data: &serde_json::Value,
    entrypoint: &str,
    timeout: Duration,
) -> Result<Parity, PolicyError> {
    let load = |extra: &serde_json::Value| {
        PolicySet::load(files.clone(), extra, entrypoint, timeout)
            .and_then(|set| set.interpreted().map(|interp| (set, interp)))
    };
    let base = load(extra_data)?;
    if let Mode::Interpreted { reason } = base.0.mode() {
        return Ok(Parity::Interpreted {
            reason: reason.clone(),
        });
    }
    let mut engine = files.engine(&files.data(extra_data)?, true)?;
    let mut sets = BTreeMap::from([(extra_data.to_string(), base)]);
    let (mut checked, mut skipped, mut disagreements) = (0, 0, Vec::new());
    for (file, text) in &files.tests {
        let package = package_of(text).unwrap_or_default();
        for (literal, config) in test_inputs(text) {
            // `with data.config as c` replaces `data.config`; a name is a value of the test's
            // package (a variable local to the test is not, and its input is skipped).
            let extra = match config.as_deref() {
                None => Some(extra_data.clone()),
                Some(c) if c.starts_with('{') => serde_json::from_str(c).ok(),
                Some(name) => engine
                    .eval_rule(format!("data.{package}.{name}"))
                    .ok()
                    .and_then(|v| serde_json::to_value(&v).ok()),
            };
            let extra = match (&config, extra) {
                (Some(_), Some(c)) => Some(with_config(extra_data, c)),
                (_, extra) => extra,
            };
            let parsed = serde_json::from_str::<serde_json::Value>(&literal);
            let (Some(extra), Ok(input)) = (extra, parsed) else {
                skipped += 1;
                continue;
            };
            let (set, interp) = match sets.entry(extra.to_string()) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(load(&extra)?),
            };
            let input = RegoValue::from(input);
            let compiled = set.decide(input.clone());
            let interpreted = interp.decide(input);
            if compiled != interpreted {
                disagreements.push(Disagreement {
                    file: file.clone(),
                    input: literal,
                    compiled,
                    interpreted,
                });
            }
            checked += 1;
        }
    }
    Ok(Parity::Checked {
        checked,
        skipped,
        disagreements,
    })
}

/// The `input` of every `with input as …` in a test module, a `{…}` literal or a name, with the
/// `data.config` the same line gives it, likewise (or none).
pub(super) fn test_inputs(text: &str) -> Vec<(String, Option<String>)> {
    const WITH: &str = "with input as ";
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find(WITH).map(|i| from + i + WITH.len()) {
        let end = at + literal_end(&text[at..]).unwrap_or_else(|| ident_len(&text[at..]));
        let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[end..].find('\n').map_or(text.len(), |i| end + i);
        let config = text[line_start..line_end]
            .split("with data.config as ")
            .nth(1)
            .map(|rest| rest[..literal_end(rest).unwrap_or_else(|| ident_len(rest))].to_string());
        out.push((text[at..end].to_string(), config));
        from = end;
    }
    out
}

/// Where the `{…}` literal at the start of `s` ends, minding strings; None when `s` does not
/// start with one or it does not close.
fn literal_end(s: &str) -> Option<usize> {
    if !s.starts_with('{') {
        return None;
    }
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    for (i, c) in s.char_indices() {
        match (in_str, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => in_str = false,
            (true, false, _) => {}
            (false, _, '"') => in_str = true,
            (false, _, '{' | '[') => depth += 1,
            (false, _, '}' | ']') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
    }
    None
}

/// `extra_data` with its `config` replaced.
fn with_config(extra_data: &serde_json::Value, config: serde_json::Value) -> serde_json::Value {
    let mut extra = extra_data.clone();
    match extra.as_object_mut() {
        Some(o) => {
            o.insert("config".into(), config);
        }
        None => extra = serde_json::json!({ "config": config }),
    }
    extra
}

fn ident_len(s: &str) -> usize {
    s.bytes()
        .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_')
        .count()
}

fn package_of(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("package "))
        .map(|p| p.trim().to_string())
}

/// `data.<package>.<rule>` for every test rule of one module.
fn test_rules(text: &str) -> Vec<String> {
    let Some(package) = package_of(text) else {
        return Vec::new();
    };
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("test_") else {
            continue;
        };
        let ident: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if seen.insert(ident.clone()) {
            out.push(format!("data.{package}.test_{ident}"));
        }
    }
    out
}

/// `(line, head)` of every partial set rule of one module.
fn decision_heads(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| is_set_rule_head(l))
        .map(|(i, l)| {
            (
                u32::try_from(i + 1).unwrap_or(u32::MAX),
                l.trim_end().to_string(),
            )
        })
        .collect()
}

fn is_set_rule_head(line: &str) -> bool {
    let name_len = line
        .bytes()
        .take_while(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        .count();
    name_len > 0 && line[name_len..].starts_with(" contains ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_test_rules_once_each() {
        let text = "package p_test\n\ntest_a if { true }\ntest_a if { 1 == 1 }\n  test_nested if { true }\ntest_b := true\n";
        assert_eq!(
            test_rules(text),
            vec!["data.p_test.test_a", "data.p_test.test_b"]
        );
    }

    #[test]
    fn finds_decision_heads() {
        let text = "package p\ndeny contains r if {\n}\nask contains r if { x }\nlabels contains l if { y }\n  x contains 1\nx := {1}\n# a contains b\n";
        let heads: Vec<u32> = decision_heads(text).into_iter().map(|(l, _)| l).collect();
        assert_eq!(heads, vec![2, 4, 5]);
    }
}
