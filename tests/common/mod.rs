//! What the MCP integration tests share: where the pinned fixtures live (installed by
//! `scripts/test-deps.sh`), and reading a child's output lines as events.

#![allow(dead_code, reason = "each test crate uses a part")]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

pub mod llm_mock;
pub mod netns;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    root().join("tests/mcp-fixtures")
}

fn installed(p: PathBuf) -> PathBuf {
    assert!(
        p.exists(),
        "{} is missing: run `bash scripts/test-deps.sh` (scripts/test.sh does)",
        p.display()
    );
    p
}

/// The virtual environment with the official Python MCP SDK.
pub fn python() -> PathBuf {
    installed(root().join("target/test-venv/bin/python"))
}

/// A `[run.profiles.NAME]` that lets the test venv's Python (and the fixtures) run in a
/// sandbox, with `read` and `write` roots added (TOML strings, relative to the config).
pub fn python_profile(name: &str, read: &[&str], write: &[&str]) -> String {
    let out = std::process::Command::new(python())
        .args(["-c", "import sys; print(sys.base_prefix)"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The interpreter the venv links to may live outside /usr (pyenv).
    let base = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let venv = root().join("target/test-venv");
    let mut reads = vec![format!("{venv:?}"), format!("{:?}", fixtures())];
    reads.extend(read.iter().map(|r| format!("{r:?}")));
    let writes: Vec<String> = write.iter().map(|w| format!("{w:?}")).collect();
    format!(
        "[run.profiles.{name}]\nread = [{}]\nwrite = [{}]\nexec = [{base:?}]\n",
        reads.join(", "),
        writes.join(", ")
    )
}

/// A path under the fixtures' `node_modules`.
pub fn node_module(path: &str) -> String {
    installed(fixtures().join("node_modules").join(path))
        .to_string_lossy()
        .into_owned()
}

/// A reader's lines, on a channel.
pub fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next line containing `needle`; the bound only turns a hang into a failure.
pub fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no line with {needle:?}: {e}"));
        if line.contains(needle) {
            return line;
        }
    }
}

/// The text of an SDK client's `{"ok": CallToolResult}` line.
pub fn text(result: &Value) -> String {
    result["ok"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("no content in {result}"))
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect()
}
