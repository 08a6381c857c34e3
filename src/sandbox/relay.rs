//! The only way out of the isolated network: listeners on 127.0.0.1 inside the namespace whose
//! connections are carried, byte for byte, to Unix sockets outside it. Run by the init, which is
//! not confined by Landlock and is the only process that can reach those sockets' paths by
//! design (the agent could too where Landlock lacks Unix-socket rules; see docs/sandbox.md).

use std::io;
use std::net::{Ipv4Addr, Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// Connections carried at once per relay; more are closed on accept.
const MAX_CONNECTIONS: usize = 512;

/// Binds every relay listener (so a port already taken is a set-up error, reported before the
/// agent starts) and serves each on its own thread.
pub(crate) fn start(relays: &[(u16, PathBuf)]) -> Result<(), String> {
    let mut bound = Vec::new();
    for (port, path) in relays {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, *port))
            .map_err(|e| format!("relay: binding 127.0.0.1:{port}: {e}"))?;
        bound.push((listener, path.clone()));
    }
    for (listener, path) in bound {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        thread::Builder::new()
            .name(format!("relay-{port}"))
            .spawn(move || serve(listener, path))
            .map_err(|e| format!("relay: starting the thread for port {port}: {e}"))?;
    }
    Ok(())
}

fn serve(listener: TcpListener, path: PathBuf) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        let Ok(tcp) = conn else { continue };
        if active.load(Ordering::Acquire) >= MAX_CONNECTIONS {
            continue;
        }
        active.fetch_add(1, Ordering::AcqRel);
        let (path, done) = (path.clone(), Arc::clone(&active));
        let spawned = thread::Builder::new().spawn(move || {
            let _ = carry(tcp, &path);
            done.fetch_sub(1, Ordering::AcqRel);
        });
        if spawned.is_err() {
            // The closure (and the connection) was dropped with the failed spawn.
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Copies both ways until both sides have finished, passing each half-close on.
fn carry(tcp: TcpStream, path: &PathBuf) -> io::Result<()> {
    let unix = UnixStream::connect(path)?;
    let (mut tcp_r, mut unix_w) = (tcp.try_clone()?, unix.try_clone()?);
    let up = thread::Builder::new().spawn(move || {
        match io::copy(&mut tcp_r, &mut unix_w) {
            // The agent finished sending: pass the EOF on, keep reading the answer.
            Ok(_) => {
                let _ = unix_w.shutdown(Shutdown::Write);
            }
            Err(_) => {
                let _ = unix_w.shutdown(Shutdown::Both);
                let _ = tcp_r.shutdown(Shutdown::Both);
            }
        }
    })?;
    let (mut unix_r, mut tcp_w) = (unix, tcp);
    match io::copy(&mut unix_r, &mut tcp_w) {
        Ok(_) => {
            let _ = tcp_w.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = tcp_w.shutdown(Shutdown::Both);
            let _ = unix_r.shutdown(Shutdown::Both);
        }
    }
    let _ = up.join();
    Ok(())
}
