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

use std::collections::BTreeSet;

use regorus::Value as RegoValue;

use super::{PolicyError, PolicyFiles};

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

/// `data.<package>.<rule>` for every test rule of one module.
fn test_rules(text: &str) -> Vec<String> {
    let package = text
        .lines()
        .find_map(|l| l.strip_prefix("package "))
        .map(|p| p.trim().to_string());
    let Some(package) = package else {
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
