//! The real binary, end to end: `policy eval|test`, `audit verify|query|replay`, `config check`,
//! and every way bad input must be refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
}

/// Run in `dir` (so no stray portcullis.toml is found) with `stdin`.
fn run(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = bin()
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout_lines(out: &Output) -> Vec<Value> {
    String::from_utf8(out.stdout.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn records(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[test]
fn eval_decides_json_lines_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = concat!(
        r#"{"id":"a","kind":"exec","via":"decide","exec":{"command":"ls"}}"#,
        "\n",
        "\n",
        r#"{"id":"b","kind":"http_request","via":"decide","http":{"url":"http://169.254.169.254/"}}"#,
        "\n",
    );
    let out = run(dir.path(), &["policy", "eval"], input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["outcome"], "allow");
    assert_eq!(lines[1]["id"], "b");
    assert_eq!(lines[1]["outcome"], "deny");
    assert!(
        lines[1]["policy_digest"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[test]
fn eval_accepts_one_pretty_document() {
    let dir = tempfile::tempdir().unwrap();
    let input = "{\n  \"kind\": \"exec\",\n  \"via\": \"decide\",\n  \"exec\": {\"command\": \"rm -rf /\"}\n}\n";
    let out = run(
        dir.path(),
        &["policy", "eval", "--explain"],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["outcome"], "deny");
    // --explain shows the normalized input and the rules that fired.
    assert_eq!(
        lines[0]["explain"]["input"]["exec"]["argv"],
        json!(["rm", "-rf", "/"])
    );
    assert!(
        !lines[0]["explain"]["fired"]["deny"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn bad_input_is_refused_with_where_and_nothing_recorded() {
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let big = format!(
        "{{\"kind\":\"exec\",\"via\":\"decide\",\"exec\":{{\"command\":\"{}\"}}}}",
        "a".repeat(2 << 20)
    );
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"kind\":\"exec\",".to_vec(), "EOF"),
        (br#"{"kind":"exec","via":"decide","exec":{"command":"ls","command":"rm -rf /"}}"#.to_vec(), "duplicate key \"command\""),
        (br#"{"kind":"tool_call","via":"mcp","tool":{"name":"w","arguments":{"p":{"a":1,"a":2}}}}"#.to_vec(), "duplicate key \"a\""),
        (b"{\"kind\":\"exec\",\"via\":\"decide\",\"exec\":{\"command\":\"l\xffs\"}}".to_vec(), "UTF-8"),
        (br#"{"kind":"exec","via":"decide","exec":{"command":"\udc00"}}"#.to_vec(), "surrogate"),
        (br#"{"kind":"tool_call","via":"mcp","tool":{"name":"w","arguments":{"n":123456789012345678901234567890}}}"#.to_vec(), "does not fit"),
        (deep.into_bytes(), "nesting deeper than 64"),
        (big.into_bytes(), "over the limit"),
        (br#"{"kind":"exec","via":"decide","exec":{"command":"ls"},"approved":true}"#.to_vec(), "unknown field `approved`"),
        (br#"{"kind":"file","via":"decide","file":{"op":"read","path":"a\u0000b"}}"#.to_vec(), "NUL"),
        (br#"{"kind":"http_request","via":"decide","http":{"url":"file:///etc/passwd"}}"#.to_vec(), "file"),
    ];
    for (input, needle) in cases {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let out = run(
            dir.path(),
            &["policy", "eval", "--audit", audit.to_str().unwrap()],
            &input,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{needle}: {err}");
        assert!(err.contains(needle), "expected {needle:?} in: {err}");
        assert!(out.stdout.is_empty(), "{needle}: nothing decided");
        assert_eq!(records(&audit), 0, "{needle}: nothing recorded");
    }
}

#[test]
fn a_bad_first_line_is_reported_as_itself() {
    let dir = tempfile::tempdir().unwrap();
    let input = concat!(
        r#"{"kind":"exec","via":"decide","exec":{"command":"ls"},"kind":"file"}"#,
        "\n",
        r#"{"kind":"exec","via":"decide","exec":{"command":"ls"}}"#,
        "\n",
    );
    let out = run(dir.path(), &["policy", "eval"], input.as_bytes());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("input line 1") && stderr(&out).contains("duplicate key \"kind\""),
        "{}",
        stderr(&out)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn a_bad_line_stops_the_stream_after_the_good_ones() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let input = concat!(
        r#"{"id":"ok1","kind":"exec","via":"decide","exec":{"command":"ls"}}"#,
        "\n",
        r#"{"id":"bad","kind":"exec","via":"decide","exec":{"command":"ls"},"exec":{}}"#,
        "\n",
        r#"{"id":"never","kind":"exec","via":"decide","exec":{"command":"ls"}}"#,
        "\n",
    );
    let out = run(
        dir.path(),
        &["policy", "eval", "--audit", audit.to_str().unwrap()],
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("input line 2"), "{}", stderr(&out));
    let lines = stdout_lines(&out);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "ok1");
    assert_eq!(records(&audit), 1);
}

/// Many batches over several workers: output and audit log follow the input order exactly, and a
/// bad line deep in the stream stops it there, whatever the workers had evaluated beyond it.
#[test]
fn workers_keep_input_order_and_stop_at_a_bad_line() {
    // Decisions alternate, so a reordering shows in the outcomes as well as the ids.
    let line = |n: usize| {
        let command = if n.is_multiple_of(3) {
            "rm -rf /"
        } else {
            "ls"
        };
        json!({"id": format!("n{n}"), "kind": "exec", "via": "decide", "exec": {"command": command}})
            .to_string()
    };
    let expect = |n: usize| if n.is_multiple_of(3) { "deny" } else { "allow" };
    for (jobs, bad_at) in [("1", None), ("3", None), ("3", Some(1234))] {
        let dir = tempfile::tempdir().unwrap();
        let audit = dir.path().join("audit.jsonl");
        let mut input = String::new();
        for n in 0..2000 {
            if Some(n) == bad_at {
                input.push_str("{\"kind\":\"exec\",\"kind\":\"file\"}\n");
            } else {
                input.push_str(&line(n));
                input.push('\n');
            }
        }
        let out = run(
            dir.path(),
            &[
                "policy",
                "eval",
                "--jobs",
                jobs,
                "--audit",
                audit.to_str().unwrap(),
            ],
            input.as_bytes(),
        );
        let decided = bad_at.unwrap_or(2000);
        match bad_at {
            None => assert!(out.status.success(), "{}", stderr(&out)),
            Some(n) => {
                assert_eq!(out.status.code(), Some(2));
                let needle = format!("input line {}", n + 1);
                assert!(stderr(&out).contains(&needle), "{}", stderr(&out));
            }
        }
        let lines = stdout_lines(&out);
        assert_eq!(lines.len(), decided, "jobs {jobs}");
        let log = std::fs::read_to_string(&audit).unwrap();
        let recorded: Vec<Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recorded.len(), decided, "jobs {jobs}");
        for (n, (printed, record)) in lines.iter().zip(&recorded).enumerate() {
            let id = format!("n{n}");
            assert_eq!(printed["id"], id.as_str(), "jobs {jobs}");
            assert_eq!(printed["outcome"], expect(n), "jobs {jobs}: {id}");
            assert_eq!(record["action"]["id"], id.as_str(), "jobs {jobs}");
            assert_eq!(
                record["decision"]["outcome"],
                expect(n),
                "jobs {jobs}: {id}"
            );
        }
    }
}
#[test]
fn audit_log_verifies_queries_and_detects_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let a = audit.to_str().unwrap();
    let input = concat!(
        r#"{"id":"x1","kind":"exec","via":"decide","exec":{"command":"ls"}}"#,
        "\n",
        r#"{"id":"x2","kind":"exec","via":"decide","exec":{"command":"rm -rf /"}}"#,
        "\n",
        r#"{"id":"x3","kind":"http_request","via":"decide","http":{"url":"https://example.com/"}}"#,
        "\n",
    );
    assert!(
        run(
            dir.path(),
            &["policy", "eval", "--audit", a],
            input.as_bytes()
        )
        .status
        .success()
    );
    let out = run(dir.path(), &["audit", "verify", a], b"");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("3 records"));

    let out = run(
        dir.path(),
        &["audit", "query", a, "--outcome", "deny", "--kind", "exec"],
        b"",
    );
    let hits = stdout_lines(&out);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0]["action"]["id"], "x2");
    assert_eq!(hits[0]["seq"], 2);

    // Replay with a pack that allows everything: the deny flips.
    let pol = dir.path().join("open");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(
        pol.join("p.rego"),
        "package portcullis\nimport rego.v1\ndecision := {\"outcome\": \"allow\"}\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &["audit", "replay", a, "--policies", pol.to_str().unwrap()],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let changed = stdout_lines(&out);
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(changed[0]["id"], "x2");
    assert_eq!(
        (changed[0]["old"].as_str(), changed[0]["new"].as_str()),
        (Some("deny"), Some("allow"))
    );

    // Alter one byte of the second record's outcome.
    let text = std::fs::read_to_string(&audit).unwrap();
    std::fs::write(
        &audit,
        text.replacen("\"outcome\":\"deny\"", "\"outcome\":\"allow\"", 1),
    )
    .unwrap();
    let out = run(dir.path(), &["audit", "verify", a], b"");
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        report.contains("line 2") && report.contains("altered"),
        "{report}"
    );
}

#[test]
fn secrets_never_reach_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let key = format!("AKIA{}", "IOSFODNN7EXAMPLE");
    let input = json!({"kind": "exec", "via": "decide", "exec": {"command": format!("aws --key {key} s3 ls")}}).to_string();
    let out = run(
        dir.path(),
        &[
            "policy",
            "eval",
            "--audit",
            audit.to_str().unwrap(),
            "--explain",
        ],
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let log = std::fs::read_to_string(&audit).unwrap();
    assert!(!log.contains(&key), "the audit record holds the secret");
    assert!(log.contains("aws_access_key"), "the finding is recorded");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains(&key),
        "--explain shows the secret"
    );
    let out = run(
        dir.path(),
        &["audit", "verify", audit.to_str().unwrap()],
        b"",
    );
    assert!(out.status.success());
}

#[test]
fn policy_test_runs_the_pack_and_fails_on_a_failing_test() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["policy", "test"], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains(" passed, 0 failed"), "{text}");
    // The Rego tests run on the interpreter; their literal inputs are decided on both paths.
    let parity = text
        .lines()
        .find(|l| l.starts_with("PARITY "))
        .unwrap_or_else(|| panic!("no parity line: {text}"));
    let counts: Vec<u32> = parity
        .split(' ')
        .filter_map(|w| w.trim_start_matches('(').parse().ok())
        .collect();
    assert!(
        counts.len() == 3 && counts[0] == counts[1] && counts[0] >= 100,
        "{parity}"
    );

    let pol = dir.path().join("p");
    std::fs::create_dir(&pol).unwrap();
    std::fs::write(pol.join("p.rego"), "package portcullis\nimport rego.v1\ndeny contains \"x\" if {\n\tinput.bad\n}\ndeny contains \"y\" if {\n\tinput.worse\n}\ndecision := {\"outcome\": \"allow\"}\n").unwrap();
    std::fs::write(pol.join("p_test.rego"), "package portcullis_test\nimport rego.v1\ntest_ok if data.portcullis.deny with input as {\"bad\": true}\ntest_wrong if count(data.portcullis.deny) == 2 with input as {\"bad\": true}\n").unwrap();
    let out = run(dir.path(), &["policy", "test", pol.to_str().unwrap()], b"");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("PASS data.portcullis_test.test_ok"), "{text}");
    assert!(
        text.contains("FAIL data.portcullis_test.test_wrong"),
        "{text}"
    );
    assert!(
        text.contains("UNTESTED") && text.contains("p.rego:6"),
        "an unexercised rule is listed: {text}"
    );
    assert!(
        !text.contains("p.rego:3"),
        "the exercised rule is not listed: {text}"
    );
    assert!(text.contains("1 passed, 1 failed"), "{text}");
    assert!(
        text.contains("PARITY 2 of 2 test inputs decided alike"),
        "{text}"
    );
}

#[test]
fn policy_parse_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("broken.rego"),
        "package portcullis\nimport rego.v1\n\ndecision := {\"outcome\": }\n",
    )
    .unwrap();
    let out = run(
        dir.path(),
        &["policy", "eval", "--policies", dir.path().to_str().unwrap()],
        b"{}",
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("broken.rego:4"), "{err}");
}

#[test]
fn config_check_reports_the_source_and_field_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &["config", "check"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("built-in default config: ok"), "{text}");
    assert!(text.contains("embedded default pack"), "{text}");

    std::fs::write(
        dir.path().join("portcullis.toml"),
        "[network]\nallow_hosts = [\"ok.example\"]\nallowed = 1\n",
    )
    .unwrap();
    let out = run(dir.path(), &["config", "check"], b"");
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("portcullis.toml") && err.contains("network") && err.contains("allowed"),
        "{err}"
    );

    std::fs::write(
        dir.path().join("portcullis.toml"),
        "[network]\nallow_hosts = [\"ok.example\"]\n",
    )
    .unwrap();
    let out = run(dir.path(), &["config", "check"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("portcullis.toml: ok"));
}

#[test]
fn the_example_config_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("portcullis.example.toml");
    let out = run(
        dir.path(),
        &["config", "check", "--config", example.to_str().unwrap()],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn an_unwritable_audit_log_is_an_error_before_any_decision() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the log file should be: fails for root too.
    let audit = dir.path().join("audit.jsonl");
    std::fs::create_dir(&audit).unwrap();
    let out = run(
        dir.path(),
        &["policy", "eval", "--audit", audit.to_str().unwrap()],
        br#"{"kind":"exec","via":"decide","exec":{"command":"ls"}}"#,
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    assert!(stderr(&out).contains("audit.jsonl"), "{}", stderr(&out));
}

#[test]
fn the_example_config_of_the_readme_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("portcullis.example.toml");
    let out = run(
        dir.path(),
        &["config", "check", "--config", example.to_str().unwrap()],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("gateway: http://127.0.0.1:8080, admin: http://127.0.0.1:8081"),
        "{text}"
    );
    assert!(
        text.contains("agents: 1, admins: 1, limits: 1, budgets: 1"),
        "{text}"
    );
    assert!(text.contains("egress: http://127.0.0.1:3128"), "{text}");
}

#[test]
fn certs_init_writes_private_keys_0600_and_ignores_them_in_git() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &["certs", "init", "--dir", "c", "--client", "bot"],
        b"",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    for key in ["ca.key", "server.key", "client-bot.key"] {
        let mode = std::fs::metadata(dir.path().join("c").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
    let ignore = std::fs::read_to_string(dir.path().join("c/.gitignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "*.key"), "{ignore}");
    // A second run keeps what exists.
    let out = run(dir.path(), &["certs", "init", "--dir", "c"], b"");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("kept"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
