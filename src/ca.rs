//! The local CA of `portcullis certs init`, and trust roots for TLS to upstreams: what the
//! certificate commands and the front ends that speak TLS share.

use std::path::Path;
use std::sync::Arc;

use rcgen::string::Ia5String;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

pub const CA_COMMON_NAME: &str = "portcullis local CA";
/// The most that Apple platforms accept for a TLS server certificate.
pub const LEAF_DAYS: i64 = 825;
/// The system CA bundle (Debian's).
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The CA's parameters, minus validity: everything an `Issuer` takes from them. Must stay the
/// same across releases, or CAs made by older ones can no longer be reused.
pub fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    // Path length 0: it signs leaves, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

pub fn leaf_params(common_name: &str, usage: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, common_name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![usage];
    // OpenSSL (curl) uses it to pick the issuer when building the chain.
    p.use_authority_key_identifier_extension = true;
    valid_for(&mut p, LEAF_DAYS);
    p
}

pub fn valid_for(p: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // A little slack for clocks on other machines that run slightly behind.
    p.not_before = now - Duration::hours(1);
    p.not_after = now + Duration::days(days);
}

/// Load the CA `crt` with its `key`, checking that the key is the certificate's and that the
/// certificate is one `certs init` made. Errors name the file at fault.
pub fn load_issuer(
    crt: &Path,
    key: &Path,
) -> Result<Issuer<'static, KeyPair>, (std::path::PathBuf, String)> {
    let bad = |path: &Path, reason: String| (path.to_path_buf(), reason);
    let key_pem =
        std::fs::read_to_string(key).map_err(|e| bad(key, format!("cannot be read: {e}")))?;
    let key_pair =
        KeyPair::from_pem(&key_pem).map_err(|e| bad(key, format!("is not a usable key: {e}")))?;
    let crt_pem = std::fs::read(crt).map_err(|e| bad(crt, format!("cannot be read: {e}")))?;
    let existing = CertificateDer::from_pem_slice(&crt_pem)
        .map_err(|e| bad(crt, format!("holds no PEM certificate: {e}")))?;
    let existing = webpki::EndEntityCert::try_from(&existing)
        .map_err(|e| bad(crt, format!("is not a valid certificate: {e}")))?;
    let probe = ca_params()
        .self_signed(&key_pair)
        .map_err(|e| bad(crt, format!("cannot be reproduced: {e}")))?;
    let probe = webpki::EndEntityCert::try_from(probe.der())
        .map_err(|e| bad(crt, format!("cannot be reproduced: {e}")))?;
    if existing.subject_public_key_info() != probe.subject_public_key_info() {
        return Err(bad(key, format!("is not the key of {}", crt.display())));
    }
    if existing.subject() != probe.subject() {
        let reason = format!(
            "was not made by `portcullis certs init` (its subject is not CN={CA_COMMON_NAME})"
        );
        return Err(bad(crt, reason));
    }
    Ok(Issuer::new(ca_params(), key_pair))
}

/// A server certificate for `host` (a name or an address) signed by `issuer`, with a new key.
pub fn mint_server(
    issuer: &Issuer<'static, KeyPair>,
    host: &str,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let san = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(Ia5String::try_from(host).map_err(|e| format!("{host}: {e}"))?),
    };
    let mut p = leaf_params(host, ExtendedKeyUsagePurpose::ServerAuth);
    p.subject_alt_names = vec![san];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let cert = p.signed_by(&key, issuer).map_err(|e| e.to_string())?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    Ok((cert.der().clone(), der))
}

/// Every certificate of a PEM bundle, as trust roots.
pub fn roots(path: &Path) -> Result<Arc<rustls::RootCertStore>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("CA bundle {}: {e}", path.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("CA bundle {} holds no certificate", path.display()));
    }
    Ok(Arc::new(roots))
}

/// A TLS client configuration for HTTP/1.1 that trusts `roots`.
pub fn client_config(
    roots: Arc<rustls::RootCertStore>,
) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
