//! OpenAI Responses: output items the agent executes (`function_call`, `custom_tool_call`,
//! `local_shell_call`, `shell_call`, `apply_patch_call`, `computer_call`) are tool calls; items
//! the provider runs itself (web search, file search, code interpreter, remote MCP) are not the
//! agent's actions and pass. In a stream, a call is every event from its
//! `response.output_item.added` to its `response.output_item.done` (the events in between carry
//! its `output_index`); the item in `output_item.done` is what is decided.
//!
//! A denied call is replaced, at the same `output_index`, by an assistant message that says
//! why, and the same replacement is made in `response.completed`'s `output`. The SDKs do not
//! check `sequence_number` continuity; replacement events reuse the numbers of the held ones.

use bytes::Bytes;
use serde_json::{Value, json};

use super::sse::Frame;
use super::stream::{Call, Flow, Protocol, Queue};
use super::{Proposed, Verdict, named_event, parse_arguments};
use crate::action::Usage;

/// Output item types the agent executes.
const CLIENT_CALLS: &[&str] = &[
    "function_call",
    "custom_tool_call",
    "local_shell_call",
    "shell_call",
    "apply_patch_call",
    "computer_call",
];

fn is_call(item: &Value) -> bool {
    item.get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| CLIENT_CALLS.contains(&t))
}

pub fn usage(body: &Value) -> Usage {
    let n = |k: &str| body.pointer(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("/usage/input_tokens"),
        output_tokens: n("/usage/output_tokens"),
    }
}

/// What an output item proposes.
pub fn proposed_of(item: &Value) -> Proposed {
    let s = |k: &str| item.get(k).and_then(Value::as_str).unwrap_or("");
    let ty = s("type");
    let id = if s("call_id").is_empty() {
        s("id")
    } else {
        s("call_id")
    }
    .to_string();
    let action = item.get("action").cloned().unwrap_or_else(|| json!({}));
    let strings = |v: Option<&Value>| -> Option<Vec<String>> {
        v?.as_array()?
            .iter()
            .map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    match ty {
        "function_call" => Proposed {
            id,
            name: s("name").to_string(),
            arguments: match item.get("arguments") {
                Some(Value::String(a)) => parse_arguments(a),
                _ => Err("arguments is not a string".into()),
            },
            argv: Vec::new(),
        },
        "custom_tool_call" => Proposed {
            id,
            name: s("name").to_string(),
            arguments: Ok(json!({ "input": s("input") })),
            argv: Vec::new(),
        },
        // The command is given as an argv: decided as the exec it is.
        "local_shell_call" => match strings(action.get("command")) {
            Some(argv) if !argv.is_empty() => Proposed {
                id,
                name: "local_shell".into(),
                arguments: Ok(action),
                argv: vec![argv],
            },
            _ => Proposed {
                id,
                name: "local_shell".into(),
                arguments: Err("action.command is not a non-empty array of strings".into()),
                argv: Vec::new(),
            },
        },
        // Shell command lines: each one decided as `sh -c LINE`.
        "shell_call" => match strings(action.get("commands")) {
            Some(lines) if !lines.is_empty() => Proposed {
                id,
                name: "shell".into(),
                arguments: Ok(action),
                argv: lines
                    .into_iter()
                    .map(|l| vec!["sh".into(), "-c".into(), l])
                    .collect(),
            },
            _ => Proposed {
                id,
                name: "shell".into(),
                arguments: Err("action.commands is not a non-empty array of strings".into()),
                argv: Vec::new(),
            },
        },
        other => Proposed {
            id,
            name: other.trim_end_matches("_call").to_string(),
            arguments: Ok(item
                .get("operation")
                .or(item.get("action"))
                .cloned()
                .unwrap_or_else(|| json!({}))),
            argv: Vec::new(),
        },
    }
}

/// Every call of a whole response, by output index.
pub fn calls(body: &Value) -> Vec<(usize, Proposed)> {
    let items = body.get("output").and_then(Value::as_array);
    items
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, item)| is_call(item))
        .map(|(i, item)| (i, proposed_of(item)))
        .collect()
}

/// The message that stands in for a denied call.
fn refusal_item(key: u64, text: &str, done: bool) -> Value {
    json!({
        "id": format!("msg_portcullis_{key}"),
        "type": "message",
        "status": if done { "completed" } else { "in_progress" },
        "role": "assistant",
        "content": if done { json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": text}]) } else { json!([]) },
    })
}

/// Replace denied items by messages that say why.
pub fn rewrite(body: &mut Value, verdicts: &[(usize, Verdict)]) {
    let Some(items) = body.get_mut("output").and_then(Value::as_array_mut) else {
        return;
    };
    for (i, v) in verdicts {
        if let (Verdict::Deny(text), Some(item)) = (v, items.get_mut(*i)) {
            *item = refusal_item(*i as u64, text, true);
        }
    }
}

#[derive(Default)]
pub struct Stream {
    usage: Usage,
    text: String,
    /// The last sequence number seen.
    seq: u64,
}

impl Protocol for Stream {
    fn event(&mut self, f: Frame, q: &mut Queue) -> Result<Flow, String> {
        if f.data.trim().is_empty() {
            q.emit(f.raw);
            return Ok(Flow::Continue);
        }
        let v: Value =
            serde_json::from_str(&f.data).map_err(|e| format!("an event is not JSON: {e}"))?;
        let ty = v
            .get("type")
            .and_then(Value::as_str)
            .ok_or("an event has no type")?;
        if let Some(n) = v.get("sequence_number").and_then(Value::as_u64) {
            self.seq = n;
        }
        let index = v.get("output_index").and_then(Value::as_u64);
        let open = index.and_then(|i| q.open(0, i));
        match (ty, open) {
            ("response.output_item.added", None) => {
                let item = v.get("item").ok_or("output_item.added has no item")?;
                let index = index.ok_or("output_item.added has no output_index")?;
                if q.calls.iter().any(|c| c.key == index) {
                    return Err(format!("output item {index} added twice"));
                }
                if is_call(item) {
                    let s = |k: &str| {
                        item.get(k)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string()
                    };
                    let i = q.start(Call {
                        key: index,
                        id: s("id"),
                        name: s("name"),
                        ..Call::default()
                    });
                    q.hold(i, f.raw, "");
                } else {
                    q.emit(f.raw);
                }
            }
            ("response.output_item.added", Some(_)) => {
                return Err(format!("output item {index:?} added twice"));
            }
            ("response.output_item.done", Some(i)) => {
                let item = v.get("item").ok_or("output_item.done has no item")?.clone();
                // What is decided: the whole item, as the provider finally gives it.
                let size = item.to_string();
                q.hold(i, f.raw, &size);
                q.calls[i].item = Some(item);
                q.complete(i);
            }
            (_, Some(i)) => q.hold(i, f.raw, ""),
            ("response.completed" | "response.incomplete" | "response.failed", None) => {
                let n = |k: &str| v.pointer(k).and_then(Value::as_u64).unwrap_or(0);
                self.usage = Usage {
                    input_tokens: n("/response/usage/input_tokens"),
                    output_tokens: n("/response/usage/output_tokens"),
                };
                // Nothing more of any call will come.
                for i in q.open_in(0) {
                    q.complete(i);
                }
                q.fin(f.raw);
            }
            ("error", None) => {
                q.emit(f.raw);
                return Ok(Flow::Failed);
            }
            (_, None) => {
                if ty == "response.output_text.delta"
                    && let Some(t) = v.get("delta").and_then(Value::as_str)
                {
                    super::stream::keep_text(&mut self.text, t);
                }
                q.emit(f.raw);
            }
        }
        Ok(Flow::Continue)
    }

    fn proposed(&self, c: &Call) -> Proposed {
        match &c.item {
            Some(item) => proposed_of(item),
            None => Proposed {
                id: c.id.clone(),
                name: c.name.clone(),
                arguments: Err("the call never completed".into()),
                argv: Vec::new(),
            },
        }
    }

    fn release(&mut self, calls: &[Call], i: usize) -> Vec<Bytes> {
        let c = &calls[i];
        match &c.verdict {
            Some(Verdict::Allow) => c.held.clone(),
            Some(Verdict::Deny(text)) => {
                let seq = c
                    .held
                    .first()
                    .and_then(|b| {
                        let t = std::str::from_utf8(b).ok()?;
                        let d = t.lines().find_map(|l| l.strip_prefix("data:"))?;
                        serde_json::from_str::<Value>(d.trim())
                            .ok()?
                            .get("sequence_number")?
                            .as_u64()
                    })
                    .unwrap_or(self.seq);
                let id = format!("msg_portcullis_{}", c.key);
                let part =
                    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": text});
                let empty =
                    json!({"type": "output_text", "annotations": [], "logprobs": [], "text": ""});
                let events = [
                    json!({"type": "response.output_item.added", "output_index": c.key, "item": refusal_item(c.key, text, false)}),
                    json!({"type": "response.content_part.added", "item_id": id, "output_index": c.key, "content_index": 0, "part": empty}),
                    json!({"type": "response.output_text.delta", "item_id": id, "output_index": c.key, "content_index": 0, "delta": text, "logprobs": []}),
                    json!({"type": "response.output_text.done", "item_id": id, "output_index": c.key, "content_index": 0, "text": text, "logprobs": []}),
                    json!({"type": "response.content_part.done", "item_id": id, "output_index": c.key, "content_index": 0, "part": part}),
                    json!({"type": "response.output_item.done", "output_index": c.key, "item": refusal_item(c.key, text, true)}),
                ];
                events
                    .into_iter()
                    .map(|mut e| {
                        e["sequence_number"] = Value::from(seq);
                        let name = e["type"].as_str().unwrap_or("").to_string();
                        named_event(&name, &e)
                    })
                    .collect()
            }
            Some(Verdict::Incomplete) | None => Vec::new(),
        }
    }

    fn finish(&mut self, raw: Bytes, calls: &[Call]) -> Option<Bytes> {
        let denied: Vec<(usize, Verdict)> = calls
            .iter()
            .filter(|c| matches!(c.verdict, Some(Verdict::Deny(_))))
            .filter_map(|c| Some((usize::try_from(c.key).ok()?, c.verdict.clone()?)))
            .collect();
        if denied.is_empty() {
            return Some(raw);
        }
        let text = std::str::from_utf8(&raw).ok()?;
        let data = text.lines().find_map(|l| l.strip_prefix("data:"))?.trim();
        let mut v: Value = serde_json::from_str(data).ok()?;
        let name = v.get("type").and_then(Value::as_str)?.to_string();
        if let Some(resp) = v.get_mut("response") {
            rewrite(resp, &denied);
        }
        Some(named_event(&name, &v))
    }

    fn error(&mut self, code: &str, message: &str) -> Bytes {
        // `error` nested as well: the SDKs raise on it.
        named_event(
            "error",
            &json!({"type": "error", "code": code, "message": message, "param": null,
                    "sequence_number": self.seq + 1,
                    "error": {"type": "server_error", "code": code, "message": message, "param": null}}),
        )
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn text(&self) -> &str {
        &self.text
    }
}
