//! `portcullis certs init`: a local CA, a server certificate and client certificates, so the
//! proxy can run with TLS and mutual TLS without an external PKI.
//!
//! Re-running is safe: an existing CA is reused, existing leaf files are kept, and only what is
//! missing is written. Every file is written to a temporary file in the same directory and
//! renamed into place, keys with mode 0600 from the moment they exist.
//!
//! rcgen can parse an existing CA certificate only with its `x509-parser` feature, which would
//! roughly double the dependency tree. A CA made here is instead reloaded by rebuilding the
//! parameters it was made with and checking that they and `ca.key` reproduce its subject and
//! public key: those are all a new leaf's issuer name, authority key identifier and signature
//! depend on.

use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::ca::{ca_params, leaf_params, valid_for};
use rcgen::string::Ia5String;
use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
use rustls::pki_types::DnsName;

/// The server certificate's names when none are given.
pub const DEFAULT_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

const CA_DAYS: i64 = 3652;
const GITIGNORE_LINE: &str = "*.key";

/// What `certs init` should produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// Where the files go; created (0755) if missing.
    pub dir: PathBuf,
    /// Names the server certificate is valid for; IP addresses become IP SANs.
    pub hosts: Vec<String>,
    /// A `client-NAME.crt`/`.key` pair is made for each NAME, with NAME as DNS SAN and CN.
    pub clients: Vec<String>,
    /// Regenerate everything, including the CA, even if files exist.
    pub force: bool,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            dir: PathBuf::from("certs"),
            hosts: DEFAULT_HOSTS.iter().map(|h| h.to_string()).collect(),
            clients: Vec::new(),
            force: false,
        }
    }
}

/// What `init` did, in the order it did it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitReport {
    /// Files created or replaced.
    pub written: Vec<PathBuf>,
    /// Files that existed and were left alone.
    pub kept: Vec<PathBuf>,
}

/// Everything that can go wrong in `init`.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// A file-system operation failed.
    #[error("certs: cannot {op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "read", "rename".
        op: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// An existing private key is readable or writable by group or others.
    #[error(
        "certs: private key {path} has mode {mode:04o}, open to group or others; it may have \
         leaked, so it is not used: regenerate with --force (or `chmod 600` it if you are sure)"
    )]
    KeyTooOpen {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A `--client` name cannot be used.
    #[error("certs: invalid client name {name:?}: {reason}")]
    InvalidClientName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host cannot be put in the server certificate.
    #[error("certs: invalid host {host:?}: {reason}")]
    InvalidHost {
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Half of the CA is there; guessing which half is right could orphan issued certificates.
    #[error(
        "certs: {present} exists but {missing} does not; restore it, or regenerate everything \
         with --force"
    )]
    IncompleteCa {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// The existing CA cannot be reused.
    #[error("certs: cannot reuse the CA: {path} {reason}; regenerate everything with --force")]
    BadCa {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen failed to make a key or certificate.
    #[error("certs: cannot generate {what}: {source}")]
    Generate {
        /// The file being made.
        what: PathBuf,
        /// The underlying error.
        #[source]
        source: rcgen::Error,
    },
}

/// Creates or completes the CA, server and client files in `opts.dir`.
pub fn init(opts: &InitOptions) -> Result<InitReport, CertError> {
    // Validate everything before touching the disk, so a typo leaves nothing half-made.
    let mut clients: Vec<&str> = Vec::new();
    for name in &opts.clients {
        check_client_name(name)?;
        if !clients.contains(&name.as_str()) {
            clients.push(name);
        }
    }
    let server = server_params(&opts.hosts)?;

    let dir = &opts.dir;
    DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_err("create directory", dir))?;
    let mut report = InitReport::default();
    // First, so that no key can sit in the directory without it.
    gitignore(dir, &mut report)?;

    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let have_crt = exists(&ca_crt)?;
    let have_key = exists(&ca_key)?;
    let (ca, fresh) = match (opts.force, have_crt, have_key) {
        (false, true, true) => {
            let ca = load_ca(&ca_crt, &ca_key)?;
            report.kept.extend([ca_crt, ca_key]);
            (ca, false)
        }
        (false, true, false) => return Err(incomplete(ca_crt, ca_key)),
        (false, false, true) => return Err(incomplete(ca_key, ca_crt)),
        _ => (new_ca(&ca_crt, &ca_key, &mut report)?, true),
    };

    // Leaves of a CA that was just made must be reissued: the old ones chain to nothing.
    leaf(&ca, fresh, dir, "server", server, &mut report)?;
    for name in clients {
        leaf(
            &ca,
            fresh,
            dir,
            &format!("client-{name}"),
            client_params(name)?,
            &mut report,
        )?;
    }
    Ok(report)
}

fn check_client_name(name: &str) -> Result<(), CertError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        "only ASCII letters, digits, '-', '_' and '.' are allowed"
    } else if DnsName::try_from(name).is_err() {
        // It becomes the certificate's DNS SAN, which is what identifies the client.
        "it is not a valid DNS name (e.g. starts or ends with '.' or '-', or is all digits)"
    } else {
        return Ok(());
    };
    Err(CertError::InvalidClientName {
        name: name.to_string(),
        reason,
    })
}

fn server_params(hosts: &[String]) -> Result<CertificateParams, CertError> {
    if hosts.is_empty() {
        return Err(CertError::InvalidHost {
            host: String::new(),
            reason: "the server certificate needs at least one host",
        });
    }
    let mut sans = Vec::new();
    for host in hosts {
        let bad = |reason| CertError::InvalidHost {
            host: host.clone(),
            reason,
        };
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) if host.is_empty() => return Err(bad("it is empty")),
            Err(_) => SanType::DnsName(
                Ia5String::try_from(host.as_str()).map_err(|_| bad("it is not ASCII"))?,
            ),
        });
    }
    let mut p = leaf_params("portcullis server", ExtendedKeyUsagePurpose::ServerAuth);
    p.subject_alt_names = sans;
    Ok(p)
}

fn client_params(name: &str) -> Result<CertificateParams, CertError> {
    let san = Ia5String::try_from(name).map_err(|_| CertError::InvalidClientName {
        name: name.to_string(),
        reason: "it is not ASCII",
    })?;
    let mut p = leaf_params(name, ExtendedKeyUsagePurpose::ClientAuth);
    p.subject_alt_names = vec![SanType::DnsName(san)];
    Ok(p)
}

struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

fn new_ca(crt: &Path, key: &Path, report: &mut InitReport) -> Result<Ca, CertError> {
    let key_pair = generate_key(key)?;
    let mut params = ca_params();
    valid_for(&mut params, CA_DAYS);
    let cert = params.self_signed(&key_pair).map_err(gen_err(crt))?;
    write_atomic(key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(crt, cert.pem().as_bytes(), 0o644)?;
    report
        .written
        .extend([crt.to_path_buf(), key.to_path_buf()]);
    Ok(Ca {
        issuer: Issuer::new(ca_params(), key_pair),
    })
}

fn load_ca(crt: &Path, key: &Path) -> Result<Ca, CertError> {
    check_key_mode(key)?;
    let issuer = crate::ca::load_issuer(crt, key)
        .map_err(|(path, reason)| CertError::BadCa { path, reason })?;
    Ok(Ca { issuer })
}

/// Writes `stem.crt` and `stem.key` signed by `ca`, unless both exist and `regenerate` is false.
fn leaf(
    ca: &Ca,
    regenerate: bool,
    dir: &Path,
    stem: &str,
    params: CertificateParams,
    report: &mut InitReport,
) -> Result<(), CertError> {
    let crt = dir.join(format!("{stem}.crt"));
    let key = dir.join(format!("{stem}.key"));
    if !regenerate && exists(&crt)? && exists(&key)? {
        check_key_mode(&key)?;
        report.kept.extend([crt, key]);
        return Ok(());
    }
    let key_pair = generate_key(&key)?;
    let cert = params
        .signed_by(&key_pair, &ca.issuer)
        .map_err(gen_err(&crt))?;
    write_atomic(&key, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomic(&crt, cert.pem().as_bytes(), 0o644)?;
    report.written.extend([crt, key]);
    Ok(())
}

fn generate_key(path: &Path) -> Result<KeyPair, CertError> {
    KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err(path))
}

fn check_key_mode(path: &Path) -> Result<(), CertError> {
    let mode = fs::metadata(path)
        .map_err(io_err("stat", path))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o077 != 0 {
        return Err(CertError::KeyTooOpen {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Makes sure `dir/.gitignore` ignores `*.key`, keeping whatever else it says.
fn gitignore(dir: &Path, report: &mut InitReport) -> Result<(), CertError> {
    let path = dir.join(".gitignore");
    let mut text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    if text.lines().any(|l| l.trim() == GITIGNORE_LINE) {
        return Ok(());
    }
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("# Private keys made by `portcullis certs init`: never commit them.\n");
    text.push_str(GITIGNORE_LINE);
    text.push('\n');
    write_atomic(&path, text.as_bytes(), 0o644)?;
    report.written.push(path);
    Ok(())
}

/// Replaces `path` with `contents` and mode `mode`, so that readers see the old file or the
/// whole new one, and the data is never readable with wider permissions than `mode`.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), CertError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)
    };
    let mut file = match open() {
        // Left behind by a crashed run that had our pid; create_new never follows a symlink.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(&tmp).map_err(io_err("remove", &tmp))?;
            open()
        }
        other => other,
    }
    .map_err(io_err("create", &tmp))?;

    let written = (|| {
        // The umask can only narrow the mode given to open; make it exact.
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(io_err("chmod", &tmp))?;
        file.write_all(contents).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("fsync", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("rename into place", path))
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    // Make the rename itself durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

fn exists(path: &Path) -> Result<bool, CertError> {
    path.try_exists().map_err(io_err("stat", path))
}

fn incomplete(present: PathBuf, missing: PathBuf) -> CertError {
    CertError::IncompleteCa { present, missing }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> CertError {
    let path = path.to_path_buf();
    move |source| CertError::Io { op, path, source }
}

fn gen_err(path: &Path) -> impl FnOnce(rcgen::Error) -> CertError {
    let what = path.to_path_buf();
    move |source| CertError::Generate { what, source }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::sync::Arc;

    use rcgen::{DistinguishedName, DnType};
    use rustls::RootCertStore;
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{ServerName, UnixTime};
    use rustls::server::WebPkiClientVerifier;

    use super::*;

    fn opts(dir: &Path, clients: &[&str]) -> InitOptions {
        InitOptions {
            dir: dir.to_path_buf(),
            clients: clients.iter().map(|c| c.to_string()).collect(),
            ..InitOptions::default()
        }
    }

    fn cert(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn roots(dir: &Path) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(cert(&dir.join("ca.crt"))).unwrap();
        Arc::new(roots)
    }

    /// Verifies `file` as a client certificate issued by `dir/ca.crt`, as the listener would.
    fn verify_client(dir: &Path, file: &str) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(dir), provider)
            .build()
            .unwrap();
        let ee = cert(&dir.join(file));
        verifier
            .verify_client_cert(&ee, &[], UnixTime::now())
            .map(|_| ())
    }

    fn verify_server(dir: &Path, host: &str) -> Result<(), rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiServerVerifier::builder_with_provider(roots(dir), provider)
            .build()
            .unwrap();
        let ee = cert(&dir.join("server.crt"));
        let name = ServerName::try_from(host).unwrap();
        verifier
            .verify_server_cert(&ee, &[], &name, &[], UnixTime::now())
            .map(|_| ())
    }

    fn names(dir: &Path, files: &[&str]) -> Vec<PathBuf> {
        files.iter().map(|f| dir.join(f)).collect()
    }

    const BASE: [&str; 4] = ["ca.crt", "ca.key", "server.crt", "server.key"];

    #[test]
    fn init_writes_everything_with_safe_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let report = init(&opts(&dir, &["builder-bot"])).unwrap();
        let mut want = names(&dir, &[".gitignore"]);
        want.extend(names(&dir, &BASE));
        want.extend(names(
            &dir,
            &["client-builder-bot.crt", "client-builder-bot.key"],
        ));
        assert_eq!(report.written, want);
        assert!(report.kept.is_empty());

        assert_eq!(mode(&dir), 0o755);
        for f in ["ca.key", "server.key", "client-builder-bot.key"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        for f in [
            "ca.crt",
            "server.crt",
            "client-builder-bot.crt",
            ".gitignore",
        ] {
            assert_eq!(mode(&dir.join(f)), 0o644, "{f}");
        }
        let ignore = fs::read_to_string(dir.join(".gitignore")).unwrap();
        assert!(ignore.lines().any(|l| l == "*.key"), "{ignore}");
        // No temporary files are left behind.
        assert_eq!(fs::read_dir(&dir).unwrap().count(), want.len());

        for host in DEFAULT_HOSTS {
            verify_server(&dir, host).unwrap();
        }
        assert!(verify_server(&dir, "example.com").is_err());
        verify_client(&dir, "client-builder-bot.crt").unwrap();
        // The EKUs keep the roles apart.
        assert!(verify_client(&dir, "server.crt").is_err());
    }

    #[test]
    fn second_init_keeps_everything_and_adds_clients() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(&opts(dir, &["a"])).unwrap();
        let before: Vec<Vec<u8>> = BASE
            .iter()
            .map(|f| fs::read(dir.join(f)).unwrap())
            .collect();

        let report = init(&opts(dir, &["a"])).unwrap();
        assert!(report.written.is_empty(), "{report:?}");
        let mut want = names(dir, &BASE);
        want.extend(names(dir, &["client-a.crt", "client-a.key"]));
        assert_eq!(report.kept, want);

        let report = init(&opts(dir, &["builder-bot"])).unwrap();
        assert_eq!(
            report.written,
            names(dir, &["client-builder-bot.crt", "client-builder-bot.key"])
        );
        assert_eq!(report.kept, names(dir, &BASE));
        let after: Vec<Vec<u8>> = BASE
            .iter()
            .map(|f| fs::read(dir.join(f)).unwrap())
            .collect();
        assert_eq!(before, after);
        verify_client(dir, "client-builder-bot.crt").unwrap();
        verify_client(dir, "client-a.crt").unwrap();
    }

    #[test]
    fn missing_leaf_half_is_regenerated() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(&opts(dir, &[])).unwrap();
        fs::remove_file(dir.join("server.key")).unwrap();
        let report = init(&opts(dir, &[])).unwrap();
        assert_eq!(report.written, names(dir, &["server.crt", "server.key"]));
        verify_server(dir, "localhost").unwrap();
    }

    #[test]
    fn force_regenerates_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(&opts(dir, &["a"])).unwrap();
        let old_ca = fs::read(dir.join("ca.key")).unwrap();
        let old_client = dir.join("old-client.crt");
        fs::copy(dir.join("client-a.crt"), &old_client).unwrap();

        let report = init(&InitOptions {
            force: true,
            ..opts(dir, &["a"])
        })
        .unwrap();
        let mut want = names(dir, &BASE);
        want.extend(names(dir, &["client-a.crt", "client-a.key"]));
        assert_eq!(report.written, want);
        assert!(report.kept.is_empty());
        assert_ne!(fs::read(dir.join("ca.key")).unwrap(), old_ca);
        verify_client(dir, "client-a.crt").unwrap();
        assert!(verify_client(dir, "old-client.crt").is_err());
        assert_eq!(mode(&dir.join("ca.key")), 0o600);
    }

    #[test]
    fn a_new_ca_reissues_existing_leaves() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(&opts(dir, &[])).unwrap();
        fs::remove_file(dir.join("ca.crt")).unwrap();
        fs::remove_file(dir.join("ca.key")).unwrap();
        let report = init(&opts(dir, &[])).unwrap();
        assert_eq!(report.written, names(dir, &BASE));
        verify_server(dir, "localhost").unwrap();
    }

    #[test]
    fn open_key_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(&opts(dir, &[])).unwrap();
        let key = dir.join("ca.key");
        let before = fs::read(&key).unwrap();
        fs::set_permissions(&key, Permissions::from_mode(0o644)).unwrap();
        let e = init(&opts(dir, &["b"])).unwrap_err();
        assert!(
            matches!(e, CertError::KeyTooOpen { mode: 0o644, .. }),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("ca.key") && msg.contains("0644"), "{msg}");
        assert!(!dir.join("client-b.crt").exists());
        assert_eq!(fs::read(&key).unwrap(), before);

        // --force replaces the leaked key instead.
        init(&InitOptions {
            force: true,
            ..opts(dir, &[])
        })
        .unwrap();
        assert_eq!(mode(&key), 0o600);
        assert_ne!(fs::read(&key).unwrap(), before);

        fs::set_permissions(dir.join("server.key"), Permissions::from_mode(0o640)).unwrap();
        let e = init(&opts(dir, &[])).unwrap_err().to_string();
        assert!(e.contains("server.key") && e.contains("0640"), "{e}");
    }

    #[test]
    fn bad_client_names_are_refused_before_writing() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in [
            "",
            "a/b",
            "../x",
            "has space",
            "é",
            ".hidden",
            "-x",
            "a..b",
            "123",
        ] {
            let dir = tmp.path().join("certs");
            let e = init(&opts(&dir, &["ok", bad])).unwrap_err();
            assert!(
                matches!(&e, CertError::InvalidClientName { name, .. } if name == bad),
                "{bad:?}: {e:?}"
            );
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
            assert!(!dir.exists(), "{bad:?} left files behind");
        }
        for good in ["builder-bot", "a_b", "ci.runner-2", "X"] {
            check_client_name(good).unwrap();
        }
    }

    #[test]
    fn bad_hosts_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for hosts in [
            vec![],
            vec!["localhost".to_string(), String::new()],
            vec!["é".to_string()],
        ] {
            let e = init(&InitOptions {
                hosts,
                ..opts(tmp.path(), &[])
            })
            .unwrap_err();
            assert!(matches!(e, CertError::InvalidHost { .. }), "{e:?}");
        }
    }

    #[test]
    fn incomplete_or_foreign_ca_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a");
        init(&opts(&dir, &[])).unwrap();
        fs::remove_file(dir.join("ca.key")).unwrap();
        let e = init(&opts(&dir, &[])).unwrap_err().to_string();
        assert!(
            e.contains("ca.crt exists") && e.contains("ca.key does not"),
            "{e}"
        );

        // Another CA's certificate next to our key.
        let (a, b) = (tmp.path().join("b"), tmp.path().join("c"));
        init(&opts(&a, &[])).unwrap();
        init(&opts(&b, &[])).unwrap();
        fs::copy(b.join("ca.crt"), a.join("ca.crt")).unwrap();
        let e = init(&opts(&a, &["x"])).unwrap_err().to_string();
        assert!(
            e.contains("ca.key") && e.contains("is not the key of"),
            "{e}"
        );

        // The right key but a different subject (made by someone else with this key).
        let key = KeyPair::from_pem(&fs::read_to_string(b.join("ca.key")).unwrap()).unwrap();
        let mut params = ca_params();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, "someone else");
        fs::write(b.join("ca.crt"), params.self_signed(&key).unwrap().pem()).unwrap();
        let e = init(&opts(&b, &["x"])).unwrap_err().to_string();
        assert!(e.contains("ca.crt") && e.contains("subject"), "{e}");
    }

    #[test]
    fn gitignore_is_extended_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::write(dir.join(".gitignore"), "notes.txt").unwrap();
        init(&opts(dir, &[])).unwrap();
        let text = fs::read_to_string(dir.join(".gitignore")).unwrap();
        assert!(text.starts_with("notes.txt\n#"), "{text}");
        assert_eq!(text.lines().filter(|l| *l == "*.key").count(), 1);
        init(&opts(dir, &[])).unwrap();
        assert_eq!(fs::read_to_string(dir.join(".gitignore")).unwrap(), text);
    }
}
