//! The examples of `docs/action.md` (`docs/examples/*.json`): each is normalized and decided by
//! the embedded default pack, on both the compiled path and the interpreter, and must come out
//! as documented.
//!
//! An example file is `{"description", "config"?, "session_labels"?, "resolved"?, "action",
//! "expect": {"outcome", "rules"?, "labels"?, "redact"?}}`. `config` is `data.config` (its
//! `workspace_roots` also root path normalization); `session_labels` are what earlier decisions
//! left in the session; `resolved` is what the egress proxy's resolver answered for the host.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis::gate::to_input;
use portcullis::input::{action_from_value, parse_value};
use portcullis::normalize::{Context, normalize, set_resolved};
use portcullis::policy::{Mode, PolicyFiles, PolicySet};
use serde_json::{Value, json};

fn examples() -> Vec<(PathBuf, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples");
    let mut out: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let v = parse_value(&std::fs::read(&p).unwrap()).unwrap();
            (p, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn default_config() -> Value {
    json!({"workspace_roots": ["/work/ws"], "allow_hosts": [], "allow_cidrs": [], "protected_paths": []})
}

#[test]
fn every_example_decides_as_documented() {
    let all = examples();
    assert!(
        all.len() >= 14,
        "the reference page promises examples; found {}",
        all.len()
    );
    let mut outcomes = std::collections::BTreeSet::new();
    for (path, ex) in all {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let config = ex.get("config").cloned().unwrap_or_else(default_config);
        let set = PolicySet::load(
            PolicyFiles::embedded(),
            &json!({"config": config}),
            "data.portcullis.decision",
            Duration::from_millis(100),
        )
        .unwrap();
        assert_eq!(set.mode(), &Mode::Compiled);
        let interp = set.interpreted().unwrap();
        let roots = config["workspace_roots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| PathBuf::from(r.as_str().unwrap()))
            .collect();
        let ctx = Context {
            roots,
            resolve_symlinks: true,
        };
        let mut raw = ex["action"].clone();
        if let Some(labels) = ex.get("session_labels") {
            raw["session"] = json!({"id": "example", "labels": labels});
        }
        let mut action = action_from_value(raw).unwrap_or_else(|e| panic!("{name}: {e}"));
        normalize(&mut action, &ctx).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let (Some(ips), Some(http)) = (ex.get("resolved"), action.http.as_mut()) {
            let ips: Vec<std::net::IpAddr> =
                serde_json::from_value(ips.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
            set_resolved(http, &ips);
        }
        let input = to_input(&action).unwrap();
        let decision = set.decide(input.clone());
        assert_eq!(
            decision,
            interp.decide(input),
            "{name}: compiled and interpreted differ"
        );

        let expect = &ex["expect"];
        assert_eq!(
            decision.outcome.as_str(),
            expect["outcome"].as_str().unwrap(),
            "{name}: {decision:?}"
        );
        outcomes.insert(decision.outcome);
        let rules: Vec<&str> = decision.reasons.iter().map(|r| r.rule.as_str()).collect();
        for want in expect
            .get("rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert!(
                rules.contains(&want.as_str().unwrap()),
                "{name}: {want} not in {rules:?}"
            );
        }
        for want in expect
            .get("labels")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            assert!(
                decision.labels.iter().any(|l| l == want.as_str().unwrap()),
                "{name}: label {want} not in {:?}",
                decision.labels
            );
        }
        assert!(
            !ex["description"].as_str().unwrap().is_empty(),
            "{name}: describe it"
        );
    }
    assert_eq!(outcomes.len(), 3, "the examples show allow, ask and deny");
}

#[test]
fn the_readme_stream_holds_every_example_action() {
    let stream = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/actions.jsonl");
    let text = std::fs::read_to_string(stream).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| parse_value(l.as_bytes()).unwrap())
        .collect();
    let actions: Vec<Value> = examples()
        .into_iter()
        .map(|(_, ex)| ex["action"].clone())
        .collect();
    assert_eq!(
        lines, actions,
        "regenerate docs/examples/actions.jsonl from the examples"
    );
}
