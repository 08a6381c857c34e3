use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::action::Outcome;
use crate::audit::AuditConfig;
use crate::input::action_from_value;
use crate::policy::{Origin, PolicyFiles};

fn allow_all() -> PolicySet {
    let files = PolicyFiles {
        origin: Origin::Embedded,
        modules: vec![(
            "p.rego".into(),
            "package portcullis\nimport rego.v1\ndecision := {\"outcome\": \"allow\"}\n".into(),
        )],
        tests: Vec::new(),
        data_files: Vec::new(),
    };
    PolicySet::load(
        files,
        &json!({}),
        "data.portcullis.decision",
        Duration::from_millis(100),
    )
    .unwrap()
}

fn gate(audit: Option<AuditLog>) -> Gate {
    let ctx = Context {
        roots: vec![PathBuf::from("/ws")],
        resolve_symlinks: false,
    };
    Gate::new(ctx, allow_all(), audit)
}

fn action(id: &str) -> Action {
    action_from_value(
        json!({"id": id, "kind": "file", "via": "decide", "file": {"op": "read", "path": "a"}}),
    )
    .unwrap()
}

fn recorded_ids(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn every_released_decision_has_exactly_one_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (log, _) = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let gate = gate(Some(log.clone()));
    for i in 0..10 {
        let (a, d) = gate.decide_now(action(&format!("a{i}"))).unwrap();
        assert_eq!(d.outcome, Outcome::Allow);
        assert_eq!(a.file.unwrap().canonical, "/ws/a");
    }
    log.close().unwrap();
    let ids = recorded_ids(&path);
    assert_eq!(ids, (0..10).map(|i| format!("a{i}")).collect::<Vec<_>>());
}

#[test]
fn an_unwritable_log_denies_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (log, _) = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let gate = gate(Some(log.clone()));
    assert_eq!(
        gate.decide_now(action("before")).unwrap().1.outcome,
        Outcome::Allow
    );

    // Take the file away and put a directory in its place: writes fail, for root too.
    let aside = dir.path().join("aside.jsonl");
    std::fs::rename(&path, &aside).unwrap();
    std::fs::create_dir(&path).unwrap();
    let (_, d) = gate.decide_now(action("during")).unwrap();
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reasons[0].rule, reason::AUDIT_UNAVAILABLE);

    std::fs::remove_dir(&path).unwrap();
    std::fs::rename(&aside, &path).unwrap();
    assert_eq!(
        gate.decide_now(action("after")).unwrap().1.outcome,
        Outcome::Allow
    );
    log.close().unwrap();
    // The denied action had no durable record, and nothing else is missing or doubled.
    assert_eq!(recorded_ids(&path), vec!["before", "after"]);
    assert!(crate::audit::verify(&path).unwrap().is_ok());
}

#[test]
fn a_closed_log_denies() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(AuditConfig::new(dir.path().join("a.jsonl"))).unwrap();
    let gate = gate(Some(log.clone()));
    log.close().unwrap();
    let (_, d) = gate.decide_now(action("x")).unwrap();
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reasons[0].rule, reason::AUDIT_UNAVAILABLE);
}

#[test]
fn invalid_actions_are_refused_not_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (log, _) = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let gate = gate(Some(log.clone()));
    let bad = action_from_value(
        json!({"kind": "file", "via": "decide", "file": {"op": "read", "path": ""}}),
    )
    .unwrap();
    assert!(gate.decide(bad).is_err());
    log.close().unwrap();
    assert!(recorded_ids(&path).is_empty());
}
