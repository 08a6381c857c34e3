//! OpenAI Chat Completions: `choices[].message.tool_calls` in a whole response; in a stream,
//! `chat.completion.chunk`s whose `delta.tool_calls[]` carry each call's `function.arguments`
//! in fragments keyed by `index`.
//!
//! A call is complete when a delta for another call of its choice begins (another `index`, or
//! the same `index` with a new `id`, as some compatible servers send), or when its choice
//! finishes. Released calls are numbered 0, 1, … in release order (the SDKs accumulate by
//! index, so a removed call must not leave a gap); a chunk keeps its original bytes unless its
//! index had to change. A chunk that carries more than one thing (text and a call, two calls,
//! a call and the finish reason) is split into one chunk per thing.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};

use super::sse::Frame;
use super::stream::{Call, Flow, Protocol, Queue};
use super::{Proposed, Verdict, data_event, parse_arguments};
use crate::action::Usage;

/// Where a call is in a whole response: (choice, position in `tool_calls`).
pub type At = (usize, usize);

pub fn usage(body: &Value) -> Usage {
    read_usage(body.get("usage"))
}

fn read_usage(u: Option<&Value>) -> Usage {
    let n = |k: &str| {
        u.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    Usage {
        input_tokens: n("prompt_tokens"),
        output_tokens: n("completion_tokens"),
    }
}

/// Every tool call of a whole response.
pub fn calls(body: &Value) -> Vec<(At, Proposed)> {
    let mut out = Vec::new();
    let choices = body.get("choices").and_then(Value::as_array);
    for (c, choice) in choices.into_iter().flatten().enumerate() {
        let calls = choice
            .pointer("/message/tool_calls")
            .and_then(Value::as_array);
        for (k, call) in calls.into_iter().flatten().enumerate() {
            out.push(((c, k), proposed_of(call)));
        }
    }
    out
}

fn proposed_of(call: &Value) -> Proposed {
    let s = |p: &str| call.pointer(p).and_then(Value::as_str);
    let id = s("/id").unwrap_or("").to_string();
    if let Some(name) = s("/function/name") {
        return Proposed {
            id,
            name: name.to_string(),
            arguments: match call.pointer("/function/arguments") {
                Some(Value::String(a)) => parse_arguments(a),
                _ => Err("function.arguments is not a string".into()),
            },
            argv: Vec::new(),
        };
    }
    if let Some(name) = s("/custom/name") {
        return Proposed {
            id,
            name: name.to_string(),
            arguments: Ok(json!({ "input": s("/custom/input").unwrap_or("") })),
            argv: Vec::new(),
        };
    }
    Proposed {
        id,
        name: String::new(),
        arguments: Err("the tool call is neither a function nor a custom tool call".into()),
        argv: Vec::new(),
    }
}

/// Remove denied calls, say why in the message text, and keep `finish_reason` consistent.
pub fn rewrite(body: &mut Value, verdicts: &[(At, Verdict)]) {
    let Some(choices) = body.get_mut("choices").and_then(Value::as_array_mut) else {
        return;
    };
    for (c, choice) in choices.iter_mut().enumerate() {
        let mine: Vec<&(At, Verdict)> = verdicts.iter().filter(|((vc, _), _)| *vc == c).collect();
        if mine.is_empty() {
            continue;
        }
        let Some(msg) = choice.get_mut("message").and_then(Value::as_object_mut) else {
            continue;
        };
        let mut refusals = String::new();
        if let Some(Value::Array(calls)) = msg.get_mut("tool_calls") {
            let mut k = 0;
            calls.retain(|_| {
                let keep = !mine
                    .iter()
                    .any(|((_, vk), v)| *vk == k && *v != Verdict::Allow);
                k += 1;
                keep
            });
            for (_, v) in &mine {
                if let Verdict::Deny(t) = v {
                    refusals.push_str(t);
                }
            }
            if calls.is_empty() {
                msg.remove("tool_calls");
            }
        }
        let left = msg.get("tool_calls").is_some();
        if !refusals.is_empty() {
            let text = match msg.get("content") {
                Some(Value::String(s)) => format!("{s}{refusals}"),
                _ => refusals.trim_start().to_string(),
            };
            msg.insert("content".into(), Value::String(text));
        }
        if !left && choice.get("finish_reason").and_then(Value::as_str) == Some("tool_calls") {
            choice["finish_reason"] = Value::String("stop".into());
        }
    }
}

// === streaming ===

pub struct Stream {
    /// Portcullis asked for the usage chunk; the agent did not.
    strip_usage: bool,
    usage: Usage,
    text: String,
    /// The first chunk's envelope (id, object, created, model, …): made chunks carry it.
    envelope: Option<Map<String, Value>>,
    /// Next released index, per choice.
    next_index: HashMap<u64, u64>,
    /// Choices whose `delta.role` went out.
    role_sent: HashSet<u64>,
}

impl Stream {
    pub fn new(strip_usage: bool) -> Stream {
        Stream {
            strip_usage,
            usage: Usage::default(),
            text: String::new(),
            envelope: None,
            next_index: HashMap::new(),
            role_sent: HashSet::new(),
        }
    }

    /// A chunk with this envelope and one choice.
    fn chunk(&self, envelope: &Map<String, Value>, choice: Value) -> Bytes {
        let mut m = envelope.clone();
        m.insert("choices".into(), Value::Array(vec![choice]));
        data_event(&Value::Object(m))
    }

    /// One tool-call delta of choice `group`: continue its call or begin a new one.
    fn tool_delta(
        &mut self,
        q: &mut Queue,
        group: u64,
        entry: &Value,
        bytes: Bytes,
        role: bool,
    ) -> Result<(), String> {
        let index = entry
            .get("index")
            .and_then(Value::as_u64)
            .ok_or("a tool_calls delta has no index")?;
        let id = entry
            .get("id")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty());
        let (name, args) = match (entry.get("function"), entry.get("custom")) {
            (Some(f), _) => (
                f.get("name").and_then(Value::as_str),
                f.get("arguments").and_then(Value::as_str),
            ),
            (None, Some(c)) => (
                c.get("name").and_then(Value::as_str),
                c.get("input").and_then(Value::as_str),
            ),
            (None, None) => (None, None),
        };
        let current = q.open(group, index);
        let i = match current {
            // The same index with a new id: a compatible server's next call.
            Some(i) if id.is_some_and(|id| !q.calls[i].id.is_empty() && q.calls[i].id != id) => {
                q.complete(i);
                None
            }
            Some(i) => Some(i),
            None => None,
        };
        let i = match i {
            Some(i) => i,
            None => {
                if id.is_none() && q.calls.iter().any(|c| c.group == group && c.key == index) {
                    return Err(format!(
                        "a tool_calls delta for index {index}, whose call was already complete"
                    ));
                }
                // A new call completes the others of its choice (calls stream one at a time).
                for o in q.open_in(group) {
                    q.complete(o);
                }
                q.start(Call {
                    group,
                    key: index,
                    id: id.unwrap_or("").to_string(),
                    custom: entry.get("custom").is_some(),
                    ..Call::default()
                })
            }
        };
        if let Some(n) = name {
            q.calls[i].name.push_str(n);
        }
        q.calls[i].role |= role;
        q.hold(i, bytes, args.unwrap_or(""));
        Ok(())
    }
}

/// The fields of a chunk that decide whether it is plain text (read without building a tree:
/// most chunks of a stream are, and each one is on the token path).
#[derive(Deserialize)]
struct Lite<'a> {
    #[serde(borrow, default)]
    choices: Vec<LiteChoice<'a>>,
    #[serde(default)]
    usage: Option<IgnoredAny>,
    #[serde(default)]
    error: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct LiteChoice<'a> {
    #[serde(default)]
    index: u64,
    #[serde(borrow, default)]
    delta: Option<LiteDelta<'a>>,
    #[serde(default)]
    finish_reason: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct LiteDelta<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(default)]
    role: Option<IgnoredAny>,
    #[serde(default)]
    tool_calls: Option<IgnoredAny>,
}

impl Stream {
    /// A chunk of text (or a role) only, with no call, finish, usage or error: noted and
    /// passed as it is. Anything else (or anything odd) takes the full path.
    fn plain_text(&mut self, data: &str) -> bool {
        // A key is never escaped inside a JSON string value, so this finds every call.
        if data.contains("\"tool_calls\"") {
            return false;
        }
        let Ok(lite) = serde_json::from_str::<Lite>(data) else {
            return false;
        };
        let plain = lite.error.is_none()
            && lite.usage.is_none()
            && !lite.choices.is_empty()
            && lite.choices.iter().all(|c| {
                c.finish_reason.is_none() && c.delta.as_ref().is_none_or(|d| d.tool_calls.is_none())
            });
        if !plain {
            return false;
        }
        for c in &lite.choices {
            if let Some(d) = &c.delta {
                if let Some(t) = &d.content {
                    super::stream::keep_text(&mut self.text, t);
                }
                if d.role.is_some() {
                    self.role_sent.insert(c.index);
                }
            }
        }
        true
    }
}

/// A delta that carries nothing but a role, a null content or refusal, and tool calls.
fn trivial_besides_calls(delta: &Map<String, Value>) -> bool {
    delta.iter().all(|(k, v)| match k.as_str() {
        "tool_calls" | "role" => true,
        "content" | "refusal" => v.is_null() || v.as_str() == Some(""),
        _ => v.is_null(),
    })
}

impl Protocol for Stream {
    fn event(&mut self, f: Frame, q: &mut Queue) -> Result<Flow, String> {
        let data = f.data.trim();
        if data.is_empty() {
            q.emit(f.raw);
            return Ok(Flow::Continue);
        }
        if data == "[DONE]" {
            // Every call still open is complete: nothing more of it will come.
            for i in 0..q.calls.len() {
                q.complete(i);
            }
            q.fin(f.raw);
            return Ok(Flow::Continue);
        }
        if self.envelope.is_some() && self.plain_text(data) {
            q.emit(f.raw);
            return Ok(Flow::Continue);
        }
        let Value::Object(mut chunk) =
            serde_json::from_str::<Value>(data).map_err(|e| format!("a chunk is not JSON: {e}"))?
        else {
            return Err("a chunk is not a JSON object".into());
        };
        if chunk.get("error").is_some_and(|e| !e.is_null()) {
            q.emit(f.raw);
            return Ok(Flow::Failed);
        }
        let usage = chunk.get("usage").filter(|u| u.is_object()).cloned();
        if let Some(u) = &usage {
            self.usage = read_usage(Some(u));
        }
        let choices = match chunk.remove("choices") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(c)) => c,
            Some(_) => return Err("choices is not an array".into()),
        };
        let envelope = {
            let mut e = chunk.clone();
            e.remove("usage");
            e
        };
        if self.envelope.is_none() {
            self.envelope = Some(envelope.clone());
        }
        if choices.is_empty() {
            if usage.is_some() {
                q.fin(f.raw);
            } else {
                q.emit(f.raw);
            }
            return Ok(Flow::Continue);
        }
        // Read every choice first: whether the chunk can go out as it is depends on all.
        struct Part {
            group: u64,
            delta: Map<String, Value>,
            calls: Vec<Value>,
            finish: Option<Value>,
            rest: Map<String, Value>,
        }
        let mut parts = Vec::new();
        for ch in choices {
            let Value::Object(mut ch) = ch else {
                return Err("a choice is not an object".into());
            };
            let group = ch.get("index").and_then(Value::as_u64).unwrap_or(0);
            let mut delta = match ch.remove("delta") {
                Some(Value::Object(d)) => d,
                None | Some(Value::Null) => Map::new(),
                Some(_) => return Err("a delta is not an object".into()),
            };
            let calls = match delta.remove("tool_calls") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Array(c)) => c,
                Some(_) => return Err("delta.tool_calls is not an array".into()),
            };
            let finish = ch.remove("finish_reason").filter(|v| !v.is_null());
            if let Some(Value::String(t)) = delta.get("content") {
                super::stream::keep_text(&mut self.text, t);
            }
            parts.push(Part {
                group,
                delta,
                calls,
                finish,
                rest: ch,
            });
        }
        let any_calls = parts.iter().any(|p| !p.calls.is_empty());
        let any_finish = parts.iter().any(|p| p.finish.is_some());
        if !any_calls && !any_finish {
            for p in &parts {
                if p.delta.contains_key("role") {
                    self.role_sent.insert(p.group);
                }
            }
            q.emit(f.raw);
            return Ok(Flow::Continue);
        }
        // One call and nothing else that matters: held as sent.
        if parts.len() == 1
            && parts[0].calls.len() == 1
            && !any_finish
            && trivial_besides_calls(&parts[0].delta)
        {
            let p = &parts[0];
            let role = p.delta.contains_key("role");
            self.tool_delta(q, p.group, &p.calls[0], f.raw, role)?;
            return Ok(Flow::Continue);
        }
        // One finish and nothing else: completes the choice's calls, waits to be made
        // consistent with what was released.
        if !any_calls && parts.len() == 1 && trivial_besides_calls(&parts[0].delta) {
            for i in q.open_in(parts[0].group) {
                q.complete(i);
            }
            q.fin(f.raw);
            return Ok(Flow::Continue);
        }
        // Anything else is split, one chunk per thing, in the order the SDKs apply them.
        for p in parts {
            let choice = |delta: Value, finish: Value| {
                let mut c = p.rest.clone();
                c.insert("index".into(), Value::from(p.group));
                c.insert("delta".into(), delta);
                c.insert("finish_reason".into(), finish);
                c
            };
            let has_role = p.delta.contains_key("role");
            // Text (or anything else that is not a call) goes first, with the role if any;
            // else the role goes with the first call.
            let other: Map<String, Value> = p
                .delta
                .iter()
                .filter(|(k, v)| !v.is_null() && *k != "role")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let text_part = !other.is_empty() && !trivial_besides_calls(&other);
            if text_part || (has_role && p.calls.is_empty()) {
                let mut other = other;
                if has_role {
                    other.insert("role".into(), p.delta["role"].clone());
                    self.role_sent.insert(p.group);
                }
                q.emit(self.chunk(
                    &envelope,
                    Value::Object(choice(Value::Object(other), Value::Null)),
                ));
            }
            let role_left = has_role && !text_part && !p.calls.is_empty();
            for (n, entry) in p.calls.iter().enumerate() {
                let mut delta = Map::new();
                let role = role_left && n == 0;
                if role {
                    delta.insert("role".into(), p.delta["role"].clone());
                }
                delta.insert("tool_calls".into(), Value::Array(vec![entry.clone()]));
                let bytes = self.chunk(
                    &envelope,
                    Value::Object(choice(Value::Object(delta), Value::Null)),
                );
                self.tool_delta(q, p.group, entry, bytes, role)?;
            }
            if let Some(fin) = p.finish {
                for i in q.open_in(p.group) {
                    q.complete(i);
                }
                let mut e = envelope.clone();
                if let Some(u) = &usage {
                    e.insert("usage".into(), u.clone());
                }
                let bytes = self.chunk(&e, Value::Object(choice(json!({}), fin)));
                q.fin(bytes);
            }
        }
        Ok(Flow::Continue)
    }

    fn proposed(&self, c: &Call) -> Proposed {
        Proposed {
            id: c.id.clone(),
            name: c.name.clone(),
            arguments: if c.custom {
                Ok(json!({ "input": c.args }))
            } else {
                parse_arguments(&c.args)
            },
            argv: Vec::new(),
        }
    }

    fn release(&mut self, calls: &[Call], i: usize) -> Vec<Bytes> {
        let c = &calls[i];
        match &c.verdict {
            Some(Verdict::Allow) => {
                let next = self.next_index.entry(c.group).or_insert(0);
                let out = *next;
                *next += 1;
                if c.role {
                    self.role_sent.insert(c.group);
                }
                if out == c.key {
                    return c.held.clone();
                }
                c.held
                    .iter()
                    .map(|b| renumber(b, out).unwrap_or_else(|| b.clone()))
                    .collect()
            }
            Some(Verdict::Deny(text)) => {
                let Some(envelope) = &self.envelope else {
                    return Vec::new();
                };
                let mut delta = Map::new();
                if c.role && !self.role_sent.contains(&c.group) {
                    delta.insert("role".into(), Value::String("assistant".into()));
                    self.role_sent.insert(c.group);
                }
                delta.insert("content".into(), Value::String(text.clone()));
                let choice = json!({"index": c.group, "delta": delta, "logprobs": null, "finish_reason": null});
                vec![self.chunk(envelope, choice)]
            }
            Some(Verdict::Incomplete) | None => Vec::new(),
        }
    }

    fn finish(&mut self, raw: Bytes, calls: &[Call]) -> Option<Bytes> {
        let text = std::str::from_utf8(&raw).ok()?;
        let data = text.trim().strip_prefix("data:").map(str::trim)?;
        if data == "[DONE]" {
            return Some(raw);
        }
        let mut v: Value = serde_json::from_str(data).ok()?;
        let choices = v.get_mut("choices").and_then(Value::as_array_mut);
        let Some(choices) = choices.filter(|c| !c.is_empty()) else {
            // The usage chunk: portcullis asked for it, so an agent that did not never sees it.
            return if self.strip_usage { None } else { Some(raw) };
        };
        let mut changed = false;
        for ch in choices.iter_mut() {
            let group = ch.get("index").and_then(Value::as_u64).unwrap_or(0);
            if ch.get("finish_reason").and_then(Value::as_str) == Some("tool_calls")
                && Queue::allowed_in(calls, group) == 0
            {
                ch["finish_reason"] = Value::String("stop".into());
                changed = true;
            }
        }
        if self.strip_usage
            && let Some(m) = v.as_object_mut()
            && m.get("usage").is_some_and(|u| !u.is_null())
        {
            m.insert("usage".into(), Value::Null);
            changed = true;
        }
        Some(if changed { data_event(&v) } else { raw })
    }

    fn error(&mut self, code: &str, message: &str) -> Bytes {
        data_event(
            &json!({"error": {"message": message, "type": "server_error", "param": null, "code": code}}),
        )
    }

    fn usage(&self) -> Usage {
        self.usage
    }

    fn text(&self) -> &str {
        &self.text
    }
}

/// A single-call chunk with its call's index changed to `index`.
fn renumber(raw: &Bytes, index: u64) -> Option<Bytes> {
    let text = std::str::from_utf8(raw).ok()?;
    let data = text.trim().strip_prefix("data:")?.trim();
    let mut v: Value = serde_json::from_str(data).ok()?;
    let entry = v.pointer_mut("/choices/0/delta/tool_calls/0")?;
    entry["index"] = Value::from(index);
    Some(data_event(&v))
}
