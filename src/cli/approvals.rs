//! `portcullis approvals list | approve ID | deny ID`: a client of the admin API.
//!
//! The admin key is read from `PORTCULLIS_ADMIN_KEY` or `--key-file`, never from the command
//! line, where other users of the machine could read it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use clap::{Args, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::{Failure, load_config};

#[derive(Args, Debug)]
pub struct ApprovalsArgs {
    #[command(subcommand)]
    command: ApprovalsCommand,
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Admin address (default: `server.admin_listen` of the configuration).
    #[arg(long, global = true)]
    admin: Option<String>,
    /// A file holding the admin API key (default: the PORTCULLIS_ADMIN_KEY variable).
    #[arg(long, global = true)]
    key_file: Option<PathBuf>,
    /// CA certificate that signed the admin listener's certificate (default: `ca.crt` beside
    /// `tls.cert`), when TLS is configured.
    #[arg(long, global = true)]
    cacert: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ApprovalsCommand {
    /// List pending approvals, oldest first.
    List,
    /// Approve a pending action.
    Approve {
        id: String,
        /// Only approve if the action's digest is this one (what you reviewed).
        #[arg(long)]
        digest: Option<String>,
    },
    /// Deny a pending action.
    Deny { id: String },
}

pub fn run(args: ApprovalsArgs) -> Result<ExitCode, Failure> {
    let config = load_config(args.config.as_deref())?;
    let key = match &args.key_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("cannot read --key-file {}", f.display()))?
            .trim()
            .to_string(),
        None => std::env::var("PORTCULLIS_ADMIN_KEY")
            .map_err(|_| anyhow!("set PORTCULLIS_ADMIN_KEY or pass --key-file"))?,
    };
    let addr = args
        .admin
        .clone()
        .unwrap_or_else(|| config.server.admin_listen.to_string());
    let tls = match &config.tls {
        Some(t) => Some(
            args.cacert
                .clone()
                .unwrap_or_else(|| t.cert.parent().unwrap_or(Path::new(".")).join("ca.crt")),
        ),
        None => args.cacert.clone(),
    };
    let (method, path, body) = match &args.command {
        ApprovalsCommand::List => (Method::GET, "/v1/approvals".to_string(), String::new()),
        ApprovalsCommand::Approve { id, digest } => (
            Method::POST,
            format!("/v1/approvals/{id}/approve"),
            digest
                .as_ref()
                .map(|d| serde_json::json!({ "digest": d }).to_string())
                .unwrap_or_default(),
        ),
        ApprovalsCommand::Deny { id } => (
            Method::POST,
            format!("/v1/approvals/{id}/deny"),
            String::new(),
        ),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (status, text) =
        runtime.block_on(request(&addr, tls.as_deref(), &key, method, &path, body))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
    if !(200..300).contains(&status) {
        let msg = value["error"]["message"]
            .as_str()
            .unwrap_or(&text)
            .to_string();
        return Err(Failure {
            code: 1,
            error: anyhow!("admin API answered {status}: {msg}"),
        });
    }
    match &args.command {
        ApprovalsCommand::List => {
            let list = value["approvals"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                println!("no pending approvals");
            }
            for a in list {
                let reasons: Vec<String> = a["decision"]["reasons"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|r| {
                        format!(
                            "{}: {}",
                            r["rule"].as_str().unwrap_or(""),
                            r["message"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                println!(
                    "{}  agent={} session={} kind={} expires={} digest={}\n    {}",
                    a["id"].as_str().unwrap_or(""),
                    a["agent"].as_str().unwrap_or(""),
                    a["session"].as_str().unwrap_or(""),
                    a["action"]["kind"].as_str().unwrap_or(""),
                    a["expires"].as_str().unwrap_or(""),
                    a["action_digest"].as_str().unwrap_or(""),
                    reasons.join("; "),
                );
            }
        }
        _ => println!(
            "{} {}",
            value["approval"]["id"].as_str().unwrap_or(""),
            value["approval"]["status"].as_str().unwrap_or("")
        ),
    }
    Ok(ExitCode::SUCCESS)
}

async fn request(
    addr: &str,
    ca: Option<&Path>,
    key: &str,
    method: Method,
    path: &str,
    body: String,
) -> anyhow::Result<(u16, String)> {
    let addr = addr
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .trim_end_matches('/');
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to the admin listener at {addr}"))?;
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr)
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = match ca {
        None => send(TokioIo::new(tcp), req).await?,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in crate::server::tls::load_certs(ca)? {
                roots
                    .add(cert)
                    .with_context(|| format!("{}: not a usable CA certificate", ca.display()))?;
            }
            let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(addr);
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let name = rustls::pki_types::ServerName::try_from(host.to_string())?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
                .connect(name, tcp)
                .await?;
            send(TokioIo::new(stream), req).await?
        }
    };
    Ok(resp)
}

async fn send<I>(io: I, req: Request<Full<Bytes>>) -> anyhow::Result<(u16, String)>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await?.to_bytes();
    if bytes.len() > 16 << 20 {
        bail!("the admin API answer is too large");
    }
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}
