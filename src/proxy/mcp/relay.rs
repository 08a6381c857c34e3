//! The MCP relay: one MCP session between an agent's client and one tool server, with every
//! proposed action decided by the Gate. Transport-agnostic: a transport feeds it lines from
//! either side and carries the lines it emits.
//!
//! What is decided (DESIGN §1: the front end builds Actions and enforces; it never decides):
//! * client → server `tools/call`, `resources/read`, `prompts/get`: a `tool_call` Action per
//!   facet the argument mappings give (a move is a delete and a write); all must be allowed;
//! * server → client results of those: a `tool_result` Action (findings, redactions, labels);
//! * `tools/list` results: a `tool_list` Action per tool; denied tools are hidden, every
//!   definition is digested and pinned on first sight;
//! * server → client requests (sampling, elicitation, roots): a `tool_call` Action whose
//!   `tool.name` is the method.
//!
//! Everything else is relayed unchanged. Responses whose id is not in flight are dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::jsonrpc::{self, Line, Message};
use super::pins::{self, Pins};
use crate::action::{Action, Decision, FileFacet, HttpFacet, Kind, Outcome, Tool, VERSION, Via};
use crate::config::ArgMapping;
use crate::gate::Gate;
use crate::gate::identity::Caller;
use crate::proxy::facets::{self, Built, mapped};
use crate::sync::lock;

/// Methods whose requests are decided before they reach the server.
const GATED: &[&str] = &["tools/call", "resources/read", "prompts/get"];

/// The fixed parts of a relay.
pub struct RelayConfig {
    pub server: String,
    /// Mappings from the config (preset included when it was named there).
    pub map: Vec<ArgMapping>,
    /// Detect a preset from `serverInfo.name` when the config named none.
    pub detect_preset: bool,
    pub max_line_bytes: usize,
    pub max_pending: usize,
}

/// One MCP session.
pub struct Relay {
    gate: Arc<Gate>,
    caller: Caller,
    session: String,
    cfg: RelayConfig,
    pins: Arc<Pins>,
    to_client: mpsc::Sender<Vec<u8>>,
    to_server: mpsc::Sender<(u64, Vec<u8>)>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Client requests in flight, by id key.
    calls: HashMap<String, Call>,
    /// Server requests forwarded to the client, by id key.
    served: HashSet<String>,
    /// The digest of each tool's definition as last listed.
    digests: HashMap<String, String>,
    map: Vec<ArgMapping>,
    /// The client's `initialize` request and `initialized` notification, replayed to a
    /// restarted server.
    init: Option<Value>,
    initialized: Option<Vec<u8>>,
    /// Generation of the server process; lines of an older one are dropped by the transport.
    generation: u64,
    /// The server answered `initialize`, so the argument mappings (a detected preset) are
    /// known: gated requests wait for this.
    ready: bool,
    up: bool,
}

#[derive(Clone)]
enum Call {
    Initialize,
    /// The replayed `initialize` of a restarted server: its response is not the client's.
    Reinit,
    ToolsList,
    /// A decided request, whose result is decided as a `tool_result`.
    Gated {
        tool: Box<Tool>,
        http: Option<Box<HttpFacet>>,
    },
    Other,
}

/// What several decisions add up to.
struct Verdict {
    decision: Decision,
    action_id: String,
    approval_id: Option<String>,
}

impl Relay {
    pub fn new(
        gate: Arc<Gate>,
        caller: Caller,
        session: String,
        cfg: RelayConfig,
        pins: Arc<Pins>,
        to_client: mpsc::Sender<Vec<u8>>,
        to_server: mpsc::Sender<(u64, Vec<u8>)>,
    ) -> Relay {
        let inner = Inner {
            map: cfg.map.clone(),
            ..Inner::default()
        };
        Relay {
            gate,
            caller,
            session,
            cfg,
            pins,
            to_client,
            to_server,
            inner: Mutex::new(inner),
        }
    }

    pub fn max_line_bytes(&self) -> usize {
        self.cfg.max_line_bytes
    }

    pub fn max_pending(&self) -> usize {
        self.cfg.max_pending
    }

    // === client → server ===

    /// One line from the client.
    pub async fn from_client(self: &Arc<Self>, line: Vec<u8>) {
        match jsonrpc::parse_line(&line, self.cfg.max_line_bytes) {
            Ok(Line::One(v)) => self.client_message(v, Some(line)).await,
            Ok(Line::Batch(items)) if items.is_empty() => {
                self.reply(jsonrpc::error(
                    &Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "empty batch",
                    None,
                ))
                .await;
            }
            // Each element is decided on its own; responses come back one by one, by id.
            Ok(Line::Batch(items)) => {
                for v in items {
                    self.client_message(v, None).await;
                }
            }
            Err(e) => {
                tracing::warn!(mcp.server = %self.cfg.server, error = %e, "refused a client message");
                let msg = format!("refused by portcullis: {e}");
                let mut ids = jsonrpc::salvage_ids(&line);
                if ids.is_empty() {
                    ids.push(Value::Null);
                }
                for id in ids {
                    self.reply(jsonrpc::error(&id, jsonrpc::PARSE_ERROR, &msg, None))
                        .await;
                }
            }
        }
    }

    async fn client_message(self: &Arc<Self>, v: Value, raw: Option<Vec<u8>>) {
        let raw = || match &raw {
            Some(r) => jsonrpc::forwardable(r.clone(), &v),
            None => jsonrpc::to_line(&v),
        };
        match jsonrpc::classify(&v) {
            Err(why) => {
                let id = v.get("id").cloned().unwrap_or(Value::Null);
                self.reply(jsonrpc::error(&id, jsonrpc::INVALID_REQUEST, why, None))
                    .await;
            }
            // Only `notifications/*` are notifications: a `tools/call` without an id is still a
            // call to a server that dispatches on the method, and it was not decided.
            Ok(Message::Notification { method }) if !method.starts_with("notifications/") => {
                tracing::warn!(mcp.server = %self.cfg.server, method, "dropped a client notification that is not notifications/*");
            }
            Ok(Message::Notification { method }) => {
                if method == "notifications/initialized" {
                    lock(&self.inner).initialized = Some(raw());
                }
                // A cancelled request gets no response: its slot is freed here.
                if method == "notifications/cancelled"
                    && let Some(id) = v.pointer("/params/requestId")
                {
                    self.finish_call(id);
                }
                self.forward(raw(), None).await;
            }
            Ok(Message::Response { id }) => {
                let known = lock(&self.inner).served.remove(&jsonrpc::id_key(id));
                if known {
                    self.forward(raw(), None).await;
                } else {
                    tracing::warn!(mcp.server = %self.cfg.server, id = %id, "dropped a client response to no request in flight");
                }
            }
            Ok(Message::Request { id, method, params }) => {
                let mut gated = None;
                let call = match method {
                    "initialize" => Call::Initialize,
                    "tools/list" => Call::ToolsList,
                    m if GATED.contains(&m) && !lock(&self.inner).ready => {
                        let msg = "the server has not answered initialize yet";
                        self.reply(jsonrpc::error(id, jsonrpc::INVALID_REQUEST, msg, None))
                            .await;
                        return;
                    }
                    m if GATED.contains(&m) => match self.gated_tool(m, params) {
                        Ok((tool, facets)) => {
                            let http = facets.iter().find_map(|f| match f {
                                Built::Http(h) => Some(h.clone()),
                                _ => None,
                            });
                            gated = Some((tool.clone(), facets));
                            Call::Gated {
                                tool: Box::new(tool),
                                http: http.map(Box::new),
                            }
                        }
                        Err(e) => {
                            self.reply(jsonrpc::error(id, jsonrpc::INVALID_PARAMS, &e, None))
                                .await;
                            return;
                        }
                    },
                    _ => Call::Other,
                };
                if let Err((code, msg)) = self.register(id, call, method == "initialize", &v) {
                    self.reply(jsonrpc::error(id, code, &msg, None)).await;
                    return;
                }
                match gated {
                    Some((tool, facets)) => {
                        let me = self.clone();
                        let (id, line) = (id.clone(), raw());
                        tokio::spawn(
                            async move { me.decide_request(id, tool, facets, line).await },
                        );
                    }
                    None => self.forward(raw(), Some(id)).await,
                }
            }
        }
    }

    /// Put a client request in flight; refused when the id is already in flight, the session
    /// has too many, or the server is down.
    fn register(
        &self,
        id: &Value,
        call: Call,
        init: bool,
        msg: &Value,
    ) -> Result<(), (i64, String)> {
        let mut inner = lock(&self.inner);
        if !inner.up {
            return Err((
                jsonrpc::SERVER_UNAVAILABLE,
                format!(
                    "tool server {:?} is not running (restarting)",
                    self.cfg.server
                ),
            ));
        }
        if inner.calls.len() >= self.cfg.max_pending {
            return Err((
                jsonrpc::TOO_MANY_PENDING,
                format!("{} requests in flight (mcp.max_pending)", inner.calls.len()),
            ));
        }
        let key = jsonrpc::id_key(id);
        if inner.calls.contains_key(&key) {
            return Err((
                jsonrpc::INVALID_REQUEST,
                format!("request id {id} is already in flight"),
            ));
        }
        inner.calls.insert(key, call);
        if init {
            inner.init = Some(msg.clone());
        }
        Ok(())
    }

    async fn decide_request(
        self: Arc<Self>,
        id: Value,
        tool: Tool,
        facets: Vec<Built>,
        line: Vec<u8>,
    ) {
        let actions = self.actions(Kind::ToolCall, &tool, facets);
        match self.decide(actions).await {
            Ok(v) if v.decision.outcome == Outcome::Allow => {
                // After a human approved a changed definition, it is the new pin.
                if v.approval_id.is_some()
                    && let (Some(d), Some(p)) = (&tool.description_digest, &tool.pinned_digest)
                    && d != p
                {
                    self.pins.repin(&self.cfg.server, &tool.name, d);
                }
                // Answered meanwhile (the server went down and the client was told to retry):
                // a late forward would run it twice.
                if self.in_flight(&id) {
                    self.forward(line, Some(&id)).await;
                }
            }
            Ok(v) => {
                self.finish_call(&id);
                self.reply(denied(&id, &v)).await;
            }
            Err(e) => {
                self.finish_call(&id);
                self.reply(jsonrpc::error(&id, jsonrpc::INVALID_PARAMS, &e, None))
                    .await;
            }
        }
    }

    fn finish_call(&self, id: &Value) {
        lock(&self.inner).calls.remove(&jsonrpc::id_key(id));
    }

    // === server → client ===

    /// One line from the server.
    pub async fn from_server(self: &Arc<Self>, line: Vec<u8>) {
        match jsonrpc::parse_line(&line, self.cfg.max_line_bytes) {
            Ok(Line::One(v)) => self.server_message(v, line).await,
            Ok(Line::Batch(items)) => {
                for v in items {
                    let raw = jsonrpc::to_line(&v);
                    self.server_message(v, raw).await;
                }
            }
            Err(e) => {
                tracing::warn!(mcp.server = %self.cfg.server, error = %e, bytes = line.len(), "dropped a server message that is not strict JSON");
                // The request it answered must not hang.
                let mut ids = jsonrpc::salvage_ids(&line);
                if ids.is_empty() {
                    let n = line.len().min(256);
                    ids.extend(jsonrpc::sniff_id(&line[..n], &line[line.len() - n..]));
                }
                for id in ids {
                    let why = format!("sent an invalid response: {e}");
                    self.fail_request(&id, jsonrpc::DENIED, &why).await;
                }
            }
        }
    }

    /// Whether client request `id` still waits for its answer.
    pub fn in_flight(&self, id: &Value) -> bool {
        lock(&self.inner).calls.contains_key(&jsonrpc::id_key(id))
    }

    /// The transport could not deliver request `id` (or its answer): the client gets `code`.
    pub async fn fail_request(&self, id: &Value, code: i64, why: &str) {
        if lock(&self.inner)
            .calls
            .remove(&jsonrpc::id_key(id))
            .is_some()
        {
            let msg = format!("tool server {:?}: {why}", self.cfg.server);
            self.reply(jsonrpc::error(id, code, &msg, None)).await;
        }
    }

    /// A server line over `max_line_bytes`: dropped (the transport skipped its bytes). If its
    /// ends show the id of a request in flight, that request fails instead of hanging.
    pub async fn oversize_from_server(&self, bytes: usize, head: &[u8], tail: &[u8]) {
        tracing::warn!(mcp.server = %self.cfg.server, bytes, limit = self.cfg.max_line_bytes, "dropped an oversize server line");
        if let Some(id) = jsonrpc::sniff_id(head, tail) {
            let why = format!(
                "answered with {bytes} bytes, over the limit of {} (mcp.max_line_bytes)",
                self.cfg.max_line_bytes
            );
            self.fail_request(&id, jsonrpc::DENIED, &why).await;
        }
    }

    async fn server_message(self: &Arc<Self>, v: Value, raw: Vec<u8>) {
        let raw = jsonrpc::forwardable(raw, &v);
        match jsonrpc::classify(&v) {
            Err(why) => {
                tracing::warn!(mcp.server = %self.cfg.server, why, "dropped an invalid server message");
            }
            Ok(Message::Notification { method }) if method.starts_with("notifications/") => {
                self.reply(raw).await;
            }
            Ok(Message::Notification { method }) => {
                tracing::warn!(mcp.server = %self.cfg.server, method, "dropped a server notification that is not notifications/*");
            }
            Ok(Message::Request { id, method, params }) => {
                if method == "ping" {
                    if self.served(id) {
                        self.reply(raw).await;
                    } else {
                        self.too_many_served(id).await;
                    }
                    return;
                }
                let me = self.clone();
                let (id, method, params) = (id.clone(), method.to_string(), params.cloned());
                tokio::spawn(
                    async move { me.decide_server_request(id, method, params, raw).await },
                );
            }
            Ok(Message::Response { id }) => {
                let call = lock(&self.inner).calls.remove(&jsonrpc::id_key(id));
                let Some(call) = call else {
                    tracing::warn!(mcp.server = %self.cfg.server, id = %id, "dropped a server response to no request in flight");
                    return;
                };
                match call {
                    Call::Reinit => {}
                    Call::Initialize => {
                        self.detect_preset(&v);
                        lock(&self.inner).ready = true;
                        self.reply(raw).await;
                    }
                    Call::Other => self.reply(raw).await,
                    Call::ToolsList => {
                        let me = self.clone();
                        tokio::spawn(async move { me.filter_tools(v).await });
                    }
                    Call::Gated { tool, http } => {
                        let me = self.clone();
                        tokio::spawn(async move {
                            me.decide_result(v, raw, *tool, http.map(|h| *h)).await
                        });
                    }
                }
            }
        }
    }

    /// Put a server request in flight to the client; false when the session has too many.
    fn served(&self, id: &Value) -> bool {
        let mut inner = lock(&self.inner);
        if inner.served.len() >= self.cfg.max_pending {
            return false;
        }
        inner.served.insert(jsonrpc::id_key(id));
        true
    }

    async fn too_many_served(&self, id: &Value) {
        let msg = format!(
            "{} requests to the client in flight (mcp.max_pending)",
            self.cfg.max_pending
        );
        self.forward(
            jsonrpc::error(id, jsonrpc::TOO_MANY_PENDING, &msg, None),
            None,
        )
        .await;
    }

    async fn decide_server_request(
        self: Arc<Self>,
        id: Value,
        method: String,
        params: Option<Value>,
        raw: Vec<u8>,
    ) {
        let tool = Tool {
            server: self.cfg.server.clone(),
            name: method.clone(),
            arguments: params.unwrap_or_else(|| json!({})),
            description_digest: None,
            pinned_digest: None,
            payload: None,
        };
        let actions = self.actions(Kind::ToolCall, &tool, Vec::new());
        match self.decide(actions).await {
            Ok(v) if v.decision.outcome == Outcome::Allow => {
                if self.served(&id) {
                    self.reply(raw).await;
                } else {
                    self.too_many_served(&id).await;
                }
            }
            Ok(v) => self.forward(denied(&id, &v), None).await,
            Err(e) => {
                self.forward(jsonrpc::error(&id, jsonrpc::INVALID_PARAMS, &e, None), None)
                    .await;
            }
        }
    }

    async fn decide_result(
        self: Arc<Self>,
        mut v: Value,
        raw: Vec<u8>,
        mut tool: Tool,
        http: Option<HttpFacet>,
    ) {
        let id = v["id"].clone();
        // An error answer carries text for the model too: decided like a result (its
        // findings' `where` still start `result.`).
        let member = if v.get("result").is_some() {
            "result"
        } else {
            "error"
        };
        let Some(result) = v.get_mut(member) else {
            self.reply(raw).await;
            return;
        };
        // Moved into the Action for scanning and moved back after: a result can be large.
        tool.payload = Some(std::mem::take(result));
        let mut action = base_action(Kind::ToolResult, tool);
        action.http = http;
        let mut pending = match self.gate.decide_for(&self.caller, &self.session, action) {
            Ok(p) => p,
            Err(e) => {
                let msg = format!("the tool result cannot be decided: {e}");
                self.reply(jsonrpc::error(&id, jsonrpc::DENIED, &msg, None))
                    .await;
                return;
            }
        };
        if let Some(payload) = pending.action.tool.as_mut().and_then(|t| t.payload.take()) {
            *result = payload;
        }
        let findings = pending
            .action
            .content
            .as_ref()
            .map(|c| c.findings.clone())
            .unwrap_or_default();
        let action_id = pending.action.id.clone();
        let verdict = match self.settle(vec![pending]).await {
            Ok(v) => v,
            Err(e) => {
                self.reply(jsonrpc::error(&id, jsonrpc::DENIED, &e, None))
                    .await;
                return;
            }
        };
        if verdict.decision.outcome != Outcome::Allow {
            self.reply(denied(&id, &verdict)).await;
            return;
        }
        if verdict.decision.redact.is_empty() {
            self.reply(raw).await;
            return;
        }
        if let Err(e) =
            crate::proxy::redact::apply(result, "result", &findings, &verdict.decision.redact)
        {
            tracing::error!(action.id = %action_id, error = %e, "tool result withheld");
            let msg = format!("the tool result was withheld: {e}");
            self.reply(jsonrpc::error(&id, jsonrpc::DENIED, &msg, None))
                .await;
            return;
        }
        tracing::info!(action.id = %action_id, redactions = verdict.decision.redact.len(), "tool result redacted");
        self.reply(jsonrpc::to_line(&v)).await;
    }

    async fn filter_tools(self: Arc<Self>, mut v: Value) {
        let Some(Value::Array(tools)) = v.pointer_mut("/result/tools").map(std::mem::take) else {
            // Not a list (or an error): nothing to show or hide.
            self.reply(jsonrpc::to_line(&v)).await;
            return;
        };
        let mut listed = Vec::new();
        let mut pendings = Vec::new();
        // A name listed twice could show one definition and pin another: every copy is hidden.
        let mut seen = std::collections::HashMap::new();
        for t in &tools {
            if let Some(n) = t.get("name").and_then(Value::as_str) {
                *seen.entry(n.to_string()).or_insert(0usize) += 1;
            }
        }
        for t in tools {
            let Some(name) = t.get("name").and_then(Value::as_str).map(str::to_string) else {
                tracing::warn!(mcp.server = %self.cfg.server, "hid a tool without a name");
                continue;
            };
            if seen.get(&name).is_some_and(|n| *n > 1) {
                tracing::warn!(mcp.server = %self.cfg.server, tool = %name, "hid a tool listed more than once");
                continue;
            }
            if !valid_tool_name(&name) {
                tracing::warn!(mcp.server = %self.cfg.server, tool = %name, "hid a tool whose name is not a valid MCP tool name");
                continue;
            }
            let digest = pins::digest(&t);
            let pinned = self.pins.pin(&self.cfg.server, &name, &digest);
            lock(&self.inner)
                .digests
                .insert(name.clone(), digest.clone());
            let tool = Tool {
                server: self.cfg.server.clone(),
                name: name.clone(),
                arguments: json!({}),
                description_digest: Some(digest),
                pinned_digest: Some(pinned),
                payload: Some(t.clone()),
            };
            match self.gate.decide_for(
                &self.caller,
                &self.session,
                base_action(Kind::ToolList, tool),
            ) {
                Ok(p) => {
                    pendings.push(p);
                    listed.push(t);
                }
                Err(e) => {
                    tracing::warn!(mcp.server = %self.cfg.server, tool = %name, error = %e, "hid a tool that cannot be decided")
                }
            }
        }
        let mut shown = Vec::new();
        // All records are on their way; each is released once durable.
        for (t, p) in listed.into_iter().zip(pendings) {
            let allowed = self.gate.conclude(p).await.decision.outcome == Outcome::Allow;
            if allowed {
                shown.push(t);
            }
        }
        if let Some(slot) = v.pointer_mut("/result/tools") {
            *slot = Value::Array(shown);
        }
        self.reply(jsonrpc::to_line(&v)).await;
    }

    fn detect_preset(&self, v: &Value) {
        if !self.cfg.detect_preset {
            return;
        }
        let Some(info) = v.pointer("/result/serverInfo/name").and_then(Value::as_str) else {
            return;
        };
        let Some(name) = crate::config::preset_for_server_info(info) else {
            return;
        };
        let mut inner = lock(&self.inner);
        let mut map = crate::config::preset(name).unwrap_or_default();
        map.extend(self.cfg.map.iter().cloned());
        inner.map = map;
        tracing::info!(mcp.server = %self.cfg.server, preset = name, server_info = info, "argument mappings of a known server applied");
    }

    // === the server process ===

    /// The server is gone: every request in flight gets an error now, and nothing is relayed
    /// until [`Relay::server_up`].
    pub async fn server_down(&self, why: &str) {
        let (calls, served) = {
            let mut inner = lock(&self.inner);
            inner.up = false;
            (
                std::mem::take(&mut inner.calls),
                std::mem::take(&mut inner.served),
            )
        };
        drop(served);
        let msg = format!("tool server {:?} {why}", self.cfg.server);
        for (key, call) in calls {
            if matches!(call, Call::Reinit) {
                continue;
            }
            let id: Value = serde_json::from_str(&key).unwrap_or(Value::Null);
            self.reply(jsonrpc::error(&id, jsonrpc::SERVER_UNAVAILABLE, &msg, None))
                .await;
        }
    }

    /// A (re)started server process: returns its generation and the client's handshake to
    /// replay to it before anything else; relaying resumes with [`Relay::resume`].
    pub fn server_up(&self) -> (u64, Vec<Vec<u8>>) {
        let mut inner = lock(&self.inner);
        inner.generation += 1;
        let g = inner.generation;
        let mut replay = Vec::new();
        if let Some(mut init) = inner.init.clone() {
            let id = Value::from(format!("portcullis-reinit-{g}"));
            init["id"] = id.clone();
            inner.calls.insert(jsonrpc::id_key(&id), Call::Reinit);
            replay.push(jsonrpc::to_line(&init));
            if let Some(n) = &inner.initialized {
                replay.push(n.clone());
            }
        }
        (g, replay)
    }

    /// The handshake is replayed: relay again.
    pub fn resume(&self) {
        lock(&self.inner).up = true;
    }

    /// A client line over `max_line_bytes`: skipped by the transport, answered here.
    pub async fn oversize_from_client(&self, bytes: usize, head: &[u8], tail: &[u8]) {
        tracing::warn!(mcp.server = %self.cfg.server, bytes, limit = self.cfg.max_line_bytes, "refused an oversize client line");
        let msg = format!(
            "refused by portcullis: a {bytes}-byte message is over mcp.max_line_bytes ({})",
            self.cfg.max_line_bytes
        );
        let id = jsonrpc::sniff_id(head, tail).unwrap_or(Value::Null);
        self.reply(jsonrpc::error(&id, jsonrpc::INVALID_REQUEST, &msg, None))
            .await;
    }

    // === deciding ===

    /// The tool facet of a gated request, and the facets its arguments map to.
    fn gated_tool(
        &self,
        method: &str,
        params: Option<&Value>,
    ) -> Result<(Tool, Vec<Built>), String> {
        let params = params.cloned().unwrap_or_else(|| json!({}));
        if !params.is_object() {
            return Err(format!("{method}: params must be an object"));
        }
        let mut tool = Tool {
            server: self.cfg.server.clone(),
            name: method.to_string(),
            arguments: params.clone(),
            description_digest: None,
            pinned_digest: None,
            payload: None,
        };
        let mut facets = Vec::new();
        match method {
            "tools/call" => {
                let name = params
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or("tools/call: params.name must be a string")?;
                if !valid_tool_name(name) {
                    return Err(format!("tools/call: {name:?} is not a valid MCP tool name"));
                }
                // A task-augmented call answers later through tasks/result, which is not
                // decided as this call's result: refused until it is.
                if params.get("task").is_some() {
                    return Err("tools/call: task-augmented calls (params.task) are not supported by portcullis".into());
                }
                let args = params
                    .get("arguments")
                    .cloned()
                    .unwrap_or_else(|| json!({}));
                if !args.is_object() {
                    return Err("tools/call: params.arguments must be an object".into());
                }
                let inner = lock(&self.inner);
                for m in inner.map.iter().filter(|m| m.tool == name) {
                    facets.extend(mapped(m, &args)?);
                }
                tool.description_digest = inner.digests.get(name).cloned();
                drop(inner);
                tool.pinned_digest = self.pins.get(&self.cfg.server, name);
                tool.name = name.to_string();
                tool.arguments = args;
            }
            "resources/read" => {
                let uri = params
                    .get("uri")
                    .and_then(Value::as_str)
                    .ok_or("resources/read: params.uri must be a string")?;
                facets.extend(uri_facet(uri)?);
            }
            _ => {}
        }
        Ok((tool, facets))
    }

    fn actions(&self, kind: Kind, tool: &Tool, facets: Vec<Built>) -> Vec<Action> {
        facets::actions(base_action(kind, tool.clone()), facets)
    }

    /// Decide every action; the strictest verdict wins.
    async fn decide(&self, actions: Vec<Action>) -> Result<Verdict, String> {
        let mut pendings = Vec::new();
        for a in actions {
            let p = self
                .gate
                .decide_for(&self.caller, &self.session, a)
                .map_err(|e| e.to_string())?;
            pendings.push(p);
        }
        self.settle(pendings).await
    }

    async fn settle(&self, pendings: Vec<crate::gate::Pending>) -> Result<Verdict, String> {
        // Every decision of the relay runs in a task of its own, never cancelled with a
        // connection, so records and labels settle even if the client goes away. All records
        // were submitted by `decide_for`; each is released once durable.
        let c = self
            .gate
            .conclude_all(pendings)
            .await
            .ok_or_else(|| "nothing to decide".to_string())?;
        Ok(Verdict {
            decision: c.decision,
            action_id: c.action_id,
            approval_id: c.approval_id,
        })
    }

    // === output ===

    /// A line to the client.
    async fn reply(&self, line: Vec<u8>) {
        if self.to_client.send(line).await.is_err() {
            tracing::debug!("client gone; a line was not delivered");
        }
    }

    /// A line to the server, unless it is down; then a request (`id`) gets an error.
    async fn forward(&self, line: Vec<u8>, id: Option<&Value>) {
        let (up, generation) = {
            let inner = lock(&self.inner);
            (inner.up, inner.generation)
        };
        if up && self.to_server.send((generation, line)).await.is_ok() {
            return;
        }
        if let Some(id) = id {
            self.finish_call(id);
            let msg = format!("tool server {:?} is not running", self.cfg.server);
            self.reply(jsonrpc::error(id, jsonrpc::SERVER_UNAVAILABLE, &msg, None))
                .await;
        }
    }
}

/// `file://` URIs are file reads, `http(s)://` URIs are requests.
/// A URI that cannot be read unambiguously (unparseable, or a `file:` URI that names no local
/// path) is refused: a server could still make a path of it.
fn uri_facet(uri: &str) -> Result<Option<Built>, String> {
    let url = url::Url::parse(uri).map_err(|e| format!("resources/read: uri {uri:?}: {e}"))?;
    match url.scheme() {
        "file" => {
            let bad = || format!("resources/read: {uri:?} is not a local file URI");
            let path = url.to_file_path().map_err(|()| bad())?;
            Ok(Some(Built::File(FileFacet {
                op: crate::action::FileOp::Read,
                path: path.to_str().ok_or_else(bad)?.to_string(),
                canonical: String::new(),
            })))
        }
        "http" | "https" => Ok(Some(Built::Http(HttpFacet {
            url: uri.to_string(),
            method: "GET".into(),
            ..HttpFacet::default()
        }))),
        _ => Ok(None),
    }
}

/// MCP tool names are 1–128 of `A-Za-z0-9_-.` (2025-11-25); anything else could pose as a
/// method name (`resources/read`) in the Action.
fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

fn base_action(kind: Kind, tool: Tool) -> Action {
    Action {
        version: VERSION.to_string(),
        id: String::new(),
        kind,
        via: Via::Mcp,
        agent: None,
        session: None,
        tool: Some(tool),
        file: None,
        exec: None,
        http: None,
        content: None,
        model: None,
    }
}

/// The error a denied request (or result) gets: the rule's reason in the message, the whole
/// decision in `data`.
fn denied(id: &Value, v: &Verdict) -> Vec<u8> {
    let why: Vec<String> = v
        .decision
        .reasons
        .iter()
        .map(|r| format!("({}) {}", r.rule, r.message))
        .collect();
    let message = if why.is_empty() {
        "denied by portcullis policy".to_string()
    } else {
        format!("denied by portcullis policy: {}", why.join("; "))
    };
    let mut data = json!({
        "action_id": v.action_id,
        "outcome": v.decision.outcome,
        "reasons": v.decision.reasons,
        "policy_digest": v.decision.policy_digest,
    });
    if let Some(a) = &v.approval_id {
        data["approval_id"] = a.clone().into();
    }
    jsonrpc::error(id, jsonrpc::DENIED, &message, Some(data))
}
