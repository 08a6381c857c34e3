//! What a client sends first in a CONNECT tunnel: a TLS ClientHello (and the server name it
//! asks for), an HTTP/1 request, or something else. Pure functions over the bytes read so far.

/// The most a ClientHello may take before the tunnel is refused: one TLS record.
pub const MAX_HELLO: usize = 5 + (1 << 14);

/// The verdict on the first bytes of a tunnel.
#[derive(Debug, PartialEq, Eq)]
pub enum Sniff {
    /// Not enough bytes yet to tell.
    NeedMore,
    /// A TLS handshake; the SNI host name, lowercased, when the hello carries one.
    Tls { sni: Option<String> },
    /// A plain HTTP/1 request line is starting.
    Http,
    /// Neither: an unknown protocol, or a malformed ClientHello. The reason says which.
    Other(&'static str),
}

/// Classify the first bytes of a tunnel.
pub fn classify(buf: &[u8]) -> Sniff {
    let Some(&first) = buf.first() else {
        return Sniff::NeedMore;
    };
    if first == 0x16 {
        return client_hello(buf);
    }
    if first.is_ascii_uppercase() {
        // A method token, then a space: `GET `, `OPTIONS `, …
        for &b in buf.iter().take(24) {
            if b == b' ' {
                return Sniff::Http;
            }
            if !b.is_ascii_uppercase() && b != b'-' {
                return Sniff::Other("the first bytes are neither TLS nor an HTTP request line");
            }
        }
        return if buf.len() < 24 {
            Sniff::NeedMore
        } else {
            Sniff::Other("the first bytes are neither TLS nor an HTTP request line")
        };
    }
    Sniff::Other("the first bytes are neither TLS nor an HTTP request line")
}

/// Parse a TLS record holding a ClientHello far enough to find `server_name`.
fn client_hello(buf: &[u8]) -> Sniff {
    const BAD: Sniff = Sniff::Other("a malformed TLS ClientHello");
    if buf.len() < 5 {
        return Sniff::NeedMore;
    }
    // Record: type 22, version 3.x, length.
    if buf[1] != 3 {
        return BAD;
    }
    let len = usize::from(u16::from_be_bytes([buf[3], buf[4]]));
    if len == 0 || len > 1 << 14 {
        return BAD;
    }
    if buf.len() < 5 + len {
        return Sniff::NeedMore;
    }
    let mut r = Reader(&buf[5..5 + len]);
    // Handshake header: type 1 (ClientHello), 24-bit length. A hello split across records
    // is legal but unheard of from real clients; it is refused rather than reassembled.
    let (Some(1), Some(hs_len)) = (r.u8(), r.u24()) else {
        return BAD;
    };
    if hs_len > r.0.len() {
        return Sniff::Other("a TLS ClientHello split across records");
    }
    let Some(mut r) = r.take(hs_len).map(Reader) else {
        return BAD;
    };
    let ok = r.take(2 + 32).is_some() // version, random
        && r.vec8().is_some() // session id
        && r.vec16().is_some() // cipher suites
        && r.vec8().is_some(); // compression methods
    if !ok {
        return BAD;
    }
    if r.0.is_empty() {
        return Sniff::Tls { sni: None };
    }
    let Some(mut exts) = r.vec16().map(Reader) else {
        return BAD;
    };
    while !exts.0.is_empty() {
        let (Some(ty), Some(body)) = (exts.u16(), exts.vec16()) else {
            return BAD;
        };
        if ty != 0 {
            continue;
        }
        let mut sn = Reader(body);
        let Some(mut list) = sn.vec16().map(Reader) else {
            return BAD;
        };
        while !list.0.is_empty() {
            let (Some(kind), Some(name)) = (list.u8(), list.vec16()) else {
                return BAD;
            };
            if kind == 0 {
                let Ok(name) = std::str::from_utf8(name) else {
                    return Sniff::Other("a TLS server name that is not ASCII");
                };
                if name.is_empty() || !name.is_ascii() {
                    return Sniff::Other("a TLS server name that is not ASCII");
                }
                return Sniff::Tls {
                    sni: Some(name.trim_end_matches('.').to_ascii_lowercase()),
                };
            }
        }
        return Sniff::Tls { sni: None };
    }
    Sniff::Tls { sni: None }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| (usize::from(b[0]) << 16) | (usize::from(b[1]) << 8) | usize::from(b[2]))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(usize::from(n))
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls writes it, for `name`.
    fn hello(name: &str) -> Vec<u8> {
        use std::sync::Arc;
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn finds_the_server_name_of_a_real_client_hello() {
        let h = hello("API.Example.com");
        assert_eq!(
            classify(&h),
            Sniff::Tls {
                sni: Some("api.example.com".into())
            }
        );
        // Every prefix is "need more", never a wrong verdict.
        for n in 0..h.len() {
            assert_eq!(classify(&h[..n]), Sniff::NeedMore, "prefix {n}");
        }
    }

    #[test]
    fn an_ip_address_hello_has_no_server_name() {
        assert_eq!(classify(&hello("203.0.113.10")), Sniff::Tls { sni: None });
    }

    #[test]
    fn http_and_other_protocols() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Sniff::Http);
        assert_eq!(classify(b"M-SEARCH * HTTP/1.1\r\n"), Sniff::Http);
        assert_eq!(classify(b"GE"), Sniff::NeedMore);
        assert!(matches!(classify(b"SSH-2.0-OpenSSH\r\n"), Sniff::Other(_)));
        assert!(matches!(classify(b"\x00\x01"), Sniff::Other(_)));
        assert!(matches!(classify(b"get / HTTP/1.1"), Sniff::Other(_)));
    }

    #[test]
    fn malformed_hellos_are_refused() {
        let mut h = hello("example.com");
        // A record length past 2^14.
        let mut big = h.clone();
        big[3] = 0x50;
        assert!(matches!(classify(&big), Sniff::Other(_)));
        // Not a ClientHello handshake.
        h[5] = 2;
        assert!(matches!(classify(&h), Sniff::Other(_)));
        // Truncated inside the extensions: the record length still claims the full hello.
        let mut cut = hello("example.com");
        let n = cut.len();
        let rec = u16::try_from(n - 5 - 10).unwrap().to_be_bytes();
        cut[3] = rec[0];
        cut[4] = rec[1];
        cut.truncate(n - 10);
        assert!(matches!(classify(&cut), Sniff::Other(_)));
    }
}
