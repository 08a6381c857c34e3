//! From a `[run.profiles.NAME]` to the parts of a [`Spec`]: the filesystem roots, the
//! environment, the network, and the checks that keep portcullis's own files out of reach.
//! Shared by `portcullis run` (the agent) and sandboxed MCP servers (`[[mcp.servers]] sandbox`).
#![deny(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::{Enforcement, FsRules, Network};
use crate::config::{
    Config, ConfigSource, KeySource, LandlockMode, NetworkMode, RunProfile, SYSTEM_EXEC,
    SYSTEM_READ, SYSTEM_WRITE,
};

/// What portcullis passes through from its own environment (with `LC_*`), besides a profile's
/// `env`. Provider keys and everything else stay out.
const PASS_ENV: &[&str] = &["PATH", "HOME", "LANG", "TERM", "TZ", "USER", "LOGNAME"];

/// Said whenever the ports-only fallback is taken.
pub const PORTS_ONLY_WARNING: &str = "no network namespace available; falling back to Landlock \
     TCP rules (connect only to the proxy and gateway ports, if any). UDP and DNS are NOT \
     contained in this mode.";

/// The system roots plus the profile's (the caller adds the program's own temporary directory).
pub fn fs_rules(profile: &RunProfile) -> FsRules {
    let sys = |v: &[&str]| v.iter().map(PathBuf::from).collect::<Vec<_>>();
    let mut read = sys(SYSTEM_READ);
    read.extend(profile.read.iter().cloned());
    let mut exec = sys(SYSTEM_EXEC);
    exec.extend(profile.exec.iter().cloned());
    let mut write = sys(SYSTEM_WRITE);
    write.extend(profile.write.iter().cloned());
    FsRules { read, write, exec }
}

pub fn enforcement(profile: &RunProfile) -> Enforcement {
    match profile.landlock {
        LandlockMode::Required => Enforcement::Required,
        LandlockMode::BestEffort => Enforcement::BestEffort,
    }
}

/// A new network namespace when the kernel allows it (without relays: the caller adds them);
/// the port-rule fallback (without ports) only when the profile says so, never quietly: the
/// caller says [`PORTS_ONLY_WARNING`].
pub fn network(profile: &RunProfile) -> Result<Network, String> {
    let probe = super::probe();
    let root = super::sys::geteuid() == 0;
    if probe.net_namespaces && (root || probe.user_namespaces) {
        return Ok(Network::Isolated { relays: Vec::new() });
    }
    match profile.network {
        NetworkMode::Isolated => Err(format!(
            "cannot create a network namespace here ({}), so the program could reach the network \
             around the proxy; refusing to start (profile {:?} has network = \"isolated\"; \
             \"isolated_or_ports\" allows the weaker fallback)",
            if root {
                "network namespaces unavailable"
            } else {
                "unprivileged user namespaces are disabled"
            },
            profile.name
        )),
        NetworkMode::IsolatedOrPorts => Ok(Network::PortsOnly { ports: Vec::new() }),
    }
}

/// The few harmless variables of our environment a sandboxed program gets, and the profile's.
pub fn base_env(profile: &RunProfile) -> Vec<(OsString, OsString)> {
    std::env::vars_os()
        .filter(|(k, _)| {
            let k = k.to_string_lossy();
            PASS_ENV.contains(&k.as_ref())
                || k.starts_with("LC_")
                || profile.env.iter().any(|p| *p == k)
        })
        .collect()
}

/// Where the egress proxy is inside a sandbox's network namespace (relayed to a Unix socket
/// outside).
pub const PROXY_PORT: u16 = 3128;

/// Point every proxy variable the usual clients read at `url`.
pub fn set_proxy(env: &mut Vec<(OsString, OsString)>, url: &str) {
    for k in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        set_var(env, k, url.to_string());
    }
}

/// Set `k` to `v`, replacing what was there.
pub fn set_var(env: &mut Vec<(OsString, OsString)>, k: &str, v: String) {
    env.retain(|(e, _)| e != k);
    env.push((k.into(), v.into()));
}

/// The audit log, the configuration, the policies and the pins must stay out of the program's
/// reach for writing, and key material (provider keys, the interception CA's key, the TLS key)
/// for reading. The error names what and which root.
pub fn check_protected(config: &Config, fs: &FsRules) -> Result<(), String> {
    let mut no_write = vec![("audit.path", config.audit.path.clone())];
    if let ConfigSource::File(p) = &config.source {
        no_write.push(("the configuration file", p.clone()));
    }
    if let Some(d) = &config.policy.dir {
        no_write.push(("policy.dir", d.clone()));
    }
    no_write.push(("mcp.pins", config.mcp.pins.clone()));
    let mut no_read = Vec::new();
    if let Some(t) = &config.tls {
        no_read.push(("tls.key", t.key.clone()));
    }
    if let Some(i) = &config.egress.intercept {
        no_read.push(("egress.ca_key", i.ca_key.clone()));
    }
    for u in &config.llm.upstreams {
        if let KeySource::File(f) = &u.api_key {
            no_read.push(("an llm.upstreams api_key_file", f.clone()));
        }
    }
    let inside = |what: &str, p: &Path, roots: &[PathBuf], how: &str| -> Result<(), String> {
        let p = canonical_or_lexical(p);
        for r in roots {
            let r = canonical_or_lexical(r);
            if p.starts_with(&r) {
                return Err(format!(
                    "{what} ({}) is inside the {how} root {}: the sandboxed program could {}; \
                     move it out or narrow the profile",
                    p.display(),
                    r.display(),
                    if how == "writable" {
                        "rewrite it"
                    } else {
                        "read it"
                    }
                ));
            }
        }
        Ok(())
    };
    for (what, p) in &no_write {
        inside(what, p, &fs.write, "writable")?;
    }
    let readable: Vec<PathBuf> = fs
        .read
        .iter()
        .chain(&fs.exec)
        .chain(&fs.write)
        .cloned()
        .collect();
    for (what, p) in &no_read {
        inside(what, p, &readable, "readable")?;
    }
    Ok(())
}

fn canonical_or_lexical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        // A file that does not exist yet: its directory decides.
        match (
            p.parent().and_then(|d| std::fs::canonicalize(d).ok()),
            p.file_name(),
        ) {
            (Some(d), Some(f)) => d.join(f),
            _ => crate::normalize::path::lexical(p),
        }
    })
}

/// A directory of our own (mode 0700) under the system's temporary directory, removed with
/// everything in it when dropped.
#[derive(Debug)]
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// `<tmp>/portcullis-<what>-<ulid>`.
    pub fn create(what: &str) -> std::io::Result<PrivateDir> {
        use std::os::unix::fs::DirBuilderExt;
        let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
        let path = std::env::temp_dir().join(format!("portcullis-{what}-{id}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(PrivateDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
