//! The domain types: the Action document (`portcullis/v1`, the policy `input`) and the Decision.
//!
//! No I/O here. The reference page is `docs/action.md`; every field below is documented there
//! and the examples in `docs/examples/` are loaded by the tests.
//!
//! Fields are split in two: the *raw* form a caller gives (`file.path`, `exec.command`,
//! `http.url`, `content.text`, …) and the *derived* form that normalization computes
//! (`file.canonical`, `exec.argv`, `http.ips`, `content.findings`, …). Derived fields are always
//! overwritten, so nothing a caller writes there can steer a decision.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The schema version every Action carries.
pub const VERSION: &str = "portcullis/v1";

/// One proposed action, as the policy sees it (`input`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    #[serde(default = "default_version")]
    pub version: String,
    /// Request id; also in the audit record. Generated when empty.
    #[serde(default)]
    pub id: String,
    pub kind: Kind,
    pub via: Via,
    /// Who acts. Computed by the proxy from credentials; never taken from a caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<Agent>,
    /// The session the action belongs to. Computed by the proxy; never taken from a caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<Tool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<FileFacet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecFacet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFacet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
}

fn default_version() -> String {
    VERSION.to_string()
}

/// What kind of action this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    ToolCall,
    ToolResult,
    ToolList,
    ModelRequest,
    ModelResponse,
    HttpRequest,
    File,
    Exec,
}

/// Which front end proposed the action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    Mcp,
    Llm,
    Egress,
    Decide,
    Sandbox,
}

/// The acting agent, from its credential.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Agent {
    pub id: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub authenticated: bool,
}

/// Session state that earlier decisions left behind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Session {
    pub id: String,
    #[serde(default)]
    pub labels: BTreeSet<String>,
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
}

/// A tool (MCP or model tool call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tool {
    #[serde(default)]
    pub server: String,
    pub name: String,
    #[serde(default = "empty_object")]
    pub arguments: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned_digest: Option<String>,
    /// What the server sent, set by the MCP front end: the result (`tool_result`) or the tool's
    /// definition (`tool_list`). Scanned for findings (`where` starts `result.`) but neither
    /// given to the policy nor written to the audit log, and never accepted from a caller.
    #[serde(skip)]
    pub payload: Option<Value>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// A file-system operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileFacet {
    pub op: FileOp,
    /// As given by the caller (absolute, or relative to the first workspace root).
    pub path: String,
    /// Derived: lexically normalized and symlink-resolved absolute path.
    #[serde(default)]
    pub canonical: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileOp {
    Read,
    Write,
    Delete,
    List,
    Exec,
}

/// A command to run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecFacet {
    /// As given: a shell command line. When absent, `argv` is the raw form (an `execve`).
    #[serde(default)]
    pub command: String,
    /// Derived from `command` (the first simple command), or raw when `command` is empty.
    #[serde(default)]
    pub argv: Vec<String>,
    /// Derived: every simple command the line would run, in order.
    #[serde(default)]
    pub commands: Vec<Vec<String>>,
    /// Derived: true when what runs cannot be known without executing (substitution, eval, …).
    #[serde(default)]
    pub opaque: bool,
}

/// An outbound network request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFacet {
    /// As given: an absolute URL. Alternatively `host` and `port` (a CONNECT target).
    #[serde(default)]
    pub url: String,
    #[serde(default)]
    pub method: String,
    #[serde(default)]
    pub scheme: String,
    #[serde(default)]
    pub host: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default)]
    pub path: String,
    /// Derived: the addresses the request would go to (the literal, or what the proxy resolved).
    #[serde(default)]
    pub ips: Vec<String>,
    /// Derived: the most sensitive class among `ips`; absent when nothing is resolved yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_class: Option<IpClass>,
    /// Derived: the host was written as an IP literal (in any spelling).
    #[serde(default)]
    pub ip_literal: bool,
    /// Set by the egress front end only: the addresses it resolved the host to, and the only
    /// ones it will connect to. Never read from or written to JSON, so a caller of
    /// `/v1/decide` cannot claim where a name points.
    #[serde(skip)]
    pub resolved: Option<Vec<std::net::IpAddr>>,
    /// Set by the egress front end only: a request body it will forward, scanned for secrets
    /// (findings at `http.body`) and never recorded.
    #[serde(skip)]
    pub body: Option<bytes::Bytes>,
    /// Set by the egress front end only: the request headers it will forward (name, value),
    /// scanned for secrets (findings at `http.headers.NAME`) and never recorded.
    #[serde(skip)]
    pub headers: Option<Vec<(String, String)>>,
}

/// Address classes, most sensitive first (the order `ip_class` picks by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IpClass {
    Metadata,
    Loopback,
    /// `0.0.0.0` and `::` reach the local host on Linux, so they rank right after loopback.
    Unspecified,
    LinkLocal,
    Private,
    Cgnat,
    Multicast,
    Documentation,
    Reserved,
    Public,
}

/// Content carried by the action and what was found in it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    /// As given: free text to scan (a prompt, a tool result). Masked in the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// Derived: what the scanners found, anywhere in the action. Never the value itself.
    #[serde(default)]
    pub findings: Vec<Finding>,
}

/// One scanner finding: what and where, never the matched value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Finding {
    /// `secret`, later also `invisible_unicode`, `instructions`.
    pub kind: String,
    /// The detector, e.g. `aws_access_key`.
    #[serde(rename = "type")]
    pub kind_type: String,
    /// Dotted path of the string inside the Action, e.g. `tool.arguments.body`.
    #[serde(rename = "where")]
    pub location: String,
    /// Byte offsets of the match inside that string.
    pub start: usize,
    pub end: usize,
}

/// A model API call.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The API family: `openai` or `anthropic`.
    #[serde(default)]
    pub provider: String,
    /// The configured upstream (`/llm/{upstream}/…`), set by the LLM front end.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub upstream: String,
    #[serde(default)]
    pub name: String,
    /// Names of the tools offered to the model.
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub usage: Usage,
    /// What the agent sent the provider (`model_request`) or what the provider answered
    /// (`model_response`), set by the LLM front end. Scanned for findings (`where` starts
    /// `request.` or `response.`) but neither given to the policy nor written to the audit log,
    /// and never accepted from a caller.
    #[serde(skip)]
    pub payload: Option<Value>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    #[serde(default)]
    pub input_tokens: u64,
    #[serde(default)]
    pub output_tokens: u64,
}

/// The three outcomes. Strictest wins: deny beats ask beats allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Ask,
    Deny,
}

/// Why a decision came out as it did: a stable rule id and a message for humans.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reason {
    pub rule: String,
    pub message: String,
}

/// A span the front end must mask before forwarding.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redaction {
    #[serde(rename = "where")]
    pub location: String,
    #[serde(rename = "type")]
    pub kind_type: String,
}

/// What the Gate decided, as returned to callers and written to the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    pub outcome: Outcome,
    #[serde(default)]
    pub reasons: Vec<Reason>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub redact: Vec<Redaction>,
    /// sha256 of the loaded policy set and data; empty only when no policy could be loaded.
    #[serde(default)]
    pub policy_digest: String,
}

/// Reason codes the proxy itself produces (not policy rules).
pub mod reason {
    pub const POLICY_ERROR: &str = "policy_error";
    pub const AUDIT_UNAVAILABLE: &str = "audit_unavailable";
    pub const INVALID_ACTION: &str = "invalid_action";
    /// A `[[limits]]` rate or a token budget is exhausted.
    pub const RATE_LIMITED: &str = "rate_limited";
    /// An `ask` could not be parked because the approval queue is full.
    pub const APPROVALS_FULL: &str = "approvals_full";
    /// Resolutions of a parked `ask`.
    pub const APPROVED: &str = "approval_approved";
    pub const APPROVAL_DENIED: &str = "approval_denied";
    pub const APPROVAL_TIMEOUT: &str = "approval_timeout";
    pub const APPROVAL_CANCELLED: &str = "approval_cancelled";
    /// The action needs approval but nobody can give it here (a stdio MCP wrapper).
    pub const APPROVAL_UNAVAILABLE: &str = "approval_unavailable";
}

// === impl Kind ===

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ToolCall => "tool_call",
            Kind::ToolResult => "tool_result",
            Kind::ToolList => "tool_list",
            Kind::ModelRequest => "model_request",
            Kind::ModelResponse => "model_response",
            Kind::HttpRequest => "http_request",
            Kind::File => "file",
            Kind::Exec => "exec",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Outcome ===

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Ask => "ask",
            Outcome::Deny => "deny",
        }
    }

    /// Parse the policy's `outcome` string; anything else is `None` (and so a policy error).
    pub fn parse(s: &str) -> Option<Outcome> {
        match s {
            "allow" => Some(Outcome::Allow),
            "ask" => Some(Outcome::Ask),
            "deny" => Some(Outcome::Deny),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Decision ===

impl Decision {
    /// A deny the proxy makes on its own behalf (policy error, audit down, bad input).
    pub fn deny(rule: &str, message: impl Into<String>, policy_digest: &str) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            reasons: vec![Reason {
                rule: rule.to_string(),
                message: message.into(),
            }],
            labels: Vec::new(),
            redact: Vec::new(),
            policy_digest: policy_digest.to_string(),
        }
    }

    /// Make this decision at least as strict as `other`: the strictest outcome wins.
    pub fn tighten(&mut self, outcome: Outcome, reason: Reason) {
        if outcome > self.outcome {
            self.outcome = outcome;
        }
        self.reasons.push(reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_order_is_strictness() {
        assert!(Outcome::Deny > Outcome::Ask);
        assert!(Outcome::Ask > Outcome::Allow);
        let mut d = Decision::deny("x", "m", "");
        d.outcome = Outcome::Allow;
        d.tighten(
            Outcome::Ask,
            Reason {
                rule: "r".into(),
                message: "m".into(),
            },
        );
        assert_eq!(d.outcome, Outcome::Ask);
        d.tighten(
            Outcome::Allow,
            Reason {
                rule: "r2".into(),
                message: "m".into(),
            },
        );
        assert_eq!(d.outcome, Outcome::Ask, "a looser outcome never loosens");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = serde_json::from_str::<Action>(
            r#"{"kind":"exec","via":"decide","exec":{"command":"ls"},"approved":true}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("approved"), "{err}");
    }

    #[test]
    fn outcome_parse_rejects_other_strings() {
        assert_eq!(Outcome::parse("allow"), Some(Outcome::Allow));
        assert_eq!(Outcome::parse("Allow"), None);
        assert_eq!(Outcome::parse(""), None);
    }
}
