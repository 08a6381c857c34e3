//! Anthropic Messages: `tool_use` content blocks in a whole response; in a stream, a
//! `tool_use` block is everything from its `content_block_start` to its `content_block_stop`,
//! its input streamed as `input_json_delta` fragments.
//!
//! A denied block is replaced, at the same index, by a text block that says why, so block
//! indexes (which the SDKs accumulate by) never change; `stop_reason` becomes `end_turn` when
//! no `tool_use` block is left. Blocks the provider runs itself (`server_tool_use` and the
//! like) are not the agent's actions and pass.

use bytes::Bytes;
use serde_json::{Value, json};

use super::sse::Frame;
use super::stream::{Call, Flow, Protocol, Queue};
use super::{Proposed, Verdict, named_event, parse_arguments};
use crate::action::Usage;

pub fn usage(body: &Value) -> Usage {
    let n = |k: &str| body.pointer(k).and_then(Value::as_u64).unwrap_or(0);
    Usage {
        input_tokens: n("/usage/input_tokens"),
        output_tokens: n("/usage/output_tokens"),
    }
}

/// Every `tool_use` block of a whole response, by block index.
pub fn calls(body: &Value) -> Vec<(usize, Proposed)> {
    let blocks = body.get("content").and_then(Value::as_array);
    blocks
        .into_iter()
        .flatten()
        .enumerate()
        .filter(|(_, b)| b.get("type").and_then(Value::as_str) == Some("tool_use"))
        .map(|(i, b)| {
            let s = |k: &str| b.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            (
                i,
                Proposed {
                    id: s("id"),
                    name: s("name"),
                    arguments: match b.get("input") {
                        Some(v @ Value::Object(_)) => Ok(v.clone()),
                        _ => Err("input is not an object".into()),
                    },
                    argv: Vec::new(),
                },
            )
        })
        .collect()
}

/// Replace denied blocks by text blocks and keep `stop_reason` consistent.
pub fn rewrite(body: &mut Value, verdicts: &[(usize, Verdict)]) {
    let Some(blocks) = body.get_mut("content").and_then(Value::as_array_mut) else {
        return;
    };
    for (i, v) in verdicts {
        if let (Verdict::Deny(text), Some(b)) = (v, blocks.get_mut(*i)) {
            *b = json!({"type": "text", "text": text});
        }
    }
    let left = blocks
        .iter()
        .any(|b| b.get("type").and_then(Value::as_str) == Some("tool_use"));
    if !left && body.get("stop_reason").and_then(Value::as_str) == Some("tool_use") {
        body["stop_reason"] = Value::String("end_turn".into());
    }
}

#[derive(Default)]
pub struct Stream {
    usage: Usage,
    text: String,
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
        let index = v.get("index").and_then(Value::as_u64);
        let open = index.and_then(|i| q.open(0, i));
        match ty {
            "message_start" => {
                let n = |k: &str| v.pointer(k).and_then(Value::as_u64).unwrap_or(0);
                self.usage.input_tokens = n("/message/usage/input_tokens");
                self.usage.output_tokens = n("/message/usage/output_tokens");
                q.emit(f.raw);
            }
            "content_block_start" => {
                let index = index.ok_or("content_block_start has no index")?;
                if open.is_some() || q.calls.iter().any(|c| c.key == index) {
                    return Err(format!("content block {index} started twice"));
                }
                let block = v
                    .get("content_block")
                    .ok_or("content_block_start has no content_block")?;
                if block.get("type").and_then(Value::as_str) == Some("tool_use") {
                    let s = |k: &str| {
                        block
                            .get(k)
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_string()
                    };
                    // Input given whole at the start (no deltas follow) counts as streamed.
                    let seeded = block
                        .get("input")
                        .filter(|i| i.as_object().is_some_and(|o| !o.is_empty()))
                        .map(|i| i.to_string())
                        .unwrap_or_default();
                    let i = q.start(Call {
                        key: index,
                        id: s("id"),
                        name: s("name"),
                        ..Call::default()
                    });
                    q.hold(i, f.raw, &seeded);
                } else {
                    q.emit(f.raw);
                }
            }
            "content_block_delta" => match open {
                Some(i) => {
                    let d = v.get("delta");
                    if d.and_then(|d| d.get("type")).and_then(Value::as_str)
                        != Some("input_json_delta")
                    {
                        return Err(
                            "a tool_use block got a delta other than input_json_delta".into()
                        );
                    }
                    let part = d
                        .and_then(|d| d.get("partial_json"))
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    q.hold(i, f.raw, part);
                }
                None => {
                    if let Some(t) = v.pointer("/delta/text").and_then(Value::as_str) {
                        super::stream::keep_text(&mut self.text, t);
                    }
                    q.emit(f.raw);
                }
            },
            "content_block_stop" => match open {
                Some(i) => {
                    q.hold(i, f.raw, "");
                    q.complete(i);
                }
                None => q.emit(f.raw),
            },
            "message_delta" => {
                if let Some(n) = v.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                    self.usage.output_tokens = n;
                }
                if let Some(n) = v.pointer("/usage/input_tokens").and_then(Value::as_u64) {
                    self.usage.input_tokens = n;
                }
                q.fin(f.raw);
            }
            "message_stop" => q.fin(f.raw),
            "error" => {
                q.emit(f.raw);
                return Ok(Flow::Failed);
            }
            // `ping`, and types this version does not know, outside any tool_use block.
            _ if q.open_in(0).is_empty() => q.emit(f.raw),
            other => return Err(format!("a {other:?} event inside a tool_use block")),
        }
        Ok(Flow::Continue)
    }

    fn proposed(&self, c: &Call) -> Proposed {
        Proposed {
            id: c.id.clone(),
            name: c.name.clone(),
            arguments: parse_arguments(&c.args),
            argv: Vec::new(),
        }
    }

    fn release(&mut self, calls: &[Call], i: usize) -> Vec<Bytes> {
        let c = &calls[i];
        match &c.verdict {
            Some(Verdict::Allow) => c.held.clone(),
            Some(Verdict::Deny(text)) => vec![
                named_event(
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": c.key, "content_block": {"type": "text", "text": ""}}),
                ),
                named_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": c.key, "delta": {"type": "text_delta", "text": text}}),
                ),
                named_event(
                    "content_block_stop",
                    &json!({"type": "content_block_stop", "index": c.key}),
                ),
            ],
            Some(Verdict::Incomplete) | None => Vec::new(),
        }
    }

    fn finish(&mut self, raw: Bytes, calls: &[Call]) -> Option<Bytes> {
        let text = std::str::from_utf8(&raw).ok()?;
        let data = text.lines().find_map(|l| l.strip_prefix("data:"))?.trim();
        let mut v: Value = serde_json::from_str(data).ok()?;
        if v.get("type").and_then(Value::as_str) == Some("message_delta")
            && v.pointer("/delta/stop_reason").and_then(Value::as_str) == Some("tool_use")
            && Queue::allowed_in(calls, 0) == 0
        {
            v["delta"]["stop_reason"] = Value::String("end_turn".into());
            return Some(named_event("message_delta", &v));
        }
        Some(raw)
    }

    fn error(&mut self, _code: &str, message: &str) -> Bytes {
        named_event(
            "error",
            &json!({"type": "error", "error": {"type": "api_error", "message": message}}),
        )
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn text(&self) -> &str {
        &self.text
    }
}
