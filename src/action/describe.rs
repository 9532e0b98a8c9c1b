//! How actions read to people: one line each, the exact argv, QMP message or syscall, as the dry-run prints them.

use super::migration::describe_save;
use super::quote::shell_words;
use super::{
    Action, BindPci, MigrationMemory, MigrationSetup, MigrationSide, PID_PLACEHOLDER,
    RAM_DIGEST_PAGES, RebootMode,
};
use serde_json::json;

impl Action {
    // Long by design: one arm per action kind, each one line of output.
    /// One line for people: the argv, the QMP JSON or the syscall with its arguments.
    pub fn describe(&self) -> String {
        match self {
            Action::Exec { argv, timeout_ms } => {
                format!("exec {} (timeout {} ms)", shell_words(argv), timeout_ms)
            }
            Action::Qmp {
                socket,
                command,
                args,
                file_uri,
            } => {
                let line = format!("qmp {} {}", socket.display(), qmp_message(command, args));
                match file_uri {
                    Some(path) => format!("{line} (uri file:{} on QEMU >= 8.2)", path.display()),
                    None => line,
                }
            }
            Action::QmpWait(w) => format!(
                "qmp {} {} until {} = {:?} (asked again on each QEMU event, else polled; timeout {} ms)",
                w.socket.display(),
                qmp_message(&w.command, &json!({})),
                w.field,
                w.until,
                w.timeout_ms
            ),
            Action::WaitForSocket { path, timeout_ms } => {
                format!(
                    "wait for socket {} (timeout {timeout_ms} ms)",
                    path.display()
                )
            }
            Action::KexecFileLoad {
                kernel,
                initrd,
                cmdline,
            } => match initrd {
                Some(initrd) => format!(
                    "kexec_file_load(kernel={}, initrd={}, cmdline={cmdline:?}, flags=0)",
                    kernel.display(),
                    initrd.display()
                ),
                None => format!(
                    "kexec_file_load(kernel={}, initrd=-1, cmdline={cmdline:?}, flags=KEXEC_FILE_NO_INITRAMFS)",
                    kernel.display()
                ),
            },
            Action::KexecUnload => "kexec_file_load(-1, -1, \"\", flags=KEXEC_FILE_UNLOAD)".into(),
            Action::Reboot(RebootMode::Kexec) => {
                "reboot(LINUX_REBOOT_CMD_KEXEC), or `systemctl kexec` when systemd is PID 1".into()
            }
            Action::Reboot(RebootMode::SystemdKexec) => "systemctl kexec".into(),
            Action::Reboot(RebootMode::DirectKexec) => {
                "sync(); reboot(LINUX_REBOOT_CMD_KEXEC)".into()
            }
            Action::Sync => "sync()".into(),
            Action::Preflush {
                sockets,
                dirs,
                budget_ms,
            } if sockets.is_empty() => format!(
                "syncfs the file systems of {} while nothing is down yet (no shared-RAM guest; budget {budget_ms} ms)",
                list(dirs)
            ),
            Action::Preflush {
                sockets,
                dirs,
                budget_ms,
            } => format!(
                "write back the RAM files of the guests behind {} (fdatasync, DAX skipped) while they run, repeated \
                 while a pass gets shorter, no new pass after {budget_ms} ms; then syncfs the file systems of those \
                 files and of {}",
                list(sockets),
                list(dirs)
            ),
            Action::SyncFs { ram_records, dirs } if ram_records.is_empty() => {
                format!("syncfs the file systems of {}", list(dirs))
            }
            Action::SyncFs { ram_records, dirs } => format!(
                "syncfs the file systems of the RAM files named in {} (DAX skipped) and of {}",
                list(ram_records),
                list(dirs)
            ),
            Action::CheckKexecEnabled => {
                "check kexec is enabled (sysctl kernel.kexec_load_disabled = 0)".into()
            }
            Action::CheckKernelImage { path, release } => match release {
                Some(release) => {
                    format!("check {} is a bzImage of release {release}", path.display())
                }
                None => format!("check {} is a bzImage", path.display()),
            },
            Action::CheckTargetKernel {
                image,
                release,
                initrd,
                ..
            } => {
                let release = release
                    .clone()
                    .unwrap_or_else(|| format!("the release of {}", image.display()));
                let initrd = initrd
                    .as_ref()
                    .map(|i| format!(", {} built for it", i.display()))
                    .unwrap_or_default();
                format!(
                    "check the new kernel: /lib/modules/{release} installed{initrd}, its config has what the \
                     command line relies on; lint the command line for it"
                )
            }
            Action::CheckFile { path, sha256 } => match sha256 {
                Some(sum) => format!("check {} has sha256 {sum}", path.display()),
                None => format!("check {} exists", path.display()),
            },
            Action::CheckHostname { globs } => {
                format!("check host name matches {}", globs.join(" or "))
            }
            Action::Criu {
                argv,
                pidfile,
                timeout_ms,
            } => format!(
                "exec {} ({PID_PLACEHOLDER} from {}; timeout {timeout_ms} ms)",
                shell_words(argv),
                pidfile.display()
            ),
            Action::CommitFile { from, to } => format!(
                "fsync {}, rename it to {} (an existing one is kept as {}.kept-N), fsync the directory",
                from.display(),
                to.display(),
                to.display()
            ),
            Action::KeepAside { path } => format!(
                "move {} aside to {}.kept-N (the first free N) if it exists",
                path.display(),
                path.display()
            ),
            Action::CheckSharedRam { socket, cmdline } => format!(
                "qmp {} query-memdev: guest RAM is a share=on memory-backend-file on a file system that survives kexec{}",
                socket.display(),
                if cmdline.is_some() {
                    "; on a pmem device, every memmap=SIZE!OFFSET of /proc/cmdline is in the new command line"
                } else {
                    ""
                }
            ),
            Action::RecordRamDigest { socket, record } => format!(
                "qmp {} qom-get mem-path of each RAM backend: sha256 of its size and of {RAM_DIGEST_PAGES} \
                 evenly spread pages plus the first and the last, written durably to {}",
                socket.display(),
                record.display()
            ),
            Action::CheckRamDigest { record, state } => format!(
                "check each RAM file named in {} has the recorded size and sha256 of its sampled pages, before \
                 any QEMU is ended or started; otherwise refuse, keeping {}",
                record.display(),
                state.display()
            ),
            Action::QmpQuit { socket, timeout_ms } => format!(
                "qmp {} {} if a QEMU still answers there and its guest is not running; wait for it to close the socket (timeout {timeout_ms} ms), not for it to exit",
                socket.display(),
                qmp_message("quit", &json!({}))
            ),
            Action::QmpPowerdown { socket, timeout_ms } => format!(
                "qmp {} {} (the ACPI power button); wait up to {timeout_ms} ms for QEMU to exit, then {} and wait for it to close the socket",
                socket.display(),
                qmp_message("system_powerdown", &json!({})),
                qmp_message("quit", &json!({}))
            ),
            Action::CheckPci {
                address,
                driver,
                iommu,
            } => format!(
                "check /sys/bus/pci/devices/{address}: driver is {driver:?}{}",
                if *iommu { ", in an IOMMU group" } else { "" }
            ),
            Action::BindPci(bind) => describe_bind(bind),
            Action::CheckOutput {
                argv,
                expect,
                timeout_ms,
            } => format!(
                "exec {} expect output {} (timeout {timeout_ms} ms)",
                shell_words(argv),
                expect
                    .iter()
                    .map(|e| format!("{e:?}"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
            Action::CheckExecutables { programs } => format!(
                "check that only root can change the programs run: {}",
                programs.join(", ")
            ),
            Action::CheckSocketOwner { socket, owner } => format!(
                "check that {} is owned by {}",
                socket.display(),
                match owner {
                    Some(user) => format!("root or {user}"),
                    None => "root".to_owned(),
                }
            ),
            Action::EnsureDir { path } => {
                format!("create directory {} unless it exists", path.display())
            }
            Action::RemoveFile { path } => format!("remove {}", path.display()),
            Action::WriteFile { path, contents } => {
                format!("write {} with {:?}", path.display(), contents)
            }
            Action::MigrationSetup(MigrationSetup {
                socket,
                side,
                memory,
                channels,
                max_bandwidth,
                state,
                record,
            }) => {
                let asks = "query-version, query-migrate-capabilities, query-migrate-parameters";
                let ram = match memory {
                    MigrationMemory::Shared => "shared",
                    MigrationMemory::Copy => "copied",
                };
                match side {
                    MigrationSide::Save => {
                        let dir = state
                            .parent()
                            .map(|d| d.display().to_string())
                            .unwrap_or_default();
                        let mut text = format!(
                            "qmp {} migration setup for the save ({ram} RAM): {asks}; set what this QEMU's version \
                             offers, and record it durably in {}:",
                            socket.display(),
                            record.display()
                        );
                        for line in describe_save(*memory, *channels, *max_bandwidth, &dir) {
                            text.push_str("\n       ");
                            text.push_str(&line);
                        }
                        text
                    }
                    MigrationSide::Undo => format!(
                        "qmp {} set back what the save's migration setup changed, as {} recorded it: the \
                         capabilities it turned on off again, the parameters and mode to their earlier values \
                         (migrate-set-capabilities, migrate-set-parameters); nothing without a record",
                        socket.display(),
                        record.display()
                    ),
                    MigrationSide::Restore => format!(
                        "qmp {} migration setup for the restore ({ram} RAM): {asks}; read {} and set exactly the \
                         save's mode, capabilities and parameters (same commands, same order); refuse, naming both \
                         QEMUs, when this one lacks any; without a record, what kup set before records existed \
                         (x-ignore-shared for shared RAM)",
                        socket.display(),
                        record.display()
                    ),
                }
            }
            Action::CheckMigratable { socket, memory } => format!(
                "qmp {} {}: no blocked-reasons (a device or feature QEMU cannot migrate){}",
                socket.display(),
                qmp_message("query-migrate", &json!({})),
                match memory {
                    MigrationMemory::Shared => {
                        ", asked in mode cpr-reboot on QEMU >= 8.2 (the mode set back afterwards)"
                    }
                    MigrationMemory::Copy => "",
                }
            ),
            Action::CheckLivepatchSupport => {
                "check that the running kernel can be live-patched (/sys/kernel/livepatch)".into()
            }
            Action::CheckLivepatchModule { path, name } => format!(
                "check live patch module {}: livepatch=Y, name {name}, vermagic release = uname -r, not loaded, \
                 signature as lockdown and module.sig_enforce require",
                path.display()
            ),
            Action::LoadModule { path } => {
                format!("finit_module(fd of {}, \"\", 0)", path.display())
            }
            Action::WaitLivepatchTransition { name, timeout_ms } => format!(
                "wait until /sys/kernel/livepatch/{name}/transition = 0, then check enabled = 1 (timeout \
                 {timeout_ms} ms)"
            ),
            Action::CheckLivepatch { name, loaded: true } => {
                format!("check /sys/kernel/livepatch/{name}: enabled = 1, transition = 0")
            }
            Action::CheckLivepatch {
                name,
                loaded: false,
            } => format!(
                "check that live patch {name} is gone: no /sys/kernel/livepatch/{name}, no /sys/module/{name}"
            ),
            Action::DisableLivepatch { name, timeout_ms } => format!(
                "echo 0 > /sys/kernel/livepatch/{name}/enabled, wait until the patch is gone (timeout \
                 {timeout_ms} ms)"
            ),
            Action::UnloadModule { name, timeout_ms } => format!(
                "delete_module({name:?}, O_NONBLOCK), retried while busy (timeout {timeout_ms} ms)"
            ),
        }
    }
}

/// The exact sysfs writes of a [`Action::BindPci`], one per line, in the order they are made.
/// Paths as a comma-separated list.
fn list(paths: &[std::path::PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

fn describe_bind(bind: &BindPci) -> String {
    let (address, driver, timeout_ms) = (&bind.address, &bind.driver, bind.timeout_ms);
    // Each path is spelt out inside its line, never a string of its own: outside `host`, tests/architecture.rs
    // allows no string that starts with a sysfs path.
    let mut lines = vec![
        format!(
            "bind PCI device {address} to {driver:?}; nothing is written when its driver is {driver:?} already:"
        ),
        format!(
            "if /sys/bus/pci/drivers/{driver} is missing: exec {} (timeout {timeout_ms} ms)",
            shell_words(&bind.load)
        ),
        format!("echo {driver} > /sys/bus/pci/devices/{address}/driver_override"),
        format!(
            "echo {address} > /sys/bus/pci/devices/{address}/driver/unbind (only when bound to another driver)"
        ),
        format!("echo {address} > /sys/bus/pci/drivers_probe"),
        format!(
            "wait until /sys/bus/pci/devices/{address}/driver names {driver} (timeout {timeout_ms} ms)"
        ),
    ];
    if bind.iommu {
        let except = if bind.peers.is_empty() {
            String::new()
        } else {
            format!(
                " ({} excepted: their own steps bind them)",
                bind.peers.join(", ")
            )
        };
        lines.push(format!(
            "check its IOMMU group: /sys/bus/pci/devices/{address}/iommu_group exists, so does \
             /dev/vfio/GROUP, and every other device of the group is bound to vfio-pci, pci-stub or pcieport, \
             or to no driver{except}"
        ));
    }
    lines.join("\n       ")
}

/// The QMP message as it goes on the wire, `execute` first as in QEMU's documentation.
pub(crate) fn qmp_message(command: &str, args: &serde_json::Value) -> String {
    let command = serde_json::Value::from(command);
    if args.as_object().is_some_and(|o| o.is_empty()) {
        format!("{{\"execute\":{command}}}")
    } else {
        format!("{{\"execute\":{command},\"arguments\":{args}}}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qmp_messages_read_like_the_wire() {
        assert_eq!(qmp_message("stop", &json!({})), r#"{"execute":"stop"}"#);
        assert_eq!(
            qmp_message("migrate", &json!({"uri": "exec:cat > /x"})),
            r#"{"execute":"migrate","arguments":{"uri":"exec:cat > /x"}}"#
        );
    }
}
