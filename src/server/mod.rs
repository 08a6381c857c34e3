//! `portcullis serve`: the gateway and admin listeners around one Gate.
//!
//! One shutdown path: SIGTERM/SIGINT (or [`Running::shutdown`]) → stop accepting → cancel
//! pending approvals (each a recorded deny) → drain connections until the grace deadline →
//! close what is left → flush and close the audit log.

pub mod admin;
pub mod certs;
pub mod deadline;
pub mod egress;
pub mod gateway;
pub mod http;
pub mod listener;
pub mod llm;
pub mod mcp;
pub mod tls;

use crate::sync::lock;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::{AuditConfig, AuditLog};
use crate::config::Config;
use crate::gate::Gate;
use crate::gate::identity::Identities;
use crate::gate::state::{InMemory, StateStore};
use crate::metrics::{Gauges, Metrics};
use crate::normalize::Context;
use crate::policy::{PolicyFiles, PolicySet, testing};

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("policy: {0}")]
    Policy(String),
    #[error("{0}")]
    Config(String),
    #[error("audit log: {0}")]
    Audit(#[from] crate::audit::AuditError),
    #[error("tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The outcome of the last reload attempt, for `/readyz` and the logs.
#[derive(Debug, Clone, Serialize, Default)]
pub struct ReloadStatus {
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "opt_rfc3339"
    )]
    pub at: Option<SystemTime>,
    pub trigger: String,
}

/// What every handler shares.
pub struct App {
    pub config: Config,
    pub gate: Arc<Gate>,
    /// Open MCP sessions of `/mcp/{server}`.
    pub mcp: crate::proxy::mcp::http::Sessions,
    /// The model upstreams of `/llm/{upstream}/…`.
    pub llm: crate::proxy::llm::Llm,
    /// The forward proxy, when `[egress] listen` is set.
    pub egress: Option<Arc<crate::proxy::egress::Egress>>,
    pub identities: Identities,
    pub metrics: Arc<Metrics>,
    pub approval_timeout: Duration,
    state: Arc<dyn StateStore>,
    reload_status: Mutex<ReloadStatus>,
    /// One reload at a time; a second trigger waits for the first.
    reloading: tokio::sync::Mutex<()>,
}

/// A started service.
pub struct Running {
    pub gateway: SocketAddr,
    pub admin: SocketAddr,
    pub egress: Option<SocketAddr>,
    pub app: Arc<App>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// Listeners on Unix sockets, besides the configured TCP ones: how `portcullis run` serves
/// a sandbox whose network namespace has no other way out.
#[derive(Default)]
pub struct Extra {
    pub gateway: Option<tokio::net::UnixListener>,
    pub egress: Option<tokio::net::UnixListener>,
}

/// Start every listener in `config`. Returns once they are bound.
pub async fn start(config: Config) -> Result<Running, ServeError> {
    start_with(config, Extra::default()).await
}

/// [`start`], plus the Unix-socket listeners of `extra`.
pub async fn start_with(config: Config, extra: Extra) -> Result<Running, ServeError> {
    // The embedded pack's tests ran when this binary was built; a directory's run now.
    let policy = load_policy(&config, config.policy.dir.is_some()).map_err(ServeError::Policy)?;
    tracing::info!(policy.digest = %policy.digest(), policy.mode = ?policy.mode(), "policy loaded");
    let mut audit_cfg = AuditConfig::new(config.audit.path.clone());
    audit_cfg.durability = config.audit.durability;
    audit_cfg.rotate_bytes = config.audit.rotate_bytes;
    audit_cfg.queue_capacity = config.audit.queue_capacity;
    let (audit, recovery) = AuditLog::open(audit_cfg)?;
    if let Some(torn) = &recovery.truncated {
        tracing::warn!(offset = torn.offset, bytes = torn.bytes, reason = %torn.reason, "audit log had a torn last line; it was cut");
    }
    // The admin listener authenticates by admin key only, so it never asks for client certs.
    let (tls, admin_tls) = match &config.tls {
        Some(t) => {
            let acceptor = |client_ca: Option<PathBuf>, require_client_cert| {
                tls::server_config(&tls::TlsSettings {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    client_ca,
                    require_client_cert,
                })
                .map(tokio_rustls::TlsAcceptor::from)
            };
            (
                Some(acceptor(t.client_ca.clone(), t.require_client_cert)?),
                Some(acceptor(None, false)?),
            )
        }
        None => (None, None),
    };
    let metrics = Arc::new(Metrics::new());
    let state: Arc<dyn StateStore> = Arc::new(InMemory::new(&config));
    let ctx = Context {
        roots: config.workspace.roots.clone(),
        resolve_symlinks: config.workspace.resolve_symlinks,
    };
    let gate = Gate::new(ctx, policy, Some(audit)).with_state(state.clone(), metrics.clone());
    let bind = |what, addr| async move {
        TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { what, addr, source })
    };
    let gw = bind("gateway", config.server.listen).await?;
    let adm = bind("admin", config.server.admin_listen).await?;
    let egress_listener = match config.egress.listen {
        Some(addr) => Some(bind("egress", addr).await?),
        None => None,
    };
    // Admin keys in clear text across a network would hand out approvals.
    if !config.server.admin_listen.ip().is_loopback() && config.tls.is_none() {
        return Err(ServeError::Config(format!(
            "server.admin_listen {} is not loopback and [tls] is not configured: admin keys would cross the network in clear text",
            config.server.admin_listen
        )));
    }
    let pins = crate::proxy::mcp::pins::Pins::load(&config.mcp.pins)
        .map_err(|e| ServeError::Config(e.to_string()))?;
    let gate = Arc::new(gate);
    let llm = crate::proxy::llm::Llm::new(gate.clone(), config.llm.clone())
        .map_err(ServeError::Config)?;
    let mut own = vec![gw.local_addr()?, adm.local_addr()?];
    if let Some(l) = &egress_listener {
        own.push(l.local_addr()?);
    }
    // Sandboxed per-session MCP servers reach the network through the proxy only.
    let sandboxed = config.mcp.servers.iter().any(|s| {
        s.sandbox.is_some() && s.url.is_none() && s.process == crate::config::Process::Session
    });
    let egress = match egress_listener.is_some() || extra.egress.is_some() || sandboxed {
        true => Some(Arc::new(
            crate::proxy::egress::Egress::new(
                gate.clone(),
                config.egress.clone(),
                &own,
                config.server.max_connections,
            )
            .map_err(ServeError::Config)?,
        )),
        false => None,
    };
    let mcp = crate::proxy::mcp::http::Sessions::new(
        gate.clone(),
        &config,
        Arc::new(pins),
        egress.clone().map(|egress| {
            Arc::new(egress::SessionEgress {
                egress,
                limits: config.server.clone(),
                metrics: metrics.clone(),
            }) as Arc<dyn crate::proxy::mcp::SessionEgress>
        }),
    )
    .map_err(ServeError::Config)?;
    let app = Arc::new(App {
        llm,
        egress,
        approval_timeout: config.approvals.timeout,
        identities: Identities::new(&config.identity),
        mcp,
        gate,
        metrics: metrics.clone(),
        state,
        reload_status: Mutex::new(ReloadStatus {
            ok: true,
            trigger: "start".into(),
            ..ReloadStatus::default()
        }),
        reloading: tokio::sync::Mutex::new(()),
        config,
    });
    let (stop, stopped) = watch::channel(false);
    let gateway = gw.local_addr()?;
    let admin_addr = adm.local_addr()?;
    let limits = app.config.server.clone();
    let mut tasks = Vec::new();
    let a = app.clone();
    tasks.push(tokio::spawn(listener::run(
        "gateway",
        gw,
        tls.clone(),
        limits.clone(),
        metrics.clone(),
        move |req, conn| gateway::handle(a.clone(), req, conn),
        stopped.clone(),
    )));
    let a = app.clone();
    tasks.push(tokio::spawn(listener::run(
        "admin",
        adm,
        admin_tls,
        limits,
        metrics,
        move |req, conn| admin::handle(a.clone(), req, conn),
        stopped.clone(),
    )));
    let egress_addr = match egress_listener {
        Some(l) => {
            let addr = l.local_addr()?;
            let a = app.clone();
            tasks.push(tokio::spawn(listener::run(
                "egress",
                l,
                None,
                app.config.server.clone(),
                app.metrics.clone(),
                move |req, conn| egress::handle(a.clone(), req, conn),
                stopped.clone(),
            )));
            Some(addr)
        }
        None => None,
    };
    let unix = [
        ("gateway-unix", extra.gateway, false),
        ("egress-unix", extra.egress, true),
    ];
    for (name, l, is_egress) in unix {
        let Some(l) = l else { continue };
        let a = app.clone();
        let limits = app.config.server.clone();
        let m = app.metrics.clone();
        let stop = stopped.clone();
        tasks.push(if is_egress {
            tokio::spawn(listener::run(
                name,
                listener::Bound::Unix(l),
                None,
                limits,
                m,
                move |req, conn| egress::handle(a.clone(), req, conn),
                stop,
            ))
        } else {
            tokio::spawn(listener::run(
                name,
                listener::Bound::Unix(l),
                None,
                limits,
                m,
                move |req, conn| gateway::handle(a.clone(), req, conn),
                stop,
            ))
        });
    }
    tasks.push(tokio::spawn(expire_approvals(app.clone(), stopped.clone())));
    if let (Some(dir), Some(every)) = (app.config.policy.dir.clone(), app.config.server.reload_poll)
    {
        // Taken now, so a change made as soon as `start` returns is seen as a change.
        let seen = fingerprint(&dir);
        tasks.push(tokio::spawn(watch_policy(
            app.clone(),
            dir,
            seen,
            every,
            stopped,
        )));
    }
    tracing::info!(%gateway, admin = %admin_addr, tls = app.config.tls.is_some(), "listening");
    Ok(Running {
        gateway,
        admin: admin_addr,
        egress: egress_addr,
        app,
        stop,
        tasks,
    })
}

/// Run until SIGTERM or SIGINT, then shut down.
pub async fn serve(config: Config) -> Result<(), ServeError> {
    let running = start(config).await?;
    let scheme = if running.app.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    // Scripts and tests read the bound addresses from these two lines.
    println!("gateway listening on {scheme}://{}", running.gateway);
    println!("admin listening on {scheme}://{}", running.admin);
    if let Some(e) = running.egress {
        println!("egress listening on http://{e}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        r = tokio::signal::ctrl_c() => { r?; tracing::info!("SIGINT: shutting down") }
    }
    running.shutdown().await
}

impl Running {
    /// Stop accepting, cancel approvals, drain, close the audit log.
    pub async fn shutdown(self) -> Result<(), ServeError> {
        self.app.gate.stop_asking();
        let _ = self.stop.send(true);
        // MCP server processes are stopped; their pending calls get errors.
        self.app.mcp.close_all();
        let mut cancelled = self.app.gate.expire_approvals(true).await;
        for t in self.tasks {
            let _ = t.await;
        }
        // Anything parked by a request that was already past the check above.
        cancelled += self.app.gate.expire_approvals(true).await;
        if cancelled > 0 {
            tracing::info!(cancelled, "pending approvals cancelled");
        }
        if let Some(audit) = self.app.gate.audit().cloned() {
            // Handlers are gone; closing writes and syncs what is still queued.
            tokio::task::spawn_blocking(move || audit.close())
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))??;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

impl App {
    pub fn gauges(&self) -> Gauges {
        let a = self.gate.audit().map(AuditLog::stats).unwrap_or_default();
        let s = self.state.stats();
        Gauges {
            audit_queue_depth: a.queue_depth,
            audit_records: a.records_written,
            audit_last_fsync_us: a.last_fsync_us,
            audit_failures: a.failures,
            audit_queue_full: a.queue_full,
            audit_failed: a.failed,
            sessions: s.sessions,
            sessions_evicted: s.sessions_evicted,
            rate_keys: s.rate_keys,
            approvals_pending: s.approvals_pending,
            policy_digest: self.gate.policy().digest().to_string(),
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        lock(&self.reload_status).clone()
    }

    /// Load, compile and test the policy set again; swap it in only if all of that succeeds.
    /// Decisions in flight finish on the set they started with.
    pub async fn reload(self: &Arc<Self>, trigger: &str) -> Result<String, String> {
        let _one = self.reloading.lock().await;
        let app = self.clone();
        let loaded = tokio::task::spawn_blocking(move || load_policy(&app.config, true))
            .await
            .map_err(|e| format!("reload task failed: {e}"))
            .and_then(|r| r);
        let mut status = ReloadStatus {
            ok: loaded.is_ok(),
            error: None,
            at: Some(SystemTime::now()),
            trigger: trigger.to_string(),
        };
        let result = match loaded {
            Ok(set) => {
                let digest = set.digest().to_string();
                let same = digest == self.gate.policy().digest();
                self.gate.replace_policy(set);
                self.metrics.reloads_ok.fetch_add(1, Ordering::Relaxed);
                self.metrics.reload_healthy.store(1, Ordering::Relaxed);
                tracing::info!(policy.digest = %digest, unchanged = same, trigger, "policy reloaded");
                Ok(digest)
            }
            Err(e) => {
                self.metrics.reloads_failed.fetch_add(1, Ordering::Relaxed);
                self.metrics.reload_healthy.store(0, Ordering::Relaxed);
                tracing::error!(trigger, error = %e, "policy reload failed; the previous policy stays in force");
                status.error = Some(e.clone());
                Err(e)
            }
        };
        *lock(&self.reload_status) = status;
        result
    }
}

/// Load the configured policy set and (with `tests`) run its tests; any failure refuses it.
fn load_policy(config: &Config, tests: bool) -> Result<PolicySet, String> {
    let files = match &config.policy.dir {
        Some(dir) => PolicyFiles::from_dir(dir).map_err(|e| e.to_string())?,
        None => PolicyFiles::embedded(),
    };
    if !tests {
        return PolicySet::load(
            files,
            &config.policy_data(),
            &config.policy.entrypoint,
            config.policy.timeout,
        )
        .map_err(|e| e.to_string());
    }
    let data = files
        .data(&config.policy_data())
        .map_err(|e| e.to_string())?;
    let report = testing::run(&files, &data).map_err(|e| e.to_string())?;
    let failed: Vec<&str> = report
        .results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.name.as_str())
        .collect();
    if !failed.is_empty() {
        return Err(format!(
            "{} of {} policy tests failed: {}",
            failed.len(),
            report.results.len(),
            failed.join(", ")
        ));
    }
    PolicySet::load(
        files,
        &config.policy_data(),
        &config.policy.entrypoint,
        config.policy.timeout,
    )
    .map_err(|e| e.to_string())
}

/// Deny approvals whose deadline passed.
async fn expire_approvals(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    loop {
        let next = app
            .state
            .approvals()
            .next_deadline()
            .map(tokio::time::Instant::from_std);
        // New approvals may arrive with earlier deadlines than any seen here; check often.
        let tick = tokio::time::Instant::now() + Duration::from_millis(250);
        let at = next.map_or(tick, |n| n.min(tick));
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep_until(at) => {}
        }
        app.gate.expire_approvals(false).await;
        app.mcp.sweep();
    }
}

/// Reload when a file under the policy directory changes (size, mtime or the set of files).
async fn watch_policy(
    app: Arc<App>,
    dir: PathBuf,
    mut seen: Vec<(PathBuf, u64, Option<SystemTime>)>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let walk = dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&walk)).await else {
            continue;
        };
        if now != seen {
            seen = now;
            let _ = app.reload("file change").await;
        }
    }
}

fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    out.sort();
    out
}

pub(crate) use crate::gate::approvals::rfc3339;

fn opt_rfc3339<S: serde::Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => rfc3339(t, s),
        None => s.serialize_none(),
    }
}
