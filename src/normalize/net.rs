//! Network target normalization: which host, port and address a request really goes to.
//!
//! The agent writes the URL or CONNECT target, so every spelling a host can take has to be
//! reduced to one canonical form before a policy compares it:
//! * IPv4 literals in every form the WHATWG URL standard accepts (`2130706433`, `0177.0.0.1`,
//!   `0x7f.1`, `127.1`, fullwidth digits, a trailing dot, percent-encoding) become a dotted quad.
//! * IPv6 literals become their RFC 5952 text; zone ids are refused.
//! * Names are lowercased and IDNA-mapped to ASCII (`ÉXAMPLE。com` → `xn--xample-9ua.com`), a
//!   single trailing dot is dropped, and anything that is not a DNS name is refused.
//! * Userinfo (`allowed.com@evil.com`) is parsed away and never kept: it may hold a secret.
//!
//! [`classify`] then puts an address in one [`IpClass`], looking through every way IPv6 can
//! carry an IPv4 address (mapped, compatible, NAT64, 6to4, Teredo, ISATAP), because the packet
//! ends up at the embedded IPv4 address.
//!
//! Front ends must connect to the [`Target`] (and the address checked for it), never re-parse
//! the raw URL with another parser: two parsers that disagree are how SSRF filters are evaded.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

use crate::action::IpClass;

/// The longest DNS name (RFC 1035), without the trailing dot.
const MAX_NAME_LEN: usize = 253;
/// The longest DNS label (RFC 1035).
const MAX_LABEL_LEN: usize = 63;
/// How much of a rejected input an error message repeats.
const MAX_ECHO_LEN: usize = 200;

/// Why a URL or host could not be normalized. Every variant means "deny".
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The WHATWG parser rejected the URL. `input` has any userinfo masked and is truncated.
    #[error("invalid URL {input:?}: {reason}")]
    InvalidUrl { input: String, reason: String },
    /// No host was given.
    #[error("no host given")]
    MissingHost,
    /// The URL's scheme is not one the proxy forwards.
    #[error("unsupported URL scheme {0:?}: only http, https, ws and wss are accepted")]
    UnsupportedScheme(String),
    /// The host is not a valid IP literal or DNS name, or tries to smuggle URL syntax.
    #[error("invalid host {host:?}: {reason}")]
    InvalidHost { host: String, reason: String },
    /// Port 0, which names no destination.
    #[error("port 0 is not a valid destination port")]
    InvalidPort,
}

/// A normalized network destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Lowercase `http`, `https`, `ws`, `wss` or `ftp`; empty for a CONNECT target ([`parse_authority`]).
    pub scheme: String,
    /// The canonical host: for a name, lowercase ASCII (IDNA/punycode) without a trailing dot;
    /// for an IP literal, the address's canonical text (dotted quad, or RFC 5952 IPv6 without
    /// brackets). Never contains userinfo.
    pub host: String,
    /// The explicit port, or the scheme's default (80 for http/ws, 443 for https/wss).
    pub port: u16,
    /// For a URL: the path as the WHATWG parser serializes it (dot segments removed, `\` read
    /// as `/`, non-ASCII percent-encoded), then `?` and the query if there is one (even an
    /// empty one); never the fragment, which is not sent. Percent-escapes of unreserved
    /// characters (`A-Z a-z 0-9 - . _ ~`) are decoded and the hex digits of all other escapes
    /// uppercased (RFC 3986 §6.2.2), so `/%61dmin` and `/admin` compare equal; other escapes
    /// such as `%2F` stay encoded. Empty for a CONNECT target.
    pub path: String,
    /// The address, when the host is an IP literal (in any spelling).
    pub ip: Option<IpAddr>,
}

/// How an IPv6 prefix is classified on its own.
#[derive(Debug, Clone, Copy)]
enum Own {
    Class(IpClass),
    /// A translation prefix: the address means its embedded IPv4 address.
    Embeds,
}

/// IPv4 ranges. Every matching entry counts; the most sensitive wins.
#[rustfmt::skip]
const V4_RANGES: &[(Ipv4Addr, u8, IpClass)] = &[
    // Cloud instance metadata and credential endpoints.
    (Ipv4Addr::new(169, 254, 169, 254), 32, IpClass::Metadata), // AWS, GCP, Azure, OCI, …
    (Ipv4Addr::new(169, 254, 170, 2), 32, IpClass::Metadata),   // AWS ECS task metadata
    (Ipv4Addr::new(169, 254, 170, 23), 32, IpClass::Metadata),  // AWS EKS Pod Identity
    (Ipv4Addr::new(100, 100, 100, 200), 32, IpClass::Metadata), // Alibaba Cloud
    (Ipv4Addr::new(168, 63, 129, 16), 32, IpClass::Metadata),   // Azure WireServer
    (Ipv4Addr::new(127, 0, 0, 0), 8, IpClass::Loopback),
    (Ipv4Addr::new(169, 254, 0, 0), 16, IpClass::LinkLocal),
    (Ipv4Addr::new(10, 0, 0, 0), 8, IpClass::Private),
    (Ipv4Addr::new(172, 16, 0, 0), 12, IpClass::Private),
    (Ipv4Addr::new(192, 168, 0, 0), 16, IpClass::Private),
    (Ipv4Addr::new(100, 64, 0, 0), 10, IpClass::Cgnat),
    (Ipv4Addr::new(0, 0, 0, 0), 8, IpClass::Unspecified), // "this network"
    (Ipv4Addr::new(224, 0, 0, 0), 4, IpClass::Multicast),
    (Ipv4Addr::new(192, 0, 2, 0), 24, IpClass::Documentation),
    (Ipv4Addr::new(198, 51, 100, 0), 24, IpClass::Documentation),
    (Ipv4Addr::new(203, 0, 113, 0), 24, IpClass::Documentation),
    (Ipv4Addr::new(240, 0, 0, 0), 4, IpClass::Reserved), // future use, and 255.255.255.255
    (Ipv4Addr::new(192, 0, 0, 0), 24, IpClass::Reserved), // IETF protocol assignments
    (Ipv4Addr::new(198, 18, 0, 0), 15, IpClass::Reserved), // benchmarking
    (Ipv4Addr::new(192, 88, 99, 0), 24, IpClass::Reserved), // deprecated 6to4 relay anycast
];

/// IPv6 prefixes, most specific first: the first match decides the address's own class.
#[rustfmt::skip]
const V6_RANGES: &[(Ipv6Addr, u8, Own)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, Own::Class(IpClass::Unspecified)),
    (Ipv6Addr::LOCALHOST, 128, Own::Class(IpClass::Loopback)),
    // Metadata endpoints reachable over IPv6: AWS IMDS, AWS EKS Pod Identity, GCP, OCI.
    (v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254]), 128, Own::Class(IpClass::Metadata)),
    (v6([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23]), 128, Own::Class(IpClass::Metadata)),
    (v6([0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254]), 128, Own::Class(IpClass::Metadata)),
    (v6([0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe]), 128, Own::Class(IpClass::Metadata)),
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0]), 96, Own::Embeds),     // IPv4-mapped
    (v6([0, 0, 0, 0, 0xffff, 0, 0, 0]), 96, Own::Embeds),     // IPv4-translated (SIIT)
    (v6([0, 0, 0, 0, 0, 0, 0, 0]), 96, Own::Embeds),          // IPv4-compatible (deprecated)
    (v6([0, 0, 0, 0, 0, 0, 0, 0]), 8, Own::Class(IpClass::Reserved)),
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96, Own::Embeds),  // NAT64 well-known prefix
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48, Own::Embeds),  // NAT64 local-use
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0]), 64, Own::Class(IpClass::Reserved)),    // discard-only
    (v6([0x100, 0, 0, 1, 0, 0, 0, 0]), 64, Own::Class(IpClass::Reserved)),    // dummy prefix
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 32, Own::Embeds),                     // Teredo
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 23, Own::Class(IpClass::Reserved)),   // IETF protocols
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32, Own::Class(IpClass::Documentation)),
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16, Own::Embeds),                     // 6to4
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20, Own::Class(IpClass::Documentation)),
    (v6([0x2000, 0, 0, 0, 0, 0, 0, 0]), 3, Own::Class(IpClass::Public)),      // global unicast
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10, Own::Class(IpClass::LinkLocal)),
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]), 10, Own::Class(IpClass::Private)),    // old site-local
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]), 7, Own::Class(IpClass::Private)),     // unique local
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8, Own::Class(IpClass::Multicast)),
    // Anything else (e.g. 4000::/2, 5f00::/16 SRv6) is unallocated or not routable: Reserved.
];

/// `Ipv6Addr::new` taking one array, so each table row fits on one line.
const fn v6(g: [u16; 8]) -> Ipv6Addr {
    Ipv6Addr::new(g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7])
}

/// Parse an absolute `http`, `https`, `ws`, `wss` or `ftp` URL with the WHATWG parser (the
/// `url` crate, the same rules browsers use) and normalize its destination.
///
/// `ftp` is parsed (it is a WHATWG special scheme, so its host is normalized like the others)
/// so that a policy can deny it by name and the attempt is recorded. Userinfo is accepted but
/// dropped: `http://allowed.com@evil.com/` is `evil.com`. Any other scheme — whose host the
/// WHATWG parser leaves opaque, or which has none — is [`NetError::UnsupportedScheme`]; port 0 is [`NetError::InvalidPort`]. See
/// [`Target`] for the exact form of each field.
pub fn parse_url(input: &str) -> Result<Target, NetError> {
    let url = Url::parse(input).map_err(|err| NetError::InvalidUrl {
        input: mask_input(input),
        reason: err.to_string(),
    })?;
    let scheme = url.scheme();
    if !matches!(scheme, "http" | "https" | "ws" | "wss" | "ftp") {
        return Err(NetError::UnsupportedScheme(scheme.to_string()));
    }
    let (host, ip) = canonical_host(&url)?;
    let port = match url.port_or_known_default() {
        Some(0) | None => return Err(NetError::InvalidPort),
        Some(port) => port,
    };
    let mut path = normalize_escapes(url.path());
    if let Some(query) = url.query() {
        path.push('?');
        path.push_str(&normalize_escapes(query));
    }
    Ok(Target {
        scheme: scheme.to_string(),
        host,
        port,
        path,
        ip,
    })
}

/// Normalize a host and port given separately (a CONNECT target, or `http.host`/`http.port`).
///
/// The host goes through exactly the same WHATWG host parser as [`parse_url`], so every IPv4
/// spelling and IDNA mapping comes out the same. IPv6 may be given with or without brackets.
/// Anything that would change the meaning of the URL built for the parser (`/ @ # ? \ [ ]`,
/// whitespace, control characters, or `:` outside an IPv6 literal) and IPv6 zone ids are
/// [`NetError::InvalidHost`]. The result has an empty `scheme` and `path`.
pub fn parse_authority(host: &str, port: u16) -> Result<Target, NetError> {
    if port == 0 {
        return Err(NetError::InvalidPort);
    }
    let literal = authority_literal(host)?;
    let url = Url::parse(&format!("http://{literal}:{port}/"))
        .map_err(|err| invalid_host(host, &err.to_string()))?;
    // The guard above should make these impossible; check anyway, because an injected
    // delimiter would mean we normalized something other than the host.
    let plain = url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none()
        && url.port_or_known_default() == Some(port);
    if !plain {
        return Err(invalid_host(host, "host carries URL syntax"));
    }
    let (host, ip) = canonical_host(&url)?;
    Ok(Target {
        scheme: String::new(),
        host,
        port,
        path: String::new(),
        ip,
    })
}

/// Put an address in its class. An IPv6 address that carries an IPv4 address (see
/// [`embedded_ipv4`]) is classified by what it carries, and when several classes apply the
/// most sensitive one is returned.
///
/// Note that on Linux connecting to an [`IpClass::Unspecified`] address (`0.0.0.0`, `::`)
/// reaches the local host, so policies should treat it at least as strictly as loopback.
pub fn classify(ip: IpAddr) -> IpClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// The IPv4 addresses an IPv6 address carries, which is where a packet to it can end up:
/// * IPv4-mapped `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible
///   `::a.b.c.d` (deprecated; not `::` and `::1`), and NAT64 `64:ff9b::a.b.c.d`: the last 32 bits.
/// * NAT64 local-use `64:ff9b:1::/48`: the operator picks the prefix length, so every
///   RFC 6052 layout for a /48, /56, /64 and /96 prefix is returned.
/// * 6to4 `2002:AABB:CCDD::/48`: bits 16–47.
/// * Teredo `2001:0::/32`: the server (bits 32–63) and the client (last 32 bits, inverted).
/// * ISATAP, in any prefix: an interface id of `0:5efe:a.b.c.d` or `200:5efe:a.b.c.d`.
pub fn embedded_ipv4(ip: Ipv6Addr) -> Vec<Ipv4Addr> {
    let bits = ip.to_bits();
    let low32 = bits_at(bits, 96, 32);
    let mut out = Vec::new();
    let last_32 = [
        (v6([0, 0, 0, 0, 0, 0xffff, 0, 0]), 96),
        (v6([0, 0, 0, 0, 0xffff, 0, 0, 0]), 96),
        (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]), 96),
    ];
    // IPv4-compatible is "first 96 bits zero", minus `::` and `::1`, which mean themselves.
    let compatible = bits >> 32 == 0 && bits > 1;
    if compatible || last_32.iter().any(|(net, len)| in_v6(bits, *net, *len)) {
        out.push(low32);
    }
    if in_v6(bits, v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48) {
        out.extend(rfc6052_candidates(bits));
    }
    if in_v6(bits, v6([0x2002, 0, 0, 0, 0, 0, 0, 0]), 16) {
        out.push(bits_at(bits, 16, 32));
    }
    if in_v6(bits, v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 32) {
        out.push(bits_at(bits, 32, 32));
        out.push(Ipv4Addr::from_bits(!low32.to_bits()));
    }
    let iid_high = bits_at(bits, 64, 32).to_bits();
    if iid_high == 0x0000_5efe || iid_high == 0x0200_5efe {
        out.push(low32);
    }
    out
}

/// The most sensitive class among `ips`, or `None` when there are none.
pub fn most_sensitive(ips: &[IpAddr]) -> Option<IpClass> {
    ips.iter().copied().map(classify).min()
}

fn classify_v4(ip: Ipv4Addr) -> IpClass {
    let bits = ip.to_bits();
    V4_RANGES
        .iter()
        .filter(|(net, len, _)| in_v4(bits, *net, *len))
        .map(|(_, _, class)| *class)
        .min()
        .unwrap_or(IpClass::Public)
}

fn classify_v6(ip: Ipv6Addr) -> IpClass {
    let bits = ip.to_bits();
    let own = V6_RANGES
        .iter()
        .find(|(net, len, _)| in_v6(bits, *net, *len))
        .map_or(Own::Class(IpClass::Reserved), |(_, _, own)| *own);
    let embedded = embedded_ipv4(ip).into_iter().map(classify_v4).min();
    match (own, embedded) {
        (Own::Class(class), Some(inner)) => class.min(inner),
        (Own::Class(class), None) => class,
        (Own::Embeds, Some(inner)) => inner,
        // Unreachable by construction (every Embeds prefix yields an address); fail closed.
        (Own::Embeds, None) => IpClass::Reserved,
    }
}

fn in_v4(bits: u32, net: Ipv4Addr, len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    bits & mask == net.to_bits() & mask
}

fn in_v6(bits: u128, net: Ipv6Addr, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    bits & mask == net.to_bits() & mask
}

/// The `len` (at most 32) bits of `bits` from bit `start` (0 = most significant), as an address.
fn bits_at(bits: u128, start: u32, len: u32) -> Ipv4Addr {
    let shifted = bits.checked_shr(128 - start - len).unwrap_or(0);
    let mask = u32::MAX.checked_shr(32 - len).unwrap_or(0);
    // Truncation is the point: keep the low 32 bits.
    Ipv4Addr::from_bits(shifted as u32 & mask)
}

/// RFC 6052 §2.2: where a NAT64 prefix of length 48, 56, 64 or 96 puts the IPv4 address.
/// Bits 64–71 (the "u" octet) are skipped.
fn rfc6052_candidates(bits: u128) -> [Ipv4Addr; 4] {
    let join = |high: Ipv4Addr, low: Ipv4Addr, low_len: u32| {
        Ipv4Addr::from_bits((high.to_bits() << low_len) | low.to_bits())
    };
    [
        join(bits_at(bits, 48, 16), bits_at(bits, 72, 16), 16),
        join(bits_at(bits, 56, 8), bits_at(bits, 72, 24), 24),
        bits_at(bits, 72, 32),
        bits_at(bits, 96, 32),
    ]
}

/// The canonical host of a parsed URL, and its address when it is an IP literal.
fn canonical_host(url: &Url) -> Result<(String, Option<IpAddr>), NetError> {
    match url.host() {
        None => Err(NetError::MissingHost),
        Some(Host::Ipv4(ip)) => Ok((ip.to_string(), Some(IpAddr::V4(ip)))),
        Some(Host::Ipv6(ip)) => Ok((ip.to_string(), Some(IpAddr::V6(ip)))),
        Some(Host::Domain(name)) => Ok((dns_name(name)?, None)),
    }
}

/// Check a name the WHATWG parser produced (already lowercased and IDNA-mapped) is a DNS
/// name, and drop one trailing dot: `evil.com.` and `evil.com` are the same name to a resolver.
///
/// WHATWG lets through characters no resolver accepts (`evil.com,allowed.com`, `a*b`) and
/// empty labels; a name a policy might read one way and a resolver another is refused.
fn dns_name(name: &str) -> Result<String, NetError> {
    let bare = name.strip_suffix('.').unwrap_or(name);
    if bare.is_empty() {
        return Err(invalid_host(name, "empty name"));
    }
    if bare.len() > MAX_NAME_LEN {
        return Err(invalid_host(name, "name longer than 253 characters"));
    }
    for label in bare.split('.') {
        if label.is_empty() {
            return Err(invalid_host(name, "empty label"));
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(invalid_host(name, "label longer than 63 characters"));
        }
        let dns_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if let Some(bad) = label.chars().find(|c| !dns_char(*c)) {
            return Err(invalid_host(
                name,
                &format!("{bad:?} is not a DNS name character"),
            ));
        }
    }
    Ok(bare.to_string())
}

/// The host as it goes into `http://{host}:{port}/`, after refusing anything that could be
/// read as a delimiter there. IPv6 is bracketed.
fn authority_literal(host: &str) -> Result<String, NetError> {
    if host.is_empty() {
        return Err(NetError::MissingHost);
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| invalid_host(host, "'[' without a closing ']' at the end"))?;
        ipv6_chars(host, inner)?;
        return Ok(format!("[{inner}]"));
    }
    if host.contains(':') {
        // Only an IPv6 literal may contain ':'; anything else is a host:port smuggled in.
        ipv6_chars(host, host)?;
        return Ok(format!("[{host}]"));
    }
    let delimiter = |c: char| {
        matches!(c, '/' | '@' | '#' | '?' | '\\' | '[' | ']') || c.is_whitespace() || c.is_control()
    };
    if let Some(bad) = host.chars().find(|c| delimiter(*c)) {
        return Err(invalid_host(
            host,
            &format!("{bad:?} is not allowed in a host"),
        ));
    }
    Ok(host.to_string())
}

/// An IPv6 literal may only hold hex digits, ':' and '.' (embedded IPv4); no zone id.
fn ipv6_chars(host: &str, inner: &str) -> Result<(), NetError> {
    if inner.contains('%') {
        return Err(invalid_host(host, "IPv6 zone identifiers are not accepted"));
    }
    if inner.is_empty()
        || !inner
            .chars()
            .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    {
        return Err(invalid_host(host, "':' is only allowed in an IPv6 literal"));
    }
    Ok(())
}

fn invalid_host(host: &str, reason: &str) -> NetError {
    NetError::InvalidHost {
        host: truncate(host).to_string(),
        reason: reason.to_string(),
    }
}

/// A rejected URL for an error message: truncated, and with everything up to the last `@`
/// after the scheme masked, since userinfo may hold a password.
fn mask_input(input: &str) -> String {
    let input = truncate(input);
    let start = input.find("://").map_or(0, |i| i + 3);
    match input.get(start..).and_then(|rest| rest.rfind('@')) {
        Some(at) => format!("{}***{}", &input[..start], &input[start + at..]),
        None => input.to_string(),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(MAX_ECHO_LEN) {
        Some((end, _)) => &s[..end],
        None => s,
    }
}

/// Decode percent-escapes of unreserved characters and uppercase the rest (RFC 3986 §6.2.2):
/// both are meaning-preserving, and they stop `/%61dmin` from slipping past a rule on `/admin`.
fn normalize_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        let byte = after.get(..2).and_then(|hex| {
            let mut digits = hex.chars().map(|c| c.to_digit(16));
            match (digits.next().flatten(), digits.next().flatten()) {
                (Some(hi), Some(lo)) => u8::try_from(hi * 16 + lo).ok(),
                _ => None,
            }
        });
        match byte {
            Some(b) if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') => {
                out.push(char::from(b));
                rest = &after[2..];
            }
            Some(b) => {
                out.push_str(&format!("%{b:02X}"));
                rest = &after[2..];
            }
            // A lone '%': the WHATWG parser keeps it as is, so do we.
            None => {
                out.push('%');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOPBACK_SPELLINGS: &[&str] = &[
        "127.0.0.1",
        "2130706433",
        "0x7f000001",
        "0X7F000001",
        "017700000001",
        "0177.0.0.1",
        "0x7f.0.0.1",
        "0x7f.1",
        "127.1",
        "127.0.1",
        "127.0.0.1.",
        "0x7f.1.",
        "127.000.000.001",
        "0177.0.0x0.1",
        "0x7f.0x0.0x0.0x1",
        "0177.0x00.1",
        "%31%32%37.0.0.1",
        "１２７.０.０.１",
        "127。0。0。1",
    ];

    const METADATA_SPELLINGS: &[&str] = &[
        "169.254.169.254",
        "2852039166",
        "0xa9fea9fe",
        "0xA9FEA9FE",
        "0251.0376.0251.0376",
        "0xa9.0xfe.0xa9.0xfe",
        "169.254.43518",
        "169.16689662",
        "0251.0xfe.43518",
        "169.254.169.254.",
        "00000251.254.169.254",
        "0xa9.16689662",
    ];

    #[test]
    fn every_ipv4_spelling_is_canonical_via_url_and_authority() {
        let cases = [
            (LOOPBACK_SPELLINGS, "127.0.0.1", IpClass::Loopback),
            (METADATA_SPELLINGS, "169.254.169.254", IpClass::Metadata),
        ];
        for (spellings, want, class) in cases {
            for spelling in spellings {
                let from_url = parse_url(&format!("http://{spelling}:8080/x")).unwrap();
                let from_authority = parse_authority(spelling, 8080).unwrap();
                for target in [&from_url, &from_authority] {
                    assert_eq!(target.host, want, "{spelling}");
                    assert_eq!(target.port, 8080, "{spelling}");
                    let ip = target.ip.unwrap();
                    assert_eq!(classify(ip), class, "{spelling}");
                }
            }
        }
    }

    /// (literal, canonical host, class): IPv6 addresses that carry an IPv4 address.
    #[rustfmt::skip]
    const EMBEDDING_CASES: &[(&str, &str, IpClass)] = &[
        ("[::ffff:169.254.169.254]", "::ffff:169.254.169.254", IpClass::Metadata),
        ("[::ffff:a9fe:a9fe]", "::ffff:169.254.169.254", IpClass::Metadata),
        ("[0:0:0:0:0:FFFF:7F00:1]", "::ffff:127.0.0.1", IpClass::Loopback),
        ("[::127.0.0.1]", "::7f00:1", IpClass::Loopback),
        ("[::ffff:0:a9fe:a9fe]", "::ffff:0:a9fe:a9fe", IpClass::Metadata),
        ("[64:ff9b::a9fe:a9fe]", "64:ff9b::a9fe:a9fe", IpClass::Metadata),
        ("[64:ff9b::10.1.2.3]", "64:ff9b::a01:203", IpClass::Private),
        ("[64:ff9b:1::7f00:1]", "64:ff9b:1::7f00:1", IpClass::Loopback),
        ("[2002:a00:1::]", "2002:a00:1::", IpClass::Private), // 6to4 of 10.0.0.1
        ("[2002:a9fe:a9fe:1::1]", "2002:a9fe:a9fe:1::1", IpClass::Metadata),
        // Teredo: server 8.8.8.8, client !0x80fffffe = 127.0.0.1.
        ("[2001:0:808:808:0:0:80ff:fffe]", "2001:0:808:808::80ff:fffe", IpClass::Loopback),
        // Teredo: public client 8.8.8.8, server 10.0.0.1.
        ("[2001:0:a00:1::f7f7:f7f7]", "2001:0:a00:1::f7f7:f7f7", IpClass::Private),
        // ISATAP interface id inside a documentation prefix.
        ("[2001:db8::5efe:a9fe:a9fe]", "2001:db8::5efe:a9fe:a9fe", IpClass::Metadata),
    ];

    #[test]
    fn ipv6_embeddings_are_classified_by_the_ipv4_inside() {
        for (literal, host, class) in EMBEDDING_CASES {
            let url = parse_url(&format!("https://{literal}/")).unwrap();
            let authority = parse_authority(literal, 443).unwrap();
            let bare = parse_authority(literal.trim_matches(['[', ']']), 443).unwrap();
            for target in [url, authority, bare] {
                assert_eq!(target.host, *host, "{literal}");
                assert_eq!(classify(target.ip.unwrap()), *class, "{literal}");
            }
        }
        let zoned = parse_url("http://[fe80::1%25eth0]/");
        assert!(matches!(zoned, Err(NetError::InvalidUrl { .. })));
    }

    #[test]
    fn embedded_ipv4_lists_every_carrier() {
        let embedded = |s: &str| embedded_ipv4(s.parse().unwrap());
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(embedded("::ffff:1.2.3.4"), vec![ip("1.2.3.4")]);
        assert_eq!(embedded("2002:102:304::"), vec![ip("1.2.3.4")]);
        assert_eq!(
            embedded("2001:0:102:304::fefd:fcfb"),
            vec![ip("1.2.3.4"), ip("1.2.3.4")]
        );
        // A /48 local-use NAT64 prefix: 10.1.2.3 at bits 48-63 and 72-87.
        assert!(embedded("64:ff9b:1:a01:2:300::").contains(&ip("10.1.2.3")));
        assert!(embedded("::").is_empty());
        assert!(embedded("::1").is_empty());
        assert!(embedded("2606:4700::1111").is_empty());
    }

    #[test]
    fn idna_and_case_are_normalized() {
        let cases = [
            ("http://ÉXAMPLE.com/", "xn--xample-9ua.com"),
            ("http://example。com/", "example.com"),
            ("http://ｅｘａｍｐｌｅ．ｃｏｍ/", "example.com"),
            ("HTTP://EXAMPLE.COM/", "example.com"),
            ("http://bücher.example/", "xn--bcher-kva.example"),
            ("http://%65vil.com/", "evil.com"),
            ("http://evil.com./", "evil.com"),
            ("http://ev\til.com/", "evil.com"),
        ];
        for (input, host) in cases {
            let target = parse_url(input).unwrap();
            assert_eq!(target.host, host, "{input}");
            assert_eq!(target.ip, None, "{input}");
        }
        assert_eq!(
            parse_authority("ÉXAMPLE。COM.", 443).unwrap().host,
            "xn--xample-9ua.com"
        );
    }

    #[test]
    fn userinfo_and_backslash_tricks() {
        let target = parse_url("http://allowed.com@evil.com/").unwrap();
        assert_eq!(target.host, "evil.com");
        let target = parse_url("https://user:s3cret@evil.com:8443/a").unwrap();
        assert_eq!((target.host.as_str(), target.port), ("evil.com", 8443));
        assert!(!format!("{target:?}").contains("s3cret"));
        let target = parse_url("http://evil.com\\@allowed.com/").unwrap();
        assert_eq!(target.host, "evil.com");
        assert_eq!(target.path, "/@allowed.com/");
        let target = parse_url("http://allowed.com#@evil.com/").unwrap();
        assert_eq!(target.host, "allowed.com");
        assert_eq!(target.path, "/");
    }

    #[test]
    fn schemes_and_default_ports() {
        let cases = [
            ("http://a.com", "http", 80),
            ("https://a.com", "https", 443),
            ("ws://a.com", "ws", 80),
            ("WSS://a.com", "wss", 443),
            ("http://a.com:443", "http", 443),
            ("https://a.com:443", "https", 443),
            ("https://a.com:65535", "https", 65535),
        ];
        for (input, scheme, port) in cases {
            let target = parse_url(input).unwrap();
            assert_eq!(
                (target.scheme.as_str(), target.port),
                (scheme, port),
                "{input}"
            );
        }
        for input in ["file:///etc/passwd", "gopher://a.com/", "javascript:1"] {
            let err = parse_url(input).unwrap_err();
            assert!(
                matches!(err, NetError::UnsupportedScheme(_)),
                "{input}: {err}"
            );
        }
        assert!(matches!(
            parse_url("http://a.com:0/"),
            Err(NetError::InvalidPort)
        ));
        assert!(matches!(
            parse_url("http://a.com:65536/"),
            Err(NetError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_url("/relative"),
            Err(NetError::InvalidUrl { .. })
        ));
        assert!(matches!(
            parse_url("http://"),
            Err(NetError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn paths_are_normalized() {
        let cases = [
            ("http://a.com", "/"),
            ("http://a.com/x/../y?q=1#frag", "/y?q=1"),
            ("http://a.com/a/%2e%2e/admin", "/admin"),
            ("http://a.com/%61dmin/%7e", "/admin/~"),
            ("http://a.com/%2fetc%2f", "/%2Fetc%2F"),
            ("http://a.com\\admin", "/admin"),
            ("http://a.com/x\\..\\admin", "/admin"),
            // Empty segments are kept: servers disagree on whether `//` is `/`.
            ("http://a.com/\\admin", "//admin"),
            ("http://a.com/?", "/?"),
            ("http://a.com/100%", "/100%"),
            ("http://a.com/%zz%4", "/%zz%4"),
            ("http://a.com/é", "/%C3%A9"),
            ("http://a.com/?k=%41%2b", "/?k=A%2B"),
        ];
        for (input, path) in cases {
            assert_eq!(parse_url(input).unwrap().path, path, "{input}");
        }
    }

    #[test]
    fn hosts_that_are_not_dns_names_are_refused() {
        for input in [
            "http://evil.com,allowed.com/",
            "http://a..b/",
            "http://evil.com../",
            "http://127.0.0.1../",
            "http://a*b.com/",
        ] {
            let err = parse_url(input).unwrap_err();
            assert!(
                matches!(err, NetError::InvalidHost { .. }),
                "{input}: {err}"
            );
        }
        let long = format!("http://{}.com/", "a".repeat(64));
        assert!(matches!(
            parse_url(&long),
            Err(NetError::InvalidHost { .. })
        ));
    }

    #[test]
    fn authority_rejects_injection() {
        let cases = [
            "evil.com/x",
            "allowed.com@evil.com",
            "evil.com#",
            "evil.com?",
            "evil.com\\x",
            "evil.com x",
            "evil.com\t",
            "evil.com\n",
            "evil.com:80",
            "evil.com:",
            "[::1",
            "[::1]:80",
            "[]",
            "[fe80::1%eth0]",
            "[fe80::1%25eth0]",
            "fe80::1%eth0",
            "a]b",
            "[evil.com]",
            "1.2.3.4.5",
            // Percent-encoded delimiters are decoded by the parser and then refused.
            "evil.com%2fx",
            "allowed.com%40evil.com",
            "evil.com%3a80",
            "%5b::1%5d",
        ];
        for host in cases {
            let err = parse_authority(host, 443).unwrap_err();
            assert!(
                matches!(err, NetError::InvalidHost { .. }),
                "{host:?}: {err}"
            );
        }
        assert!(matches!(
            parse_authority("", 443),
            Err(NetError::MissingHost)
        ));
        assert!(matches!(
            parse_authority("a.com", 0),
            Err(NetError::InvalidPort)
        ));
    }

    #[test]
    fn authority_target_shape() {
        let target = parse_authority("API.Example.com", 443).unwrap();
        let want = Target {
            scheme: String::new(),
            host: "api.example.com".to_string(),
            port: 443,
            path: String::new(),
            ip: None,
        };
        assert_eq!(target, want);
        let target = parse_authority("[::1]", 80).unwrap();
        assert_eq!((target.host.as_str(), target.port), ("::1", 80));
        assert_eq!(target.ip, Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }

    /// (address, class): both sides of every range boundary.
    const CLASS_CASES: &[(&str, IpClass)] = &[
        ("169.254.169.254", IpClass::Metadata),
        ("169.254.170.2", IpClass::Metadata),
        ("169.254.170.23", IpClass::Metadata),
        ("100.100.100.200", IpClass::Metadata),
        ("168.63.129.16", IpClass::Metadata),
        ("fd00:ec2::254", IpClass::Metadata),
        ("fd00:ec2::23", IpClass::Metadata),
        ("fd20:ce::254", IpClass::Metadata),
        ("126.255.255.255", IpClass::Public),
        ("127.0.0.0", IpClass::Loopback),
        ("127.255.255.255", IpClass::Loopback),
        ("128.0.0.0", IpClass::Public),
        ("::1", IpClass::Loopback),
        ("169.253.255.255", IpClass::Public),
        ("169.254.0.0", IpClass::LinkLocal),
        ("169.254.169.253", IpClass::LinkLocal),
        ("169.254.255.255", IpClass::LinkLocal),
        ("169.255.0.0", IpClass::Public),
        ("febf:ffff::", IpClass::LinkLocal),
        ("fe80::1", IpClass::LinkLocal),
        ("fec0::1", IpClass::Private),
        ("9.255.255.255", IpClass::Public),
        ("10.0.0.0", IpClass::Private),
        ("10.255.255.255", IpClass::Private),
        ("11.0.0.0", IpClass::Public),
        ("172.15.255.255", IpClass::Public),
        ("172.16.0.0", IpClass::Private),
        ("172.31.255.255", IpClass::Private),
        ("172.32.0.0", IpClass::Public),
        ("192.167.255.255", IpClass::Public),
        ("192.168.0.0", IpClass::Private),
        ("192.168.255.255", IpClass::Private),
        ("192.169.0.0", IpClass::Public),
        ("fbff:ffff::", IpClass::Reserved),
        ("fc00::", IpClass::Private),
        ("fdff:ffff::1", IpClass::Private),
        ("100.63.255.255", IpClass::Public),
        ("100.64.0.0", IpClass::Cgnat),
        ("100.127.255.255", IpClass::Cgnat),
        ("100.128.0.0", IpClass::Public),
        ("0.0.0.0", IpClass::Unspecified),
        ("0.255.255.255", IpClass::Unspecified),
        ("1.0.0.0", IpClass::Public),
        ("::", IpClass::Unspecified),
        ("223.255.255.255", IpClass::Public),
        ("224.0.0.0", IpClass::Multicast),
        ("239.255.255.255", IpClass::Multicast),
        ("ff02::1", IpClass::Multicast),
        ("240.0.0.0", IpClass::Reserved),
        ("255.255.255.255", IpClass::Reserved),
        ("192.0.1.255", IpClass::Public),
        ("192.0.2.0", IpClass::Documentation),
        ("192.0.2.255", IpClass::Documentation),
        ("192.0.3.0", IpClass::Public),
        ("198.51.100.7", IpClass::Documentation),
        ("203.0.113.255", IpClass::Documentation),
        ("203.0.114.0", IpClass::Public),
        ("2001:db8::1", IpClass::Documentation),
        ("2001:db9::1", IpClass::Public),
        ("3fff:fff::1", IpClass::Documentation),
        ("3fff:1000::1", IpClass::Public),
        ("192.0.0.0", IpClass::Reserved),
        ("192.0.0.255", IpClass::Reserved),
        ("198.17.255.255", IpClass::Public),
        ("198.18.0.0", IpClass::Reserved),
        ("198.19.255.255", IpClass::Reserved),
        ("198.20.0.0", IpClass::Public),
        ("192.88.99.1", IpClass::Reserved),
        ("100::1", IpClass::Reserved),
        ("100:0:0:1::1", IpClass::Reserved),
        ("2001:2::1", IpClass::Reserved),
        ("2001:1ff::1", IpClass::Reserved),
        ("2001:200::1", IpClass::Public),
        ("5f00::1", IpClass::Reserved),
        ("4000::1", IpClass::Reserved),
        ("::2:0:0:0", IpClass::Reserved),
        ("8.8.8.8", IpClass::Public),
        ("1.1.1.1", IpClass::Public),
        ("2606:4700:4700::1111", IpClass::Public),
        ("::ffff:8.8.8.8", IpClass::Public),
        ("2001:0:808:808::f7f7:f7f7", IpClass::Public),
        ("::ffff:0.0.0.0", IpClass::Unspecified),
        ("::ffff:100.100.100.200", IpClass::Metadata),
    ];

    #[test]
    fn class_boundaries() {
        for (addr, class) in CLASS_CASES {
            let ip: IpAddr = addr.parse().unwrap();
            assert_eq!(classify(ip), *class, "{addr}");
        }
    }

    #[test]
    fn most_sensitive_picks_the_strictest() {
        let ips: Vec<IpAddr> = ["8.8.8.8", "10.0.0.1", "::ffff:169.254.169.254"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(most_sensitive(&ips), Some(IpClass::Metadata));
        assert_eq!(most_sensitive(&ips[..2]), Some(IpClass::Private));
        assert_eq!(most_sensitive(&[]), None);
    }

    #[test]
    fn errors_do_not_echo_userinfo() {
        let err = parse_url("http://user:s3cret@exa mple.com/").unwrap_err();
        assert!(matches!(err, NetError::InvalidUrl { .. }));
        let message = err.to_string();
        assert!(!message.contains("s3cret"), "{message}");
        assert!(message.contains("***@exa mple.com"), "{message}");
        let long = format!("http://{}", "x".repeat(10_000));
        let message = parse_authority(&long, 80).unwrap_err().to_string();
        assert!(message.len() < 400, "{message}");
    }
}
