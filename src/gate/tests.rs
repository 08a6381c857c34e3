use std::path::PathBuf;
use std::time::Duration;

use serde_json::json;

use std::sync::Arc;

use super::*;
use crate::action::Outcome;
use crate::audit::AuditConfig;
use crate::gate::state::StateStore;
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
fn a_buffered_record_releases_without_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut cfg = AuditConfig::new(&path);
    cfg.durability = crate::audit::Durability::Buffered;
    let (log, _) = AuditLog::open(cfg).unwrap();
    let gate = gate(Some(log.clone()));
    let v = (gate.decide(action("b1")).unwrap().try_release().ok())
        .expect("a buffered record is written before decide returns");
    assert_eq!(v.decision.outcome, Outcome::Allow);
    // No log at all: nothing to wait for either.
    let v = (self::gate(None)
        .decide(action("n1"))
        .unwrap()
        .try_release()
        .ok())
    .expect("without an audit log there is nothing to wait for");
    assert_eq!(v.decision.outcome, Outcome::Allow);

    // A log that fails: the verdict is known at once, and it is a deny.
    log.close().unwrap();
    let v = (gate.decide(action("b2")).unwrap().try_release().ok())
        .expect("a closed log's refusal is known at once");
    assert_eq!(v.decision.outcome, Outcome::Deny);
    assert_eq!(v.decision.reasons[0].rule, reason::AUDIT_UNAVAILABLE);
    assert_eq!(recorded_ids(&path), vec!["b1"]);
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

// === the service path ===

fn ask_on_exec() -> PolicySet {
    let files = PolicyFiles {
        origin: Origin::Embedded,
        modules: vec![(
            "p.rego".into(),
            r#"package portcullis
import rego.v1
default decision := {"outcome": "allow"}
decision := {"outcome": "ask", "reasons": [{"rule": "t.exec", "message": "exec needs a human"}], "labels": ["ran_exec"]} if input.exec
decision := {"outcome": "deny", "reasons": [{"rule": "t.tainted", "message": "tainted"}]} if "ran_exec" in input.session.labels
"#
            .into(),
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

fn service(audit: Option<AuditLog>, toml: &str) -> (Gate, Arc<dyn StateStore>) {
    let config = crate::config::Config::parse(toml, std::path::Path::new("/c.toml")).unwrap();
    let state: Arc<dyn StateStore> = Arc::new(state::InMemory::new(&config));
    let ctx = Context {
        roots: vec![PathBuf::from("/ws")],
        resolve_symlinks: false,
    };
    let gate =
        Gate::new(ctx, ask_on_exec(), audit).with_state(state.clone(), Arc::new(Metrics::new()));
    (gate, state)
}

fn caller(id: &str) -> Caller {
    Caller {
        agent: crate::action::Agent {
            id: id.into(),
            labels: Default::default(),
            authenticated: true,
        },
        default_session: "d".into(),
    }
}

fn exec_action() -> Action {
    action_from_value(json!({"kind": "exec", "via": "decide", "exec": {"command": "ls"}})).unwrap()
}

#[test]
fn the_service_path_sets_agent_and_session_and_refuses_them_from_callers() {
    let (gate, _) = service(None, "");
    let mut a = action("x");
    a.agent = Some(caller("root").agent);
    assert!(matches!(
        gate.decide_for(&caller("bot"), "s", a),
        Err(GateError::Reserved("agent"))
    ));
    let mut a = action("x");
    a.session = Some(crate::action::Session::default());
    assert!(matches!(
        gate.decide_for(&caller("bot"), "s", a),
        Err(GateError::Reserved("session"))
    ));
    let p = gate.decide_for(&caller("bot"), "s", action("x")).unwrap();
    assert_eq!(p.action.agent.as_ref().unwrap().id, "bot");
    assert_eq!(p.action.session.as_ref().unwrap().id, "s");
    assert_eq!(p.finish().outcome, Outcome::Allow);
    // The next action in the session sees the count.
    let p = gate.decide_for(&caller("bot"), "s", action("y")).unwrap();
    assert_eq!(p.action.session.as_ref().unwrap().counts["file"], 1);
}

#[test]
fn rate_limits_and_budgets_deny_before_policy() {
    let (gate, state) = service(
        None,
        "[[limits]]\nname = \"two\"\nkind = \"file\"\nrate = 2\nper = \"hour\"\n\n[[budgets]]\ntokens = 100\nper = \"day\"\n",
    );
    for _ in 0..2 {
        assert_eq!(
            gate.decide_for(&caller("bot"), "s", action("x"))
                .unwrap()
                .finish()
                .outcome,
            Outcome::Allow
        );
    }
    let d = gate
        .decide_for(&caller("bot"), "s", action("x"))
        .unwrap()
        .finish();
    assert_eq!(
        (d.outcome, d.reasons[0].rule.as_str()),
        (Outcome::Deny, reason::RATE_LIMITED)
    );
    assert!(
        d.reasons[0].message.contains("\"two\""),
        "{}",
        d.reasons[0].message
    );
    // A model response reports usage; once the budget is spent, model requests are denied.
    let model = |kind: &str, tokens: u64| {
        action_from_value(json!({"kind": kind, "via": "decide",
            "model": {"provider": "openai", "name": "m", "usage": {"input_tokens": tokens, "output_tokens": 0}}}))
        .unwrap()
    };
    assert_eq!(
        gate.decide_for(&caller("bot"), "s", model("model_request", 0))
            .unwrap()
            .finish()
            .outcome,
        Outcome::Allow
    );
    gate.decide_for(&caller("bot"), "s", model("model_response", 150))
        .unwrap()
        .finish();
    let d = gate
        .decide_for(&caller("bot"), "s", model("model_request", 0))
        .unwrap()
        .finish();
    assert_eq!(
        (d.outcome, d.reasons[0].rule.as_str()),
        (Outcome::Deny, reason::RATE_LIMITED)
    );
    assert!(d.reasons[0].message.contains("token budget"));
    // Another agent has its own budget.
    assert_eq!(
        gate.decide_for(&caller("other"), "s", model("model_request", 0))
            .unwrap()
            .finish()
            .outcome,
        Outcome::Allow
    );
    assert!(state.stats().rate_keys >= 1);
}

#[tokio::test]
async fn an_ask_is_parked_and_its_approval_labels_the_session() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let (log, _) = AuditLog::open(AuditConfig::new(&path)).unwrap();
    let (gate, state) = service(Some(log.clone()), "");
    let v = gate
        .decide_for(&caller("bot"), "s", exec_action())
        .unwrap()
        .release()
        .await;
    assert_eq!(v.decision.outcome, Outcome::Ask);
    let t = v.approval.unwrap();
    assert_eq!(state.approvals().pending().len(), 1);
    // The label is not added until a human approves.
    let p = gate.decide_for(&caller("bot"), "s", action("f")).unwrap();
    assert!(p.action.session.as_ref().unwrap().labels.is_empty());
    p.release().await;
    assert!(matches!(
        gate.resolve(&t.id, "alice", true, Some("sha256:nope"))
            .await,
        Err(ResolveError::DigestMismatch(_))
    ));
    gate.resolve(&t.id, "alice", true, Some(&t.action_digest))
        .await
        .unwrap();
    assert!(matches!(
        gate.resolve(&t.id, "bob", false, None).await,
        Err(ResolveError::Approval(_))
    ));
    let d = gate
        .decide_for(&caller("bot"), "s", action("g"))
        .unwrap()
        .release()
        .await
        .decision;
    assert_eq!(d.reasons[0].rule, "t.tainted");
    let (_, rx) = state.approvals().get(&t.id).unwrap();
    assert_eq!(*rx.borrow(), Status::Approved { by: "alice".into() });
    let closing = log.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap()
        .unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            format!(
                "{}:{}",
                v["type"].as_str().unwrap(),
                v["decision"]["outcome"]
                    .as_str()
                    .or(v["resolution"].as_str())
                    .unwrap()
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "decision:ask",
            "decision:allow",
            "approval:approved",
            "decision:deny"
        ]
    );
}

#[tokio::test]
async fn an_ask_that_cannot_be_recorded_is_not_left_pending() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = AuditLog::open(AuditConfig::new(dir.path().join("a.jsonl"))).unwrap();
    let (gate, state) = service(Some(log.clone()), "");
    let closing = log.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap()
        .unwrap();
    let v = gate
        .decide_for(&caller("bot"), "s", exec_action())
        .unwrap()
        .release()
        .await;
    assert_eq!(v.decision.reasons[0].rule, reason::AUDIT_UNAVAILABLE);
    assert!(v.approval.is_none());
    assert!(state.approvals().pending().is_empty());
}

#[tokio::test]
async fn a_full_approval_queue_denies_and_expiry_denies() {
    let (gate, state) = service(None, "[approvals]\nmax_pending = 1\ntimeout_s = 1\n");
    let first = gate
        .decide_for(&caller("bot"), "s", exec_action())
        .unwrap()
        .release()
        .await;
    assert_eq!(first.decision.outcome, Outcome::Ask);
    let second = gate
        .decide_for(&caller("bot"), "s", exec_action())
        .unwrap()
        .release()
        .await;
    assert_eq!(second.decision.outcome, Outcome::Deny);
    assert_eq!(
        second.decision.reasons.last().unwrap().rule,
        reason::APPROVALS_FULL
    );
    assert!(second.approval.is_none());
    // At shutdown every pending approval is cancelled, which is a deny.
    assert_eq!(gate.expire_approvals(true).await, 1);
    let t = first.approval.unwrap();
    let (_, rx) = state.approvals().get(&t.id).unwrap();
    let status = rx.borrow().clone();
    assert_eq!(status, Status::Cancelled);
    assert_eq!(
        resolved_decision(&first.decision, &status).unwrap().outcome,
        Outcome::Deny
    );
}
