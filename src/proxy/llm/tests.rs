//! The streaming relay against the fixtures in `tests/llm-fixtures` (the providers' wire
//! formats), re-chunked at arbitrary byte boundaries: what is released and what is decided
//! must not depend on how the upstream's bytes were cut, nor on when decisions arrive.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests"
)]

use std::time::Duration;

use serde_json::{Value, json};

use super::stream::{Limits, Protocol, Relay};
use super::{Proposed, Verdict, chat, messages, responses};

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/llm-fixtures")
        .join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

const REFUSAL: &str = "[refused by the test]";

/// Allow `ls -la`, deny anything else.
fn policy(p: &Proposed) -> Verdict {
    match &p.arguments {
        Ok(a) if a["command"] == "ls -la" => Verdict::Allow,
        _ => Verdict::Deny(REFUSAL.into()),
    }
}

/// Deny `ls -la`, allow anything else (so a later call must be renumbered).
fn inverted(p: &Proposed) -> Verdict {
    match policy(p) {
        Verdict::Allow => Verdict::Deny(REFUSAL.into()),
        _ => Verdict::Allow,
    }
}

/// What one run released and decided: (output bytes, [(name, arguments or error, overflow)]).
type Run = (Vec<u8>, Vec<(String, Result<Value, String>, bool)>);

fn limits(max_held: usize) -> Limits {
    Limits {
        max_event: 1 << 20,
        max_held,
        idle: Duration::from_secs(1),
    }
}

/// Feed `data` cut at `cuts`; decide each call as it completes (`late`: only at the end).
fn drive<P: Protocol>(
    proto: P,
    data: &[u8],
    cuts: &[usize],
    decide: fn(&Proposed) -> Verdict,
    late: bool,
    max_held: usize,
) -> Run {
    let mut r = Relay::new(proto, limits(max_held));
    let mut out = Vec::new();
    let mut decided = Vec::new();
    let mut waiting = Vec::new();
    let mut pos = 0;
    for &c in cuts.iter().chain(std::iter::once(&data.len())) {
        let open = r.feed(&data[pos..c]);
        pos = c;
        for (i, p, overflow) in r.completed() {
            decided.push((p.name.clone(), p.arguments.clone(), overflow));
            let v = if overflow {
                Verdict::Deny(REFUSAL.into())
            } else {
                decide(&p)
            };
            if late {
                waiting.push((i, v));
            } else {
                r.set(i, v);
            }
        }
        out.extend(r.ready(None).into_iter().flat_map(|b| b.to_vec()));
        if !open {
            break;
        }
    }
    for (i, p) in r.end() {
        decided.push((p.name.clone(), Err("cut".into()), false));
        r.set(i, Verdict::Incomplete);
    }
    for (i, v) in waiting {
        r.set(i, v);
    }
    for b in r.close(true, || "denied".into()) {
        out.extend_from_slice(&b);
    }
    (out, decided)
}

/// Deterministic cut points: `n` random sizes in 1..=max.
fn cuts(seed: u64, len: usize, max: usize) -> Vec<usize> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut at = 0;
    let mut out = Vec::new();
    loop {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        at += 1 + (x as usize) % max;
        if at >= len {
            return out;
        }
        out.push(at);
    }
}

/// `drive` with the protocol the fixture's name says.
fn run_api(
    name: &str,
    data: &[u8],
    cuts: &[usize],
    decide: fn(&Proposed) -> Verdict,
    late: bool,
) -> Run {
    let held = 1 << 20;
    match name.split('_').next() {
        Some("chat") => drive(chat::Stream::new(false), data, cuts, decide, late, held),
        Some("responses") => drive(responses::Stream::default(), data, cuts, decide, late, held),
        _ => drive(messages::Stream::default(), data, cuts, decide, late, held),
    }
}

/// The same output and decisions for every chunking and decision timing.
fn invariant(name: &str, decide: fn(&Proposed) -> Verdict) -> Run {
    let data = fixture(name);
    let whole = run_api(name, &data, &[], decide, false);
    for seed in 0..60u64 {
        for max in [1, 3, 17, 64, 512] {
            let c = cuts(seed, data.len(), max);
            let late = seed % 2 == 1;
            let got = run_api(name, &data, &c, decide, late);
            assert_eq!(
                String::from_utf8_lossy(&got.0),
                String::from_utf8_lossy(&whole.0),
                "{name}: output differs when cut at {c:?} (late decisions: {late})"
            );
            assert_eq!(got.1, whole.1, "{name}: decisions differ when cut at {c:?}");
        }
    }
    whole
}

#[test]
fn text_streams_pass_byte_for_byte_at_any_chunking() {
    for name in ["chat_text.sse", "responses_text.sse", "messages_text.sse"] {
        let (out, decided) = invariant(name, policy);
        assert_eq!(out, fixture(name), "{name} is released exactly as sent");
        assert!(decided.is_empty());
    }
}

/// The tool call ids in a stream, in order of first appearance.
fn call_ids(data: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(data);
    let mut out: Vec<String> = Vec::new();
    for prefix in ["\"call_", "\"toolu_"] {
        for (at, _) in text.match_indices(prefix) {
            let id: String = text[at + 1..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if id != "call_id" && !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// The data lines of an SSE output, parsed.
fn events(out: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(out)
        .split("\n\n")
        .filter_map(|e| e.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
fn tool_calls_are_decided_once_and_the_denied_one_never_released() {
    for name in [
        "chat_tools.sse",
        "chat_tools_index0.sse",
        "responses_tools.sse",
        "messages_tools.sse",
    ] {
        let (out, decided) = invariant(name, policy);
        let args: Vec<Value> = decided.iter().map(|(_, a, _)| a.clone().unwrap()).collect();
        assert_eq!(
            args,
            vec![json!({"command": "ls -la"}), json!({"command": "rm -rf /"})],
            "{name}"
        );
        assert!(
            decided.iter().all(|(n, _, o)| n == "run_shell" && !o),
            "{name}"
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("-rf"),
            "{name}: a fragment of the denied call was released:\n{text}"
        );
        assert!(
            text.contains(REFUSAL),
            "{name}: the refusal is in the stream"
        );
        // The allowed call is released (its id is the first call id of the fixture), the denied
        // one is not (the second).
        let ids = call_ids(&fixture(name));
        assert!(
            text.contains(&ids[0]),
            "{name}: the allowed call is released"
        );
        if ids.len() > 1 {
            assert!(
                !text.contains(&ids[1]),
                "{name}: the denied call's id was released"
            );
        }
    }
}

#[test]
fn the_consistent_end_follows_what_was_released() {
    // Both denied: no call remains, so the stop reason says the turn ended.
    fn deny_all(_: &Proposed) -> Verdict {
        Verdict::Deny(REFUSAL.into())
    }
    let (out, _) = invariant("chat_tools.sse", deny_all);
    let finish: Vec<Value> = events(&out)
        .iter()
        .filter_map(|e| e.pointer("/choices/0/finish_reason").cloned())
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![json!("stop")]);
    let (out, _) = invariant("messages_tools.sse", deny_all);
    let stop: Vec<Value> = events(&out)
        .iter()
        .filter_map(|e| e.pointer("/delta/stop_reason").cloned())
        .collect();
    assert_eq!(stop, vec![json!("end_turn")]);
    let (out, _) = invariant("responses_tools.sse", deny_all);
    let done = events(&out)
        .into_iter()
        .find(|e| e["type"] == "response.completed")
        .unwrap();
    let types: Vec<&str> = done["response"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["message", "message", "message"],
        "denied calls are messages in the final output too"
    );
}

#[test]
fn released_chat_calls_are_numbered_without_gaps() {
    for name in ["chat_tools.sse", "chat_tools_index0.sse"] {
        let (out, _) = invariant(name, inverted);
        let indexes: Vec<u64> = events(&out)
            .iter()
            .filter_map(|e| {
                e.pointer("/choices/0/delta/tool_calls/0/index")
                    .and_then(Value::as_u64)
            })
            .collect();
        assert!(
            !indexes.is_empty() && indexes.iter().all(|&i| i == 0),
            "{name}: the one released call is index 0: {indexes:?}"
        );
    }
    // Both allowed from a server that reuses index 0: the second becomes index 1.
    fn allow_all(_: &Proposed) -> Verdict {
        Verdict::Allow
    }
    let (out, decided) = invariant("chat_tools_index0.sse", allow_all);
    assert_eq!(decided.len(), 2);
    let indexes: Vec<u64> = events(&out)
        .iter()
        .filter_map(|e| {
            e.pointer("/choices/0/delta/tool_calls/0/index")
                .and_then(Value::as_u64)
        })
        .collect();
    assert_eq!(indexes.first(), Some(&0));
    assert_eq!(indexes.last(), Some(&1), "{indexes:?}");
}

#[test]
fn a_cut_call_releases_nothing_and_the_stream_ends_with_the_apis_error() {
    for (name, error, call) in [
        ("chat_truncated.sse", "\"error\":{", "\"tool_calls\""),
        ("responses_truncated.sse", "event: error\n", "function_call"),
        ("messages_truncated.sse", "event: error\n", "tool_use"),
    ] {
        let (out, decided) = invariant(name, policy);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.ends_with("\n\n") && text.contains(error),
            "{name}: {text}"
        );
        assert!(
            !text.contains(call),
            "{name}: nothing of the cut call is released:\n{text}"
        );
        assert!(
            matches!(decided.last(), Some((_, Err(e), _)) if e == "cut"),
            "{name}: {decided:?}"
        );
    }
}

#[test]
fn a_call_over_the_held_bound_is_denied_and_its_bytes_dropped() {
    let data = fixture("messages_tools.sse");
    for max in [1, 7, 300] {
        let (out, decided) = drive(
            messages::Stream::default(),
            &data,
            &cuts(3, data.len(), max),
            policy,
            false,
            600,
        );
        assert!(
            decided.iter().all(|(_, _, overflow)| *overflow),
            "{decided:?}"
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            !text.contains("tool_use") && !text.contains("input_json_delta"),
            "{text}"
        );
        assert!(
            text.contains("text_delta"),
            "text before the calls still streams: {text}"
        );
    }
}

#[test]
fn malformed_upstream_events_fail_closed() {
    let good = fixture("chat_tools.sse");
    let text = String::from_utf8_lossy(&good);
    // Break the stream inside the second call.
    let at = text.find("rm").unwrap();
    let line_end = at + text[at..].find("\n\n").unwrap() + 2;
    let mut bad = good[..line_end].to_vec();
    bad.extend_from_slice(b"data: {not json\n\n");
    bad.extend_from_slice(&good[line_end..]);
    let (out, decided) = drive(chat::Stream::new(false), &bad, &[], policy, false, 1 << 20);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("upstream_malformed"), "{out}");
    assert!(!out.contains("-rf"), "{out}");
    assert_eq!(
        decided.len(),
        2,
        "the first call completed and was decided, the cut one refused"
    );
    assert!(decided[1].1.is_err());
    // An oversize event is a fault too, not a truncated event.
    let mut r = Relay::new(
        messages::Stream::default(),
        Limits {
            max_event: 64,
            ..limits(1 << 20)
        },
    );
    assert!(!r.feed(&[b'x'; 65]));
    let last = r.close(true, String::new);
    assert!(String::from_utf8_lossy(&last[0]).contains("max_event_bytes"));
}

#[test]
fn output_behind_a_pending_decision_stops_the_reading() {
    // A complete call waits for its (human) decision while the provider keeps talking.
    let data = fixture("messages_tools.sse");
    let mut r = Relay::new(messages::Stream::default(), limits(2048));
    assert!(r.feed(&data));
    let completed = r.completed();
    assert_eq!(completed.len(), 2);
    assert!(completed.iter().all(|(_, _, overflow)| !overflow));
    let first = String::from_utf8_lossy(&r.ready(None).concat()).into_owned();
    assert!(
        first.contains("text_delta"),
        "text before the call went out"
    );
    assert!(!first.contains("tool_use"), "the calls are held");
    assert!(!r.backlogged());
    for _ in 0..100 {
        assert!(r.feed(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"));
    }
    assert!(r.ready(None).is_empty(), "nothing passes a held call");
    assert!(
        r.backlogged(),
        "what follows the calls piles up: stop reading"
    );
    for (i, p, _) in completed {
        r.set(i, policy(&p));
    }
    let rest = r.ready(None);
    assert!(!rest.is_empty());
    assert!(!r.backlogged(), "released: reading resumes");
}

#[test]
fn a_chat_chunk_carrying_several_things_is_split_into_one_per_thing() {
    // Some compatible servers send a whole answer in one chunk.
    let chunk = json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi", "tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "run_shell", "arguments": "{\"command\": \"ls -la\"}"}},
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "run_shell", "arguments": "{\"command\": \"rm -rf /\"}"}}]},
            "finish_reason": "tool_calls"}]});
    let data = format!("data: {chunk}\n\ndata: [DONE]\n\n").into_bytes();
    let whole = drive(chat::Stream::new(false), &data, &[], policy, false, 1 << 20);
    for seed in 0..40 {
        let c = cuts(seed, data.len(), 29);
        assert_eq!(
            drive(
                chat::Stream::new(false),
                &data,
                &c,
                policy,
                seed % 2 == 0,
                1 << 20
            ),
            whole
        );
    }
    let (out, decided) = whole;
    assert_eq!(decided.len(), 2);
    let ev = events(&out);
    let deltas: Vec<&Value> = ev.iter().map(|e| &e["choices"][0]["delta"]).collect();
    assert_eq!(
        deltas[0],
        &json!({"role": "assistant", "content": "Hi"}),
        "text first, with the role"
    );
    assert_eq!(deltas[1]["tool_calls"][0]["id"], "call_a");
    assert!(deltas[2]["content"].as_str().unwrap().contains(REFUSAL));
    assert_eq!(
        ev[3]["choices"][0]["finish_reason"], "tool_calls",
        "one call remains"
    );
    assert_eq!(ev.len(), 4);
    assert!(String::from_utf8_lossy(&out).ends_with("data: [DONE]\n\n"));
    assert!(!String::from_utf8_lossy(&out).contains("call_b"));
}

#[test]
fn a_call_whose_decision_never_comes_is_denied() {
    let data = fixture("chat_tools.sse");
    let mut r = Relay::new(chat::Stream::new(false), limits(1 << 20));
    assert!(r.feed(&data));
    assert_eq!(r.completed().len(), 2);
    assert!(r.end().is_empty());
    assert!(r.undecided());
    assert!(r.deny_undecided());
    assert!(!r.undecided());
    let out = String::from_utf8_lossy(&r.close(true, String::new).concat()).into_owned();
    assert!(out.contains("could not decide this tool call"), "{out}");
    assert!(
        !out.contains("call_mK1") && !out.contains("-rf"),
        "neither call is released: {out}"
    );
}
