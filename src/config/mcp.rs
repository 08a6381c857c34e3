//! `[mcp]` and `[[mcp.servers]]`: the tool servers portcullis fronts, and which tool arguments
//! are paths, commands or URLs (DESIGN §2, tool facets).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::action::FileOp;

/// Settings shared by every MCP server.
#[derive(Debug, Clone)]
pub struct McpConfig {
    /// Where tool description pins are kept (`server/tool` → digest).
    pub pins: PathBuf,
    /// Longest JSON-RPC line accepted from either side.
    pub max_line_bytes: usize,
    /// Most requests in flight per MCP session (either direction).
    pub max_pending: usize,
    /// First restart delay after a server exits; doubled per crash up to 30 s.
    pub restart_backoff: Duration,
    /// `server/tool` glob patterns no agent may list or call.
    pub deny_tools: Vec<String>,
    /// Requests a server may not send the client (the pack's default when `None`:
    /// `sampling/createMessage`).
    pub deny_server_requests: Option<Vec<String>>,
    /// Origins a browser may call `/mcp/{server}` from (exact `scheme://host[:port]`); any
    /// other `Origin` gets 403. Requests without `Origin` (not from a browser) are not affected.
    pub allowed_origins: Vec<String>,
    /// Most MCP sessions open at once on `/mcp/{server}`, over all servers and agents.
    pub max_sessions: usize,
    /// An HTTP MCP session unused this long is closed (and its server process stopped).
    pub session_idle: Duration,
    pub servers: Vec<McpServer>,
}

/// One tool server.
#[derive(Debug, Clone)]
pub struct McpServer {
    /// The name policies see as `tool.server`, and the `{server}` of `/mcp/{server}`.
    pub name: String,
    /// argv of a stdio server (empty for an upstream `url`).
    pub command: Vec<String>,
    /// An upstream Streamable HTTP server (`http://…`) instead of a command.
    pub url: Option<String>,
    /// Headers sent upstream (its credentials); the agent's own are never passed on.
    pub headers: BTreeMap<String, String>,
    /// Extra environment for a stdio server.
    pub env: BTreeMap<String, String>,
    /// Argument mappings shipped with portcullis (`filesystem`), applied before `map`.
    pub preset: Option<String>,
    pub map: Vec<ArgMapping>,
    /// For a command behind `/mcp/{server}`: one process per MCP session, or one for all.
    pub process: Process,
    /// The `[run.profiles.NAME]` the command is confined by (`default` is built in), or none.
    pub sandbox: Option<String>,
}

/// How many processes of a stdio server `/mcp/{server}` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Process {
    /// Each MCP session starts its own process (the default: sessions share no server state).
    #[default]
    Session,
    /// One process serves every session of every agent (see `docs/mcp.md`, shared servers).
    Shared,
}

/// One tool argument that names a path, a command or a URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgMapping {
    pub tool: String,
    /// Top-level argument name; its value is a string or an array of strings.
    pub arg: String,
    pub facet: Facet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Facet {
    File(FileOp),
    Exec,
    Http,
}

/// (tool, argument, facet)
type Mapped = (&'static str, &'static str, Facet);

/// The presets portcullis ships: (preset, server name it is detected by, mappings).
pub const PRESETS: &[(&str, &str, &[Mapped])] = &[(
    "filesystem",
    // `serverInfo.name` of @modelcontextprotocol/server-filesystem.
    "secure-filesystem-server",
    &[
        ("read_file", "path", Facet::File(FileOp::Read)),
        ("read_text_file", "path", Facet::File(FileOp::Read)),
        ("read_media_file", "path", Facet::File(FileOp::Read)),
        ("read_multiple_files", "paths", Facet::File(FileOp::Read)),
        ("write_file", "path", Facet::File(FileOp::Write)),
        ("edit_file", "path", Facet::File(FileOp::Write)),
        ("create_directory", "path", Facet::File(FileOp::Write)),
        ("list_directory", "path", Facet::File(FileOp::List)),
        (
            "list_directory_with_sizes",
            "path",
            Facet::File(FileOp::List),
        ),
        ("directory_tree", "path", Facet::File(FileOp::List)),
        ("search_files", "path", Facet::File(FileOp::List)),
        ("get_file_info", "path", Facet::File(FileOp::List)),
        // A move removes the source and writes the destination.
        ("move_file", "source", Facet::File(FileOp::Delete)),
        ("move_file", "destination", Facet::File(FileOp::Write)),
    ],
)];

/// The mappings of a preset, or `None` if there is no such preset.
pub fn preset(name: &str) -> Option<Vec<ArgMapping>> {
    PRESETS
        .iter()
        .find(|(p, _, _)| *p == name)
        .map(|(_, _, m)| {
            m.iter()
                .map(|&(tool, arg, facet)| ArgMapping {
                    tool: tool.into(),
                    arg: arg.into(),
                    facet,
                })
                .collect()
        })
}

/// The preset a server is detected by from its `serverInfo.name`.
pub fn preset_for_server_info(name: &str) -> Option<&'static str> {
    PRESETS
        .iter()
        .find(|(_, info, _)| *info == name)
        .map(|(p, _, _)| *p)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMcp {
    pins: Option<PathBuf>,
    max_line_bytes: Option<usize>,
    max_pending: Option<usize>,
    restart_backoff_ms: Option<u64>,
    #[serde(default)]
    deny_tools: Vec<String>,
    deny_server_requests: Option<Vec<String>>,
    #[serde(default)]
    allowed_origins: Vec<String>,
    max_sessions: Option<usize>,
    session_idle_s: Option<u64>,
    #[serde(default)]
    servers: Vec<RawServer>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    name: String,
    #[serde(default)]
    command: Vec<String>,
    url: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    preset: Option<String>,
    #[serde(default)]
    map: Vec<RawMapping>,
    process: Option<Process>,
    sandbox: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMapping {
    tool: String,
    arg: String,
    facet: RawFacet,
    op: Option<FileOp>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawFacet {
    File,
    Exec,
    Http,
}

/// Validate one argument mapping at `at` (e.g. `mcp.servers[0].map[1]`).
pub(super) fn mapping(m: RawMapping, at: &str) -> Result<ArgMapping, (String, String)> {
    let field = |f: &str| format!("{at}.{f}");
    let err = |f: String, m: &str| Err((f, m.to_string()));
    if m.tool.is_empty() {
        return err(field("tool"), "must not be empty");
    }
    if m.arg.is_empty() {
        return err(field("arg"), "must not be empty");
    }
    let facet = match (m.facet, m.op) {
        (RawFacet::File, Some(op)) => Facet::File(op),
        (RawFacet::File, None) => {
            return err(
                field("op"),
                "a file mapping needs op (read, write, delete, list, exec)",
            );
        }
        (RawFacet::Exec, None) => Facet::Exec,
        (RawFacet::Http, None) => Facet::Http,
        (_, Some(_)) => return err(field("op"), "only file mappings take op"),
    };
    Ok(ArgMapping {
        tool: m.tool,
        arg: m.arg,
        facet,
    })
}

/// Validate `[mcp]`; errors are (field path, message).
pub(super) fn mcp_config(
    raw: RawMcp,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<McpConfig, (String, String)> {
    let err = |f: String, m: &str| Err((f, m.to_string()));
    let max_line_bytes = raw.max_line_bytes.unwrap_or(4 << 20);
    if !(1024..=64 << 20).contains(&max_line_bytes) {
        return err("mcp.max_line_bytes".into(), "must be in 1024..=67108864");
    }
    let max_pending = raw.max_pending.unwrap_or(1024);
    if max_pending == 0 {
        return err("mcp.max_pending".into(), "must be at least 1");
    }
    let backoff = raw.restart_backoff_ms.unwrap_or(200);
    if !(1..=30_000).contains(&backoff) {
        return err("mcp.restart_backoff_ms".into(), "must be in 1..=30000");
    }
    for (i, p) in raw.deny_tools.iter().enumerate() {
        if !p.contains('/') {
            return err(
                format!("mcp.deny_tools[{i}]"),
                "must be `server/tool` (globs allowed, e.g. `fs/*`)",
            );
        }
    }
    let mut servers: Vec<McpServer> = Vec::new();
    for (i, s) in raw.servers.into_iter().enumerate() {
        let at = |f: &str| format!("mcp.servers[{i}].{f}");
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if s.name.is_empty() || s.name.len() > 64 || !s.name.bytes().all(plain) {
            return err(at("name"), "must be 1 to 64 letters, digits or `-_.`");
        }
        if servers.iter().any(|o| o.name == s.name) {
            return err(at("name"), "another server has this name");
        }
        match (&s.url, s.command.first()) {
            (Some(_), Some(_)) => return err(at("url"), "give command or url, not both"),
            (None, None) => {
                return err(
                    at("command"),
                    "give the server's argv (e.g. [\"mcp-server\", \"--flag\"]) or its url",
                );
            }
            (None, Some(c)) if c.is_empty() => return err(at("command"), "argv[0] is empty"),
            (Some(u), None) => {
                let parsed = url::Url::parse(u).map_err(|e| (at("url"), e.to_string()))?;
                if parsed.scheme() != "http" || parsed.host_str().is_none() {
                    return err(
                        at("url"),
                        "must be an http:// URL with a host (https upstreams are not supported yet)",
                    );
                }
            }
            _ => {}
        }
        if s.url.is_none() && !s.headers.is_empty() {
            return err(at("headers"), "headers are for an upstream url");
        }
        if s.url.is_some() && !s.env.is_empty() {
            return err(at("env"), "env is for a server command");
        }
        if s.url.is_some() && s.process.is_some() {
            return err(at("process"), "process is for a server command");
        }
        if s.url.is_some() && s.sandbox.is_some() {
            return err(at("sandbox"), "sandbox is for a server command");
        }
        for (k, v) in &s.headers {
            let bad = |c: char| c.is_control() && c != '\t';
            if k.is_empty()
                || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                || v.chars().any(bad)
            {
                return Err((at("headers"), format!("{k:?} is not a valid header")));
            }
        }
        if let Some(p) = &s.preset
            && preset(p).is_none()
        {
            let known: Vec<&str> = PRESETS.iter().map(|(n, _, _)| *n).collect();
            return Err((
                at("preset"),
                format!("unknown preset {p:?}; known: {known:?}"),
            ));
        }
        let mut map = Vec::new();
        for (j, m) in s.map.into_iter().enumerate() {
            map.push(mapping(m, &format!("mcp.servers[{i}].map[{j}]"))?);
        }
        servers.push(McpServer {
            name: s.name,
            command: s.command,
            url: s.url,
            headers: s.headers,
            env: s.env,
            preset: s.preset,
            map,
            process: s.process.unwrap_or_default(),
            sandbox: s.sandbox,
        });
    }
    for (i, o) in raw.allowed_origins.iter().enumerate() {
        let ok = url::Url::parse(o)
            .ok()
            .is_some_and(|u| u.host_str().is_some() && u.path() == "/" && !o.ends_with('/'));
        if !ok {
            return err(
                format!("mcp.allowed_origins[{i}]"),
                "must be an origin: scheme://host[:port], no path",
            );
        }
    }
    let max_sessions = raw.max_sessions.unwrap_or(256);
    if max_sessions == 0 {
        return err("mcp.max_sessions".into(), "must be at least 1");
    }
    let idle = raw.session_idle_s.unwrap_or(1800);
    if idle == 0 {
        return err("mcp.session_idle_s".into(), "must be at least 1");
    }
    Ok(McpConfig {
        deny_server_requests: raw.deny_server_requests,
        allowed_origins: raw.allowed_origins,
        max_sessions,
        session_idle: Duration::from_secs(idle),
        pins: resolve(
            raw.pins
                .as_deref()
                .unwrap_or(Path::new("portcullis-pins.json")),
        ),
        max_line_bytes,
        max_pending,
        restart_backoff: Duration::from_millis(backoff),
        deny_tools: raw.deny_tools,
        servers,
    })
}
