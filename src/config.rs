//! Configuration: strict TOML (unknown fields rejected, errors name the field path) → a
//! validated [`Config`].
//!
//! Settings that policies need (workspace roots, allowlisted destinations) live here once and
//! reach Rego as `data.config`, so the policy and the kernel limits of `portcullis run` read the
//! same roots. Relative paths in a file are relative to that file's directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::audit::Durability;
use crate::normalize::path as npath;

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
        Ok(Config {
            source,
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
        json!({
            "config": {
                "workspace_roots": self.workspace.roots.iter().map(|r| canon(r)).collect::<Vec<_>>(),
                "allow_hosts": self.network.allow_hosts,
                "allow_cidrs": self.network.allow_cidrs,
                "protected_paths": protected,
            }
        })
    }

    /// A one-line description for `config check` and start-up logs.
    pub fn describe(&self) -> String {
        match &self.source {
            ConfigSource::File(p) => format!("config {}", p.display()),
            ConfigSource::BuiltIn => "built-in default config".to_string(),
        }
    }
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
    fn built_in_defaults_are_valid() {
        let c = Config::built_in(Path::new("/work")).unwrap();
        assert_eq!(c.source, ConfigSource::BuiltIn);
        assert_eq!(c.workspace.roots, vec![PathBuf::from("/work")]);
        assert!(c.policy.dir.is_none());
        let data = c.policy_data();
        assert_eq!(data["config"]["workspace_roots"][0], "/work");
    }
}
