//! `[run.profiles.NAME]`: what `portcullis run --profile NAME` lets the sandboxed program touch.
//! A profile named `default` replaces the built-in one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// How strictly Landlock must apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockMode {
    /// Refuse to start unless the kernel enforces every rule of the profile.
    Required,
    /// Apply what the kernel offers and say loudly what is missing.
    BestEffort,
}

/// The network a sandboxed program gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// Its own network namespace, whose only way out is the egress proxy (and the gateway);
    /// refuse to start where namespaces are unavailable.
    Isolated,
    /// As `isolated`; where namespaces are unavailable, fall back to Landlock TCP rules that
    /// allow connecting only to the proxy's ports (UDP is then not contained).
    IsolatedOrPorts,
}

#[derive(Debug, Clone)]
pub struct RunProfile {
    pub name: String,
    /// The agent id the run's key is bound to.
    pub agent: String,
    pub read: Vec<PathBuf>,
    pub write: Vec<PathBuf>,
    pub exec: Vec<PathBuf>,
    pub landlock: LandlockMode,
    pub network: NetworkMode,
    /// Variables passed through from portcullis's environment (besides PATH, HOME, LANG,
    /// LC_*, TERM, TZ, USER, LOGNAME); everything else, provider keys included, stays out.
    pub env: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RunConfig {
    pub profiles: BTreeMap<String, RunProfile>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRun {
    #[serde(default)]
    profiles: BTreeMap<String, RawProfile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    agent: Option<String>,
    #[serde(default)]
    read: Vec<PathBuf>,
    #[serde(default)]
    write: Vec<PathBuf>,
    #[serde(default)]
    exec: Vec<PathBuf>,
    landlock: Option<LandlockMode>,
    network: Option<NetworkMode>,
    #[serde(default)]
    env: Vec<String>,
}

/// What every program needs to start: the dynamic loader, libraries, the usual tools, and the
/// few files of /etc that name resolution, TLS and locale read. Not /etc as a whole, not /home.
pub const SYSTEM_READ: &[&str] = &[
    "/usr",
    "/lib",
    "/lib64",
    "/bin",
    "/sbin",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/alternatives",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/localtime",
    "/etc/mime.types",
    "/dev/null",
    "/dev/zero",
    "/dev/urandom",
    "/dev/random",
];
/// Where programs are run from.
pub const SYSTEM_EXEC: &[&str] = &["/usr", "/lib", "/lib64", "/bin", "/sbin"];
/// Written by nearly every program; never a secret.
pub const SYSTEM_WRITE: &[&str] = &["/dev/null"];

impl RunConfig {
    /// The profile `name`, or the built-in default for `default`.
    pub fn profile(&self, name: &str, workspace: &[PathBuf]) -> Option<RunProfile> {
        if let Some(p) = self.profiles.get(name) {
            return Some(p.clone());
        }
        (name == "default").then(|| RunProfile {
            name: "default".into(),
            agent: "run".into(),
            read: workspace.to_vec(),
            write: workspace.to_vec(),
            exec: Vec::new(),
            landlock: LandlockMode::Required,
            network: NetworkMode::Isolated,
            env: Vec::new(),
        })
    }
}

pub(super) fn run_config(
    raw: RawRun,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<RunConfig, (String, String)> {
    let mut profiles = BTreeMap::new();
    for (name, p) in raw.profiles {
        let at = |f: &str| format!("run.profiles.{name}.{f}");
        let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
        if name.is_empty() || name.len() > 64 || !name.bytes().all(plain) {
            return Err((
                format!("run.profiles.{name}"),
                "a profile name is 1 to 64 letters, digits or `-_.`".into(),
            ));
        }
        let agent = p.agent.unwrap_or_else(|| "run".into());
        if agent.is_empty() || agent.len() > 64 || !agent.bytes().all(plain) {
            return Err((
                at("agent"),
                "must be 1 to 64 letters, digits or `-_.`".into(),
            ));
        }
        for (i, v) in p.env.iter().enumerate() {
            let ok = !v.is_empty()
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !v.starts_with(|c: char| c.is_ascii_digit());
            if !ok {
                return Err((
                    at(&format!("env[{i}]")),
                    format!("{v:?} is not a variable name"),
                ));
            }
        }
        let paths = |v: Vec<PathBuf>| v.iter().map(|p| resolve(p)).collect::<Vec<_>>();
        profiles.insert(
            name.clone(),
            RunProfile {
                name: name.clone(),
                agent,
                read: paths(p.read),
                write: paths(p.write),
                exec: paths(p.exec),
                landlock: p.landlock.unwrap_or(LandlockMode::Required),
                network: p.network.unwrap_or(NetworkMode::Isolated),
                env: p.env,
            },
        );
    }
    Ok(RunConfig { profiles })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::{Path, PathBuf};

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/srv/p/portcullis.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn profiles_resolve_paths_and_check_names() {
        let c = parse("[run.profiles.build]\nread = [\"src\"]\nwrite = [\"out\"]\nlandlock = \"best_effort\"\nnetwork = \"isolated_or_ports\"\nenv = [\"CARGO_HOME\"]\n").unwrap();
        let p = c.run.profile("build", &[]).unwrap();
        assert_eq!(p.read, [PathBuf::from("/srv/p/src")]);
        assert_eq!(p.write, [PathBuf::from("/srv/p/out")]);
        assert_eq!(p.landlock, super::LandlockMode::BestEffort);
        assert_eq!(p.agent, "run");
        // The built-in default: the workspace, strict.
        let d = c.run.profile("default", &[PathBuf::from("/w")]).unwrap();
        assert_eq!(d.write, [PathBuf::from("/w")]);
        assert_eq!(d.landlock, super::LandlockMode::Required);
        assert_eq!(d.network, super::NetworkMode::Isolated);
        assert!(c.run.profile("other", &[]).is_none());
        for (bad, field) in [
            ("[run.profiles.\"a b\"]\n", "run.profiles.a b"),
            (
                "[run.profiles.x]\nenv = [\"1X\"]\n",
                "run.profiles.x.env[0]",
            ),
            ("[run.profiles.x]\nagent = \"\"\n", "run.profiles.x.agent"),
            (
                "[run.profiles.x]\nlandlock = \"maybe\"\n",
                "run.profiles.x.landlock",
            ),
            ("[run.profiles.x]\nnope = 1\n", "run.profiles.x.nope"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }
}
