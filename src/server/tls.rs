//! TLS for the listener: a rustls server config built from PEM files, optionally verifying client
//! certificates against a private CA, and the identity a verified client certificate carries.
//!
//! Crypto is rustls' `ring` provider, passed explicitly to every builder so that nothing depends
//! on a process-wide default (and aws-lc-rs, with its cmake/C build, stays out of the tree).
//!
//! Names are read from a client certificate with `rustls-webpki`, which rustls already uses to
//! verify it: `EndEntityCert::valid_dns_names` gives the DNS SANs and `subject` the raw subject
//! Name, from which the common name is taken by the small DER walk at the bottom of this file.
//! `x509-parser` would do both but roughly doubles the dependency tree (nom, asn1-rs, der-parser,
//! oid-registry and their proc macros) for two fields.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use sha2::{Digest, Sha256};

/// Where the listener's certificate and key are, and how clients are authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// PEM certificate chain, end-entity certificate first.
    pub cert: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `cert`.
    pub key: PathBuf,
    /// PEM CA certificates that client certificates must chain to. Without it, client
    /// certificates are not requested.
    pub client_ca: Option<PathBuf>,
    /// Refuse the handshake unless the client presents a certificate that chains to `client_ca`.
    /// When false, clients without a certificate are let in (and may authenticate at the HTTP
    /// layer); a client that presents a certificate that does not verify is still refused.
    pub require_client_cert: bool,
}

/// Everything that can go wrong building a server config.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read (including: it does not exist).
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which setting the file is for, e.g. "certificate".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file is not valid PEM.
    #[error("{what} {path} is not valid PEM: {source}")]
    Pem {
        /// Which setting the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: pem::Error,
    },
    /// A certificate file holds no `CERTIFICATE` block.
    #[error("{what} {path} contains no PEM certificate")]
    NoCertificate {
        /// Which setting the file is for.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The key file holds no private key block.
    #[error("key {path} contains no PEM private key")]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The private key is not the key of the certificate.
    #[error("private key {key} does not match certificate {cert}")]
    KeyMismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate or key cannot be used (e.g. an unsupported key type).
    #[error("cannot use certificate {cert} with key {key}: {source}")]
    Unusable {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// The underlying error.
        #[source]
        source: rustls::Error,
    },
    /// The client CA file holds something that cannot be a trust anchor.
    #[error("client_ca {path} is not a usable CA: {reason}")]
    BadClientCa {
        /// The file.
        path: PathBuf,
        /// Why, including the underlying error.
        reason: String,
    },
    /// `require_client_cert` was asked for with nothing to verify client certificates against.
    #[error("require_client_cert is set but no client_ca is configured")]
    RequireClientCertWithoutCa,
    /// rustls refused the protocol versions (should not happen with the ring provider).
    #[error("cannot configure protocol versions: {0}")]
    Protocol(#[source] rustls::Error),
}

/// Builds the listener's config: TLS 1.2 and 1.3, ALPN `http/1.1` only, client certificates as
/// `s` says.
pub fn server_config(s: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(TlsError::Protocol)?;

    let builder = match (&s.client_ca, s.require_client_cert) {
        (None, true) => return Err(TlsError::RequireClientCertWithoutCa),
        (None, false) => builder.with_no_client_auth(),
        (Some(ca), required) => {
            builder.with_client_cert_verifier(client_verifier(ca, required, provider)?)
        }
    };

    let certs = read_certs("certificate", &s.cert)?;
    let key = read_key(&s.key)?;
    let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch {
            cert: s.cert.clone(),
            key: s.key.clone(),
        },
        source => TlsError::Unusable {
            cert: s.cert.clone(),
            key: s.key.clone(),
            source,
        },
    })?;
    // Only HTTP/1.1 is served; a client that insists on h2 alone fails the handshake rather than
    // speaking a protocol we do not parse.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    path: &Path,
    required: bool,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, TlsError> {
    let bad = |reason: String| TlsError::BadClientCa {
        path: path.to_path_buf(),
        reason,
    };
    let mut roots = RootCertStore::empty();
    for cert in read_certs("client_ca", path)? {
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    builder.build().map_err(|e| bad(e.to_string()))
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file (a CA bundle for clients of the admin API).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_certs("CA certificate", path)
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Pem {
            what,
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read("key", path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        pem::Error::NoItemsFound => TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        },
        source => TlsError::Pem {
            what: "key",
            path: path.to_path_buf(),
            source,
        },
    })
}

/// Who a client certificate says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// `sha256:` and the lowercase hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
    /// The DNS names of the subject alternative name extension, in order.
    pub dns_names: Vec<String>,
    /// The subject's common name, when it has exactly one (several would be ambiguous).
    pub common_name: Option<String>,
}

/// The client's end-entity certificate, or `None` when the client presented none.
///
/// rustls only completes a handshake, and so only makes a `ServerConnection` readable, after the
/// configured verifier has accepted the chain: whatever this returns has been verified.
pub fn peer_cert(conn: &ServerConnection) -> Option<PeerCert> {
    describe_cert(conn.peer_certificates()?.first()?)
}

/// [`PeerCert`] of a DER certificate, or `None` if it does not parse. Does not verify anything.
pub fn describe_cert(der: &[u8]) -> Option<PeerCert> {
    let der = CertificateDer::from(der);
    let cert = webpki::EndEntityCert::try_from(&der).ok()?;
    Some(PeerCert {
        fingerprint: format!("sha256:{}", hex::encode(Sha256::digest(der.as_ref()))),
        dns_names: cert.valid_dns_names().map(str::to_owned).collect(),
        common_name: common_name(cert.subject()),
    })
}

/// The value of the single commonName (2.5.4.3) attribute in the contents of a DER Name, or
/// `None` if there is none, more than one, or it is not a UTF8, Printable or IA5 string.
fn common_name(mut name: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let mut found = None;
    while !name.is_empty() {
        let (rdn, rest) = der_expect(name, 0x31)?; // SET OF AttributeTypeAndValue
        name = rest;
        let mut rdn = rdn;
        while !rdn.is_empty() {
            let (atv, rest) = der_expect(rdn, 0x30)?;
            rdn = rest;
            let (oid, value) = der_expect(atv, 0x06)?;
            if oid != CN {
                continue;
            }
            if found.is_some() {
                return None;
            }
            let (tag, text, _) = der_tlv(value)?;
            found = match tag {
                0x0c | 0x13 | 0x16 => Some(String::from_utf8(text.to_vec()).ok()?),
                _ => return None,
            };
        }
    }
    found
}

fn der_expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, value, rest) = der_tlv(input)?;
    (t == tag).then_some((value, rest))
}

/// Splits one tag-length-value off `input`: (tag, value, rest). Single-byte tags only, which is
/// all a Name uses.
fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let (bytes, rest) = input.split_at_checked(n)?;
        input = rest;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    let (value, rest) = input.split_at_checked(len)?;
    Some((tag, value, rest))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use rustls::ClientConfig;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinHandle;
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::super::certs::{self, InitOptions};
    use super::*;

    const LIMIT: Duration = Duration::from_secs(10);

    /// A CA, server and `client-builder-bot` in a fresh directory.
    fn pki(clients: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        certs::init(&InitOptions {
            dir: dir.path().to_path_buf(),
            clients: clients.iter().map(|c| c.to_string()).collect(),
            ..InitOptions::default()
        })
        .unwrap();
        dir
    }

    fn settings(dir: &Path, client_ca: bool, require: bool) -> TlsSettings {
        TlsSettings {
            cert: dir.join("server.crt"),
            key: dir.join("server.key"),
            client_ca: client_ca.then(|| dir.join("ca.crt")),
            require_client_cert: require,
        }
    }

    fn err(s: &TlsSettings) -> String {
        server_config(s)
            .expect_err("config should fail")
            .to_string()
    }

    #[test]
    fn missing_cert_file_is_named() {
        let dir = pki(&[]);
        let mut s = settings(dir.path(), false, false);
        s.cert = dir.path().join("nope.crt");
        let e = err(&s);
        assert!(e.contains("nope.crt") && e.contains("certificate"), "{e}");
        assert!(e.contains("No such file"), "{e}");
    }

    #[test]
    fn pem_without_cert_is_named() {
        let dir = pki(&[]);
        let mut s = settings(dir.path(), false, false);
        s.cert = dir.path().join("server.key"); // PEM, but a key
        let e = err(&s);
        assert!(
            e.contains("server.key") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn key_file_without_key_is_named() {
        let dir = pki(&[]);
        let mut s = settings(dir.path(), false, false);
        s.key = dir.path().join("server.crt");
        let e = err(&s);
        assert!(
            e.contains("server.crt") && e.contains("no PEM private key"),
            "{e}"
        );
    }

    #[test]
    fn key_not_matching_cert_is_named() {
        let dir = pki(&[]);
        let mut s = settings(dir.path(), false, false);
        s.key = dir.path().join("ca.key");
        let e = err(&s);
        assert!(e.contains("ca.key") && e.contains("server.crt"), "{e}");
        assert!(e.contains("does not match"), "{e}");
    }

    #[test]
    fn require_client_cert_needs_client_ca() {
        let dir = pki(&[]);
        let e = err(&settings(dir.path(), false, true));
        assert!(
            e.contains("require_client_cert") && e.contains("client_ca"),
            "{e}"
        );
    }

    #[test]
    fn bad_client_ca_is_named() {
        let dir = pki(&[]);
        let mut s = settings(dir.path(), true, false);
        s.client_ca = Some(dir.path().join("ca.key"));
        let e = err(&s);
        assert!(e.contains("client_ca") && e.contains("ca.key"), "{e}");
        std::fs::write(
            dir.path().join("junk.crt"),
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        s.client_ca = Some(dir.path().join("junk.crt"));
        let e = err(&s);
        assert!(
            e.contains("junk.crt") && e.contains("not a usable CA"),
            "{e}"
        );
    }

    #[test]
    fn describe_cert_reads_names_and_fingerprint() {
        let dir = pki(&["builder-bot"]);
        let pem = std::fs::read(dir.path().join("client-builder-bot.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        let got = describe_cert(&der).unwrap();
        assert_eq!(got.dns_names, vec!["builder-bot".to_string()]);
        assert_eq!(got.common_name.as_deref(), Some("builder-bot"));
        let want = format!("sha256:{}", hex::encode(Sha256::digest(&der)));
        assert_eq!(got.fingerprint, want);
        assert!(describe_cert(b"not a certificate").is_none());
        assert!(describe_cert(&der[..der.len() - 1]).is_none());
    }

    #[test]
    fn common_name_walk() {
        // SET { SEQUENCE { OID 2.5.4.3, UTF8String "ab" } }
        let cn = [
            0x31, 0x0b, 0x30, 0x09, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x02, b'a', b'b',
        ];
        assert_eq!(common_name(&cn).as_deref(), Some("ab"));
        assert_eq!(common_name(&[]), None);
        assert_eq!(
            common_name(&[cn, cn].concat()),
            None,
            "two CNs are ambiguous"
        );
        let mut o = cn;
        o[8] = 0x0a; // 2.5.4.10, organization
        assert_eq!(common_name(&o), None);
        assert_eq!(common_name(&cn[..cn.len() - 1]), None, "truncated");
    }

    /// Accepts one TLS connection; reads "ping", answers "pong"; returns what `peer_cert` said,
    /// or the handshake error.
    async fn serve_one(
        config: Arc<ServerConfig>,
    ) -> (SocketAddr, JoinHandle<io::Result<Option<PeerCert>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
            let peer = peer_cert(tls.get_ref().1);
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await?;
            assert_eq!(&buf, b"ping");
            tls.write_all(b"pong").await?;
            tls.shutdown().await?;
            Ok(peer)
        });
        (addr, task)
    }

    struct Client<'a> {
        ca: &'a Path,
        /// (cert, key) files to authenticate with.
        identity: Option<(PathBuf, PathBuf)>,
        versions: &'a [&'static rustls::SupportedProtocolVersion],
        alpn: &'a [&'a [u8]],
    }

    impl<'a> Client<'a> {
        fn new(ca: &'a Path) -> Self {
            Client {
                ca,
                identity: None,
                versions: rustls::DEFAULT_VERSIONS,
                alpn: &[b"h2", b"http/1.1"],
            }
        }

        fn with_cert(mut self, dir: &Path, name: &str) -> Self {
            let stem = format!("client-{name}");
            self.identity = Some((
                dir.join(format!("{stem}.crt")),
                dir.join(format!("{stem}.key")),
            ));
            self
        }

        /// Handshakes, sends "ping", returns the negotiated ALPN and everything the server sent.
        async fn ping(&self, addr: SocketAddr) -> io::Result<(Option<Vec<u8>>, Vec<u8>)> {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(read_certs("ca", self.ca).unwrap());
            let builder = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(self.versions)
                .unwrap()
                .with_root_certificates(roots);
            let mut config = match &self.identity {
                None => builder.with_no_client_auth(),
                Some((cert, key)) => builder
                    .with_client_auth_cert(read_certs("c", cert).unwrap(), read_key(key).unwrap())
                    .unwrap(),
            };
            config.alpn_protocols = self.alpn.iter().map(|p| p.to_vec()).collect();
            let tcp = TcpStream::connect(addr).await?;
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
            tls.write_all(b"ping").await?;
            let mut got = Vec::new();
            tls.read_to_end(&mut got).await?;
            Ok((alpn, got))
        }
    }

    /// Runs `client` against a fresh server; returns the client's and the server's outcome.
    async fn handshake(
        config: Arc<ServerConfig>,
        client: &Client<'_>,
    ) -> (
        io::Result<(Option<Vec<u8>>, Vec<u8>)>,
        io::Result<Option<PeerCert>>,
    ) {
        let (addr, server) = serve_one(config).await;
        let client = tokio::time::timeout(LIMIT, client.ping(addr))
            .await
            .unwrap();
        let server = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
        (client, server)
    }

    #[tokio::test]
    async fn handshake_without_client_auth_tls12_and_tls13() {
        let dir = pki(&[]);
        let config = server_config(&settings(dir.path(), false, false)).unwrap();
        let ca = dir.path().join("ca.crt");
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let client = Client {
                versions: &[version],
                ..Client::new(&ca)
            };
            let (c, s) = handshake(config.clone(), &client).await;
            let (alpn, got) = c.unwrap();
            assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
            assert_eq!(got, b"pong");
            assert_eq!(s.unwrap(), None);
        }
        // h2 alone is refused rather than silently downgraded.
        let client = Client {
            alpn: &[b"h2"],
            ..Client::new(&ca)
        };
        let (c, s) = handshake(config, &client).await;
        assert!(c.is_err() && s.is_err());
    }

    #[tokio::test]
    async fn optional_client_cert() {
        let dir = pki(&["builder-bot"]);
        let config = server_config(&settings(dir.path(), true, false)).unwrap();
        let ca = dir.path().join("ca.crt");

        let (c, s) = handshake(config.clone(), &Client::new(&ca)).await;
        assert_eq!(c.unwrap().1, b"pong");
        assert_eq!(s.unwrap(), None);

        let client = Client::new(&ca).with_cert(dir.path(), "builder-bot");
        let (c, s) = handshake(config.clone(), &client).await;
        assert_eq!(c.unwrap().1, b"pong");
        let peer = s.unwrap().unwrap();
        assert_eq!(peer.dns_names, vec!["builder-bot".to_string()]);
        assert_eq!(peer.common_name.as_deref(), Some("builder-bot"));
        let pem = std::fs::read(dir.path().join("client-builder-bot.crt")).unwrap();
        let der = CertificateDer::from_pem_slice(&pem).unwrap();
        assert_eq!(
            peer.fingerprint,
            format!("sha256:{}", hex::encode(Sha256::digest(&der)))
        );

        // Optional does not mean unchecked: a certificate from another CA is refused.
        let other = pki(&["mallory"]);
        let client = Client::new(&ca).with_cert(other.path(), "mallory");
        let (c, s) = handshake(config, &client).await;
        assert!(s.is_err(), "server accepted a foreign client cert");
        assert!(c.is_err(), "client got data over a refused handshake");
    }

    #[tokio::test]
    async fn required_client_cert() {
        let dir = pki(&["builder-bot"]);
        let config = server_config(&settings(dir.path(), true, true)).unwrap();
        let ca = dir.path().join("ca.crt");

        let (c, s) = handshake(config.clone(), &Client::new(&ca)).await;
        assert!(s.is_err() && c.is_err(), "no client cert was accepted");

        let other = pki(&["builder-bot"]);
        let client = Client::new(&ca).with_cert(other.path(), "builder-bot");
        let (c, s) = handshake(config.clone(), &client).await;
        assert!(
            s.is_err() && c.is_err(),
            "a foreign client cert was accepted"
        );

        let client = Client::new(&ca).with_cert(dir.path(), "builder-bot");
        let (c, s) = handshake(config, &client).await;
        assert_eq!(c.unwrap().1, b"pong");
        assert_eq!(
            s.unwrap().unwrap().common_name.as_deref(),
            Some("builder-bot")
        );
    }

    /// A minimal HTTPS responder for one connection: reads the request head, answers "ok".
    async fn http_once(config: Arc<ServerConfig>) -> (u16, JoinHandle<io::Result<()>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let mut tls = TlsAcceptor::from(config).accept(tcp).await?;
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tls.read(&mut buf).await?;
                if n == 0 || head.len() > 16 * 1024 {
                    return Err(io::Error::other("no complete request head"));
                }
                head.extend_from_slice(&buf[..n]);
            }
            tls.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await?;
            tls.shutdown().await
        });
        (port, task)
    }

    /// Runs curl against a fresh responder; returns curl's output and the server's outcome.
    async fn curl(
        config: Arc<ServerConfig>,
        dir: &Path,
        client: Option<&str>,
    ) -> (std::process::Output, io::Result<()>) {
        let (port, server) = http_once(config).await;
        let mut cmd = tokio::process::Command::new("/usr/bin/curl");
        // -q first: ignore any ~/.curlrc. --resolve: no dependence on how localhost resolves.
        cmd.arg("-q")
            .args(["-sS", "--max-time", "10", "--noproxy", "*"])
            .arg("--resolve")
            .arg(format!("localhost:{port}:127.0.0.1"))
            .arg("--cacert")
            .arg(dir.join("ca.crt"));
        if let Some(name) = client {
            cmd.arg("--cert")
                .arg(dir.join(format!("client-{name}.crt")))
                .arg("--key")
                .arg(dir.join(format!("client-{name}.key")));
        }
        cmd.arg(format!("https://localhost:{port}/"));
        let out = tokio::time::timeout(LIMIT * 2, cmd.output())
            .await
            .unwrap()
            .unwrap();
        let server = tokio::time::timeout(LIMIT, server).await.unwrap().unwrap();
        (out, server)
    }

    #[tokio::test]
    async fn curl_trusts_generated_ca() {
        let dir = pki(&[]);
        let config = server_config(&settings(dir.path(), false, false)).unwrap();
        let (out, server) = curl(config, dir.path(), None).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "curl failed: {stderr}");
        assert_eq!(out.stdout, b"ok");
        server.unwrap();
    }

    #[tokio::test]
    async fn curl_with_required_client_cert() {
        let dir = pki(&["x"]);
        let config = server_config(&settings(dir.path(), true, true)).unwrap();

        let (out, server) = curl(config.clone(), dir.path(), Some("x")).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "curl failed: {stderr}");
        assert_eq!(out.stdout, b"ok");
        server.unwrap();

        let (out, server) = curl(config, dir.path(), None).await;
        assert!(
            !out.status.success(),
            "curl without a client cert succeeded"
        );
        assert!(out.stdout.is_empty());
        assert!(server.is_err());
    }
}
