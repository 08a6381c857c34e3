//! `[egress]`: the forward proxy that decides every outbound request (HTTP absolute-form and
//! CONNECT), and the static resolver override it consults before the system resolver.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
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
}

/// Validate `[egress]`; errors are (field path, message).
pub(super) fn egress_config(raw: RawEgress) -> Result<EgressConfig, (String, String)> {
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
    Ok(EgressConfig {
        listen,
        connect_timeout: ms(raw.connect_timeout_ms, 10_000, "connect_timeout_ms")?,
        resolve_timeout: ms(raw.resolve_timeout_ms, 5_000, "resolve_timeout_ms")?,
        sniff_timeout: ms(raw.sniff_timeout_ms, 10_000, "sniff_timeout_ms")?,
        idle_timeout: ms(raw.idle_timeout_ms, 300_000, "idle_timeout_ms")?,
        max_body_bytes,
        hosts,
    })
}
