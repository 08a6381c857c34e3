//! `portcullis run` end to end: the real binary, run inside the `px` namespace of
//! `common::netns` so that its egress proxy reaches the "external" hosts, with real curl and
//! Python `requests` as the sandboxed programs. The kernel enforces: Landlock for the file
//! system, a network namespace whose only way out is the relay to the proxy and the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::netns::{EXT_IP, Net};
use serde_json::Value;

struct Run {
    dir: tempfile::TempDir,
    cfg: PathBuf,
}

impl Run {
    fn ws(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }

    fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("state/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["type"] == "decision")
            .collect()
    }

    /// `portcullis run -- sh -c SCRIPT` inside `px`, from the workspace.
    fn sh(&self, net: &Net, script: &str) -> Output {
        net.px(env!("CARGO_BIN_EXE_portcullis"))
            .args(["run", "--config"])
            .arg(&self.cfg)
            .args(["--", "/bin/sh", "-c", script])
            .current_dir(self.ws())
            .env("HOME", self.outside())
            .output()
            .unwrap()
    }
}

fn setup() -> Run {
    let dir = tempfile::tempdir().unwrap();
    for d in ["ws", "outside/.ssh", "state"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::write(dir.path().join("outside/.ssh/id_ed25519"), "PRIVATE KEY\n").unwrap();
    std::fs::write(dir.path().join("ws/.env"), "TOKEN=x\n").unwrap();
    let venv = common::root().join("target/test-venv");
    let python_home = python_prefix();
    let cfg = dir.path().join("state/portcullis.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"
[audit]
path = "{state}/audit.jsonl"
[workspace]
roots = ["{ws}"]
[network]
allow_cidrs = ["203.0.113.0/24"]
[run.profiles.default]
read = ["{ws}", "{venv}", "{py}"]
write = ["{ws}"]
exec = ["{venv}", "{py}"]
"#,
            state = dir.path().join("state").display(),
            ws = dir.path().join("ws").display(),
            venv = venv.display(),
            py = python_home.display(),
        ),
    )
    .unwrap();
    Run { dir, cfg }
}

/// Where the venv's interpreter really lives (it is a symlink into a Python install).
fn python_prefix() -> PathBuf {
    let real = std::fs::canonicalize(common::python()).unwrap();
    // …/versions/3.11.7/bin/python3.11 → …/versions/3.11.7
    real.parent().and_then(Path::parent).unwrap().to_path_buf()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn the_proxy_is_the_only_way_out() {
    let net = Net::new();
    let run = setup();
    let o = run.sh(
        &net,
        r#"
curl -sS --max-time 20 http://ext.test/from-run; echo " curl=$?"
curl -sS --max-time 5 --noproxy '*' http://203.0.113.10/ >/dev/null 2>&1; echo "direct=$?"
(exec 3<>/dev/tcp/203.0.113.10/80) 2>/dev/null; echo "devtcp=$?"
getent hosts ext.test >/dev/null; echo "dns=$?"
"#,
    );
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains(&format!("\"server\": \"{EXT_IP}:80\""))
            || out.contains(&format!("\"server\":\"{EXT_IP}:80\"")),
        "{out}"
    );
    assert!(out.contains(" curl=0"), "{out}");
    assert!(!out.contains("direct=0"), "{out}");
    assert!(!out.contains("devtcp=0"), "{out}");
    assert!(!out.contains("dns=0"), "{out}");
    // Exactly one connection reached the host: the proxied one.
    assert_eq!(net.hits(&format!("{EXT_IP}:80")), 1);
    let recs = run.audit();
    let egress: Vec<&Value> = recs
        .iter()
        .filter(|r| r["action"]["via"] == "egress")
        .collect();
    assert_eq!(egress.len(), 1, "{recs:?}");
    assert_eq!(egress[0]["action"]["agent"]["id"], "run");
    assert!(egress[0]["action"]["agent"]["labels"]["run"].is_string());
}

#[test]
fn python_requests_in_the_sandbox_and_one_session_for_the_whole_run() {
    let net = Net::new();
    let run = setup();
    let script = format!(
        r#"
import json, os, requests
out = {{}}
r = requests.get("http://ext.test/py", timeout=20)
out["get"] = [r.status_code, r.json()["server"]]
# A tool-level read of the workspace's .env, decided through the gateway: the session learns it.
action = {{"kind": "file", "via": "decide", "file": {{"op": "read", "path": "{ws}/.env"}}}}
r = requests.post("http://127.0.0.1:8080/v1/decide", json=action,
                  headers={{"Authorization": "Bearer " + os.environ["PORTCULLIS_KEY"]}}, timeout=20)
out["read"] = r.json()["labels"]
# Afterwards, a host that is not allowlisted is exfiltration.
r = requests.get("http://198.51.100.10/", timeout=20)
out["after"] = r.status_code
print(json.dumps(out))
"#,
        ws = run.ws().display()
    );
    let o = net
        .px(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--config"])
        .arg(&run.cfg)
        .arg("--")
        .arg(common::python())
        .args(["-c", &script])
        .current_dir(run.ws())
        .env("HOME", run.outside())
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        stdout(&o),
        String::from_utf8_lossy(&o.stderr)
    );
    let v: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["get"], serde_json::json!([200, format!("{EXT_IP}:80")]));
    assert_eq!(v["read"], serde_json::json!(["secret_read"]));
    assert_eq!(v["after"], 403);
    let recs = run.audit();
    let sessions: std::collections::BTreeSet<String> = recs
        .iter()
        .map(|r| r["action"]["session"]["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let last = recs.last().unwrap();
    let rules: Vec<&str> = last["decision"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(rules.contains(&"flow.exfiltration"), "{rules:?}");
}

#[test]
fn the_file_system_outside_the_profile_cannot_be_reached() {
    let net = Net::new();
    let run = setup();
    let secret = run.outside().join(".ssh/id_ed25519");
    let script = format!(
        r#"
echo ok > inside.txt; echo "write_in=$?"
echo x > {out}/escaped.txt 2>/dev/null; echo "write_out=$?"
cat {secret} >/dev/null 2>&1; echo "read_ssh=$?"
ln -s {secret} link; cat link >/dev/null 2>&1; echo "symlink=$?"
cat /proc/self/root{secret} >/dev/null 2>&1; echo "proc_root=$?"
ln {secret} hard 2>/dev/null; echo "hardlink=$?"
cat /etc/shadow >/dev/null 2>&1; echo "shadow=$?"
"#,
        out = run.outside().display(),
        secret = secret.display()
    );
    let o = run.sh(&net, &script);
    let out = stdout(&o);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("write_in=0"), "{out}");
    for case in [
        "write_out",
        "read_ssh",
        "symlink",
        "proc_root",
        "hardlink",
        "shadow",
    ] {
        assert!(out.contains(&format!("{case}=")), "{out}");
        assert!(!out.contains(&format!("{case}=0")), "{case} escaped: {out}");
    }
    assert_eq!(
        std::fs::read_to_string(run.ws().join("inside.txt")).unwrap(),
        "ok\n"
    );
    assert!(!run.outside().join("escaped.txt").exists());
}

#[test]
fn exit_codes_pass_through_and_bad_input_is_refused() {
    let net = Net::new();
    let run = setup();
    assert_eq!(run.sh(&net, "exit 7").status.code(), Some(7));
    assert_eq!(run.sh(&net, "kill -TERM $$").status.code(), Some(128 + 15));
    // A profile that does not exist.
    let o = net
        .px(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--config"])
        .arg(&run.cfg)
        .args(["--profile", "nope", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no profile \"nope\""));
    // The audit log inside a writable root would let the program rewrite it.
    let cfg = run.dir.path().join("state/bad.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit]\npath = \"{ws}/audit.jsonl\"\n[workspace]\nroots = [\"{ws}\"]\n",
            ws = run.ws().display()
        ),
    )
    .unwrap();
    let o = net
        .px(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("inside the writable root"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Key material the program could read and send away: refused too.
    let cfg = run.dir.path().join("state/keys.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit]\npath = \"{state}/a.jsonl\"\n[workspace]\nroots = [\"{ws}\"]\n[egress]\nintercept = [\"x.test\"]\nca_cert = \"{state}/ca.crt\"\nca_key = \"{ws}/ca.key\"\n",
            ws = run.ws().display(),
            state = run.dir.path().join("state").display()
        ),
    )
    .unwrap();
    let o = net
        .px(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("egress.ca_key") && err.contains("inside the readable root"),
        "{err}"
    );
}

#[test]
fn nothing_the_program_leaves_behind_outlives_the_run() {
    let net = Net::new();
    let run = setup();
    // A daemon in a session of its own, which would otherwise keep its write access.
    let o = run.sh(
        &net,
        "setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' </dev/null >/dev/null 2>&1 &
         while [ ! -s daemon.pid ]; do :; done; echo started",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("started"));
    let pid = std::fs::read_to_string(run.ws().join("daemon.pid")).unwrap();
    let pid = pid.trim();
    assert!(!pid.is_empty());
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the daemon {pid} survived the run"
    );
}

#[test]
fn a_gateway_that_cannot_start_runs_nothing_of_the_program() {
    let net = Net::new();
    let run = setup();
    let policies = run.dir.path().join("state/broken-policy");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("broken.rego"),
        "package portcullis\nimport rego.v1\ndecision := {\n",
    )
    .unwrap();
    let cfg = run.dir.path().join("state/broken.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit]\npath = \"{state}/broken-audit.jsonl\"\n[policy]\ndir = \"{}\"\n[workspace]\nroots = [\"{ws}\"]\n",
            policies.display(),
            state = run.dir.path().join("state").display(),
            ws = run.ws().display()
        ),
    )
    .unwrap();
    let marker = run.ws().join("ran");
    let o = net
        .px(env!("CARGO_BIN_EXE_portcullis"))
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--", "/bin/sh", "-c"])
        .arg(format!("touch {}", marker.display()))
        .current_dir(run.ws())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("broken.rego"), "{stderr}");
    assert!(!marker.exists(), "the program ran without a gateway");
}
