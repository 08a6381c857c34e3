//! TLS interception for the CONNECT targets `[egress] intercept` names: the client gets a
//! certificate for the target minted on the fly by the local CA (cached per host), the upstream
//! is reached over TLS verified against the system or a configured bundle, and the HTTP inside
//! is decided request by request like plain HTTP, with method, path, headers and body visible.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use rcgen::{Issuer, KeyPair};
use rustls::ServerConfig;
use rustls::pki_types::ServerName;

use crate::config::Intercept;
use crate::sync::lock;

/// Leaf configurations kept; the cache starts over when full (minting takes about a millisecond).
const CACHE: usize = 1024;

pub struct Interceptor {
    hosts: Vec<String>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<HashMap<String, Arc<ServerConfig>>>,
    upstream: tokio_rustls::TlsConnector,
}

impl Interceptor {
    pub fn new(cfg: &Intercept) -> Result<Interceptor, String> {
        let issuer = crate::ca::load_issuer(&cfg.ca_cert, &cfg.ca_key)
            .map_err(|(p, reason)| format!("egress interception CA: {} {reason}", p.display()))?;
        let bundle = cfg
            .upstream_ca_file
            .clone()
            .unwrap_or_else(|| crate::ca::SYSTEM_CA.into());
        let client = crate::ca::client_config(crate::ca::roots(&bundle)?)?;
        Ok(Interceptor {
            hosts: cfg.hosts.clone(),
            issuer,
            leaves: Mutex::new(HashMap::new()),
            upstream: tokio_rustls::TlsConnector::from(client),
        })
    }

    /// Whether tunnels to `host` (canonical) are opened up.
    pub fn matches(&self, host: &str) -> bool {
        self.hosts.iter().any(|p| match p.strip_prefix("*.") {
            Some(domain) => host
                .strip_suffix(domain)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => p == host,
        })
    }

    /// The server side shown to the client for `host`.
    pub fn server_config(&self, host: &str) -> Result<Arc<ServerConfig>, String> {
        if let Some(c) = lock(&self.leaves).get(host) {
            return Ok(c.clone());
        }
        let (cert, key) = crate::ca::mint_server(&self.issuer, host)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let mut leaves = lock(&self.leaves);
        if leaves.len() >= CACHE {
            leaves.clear();
        }
        leaves.insert(host.to_string(), config.clone());
        Ok(config)
    }

    pub fn connector(&self) -> &tokio_rustls::TlsConnector {
        &self.upstream
    }

    pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
        ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_names_below_a_domain_but_not_the_domain_or_lookalikes() {
        let i = Interceptor {
            hosts: vec!["*.example.com".into(), "api.test".into()],
            issuer: Issuer::new(
                crate::ca::ca_params(),
                KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap(),
            ),
            leaves: Mutex::new(HashMap::new()),
            upstream: tokio_rustls::TlsConnector::from(
                crate::ca::client_config(Arc::new(rustls::RootCertStore::empty())).unwrap(),
            ),
        };
        assert!(i.matches("a.example.com"));
        assert!(i.matches("a.b.example.com"));
        assert!(i.matches("api.test"));
        assert!(!i.matches("example.com"));
        assert!(!i.matches("evilexample.com"));
        assert!(!i.matches("x.api.test"));
        // Minted once, then cached.
        let a = i.server_config("a.example.com").unwrap();
        let b = i.server_config("a.example.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
    }
}
