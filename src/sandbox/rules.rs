//! The Landlock ruleset of the agent, built in the init before the agent is forked; the agent's
//! `pre_exec` only passes its descriptor to `landlock_restrict_self`.

use std::os::fd::OwnedFd;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    PathFd, Ruleset, RulesetAttr, RulesetCreatedAttr, Scope,
};

/// The roots, as absolute paths.
pub(crate) struct Roots<'a> {
    pub read: &'a [PathBuf],
    pub write: &'a [PathBuf],
    pub exec: &'a [PathBuf],
}

/// Builds the ruleset for Landlock ABI `abi` (at most what the kernel offers): every
/// filesystem access that ABI knows is handled, so anything not granted by a root is denied;
/// REFER is never granted (no link or rename across directories); with `ports` (the ports-only
/// network) TCP bind is denied and connect allowed only to those ports; from ABI 6 signals and
/// abstract Unix sockets are scoped to the sandbox. A read or execute root that does not exist
/// is skipped (`preflight` reported it); a missing write root is an error.
///
/// Returns `Ok(None)` when `abi` is 0 (no Landlock).
pub(crate) fn build(
    abi: u32,
    roots: &Roots<'_>,
    ports: Option<&[u16]>,
) -> Result<Option<OwnedFd>, String> {
    if abi == 0 {
        return Ok(None);
    }
    let abi = ABI::from(i32::try_from(abi).unwrap_or(i32::MAX));
    let handled = AccessFs::from_all(abi);
    let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let exec = read | AccessFs::Execute;
    let write = handled & !(AccessFs::Refer | AccessFs::Execute);
    let err = |what: &str, e: &dyn std::fmt::Display| format!("Landlock: {what}: {e}");

    // Hard requirement: the ABI was checked, so anything the kernel refuses is an error rather
    // than a silently weaker ruleset.
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(handled)
        .map_err(|e| err("handling filesystem access", &e))?;
    if ports.is_some() && abi >= ABI::V4 {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(|e| err("handling TCP access", &e))?;
    }
    if abi >= ABI::V6 {
        ruleset = ruleset
            .scope(Scope::from_all(abi))
            .map_err(|e| err("scoping signals and abstract sockets", &e))?;
    }
    let mut created = ruleset
        .create()
        .map_err(|e| err("creating the ruleset", &e))?;

    let file_only = AccessFs::from_file(abi);
    for (paths, access, kind) in [
        (roots.read, read, "read"),
        (roots.exec, exec, "exec"),
        (roots.write, write, "write"),
    ] {
        for path in paths {
            let fd = match PathFd::new(path) {
                Ok(fd) => fd,
                Err(_) if kind != "write" && !path.exists() => continue,
                Err(e) => return Err(err(&format!("{kind} root {}", path.display()), &e)),
            };
            let access = if path.is_dir() {
                access
            } else {
                access & file_only
            };
            created = created
                .add_rule(PathBeneath::new(fd, access))
                .map_err(|e| err(&format!("{kind} root {}", path.display()), &e))?;
        }
    }
    if let Some(ports) = ports.filter(|_| abi >= ABI::V4) {
        for port in ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(|e| err(&format!("TCP port {port}"), &e))?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    fd.map(Some)
        .ok_or_else(|| "Landlock: the kernel gave no ruleset".to_string())
}
