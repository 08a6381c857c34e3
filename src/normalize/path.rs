//! Path normalization: which file a path really names, as the kernel would resolve it.
//!
//! The agent chooses the path, so every trick a path can play has to be undone here before a
//! policy sees it: `.` and `..` segments, doubled slashes, `~`, relative paths, and symlinks that
//! point somewhere else (including links that do not exist yet as files, and links whose target
//! climbs out with `..`).
//!
//! Two forms are produced:
//! * [`lexical`] — string-level cleanup only. Cheap, but wrong in front of symlinks: `a/link/..`
//!   is *not* `a` when `link` points elsewhere.
//! * [`canonicalize`] with `resolve_symlinks` — walks the path component by component the way
//!   the kernel does, following each symlink where it appears, so `..` after a link climbs out
//!   of the link's *target*. Components that do not exist yet (a file about to be written) are
//!   appended as they are, since nothing on disk can redirect them.
//!
//! Linux semantics are assumed (a single leading `//` is `/`, at most 40 links per lookup).

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Component, Path, PathBuf};

/// Linux's `MAXSYMLINKS`: a lookup that follows more links than this fails with `ELOOP`.
const MAX_SYMLINK_HOPS: usize = 40;

/// Linux's `PATH_MAX`. The kernel refuses longer paths (`ENAMETOOLONG`), so no legitimate
/// request needs one, and the limit bounds the work a hostile path can cause.
pub const MAX_PATH_LEN: usize = 4096;

/// Why a path could not be normalized. Every variant means "deny": we never guess.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// The path is the empty string.
    #[error("path is empty")]
    Empty,
    /// The path contains a NUL byte: the kernel would truncate it there, so the path we check
    /// and the path that would be opened differ.
    #[error("path contains a NUL byte")]
    Nul,
    /// The path is longer than [`MAX_PATH_LEN`].
    #[error("path is {len} bytes long; the limit is {max} bytes")]
    TooLong { len: usize, max: usize },
    /// A relative path was given and the base directory to join it to is not absolute.
    #[error("relative path given without an absolute base directory to resolve it against")]
    Relative,
    /// A `~user` (or `~+`, `~-`) prefix: a shell would expand it from the password database or
    /// its own state, which we cannot see, so we refuse rather than guess.
    #[error("path {path:?} starts with a `~user` form, which is not expanded")]
    TildeUser { path: String },
    /// The path starts with `~` but `HOME` is unset, empty or not absolute.
    #[error("path {path:?} starts with `~` but HOME is unset or not an absolute path")]
    NoHome { path: String },
    /// More than 40 symlinks were followed (a loop, or a chain too long for the kernel).
    #[error("too many levels of symbolic links (more than {MAX_SYMLINK_HOPS}) resolving {path:?}")]
    SymlinkLoop { path: String },
    /// The path goes through a symlink under `/proc` (`/proc/self`, `/proc/<pid>/cwd`,
    /// `/dev/fd` → `/proc/self/fd`, …). Those "magic" links resolve differently for every
    /// process, so reading one here would give the proxy's answer, not the agent's.
    #[error("path {path:?} goes through the per-process link {link:?} under /proc")]
    ProcLink { path: String, link: String },
    /// An unexpected error inspecting one component (permission denied, I/O error, …).
    #[error("cannot inspect {path:?} while resolving symlinks: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

/// One pending path component during symlink resolution.
#[derive(Debug)]
enum Part {
    Parent,
    Name(OsString),
}

/// What the file system says about one component.
enum Step {
    /// A symlink, with its (unresolved) target.
    Link(PathBuf),
    /// Exists and is not a symlink.
    Exists,
    /// Does not exist (or a parent is not a directory): nothing below it can redirect.
    Missing,
}

/// Lexically normalize a path: drop `.`, resolve `..` against the preceding component (never
/// above `/`), and collapse repeated and trailing slashes. No file system access.
///
/// Meant for absolute paths (callers join relative ones onto a base first). A relative path is
/// normalized without climbing above its start: leading `..` components are dropped, and an
/// empty result is `.`.
///
/// This is only correct when no component is a symlink; use [`canonicalize`] to get what the
/// kernel would open.
pub fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    // Count of `Normal` components in `out`, so `..` never pops the root.
    let mut depth = 0usize;
    for component in path.components() {
        match component {
            Component::Prefix(prefix) => out.push(prefix.as_os_str()),
            Component::RootDir => out.push(Component::RootDir.as_os_str()),
            Component::CurDir => {}
            Component::ParentDir => {
                if depth > 0 {
                    out.pop();
                    depth -= 1;
                }
            }
            Component::Normal(name) => {
                out.push(name);
                depth += 1;
            }
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Turn a path as given by an agent into the absolute path that would be opened.
///
/// Steps:
/// 1. Reject an empty path, a NUL byte, and paths over [`MAX_PATH_LEN`].
/// 2. Expand a leading `~` or `~/` from the `HOME` environment variable (read with
///    [`std::env::var_os`] on every call). `~user`, `~+` and `~-` are refused
///    ([`PathError::TildeUser`]); a missing or relative `HOME` is [`PathError::NoHome`].
/// 3. Join a relative path onto `base`, which must be absolute ([`PathError::Relative`]).
/// 4. Without `resolve_symlinks`: [`lexical`] normalization, and that is the result.
///    With `resolve_symlinks`: walk from `/` one component at a time, following every symlink
///    where it is met (at most 40, like Linux), so `link/..` is the parent of the link's
///    *target*. `..` is never collapsed lexically across a component that has not been checked.
///    Once a component does not exist, the rest is appended lexically: a file about to be
///    created, or the target of a dangling symlink (writing through it creates the target).
///
/// The resolved path is a snapshot: a later rename or new symlink can change what the path
/// names (the front end should open what was checked, e.g. with `O_NOFOLLOW` on the result).
pub fn canonicalize(path: &str, base: &Path, resolve_symlinks: bool) -> Result<PathBuf, PathError> {
    let home = std::env::var_os("HOME");
    canonicalize_with_home(path, base, resolve_symlinks, home.as_deref())
}

/// Whether `path` is `root` or lies below it, compared component by component: `/ws` contains
/// `/ws` and `/ws/a`, but not `/ws_evil`.
///
/// Both arguments are expected to be normalized already (output of [`canonicalize`]). They are
/// still put through [`lexical`] so that a stray `..` cannot fake containment (`/ws/../etc` is
/// not inside `/ws`). An empty or relative argument never contains or is contained.
pub fn contains(root: &Path, path: &Path) -> bool {
    if !root.is_absolute() || !path.is_absolute() {
        return false;
    }
    lexical(path).starts_with(lexical(root))
}

/// [`canonicalize`] with `HOME` passed in, so tests need not mutate the process environment.
fn canonicalize_with_home(
    path: &str,
    base: &Path,
    resolve_symlinks: bool,
    home: Option<&OsStr>,
) -> Result<PathBuf, PathError> {
    check_input(path)?;
    let joined = absolute(path, base, home)?;
    if resolve_symlinks {
        resolve(&joined)
    } else {
        Ok(lexical(&joined))
    }
}

/// Reject inputs that are ambiguous or that the kernel would refuse anyway.
fn check_input(path: &str) -> Result<(), PathError> {
    if path.is_empty() {
        return Err(PathError::Empty);
    }
    if path.contains('\0') {
        return Err(PathError::Nul);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathError::TooLong {
            len: path.len(),
            max: MAX_PATH_LEN,
        });
    }
    Ok(())
}

/// Expand `~` and join onto `base`; the result is absolute but not yet normalized.
fn absolute(path: &str, base: &Path, home: Option<&OsStr>) -> Result<PathBuf, PathError> {
    if let Some(rest) = path.strip_prefix('~') {
        if !rest.is_empty() && !rest.starts_with('/') {
            return Err(PathError::TildeUser {
                path: path.to_string(),
            });
        }
        let home = home
            .map(Path::new)
            .filter(|home| home.is_absolute())
            .ok_or_else(|| PathError::NoHome {
                path: path.to_string(),
            })?;
        // Strip the slashes so `join` appends instead of replacing with an absolute path.
        return Ok(home.join(rest.trim_start_matches('/')));
    }
    let path = Path::new(path);
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    if !base.is_absolute() {
        return Err(PathError::Relative);
    }
    Ok(base.join(path))
}

/// Resolve symlinks component by component, as the kernel's path walk does.
///
/// Invariant: `resolved` is absolute, and its first `len - missing` components exist and are
/// free of symlinks, so popping it for `..` is exactly what the kernel does. The last
/// `missing` components do not exist, so they cannot be links and need no more lookups.
fn resolve(joined: &Path) -> Result<PathBuf, PathError> {
    let mut pending = VecDeque::new();
    push_front(&mut pending, joined);
    let mut resolved = PathBuf::from("/");
    let mut missing = 0usize;
    let mut hops = 0usize;
    while let Some(part) = pending.pop_front() {
        let name = match part {
            Part::Parent => {
                resolved.pop();
                missing = missing.saturating_sub(1);
                continue;
            }
            Part::Name(name) => name,
        };
        let candidate = resolved.join(&name);
        if missing > 0 {
            resolved = candidate;
            missing += 1;
            continue;
        }
        match inspect(&candidate)? {
            Step::Exists => resolved = candidate,
            Step::Missing => {
                resolved = candidate;
                missing = 1;
            }
            Step::Link(target) => {
                hops += 1;
                check_link(joined, &candidate, hops)?;
                if target.is_absolute() {
                    resolved = PathBuf::from("/");
                }
                // A relative target is relative to the link's directory, which is `resolved`.
                push_front(&mut pending, &target);
            }
        }
    }
    Ok(resolved)
}

/// Refuse a link we must not follow: one too many, or a per-process link under `/proc`.
fn check_link(joined: &Path, link: &Path, hops: usize) -> Result<(), PathError> {
    if hops > MAX_SYMLINK_HOPS {
        return Err(PathError::SymlinkLoop {
            path: joined.display().to_string(),
        });
    }
    if link.starts_with("/proc") {
        return Err(PathError::ProcLink {
            path: joined.display().to_string(),
            link: link.display().to_string(),
        });
    }
    Ok(())
}

/// Look at one component without following it.
fn inspect(candidate: &Path) -> Result<Step, PathError> {
    let io_error = |source| PathError::Io {
        path: candidate.display().to_string(),
        source,
    };
    match std::fs::symlink_metadata(candidate) {
        Ok(meta) if meta.file_type().is_symlink() => std::fs::read_link(candidate)
            .map(Step::Link)
            .map_err(io_error),
        Ok(_) => Ok(Step::Exists),
        // `NotADirectory`: a parent is a regular file. The kernel would fail the open, so
        // nothing is reachable below it; treat it like a name that does not exist.
        Err(err)
            if matches!(
                err.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(Step::Missing)
        }
        Err(err) => Err(io_error(err)),
    }
}

/// Put the components of `path` at the front of `pending`, in order. The root and `.` carry no
/// step of their own (an absolute link target resets `resolved` in the caller).
fn push_front(pending: &mut VecDeque<Part>, path: &Path) {
    for component in path.components().rev() {
        match component {
            Component::ParentDir => pending.push_front(Part::Parent),
            Component::Normal(name) => pending.push_front(Part::Name(name.to_os_string())),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::symlink;

    use super::*;

    /// A workspace `ws` and a sibling `outside`, both under one temp dir, with real paths.
    struct Fixture {
        _tmp: tempfile::TempDir,
        root: PathBuf,
        ws: PathBuf,
        outside: PathBuf,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        // The temp dir itself may sit behind a symlink (e.g. /tmp on some systems).
        let root = fs::canonicalize(tmp.path()).unwrap();
        let ws = root.join("ws");
        let outside = root.join("outside");
        fs::create_dir_all(ws.join("sub")).unwrap();
        fs::create_dir_all(outside.join("deep/dir")).unwrap();
        fs::write(ws.join("file.txt"), b"x").unwrap();
        fs::write(outside.join("secret"), b"s").unwrap();
        Fixture {
            _tmp: tmp,
            root,
            ws,
            outside,
        }
    }

    fn real(path: &str, base: &Path) -> Result<PathBuf, PathError> {
        canonicalize_with_home(path, base, true, Some(OsStr::new("/home/agent")))
    }

    #[test]
    fn lexical_cleans_dots_and_slashes() {
        let cases = [
            ("/a/./b/../c", "/a/c"),
            ("/../../etc", "/etc"),
            ("//a//b/", "/a/b"),
            ("/a/b/../../..", "/"),
            ("/", "/"),
            ("/a/.", "/a"),
            ("a/../../b", "b"),
            ("./a/./", "a"),
            ("..", "."),
        ];
        for (input, want) in cases {
            assert_eq!(lexical(Path::new(input)), PathBuf::from(want), "{input}");
        }
    }

    #[test]
    fn contains_is_component_wise() {
        let ws = Path::new("/ws");
        assert!(contains(ws, Path::new("/ws")));
        assert!(contains(ws, Path::new("/ws/a/b")));
        assert!(contains(Path::new("/ws/"), Path::new("/ws/a")));
        assert!(!contains(ws, Path::new("/ws_evil")));
        assert!(!contains(ws, Path::new("/wsx/a")));
        assert!(!contains(ws, Path::new("/ws/../etc")));
        assert!(!contains(ws, Path::new("/")));
        assert!(contains(Path::new("/"), Path::new("/etc")));
        assert!(!contains(Path::new(""), Path::new("/ws")));
        assert!(!contains(Path::new("ws"), Path::new("ws/a")));
    }

    #[test]
    fn dotdot_traversal_is_resolved() {
        let ws = Path::new("/ws");
        for resolve in [false, true] {
            let got = canonicalize_with_home("../etc/passwd", ws, resolve, None).unwrap();
            assert_eq!(got, PathBuf::from("/etc/passwd"));
            let got = canonicalize_with_home("/ws/a/../../../etc", ws, resolve, None).unwrap();
            assert_eq!(got, PathBuf::from("/etc"));
        }
        let got = canonicalize_with_home("./a//b/./", ws, false, None).unwrap();
        assert_eq!(got, PathBuf::from("/ws/a/b"));
    }

    #[test]
    fn rejects_empty_nul_long_and_baseless() {
        let ws = Path::new("/ws");
        assert!(matches!(real("", ws), Err(PathError::Empty)));
        let err = real("/ws/a\0/../../etc/passwd", ws).unwrap_err();
        assert!(matches!(err, PathError::Nul));
        assert_eq!(err.to_string(), "path contains a NUL byte");
        let long = format!("/{}", "a".repeat(MAX_PATH_LEN));
        assert!(matches!(real(&long, ws), Err(PathError::TooLong { .. })));
        let rel = canonicalize_with_home("a", Path::new("ws"), false, None);
        assert!(matches!(rel, Err(PathError::Relative)));
        // An absolute path needs no base.
        let abs = canonicalize_with_home("/x", Path::new(""), false, None).unwrap();
        assert_eq!(abs, PathBuf::from("/x"));
    }

    #[test]
    fn tilde_expands_from_home_only() {
        let ws = Path::new("/ws");
        let home = Some(OsStr::new("/home/agent"));
        let expand = |p: &str| canonicalize_with_home(p, ws, false, home);
        assert_eq!(expand("~").unwrap(), PathBuf::from("/home/agent"));
        assert_eq!(expand("~/").unwrap(), PathBuf::from("/home/agent"));
        assert_eq!(
            expand("~//.ssh/../.aws").unwrap(),
            PathBuf::from("/home/agent/.aws")
        );
        assert_eq!(expand("~/../../etc").unwrap(), PathBuf::from("/etc"));
        // Only a leading `~` is special.
        assert_eq!(expand("a/~").unwrap(), PathBuf::from("/ws/a/~"));
        for user_form in ["~root", "~root/.ssh", "~+", "~-/x"] {
            assert!(
                matches!(expand(user_form), Err(PathError::TildeUser { .. })),
                "{user_form}"
            );
        }
        for bad_home in [None, Some(OsStr::new("")), Some(OsStr::new("rel/home"))] {
            let got = canonicalize_with_home("~/x", ws, false, bad_home);
            assert!(matches!(got, Err(PathError::NoHome { .. })));
        }
    }

    #[test]
    fn tilde_uses_the_home_env_var() {
        let got = canonicalize("~/x", Path::new("/ws"), false);
        match std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute()) {
            Some(home) => assert_eq!(got.unwrap(), lexical(&Path::new(&home).join("x"))),
            None => assert!(matches!(got, Err(PathError::NoHome { .. }))),
        }
    }

    #[test]
    fn symlink_pointing_outside_is_followed() {
        let f = fixture();
        symlink(&f.outside, f.ws.join("link")).unwrap();
        assert_eq!(
            real("link/secret", &f.ws).unwrap(),
            f.outside.join("secret")
        );
        assert_eq!(real("link", &f.ws).unwrap(), f.outside);
        // Lexical mode does not look at the disk.
        let lex = canonicalize_with_home("link/secret", &f.ws, false, None).unwrap();
        assert_eq!(lex, f.ws.join("link/secret"));
    }

    #[test]
    fn symlink_chain_is_followed() {
        let f = fixture();
        symlink(f.outside.join("secret"), f.ws.join("c")).unwrap();
        symlink("c", f.ws.join("b")).unwrap();
        symlink(f.ws.join("b"), f.ws.join("a")).unwrap();
        assert_eq!(real("a", &f.ws).unwrap(), f.outside.join("secret"));
    }

    #[test]
    fn symlink_loops_are_errors() {
        let f = fixture();
        symlink("b", f.ws.join("a")).unwrap();
        symlink("a", f.ws.join("b")).unwrap();
        symlink("self", f.ws.join("self")).unwrap();
        assert!(matches!(
            real("a", &f.ws),
            Err(PathError::SymlinkLoop { .. })
        ));
        assert!(matches!(
            real("self/x", &f.ws),
            Err(PathError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn hop_limit_matches_linux() {
        let f = fixture();
        // l0 -> l1 -> … -> l40 -> secret: 41 links to follow, one more than Linux allows.
        symlink(f.outside.join("secret"), f.ws.join("l40")).unwrap();
        for i in 0..40 {
            symlink(format!("l{}", i + 1), f.ws.join(format!("l{i}"))).unwrap();
        }
        assert_eq!(real("l1", &f.ws).unwrap(), f.outside.join("secret"));
        assert!(matches!(
            real("l0", &f.ws),
            Err(PathError::SymlinkLoop { .. })
        ));
    }

    #[test]
    fn dangling_last_component_resolves_to_target() {
        let f = fixture();
        symlink(f.outside.join("new.txt"), f.ws.join("abs")).unwrap();
        symlink("../outside/deep/../made.txt", f.ws.join("rel")).unwrap();
        assert_eq!(real("abs", &f.ws).unwrap(), f.outside.join("new.txt"));
        assert_eq!(real("rel", &f.ws).unwrap(), f.outside.join("made.txt"));
    }

    #[test]
    fn relative_links_are_relative_to_their_directory() {
        let f = fixture();
        symlink("../../outside/deep", f.ws.join("sub/up")).unwrap();
        assert_eq!(
            real("sub/up/dir", &f.ws).unwrap(),
            f.outside.join("deep/dir")
        );
        // The same link reached through the base, not the path.
        let base = f.ws.join("sub");
        assert_eq!(real("up", &base).unwrap(), f.outside.join("deep"));
    }

    #[test]
    fn dotdot_after_a_link_climbs_from_its_target() {
        let f = fixture();
        symlink(f.outside.join("deep/dir"), f.ws.join("link")).unwrap();
        // The kernel resolves `link` first: `link/..` is outside/deep, not ws.
        assert_eq!(real("link/..", &f.ws).unwrap(), f.outside.join("deep"));
        assert_eq!(
            real("link/../../secret", &f.ws).unwrap(),
            f.outside.join("secret")
        );
        let lex = canonicalize_with_home("link/..", &f.ws, false, None).unwrap();
        assert_eq!(lex, f.ws);
    }

    #[test]
    fn symlinked_base_is_resolved_too() {
        let f = fixture();
        symlink(f.outside.join("deep/dir"), f.root.join("wslink")).unwrap();
        let base = f.root.join("wslink");
        assert_eq!(real("../x", &base).unwrap(), f.outside.join("deep/x"));
    }

    #[test]
    fn trailing_slashes_are_ignored() {
        let f = fixture();
        symlink(&f.outside, f.ws.join("link")).unwrap();
        assert_eq!(real("link/", &f.ws).unwrap(), f.outside);
        assert_eq!(real("sub//", &f.ws).unwrap(), f.ws.join("sub"));
        assert_eq!(real("new-dir/", &f.ws).unwrap(), f.ws.join("new-dir"));
    }

    #[test]
    fn missing_tail_under_a_symlinked_dir() {
        let f = fixture();
        symlink(&f.outside, f.ws.join("link")).unwrap();
        let got = real("link/new/sub/../file.txt", &f.ws).unwrap();
        assert_eq!(got, f.outside.join("new/file.txt"));
        // `..` out of a missing part lands back on real directories, which are checked again.
        let got = real("missing/../link/secret", &f.ws).unwrap();
        assert_eq!(got, f.outside.join("secret"));
    }

    #[test]
    fn regular_file_in_the_middle_is_not_an_error() {
        let f = fixture();
        // The kernel would fail with ENOTDIR; we report the name without inventing anything.
        assert_eq!(real("file.txt/x", &f.ws).unwrap(), f.ws.join("file.txt/x"));
    }

    #[test]
    fn proc_magic_links_are_refused() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let ws = Path::new("/");
        for path in [
            "/proc/self/cwd/x",
            "/proc/self/root/etc/passwd",
            "/proc/self/environ",
        ] {
            assert!(
                matches!(real(path, ws), Err(PathError::ProcLink { .. })),
                "{path}"
            );
        }
        // Not a link: resolves as usual.
        assert_eq!(
            real("/proc/cpuinfo", ws).unwrap(),
            PathBuf::from("/proc/cpuinfo")
        );
    }

    #[test]
    fn error_messages_quote_the_path() {
        let err = canonicalize_with_home("~bob/x\n", Path::new("/ws"), false, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "path \"~bob/x\\n\" starts with a `~user` form, which is not expanded"
        );
    }
}
