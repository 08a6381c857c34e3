//! Who is calling: API keys (the config holds only their sha256) and verified client
//! certificates map to an agent id and labels, which the policy sees as `input.agent`.
//!
//! Looking a key up by its digest keeps the comparison off the secret itself, so timing tells
//! an attacker nothing useful about a key.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

use crate::action::Agent;
use crate::config::IdentityConfig;

/// An authenticated (or explicitly anonymous) caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub agent: Agent,
    /// The session a caller gets without an `X-Portcullis-Session` header: one per credential.
    pub default_session: String,
}

/// What a client certificate says, after the TLS layer verified it against the client CA.
#[derive(Debug, Clone, Default)]
pub struct CertIdentity {
    /// `sha256:<hex>` of the certificate's DER.
    pub fingerprint: String,
    pub names: Vec<String>,
}

/// Why a caller was refused (HTTP 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no credentials: send `Authorization: Bearer <key>` or a client certificate")]
    Missing,
    #[error("the API key is not known")]
    UnknownKey,
    #[error("the client certificate is not mapped to an agent")]
    UnknownCert,
    #[error("the API key and the client certificate name different agents")]
    Conflict,
}

struct Known {
    id: String,
    labels: BTreeMap<String, String>,
}

/// The credential tables, built once from the config.
pub struct Identities {
    by_key: HashMap<String, usize>,
    by_cert: HashMap<String, usize>,
    agents: Vec<Known>,
    anonymous: Option<Known>,
    admins: HashMap<String, String>,
}

impl Identities {
    pub fn new(cfg: &IdentityConfig) -> Identities {
        let mut by_key = HashMap::new();
        let mut by_cert = HashMap::new();
        let mut agents = Vec::new();
        for (i, a) in cfg.agents.iter().enumerate() {
            for h in &a.api_key_sha256 {
                by_key.insert(h.clone(), i);
            }
            if let Some(name) = &a.client_cert {
                by_cert.insert(name.clone(), i);
            }
            agents.push(Known {
                id: a.id.clone(),
                labels: a.labels.clone(),
            });
        }
        let admins = cfg
            .admins
            .iter()
            .flat_map(|a| a.api_key_sha256.iter().map(|h| (h.clone(), a.id.clone())))
            .collect();
        Identities {
            by_key,
            by_cert,
            agents,
            anonymous: cfg.anonymous.as_ref().map(|a| Known {
                id: a.id.clone(),
                labels: a.labels.clone(),
            }),
            admins,
        }
    }

    /// Identify an agent from a bearer key and/or a verified client certificate.
    pub fn agent(
        &self,
        key: Option<&str>,
        cert: Option<&CertIdentity>,
    ) -> Result<Caller, AuthError> {
        let by_key = match key {
            Some(k) => {
                let digest = key_digest(k);
                let i = *self.by_key.get(&digest).ok_or(AuthError::UnknownKey)?;
                Some((i, format!("key-{}", &digest[..12])))
            }
            None => None,
        };
        let by_cert = match cert {
            Some(c) => {
                let i = c.names.iter().find_map(|n| self.by_cert.get(n).copied());
                match (i, &by_key) {
                    (Some(i), _) => Some((i, format!("cert-{}", short(&c.fingerprint)))),
                    // A CA-signed cert that names no agent still lets an API key decide.
                    (None, Some(_)) => None,
                    (None, None) => return Err(AuthError::UnknownCert),
                }
            }
            None => None,
        };
        let (index, credential) = match (by_key, by_cert) {
            (Some((a, cred)), Some((b, _))) if a == b => (a, cred),
            (Some(_), Some(_)) => return Err(AuthError::Conflict),
            (Some(x), None) | (None, Some(x)) => x,
            (None, None) => {
                let anon = self.anonymous.as_ref().ok_or(AuthError::Missing)?;
                return Ok(Caller {
                    agent: Agent {
                        id: anon.id.clone(),
                        labels: anon.labels.clone(),
                        authenticated: false,
                    },
                    default_session: "anonymous".into(),
                });
            }
        };
        let known = &self.agents[index];
        Ok(Caller {
            agent: Agent {
                id: known.id.clone(),
                labels: known.labels.clone(),
                authenticated: true,
            },
            default_session: credential,
        })
    }

    /// The admin id for a bearer key, if it is an admin credential.
    pub fn admin(&self, key: Option<&str>) -> Result<String, AuthError> {
        let key = key.ok_or(AuthError::Missing)?;
        self.admins
            .get(&key_digest(key))
            .cloned()
            .ok_or(AuthError::UnknownKey)
    }

    pub fn has_admins(&self) -> bool {
        !self.admins.is_empty()
    }
}

/// Lower-case hex sha256 of a key, as the config stores it.
pub fn key_digest(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

fn short(fingerprint: &str) -> &str {
    let hex = fingerprint.strip_prefix("sha256:").unwrap_or(fingerprint);
    &hex[..hex.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminConfig, AgentConfig};

    fn ids(anonymous: bool) -> Identities {
        Identities::new(&IdentityConfig {
            agents: vec![
                AgentConfig {
                    id: "bot".into(),
                    labels: BTreeMap::from([("team".into(), "platform".into())]),
                    api_key_sha256: vec![key_digest("k1"), key_digest("k1b")],
                    client_cert: Some("bot.agents".into()),
                },
                AgentConfig {
                    id: "other".into(),
                    api_key_sha256: vec![key_digest("k2")],
                    ..AgentConfig::default()
                },
            ],
            anonymous: anonymous.then(|| AgentConfig {
                id: "anon".into(),
                ..AgentConfig::default()
            }),
            admins: vec![AdminConfig {
                id: "alice".into(),
                api_key_sha256: vec![key_digest("root")],
            }],
        })
    }

    fn cert(name: &str) -> CertIdentity {
        CertIdentity {
            fingerprint: "sha256:abcdef0123456789".into(),
            names: vec![name.into()],
        }
    }

    #[test]
    fn keys_and_certs_map_to_agents() {
        let ids = ids(false);
        let c = ids.agent(Some("k1"), None).unwrap();
        assert_eq!(c.agent.id, "bot");
        assert!(c.agent.authenticated);
        assert_eq!(c.agent.labels["team"], "platform");
        // Each credential has its own default session.
        let c2 = ids.agent(Some("k1b"), None).unwrap();
        assert_ne!(c.default_session, c2.default_session);
        assert_eq!(
            ids.agent(None, Some(&cert("bot.agents"))).unwrap().agent.id,
            "bot"
        );
        assert_eq!(
            ids.agent(Some("k1"), Some(&cert("bot.agents")))
                .unwrap()
                .agent
                .id,
            "bot"
        );
        assert_eq!(
            ids.agent(Some("k2"), Some(&cert("nobody")))
                .unwrap()
                .agent
                .id,
            "other"
        );
    }

    #[test]
    fn bad_credentials_are_refused() {
        let ids = ids(false);
        assert_eq!(ids.agent(None, None), Err(AuthError::Missing));
        assert_eq!(ids.agent(Some("nope"), None), Err(AuthError::UnknownKey));
        assert_eq!(
            ids.agent(None, Some(&cert("nobody"))),
            Err(AuthError::UnknownCert)
        );
        assert_eq!(
            ids.agent(Some("k2"), Some(&cert("bot.agents"))),
            Err(AuthError::Conflict)
        );
        // A wrong key is refused even when anonymous callers are allowed.
        assert_eq!(
            self::ids(true).agent(Some("nope"), None),
            Err(AuthError::UnknownKey)
        );
        // An agent key is not an admin key.
        assert_eq!(ids.admin(Some("k1")), Err(AuthError::UnknownKey));
        assert_eq!(ids.admin(Some("root")).unwrap(), "alice");
        assert_eq!(ids.admin(None), Err(AuthError::Missing));
    }

    #[test]
    fn anonymous_only_when_configured() {
        let c = ids(true).agent(None, None).unwrap();
        assert_eq!(c.agent.id, "anon");
        assert!(!c.agent.authenticated);
    }
}
