//! `portcullis run [--config F] [--profile P] -- CMD ARGS…`: the gateway in this process, the
//! program in a sandbox whose only ways out are the egress proxy and the model gateway.
//!
//! The run gets its own agent key (never written anywhere) and one session id, so everything
//! the process tree does is one session: a file read through a tool and a later request to the
//! network meet in the same flow rules.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use clap::Args;

use super::{Failure, load_config};
use crate::config::{AgentConfig, Config, ConfigSource, RunProfile};
use crate::sandbox::profile::{self, PROXY_PORT, PrivateDir, set_var};
use crate::sandbox::{self, Network, Spec};

/// Where the gateway is inside the sandbox's network namespace (the proxy: `PROXY_PORT`).
const GATEWAY_PORT: u16 = 8080;
/// The variables that name the proxy or the gateway (rewritten to TCP ports in the fallback).
const OURS: &[&str] = &[
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
    "OPENAI_BASE_URL",
    "ANTHROPIC_BASE_URL",
];

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long)]
    config: Option<PathBuf>,
    /// The profile (`[run.profiles.NAME]`); `default` is built in.
    #[arg(long, default_value = "default")]
    profile: String,
    /// The program and its arguments.
    #[arg(required = true, last = true)]
    command: Vec<OsString>,
}

pub fn run(args: RunArgs) -> Result<ExitCode, Failure> {
    let mut config = load_config(args.config.as_deref())?;
    let profile = config
        .run
        .profile(&args.profile, &config.workspace.roots)
        .ok_or_else(|| anyhow!("no profile {:?} in [run.profiles]", args.profile))?;
    let id = ulid::Ulid::new().to_string().to_ascii_lowercase();
    if config.source == ConfigSource::BuiltIn {
        // The default log and pins sit in the working directory, which the program may write.
        // One log per run, so runs side by side each have their single writer.
        let state = state_dir()?;
        config.audit.path = state.join(format!("run-{id}.jsonl"));
        config.mcp.pins = state.join("pins.json");
        tracing::info!(audit = %config.audit.path.display(), "audit log of this run");
    }
    let key = random_key()?;
    let private = PrivateDir::create("run").context("creating the run's directory")?;
    let dir = private.path().to_path_buf();
    let tmp = dir.join("tmp");
    std::fs::create_dir(&tmp)?;
    let network = profile::network(&profile).map_err(|e| anyhow!(e))?;
    if matches!(network, Network::PortsOnly { .. }) {
        eprintln!("portcullis run: WARNING: {}", profile::PORTS_ONLY_WARNING);
    }
    let mut fs = profile::fs_rules(&profile);
    fs.write.push(tmp.clone());
    profile::check_protected(&config, &fs).map_err(|e| anyhow!(e))?;
    // Intercepted names show the local CA's certificates: cooperative clients get a bundle
    // of the system's roots and that CA.
    let bundle =
        match &config.egress.intercept {
            Some(i) => {
                let mut pem = std::fs::read(crate::ca::SYSTEM_CA).unwrap_or_default();
                pem.extend(std::fs::read(&i.ca_cert).with_context(|| {
                    format!("reading the interception CA {}", i.ca_cert.display())
                })?);
                let path = dir.join("ca-bundle.pem");
                std::fs::write(&path, pem)?;
                fs.read.push(path.clone());
                Some(path)
            }
            None => None,
        };
    config.identity.agents.push(AgentConfig {
        id: profile.agent.clone(),
        labels: BTreeMap::from([
            ("run".to_string(), id.clone()),
            ("profile".to_string(), profile.name.clone()),
        ]),
        api_key_sha256: vec![crate::gate::identity::key_digest(&key)],
        client_cert: None,
    });
    // This run's listeners must not collide with a `serve` on the same host.
    config.server.listen = ([127, 0, 0, 1], 0).into();
    config.server.admin_listen = ([127, 0, 0, 1], 0).into();
    let fallback = matches!(network, Network::PortsOnly { .. });
    config.egress.listen = fallback.then(|| ([127, 0, 0, 1], 0).into());
    // The session every credential of this run lands in: the key's default session (what the
    // gateway gives the SDKs), named again as the proxy user so egress joins it.
    let session = format!("key-{}", &crate::gate::identity::key_digest(&key)[..12]);
    let mut env = environment(&profile, &config, &id, &session, &key, &tmp);
    if let Some(b) = &bundle {
        for k in [
            "SSL_CERT_FILE",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "NODE_EXTRA_CA_CERTS",
        ] {
            set_var(&mut env, k, b.display().to_string());
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("portcullis")
        .build()?;
    let code = runtime.block_on(async {
        let egress_sock = dir.join("egress.sock");
        let gateway_sock = dir.join("gateway.sock");
        let extra = crate::server::Extra {
            egress: Some(tokio::net::UnixListener::bind(&egress_sock)?),
            gateway: Some(tokio::net::UnixListener::bind(&gateway_sock)?),
        };
        let cwd = std::env::current_dir()?;
        let init_exe = std::env::current_exe().context("finding the portcullis binary")?;
        let spec = |network, env| Spec {
            init_exe,
            argv: args.command,
            env,
            cwd,
            fs,
            landlock: profile::enforcement(&profile),
            network,
        };
        // What a best-effort profile cannot have enforced here, said before anything runs.
        let warn = |spec: &Spec| -> anyhow::Result<()> {
            for gap in sandbox::preflight(spec)? {
                eprintln!("portcullis run: WARNING: not enforced: {gap}");
            }
            Ok(())
        };
        let (running, ran) = match network {
            Network::Isolated { .. } => {
                // The relays lead to sockets bound above, so the sandbox needs nothing of the
                // gateway to be set up: its init starts (namespaces, the init binary) while the
                // gateway loads the policy, and runs the program only once the gateway is up.
                let spec = spec(
                    Network::Isolated {
                        relays: vec![(PROXY_PORT, egress_sock), (GATEWAY_PORT, gateway_sock)],
                    },
                    env,
                );
                warn(&spec)?;
                let (go, gone) = std::sync::mpsc::channel();
                let ran = tokio::task::spawn_blocking(move || {
                    sandbox::run_when(&spec, || gone.recv().unwrap_or(false))
                });
                let started = crate::server::start_with(config, extra).await;
                // A failed send means the init could not start: `ran` says why.
                let _ = go.send(started.is_ok());
                match started {
                    Ok(running) => (running, ran.await),
                    Err(e) => {
                        let _ = ran.await;
                        return Err(e.into());
                    }
                }
            }
            Network::PortsOnly { .. } => {
                // The port rules name the gateway's TCP ports: they exist once it is up.
                let running = crate::server::start_with(config, extra).await?;
                let proxy = running.egress.map_or(0, |a| a.port());
                let gateway = running.gateway.port();
                let env = env
                    .into_iter()
                    .map(|(k, v)| {
                        if !OURS.iter().any(|o| k == *o) {
                            return (k, v);
                        }
                        let v = v
                            .to_string_lossy()
                            .replace(&format!(":{PROXY_PORT}"), &format!(":{proxy}"))
                            .replace(&format!(":{GATEWAY_PORT}"), &format!(":{gateway}"));
                        (k, OsString::from(v))
                    })
                    .collect();
                let spec = spec(
                    Network::PortsOnly {
                        ports: vec![proxy, gateway],
                    },
                    env,
                );
                if let Err(e) = warn(&spec) {
                    running.shutdown().await?;
                    return Err(e);
                }
                let ran = tokio::task::spawn_blocking(move || sandbox::run(&spec)).await;
                (running, ran)
            }
        };
        // Whatever happened, the records so far are flushed.
        running.shutdown().await?;
        let code = ran.map_err(|e| anyhow!("the sandbox task failed: {e}"))??;
        Ok::<i32, anyhow::Error>(code)
    })?;
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// The program's whole environment: a few harmless variables, the profile's, and where the
/// proxy and the gateway are. Provider keys are not among them: they stay in portcullis.
fn environment(
    profile: &RunProfile,
    config: &Config,
    id: &str,
    session: &str,
    key: &str,
    tmp: &Path,
) -> Vec<(OsString, OsString)> {
    let mut env = profile::base_env(profile);
    let proxy = format!("http://{session}:{key}@127.0.0.1:{PROXY_PORT}");
    let gateway = format!("http://127.0.0.1:{GATEWAY_PORT}");
    profile::set_proxy(&mut env, &proxy);
    // The gateway is reached directly; through the proxy it would be a loopback address.
    set_var(&mut env, "NO_PROXY", "127.0.0.1,localhost".into());
    set_var(&mut env, "no_proxy", "127.0.0.1,localhost".into());
    set_var(&mut env, "TMPDIR", tmp.display().to_string());
    set_var(&mut env, "PORTCULLIS_RUN", id.to_string());
    set_var(&mut env, "PORTCULLIS_KEY", key.to_string());
    set_var(&mut env, "PORTCULLIS_SESSION", session.to_string());
    for u in &config.llm.upstreams {
        let (var, base) = match u.kind {
            crate::config::ProviderKind::Openai => {
                ("OPENAI_BASE_URL", format!("{gateway}/llm/{}", u.name))
            }
            crate::config::ProviderKind::Anthropic => {
                ("ANTHROPIC_BASE_URL", format!("{gateway}/llm/{}", u.name))
            }
        };
        // The first upstream of each kind is the SDK default.
        if !env.iter().any(|(k, _)| k == var) {
            set_var(&mut env, var, base);
            let key_var = match u.kind {
                crate::config::ProviderKind::Openai => "OPENAI_API_KEY",
                crate::config::ProviderKind::Anthropic => "ANTHROPIC_API_KEY",
            };
            set_var(&mut env, key_var, key.to_string());
        }
    }
    env
}

/// 32 random bytes from the kernel, as hex.
fn random_key() -> anyhow::Result<String> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom for the run's key")?;
    Ok(format!("pc-run-{}", hex::encode(b)))
}

fn state_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .ok_or_else(|| {
            anyhow!("neither XDG_STATE_HOME nor HOME is set: give --config with an audit.path")
        })?;
    let dir = base.join("portcullis");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
