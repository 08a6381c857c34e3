//! `cargo bench --bench egress`: the egress proxy on loopback against the same echo/sink server
//! reached directly, in the same run (DESIGN §8):
//! * CONNECT tunnel setup: connect + CONNECT + `200` + the first echoed byte, against connect +
//!   the first echoed byte directly. Each tunnel is one decided, durably recorded action.
//!   A bare CONNECT proxy on the same hyper and tokio (no policy, no audit, plain copy) is
//!   measured in the same loop: the floor that hyper and an extra hop cost on this machine.
//!   The decisions' own latency is read back from the audit records (`latency_us`), so the
//!   in-place cost of a decision can be set against the hot-loop figure of `--bench decide`.
//! * bulk transfer through an established tunnel against a direct connection.
//! * `portcullis run -- true` against spawning `true` directly (only where the sandbox can run).
//!
//! The proxy runs in-process (tokio); the clients are blocking sockets on their own threads and
//! share the CPUs with it. Nothing here asserts a threshold; a failed request aborts the run.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails loudly"
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Instant;

use portcullis::config::Config;
use sha2::{Digest, Sha256};

const KEY: &str = "bench-egress-key";
const SETUPS: usize = 2_000;
const WARMUP: usize = 200;
const BULK_BYTES: usize = 512 << 20;
const BULK_ROUNDS: usize = 3;
const RUNS: usize = 30;

const TARGET_SETUP_ADDED_US: f64 = 150.0;
const TARGET_BULK_RATIO: f64 = 0.8;
const TARGET_RUN_ADDED_MS: f64 = 20.0;

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .with_writer(std::io::stderr)
        .try_init();
    let began = Instant::now();
    let server = echo_server();
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let floor = runtime.block_on(bare_proxy());
    let mut direct = Vec::with_capacity(2 * SETUPS);
    let mut bare = Vec::with_capacity(2 * SETUPS);
    let mut tunnel: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut decided: Vec<(&str, Vec<f64>)> = Vec::new();
    let mut bulk_direct = Vec::new();
    let mut bulk_tunnel = Vec::new();
    for mode in ["durable", "buffered"] {
        let config = Config::parse(
            &config_text(dir.path(), mode),
            &dir.path().join("portcullis.toml"),
        )
        .unwrap();
        let running = runtime.block_on(portcullis::server::start(config)).unwrap();
        let proxy = running.egress.unwrap();
        for _ in 0..WARMUP {
            direct_setup(server);
            tunnel_setup(floor, server);
            tunnel_setup(proxy, server);
        }
        let mut t = Vec::with_capacity(SETUPS);
        // Interleaved, so drift on the machine is charged to all three.
        for _ in 0..SETUPS {
            direct.push(direct_setup(server));
            bare.push(tunnel_setup(floor, server));
            t.push(tunnel_setup(proxy, server));
        }
        tunnel.push((mode, t));
        if mode == "buffered" {
            for _ in 0..BULK_ROUNDS {
                let mut d = TcpStream::connect(server).unwrap();
                first_byte(&mut d);
                bulk_direct.push(bulk(d));
                bulk_tunnel.push(bulk(open_tunnel(proxy, server)));
            }
        }
        runtime.block_on(running.shutdown()).unwrap();
        decided.push((mode, decision_latencies(dir.path(), mode)));
    }
    let run = run_startup();

    let (d50, d99) = (pct(&direct, 0.5), pct(&direct, 0.99));
    println!("CONNECT tunnel setup ({SETUPS} each, µs)         p50      p99  added p50");
    println!("  direct connect + first byte            {d50:8.1} {d99:8.1}");
    let (b50, b99) = (pct(&bare, 0.5), pct(&bare, 0.99));
    println!(
        "  bare hyper CONNECT proxy (floor)       {b50:8.1} {b99:8.1} {:8.1}",
        b50 - d50
    );
    for (mode, t) in &tunnel {
        let (t50, t99) = (pct(t, 0.5), pct(t, 0.99));
        let added = t50 - d50;
        println!(
            "  through the proxy, audit {mode:<8}      {t50:8.1} {t99:8.1} {added:8.1} (target ≤ {TARGET_SETUP_ADDED_US}) {}",
            verdict(added <= TARGET_SETUP_ADDED_US)
        );
    }
    println!("decision latency in place (audit latency_us, µs)  p50      p99");
    for (mode, v) in &decided {
        println!(
            "  tunnels, audit {mode:<8}                    {:8.1} {:8.1}",
            pct(v, 0.5),
            pct(v, 0.99)
        );
    }
    let bd = best(&bulk_direct);
    let bt = best(&bulk_tunnel);
    println!();
    println!(
        "bulk transfer, {} MiB, best of {BULK_ROUNDS} (MiB/s)",
        BULK_BYTES >> 20
    );
    println!("  direct   {bd:8.0}");
    println!("  tunnel   {bt:8.0}");
    let ratio = bt / bd;
    println!(
        "  ratio {ratio:.2} (target ≥ {TARGET_BULK_RATIO}) {}",
        verdict(ratio >= TARGET_BULK_RATIO)
    );
    println!();
    match run {
        Some((plain, sandboxed)) => {
            let (p, s) = (pct(&plain, 0.5), pct(&sandboxed, 0.5));
            println!("`run -- true` start-up, {RUNS} each, p50 (ms)");
            println!("  true directly          {p:8.2}");
            println!("  portcullis run -- true {s:8.2}");
            let added = s - p;
            println!(
                "  added {added:.2} ms (target ≤ {TARGET_RUN_ADDED_MS}) {}",
                verdict(added <= TARGET_RUN_ADDED_MS)
            );
        }
        None => println!("`run -- true` start-up: the sandbox cannot start here (see above)"),
    }
    println!();
    println!("total {:.1} s", began.elapsed().as_secs_f64());
}

fn config_text(dir: &std::path::Path, durability: &str) -> String {
    let digest = hex::encode(Sha256::digest(KEY.as_bytes()));
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
[audit]
path = "{}"
durability = "{durability}"
[network]
allow_cidrs = ["127.0.0.1"]
[egress]
listen = "127.0.0.1:0"
[[agents]]
id = "bench"
api_key_sha256 = ["{digest}"]
"#,
        dir.join(format!("audit-{durability}.jsonl")).display()
    )
}

/// The floor: a CONNECT proxy with nothing but hyper, tokio and a copy (no policy, no
/// audit, no sniffing), connecting to whatever it is asked.
async fn bare_proxy() -> SocketAddr {
    use hyper::{Request, Response, body::Incoming};
    use hyper_util::rt::TokioIo;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((c, _)) = l.accept().await else {
                continue;
            };
            c.set_nodelay(true).unwrap();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let target = req.uri().authority().unwrap().to_string();
                    let mut upstream = tokio::net::TcpStream::connect(target).await.unwrap();
                    upstream.set_nodelay(true).unwrap();
                    tokio::spawn(async move {
                        let mut client = TokioIo::new(hyper::upgrade::on(req).await.unwrap());
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                    });
                    Ok::<_, hyper::Error>(Response::new(
                        http_body_util::Empty::<bytes::Bytes>::new(),
                    ))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(c), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

/// Every tunnel decision's `latency_us` from the audit log of `mode` (the warm-up's too).
fn decision_latencies(dir: &std::path::Path, mode: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(dir.join(format!("audit-{mode}.jsonl"))).unwrap();
    let v: Vec<f64> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| r["type"] == "decision")
        .map(|r| r["latency_us"].as_f64().unwrap())
        .collect();
    assert!(v.len() >= SETUPS, "{} decisions recorded", v.len());
    v
}

/// Echoes the first byte of each connection, then sinks everything (counting) and answers
/// the count when the client half-closes.
fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            std::thread::spawn(move || {
                let _ = s.set_nodelay(true);
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).is_err() || s.write_all(&b).is_err() {
                    return;
                }
                let mut buf = vec![0u8; 256 << 10];
                let mut n: u64 = 0;
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => n += k as u64,
                    }
                }
                let _ = s.write_all(&n.to_be_bytes());
            });
        }
    });
    addr
}

fn direct_setup(server: SocketAddr) -> f64 {
    let start = Instant::now();
    let mut s = TcpStream::connect(server).unwrap();
    s.set_nodelay(true).unwrap();
    first_byte(&mut s);
    start.elapsed().as_secs_f64() * 1e6
}

fn tunnel_setup(proxy: SocketAddr, server: SocketAddr) -> f64 {
    let start = Instant::now();
    let _s = open_tunnel(proxy, server);
    start.elapsed().as_secs_f64() * 1e6
}

/// A tunnel through which the first byte has made its round trip.
fn open_tunnel(proxy: SocketAddr, server: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_nodelay(true).unwrap();
    // One write, as HTTP clients send a request head: `write!` on the socket itself would
    // send each formatted piece as its own segment (the socket has no buffer and no delay).
    let request = format!(
        "CONNECT {server} HTTP/1.1\r\nHost: {server}\r\nProxy-Authorization: Bearer {KEY}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).unwrap();
    // Nothing follows the head until the client speaks, so whole reads cannot overrun it.
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).unwrap();
        assert!(n > 0, "the proxy closed during CONNECT");
        head.extend_from_slice(&b[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    // The first bytes decide what the tunnel carries.
    first_byte(&mut s);
    s
}

/// A TLS ClientHello as rustls writes it for an address (so without a server name, which a
/// tunnel to an address refuses): what a tunnel's first bytes usually are, so the
/// proxy's sniffing is part of the measured setup. The server echoes its first byte.
fn hello() -> &'static [u8] {
    static HELLO: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    HELLO.get_or_init(|| {
        use std::sync::Arc;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    })
}

fn first_byte(s: &mut TcpStream) {
    s.write_all(hello()).unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).unwrap();
    assert_eq!(b[0], 0x16);
}

/// MiB/s of sending `BULK_BYTES` after the first byte's round trip and getting the count back.
fn bulk(mut s: TcpStream) -> f64 {
    let chunk = vec![7u8; 256 << 10];
    let start = Instant::now();
    let mut sent = 0;
    while sent < BULK_BYTES {
        s.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut n = [0u8; 8];
    s.read_exact(&mut n).unwrap();
    // The sink also counted the rest of the hello.
    assert_eq!(u64::from_be_bytes(n), (sent + hello().len() - 1) as u64);
    (sent as f64 / (1 << 20) as f64) / start.elapsed().as_secs_f64()
}

/// p50 samples of `true` and of `portcullis run -- true`, or None where the sandbox refuses.
fn run_startup() -> Option<(Vec<f64>, Vec<f64>)> {
    let exe = env!("CARGO_BIN_EXE_portcullis");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("portcullis.toml");
    std::fs::write(
        &cfg,
        format!(
            "[audit]\npath = \"{}\"\n[workspace]\nroots = [\"{}\"]\n",
            dir.path().join("state/audit.jsonl").display(),
            dir.path().join("ws").display()
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("ws")).unwrap();
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    let probe = std::process::Command::new(exe)
        .args(["run", "--config"])
        .arg(&cfg)
        .args(["--", "true"])
        .current_dir(dir.path().join("ws"))
        .output()
        .unwrap();
    if !probe.status.success() {
        println!(
            "portcullis run -- true failed: {}",
            String::from_utf8_lossy(&probe.stderr)
        );
        return None;
    }
    let mut plain = Vec::new();
    let mut sandboxed = Vec::new();
    for _ in 0..RUNS {
        let t = Instant::now();
        assert!(
            std::process::Command::new("true")
                .status()
                .unwrap()
                .success()
        );
        plain.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        let st = std::process::Command::new(exe)
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--", "true"])
            .current_dir(dir.path().join("ws"))
            .status()
            .unwrap();
        assert!(st.success());
        sandboxed.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Some((plain, sandboxed))
}

fn pct(samples: &[f64], p: f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn best(v: &[f64]) -> f64 {
    v.iter().copied().fold(0.0, f64::max)
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "MISSED" }
}
