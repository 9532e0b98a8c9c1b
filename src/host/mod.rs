//! The only module with side effects on the host: syscalls, processes, sockets, procfs and sysfs, the journal's
//! file primitives and the systemd units kup writes. Everything else in kup is data and decisions about data, so
//! that a dry run and code review see exactly what this module will be asked to do. It imports the action
//! vocabulary and nothing of the plan or the graph: it performs what it is told.

pub(crate) mod discover;
pub(crate) mod error;
pub(crate) mod files;
mod flush;
pub(crate) mod journal_files;
pub mod kernel_file;
pub(crate) mod kexec;
pub(crate) mod kmsg;
pub mod livepatch;
pub mod machine;
pub mod migration;
pub mod pci_bind;
mod perform;
pub(crate) mod process;
pub mod qmp;
mod qmp_wait;
mod ram_backing;
mod ram_digest;
pub mod sysfs;
pub(crate) mod systemd;
mod target;
pub(crate) mod trust;
pub(crate) mod vm;

pub use error::HostError;
pub use sysfs::SysfsRoot;

use crate::action::{Action, ActionFailure, ActionOutput};
use std::collections::HashMap;
use std::path::PathBuf;

/// Which kernel and boot this is: recorded at the kexec so that `resume` can prove the kexec happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootIdentity {
    /// `/proc/sys/kernel/random/boot_id`: new at every boot, kexec included.
    pub(crate) boot_id: String,
    /// `uname -r`.
    pub(crate) release: String,
}

/// Performs actions. The engine owns ordering, journaling and rollback; a `Host` only does what it is told, so the
/// engine can be exercised with a recording host and fault injection.
pub trait Host: Sync {
    /// Performs one step's actions in order, sharing connections between them (a QMP session per socket), and stops
    /// at the first failure.
    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure>;

    /// The running boot's identity, as the kexec record keeps it.
    fn identity(&self) -> Result<BootIdentity, HostError> {
        machine::identity()
    }
}

/// The machine kup runs on, sysfs and procfs read where they are mounted.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

/// The machine kup runs on, with sysfs and procfs paths read under another root: tests point it at a fake sysfs
/// tree; everything else (processes, sockets, files named by the plan) is real.
#[derive(Debug, Default, Clone)]
pub struct RealHostAt {
    /// Where `/sys` is.
    pub(crate) sysfs: SysfsRoot,
}

impl RealHostAt {
    /// A host whose sysfs is under `sysfs`.
    pub fn new(sysfs: SysfsRoot) -> Self {
        Self { sysfs }
    }
}

impl Host for RealHost {
    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
        RealHostAt::default().perform(actions)
    }
}

impl Host for RealHostAt {
    fn perform(&self, actions: &[Action]) -> Result<Vec<ActionOutput>, ActionFailure> {
        let mut sessions: HashMap<PathBuf, qmp::QmpClient> = HashMap::new();
        let mut outputs = Vec::with_capacity(actions.len());
        for (index, action) in actions.iter().enumerate() {
            match perform::one(action, &mut sessions, &self.sysfs) {
                Ok(output) => outputs.push(output),
                Err(e) => {
                    return Err(ActionFailure {
                        index,
                        message: e.to_string(),
                        done: outputs,
                    });
                }
            }
        }
        Ok(outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;
    use std::path::Path;
    use std::sync::mpsc;

    /// A fake QEMU of `version` that answers every command with `{"return": {}}` and reports what it received.
    fn fake_qemu(version: (u64, u64)) -> (tempfile::TempDir, PathBuf, mpsc::Receiver<Value>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let greeting = json!({"QMP": {"version": {"qemu": {"major": version.0, "minor": version.1, "micro": 0}}}});
            writeln!(stream, "{greeting}").unwrap();
            let reader = BufReader::new(stream.try_clone().unwrap());
            for line in reader.lines() {
                let Ok(line) = line else { return };
                let _ = tx.send(serde_json::from_str::<Value>(&line).unwrap_or(Value::Null));
                writeln!(stream, "{{\"return\": {{}}}}").unwrap();
            }
        });
        (dir, path, rx)
    }

    fn migrate(socket: &Path, state: &Path) -> Action {
        Action::Qmp {
            socket: socket.to_owned(),
            command: "migrate".into(),
            args: json!({ "uri": format!("exec:cat > {}", state.display()) }),
            file_uri: Some(state.to_owned()),
        }
    }

    #[test]
    fn the_state_file_uri_follows_the_qemu_version() {
        for (version, expected) in [
            ((7, 2), "exec:cat > /var/lib/kup/s/vmstate.partial"),
            ((8, 2), "file:/var/lib/kup/s/vmstate.partial"),
        ] {
            let (_dir, socket, received) = fake_qemu(version);
            let out = RealHost
                .perform(&[migrate(
                    &socket,
                    Path::new("/var/lib/kup/s/vmstate.partial"),
                )])
                .unwrap();
            // After the check for a migration left by a kup that died (`query-migrate`: none).
            let sent = received.recv().unwrap();
            assert_eq!(sent["execute"], "query-migrate");
            let sent = received.recv().unwrap();
            assert_eq!(sent["execute"], "migrate");
            assert_eq!(sent["arguments"]["uri"], expected, "QEMU {version:?}");
            assert!(
                matches!(&out[0], ActionOutput::Migration { uri, .. } if uri == expected),
                "{:?}",
                out[0]
            );
        }
    }

    #[test]
    fn an_incoming_migration_without_its_state_file_fails_before_qemu_sees_it() {
        let (_dir, socket, received) = fake_qemu((7, 2));
        let missing = Path::new("/nonexistent/kup/vmstate");
        let action = Action::Qmp {
            socket: socket.clone(),
            command: "migrate-incoming".into(),
            args: json!({ "uri": "exec:cat /nonexistent/kup/vmstate" }),
            file_uri: Some(missing.to_owned()),
        };
        let failure = RealHost.perform(&[action]).unwrap_err();
        assert!(
            failure
                .message
                .contains("state file /nonexistent/kup/vmstate"),
            "{}",
            failure.message
        );
        assert!(received.try_recv().is_err(), "nothing was sent to QEMU");
    }
}
