//! Configuration: strict TOML (unknown fields rejected, errors name the field path) → a
//! validated [`Config`].
//!
//! Settings that policies need (workspace roots, allowlisted destinations) live here once and
//! reach Rego as `data.config`, so the policy and the kernel limits of `portcullis run` read the
//! same roots. Relative paths in a file are relative to that file's directory.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::Durability;
use crate::gate::limits::{self, BudgetRule, LimitRule};
use crate::normalize::path as npath;

mod egress;
mod llm;
mod mcp;
mod run;
pub use egress::{EgressConfig, Intercept};
pub use llm::{KeySource, LlmConfig, LlmUpstream, ProviderKind};
pub use mcp::{ArgMapping, Facet, McpConfig, McpServer, Process, preset, preset_for_server_info};
pub use run::{
    LandlockMode, NetworkMode, RunConfig, RunProfile, SYSTEM_EXEC, SYSTEM_READ, SYSTEM_WRITE,
};

/// The file looked for in the working directory when no `--config` is given.
pub const DEFAULT_FILE: &str = "portcullis.toml";

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: at `{field}`: {message}")]
    Invalid {
        path: String,
        field: String,
        message: String,
    },
}

/// Where the configuration came from; `config check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    File(PathBuf),
    BuiltIn,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub source: ConfigSource,
    pub policy: PolicyConfig,
    pub workspace: WorkspaceConfig,
    pub network: NetworkConfig,
    pub audit: AuditSettings,
    pub server: ServerConfig,
    pub tls: Option<TlsConfig>,
    pub identity: IdentityConfig,
    pub limits: Vec<LimitRule>,
    pub budgets: Vec<BudgetRule>,
    pub sessions: SessionsConfig,
    pub approvals: ApprovalsConfig,
    pub mcp: McpConfig,
    pub llm: LlmConfig,
    pub egress: EgressConfig,
    pub run: RunConfig,
}

/// Which policy set decides, and how long it may take.
#[derive(Debug, Clone)]
pub struct PolicyConfig {
    /// A directory of `.rego` and data files; `None` is the embedded default pack.
    pub dir: Option<PathBuf>,
    pub entrypoint: String,
    pub timeout: Duration,
}

/// The roots an agent works in. The first root is the base of relative paths.
#[derive(Debug, Clone)]
pub struct WorkspaceConfig {
    pub roots: Vec<PathBuf>,
    /// Resolve symlinks while canonicalizing paths (the realpath step).
    pub resolve_symlinks: bool,
}

/// Destinations the policy allows.
#[derive(Debug, Clone, Default)]
pub struct NetworkConfig {
    /// Host names or `*.suffix` patterns.
    pub allow_hosts: Vec<String>,
    /// IP addresses or CIDRs that may be used even though they are literals or non-public.
    pub allow_cidrs: Vec<String>,
}

/// Where decisions are recorded.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub path: PathBuf,
    pub durability: Durability,
    pub rotate_bytes: Option<u64>,
    pub queue_capacity: usize,
}

/// Listeners and the bounds on what a peer may send (DESIGN §7.3).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_connections: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_body_bytes: usize,
    /// Time a client has to send a request head; also how long an idle keep-alive connection
    /// is kept.
    pub header_timeout: Duration,
    /// Time a client has to send a request body once the head arrived.
    pub body_timeout: Duration,
    pub handshake_timeout: Duration,
    /// How long a write to a client may wait with no progress (the client reads nothing)
    /// before the connection is closed.
    pub write_timeout: Duration,
    /// How long connections may drain after SIGTERM/SIGINT before they are closed.
    pub shutdown_grace: Duration,
    /// Poll the policy directory for changes this often; `None` disables the watcher.
    pub reload_poll: Option<Duration>,
}

/// Certificates for the gateway and admin listeners.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates signed by this CA identify agents (mutual TLS).
    pub client_ca: Option<PathBuf>,
    pub require_client_cert: bool,
}

/// Who may call: agents (API key hashes or client certificate names) and admins.
#[derive(Debug, Clone, Default)]
pub struct IdentityConfig {
    pub agents: Vec<AgentConfig>,
    /// The agent a caller without credentials becomes; `None` means 401.
    pub anonymous: Option<AgentConfig>,
    pub admins: Vec<AdminConfig>,
}

/// One agent and its credentials. Only hashes of API keys are stored.
#[derive(Debug, Clone, Default)]
pub struct AgentConfig {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Lower-case hex sha256 of each accepted API key.
    pub api_key_sha256: Vec<String>,
    /// DNS name (or common name) of a client certificate signed by `tls.client_ca`.
    pub client_cert: Option<String>,
}

/// One admin credential for the state-changing admin routes.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub id: String,
    pub api_key_sha256: Vec<String>,
}

/// Bounds on session state.
#[derive(Debug, Clone)]
pub struct SessionsConfig {
    pub max: usize,
    pub ttl: Duration,
}

/// Bounds on parked `ask` decisions.
#[derive(Debug, Clone)]
pub struct ApprovalsConfig {
    pub max_pending: usize,
    pub timeout: Duration,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    workspace: RawWorkspace,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    server: RawServer,
    tls: Option<RawTls>,
    #[serde(default)]
    agents: Vec<RawAgent>,
    anonymous: Option<RawAnonymous>,
    #[serde(default)]
    admins: Vec<RawAdmin>,
    #[serde(default)]
    limits: Vec<LimitRule>,
    #[serde(default)]
    budgets: Vec<BudgetRule>,
    #[serde(default)]
    sessions: RawSessions,
    #[serde(default)]
    approvals: RawApprovals,
    #[serde(default)]
    mcp: mcp::RawMcp,
    #[serde(default)]
    llm: llm::RawLlm,
    #[serde(default)]
    egress: egress::RawEgress,
    #[serde(default)]
    run: run::RawRun,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    admin_listen: Option<String>,
    max_connections: Option<usize>,
    max_header_bytes: Option<usize>,
    max_headers: Option<usize>,
    max_body_bytes: Option<usize>,
    header_timeout_ms: Option<u64>,
    body_timeout_ms: Option<u64>,
    handshake_timeout_ms: Option<u64>,
    write_timeout_ms: Option<u64>,
    shutdown_grace_ms: Option<u64>,
    reload_poll_ms: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    #[serde(default)]
    require_client_cert: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    api_key_sha256: Vec<String>,
    client_cert: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnonymous {
    id: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    id: String,
    api_key_sha256: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSessions {
    max: Option<usize>,
    ttl_s: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawApprovals {
    max_pending: Option<usize>,
    timeout_s: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    dir: Option<PathBuf>,
    entrypoint: Option<String>,
    timeout_ms: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWorkspace {
    roots: Option<Vec<PathBuf>>,
    resolve_symlinks: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetwork {
    #[serde(default)]
    allow_hosts: Vec<String>,
    #[serde(default)]
    allow_cidrs: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    path: Option<PathBuf>,
    durability: Option<RawDurability>,
    rotate_bytes: Option<u64>,
    queue_capacity: Option<usize>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum RawDurability {
    Durable,
    Buffered,
}

// === impl Config ===

impl Config {
    /// Load `explicit`, else `portcullis.toml` in `cwd`, else the built-in defaults.
    pub fn discover(explicit: Option<&Path>, cwd: &Path) -> Result<Config, ConfigError> {
        if let Some(path) = explicit {
            return Config::from_file(path, cwd);
        }
        let local = cwd.join(DEFAULT_FILE);
        if local.is_file() {
            return Config::from_file(&local, cwd);
        }
        Config::from_raw(RawConfig::default(), ConfigSource::BuiltIn, cwd)
    }

    /// The built-in defaults, rooted at `cwd`.
    pub fn built_in(cwd: &Path) -> Result<Config, ConfigError> {
        Config::from_raw(RawConfig::default(), ConfigSource::BuiltIn, cwd)
    }

    /// Parse and validate one file.
    pub fn from_file(path: &Path, cwd: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let abs = npath::lexical(&cwd.join(path));
        Config::parse(&text, &abs)
    }

    /// Parse and validate `text` as if read from `path` (absolute).
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            ConfigError::Invalid {
                path: shown.clone(),
                field,
                message: e.into_inner().to_string().trim_end().to_string(),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("/"));
        Config::from_raw(raw, ConfigSource::File(path.to_path_buf()), base)
    }

    fn from_raw(raw: RawConfig, source: ConfigSource, base: &Path) -> Result<Config, ConfigError> {
        let shown = match &source {
            ConfigSource::File(p) => p.display().to_string(),
            ConfigSource::BuiltIn => "built-in defaults".to_string(),
        };
        let invalid = |field: &str, message: String| ConfigError::Invalid {
            path: shown.clone(),
            field: field.to_string(),
            message,
        };
        let resolve = |p: &Path| npath::lexical(&base.join(p));
        let timeout_ms = raw.policy.timeout_ms.unwrap_or(100);
        if timeout_ms == 0 || timeout_ms > 10_000 {
            return Err(invalid(
                "policy.timeout_ms",
                format!("{timeout_ms} is not in 1..=10000"),
            ));
        }
        let roots = raw
            .workspace
            .roots
            .unwrap_or_else(|| vec![PathBuf::from(".")]);
        if roots.is_empty() {
            return Err(invalid("workspace.roots", "needs at least one root".into()));
        }
        for (i, h) in raw.network.allow_hosts.iter().enumerate() {
            validate_host_pattern(h)
                .map_err(|m| invalid(&format!("network.allow_hosts[{i}]"), m))?;
        }
        for (i, c) in raw.network.allow_cidrs.iter().enumerate() {
            validate_cidr(c).map_err(|m| invalid(&format!("network.allow_cidrs[{i}]"), m))?;
        }
        let queue_capacity = raw.audit.queue_capacity.unwrap_or(65_536);
        if queue_capacity == 0 {
            return Err(invalid("audit.queue_capacity", "must be at least 1".into()));
        }
        let server = server_config(&raw.server).map_err(|(f, m)| invalid(&f, m))?;
        let tls = raw.tls.map(|t| TlsConfig {
            cert: resolve(&t.cert),
            key: resolve(&t.key),
            client_ca: t.client_ca.as_deref().map(resolve),
            require_client_cert: t.require_client_cert,
        });
        if let Some(t) = &tls
            && t.require_client_cert
            && t.client_ca.is_none()
        {
            return Err(invalid(
                "tls.require_client_cert",
                "needs tls.client_ca to verify client certificates".into(),
            ));
        }
        let identity = identity_config(raw.agents, raw.anonymous, raw.admins, tls.as_ref())
            .map_err(|(f, m)| invalid(&f, m))?;
        limits::validate(&raw.limits, &raw.budgets).map_err(|(f, m)| invalid(&f, m))?;
        let sessions = SessionsConfig {
            max: positive(raw.sessions.max.unwrap_or(10_000), "sessions.max")
                .map_err(|(f, m)| invalid(&f, m))?,
            ttl: Duration::from_secs(
                positive(raw.sessions.ttl_s.unwrap_or(3_600), "sessions.ttl_s")
                    .map_err(|(f, m)| invalid(&f, m))?,
            ),
        };
        let approvals = ApprovalsConfig {
            max_pending: positive(
                raw.approvals.max_pending.unwrap_or(1_000),
                "approvals.max_pending",
            )
            .map_err(|(f, m)| invalid(&f, m))?,
            timeout: Duration::from_secs(
                positive(
                    raw.approvals.timeout_s.unwrap_or(300),
                    "approvals.timeout_s",
                )
                .map_err(|(f, m)| invalid(&f, m))?,
            ),
        };
        let mcp = mcp::mcp_config(raw.mcp, resolve).map_err(|(f, m)| invalid(&f, m))?;
        let llm = llm::llm_config(raw.llm, resolve).map_err(|(f, m)| invalid(&f, m))?;
        let egress = egress::egress_config(raw.egress, resolve).map_err(|(f, m)| invalid(&f, m))?;
        let run = run::run_config(raw.run, resolve).map_err(|(f, m)| invalid(&f, m))?;
        for (i, s) in mcp.servers.iter().enumerate() {
            if let Some(p) = &s.sandbox
                && p != "default"
                && !run.profiles.contains_key(p)
            {
                let known: Vec<&str> = std::iter::once("default")
                    .chain(
                        run.profiles
                            .keys()
                            .map(String::as_str)
                            .filter(|k| *k != "default"),
                    )
                    .collect();
                return Err(invalid(
                    &format!("mcp.servers[{i}].sandbox"),
                    format!("no profile {p:?} in [run.profiles] (known: {known:?})"),
                ));
            }
        }
        Ok(Config {
            source,
            mcp,
            llm,
            egress,
            run,
            server,
            tls,
            identity,
            limits: raw.limits,
            budgets: raw.budgets,
            sessions,
            approvals,
            policy: PolicyConfig {
                dir: raw.policy.dir.as_deref().map(resolve),
                entrypoint: raw
                    .policy
                    .entrypoint
                    .unwrap_or_else(|| "data.portcullis.decision".into()),
                timeout: Duration::from_millis(timeout_ms),
            },
            workspace: WorkspaceConfig {
                roots: roots.iter().map(|r| resolve(r)).collect(),
                resolve_symlinks: raw.workspace.resolve_symlinks.unwrap_or(true),
            },
            network: NetworkConfig {
                allow_hosts: raw
                    .network
                    .allow_hosts
                    .iter()
                    .map(|h| h.to_ascii_lowercase())
                    .collect(),
                allow_cidrs: raw.network.allow_cidrs,
            },
            audit: AuditSettings {
                path: resolve(
                    raw.audit
                        .path
                        .as_deref()
                        .unwrap_or(Path::new("portcullis-audit.jsonl")),
                ),
                durability: match raw.audit.durability {
                    Some(RawDurability::Buffered) => Durability::Buffered,
                    Some(RawDurability::Durable) | None => Durability::Durable,
                },
                rotate_bytes: raw.audit.rotate_bytes,
                queue_capacity,
            },
        })
    }

    /// What policies see as `data.config`. Paths are canonical, so they compare with
    /// `file.canonical`.
    pub fn policy_data(&self) -> Value {
        let canon = |p: &Path| {
            npath::canonicalize(
                &p.to_string_lossy(),
                Path::new("/"),
                self.workspace.resolve_symlinks,
            )
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| p.to_string_lossy().into_owned())
        };
        let mut protected: Vec<String> = Vec::new();
        if let ConfigSource::File(p) = &self.source {
            protected.push(canon(p));
        }
        if let Some(dir) = &self.policy.dir {
            protected.push(canon(dir));
        }
        protected.push(canon(&self.audit.path));
        // Pins decide which tool descriptions need approval: an agent must not rewrite them.
        protected.push(canon(&self.mcp.pins));
        let mut data = json!({
            "config": {
                "workspace_roots": self.workspace.roots.iter().map(|r| canon(r)).collect::<Vec<_>>(),
                "allow_hosts": self.network.allow_hosts,
                "allow_cidrs": self.network.allow_cidrs,
                "protected_paths": protected,
                // MCP servers and model upstreams share the `server/tool` namespace.
                "deny_tools": self.mcp.deny_tools.iter().chain(&self.llm.deny_tools).collect::<Vec<_>>(),
            }
        });
        if let Some(d) = &self.mcp.deny_server_requests {
            data["config"]["deny_server_requests"] = json!(d);
        }
        data
    }

    /// A one-line description for `config check` and start-up logs.
    pub fn describe(&self) -> String {
        match &self.source {
            ConfigSource::File(p) => format!("config {}", p.display()),
            ConfigSource::BuiltIn => "built-in default config".to_string(),
        }
    }
}

fn positive<T: PartialOrd + Default>(v: T, field: &str) -> Result<T, (String, String)> {
    if v > T::default() {
        Ok(v)
    } else {
        Err((field.to_string(), "must be at least 1".into()))
    }
}

fn server_config(raw: &RawServer) -> Result<ServerConfig, (String, String)> {
    let addr = |v: &Option<String>, default: &str, field: &str| {
        let text = v.as_deref().unwrap_or(default);
        text.parse::<SocketAddr>().map_err(|_| {
            (
                field.to_string(),
                format!("{text:?} is not an IP:port address"),
            )
        })
    };
    let ms = |v: Option<u64>, default: u64, field: &str| {
        positive(v.unwrap_or(default), field).map(Duration::from_millis)
    };
    let max_header_bytes = raw.max_header_bytes.unwrap_or(16 * 1024);
    if !(1024..=1024 * 1024).contains(&max_header_bytes) {
        return Err((
            "server.max_header_bytes".into(),
            format!("{max_header_bytes} is not in 1024..=1048576"),
        ));
    }
    let max_headers = raw.max_headers.unwrap_or(64);
    if !(8..=1024).contains(&max_headers) {
        return Err((
            "server.max_headers".into(),
            format!("{max_headers} is not in 8..=1024"),
        ));
    }
    Ok(ServerConfig {
        listen: addr(&raw.listen, "127.0.0.1:8080", "server.listen")?,
        admin_listen: addr(&raw.admin_listen, "127.0.0.1:8081", "server.admin_listen")?,
        max_connections: positive(
            raw.max_connections.unwrap_or(1024),
            "server.max_connections",
        )?,
        max_header_bytes,
        max_headers,
        max_body_bytes: positive(
            raw.max_body_bytes
                .unwrap_or(crate::input::MAX_DOCUMENT_BYTES),
            "server.max_body_bytes",
        )?,
        header_timeout: ms(raw.header_timeout_ms, 10_000, "server.header_timeout_ms")?,
        body_timeout: ms(raw.body_timeout_ms, 10_000, "server.body_timeout_ms")?,
        handshake_timeout: ms(
            raw.handshake_timeout_ms,
            10_000,
            "server.handshake_timeout_ms",
        )?,
        write_timeout: ms(raw.write_timeout_ms, 30_000, "server.write_timeout_ms")?,
        shutdown_grace: ms(raw.shutdown_grace_ms, 10_000, "server.shutdown_grace_ms")?,
        reload_poll: match raw.reload_poll_ms {
            Some(0) => None,
            v => Some(ms(v, 1_000, "server.reload_poll_ms")?),
        },
    })
}

/// Agent ids and labels reach policy and logs, so keep them to a plain alphabet.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@' | b':'))
}

fn key_hashes(
    hashes: &[String],
    field: &str,
    seen: &mut HashSet<String>,
) -> Result<Vec<String>, (String, String)> {
    let mut out = Vec::with_capacity(hashes.len());
    for (i, h) in hashes.iter().enumerate() {
        let f = format!("{field}[{i}]");
        let ok = h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        if !ok {
            return Err((
                f,
                "is not a hex sha256 of an API key (64 hex digits; `printf %s KEY | sha256sum`)"
                    .into(),
            ));
        }
        let h = h.to_ascii_lowercase();
        if !seen.insert(h.clone()) {
            return Err((
                f,
                "this key hash is already given to another agent or admin".into(),
            ));
        }
        out.push(h);
    }
    Ok(out)
}

fn identity_config(
    agents: Vec<RawAgent>,
    anonymous: Option<RawAnonymous>,
    admins: Vec<RawAdmin>,
    tls: Option<&TlsConfig>,
) -> Result<IdentityConfig, (String, String)> {
    let mut hashes = HashSet::new();
    let mut ids = HashSet::new();
    let mut certs = HashSet::new();
    let mut out = IdentityConfig::default();
    for (i, a) in agents.into_iter().enumerate() {
        let field = format!("agents[{i}]");
        if !valid_name(&a.id) {
            return Err((
                format!("{field}.id"),
                format!(
                    "{:?} is not a valid agent id (letters, digits, `-_.@:`, at most 128)",
                    a.id
                ),
            ));
        }
        if !ids.insert(a.id.clone()) {
            return Err((
                format!("{field}.id"),
                format!("agent {:?} is defined twice", a.id),
            ));
        }
        for k in a.labels.keys() {
            if !valid_name(k) {
                return Err((
                    format!("{field}.labels"),
                    format!("{k:?} is not a valid label name"),
                ));
            }
        }
        let api_key_sha256 = key_hashes(
            &a.api_key_sha256,
            &format!("{field}.api_key_sha256"),
            &mut hashes,
        )?;
        if let Some(name) = &a.client_cert {
            if tls.is_none_or(|t| t.client_ca.is_none()) {
                return Err((
                    format!("{field}.client_cert"),
                    "needs tls.client_ca to verify client certificates".into(),
                ));
            }
            if !certs.insert(name.clone()) {
                return Err((
                    format!("{field}.client_cert"),
                    format!("{name:?} is given to two agents"),
                ));
            }
        }
        if api_key_sha256.is_empty() && a.client_cert.is_none() {
            return Err((
                field,
                "has no credential (api_key_sha256 or client_cert)".into(),
            ));
        }
        out.agents.push(AgentConfig {
            id: a.id,
            labels: a.labels,
            api_key_sha256,
            client_cert: a.client_cert,
        });
    }
    if let Some(a) = anonymous {
        if !valid_name(&a.id) || !ids.insert(a.id.clone()) {
            return Err((
                "anonymous.id".into(),
                format!("{:?} is not a valid, unused agent id", a.id),
            ));
        }
        out.anonymous = Some(AgentConfig {
            id: a.id,
            labels: a.labels,
            ..AgentConfig::default()
        });
    }
    let mut admin_ids = HashSet::new();
    for (i, a) in admins.into_iter().enumerate() {
        let field = format!("admins[{i}]");
        if !valid_name(&a.id) || !admin_ids.insert(a.id.clone()) {
            return Err((
                format!("{field}.id"),
                format!("{:?} is not a valid, unused admin id", a.id),
            ));
        }
        let api_key_sha256 = key_hashes(
            &a.api_key_sha256,
            &format!("{field}.api_key_sha256"),
            &mut hashes,
        )?;
        if api_key_sha256.is_empty() {
            return Err((
                format!("{field}.api_key_sha256"),
                "needs at least one key hash".into(),
            ));
        }
        out.admins.push(AdminConfig {
            id: a.id,
            api_key_sha256,
        });
    }
    Ok(out)
}

fn validate_host_pattern(h: &str) -> Result<(), String> {
    let name = h.strip_prefix("*.").unwrap_or(h);
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with('.')
        && !name.ends_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{h:?} is not a host name or `*.suffix` pattern (use punycode for international names)"
        ))
    }
}

fn validate_cidr(c: &str) -> Result<(), String> {
    let (addr, len) = match c.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (c, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("{c:?} is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if let Some(l) = len {
        match l.parse::<u8>() {
            Ok(n) if n <= max => {}
            _ => return Err(format!("{c:?} has a prefix length outside 0..={max}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_name_the_path() {
        let e = Config::parse("[policy]\ntimeout = 5\n", Path::new("/etc/p.toml")).unwrap_err();
        let s = e.to_string();
        assert!(s.contains("/etc/p.toml"), "{s}");
        assert!(s.contains("policy"), "{s}");
        assert!(s.contains("unknown field `timeout`"), "{s}");
    }

    #[test]
    fn type_errors_name_the_path() {
        let e = Config::parse("[audit]\nrotate_bytes = \"big\"\n", Path::new("/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("audit.rotate_bytes"), "{e}");
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let c = Config::parse(
            "[policy]\ndir = \"pol\"\n[workspace]\nroots = [\"ws\", \"/abs\"]\n",
            Path::new("/srv/agent/portcullis.toml"),
        )
        .unwrap();
        assert_eq!(c.policy.dir.as_deref(), Some(Path::new("/srv/agent/pol")));
        assert_eq!(
            c.workspace.roots,
            vec![PathBuf::from("/srv/agent/ws"), PathBuf::from("/abs")]
        );
        assert_eq!(
            c.audit.path,
            PathBuf::from("/srv/agent/portcullis-audit.jsonl")
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, field) in [
            ("[policy]\ntimeout_ms = 0\n", "policy.timeout_ms"),
            ("[workspace]\nroots = []\n", "workspace.roots"),
            (
                "[network]\nallow_hosts = [\"a/b\"]\n",
                "network.allow_hosts[0]",
            ),
            (
                "[network]\nallow_cidrs = [\"10.0.0.0/33\"]\n",
                "network.allow_cidrs[0]",
            ),
            ("[audit]\ndurability = \"maybe\"\n", "audit.durability"),
        ] {
            let e = Config::parse(text, Path::new("/c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
    }

    #[test]
    fn gateway_sections_are_validated_with_field_paths() {
        let h = "a".repeat(64);
        for (text, field) in [
            ("[server]\nlisten = \"localhost\"\n", "server.listen"),
            ("[server]\nmax_headers = 2\n", "server.max_headers"),
            (
                "[server]\nmax_header_bytes = 10\n",
                "server.max_header_bytes",
            ),
            ("[server]\nmax_connections = 0\n", "server.max_connections"),
            ("[server]\nbogus = 1\n", "server"),
            (
                &format!("[[agents]]\nid = \"a b\"\napi_key_sha256 = [\"{h}\"]\n"),
                "agents[0].id",
            ),
            (
                "[[agents]]\nid = \"a\"\napi_key_sha256 = [\"short\"]\n",
                "agents[0].api_key_sha256[0]",
            ),
            ("[[agents]]\nid = \"a\"\n", "agents[0]"),
            (
                &format!(
                    "[[agents]]\nid = \"a\"\napi_key_sha256 = [\"{h}\"]\n[[agents]]\nid = \"a\"\napi_key_sha256 = [\"{}\"]\n",
                    "b".repeat(64)
                ),
                "agents[1].id",
            ),
            (
                &format!(
                    "[[agents]]\nid = \"a\"\napi_key_sha256 = [\"{h}\"]\n[[admins]]\nid = \"x\"\napi_key_sha256 = [\"{h}\"]\n"
                ),
                "admins[0].api_key_sha256[0]",
            ),
            (
                "[[agents]]\nid = \"a\"\nclient_cert = \"a\"\n",
                "agents[0].client_cert",
            ),
            (
                "[tls]\ncert = \"c\"\nkey = \"k\"\nrequire_client_cert = true\n",
                "tls.require_client_cert",
            ),
            ("[[limits]]\nrate = 0\nper = \"second\"\n", "limits[0]"),
            ("[sessions]\nmax = 0\n", "sessions.max"),
            ("[approvals]\ntimeout_s = 0\n", "approvals.timeout_s"),
        ] {
            let e = Config::parse(text, Path::new("/c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
        let ok = Config::parse(
            &format!(
                "[[agents]]\nid = \"bot\"\napi_key_sha256 = [\"{}\"]\n[anonymous]\nid = \"anon\"\n",
                "A".repeat(64)
            ),
            Path::new("/c.toml"),
        )
        .unwrap();
        // Hashes are stored lower-case, as `key_digest` produces them.
        assert_eq!(ok.identity.agents[0].api_key_sha256[0], "a".repeat(64));
        assert_eq!(ok.identity.anonymous.unwrap().id, "anon");
    }

    #[test]
    fn mcp_section_errors_name_the_field() {
        let srv = "[[mcp.servers]]\nname = \"fs\"\n";
        for (text, field) in [
            ("[mcp]\nmax_line_bytes = 10\n", "mcp.max_line_bytes"),
            ("[mcp]\nmax_pending = 0\n", "mcp.max_pending"),
            ("[mcp]\nrestart_backoff_ms = 0\n", "mcp.restart_backoff_ms"),
            ("[mcp]\ndeny_tools = [\"move_file\"]\n", "mcp.deny_tools[0]"),
            (
                "[mcp]\nallowed_origins = [\"http://a.test/app\"]\n",
                "mcp.allowed_origins[0]",
            ),
            ("[mcp]\nmax_sessions = 0\n", "mcp.max_sessions"),
            ("[mcp]\nbogus = 1\n", "mcp.bogus"),
            (srv, "mcp.servers[0].command"),
            (
                &format!("{srv}command = [\"x\"]\nurl = \"http://a\"\n"),
                "mcp.servers[0].url",
            ),
            (
                &format!("{srv}url = \"https://a.test/mcp\"\n"),
                "mcp.servers[0].url",
            ),
            (
                &format!("{srv}command = [\"x\"]\nheaders = {{ A = \"b\" }}\n"),
                "mcp.servers[0].headers",
            ),
            (
                &format!("{srv}url = \"http://a/mcp\"\nheaders = {{ \"A B\" = \"b\" }}\n"),
                "mcp.servers[0].headers",
            ),
            (
                &format!("{srv}command = [\"x\"]\npreset = \"nope\"\n"),
                "mcp.servers[0].preset",
            ),
            (
                &format!("{srv}url = \"http://a/mcp\"\nprocess = \"shared\"\n"),
                "mcp.servers[0].process",
            ),
            (
                &format!("{srv}command = [\"x\"]\nprocess = \"pooled\"\n"),
                "mcp.servers[0]",
            ),
            (
                &format!("{srv}url = \"http://a/mcp\"\nsandbox = \"default\"\n"),
                "mcp.servers[0].sandbox",
            ),
            (
                &format!("{srv}command = [\"x\"]\nsandbox = \"tools\"\n"),
                "mcp.servers[0].sandbox",
            ),
            (
                "[[mcp.servers]]\nname = \"a b\"\ncommand = [\"x\"]\n",
                "mcp.servers[0].name",
            ),
            (
                &format!("{srv}command = [\"x\"]\n{srv}command = [\"y\"]\n"),
                "mcp.servers[1].name",
            ),
            (
                &format!(
                    "{srv}command = [\"x\"]\n[[mcp.servers.map]]\ntool = \"t\"\narg = \"p\"\nfacet = \"file\"\n"
                ),
                "mcp.servers[0].map[0].op",
            ),
            (
                &format!(
                    "{srv}command = [\"x\"]\n[[mcp.servers.map]]\ntool = \"t\"\narg = \"p\"\nfacet = \"exec\"\nop = \"read\"\n"
                ),
                "mcp.servers[0].map[0].op",
            ),
            (
                &format!(
                    "{srv}command = [\"x\"]\n[[mcp.servers.map]]\ntool = \"t\"\narg = \"p\"\nfacet = \"disk\"\n"
                ),
                "mcp.servers[0].map[0].facet",
            ),
        ] {
            let e = Config::parse(text, Path::new("/c.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(field), "{text}: {e}");
        }
        let ok = Config::parse(
            "[mcp]\ndeny_tools = [\"fs/*\"]\n[[mcp.servers]]\nname = \"fs\"\ncommand = [\"srv\", \"/w\"]\npreset = \"filesystem\"\n[[mcp.servers.map]]\ntool = \"run\"\narg = \"cmd\"\nfacet = \"exec\"\n",
            Path::new("/etc/p/c.toml"),
        )
        .unwrap();
        assert_eq!(ok.mcp.servers[0].map[0].facet, Facet::Exec);
        assert_eq!(ok.mcp.servers[0].process, crate::config::Process::Session);
        assert_eq!(ok.mcp.servers[0].sandbox, None);
        let boxed = |text: &str| {
            Config::parse(
                &format!("[[mcp.servers]]\nname = \"fs\"\ncommand = [\"srv\"]\n{text}"),
                Path::new("/c.toml"),
            )
            .unwrap()
            .mcp
            .servers[0]
                .sandbox
                .clone()
        };
        // `default` is built in; any other name must be a profile.
        assert_eq!(boxed("sandbox = \"default\"\n").as_deref(), Some("default"));
        assert_eq!(
            boxed("sandbox = \"tools\"\n[run.profiles.tools]\nread = [\"/w\"]\n").as_deref(),
            Some("tools")
        );
        assert_eq!(ok.mcp.pins, PathBuf::from("/etc/p/portcullis-pins.json"));
        let data = ok.policy_data();
        assert_eq!(data["config"]["deny_tools"][0], "fs/*");
        assert!(
            data["config"]["protected_paths"]
                .as_array()
                .unwrap()
                .contains(&json!("/etc/p/portcullis-pins.json")),
            "pins are protected: {data}"
        );
        assert!(
            preset("filesystem")
                .unwrap()
                .iter()
                .any(|m| m.tool == "move_file")
        );
        assert_eq!(
            preset_for_server_info("secure-filesystem-server"),
            Some("filesystem")
        );
    }

    #[test]
    fn built_in_defaults_are_valid() {
        let c = Config::built_in(Path::new("/work")).unwrap();
        assert_eq!(c.source, ConfigSource::BuiltIn);
        assert_eq!(c.workspace.roots, vec![PathBuf::from("/work")]);
        assert!(c.policy.dir.is_none());
        let data = c.policy_data();
        assert_eq!(data["config"]["workspace_roots"][0], "/work");
    }
}
