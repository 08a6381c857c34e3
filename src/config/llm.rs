//! `[llm]` and `[[llm.upstreams]]`: the model providers portcullis fronts at `/llm/{upstream}/…`,
//! and which arguments of a model's tool calls are paths, commands or URLs (`[[llm.map]]`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::ArgMapping;
use super::mcp::{RawMapping, mapping};

/// Settings shared by every upstream.
#[derive(Debug, Clone)]
pub struct LlmConfig {
    /// Most bytes of tool calls held back at once in one stream; a call that would go over is
    /// denied (reason `llm_held_bytes`).
    pub max_held_bytes: usize,
    /// Largest SSE event accepted from an upstream.
    pub max_event_bytes: usize,
    /// Largest non-streaming response body accepted from an upstream.
    pub max_response_bytes: usize,
    pub connect_timeout: Duration,
    /// From sending the request to the response head.
    pub first_byte_timeout: Duration,
    /// Longest silence inside a response body.
    pub idle_timeout: Duration,
    /// `upstream/tool` globs a model may neither be offered nor call.
    pub deny_tools: Vec<String>,
    /// Argument mappings for the tool calls models propose (every upstream).
    pub map: Vec<ArgMapping>,
    pub upstreams: Vec<LlmUpstream>,
}

/// The API family an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Chat Completions and Responses (and compatible servers).
    Openai,
    /// Messages.
    Anthropic,
}

/// Where the provider key comes from. The key stays in the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env(String),
    File(PathBuf),
    /// An upstream that takes no key (a local model server).
    None,
}

/// One model provider.
#[derive(Debug, Clone)]
pub struct LlmUpstream {
    /// The `{upstream}` of `/llm/{upstream}/…`; policies see it as `model.upstream` and as
    /// `tool.server` of the tool calls its models propose.
    pub name: String,
    pub kind: ProviderKind,
    /// `http://` or `https://`, with the path prefix the API paths are appended to (for
    /// OpenAI usually ending `/v1`; for Anthropic the bare origin).
    pub base_url: String,
    pub api_key: KeySource,
    /// PEM CA bundle for an `https` upstream; the system bundle when absent.
    pub ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLlm {
    max_held_bytes: Option<usize>,
    max_event_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
    connect_timeout_ms: Option<u64>,
    first_byte_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    #[serde(default)]
    deny_tools: Vec<String>,
    #[serde(default)]
    map: Vec<RawMapping>,
    #[serde(default)]
    upstreams: Vec<RawUpstream>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    name: String,
    kind: ProviderKind,
    base_url: String,
    api_key_env: Option<String>,
    api_key_file: Option<PathBuf>,
    ca_file: Option<PathBuf>,
}

/// Validate `[llm]`; errors are (field path, message).
pub(super) fn llm_config(
    raw: RawLlm,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<LlmConfig, (String, String)> {
    let err = |f: String, m: &str| Err((f, m.to_string()));
    let bytes = |v: Option<usize>, default: usize, f: &str| match v.unwrap_or(default) {
        n if (1024..=1 << 30).contains(&n) => Ok(n),
        _ => Err((
            format!("llm.{f}"),
            "must be in 1024..=1073741824".to_string(),
        )),
    };
    let ms = |v: Option<u64>, default: u64, f: &str| match v.unwrap_or(default) {
        n if (1..=3_600_000).contains(&n) => Ok(Duration::from_millis(n)),
        _ => Err((format!("llm.{f}"), "must be in 1..=3600000".to_string())),
    };
    for (i, p) in raw.deny_tools.iter().enumerate() {
        if !p.contains('/') {
            return err(
                format!("llm.deny_tools[{i}]"),
                "must be `upstream/tool` (globs allowed, e.g. `*/run_shell`)",
            );
        }
    }
    let map = raw
        .map
        .into_iter()
        .enumerate()
        .map(|(j, m)| mapping(m, &format!("llm.map[{j}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let mut upstreams: Vec<LlmUpstream> = Vec::new();
    for (i, u) in raw.upstreams.into_iter().enumerate() {
        let at = |f: &str| format!("llm.upstreams[{i}].{f}");
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if u.name.is_empty() || u.name.len() > 64 || !u.name.bytes().all(plain) {
            return err(at("name"), "must be 1 to 64 letters, digits or `-_.`");
        }
        if upstreams.iter().any(|o| o.name == u.name) {
            return err(at("name"), "another upstream has this name");
        }
        let parsed = url::Url::parse(&u.base_url).map_err(|e| (at("base_url"), e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
            || !parsed.username().is_empty()
        {
            return err(
                at("base_url"),
                "must be an http:// or https:// URL with a host and no query, fragment or credentials",
            );
        }
        let api_key = match (u.api_key_env, u.api_key_file) {
            (Some(_), Some(_)) => {
                return err(
                    at("api_key_file"),
                    "give api_key_env or api_key_file, not both",
                );
            }
            (Some(v), None) if v.is_empty() => return err(at("api_key_env"), "must not be empty"),
            (Some(v), None) => KeySource::Env(v),
            (None, Some(f)) => KeySource::File(resolve(&f)),
            (None, None) => KeySource::None,
        };
        if u.ca_file.is_some() && parsed.scheme() != "https" {
            return err(at("ca_file"), "is for an https:// base_url");
        }
        upstreams.push(LlmUpstream {
            name: u.name,
            kind: u.kind,
            base_url: u.base_url.trim_end_matches('/').to_string(),
            api_key,
            ca_file: u.ca_file.as_deref().map(&resolve),
        });
    }
    Ok(LlmConfig {
        max_held_bytes: bytes(raw.max_held_bytes, 1 << 20, "max_held_bytes")?,
        max_event_bytes: bytes(raw.max_event_bytes, 4 << 20, "max_event_bytes")?,
        max_response_bytes: bytes(raw.max_response_bytes, 32 << 20, "max_response_bytes")?,
        connect_timeout: ms(raw.connect_timeout_ms, 10_000, "connect_timeout_ms")?,
        first_byte_timeout: ms(raw.first_byte_timeout_ms, 600_000, "first_byte_timeout_ms")?,
        idle_timeout: ms(raw.idle_timeout_ms, 300_000, "idle_timeout_ms")?,
        deny_tools: raw.deny_tools,
        map,
        upstreams,
    })
}

impl LlmConfig {
    pub fn upstream(&self, name: &str) -> Option<&LlmUpstream> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}
