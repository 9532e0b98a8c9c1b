//! Whether another user could change what root does: an executable root runs, and every directory above it, must
//! be owned by root or the caller and not be writable by group or others; a state or journal path may go through
//! a symlink only when root or the caller made it; a QMP socket must be root's, or the user's the plan names.
//!
//! Each refusal names the path, its owner and its mode, and the fix. The checks apply when kup runs as root (what
//! root runs is what matters); an unprivileged rehearsal can only hurt its own user.

use super::machine;
use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// A directory's sticky bit: its entries can be renamed or removed only by their owners (and root), so a
/// world-writable sticky directory such as `/tmp` cannot have an entry replaced under a root-owned name.
const STICKY: u32 = 0o1000;

/// Why a path is not trusted, or could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// A path another user could change.
    #[error("refusing {subject}: {} {why} (owner {owner}, mode {mode:04o}); {fix}", .path.display())]
    Untrusted {
        /// What kup was about to do: "to run /usr/local/bin/hook", "the state directory /var/lib/kup/state/db".
        subject: String,
        /// The path found wanting (the program, one of its directories, a symlink, a socket).
        path: PathBuf,
        /// Its owner, by name when it has one.
        owner: String,
        /// Its mode bits (type bits removed).
        mode: u32,
        /// What is wrong with it.
        why: &'static str,
        /// What to do.
        fix: String,
    },
    /// A bare program name not found on `PATH`.
    #[error("cannot run `{program}`: not found on PATH ({path})")]
    NotFound {
        /// argv\[0\].
        program: String,
        /// The `PATH` searched.
        path: String,
    },
    /// A path could not be examined.
    #[error("cannot check {}: {source}", .path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The plan names a user this host does not have.
    #[error("qmp_owner = \"{0}\": no such user on this host")]
    NoSuchUser(String),
}

/// A user's name, or `uid N` when it has none.
pub(crate) fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => format!("uid {uid}"),
    }
}

fn io(path: &Path, source: std::io::Error) -> TrustError {
    TrustError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The users whose files root may trust: root and whoever runs kup.
fn trusted(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

fn untrusted(
    subject: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    why: &'static str,
    fix: String,
) -> TrustError {
    TrustError::Untrusted {
        subject: subject.to_owned(),
        path: path.to_owned(),
        owner: user_name(meta.uid()),
        mode: meta.permissions().mode() & 0o7777,
        why,
        fix,
    }
}

/// Where `program` is, found as `execvp` would find it: a name with a `/` as it is (relative to the working
/// directory), a bare name in the first `PATH` directory holding an executable file of that name.
pub(crate) fn resolve(program: &str) -> Result<PathBuf, TrustError> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return Ok(if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|e| io(&path, e))?
                .join(path)
        });
    }
    let search = machine::env("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    for dir in search.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(program);
        if let Ok(meta) = std::fs::metadata(&candidate)
            && meta.is_file()
            && meta.permissions().mode() & 0o111 != 0
        {
            return resolve(&candidate.to_string_lossy());
        }
    }
    Err(TrustError::NotFound {
        program: program.to_owned(),
        path: search,
    })
}

/// `path` and every directory above it, the path itself first.
fn with_ancestors(path: &Path) -> Vec<PathBuf> {
    path.ancestors()
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect()
}

/// Refuses a symlink another user owns: whoever owns a symlink can replace it (even in a sticky directory).
fn check_link(subject: &str, path: &Path) -> Result<(), TrustError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, e)),
    };
    if meta.file_type().is_symlink() && !trusted(meta.uid()) {
        return Err(untrusted(
            subject,
            path,
            &meta,
            "is a symlink another user owns",
            format!(
                "remove it (`rm {}`) and check where it points: kup follows no symlink another user planted",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Refuses an existing `path` (followed) that another user owns or could write; a sticky directory's write bits
/// are fine (its entries are checked on their own).
fn check_node(subject: &str, path: &Path) -> Result<(), TrustError> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(path, e)),
    };
    if !trusted(meta.uid()) {
        return Err(untrusted(
            subject,
            path,
            &meta,
            "is owned by another user than root or kup's",
            format!(
                "`chown root {}`, or move it somewhere root owns",
                path.display()
            ),
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 && !(meta.is_dir() && mode & STICKY != 0) {
        return Err(untrusted(
            subject,
            path,
            &meta,
            "is writable by group or others",
            format!("`chmod go-w {}`", path.display()),
        ));
    }
    Ok(())
}

/// Checks `path` and everything above it, on the path as written (each symlink met, and what it leads to) and on
/// the path with every symlink resolved.
fn check_chain(subject: &str, path: &Path) -> Result<(), TrustError> {
    let mut checked = BTreeSet::new();
    for p in with_ancestors(path) {
        check_link(subject, &p)?;
        check_node(subject, &p)?;
        checked.insert(p);
    }
    // The path as the kernel resolves it: a symlink's target and the directories above it.
    if let Ok(real) = std::fs::canonicalize(path) {
        for p in with_ancestors(&real) {
            if checked.insert(p.clone()) {
                check_node(subject, &p)?;
            }
        }
    }
    Ok(())
}

/// The program `argv0` names, resolved as `exec` would, after proving that no other user could have replaced it:
/// when kup runs as root, the file and every directory above it are root's (or the caller's) and writable by
/// nobody else.
pub(crate) fn check_executable(argv0: &str) -> Result<PathBuf, TrustError> {
    let path = resolve(argv0)?;
    if machine::is_root() {
        let subject = if argv0 == path.to_string_lossy() {
            format!("to run {argv0}")
        } else {
            format!("to run {argv0} ({})", path.display())
        };
        check_chain(&subject, &path)?;
    }
    Ok(path)
}

/// A directory kup creates or writes state in (a VM's state, CRIU images, the journal): when kup runs as root,
/// no symlink on the way another user owns, and — where it exists — it and the directories above it root's (or the
/// caller's) and writable by nobody else, so that nobody else can plant or swap a file in it.
pub(crate) fn check_state_dir(what: &str, dir: &Path) -> Result<(), TrustError> {
    if !machine::is_root() {
        return Ok(());
    }
    let subject = format!("{what} {}", dir.display());
    if dir.components().any(|c| c == Component::ParentDir) {
        return Err(TrustError::Untrusted {
            subject,
            path: dir.to_owned(),
            owner: String::new(),
            mode: 0,
            why: "has a `..` component",
            fix: "name the directory without `..`".to_owned(),
        });
    }
    check_chain(&subject, dir)
}

/// A QMP socket kup connects to as root must be root's, or `owner`'s when the plan says which user runs that QEMU
/// (`qmp_owner`): whoever owns the socket answers kup's commands, and kup would save and restore what they say.
pub(crate) fn check_socket_owner(socket: &Path, owner: Option<&str>) -> Result<(), TrustError> {
    if !machine::is_root() {
        return Ok(());
    }
    let subject = format!("the QMP socket {}", socket.display());
    let parent = socket.parent().unwrap_or(Path::new("/"));
    for p in with_ancestors(parent) {
        check_link(&subject, &p)?;
    }
    check_link(&subject, socket)?;
    let meta = std::fs::metadata(socket).map_err(|e| io(socket, e))?;
    let expected = match owner {
        Some(name) => nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw())
            .ok_or_else(|| TrustError::NoSuchUser(name.to_owned()))?,
        None => 0,
    };
    if meta.uid() == 0 || meta.uid() == expected {
        return Ok(());
    }
    let found = user_name(meta.uid());
    Err(untrusted(
        &subject,
        socket,
        &meta,
        match owner {
            Some(_) => "is owned by another user than root and the plan's qmp_owner",
            None => "is not owned by root",
        },
        match owner {
            Some(name) => format!(
                "the plan says qmp_owner = \"{name}\": check which QEMU listens there (`ss -xlp | grep {}`)",
                socket.display()
            ),
            None => format!(
                "if that guest's QEMU runs as {found}, say so in the plan: `qmp_owner = \"{found}\"` in its [[vm]]"
            ),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn nobody() -> nix::unistd::Uid {
        nix::unistd::User::from_name("nobody")
            .unwrap()
            .expect("a user nobody")
            .uid
    }

    fn chown(path: &Path, uid: nix::unistd::Uid) {
        std::os::unix::fs::lchown(path, Some(uid.as_raw()), None).unwrap();
    }

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Fails unless the refusal `e` says every one of `parts`.
    fn assert_says(e: &str, parts: &[&str]) {
        let missing: Vec<_> = parts.iter().filter(|p| !e.contains(**p)).collect();
        assert!(missing.is_empty(), "{missing:?} not in: {e}");
    }

    /// A fresh directory, when the test runs as root: the checks apply to root only, and chown needs root.
    fn scratch_as_root() -> Option<tempfile::TempDir> {
        machine::is_root().then(|| tempfile::tempdir().unwrap())
    }

    /// A tool in a fresh directory (0755), itself 0755.
    fn tool() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let bin = dir.path().join("tool");
        std::fs::write(&bin, "#!/bin/sh\n").unwrap();
        chmod(&bin, 0o755);
        (dir, bin)
    }

    #[test]
    fn bare_names_are_found_on_path_like_exec_finds_them() {
        let sh = resolve("sh").unwrap();
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        let e = resolve("kup-no-such-program").unwrap_err().to_string();
        assert!(e.contains("not found on PATH"), "{e}");
        assert!(check_executable("sh").is_ok());
    }

    #[test]
    fn a_program_or_directory_others_may_write_or_own_is_refused() {
        if !machine::is_root() {
            return; // the check applies to root only, and chown needs root
        }
        let (dir, bin) = tool();
        let program = bin.to_string_lossy().into_owned();
        check_executable(&program).unwrap();

        chmod(&bin, 0o775);
        let e = check_executable(&program).unwrap_err().to_string();
        let writable = format!("{} is writable by group or others", bin.display());
        assert_says(&e, &[&writable, "mode 0775", "owner root"]);
        chmod(&bin, 0o755);

        chmod(dir.path(), 0o777);
        let e = check_executable(&program).unwrap_err().to_string();
        let writable = format!("{} is writable by group or others", dir.path().display());
        assert_says(&e, &[&writable, "mode 0777"]);
        // Sticky, like /tmp: entries cannot be swapped by others.
        chmod(dir.path(), 0o1777);
        check_executable(&program).unwrap();
        chmod(dir.path(), 0o755);

        chown(&bin, nobody());
        let e = check_executable(&program).unwrap_err().to_string();
        let owned = format!("{} is owned by another user", bin.display());
        assert_says(&e, &[&owned, "owner nobody"]);
        chown(&bin, nix::unistd::Uid::from_raw(0));
        chown(dir.path(), nobody());
        let e = check_executable(&program).unwrap_err().to_string();
        assert_says(&e, &["owner nobody", "mode 0755"]);
    }

    #[test]
    fn a_symlink_to_a_program_is_checked_where_it_leads_and_by_its_owner() {
        if !machine::is_root() {
            return;
        }
        let (dir, bin) = tool();
        let link = dir.path().join("link");
        symlink(&bin, &link).unwrap();
        check_executable(&link.to_string_lossy()).unwrap();
        // The target's directory is writable by others: the link leads there.
        let (other, target) = tool();
        chmod(other.path(), 0o777);
        let bad = dir.path().join("bad");
        symlink(&target, &bad).unwrap();
        let e = check_executable(&bad.to_string_lossy())
            .unwrap_err()
            .to_string();
        assert!(e.contains(&other.path().display().to_string()), "{e}");
        // A link another user owns could be replaced by them.
        chown(&link, nobody());
        let e = check_executable(&link.to_string_lossy())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a symlink another user owns"), "{e}");
    }

    #[test]
    fn a_state_directory_behind_a_symlink_another_user_planted_is_refused() {
        let Some(dir) = scratch_as_root() else {
            return;
        };
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let state = dir.path().join("state");
        symlink(&real, &state).unwrap();
        check_state_dir("the state directory", &state.join("db")).unwrap();
        chown(&state, nobody());
        let e = check_state_dir("the state directory", &state.join("db"))
            .unwrap_err()
            .to_string();
        let refusing = format!(
            "refusing the state directory {}",
            state.join("db").display()
        );
        let planted = format!(
            "{} is a symlink another user owns (owner nobody",
            state.display()
        );
        assert_says(&e, &[&refusing, &planted]);
    }

    #[test]
    fn a_qmp_socket_of_another_user_is_refused_unless_the_plan_names_them() {
        let Some(dir) = scratch_as_root() else {
            return;
        };
        let socket = dir.path().join("qmp.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        check_socket_owner(&socket, None).unwrap();
        chown(&socket, nobody());
        let e = check_socket_owner(&socket, None).unwrap_err().to_string();
        let refusing = format!(
            "refusing the QMP socket {0}: {0} is not owned by root (owner nobody",
            socket.display()
        );
        assert_says(&e, &[&refusing, "qmp_owner = \"nobody\""]);
        check_socket_owner(&socket, Some("nobody")).unwrap();
        let e = check_socket_owner(&socket, Some("root")).unwrap_err();
        assert!(e.to_string().contains("the plan's qmp_owner"), "{e}");
        let e = check_socket_owner(&socket, Some("kup-no-such-user")).unwrap_err();
        assert!(e.to_string().contains("no such user"), "{e}");
    }
}
