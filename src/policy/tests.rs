use std::time::Duration;

use serde_json::json;

use super::testing::Parity;
use super::*;

fn files(modules: &[(&str, &str)]) -> PolicyFiles {
    PolicyFiles {
        origin: Origin::Embedded,
        modules: modules
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
        tests: Vec::new(),
        data_files: Vec::new(),
    }
}

fn load(modules: &[(&str, &str)]) -> PolicySet {
    PolicySet::load(
        files(modules),
        &json!({}),
        "data.t.decision",
        Duration::from_millis(100),
    )
    .unwrap()
}

/// The embedded default pack with the built-in configuration's data.
fn embedded_set() -> PolicySet {
    let config = crate::config::Config::built_in(std::path::Path::new("/work/ws")).unwrap();
    PolicySet::load(
        PolicyFiles::embedded(),
        &config.policy_data(),
        "data.portcullis.decision",
        Duration::from_millis(100),
    )
    .unwrap()
}

fn input(v: serde_json::Value) -> RegoValue {
    RegoValue::from(v)
}

const SIMPLE: &str = r#"
package t
import rego.v1
deny contains {"rule": "t.no", "message": "no"} if input.x == 1
outcome := "deny" if count(deny) > 0
else := "allow"
decision := {"outcome": outcome, "reasons": [r | some r in deny]}
"#;

#[test]
fn compiled_path_decides() {
    let set = load(&[("t.rego", SIMPLE)]);
    assert_eq!(set.mode(), &Mode::Compiled);
    let d = set.decide(input(json!({"x": 1})));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reasons[0].rule, "t.no");
    assert_eq!(d.policy_digest, set.digest());
    assert_eq!(set.decide(input(json!({"x": 2}))).outcome, Outcome::Allow);
}

#[test]
fn interpreter_agrees_with_compiled_path() {
    let set = load(&[("t.rego", SIMPLE)]);
    let interp = set.interpreted().unwrap();
    for x in [0, 1, 2] {
        let i = input(json!({"x": x}));
        assert_eq!(set.decide(i.clone()), interp.decide(i), "x = {x}");
    }
}

/// An undefined value binds nothing and adds nothing: `x := undefined` fails the body, and an
/// undefined term is no element of an array or object comprehension. regorus 0.14.1's RVM did
/// both (vendor/regorus/PATCHES.md, patch 9), so a rule whose message went undefined through a
/// lookup in a comprehension lost its deny on the compiled path only.
const UNDEFINED: &str = r#"
package t
import rego.v1
o := {"b": 1}
assigned := [d | some c in ["a", "b"]; d := o[c]]
terms := [o[c] | some c in ["a", "b"]]
objects := {c: o[c] | some c in ["a", "b"]}
bound := [c | some c in ["a", "b"]; d := o[c]; d == d]
missing if {
	d := input.missing
	not d
}
deny contains {"rule": "t.count", "message": sprintf("%d %d %d %d", [count(assigned), count(terms), count(objects), count(bound)])}
deny contains {"rule": "t.missing", "message": "x := undefined held"} if missing
decision := {"outcome": "deny", "reasons": [r | some r in deny]}
"#;

#[test]
fn undefined_values_bind_and_add_nothing_on_both_paths() {
    let set = load(&[("t.rego", UNDEFINED)]);
    assert_eq!(set.mode(), &Mode::Compiled);
    let i = input(json!({}));
    let d = set.decide(i.clone());
    let reasons: Vec<(&str, &str)> = d
        .reasons
        .iter()
        .map(|r| (r.rule.as_str(), r.message.as_str()))
        .collect();
    assert_eq!(reasons, [("t.count", "1 1 1 1")]);
    assert_eq!(d, set.interpreted().unwrap().decide(i));
}

fn assert_policy_error(set: &PolicySet, i: serde_json::Value, needle: &str) {
    let d = set.decide(input(i));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reasons[0].rule, reason::POLICY_ERROR);
    assert!(d.reasons[0].message.contains(needle), "{:?}", d.reasons);
}

#[test]
fn undefined_decision_is_policy_error() {
    let set = load(&[(
        "t.rego",
        "package t\nimport rego.v1\ndecision := {\"outcome\": \"allow\"} if input.ok\n",
    )]);
    assert_policy_error(&set, json!({}), "undefined");
    assert_eq!(
        set.decide(input(json!({"ok": true}))).outcome,
        Outcome::Allow
    );
}

#[test]
fn wrong_shapes_are_policy_errors() {
    for (rego, needle) in [
        ("decision := \"allow\"", "wrong shape"),
        (
            "decision := {\"outcome\": \"maybe\"}",
            "not allow, ask or deny",
        ),
        ("decision := {\"outcome\": \"deny\"}", "must carry a reason"),
        (
            "decision := {\"outcome\": \"allow\", \"approved\": true}",
            "wrong shape",
        ),
        (
            "decision := {\"outcome\": \"allow\", \"reasons\": [1]}",
            "wrong shape",
        ),
    ] {
        let set = load(&[("t.rego", &format!("package t\nimport rego.v1\n{rego}\n"))]);
        assert_policy_error(&set, json!({}), needle);
    }
}

#[test]
fn runtime_errors_are_policy_errors() {
    // Strict builtin errors: a type error in a builtin is an error, not "undefined".
    let rego = "package t\nimport rego.v1\ndecision := {\"outcome\": concat(\",\", input.x)}\n";
    let set = load(&[("t.rego", rego)]);
    let d = set.decide(input(json!({"x": 5})));
    assert_eq!(d.outcome, Outcome::Deny);
    assert_eq!(d.reasons[0].rule, reason::POLICY_ERROR);
}

#[test]
fn runaway_evaluation_is_cut_off() {
    // A quadratic comprehension over a large input exceeds the instruction/time budget.
    let rego = r#"
package t
import rego.v1
n := count([1 | some a in input.xs; some b in input.xs; some c in input.xs; a + b + c > 0])
decision := {"outcome": "allow"} if n >= 0
"#;
    let set = load(&[("t.rego", rego)]);
    let xs: Vec<u32> = (0..300).collect();
    let d = set.decide(input(json!({"xs": xs})));
    assert_eq!(d.outcome, Outcome::Deny, "{d:?}");
    assert_eq!(d.reasons[0].rule, reason::POLICY_ERROR);
}

#[test]
fn parse_errors_name_file_and_line() {
    let err = PolicySet::load(
        files(&[("bad.rego", "package t\n\ndecision := {\n")]),
        &json!({}),
        "data.t.decision",
        Duration::from_millis(100),
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("bad.rego"), "{err}");
    assert!(
        err.contains(":3") || err.contains("line 3") || err.contains(":4"),
        "{err}"
    );
}

#[test]
fn digest_covers_modules_and_data() {
    let a = load(&[("t.rego", SIMPLE)]);
    let b = load(&[("t.rego", SIMPLE)]);
    assert_eq!(a.digest(), b.digest());
    let c = PolicySet::load(
        files(&[("t.rego", SIMPLE)]),
        &json!({"config": {"x": 1}}),
        "data.t.decision",
        Duration::from_millis(100),
    )
    .unwrap();
    assert_ne!(a.digest(), c.digest(), "data is part of the digest");
    let d = load(&[("t.rego", &SIMPLE.replace("\"no\"", "\"nope\""))]);
    assert_ne!(a.digest(), d.digest());
}

#[test]
fn a_new_set_replaces_the_thread_vm() {
    let a = load(&[("t.rego", SIMPLE)]);
    let b = load(&[("t.rego", &SIMPLE.replace("input.x == 1", "input.x == 2"))]);
    let one = input(json!({"x": 1}));
    assert_eq!(a.decide(one.clone()).outcome, Outcome::Deny);
    assert_eq!(b.decide(one.clone()).outcome, Outcome::Allow);
    assert_eq!(a.decide(one).outcome, Outcome::Deny);
}

#[test]
fn embedded_pack_compiles_on_the_fast_path() {
    let set = embedded_set();
    assert_eq!(set.mode(), &Mode::Compiled);
    // An input with no facets is decided (allow), not a policy error.
    let d = set.decide(input(
        json!({"version": "portcullis/v1", "kind": "file", "via": "decide"}),
    ));
    assert_ne!(
        d.reasons.first().map(|r| r.rule.as_str()),
        Some(reason::POLICY_ERROR),
        "{d:?}"
    );
}

#[test]
fn the_precompiled_pack_is_what_loading_would_compile() {
    let config = crate::config::Config::built_in(std::path::Path::new("/work/ws")).unwrap();
    let files = PolicyFiles::embedded();
    let entrypoint = "data.portcullis.decision";
    let pre = precompiled(&files, entrypoint).expect("build.rs embedded a program");
    let data = files.data(&config.policy_data()).unwrap();
    let (exec, mode) = compile(&files, &data, entrypoint).unwrap();
    assert_eq!(mode, Mode::Compiled);
    let Exec::Vm(fresh) = exec else {
        unreachable!("a compiled mode comes with a program")
    };
    assert_eq!(
        pre.serialize_binary().unwrap(),
        fresh.serialize_binary().unwrap()
    );
}

#[test]
fn the_precompiled_pack_is_used_only_for_the_pack_itself() {
    let files = PolicyFiles::embedded();
    assert!(precompiled(&files, "data.portcullis.other").is_none());
    let mut changed = files.clone();
    changed.modules[0].1.push_str("\n# edited\n");
    assert!(precompiled(&changed, "data.portcullis.decision").is_none());
    let mut fewer = files.clone();
    fewer.modules.pop();
    assert!(precompiled(&fewer, "data.portcullis.decision").is_none());
    let mut other_data = files.clone();
    other_data.data_files.clear();
    assert!(precompiled(&other_data, "data.portcullis.decision").is_none());
    // The same texts under other names (a directory holding copies) compile as usual.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let from_dir = PolicyFiles::from_dir(&dir).unwrap();
    assert!(precompiled(&from_dir, "data.portcullis.decision").is_none());
    assert!(precompiled(&files, "data.portcullis.decision").is_some());
}

#[test]
fn embedded_pack_matches_the_policies_directory() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("policies");
    let from_dir = PolicyFiles::from_dir(&dir).unwrap();
    let embedded = PolicyFiles::embedded();
    let texts = |f: &PolicyFiles| -> Vec<String> {
        f.modules
            .iter()
            .chain(&f.tests)
            .chain(&f.data_files)
            .map(|(_, t)| t.clone())
            .collect()
    };
    assert_eq!(texts(&from_dir), texts(&embedded));
}

#[test]
fn a_policy_set_can_be_shared_across_threads() {
    fn shared<T: Send + Sync + Clone>() {}
    shared::<PolicySet>();
    let set = load(&[("t.rego", SIMPLE)]);
    let other = set.clone();
    let d = std::thread::spawn(move || other.decide(input(json!({"x": 1}))))
        .join()
        .unwrap();
    assert_eq!(d.outcome, Outcome::Deny);
}

#[test]
fn each_thread_gets_a_complete_deep_copy_of_program_and_data() {
    let embedded = embedded_set();
    let data = json!({"allowed": ["a.example", "b.example"]});
    let compiled = PolicySet::load(
        files(&[("t.rego", SIMPLE)]),
        &data,
        "data.t.decision",
        Duration::from_millis(100),
    )
    .unwrap();
    for set in [embedded, compiled] {
        let Exec::Vm(shared) = &set.inner.exec else {
            unreachable!("compiled sets run on the VM")
        };
        let copy = set.thread_copy(shared);
        // Not the shared allocation, and nothing lost on the way.
        assert!(!Arc::ptr_eq(&copy.program, shared));
        assert_eq!(
            copy.program.serialize_binary().unwrap(),
            shared.serialize_binary().unwrap()
        );
        assert_eq!(copy.program.literals, shared.literals);
        assert_eq!(copy.data, set.inner.data);
        assert_eq!(copy.generation, set.inner.generation);
    }
}

/// `policy test` runs the pack's Rego tests on the interpreter only: regorus's RVM compiler
/// rejects `with`. Its parity pass decides every literal input those tests give the decision
/// on both paths; on the default pack that must cover most of them, and all must agree. This
/// is what catches a compiled path that drops a deny (patch 9: the `~/.ssh` read).
#[test]
fn every_rego_test_input_decides_the_same_on_both_paths() {
    let pack = PolicyFiles::embedded();
    assert!(
        !pack.tests.is_empty(),
        "the embedded pack carries its tests"
    );
    let config = crate::config::Config::built_in(std::path::Path::new("/work/ws")).unwrap();
    let parity = testing::parity(
        &pack,
        &config.policy_data(),
        "data.portcullis.decision",
        Duration::from_secs(5),
    )
    .unwrap();
    assert!(
        matches!(parity, Parity::Checked { .. }),
        "the default pack runs compiled: {parity:?}"
    );
    let Parity::Checked {
        checked,
        skipped,
        disagreements,
    } = parity
    else {
        return;
    };
    assert_eq!(disagreements, []);
    // If extraction broke, parity would check nothing; on this pack it checks most inputs.
    assert!(checked >= 135, "checked only {checked}, skipped {skipped}");
}

#[test]
fn parity_takes_literal_inputs_and_counts_the_rest() {
    let files = PolicyFiles {
        tests: vec![(
            "t_test.rego".into(),
            "package t_test\nimport rego.v1\ntest_x if data.t.decision with input as {\"x\": [1, {\"y\": \"}\"}]} with data.config as {\"c\": 1}\ntest_v if data.t.decision with input as v\n".into(),
        )],
        ..files(&[("t.rego", SIMPLE)])
    };
    let inputs = testing::test_inputs(&files.tests[0].1);
    assert_eq!(
        inputs,
        [
            (
                r#"{"x": [1, {"y": "}"}]}"#.to_string(),
                Some(r#"{"c": 1}"#.to_string())
            ),
            ("v".to_string(), None)
        ]
    );
    let parity = testing::parity(
        &files,
        &json!({}),
        "data.t.decision",
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(
        parity,
        Parity::Checked {
            checked: 1,
            skipped: 1,
            disagreements: Vec::new()
        }
    );

    // A pack the RVM cannot compile has no compiled path to compare.
    let with = "package t\nimport rego.v1\nx := input.x\ndecision := {\"outcome\": \"allow\", \"reasons\": [], \"x\": y} if { y := x with input as {\"x\": 1} }\n";
    let files = PolicyFiles {
        tests: files.tests,
        ..self::files(&[("t.rego", with)])
    };
    assert!(matches!(
        testing::parity(
            &files,
            &json!({}),
            "data.t.decision",
            Duration::from_secs(5)
        )
        .unwrap(),
        Parity::Interpreted { .. }
    ));
}
