//! The stdio transport: newline-delimited JSON-RPC between the agent's client (our stdin and
//! stdout) and a tool server we start and supervise.
//!
//! The server is restarted with backoff when it exits while the client is still there; the
//! requests it had in flight are answered with an error at once ([`Relay::server_down`]) and the
//! client's handshake is replayed to the new process ([`Relay::server_up`]). Lines over
//! `mcp.max_line_bytes` are skipped and logged, from either side.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use super::relay::Relay;
use crate::config::{Config, McpServer};
use crate::gate::identity::Caller;
use crate::sandbox::{self, Network, profile};

/// How to start the server.
#[derive(Debug, Clone)]
pub struct Spawn {
    pub argv: Vec<String>,
    /// Added to our environment (to the sandbox's, when there is one).
    pub env: BTreeMap<String, String>,
    /// The working directory: the first workspace root, the base the Gate resolves relative
    /// paths against, so the server opens what was decided.
    pub cwd: Option<std::path::PathBuf>,
    /// The sandbox the server runs in (`[[mcp.servers]] sandbox`): the whole spec, its argv,
    /// environment and working directory included, but for the temporary directory each
    /// start gets.
    pub sandbox: Option<Arc<sandbox::Spec>>,
}

impl Spawn {
    /// How `server` is started: as it is, or (`sandbox = "PROFILE"`) confined by that run
    /// profile in a network namespace of its own with nothing behind it. The error says why
    /// the sandbox cannot be had here; nothing is then started unconfined.
    pub fn new(config: &Config, server: &McpServer) -> Result<Spawn, String> {
        let cwd = config.workspace.roots.first().cloned();
        let sandbox = match &server.sandbox {
            None => None,
            Some(name) => Some(Arc::new(
                confined(config, server, name, cwd.clone())
                    .map_err(|e| format!("MCP server {:?}, sandbox {name:?}: {e}", server.name))?,
            )),
        };
        Ok(Spawn {
            argv: server.command.clone(),
            env: server.env.clone(),
            cwd,
            sandbox,
        })
    }
}

fn confined(
    config: &Config,
    server: &McpServer,
    name: &str,
    cwd: Option<std::path::PathBuf>,
) -> Result<sandbox::Spec, String> {
    let profile = config
        .run
        .profile(name, &config.workspace.roots)
        .ok_or_else(|| format!("no profile {name:?} in [run.profiles]"))?;
    let network = profile::network(&profile)?;
    if matches!(network, Network::PortsOnly { .. }) {
        tracing::warn!(mcp.server = %server.name, "{}", profile::PORTS_ONLY_WARNING);
    }
    let fs = profile::fs_rules(&profile);
    profile::check_protected(config, &fs)?;
    let mut env = profile::base_env(&profile);
    for (k, v) in &server.env {
        profile::set_var(&mut env, k, v.clone());
    }
    let spec = sandbox::Spec {
        init_exe: std::env::current_exe()
            .map_err(|e| format!("finding the portcullis binary: {e}"))?,
        argv: server.command.iter().map(Into::into).collect(),
        env,
        cwd: cwd.unwrap_or_else(|| "/".into()),
        fs,
        landlock: profile::enforcement(&profile),
        network,
    };
    // Refusals (a required Landlock ABI the kernel lacks, a missing write root) are said now;
    // what a best-effort profile leaves unenforced is logged at every start.
    sandbox::preflight(&spec).map_err(|e| e.to_string())?;
    Ok(spec)
}

/// A sandboxed server in its own network namespace gets the egress proxy there, relayed to a
/// socket served for `caller` in `session` alone; what keeps that socket served is returned.
pub fn session_network(
    spawn: &mut Spawn,
    egress: &dyn super::SessionEgress,
    caller: &Caller,
    session: &str,
) -> std::io::Result<Option<(Box<dyn Send>, profile::PrivateDir)>> {
    let Some(spec) = &spawn.sandbox else {
        return Ok(None);
    };
    if !matches!(spec.network, Network::Isolated { .. }) {
        return Ok(None);
    }
    let dir = profile::PrivateDir::create("mcp-egress")?;
    let sock = dir.path().join("egress.sock");
    let serving = egress.serve(&sock, caller, session)?;
    let mut spec = (**spec).clone();
    spec.network = Network::Isolated {
        relays: vec![(profile::PROXY_PORT, sock)],
    };
    profile::set_proxy(
        &mut spec.env,
        &format!("http://127.0.0.1:{}", profile::PROXY_PORT),
    );
    spawn.sandbox = Some(Arc::new(spec));
    Ok(Some((serving, dir)))
}

/// A started server process. A sandboxed one's child is the sandbox's init (it exits with the
/// server's status), and its temporary directory goes with it.
pub(super) struct Server {
    pub child: Child,
    _tmp: Option<profile::PrivateDir>,
}

impl Server {
    /// After its stdin was closed: give it [`EXIT_GRACE`] to exit, then SIGTERM (a sandbox's
    /// init passes it to the server's whole process group) and as long again, then kill it.
    pub(super) async fn stop(&mut self) {
        if tokio::time::timeout(EXIT_GRACE, self.child.wait())
            .await
            .is_ok()
        {
            return;
        }
        sandbox::terminate(&self.child);
        if tokio::time::timeout(EXIT_GRACE, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
            let _ = self.child.wait().await;
        }
    }
}

/// Longest wait for a server to exit after its stdin closed, before it is killed.
pub(super) const EXIT_GRACE: Duration = Duration::from_secs(2);
/// Longest wait for a dead server's last output before its requests are failed.
pub(super) const DRAIN: Duration = Duration::from_millis(500);
/// A server that ran this long before exiting restarts without accumulated backoff.
pub(super) const STABLE: Duration = Duration::from_secs(10);
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One line read with a bound.
pub enum Read {
    Line(Vec<u8>),
    /// A line over the bound, skipped: its length and its first and last bytes (where an `id`
    /// may be found).
    TooLong {
        len: usize,
        head: Vec<u8>,
        tail: Vec<u8>,
    },
    Eof,
}

/// Bytes kept of each end of an over-long line.
const ENDS: usize = 256;

/// Read one `\n`-terminated line of at most `max` bytes (without the newline; a `\r` before it
/// is dropped too). An over-long line is consumed and reported, never buffered whole.
pub async fn read_line<R: AsyncBufRead + Unpin>(r: &mut R, max: usize) -> std::io::Result<Read> {
    let mut line = Vec::new();
    let mut tail: Vec<u8> = Vec::new();
    let mut seen = 0usize;
    loop {
        let buf = r.fill_buf().await?;
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        let eof = buf.is_empty();
        seen += chunk.len();
        if seen <= max {
            line.extend_from_slice(chunk);
        } else {
            if line.len() > ENDS {
                line.truncate(ENDS);
            }
            if line.len() < ENDS {
                let take = (ENDS - line.len()).min(chunk.len());
                line.extend_from_slice(&chunk[..take]);
            }
        }
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(ENDS)..]);
        if tail.len() > ENDS {
            tail.drain(..tail.len() - ENDS);
        }
        let used = done.unwrap_or(chunk.len());
        r.consume(used);
        if done.is_some() || eof {
            return Ok(if eof && seen == 0 {
                Read::Eof
            } else if seen > max {
                Read::TooLong {
                    len: seen,
                    head: line,
                    tail,
                }
            } else {
                Read::Line(trim_cr(line))
            });
        }
    }
}

fn trim_cr(mut line: Vec<u8>) -> Vec<u8> {
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    line
}

/// Relay between the client on `client_in`/`client_out` and the server until the client goes
/// away (EOF) or `stop` turns true; then the server is stopped.
#[allow(clippy::too_many_arguments)]
pub async fn run<I, O>(
    relay: Arc<Relay>,
    spawn: Spawn,
    backoff: Duration,
    client_in: I,
    client_out: O,
    to_client: mpsc::Receiver<Vec<u8>>,
    to_server: mpsc::Receiver<(u64, Vec<u8>)>,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin + Send + 'static,
{
    let writer = tokio::spawn(write_lines(client_out, to_client));
    let (quit_tx, quit) = watch::channel(false);
    // The client is read once the first start was tried, so its `initialize` is not refused
    // for a server that is merely still starting.
    let (tried_tx, mut tried) = watch::channel(false);
    let reader = {
        let relay = relay.clone();
        tokio::spawn(async move {
            let _ = tried.wait_for(|t| *t).await;
            let mut r = BufReader::new(client_in);
            loop {
                tokio::select! {
                    read = read_line(&mut r, relay.max_line_bytes()) => match read {
                        Ok(Read::Line(l)) if l.iter().all(u8::is_ascii_whitespace) => {}
                        Ok(Read::Line(l)) => relay.from_client(l).await,
                        Ok(Read::TooLong { len, head, tail }) => {
                            relay.oversize_from_client(len, &head, &tail).await
                        }
                        Ok(Read::Eof) | Err(_) => break,
                    },
                    () = turned_on(&mut stop) => break,
                }
            }
            let _ = quit_tx.send(true);
        })
    };
    let result = supervise(relay.clone(), spawn, backoff, to_server, quit, tried_tx).await;
    reader.abort();
    drop(relay);
    let _ = writer.await;
    result
}

/// Run the server (restarting it with backoff when it exits) and carry `to_server` to its
/// stdin until `quit`; then close its stdin, give it a moment and kill it. `tried` turns true
/// once the first start was tried.
pub async fn supervise(
    relay: Arc<Relay>,
    spawn: Spawn,
    backoff: Duration,
    mut to_server: mpsc::Receiver<(u64, Vec<u8>)>,
    mut quit: watch::Receiver<bool>,
    tried_tx: watch::Sender<bool>,
) -> std::io::Result<()> {
    let mut delay = backoff;
    loop {
        let started = Instant::now();
        let mut server = match start(&spawn).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(command = ?spawn.argv, error = %e, "cannot start the tool server");
                relay.server_down(&format!("cannot be started: {e}")).await;
                let _ = tried_tx.send(true);
                if wait_or_quit(delay, &mut quit).await {
                    break;
                }
                delay = (delay * 2).min(MAX_BACKOFF);
                continue;
            }
        };
        let child = &mut server.child;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("tool server pipes missing"));
        };
        // Lines queued for the previous process are stale; the handshake goes first.
        while to_server.try_recv().is_ok() {}
        let (generation, replay) = relay.server_up();
        for mut line in replay {
            line.push(b'\n');
            let _ = stdin.write_all(&line).await;
        }
        let _ = stdin.flush().await;
        relay.resume();
        let _ = tried_tx.send(true);
        tracing::info!(pid = child.id(), generation, "tool server started");
        let server_reader = {
            let relay = relay.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(stdout);
                loop {
                    match read_line(&mut r, relay.max_line_bytes()).await {
                        Ok(Read::Line(l)) if l.iter().all(u8::is_ascii_whitespace) => {}
                        Ok(Read::Line(l)) => relay.from_server(l).await,
                        Ok(Read::TooLong { len, head, tail }) => {
                            relay.oversize_from_server(len, &head, &tail).await
                        }
                        Ok(Read::Eof) | Err(_) => break,
                    }
                }
            })
        };
        // Relay to the server until it exits or the client leaves.
        let exit = loop {
            tokio::select! {
                status = child.wait() => break Some(status),
                msg = to_server.recv() => match msg {
                    Some((g, line)) if g == generation => {
                        let mut buf = line;
                        buf.push(b'\n');
                        if stdin.write_all(&buf).await.and(stdin.flush().await).is_err() {
                            // The server closed its stdin: it is exiting; child.wait says how.
                            break Some(child.wait().await);
                        }
                    }
                    Some(_) => {} // meant for an earlier process
                    None => break None,
                },
                () = turned_on(&mut quit) => break None,
            }
        };
        let Some(status) = exit else {
            // Told to quit: close stdin, give it a moment, stop it.
            drop(stdin);
            server.stop().await;
            let _ = tokio::time::timeout(DRAIN, server_reader).await;
            relay.server_down("stopped").await;
            break;
        };
        let _ = tokio::time::timeout(DRAIN, server_reader).await;
        let why = match &status {
            Ok(s) => format!("exited ({s}) while handling this request"),
            Err(e) => format!("failed: {e}"),
        };
        tracing::warn!(why = %why, "tool server exited; restarting");
        relay.server_down(&why).await;
        if started.elapsed() >= STABLE {
            delay = backoff;
        }
        if wait_or_quit(delay, &mut quit).await {
            break;
        }
        delay = (delay * 2).min(MAX_BACKOFF);
    }
    Ok(())
}

/// Start the server, in its sandbox when it has one.
pub(super) async fn start(spawn: &Spawn) -> std::io::Result<Server> {
    let Some(template) = &spawn.sandbox else {
        return start_plain(spawn).map(|child| Server { child, _tmp: None });
    };
    let tmp = profile::PrivateDir::create("mcp")?;
    let mut spec = (**template).clone();
    spec.fs.write.push(tmp.path().to_path_buf());
    profile::set_var(&mut spec.env, "TMPDIR", tmp.path().display().to_string());
    let child = sandbox::spawn_piped(&spec)
        .await
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(Server {
        child,
        _tmp: Some(tmp),
    })
}

fn start_plain(spawn: &Spawn) -> std::io::Result<Child> {
    let (cmd, args) = spawn
        .argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let mut command = Command::new(cmd);
    if let Some(dir) = &spawn.cwd {
        command.current_dir(dir);
    }
    command
        .args(args)
        .envs(&spawn.env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
}

/// Sleep `d`; true if told to quit meanwhile.
async fn wait_or_quit(d: Duration, quit: &mut watch::Receiver<bool>) -> bool {
    if *quit.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        () = turned_on(quit) => true,
    }
}

/// Resolves once `rx` is true (or its sender is gone).
pub async fn turned_on(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

pub(super) async fn write_lines<O: AsyncWrite + Unpin>(
    mut out: O,
    mut rx: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(mut line) = rx.recv().await {
        line.push(b'\n');
        if out.write_all(&line).await.is_err() {
            break;
        }
        // Flush when nothing else is queued, so a burst is one write and a lone reply is not held.
        if rx.is_empty() && out.flush().await.is_err() {
            break;
        }
    }
    let _ = out.flush().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<String> {
        let mut r = BufReader::with_capacity(4, input);
        let mut out = Vec::new();
        loop {
            match read_line(&mut r, max).await.unwrap() {
                Read::Line(l) => out.push(String::from_utf8(l).unwrap()),
                Read::TooLong { len, head, tail } => out.push(format!(
                    "<{len} {} {}>",
                    String::from_utf8(head).unwrap(),
                    String::from_utf8(tail).unwrap()
                )),
                Read::Eof => return out,
            }
        }
    }

    #[tokio::test]
    async fn lines_are_bounded_and_over_long_ones_skipped() {
        assert_eq!(lines(b"ab\r\ncd\n", 8).await, ["ab", "cd"]);
        assert_eq!(
            lines(b"0123456789\nok\n", 8).await,
            ["<10 0123456789 0123456789>", "ok"]
        );
        assert_eq!(lines(b"last", 8).await, ["last"]);
        assert_eq!(
            lines(b"0123456789", 8).await,
            ["<10 0123456789 0123456789>"]
        );
        // The ends of a long line are kept, its middle is not.
        let long = format!(
            "{}{}{}\n",
            "h".repeat(300),
            "m".repeat(5000),
            "t".repeat(300)
        );
        let got = lines(long.as_bytes(), 1000).await;
        assert_eq!(
            got,
            [format!("<5600 {} {}>", "h".repeat(256), "t".repeat(256))]
        );
        assert_eq!(lines(b"", 8).await, Vec::<String>::new());
        assert_eq!(lines(b"12345678\n", 8).await, ["12345678"]);
    }
}
