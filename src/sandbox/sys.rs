//! Thin wrappers over the system calls the sandbox needs. Every `unsafe` block of the sandbox
//! lives here, each one small and explained.
//!
//! Functions marked "async-signal-safe" are called between `fork` and `execve` (from
//! `Command::pre_exec`), where the child of a multi-threaded parent may not allocate, lock or
//! touch anything another thread could have held: they only issue raw system calls on data
//! prepared before the fork.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `LANDLOCK_CREATE_RULESET_VERSION`: ask `landlock_create_ruleset` for the ABI version.
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAPABILITY_VERSION_3: u32 = 0x2008_0522;
/// `CAP_SETPCAP`: needed to shrink the bounding set.
const CAP_SETPCAP: u32 = 8;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn check_long(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The Landlock ABI version the running kernel offers, `None` when Landlock is not built in or
/// not enabled.
pub(crate) fn landlock_abi() -> Option<u32> {
    // SAFETY: with a null attribute pointer, size 0 and the VERSION flag the call only returns
    // an integer; it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(v).ok().filter(|v| *v > 0)
}

pub(crate) fn geteuid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub(crate) fn getegid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// Whether a child of this process can `unshare(flags)`, tried in a throwaway forked child so
/// this process is left as it was.
pub(crate) fn can_unshare(flags: libc::c_int) -> bool {
    // SAFETY: the child only calls unshare and _exit, both async-signal-safe raw system calls,
    // so forking a multi-threaded process is sound; the parent only waits for it.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return false;
    }
    if pid == 0 {
        // SAFETY: in the forked child: two raw system calls, no allocation, never returns.
        unsafe {
            let ok = libc::unshare(flags) == 0;
            libc::_exit(if ok { 0 } else { 1 });
        }
    }
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: status is a valid out-pointer; pid is our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            break;
        }
        if r < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
    libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
}

/// Whether `fd` is an open file descriptor.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only inspects the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Takes ownership of an inherited descriptor after `fd_is_open` said it is open, and marks it
/// close-on-exec so the agent never inherits it.
pub(crate) fn take_inherited_fd(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 3 || !fd_is_open(fd) {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the descriptor is open, was handed to this process for this purpose by its
    // parent (`run`), and nothing else in the process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: plain fcntl on a descriptor we own.
    check(unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) })?;
    Ok(owned)
}

/// Marks every descriptor from 3 up close-on-exec, so nothing the caller of `run` leaked
/// reaches the agent.
pub(crate) fn cloexec_from_3() -> io::Result<()> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets flags in the descriptor table.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd instead.
    let mut fds = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        if let Some(fd) = entry?
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<RawFd>().ok())
        {
            fds.push(fd);
        }
    }
    for fd in fds.into_iter().filter(|fd| *fd >= 3) {
        // SAFETY: fcntl on a number that is or was a descriptor; EBADF (the directory handle of
        // the walk, now closed) is harmless.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Between fork and exec of the sandbox init (async-signal-safe).

/// Async-signal-safe: clears close-on-exec on `fd` so the exec'd init inherits it.
pub(crate) fn clear_cloexec(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor that is open in this process.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }).map(drop)
}

/// Async-signal-safe: deliver `sig` to this process when the thread that forked it dies, and
/// fail if that already happened (`getppid` no longer `parent`).
pub(crate) fn set_parent_death_signal(sig: libc::c_int, parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number and touches no memory.
    check(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) })?;
    // SAFETY: getppid has no preconditions.
    if unsafe { libc::getppid() } != parent {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    Ok(())
}

/// Async-signal-safe: `unshare(flags)`.
pub(crate) fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: unshare takes flags only.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

/// Async-signal-safe: writes `data` to the file at `path` (a /proc control file) in one
/// `write`, as those files require.
pub(crate) fn write_proc_file(path: &CStr, data: &[u8]) -> io::Result<()> {
    // SAFETY: path is NUL-terminated; the flags ask for a plain write-only open.
    let fd = check(unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) })?;
    // SAFETY: data is a valid buffer of data.len() bytes; fd was just opened.
    let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
    let result = if n < 0 {
        Err(io::Error::last_os_error())
    } else if n as usize != data.len() {
        Err(io::Error::from_raw_os_error(libc::EIO))
    } else {
        Ok(())
    };
    // SAFETY: closes the descriptor opened above, exactly once.
    unsafe { libc::close(fd) };
    result
}

/// Async-signal-safe: best-effort `write` of a whole short message to `fd` (used to say which
/// step failed before the exec; the parent gets the errno from `spawn`).
pub(crate) fn write_raw(fd: RawFd, msg: &[u8]) {
    let mut rest = msg;
    while !rest.is_empty() {
        // SAFETY: rest is a valid buffer; a bad fd only yields an error.
        let n = unsafe { libc::write(fd, rest.as_ptr().cast(), rest.len()) };
        if n <= 0 {
            return;
        }
        rest = rest.get(n as usize..).unwrap_or_default();
    }
}

// ---------------------------------------------------------------------------------------------
// The init's own set-up.

/// Brings the loopback interface of the current network namespace up (what `ip link set lo up`
/// does), through `SIOCSIFFLAGS` on a datagram socket.
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: socket takes integers only.
    let raw =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: raw is a freshly created descriptor owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: req is a valid ifreq naming an interface; SIOCGIFFLAGS fills ifru_flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: SIOCGIFFLAGS initialised the ifru_flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | (libc::IFF_UP as libc::c_short);
    // SAFETY: req is a valid ifreq with the new flags.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) })?;
    Ok(())
}

/// A set of signals.
#[derive(Clone, Copy)]
pub(crate) struct SigSet(libc::sigset_t);

impl SigSet {
    pub(crate) fn of(signals: &[libc::c_int]) -> io::Result<Self> {
        // SAFETY: sigset_t is plain data; sigemptyset initialises it before use.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: set is a valid sigset_t.
        check(unsafe { libc::sigemptyset(&mut set) })?;
        for s in signals {
            // SAFETY: set is initialised; an invalid signal number yields EINVAL.
            check(unsafe { libc::sigaddset(&mut set, *s) })?;
        }
        Ok(SigSet(set))
    }

    /// Blocks these signals in the calling thread (threads spawned later inherit the mask).
    pub(crate) fn block(&self) -> io::Result<()> {
        // SAFETY: the set is initialised; the old mask is not asked for.
        let r = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &self.0, std::ptr::null_mut()) };
        if r != 0 {
            return Err(io::Error::from_raw_os_error(r));
        }
        Ok(())
    }

    /// Waits for one of these (blocked) signals and returns its number.
    pub(crate) fn wait(&self) -> io::Result<libc::c_int> {
        // SAFETY: the set is initialised; the info pointer may be null.
        check(unsafe { libc::sigwaitinfo(&self.0, std::ptr::null_mut()) })
    }
}

/// Async-signal-safe: unblocks every signal in the calling thread.
pub(crate) fn unblock_all_signals() -> io::Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a valid sigset_t; the old mask is not asked for.
    let r = unsafe {
        libc::sigemptyset(&mut set);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut())
    };
    if r != 0 {
        return Err(io::Error::from_raw_os_error(r));
    }
    Ok(())
}

/// Sends `sig` to the process group `pgid`, falling back to the process itself.
pub(crate) fn kill_group(pgid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill takes integers only; pgid > 0 is our own child's group.
    if pgid > 0 && unsafe { libc::kill(-pgid, sig) } != 0 {
        // SAFETY: as above, for the single process.
        unsafe { libc::kill(pgid, sig) };
    }
}

/// If child `pid` has terminated, its exit code (128 + signal when killed), leaving it a zombie
/// so its process (group) id cannot be reused until `reap`.
pub(crate) fn exited(pid: libc::pid_t) -> io::Result<Option<i32>> {
    // SAFETY: siginfo_t is plain data; all-zero is valid and si_pid == 0 means "not yet".
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: info is a valid out-pointer; pid is our child.
    check(unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    })?;
    // SAFETY: waitid filled info for a child state change (or left it zeroed).
    let (si_pid, si_status) = unsafe { (info.si_pid(), info.si_status()) };
    if si_pid == 0 {
        return Ok(None);
    }
    Ok(Some(match info.si_code {
        libc::CLD_EXITED => si_status,
        _ => 128 + si_status,
    }))
}

/// Reaps terminated child `pid`.
pub(crate) fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: status is a valid out-pointer; pid is our terminated child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted
    {}
}

/// Makes this process the reaper of its orphaned descendants (PR_SET_CHILD_SUBREAPER).
pub(crate) fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }).map(|_| ())
}

/// Kills every remaining child and reaps it; as a subreaper this process inherits the orphans
/// of those it kills, so it goes on until it has no children left.
pub(crate) fn kill_descendants() {
    let me = std::process::id();
    // The common end: the agent left nothing behind, and /proc need not be read at all.
    while has_children() {
        let kids = children_of(me);
        if kids.is_empty() {
            return;
        }
        for &k in &kids {
            // SAFETY: kill takes integers only; k is our own child.
            unsafe { libc::kill(k, libc::SIGKILL) };
        }
        for &k in &kids {
            reap(k);
        }
    }
}

/// Whether this process still has a child, reaping those that have already exited.
fn has_children() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer; WNOHANG never blocks.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            0 => return true,
            p if p > 0 => continue,
            _ if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            // ECHILD: none at all.
            _ => return false,
        }
    }
}

/// The processes whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<libc::pid_t> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in dir.flatten() {
        let Some(pid) = e
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Reaps every other terminated child without blocking.
pub(crate) fn reap_others(except: libc::pid_t) {
    loop {
        // SAFETY: siginfo_t is plain data; all-zero is valid.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: info is a valid out-pointer; WNOWAIT only peeks.
        let r = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        // SAFETY: waitid filled info (or left it zeroed).
        let pid = unsafe { info.si_pid() };
        if r < 0 || pid == 0 || pid == except {
            return;
        }
        reap(pid);
    }
}

// ---------------------------------------------------------------------------------------------
// Capabilities.

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Whether this process may shrink its bounding set (`CAP_SETPCAP` effective).
pub(crate) fn has_setpcap() -> io::Result<bool> {
    let mut header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array, as version 3 requires.
    check_long(unsafe { libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) })?;
    Ok(data[0].effective & (1 << CAP_SETPCAP) != 0)
}

/// The highest capability number the kernel knows.
pub(crate) fn cap_last_cap() -> io::Result<u32> {
    let text = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?;
    text.trim()
        .parse()
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "bad cap_last_cap"))
}

// ---------------------------------------------------------------------------------------------
// Between fork and exec of the agent (async-signal-safe).

/// Async-signal-safe: `setsid()`, so the agent has no controlling terminal to inject into.
pub(crate) fn setsid() -> io::Result<()> {
    // SAFETY: setsid takes no arguments.
    check(unsafe { libc::setsid() }).map(drop)
}

/// Async-signal-safe: empties the bounding set (when `bounding`), the ambient set, and the
/// effective, permitted and inheritable sets.
pub(crate) fn drop_capabilities(last_cap: u32, bounding: bool) -> io::Result<()> {
    if bounding {
        for cap in 0..=last_cap {
            // SAFETY: PR_CAPBSET_DROP takes a capability number.
            check(unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) })?;
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integers only.
    let r = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    // EINVAL: a kernel without ambient capabilities (before 4.3) has none to clear.
    if r < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
        return Err(io::Error::last_os_error());
    }
    let header = CapHeader {
        version: CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [CapData::default(); 2];
    // SAFETY: header and a two-element data array of zeros, as version 3 requires.
    check_long(unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) }).map(drop)
}

/// Async-signal-safe: `PR_SET_NO_NEW_PRIVS`.
pub(crate) fn set_no_new_privs() -> io::Result<()> {
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }).map(drop)
}

/// Async-signal-safe: `landlock_restrict_self(ruleset, 0)`, the raw call (the crate's wrapper
/// allocates).
pub(crate) fn landlock_restrict_self(ruleset: RawFd) -> io::Result<()> {
    // SAFETY: the call takes a descriptor and flags only.
    check_long(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0u32) }).map(drop)
}

// ---------------------------------------------------------------------------------------------
// Seccomp: no new Unix sockets where Landlock cannot restrict connecting to them.

/// `AUDIT_ARCH_*` of the build target, for the filter's architecture check.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
/// x32 system calls share the x86_64 architecture value; their numbers have this bit.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;
/// Offsets in `struct seccomp_data`.
const SECCOMP_NR: u32 = 0;
const SECCOMP_ARCH: u32 = 4;
#[cfg(target_endian = "little")]
const SECCOMP_ARG0_LOW: u32 = 16;
#[cfg(target_endian = "big")]
const SECCOMP_ARG0_LOW: u32 = 20;

/// A classic BPF program for `seccomp(2)`, built before the fork.
#[derive(Clone)]
pub(crate) struct SeccompFilter(Vec<libc::sock_filter>);

fn bpf(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    }
}

/// The filter that makes `socket(AF_UNIX, …)` and `io_uring_setup` (whose `IORING_OP_SOCKET`
/// would create sockets around the filter) fail with `EACCES`, and every system call of a
/// foreign ABI (x32, 32-bit compat) fail with `ENOSYS`. `socketpair` stays allowed: its sockets
/// are connected to each other and cannot reach a path. `None` on architectures without one.
pub(crate) fn unix_socket_filter() -> Option<SeccompFilter> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    {
        use libc::{BPF_ABS, BPF_JEQ, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
        let ld = |off| bpf(BPF_LD | BPF_W | BPF_ABS, off, 0, 0);
        let ret = |v| bpf(BPF_RET | BPF_K, v, 0, 0);
        let x32 = cfg!(target_arch = "x86_64");
        // Layout (indices): the three returns close the program, jumps only go forward.
        let mut p = vec![ld(SECCOMP_ARCH)];
        let arch_check = p.len();
        p.push(bpf(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH, 0, 0));
        p.push(ld(SECCOMP_NR));
        let x32_check = p.len();
        if x32 {
            p.push(bpf(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 0));
        }
        let uring_check = p.len();
        p.push(bpf(
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::SYS_io_uring_setup as u32,
            0,
            0,
        ));
        let socket_check = p.len();
        p.push(bpf(
            BPF_JMP | BPF_JEQ | BPF_K,
            libc::SYS_socket as u32,
            0,
            0,
        ));
        p.push(ld(SECCOMP_ARG0_LOW));
        let family_check = p.len();
        p.push(bpf(BPF_JMP | BPF_JEQ | BPF_K, libc::AF_UNIX as u32, 0, 0));
        let allow = p.len();
        p.push(ret(libc::SECCOMP_RET_ALLOW));
        let eacces = p.len();
        p.push(ret(libc::SECCOMP_RET_ERRNO | libc::EACCES as u32));
        let enosys = p.len();
        p.push(ret(libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32));
        // A jump at `from` to `to` skips `to - from - 1` instructions.
        let off = |from: usize, to: usize| u8::try_from(to - from - 1).unwrap_or(u8::MAX);
        p[arch_check].jf = off(arch_check, enosys);
        if x32 {
            p[x32_check].jt = off(x32_check, enosys);
        }
        p[uring_check].jt = off(uring_check, eacces);
        p[socket_check].jf = off(socket_check, allow);
        p[family_check].jt = off(family_check, eacces);
        p[family_check].jf = off(family_check, allow);
        Some(SeccompFilter(p))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        None
    }
}

/// Async-signal-safe: installs `filter` for this thread and its descendants (requires
/// `no_new_privs`).
pub(crate) fn install_seccomp(filter: &SeccompFilter) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.0.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: filter.0.as_ptr().cast_mut(),
    };
    // SAFETY: prog points at the filter's instructions, which outlive the call; the kernel
    // copies them and never writes through the pointer.
    check(unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER as libc::c_ulong,
            &prog as *const libc::sock_fprog,
            0,
            0,
        )
    })
    .map(drop)
}

/// Sends `sig` to the single process `pid`.
pub(crate) fn kill(pid: libc::pid_t, sig: libc::c_int) {
    // SAFETY: kill takes integers only; pid > 0 is one process, never a group.
    if pid > 0 {
        unsafe { libc::kill(pid, sig) };
    }
}
