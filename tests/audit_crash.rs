//! kill -9 in the middle of a stream of appends, many times: on restart the writer reports and
//! cuts a torn last line, `audit verify` passes, and no acknowledged record is missing.
//!
//! The writer is the real CLI, `portcullis policy eval --audit LOG`, fed Actions on stdin by a
//! thread that never stops writing. `policy eval` prints a decision only once its audit record
//! is durable, so every line read from its stdout is an acknowledgement. After reading K of them
//! the test SIGKILLs the process (more records are in flight by then), and the next round's
//! `policy eval` must recover the log.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly"
)]

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

const ROUNDS: usize = 20;

/// Start a writer, read `k` acknowledged ids, SIGKILL it mid-stream; return ids and stderr.
fn run_and_kill(dir: &Path, log: &Path, round: usize, k: usize) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir)
        .args(["policy", "eval", "--audit"])
        .arg(log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        for n in 0.. {
            let line = format!(
                "{{\"id\":\"r{round}-{n}\",\"kind\":\"exec\",\"via\":\"decide\",\"exec\":{{\"command\":\"echo {n}\"}}}}\n"
            );
            // The pipe breaks when the process is killed: that ends the feeder.
            if stdin.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut acked = Vec::with_capacity(k);
    for _ in 0..k {
        let line = lines.next().expect("the writer ended early").unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        acked.push(v["id"].as_str().unwrap().to_string());
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    drop(lines);
    feeder.join().unwrap();
    acked
}

#[test]
fn acknowledged_records_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("audit.jsonl");
    let mut acked = Vec::new();
    for round in 0..ROUNDS {
        let k = 1 + (round * 7919) % 3000;
        acked.extend(run_and_kill(dir.path(), &log, round, k));
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .current_dir(dir.path())
            .args(["audit", "verify"])
            .arg(&log)
            .output()
            .unwrap();
        // A torn tail is possible right after the kill; verify reports it, and the next
        // writer cuts it. Anything else is a failure.
        let report = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success() || report.contains("torn_tail"),
            "round {round}: {report}"
        );
    }
    // A last writer with no input recovers the log; then it must verify cleanly.
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(dir.path())
        .args(["policy", "eval", "--audit"])
        .arg(&log)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mut present = HashSet::new();
    for line in std::fs::read_to_string(&log).unwrap().lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert!(
            present.insert(v["action"]["id"].as_str().unwrap().to_string()),
            "duplicate record"
        );
    }
    let lost: Vec<&String> = acked.iter().filter(|id| !present.contains(*id)).collect();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    assert!(acked.len() > ROUNDS, "the test acknowledged records");
}
