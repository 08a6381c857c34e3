//! The LLM gateway (`/llm/{upstream}/…`): portcullis as the agent's model endpoint. Every
//! request is a `model_request` Action (model, tools offered, findings in the prompt); every
//! tool call a model proposes is a `tool_call` Action, decided before the agent sees it; every
//! response is a `model_response` Action whose token usage feeds the agent's budget.
//!
//! Three APIs, streaming and not: OpenAI Chat Completions ([`chat`]), OpenAI Responses
//! ([`responses`]) and Anthropic Messages ([`messages`]). Text streams through byte for byte
//! ([`stream`]); a tool call is held until complete, then released as sent or replaced by a
//! refusal that the official SDKs parse like any other output.
//!
//! The agent authenticates to portcullis with its own credential; the provider key is added
//! here and never reaches the agent. Only three endpoints are proxied: anything else an API
//! offers (batches, files, stored responses) could run a model without these checks.

pub mod chat;
pub mod client;
pub mod messages;
pub mod responses;
pub mod sse;
pub mod stream;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

use crate::action::{
    Action, Decision, ExecFacet, Kind, Model, Outcome, Tool, Usage, VERSION, Via, reason,
};
use crate::body::{Body, full};
use crate::config::{ArgMapping, KeySource, LlmConfig, LlmUpstream, ProviderKind};
use crate::gate::identity::Caller;
use crate::gate::{Concluded, Gate};
use crate::proxy::facets::{self, Built};
use http_body_util::BodyExt;

/// The three APIs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Chat,
    Responses,
    Messages,
    /// Anthropic `messages/count_tokens`: the prompt goes to the provider (so it is decided
    /// and redacted like a request), nothing is generated (so no response is decided).
    CountTokens,
}

impl Api {
    /// The API a path (after `/llm/{upstream}`) names, for a provider of `kind`.
    pub fn route(kind: ProviderKind, rest: &str) -> Option<Api> {
        match (kind, rest) {
            (ProviderKind::Openai, "/chat/completions" | "/v1/chat/completions") => Some(Api::Chat),
            (ProviderKind::Openai, "/responses" | "/v1/responses") => Some(Api::Responses),
            (ProviderKind::Anthropic, "/v1/messages" | "/messages") => Some(Api::Messages),
            (ProviderKind::Anthropic, "/v1/messages/count_tokens" | "/messages/count_tokens") => {
                Some(Api::CountTokens)
            }
            _ => None,
        }
    }

    fn provider(self) -> &'static str {
        match self {
            Api::Chat | Api::Responses => "openai",
            Api::Messages | Api::CountTokens => "anthropic",
        }
    }
}

/// A tool call a model proposed.
#[derive(Debug, Clone)]
pub struct Proposed {
    /// The provider's id of the call.
    pub id: String,
    pub name: String,
    /// The arguments as an object, or why they cannot be read.
    pub arguments: Result<Value, String>,
    /// Commands the call runs, when the API says so itself (Responses `local_shell_call`).
    pub argv: Vec<Vec<String>>,
}

/// What becomes of a proposed call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Replaced by this explanation.
    Deny(String),
    /// Cut off by the upstream: nothing of it is released.
    Incomplete,
}

/// One request's context: who asks, and where the decisions go.
pub struct Exchange {
    gate: Arc<Gate>,
    caller: Caller,
    session: String,
    upstream: String,
    api: Api,
    model: String,
    map: Arc<Vec<ArgMapping>>,
}

impl Exchange {
    fn model_facet(&self, usage: Usage, payload: Option<Value>) -> Model {
        Model {
            provider: self.api.provider().into(),
            upstream: self.upstream.clone(),
            name: self.model.clone(),
            tools: Vec::new(),
            usage,
            payload,
        }
    }

    fn action(&self, kind: Kind) -> Action {
        Action {
            version: VERSION.to_string(),
            id: String::new(),
            kind,
            via: Via::Llm,
            agent: None,
            session: None,
            tool: None,
            file: None,
            exec: None,
            http: None,
            content: None,
            model: None,
        }
    }

    fn tool(&self, p: &Proposed, arguments: Value) -> Tool {
        Tool {
            server: self.upstream.clone(),
            name: p.name.clone(),
            arguments,
            description_digest: None,
            pinned_digest: None,
            payload: None,
        }
    }

    /// Decide one proposed call: the tool facet, plus every file / exec / http facet its
    /// arguments map to; all must allow.
    pub async fn decide_call(&self, p: &Proposed) -> Verdict {
        let args = match &p.arguments {
            Ok(a) if a.is_object() => a.clone(),
            Ok(_) => {
                return self
                    .refuse(
                        p,
                        "llm_bad_tool_call",
                        "the tool call's arguments are not a JSON object",
                    )
                    .await;
            }
            Err(e) => {
                return self
                    .refuse(
                        p,
                        "llm_bad_tool_call",
                        &format!("the tool call's arguments cannot be read: {e}"),
                    )
                    .await;
            }
        };
        if p.name.is_empty() {
            return self
                .refuse(p, "llm_bad_tool_call", "the tool call has no name")
                .await;
        }
        let mut built = Vec::new();
        for m in self.map.iter().filter(|m| m.tool == p.name) {
            match facets::mapped(m, &args) {
                Ok(b) => built.extend(b),
                Err(e) => return self.refuse(p, "llm_bad_tool_call", &e).await,
            }
        }
        for argv in &p.argv {
            built.push(Built::Exec(ExecFacet {
                argv: argv.clone(),
                ..ExecFacet::default()
            }));
        }
        let mut base = self.action(Kind::ToolCall);
        base.tool = Some(self.tool(p, args));
        let mut pendings = Vec::new();
        for a in facets::actions(base, built) {
            match self.gate.decide_for(&self.caller, &self.session, a) {
                Ok(pending) => pendings.push(pending),
                Err(e) => {
                    // Refused before deciding; the ones already decided keep their records.
                    drop(pendings);
                    return self.refuse(p, reason::INVALID_ACTION, &e.to_string()).await;
                }
            }
        }
        match self.gate.conclude_all(pendings).await {
            Some(c) if c.decision.outcome == Outcome::Allow => Verdict::Allow,
            Some(c) => Verdict::Deny(refusal_text(&p.name, &c)),
            None => Verdict::Deny(format!(
                "[portcullis] the tool call {:?} was not decided",
                p.name
            )),
        }
    }

    /// Refuse a call on the proxy's own authority, with its audit record.
    pub async fn refuse(&self, p: &Proposed, rule: &str, message: &str) -> Verdict {
        let arguments = match &p.arguments {
            Ok(v) => v.clone(),
            Err(_) => json!({}),
        };
        let mut a = self.action(Kind::ToolCall);
        a.tool = Some(self.tool(p, arguments));
        let pending =
            self.gate
                .refuse_for(&self.caller, &self.session, a, rule, message.to_string());
        let c = self.gate.conclude(pending).await;
        Verdict::Deny(refusal_text(&p.name, &c))
    }

    /// The `model_response` decision: usage charged to the budgets, findings in `text` scanned.
    pub async fn decide_response(&self, usage: Usage, text: &str) -> Concluded {
        self.decide_response_payload(usage, json!({ "text": text }))
            .await
    }

    async fn decide_response_payload(&self, usage: Usage, payload: Value) -> Concluded {
        let mut a = self.action(Kind::ModelResponse);
        a.model = Some(self.model_facet(usage, Some(payload)));
        match self.gate.decide_for(&self.caller, &self.session, a) {
            Ok(p) => self.gate.conclude(p).await,
            Err(e) => Concluded {
                action_id: String::new(),
                decision: Decision::deny(reason::INVALID_ACTION, e.to_string(), ""),
                approval_id: None,
            },
        }
    }
}

/// `(rule) message; …` of a decision, for the agent.
pub fn refusal_reasons(what: &str, c: &Concluded) -> String {
    let why: Vec<String> = c
        .decision
        .reasons
        .iter()
        .map(|r| format!("({}) {}", r.rule, r.message))
        .collect();
    let mut s = format!("portcullis denied {what}");
    if !why.is_empty() {
        s.push_str(": ");
        s.push_str(&why.join("; "));
    }
    if !c.action_id.is_empty() {
        s.push_str(&format!(" [action {}]", c.action_id));
    }
    s
}

fn refusal_text(name: &str, c: &Concluded) -> String {
    format!(
        "\n[{}. The call was not made.]\n",
        refusal_reasons(&format!("the tool call {name:?}"), c)
    )
}

// === the gateway ===

/// The configured upstreams and what every request shares.
pub struct Llm {
    gate: Arc<Gate>,
    cfg: LlmConfig,
    map: Arc<Vec<ArgMapping>>,
    upstreams: HashMap<String, Upstream>,
}

struct Upstream {
    cfg: LlmUpstream,
    /// The provider credential header, added to every request.
    auth: Option<(HeaderName, HeaderValue)>,
    client: client::Client,
}

/// A request as the server hands it over.
pub struct Incoming<'a> {
    pub caller: Caller,
    pub session: String,
    pub upstream: &'a str,
    /// The path after `/llm/{upstream}`.
    pub rest: &'a str,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// Headers of the agent's request that reach the provider; nothing else does (the agent's
/// credential, cookies, portcullis headers stay here).
const FORWARDED: &[&str] = &[
    "anthropic-version",
    "anthropic-beta",
    "openai-beta",
    "user-agent",
];

impl Llm {
    /// Read every upstream's key now, so a missing one stops the service at start.
    pub fn new(gate: Arc<Gate>, cfg: LlmConfig) -> Result<Llm, String> {
        let mut upstreams = HashMap::new();
        for u in &cfg.upstreams {
            let at = |f: &str| format!("llm.upstreams {:?} {f}", u.name);
            let key = match &u.api_key {
                KeySource::None => None,
                KeySource::Env(v) => Some(std::env::var(v).map_err(|_| {
                    format!("{}: environment variable {v} is not set", at("api_key_env"))
                })?),
                KeySource::File(f) => Some(
                    std::fs::read_to_string(f)
                        .map_err(|e| format!("{}: {}: {e}", at("api_key_file"), f.display()))?
                        .trim()
                        .to_string(),
                ),
            };
            let auth = match key {
                None => None,
                Some(k) => {
                    let (name, value) = match u.kind {
                        ProviderKind::Openai => (header::AUTHORIZATION, format!("Bearer {k}")),
                        ProviderKind::Anthropic => (HeaderName::from_static("x-api-key"), k),
                    };
                    let mut v = HeaderValue::try_from(value).map_err(|_| {
                        format!("{}: the key is not a valid header value", at("api key"))
                    })?;
                    v.set_sensitive(true);
                    Some((name, v))
                }
            };
            let client =
                client::Client::new(u, &cfg).map_err(|e| format!("{}: {e}", at("base_url")))?;
            upstreams.insert(
                u.name.clone(),
                Upstream {
                    cfg: u.clone(),
                    auth,
                    client,
                },
            );
        }
        Ok(Llm {
            gate,
            map: Arc::new(cfg.map.clone()),
            cfg,
            upstreams,
        })
    }

    /// Serve one request: decide it, forward it, decide what comes back.
    pub async fn handle(&self, req: Incoming<'_>) -> Response<Body> {
        let Some(up) = self.upstreams.get(req.upstream) else {
            return error(
                None,
                StatusCode::NOT_FOUND,
                "not_found_error",
                "not_found",
                &format!("no model upstream {:?} is configured", req.upstream),
            );
        };
        let kind = Some(up.cfg.kind);
        let Some(api) = Api::route(up.cfg.kind, req.rest) else {
            return error(
                kind,
                StatusCode::NOT_FOUND,
                "not_found_error",
                "not_found",
                &format!(
                    "portcullis proxies only {} on this upstream, not {:?}",
                    match up.cfg.kind {
                        ProviderKind::Openai => "POST /chat/completions and POST /responses",
                        ProviderKind::Anthropic => "POST /v1/messages",
                    },
                    req.rest
                ),
            );
        };
        let bad = |m: String| {
            error(
                kind,
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                &m,
            )
        };
        let body = match crate::input::parse_value_limited(&req.body, usize::MAX, 128) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return bad("the request body must be a JSON object".into()),
            Err(e) => return bad(format!("the request body: {e}")),
        };
        let model = match body.get("model") {
            Some(Value::String(m)) => m.clone(),
            _ => return bad("model: must be a string".into()),
        };
        let streaming = match body.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return bad("stream: must be a boolean".into()),
        };
        if streaming && api == Api::CountTokens {
            return bad("stream: a token count does not stream".into());
        }
        let tools = match offered_tools(api, &body) {
            Ok(t) => t,
            Err(e) => return bad(e),
        };
        let ex = Arc::new(Exchange {
            gate: self.gate.clone(),
            caller: req.caller,
            session: req.session,
            upstream: up.cfg.name.clone(),
            api,
            model,
            map: self.map.clone(),
        });
        // The request: one decision on the model, the tools offered and the prompt's findings.
        let mut a = ex.action(Kind::ModelRequest);
        // The body goes into the Action to be scanned (never into its record) and comes back.
        let mut facet = ex.model_facet(Usage::default(), Some(Value::Object(body)));
        facet.tools = tools;
        a.model = Some(facet);
        let mut pending = match self.gate.decide_for(&ex.caller, &ex.session, a) {
            Ok(p) => p,
            Err(e) => return bad(e.to_string()),
        };
        let mut payload = take_payload(&mut pending.action);
        let findings = pending
            .action
            .content
            .as_ref()
            .map(|c| c.findings.clone())
            .unwrap_or_default();
        let c = self.gate.conclude(pending).await;
        if c.decision.outcome != Outcome::Allow {
            return denied(kind, &c);
        }
        let mut changed = false;
        if !c.decision.redact.is_empty() {
            if let Err(e) =
                crate::proxy::redact::apply(&mut payload, "request", &findings, &c.decision.redact)
            {
                let mut c = c.clone();
                c.decision.outcome = Outcome::Deny;
                c.decision.reasons.push(crate::action::Reason {
                    rule: "llm_redaction_failed".into(),
                    message: format!(
                        "the prompt could not be redacted as the policy requires ({e})"
                    ),
                });
                return denied(kind, &c);
            }
            changed = true;
            changed |= remove_tools(&mut payload, &c.decision);
        }
        // Usage is what feeds the budgets: ask for it in a Chat stream, and keep the extra
        // chunk from an agent that did not ask.
        let mut strip_usage = false;
        if api == Api::Chat && streaming {
            let asked = payload
                .pointer("/stream_options/include_usage")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !asked {
                strip_usage = true;
                changed = true;
                let opts = payload
                    .as_object_mut()
                    .map(|m| m.entry("stream_options").or_insert_with(|| json!({})));
                match opts {
                    Some(Value::Object(o)) => {
                        o.insert("include_usage".into(), Value::Bool(true));
                    }
                    _ => return bad("stream_options: must be an object".into()),
                }
            }
        }
        let out = if changed {
            Bytes::from(serde_json::to_vec(&payload).unwrap_or_default())
        } else {
            req.body
        };
        let mut headers = HeaderMap::new();
        for name in FORWARDED {
            if let Some(v) = req.headers.get(*name) {
                headers.insert(HeaderName::from_static(name), v.clone());
            }
        }
        if let Some((n, v)) = &up.auth {
            headers.insert(n.clone(), v.clone());
        }
        let resp = match up.client.post(req.rest, headers, out).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(llm.upstream = %up.cfg.name, error = %e, "upstream request failed");
                return error(kind, e.status(), "api_error", e.code(), &e.to_string());
            }
        };
        let status = resp.status();
        let is_sse = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let request_id = resp
            .headers()
            .get("x-request-id")
            .or(resp.headers().get("request-id"))
            .cloned();
        if !status.is_success() {
            return self.upstream_error(kind, resp).await;
        }
        if streaming && is_sse {
            let limits = stream::Limits {
                max_event: self.cfg.max_event_bytes,
                max_held: self.cfg.max_held_bytes,
                idle: self.cfg.idle_timeout,
            };
            let up = resp.into_body();
            let body = match api {
                Api::Chat => {
                    stream::RelayBody::new(chat::Stream::new(strip_usage), ex, up, limits).boxed()
                }
                Api::Responses => {
                    stream::RelayBody::new(responses::Stream::default(), ex, up, limits).boxed()
                }
                Api::Messages | Api::CountTokens => {
                    stream::RelayBody::new(messages::Stream::default(), ex, up, limits).boxed()
                }
            };
            let mut r = Response::new(body);
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream; charset=utf-8"),
            );
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            if let Some(id) = request_id {
                h.insert(HeaderName::from_static("x-request-id"), id);
            }
            return r;
        }
        if streaming || is_sse {
            return error(
                kind,
                StatusCode::BAD_GATEWAY,
                "api_error",
                "upstream_malformed",
                "the model provider answered a streaming request without a stream, or the reverse",
            );
        }
        let bytes = match client::read_all(
            resp.into_body(),
            self.cfg.max_response_bytes,
            self.cfg.idle_timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return error(kind, e.status(), "api_error", e.code(), &e.to_string()),
        };
        let body = match crate::input::parse_value_limited(&bytes, usize::MAX, 128) {
            Ok(v @ Value::Object(_)) => v,
            _ => {
                return error(
                    kind,
                    StatusCode::BAD_GATEWAY,
                    "api_error",
                    "upstream_malformed",
                    "the model provider's response is not a JSON object",
                );
            }
        };
        let out = match self.whole(&ex, api, body).await {
            // Nothing redacted or replaced: the provider's bytes, exactly as decided.
            Ok(None) => bytes,
            Ok(Some(changed)) => Bytes::from(serde_json::to_vec(&changed).unwrap_or_default()),
            Err(c) => return denied(kind, &c),
        };
        let mut r = Response::new(full(out));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(id) = request_id {
            r.headers_mut()
                .insert(HeaderName::from_static("x-request-id"), id);
        }
        r
    }

    /// A whole (non-streaming) response: the response decision, and every tool call in what
    /// the agent will get (after the response's redactions, if it has any); denied calls are
    /// replaced.
    /// `Ok(None)`: the response goes out as it came.
    async fn whole(
        &self,
        ex: &Arc<Exchange>,
        api: Api,
        body: Value,
    ) -> Result<Option<Value>, Concluded> {
        // A token count: nothing was generated, nothing to decide.
        if api == Api::CountTokens {
            return Ok(None);
        }
        let usage = match api {
            Api::Chat => chat::usage(&body),
            Api::Responses => responses::usage(&body),
            Api::Messages | Api::CountTokens => messages::usage(&body),
        };
        let mut a = ex.action(Kind::ModelResponse);
        a.model = Some(ex.model_facet(usage, Some(body)));
        let mut pending = self
            .gate
            .decide_for(&ex.caller, &ex.session, a)
            .map_err(|e| Concluded {
                action_id: String::new(),
                decision: Decision::deny(reason::INVALID_ACTION, e.to_string(), ""),
                approval_id: None,
            })?;
        let mut body = take_payload(&mut pending.action);
        let findings = pending
            .action
            .content
            .as_ref()
            .map(|c| c.findings.clone())
            .unwrap_or_default();
        // With nothing to redact, the calls are decided alongside the response (their
        // records share a group commit); else on the redacted text, after it.
        let early = pending.provisional().redact.is_empty();
        let mut tasks = if early {
            self.start_calls(ex, api, &body)
        } else {
            Vec::new()
        };
        let mut c = self.gate.conclude(pending).await;
        if c.decision.outcome != Outcome::Allow {
            // Decided and recorded, never released.
            return Err(c);
        }
        if !early {
            if let Err(e) =
                crate::proxy::redact::apply(&mut body, "response", &findings, &c.decision.redact)
            {
                c.decision.outcome = Outcome::Deny;
                c.decision.reasons.push(crate::action::Reason {
                    rule: "llm_redaction_failed".into(),
                    message: format!(
                        "the response could not be redacted as the policy requires ({e})"
                    ),
                });
                return Err(c);
            }
            tasks = self.start_calls(ex, api, &body);
        }
        let mut verdicts = Vec::new();
        for (at, t) in tasks {
            let v = t.await.unwrap_or_else(|e| {
                Verdict::Deny(format!(
                    "\n[portcullis could not decide this tool call: {e}]\n"
                ))
            });
            verdicts.push((at, v));
        }
        if early && verdicts.iter().all(|(_, v)| *v == Verdict::Allow) {
            return Ok(None);
        }
        match api {
            Api::Chat => chat::rewrite(&mut body, &verdicts),
            Api::Responses => responses::rewrite(&mut body, &unflat(verdicts)),
            Api::Messages | Api::CountTokens => messages::rewrite(&mut body, &unflat(verdicts)),
        }
        Ok(Some(body))
    }

    /// Start deciding every tool call of a whole response, each in its own task.
    fn start_calls(
        &self,
        ex: &Arc<Exchange>,
        api: Api,
        body: &Value,
    ) -> Vec<((usize, usize), tokio::task::JoinHandle<Verdict>)> {
        let calls = match api {
            Api::Chat => chat::calls(body),
            Api::Responses => flat(responses::calls(body)),
            Api::Messages | Api::CountTokens => flat(messages::calls(body)),
        };
        calls
            .into_iter()
            .map(|(at, p)| {
                let ex = ex.clone();
                (at, tokio::spawn(async move { ex.decide_call(&p).await }))
            })
            .collect()
    }

    /// The upstream's own error, passed on when it is a JSON body of the provider's shape;
    /// anything else becomes one.
    async fn upstream_error(
        &self,
        kind: Option<ProviderKind>,
        resp: Response<hyper::body::Incoming>,
    ) -> Response<Body> {
        let status = resp.status();
        let bytes = client::read_all(resp.into_body(), 64 << 10, self.cfg.idle_timeout).await;
        if let Ok(b) = &bytes
            && let Ok(Value::Object(m)) = serde_json::from_slice::<Value>(b)
            && m.get("error").is_some_and(Value::is_object)
        {
            let mut r = Response::new(full(b.clone()));
            *r.status_mut() = status;
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return r;
        }
        error(
            kind,
            status,
            "api_error",
            "upstream_error",
            &format!("the model provider answered {status}"),
        )
    }
}

/// The payload an Action carried to be scanned.
fn take_payload(a: &mut Action) -> Value {
    a.model
        .as_mut()
        .and_then(|m| m.payload.take())
        .unwrap_or(Value::Null)
}

fn flat<T>(v: Vec<(usize, T)>) -> Vec<((usize, usize), T)> {
    v.into_iter().map(|(i, t)| ((0, i), t)).collect()
}

fn unflat<T>(v: Vec<((usize, usize), T)>) -> Vec<(usize, T)> {
    v.into_iter().map(|((_, i), t)| (i, t)).collect()
}

/// The names of the tools a request offers, in order (`model.tools`). A tool without a name
/// (a provider built-in) is named by its type.
fn offered_tools(api: Api, body: &serde_json::Map<String, Value>) -> Result<Vec<String>, String> {
    let tools = match body.get("tools") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(t)) => t,
        Some(_) => return Err("tools: must be an array".into()),
    };
    tools
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let name = match api {
                Api::Chat => t
                    .pointer("/function/name")
                    .or_else(|| t.pointer("/custom/name")),
                Api::Responses => t.get("name").or_else(|| t.get("server_label")),
                Api::Messages | Api::CountTokens => t.get("name"),
            };
            match (name, t.get("type")) {
                (Some(Value::String(n)), _) => Ok(n.clone()),
                (None, Some(Value::String(ty))) => Ok(ty.clone()),
                _ => Err(format!("tools[{i}]: has neither a name nor a type")),
            }
        })
        .collect()
}

/// Drop the tools the policy redacted (`model.tools[i]`, the pack's `tool_denied`).
fn remove_tools(payload: &mut Value, d: &Decision) -> bool {
    let mut drop: Vec<usize> = d
        .redact
        .iter()
        .filter_map(|r| r.location.strip_prefix("model.tools["))
        .filter_map(|r| r.strip_suffix(']'))
        .filter_map(|i| i.parse().ok())
        .collect();
    if drop.is_empty() {
        return false;
    }
    drop.sort_unstable();
    drop.dedup();
    if let Some(Value::Array(tools)) = payload.get_mut("tools") {
        for i in drop.into_iter().rev() {
            if i < tools.len() {
                tools.remove(i);
            }
        }
        if tools.is_empty()
            && let Some(m) = payload.as_object_mut()
        {
            m.remove("tools");
            m.remove("tool_choice");
        }
    }
    true
}

/// A denied request, in the provider's error shape.
fn denied(kind: Option<ProviderKind>, c: &Concluded) -> Response<Body> {
    let rule = c
        .decision
        .reasons
        .first()
        .map(|r| r.rule.as_str())
        .unwrap_or("");
    let (status, ty) = match rule {
        reason::RATE_LIMITED => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error"),
        reason::AUDIT_UNAVAILABLE => (StatusCode::SERVICE_UNAVAILABLE, "api_error"),
        _ => (StatusCode::FORBIDDEN, "permission_error"),
    };
    let mut r = error(
        kind,
        status,
        ty,
        "portcullis_denied",
        &refusal_reasons("this request", c),
    );
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// An error in the provider's own shape: OpenAI `{"error": {message, type, param, code}}`,
/// Anthropic `{"type": "error", "error": {type, message}}`; both when the provider is unknown.
pub fn error(
    kind: Option<ProviderKind>,
    status: StatusCode,
    ty: &str,
    code: &str,
    message: &str,
) -> Response<Body> {
    let body = match kind {
        Some(ProviderKind::Openai) => {
            json!({"error": {"message": message, "type": ty, "param": null, "code": code}})
        }
        Some(ProviderKind::Anthropic) => {
            json!({"type": "error", "error": {"type": ty, "message": message}})
        }
        None => {
            json!({"type": "error", "error": {"type": ty, "message": message, "param": null, "code": code}})
        }
    };
    let mut r = Response::new(full(serde_json::to_vec(&body).unwrap_or_default()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Parse a tool call's argument text: strict JSON (duplicate keys, lone surrogates and the
/// like are refused), an object; empty text is no arguments.
pub fn parse_arguments(text: &str) -> Result<Value, String> {
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    match crate::input::parse_value(text.as_bytes()) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("not a JSON object".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// `data: <json>\n\n`.
pub fn data_event(v: &Value) -> Bytes {
    let mut out = b"data: ".to_vec();
    out.extend(serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// `event: <name>\ndata: <json>\n\n`.
pub fn named_event(name: &str, v: &Value) -> Bytes {
    let mut out = format!("event: {name}\ndata: ").into_bytes();
    out.extend(serde_json::to_vec(v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests;
