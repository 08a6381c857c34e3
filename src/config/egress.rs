//! `[egress]`: the forward proxy that decides every outbound request (HTTP absolute-form and
//! CONNECT), and the static resolver override it consults before the system resolver.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::normalize::net;

/// The egress listener's settings.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Where `serve` listens for proxy clients; no egress listener when absent.
    pub listen: Option<SocketAddr>,
    /// Connecting to the checked address.
    pub connect_timeout: Duration,
    /// Resolving a name (the system resolver).
    pub resolve_timeout: Duration,
    /// From `200 Connection established` to the client's first bytes in the tunnel; a client
    /// that sends nothing (a server-first protocol waiting for a banner) is closed.
    pub sniff_timeout: Duration,
    /// Longest silence in either direction of a tunnel or an upstream response.
    pub idle_timeout: Duration,
    /// Largest request body forwarded; bodies are held and scanned before they are decided.
    pub max_body_bytes: usize,
    /// Names answered from here instead of the system resolver: canonical host → addresses.
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// TLS interception, when any host pattern is listed.
    pub intercept: Option<Intercept>,
}

/// Which CONNECT targets are opened up, and with which certificates.
#[derive(Debug, Clone)]
pub struct Intercept {
    /// Exact names, or `*.example.com` for every name below example.com.
    pub hosts: Vec<String>,
    /// The local CA (`portcullis certs init`) that signs the certificates shown to clients.
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    /// Trust roots for the upstream servers; the system bundle when absent.
    pub upstream_ca_file: Option<PathBuf>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEgress {
    listen: Option<String>,
    connect_timeout_ms: Option<u64>,
    resolve_timeout_ms: Option<u64>,
    sniff_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    max_body_bytes: Option<usize>,
    #[serde(default)]
    hosts: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    intercept: Vec<String>,
    ca_cert: Option<PathBuf>,
    ca_key: Option<PathBuf>,
    upstream_ca_file: Option<PathBuf>,
}

/// Validate `[egress]`; errors are (field path, message).
pub(super) fn egress_config(
    raw: RawEgress,
    resolve: impl Fn(&Path) -> PathBuf,
) -> Result<EgressConfig, (String, String)> {
    let ms = |v: Option<u64>, default: u64, f: &str| match v.unwrap_or(default) {
        n if (1..=3_600_000).contains(&n) => Ok(Duration::from_millis(n)),
        _ => Err((format!("egress.{f}"), "must be in 1..=3600000".to_string())),
    };
    let listen = match raw.listen {
        None => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|e| {
            (
                "egress.listen".to_string(),
                format!("{s:?} is not an address:port ({e})"),
            )
        })?),
    };
    let max_body_bytes = match raw.max_body_bytes.unwrap_or(16 << 20) {
        n if (1024..=1 << 30).contains(&n) => n,
        _ => {
            return Err((
                "egress.max_body_bytes".into(),
                "must be in 1024..=1073741824".into(),
            ));
        }
    };
    let mut hosts = BTreeMap::new();
    for (name, addrs) in raw.hosts {
        let at = format!("egress.hosts.{name}");
        // The key is normalized as a CONNECT target would be, so every spelling matches.
        let target = net::parse_authority(&name, 1).map_err(|e| (at.clone(), e.to_string()))?;
        if target.ip.is_some() {
            return Err((at, "is an address; only names can be overridden".into()));
        }
        if addrs.is_empty() || addrs.len() > 64 {
            return Err((at, "needs 1 to 64 addresses".into()));
        }
        let ips = addrs
            .iter()
            .map(|a| {
                a.parse::<IpAddr>()
                    .map_err(|_| (at.clone(), format!("{a:?} is not an IP address")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if hosts.insert(target.host.clone(), ips).is_some() {
            return Err((at, format!("{} is listed twice", target.host)));
        }
    }
    let mut patterns = Vec::new();
    for (i, h) in raw.intercept.iter().enumerate() {
        let at = format!("egress.intercept[{i}]");
        let (wild, name) = match h.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, h.as_str()),
        };
        let t = net::parse_authority(name, 443).map_err(|e| (at.clone(), e.to_string()))?;
        if t.ip.is_some() || !t.host.contains('.') && wild {
            return Err((at, "must be a name or *.domain".into()));
        }
        patterns.push(if wild {
            format!("*.{}", t.host)
        } else {
            t.host
        });
    }
    let intercept = if patterns.is_empty() {
        for (f, set) in [
            ("ca_cert", raw.ca_cert.is_some()),
            ("ca_key", raw.ca_key.is_some()),
            ("upstream_ca_file", raw.upstream_ca_file.is_some()),
        ] {
            if set {
                return Err((
                    format!("egress.{f}"),
                    "is for egress.intercept, which is empty".into(),
                ));
            }
        }
        None
    } else {
        Some(Intercept {
            hosts: patterns,
            ca_cert: resolve(raw.ca_cert.as_deref().unwrap_or(Path::new("certs/ca.crt"))),
            ca_key: resolve(raw.ca_key.as_deref().unwrap_or(Path::new("certs/ca.key"))),
            upstream_ca_file: raw.upstream_ca_file.as_deref().map(&resolve),
        })
    };
    Ok(EgressConfig {
        intercept,
        listen,
        connect_timeout: ms(raw.connect_timeout_ms, 10_000, "connect_timeout_ms")?,
        resolve_timeout: ms(raw.resolve_timeout_ms, 5_000, "resolve_timeout_ms")?,
        sniff_timeout: ms(raw.sniff_timeout_ms, 10_000, "sniff_timeout_ms")?,
        idle_timeout: ms(raw.idle_timeout_ms, 300_000, "idle_timeout_ms")?,
        max_body_bytes,
        hosts,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::Config;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, Path::new("/srv/p/portcullis.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn resolver_overrides_are_normalized_and_checked() {
        let c = parse("[egress]\nlisten = \"127.0.0.1:3128\"\n[egress.hosts]\n\"API.Example.COM.\" = [\"203.0.113.7\", \"2001:db8::7\"]\n").unwrap();
        assert_eq!(c.egress.hosts["api.example.com"].len(), 2);
        for (bad, field) in [
            (
                "[egress.hosts]\n\"10.0.0.1\" = [\"203.0.113.7\"]\n",
                "egress.hosts.10.0.0.1",
            ),
            ("[egress.hosts]\n\"a.test\" = []\n", "egress.hosts.a.test"),
            (
                "[egress.hosts]\n\"a.test\" = [\"nope\"]\n",
                "egress.hosts.a.test",
            ),
            (
                "[egress.hosts]\n\"a.test\" = [\"1.2.3.4\"]\n\"A.test\" = [\"1.2.3.4\"]\n",
                "egress.hosts.a.test",
            ),
            ("[egress]\nlisten = \"localhost\"\n", "egress.listen"),
            (
                "[egress]\nconnect_timeout_ms = 0\n",
                "egress.connect_timeout_ms",
            ),
            ("[egress]\nca_cert = \"x\"\n", "egress.ca_cert"),
            ("[egress]\nintercept = [\"*.com\"]\n", "egress.intercept[0]"),
            (
                "[egress]\nintercept = [\"10.0.0.1\"]\n",
                "egress.intercept[0]",
            ),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(field), "{bad}: {e}");
        }
    }

    #[test]
    fn interception_defaults_to_the_certs_directory_beside_the_config() {
        let c = parse("[egress]\nintercept = [\"*.Example.org\", \"api.example.com\"]\n").unwrap();
        let i = c.egress.intercept.unwrap();
        assert_eq!(i.hosts, ["*.example.org", "api.example.com"]);
        assert_eq!(i.ca_cert, Path::new("/srv/p/certs/ca.crt"));
        assert_eq!(i.ca_key, Path::new("/srv/p/certs/ca.key"));
        assert!(i.upstream_ca_file.is_none());
    }
}
