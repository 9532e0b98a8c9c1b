//! What root runs and writes cannot be changed by another user: programs (hooks, custom steps, restart commands,
//! CRIU) another user owns or may write are refused at preflight and again right before they start, a journal
//! behind another user's symlink is refused, a state directory likewise, and no argv ever goes through a shell.
//! These tests run as root (they `chown` files to `nobody`); run unprivileged they check nothing and say so.

mod support;

use kup::action::{Action, ActionOutput};
use kup::host::{Host, RealHost};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use support::Kup;

fn root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("not root: the trust checks apply to root only, nothing to test");
    }
    root
}

fn nobody() -> u32 {
    nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a user nobody")
        .uid
        .as_raw()
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        std::fs::create_dir(dir.path().join("bin")).unwrap();
        chmod(&dir.path().join("bin"), 0o755);
        std::fs::write(dir.path().join("vmlinuz"), b"not really a kernel").unwrap();
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// An executable in `bin/` that appends its argv, one argument a line, to `log`.
    fn tool(&self, name: &str) -> PathBuf {
        let path = self.path("bin").join(name);
        std::fs::write(
            &path,
            format!(
                "#!/bin/sh\nfor a in \"$0\" \"$@\"; do printf '%s\\n' \"$a\"; done >> {}\n",
                self.path("log").display()
            ),
        )
        .unwrap();
        chmod(&path, 0o755);
        path
    }

    fn log(&self) -> Vec<String> {
        support::lines_of(&self.path("log"))
    }

    fn plan(&self, steps: &str) -> PathBuf {
        let plan = self.path("plan.toml");
        std::fs::write(
            &plan,
            format!(
                "kup = 1\n\n[kernel]\nimage = \"{}\"\n\n{steps}\n[policy]\njournal = \"{}\"\n",
                self.path("vmlinuz").display(),
                self.path("journal").display()
            ),
        )
        .unwrap();
        chmod(&plan, 0o600);
        plan
    }

    fn rehearse(&self, plan: &Path) -> Kup {
        Kup::new()
            .args(["plan", "apply", "--rehearse", "--no-kernel-load", "--yes"])
            .arg(plan)
    }
}

/// A TOML array of strings.
fn argv(items: &[&str]) -> String {
    let quoted: Vec<String> = items
        .iter()
        .map(|s| serde_json::to_string(s).unwrap())
        .collect();
    format!("[{}]", quoted.join(", "))
}

#[test]
fn a_program_another_user_owns_or_may_write_is_refused_at_preflight() {
    if !root() {
        return;
    }
    let f = Fixture::new();
    let first = f.tool("first");
    let hook = f.tool("hook");
    let plan = f.plan(&format!(
        "[[step]]\nname = \"first\"\nrun = {}\nbefore = [\"kexec\"]\n\n[[step]]\nname = \"hook\"\nrun = {}\nafter = [\"step:first\"]\nbefore = [\"kexec\"]\n",
        argv(&[&first.to_string_lossy()]),
        argv(&[&hook.to_string_lossy()]),
    ));
    // Owned by another user: refused before any step ran.
    std::os::unix::fs::chown(&hook, Some(nobody()), None).unwrap();
    let run = f.rehearse(&plan).run().status(5);
    let expected = format!(
        "refusing to run {0}: {0} is owned by another user than root or kup's (owner nobody, mode 0755)",
        hook.display()
    );
    run.stderr_has(&expected);
    assert!(f.log().is_empty(), "a step ran: {:?}", f.log());
    std::os::unix::fs::chown(&hook, Some(0), None).unwrap();

    // Its directory writable by group: the same.
    chmod(&f.path("bin"), 0o775);
    f.rehearse(&plan).run().status(5).stderr_has(format!(
        "refusing to run {}: {} is writable by group or others (owner root, mode 0775)",
        first.display(),
        f.path("bin").display()
    ));
    assert!(f.log().is_empty(), "a step ran: {:?}", f.log());
    chmod(&f.path("bin"), 0o755);

    f.rehearse(&plan).run().success();
    assert_eq!(
        f.log(),
        [first.display().to_string(), hook.display().to_string()]
    );
}

#[test]
fn a_program_made_replaceable_after_the_preflight_is_refused_right_before_it_starts() {
    if !root() {
        return;
    }
    let f = Fixture::new();
    let hook = f.tool("hook");
    let undo = f.path("undo-ran");
    // The first step loosens the directory of the second's program, after the preflight found it fine.
    let plan = f.plan(&format!(
        "[[step]]\nname = \"loosen\"\nrun = {}\nundo = {}\nbefore = [\"kexec\"]\n\n[[step]]\nname = \"hook\"\nrun = {}\nafter = [\"step:loosen\"]\nbefore = [\"kexec\"]\n",
        argv(&["/bin/chmod", "0777", &f.path("bin").to_string_lossy()]),
        argv(&["/usr/bin/touch", &undo.to_string_lossy()]),
        argv(&[&hook.to_string_lossy()]),
    ));
    let run = f.rehearse(&plan).run().status(5);
    run.stderr_has(format!(
        "refusing to run {}: {} is writable by group or others (owner root, mode 0777)",
        hook.display(),
        f.path("bin").display()
    ));
    assert!(f.log().is_empty(), "the hook ran: {:?}", f.log());
    assert!(undo.exists(), "the first step was not undone");
}

#[test]
fn a_journal_behind_a_symlink_another_user_planted_is_refused() {
    if !root() {
        return;
    }
    let f = Fixture::new();
    let hook = f.tool("hook");
    std::fs::create_dir(f.path("elsewhere")).unwrap();
    chmod(&f.path("elsewhere"), 0o700);
    std::os::unix::fs::symlink(f.path("elsewhere"), f.path("journal")).unwrap();
    std::os::unix::fs::lchown(f.path("journal"), Some(nobody()), None).unwrap();
    let plan = f.plan(&format!(
        "[[step]]\nname = \"hook\"\nrun = {}\nbefore = [\"kexec\"]\n",
        argv(&[&hook.to_string_lossy()]),
    ));
    f.rehearse(&plan).run().status(3).stderr_has(format!(
        "refusing the journal directory {0}: {0} is a symlink another user owns (owner nobody",
        f.path("journal").display()
    ));
    Kup::new()
        .args(["plan", "resume", "--journal"])
        .arg(f.path("journal"))
        .run()
        .status(3)
        .stderr_has("is a symlink another user owns");
    assert!(f.log().is_empty());
    assert_eq!(std::fs::read_dir(f.path("elsewhere")).unwrap().count(), 0);
    // Root's own symlink is the administrator's choice.
    std::os::unix::fs::lchown(f.path("journal"), Some(0), None).unwrap();
    f.rehearse(&plan).run().success();
    assert_eq!(f.log(), [hook.display().to_string()]);
    assert_eq!(
        std::fs::read_dir(f.path("elsewhere")).unwrap().count(),
        2,
        "lock and the apply"
    );
}

#[test]
fn a_state_directory_behind_another_users_symlink_is_not_created_or_written() {
    if !root() {
        return;
    }
    let f = Fixture::new();
    std::fs::create_dir(f.path("theirs")).unwrap();
    std::os::unix::fs::symlink(f.path("theirs"), f.path("state")).unwrap();
    std::os::unix::fs::lchown(f.path("state"), Some(nobody()), None).unwrap();
    let dir = f.path("state/db-1");
    for action in [
        Action::EnsureDir { path: dir.clone() },
        Action::KeepAside {
            path: dir.join("vmstate"),
        },
    ] {
        let e = RealHost.perform(&[action]).unwrap_err().message;
        assert!(
            e.contains(&format!(
                "{} is a symlink another user owns (owner nobody",
                f.path("state").display()
            )),
            "{e}"
        );
    }
    assert_eq!(std::fs::read_dir(f.path("theirs")).unwrap().count(), 0);
    // A state directory another user may write is refused too, even when kup did not create it.
    std::fs::remove_file(f.path("state")).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    chmod(&dir, 0o777);
    let e = RealHost
        .perform(&[Action::EnsureDir { path: dir.clone() }])
        .unwrap_err()
        .message;
    assert!(
        e.contains("is writable by group or others") && e.contains("mode 0777"),
        "{e}"
    );
}

/// Every action kind that starts a program, with an argv\[0\] and arguments full of shell metacharacters: the
/// program receives them verbatim and none of them is interpreted.
#[test]
fn argv_never_goes_through_a_shell_for_any_action_kind() {
    let f = Fixture::new();
    let marker = f.path("pwned");
    // argv[0] cannot hold a `/`: its commands would write `pwned` in the working directory.
    let tool = f.tool("t;touch pwned|$(touch pwned)`touch pwned`&>pwned");
    let here = std::env::current_dir().unwrap().join("pwned");
    let program = tool.to_string_lossy().into_owned();
    let args = [
        format!("; touch {}", marker.display()),
        format!("$(touch {})", marker.display()),
        format!(
            "`touch {}` && touch {} || x",
            marker.display(),
            marker.display()
        ),
        "*".to_owned(),
        "'\"".to_owned(),
    ];
    let argv: Vec<String> = std::iter::once(program.clone())
        .chain(args.iter().cloned())
        .collect();
    let pidfile = f.path("app.pid");
    std::fs::write(&pidfile, "4242\n").unwrap();
    let mut criu_argv = argv.clone();
    criu_argv.push("{pid}".to_owned());
    let actions = [
        // Custom steps, hooks, restart commands, systemd and virsh calls.
        Action::Exec {
            argv: argv.clone(),
            timeout_ms: 10_000,
        },
        Action::Criu {
            argv: criu_argv,
            pidfile,
            timeout_ms: 10_000,
        },
        Action::CheckOutput {
            argv: argv.clone(),
            expect: vec![String::new()],
            timeout_ms: 10_000,
        },
    ];
    for action in actions {
        std::fs::remove_file(f.path("log")).ok();
        let out = RealHost.perform(std::slice::from_ref(&action)).unwrap();
        assert!(!matches!(out[0], ActionOutput::None), "{out:?}");
        let mut expected = argv.clone();
        if matches!(action, Action::Criu { .. }) {
            expected.push("4242".to_owned());
        }
        assert_eq!(f.log(), expected, "{action:?}");
        assert!(
            !marker.exists() && !here.exists(),
            "a shell ran for {action:?}"
        );
    }
    // The same through the whole command: a custom step of a rehearsal.
    std::fs::remove_file(f.path("log")).ok();
    let plan = f.plan(&format!(
        "[[step]]\nname = \"odd\"\nrun = {}\nbefore = [\"kexec\"]\n",
        serde_json::to_string(&argv).unwrap()
    ));
    f.rehearse(&plan).current_dir(f.dir.path()).run().success();
    assert_eq!(f.log(), argv);
    assert!(!marker.exists() && !here.exists());
}

/// The isolate's drop-in: written 0644 in a directory created for it, replaced whole, removed again; refused in a
/// directory another user may write (they could swap what systemd loads).
#[test]
fn a_drop_in_is_written_where_only_root_may_write_and_removed_again() {
    let f = Fixture::new();
    let path = f.path("system/qemu@db-1.service.d/kup-keep-on-isolate.conf");
    let write = |contents: &str| Action::WriteFile {
        path: path.clone(),
        contents: contents.to_owned(),
    };
    RealHost
        .perform(&[write("old\n"), write("[Unit]\nIgnoreOnIsolate=yes\n")])
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "[Unit]\nIgnoreOnIsolate=yes\n"
    );
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    RealHost
        .perform(&[Action::RemoveFile { path: path.clone() }])
        .unwrap();
    assert!(!path.exists());
    // Gone already (a real kexec emptied /run): nothing to do, no error.
    RealHost
        .perform(&[Action::RemoveFile { path: path.clone() }])
        .unwrap();
    if !root() {
        return;
    }
    chmod(path.parent().unwrap(), 0o777);
    let e = RealHost.perform(&[write("x\n")]).unwrap_err().message;
    assert!(e.contains("is writable by group or others"), "{e}");
    assert!(!path.exists());
}
