//! Loading, unloading and starting a kexec kernel through `kexec_file_load(2)` and `reboot(2)`; turning the
//! kernel's terse refusals into a cause and a fix an operator can act on at 3 a.m. is [`refusal`]'s job.
//!
//! This is the one module in kup allowed `unsafe`: `kexec_file_load` has no safe wrapper in libc or nix, so it is
//! called through `libc::syscall`. Every `unsafe` block carries a `// SAFETY:` comment, enforced by clippy below.
//!
//! Why the refusals need interpreting: the kernel answers EPERM for four unrelated reasons (not root, no
//! CAP_SYS_BOOT, `kernel.kexec_load_disabled`, lockdown with an image it cannot verify), and the fix differs for
//! each. [`diagnose`] tells them apart from [`HostFacts`] gathered after the failure; it is pure so that every
//! branch is unit-tested without calling the syscall.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod refusal;

pub(crate) use refusal::*;

use nix::errno::Errno;
use std::convert::Infallible;
use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

/// x86's COMMAND_LINE_SIZE: the kernel's buffer for its command line, NUL included.
pub(crate) const COMMAND_LINE_SIZE: usize = 2048;

/// Room the x86-64 kexec_file_load loader keeps free in every command line for the `elfcorehdr=0x…` it appends
/// for crash kernels (MAX_ELFCOREHDR_STR_LEN in arch/x86/kernel/kexec-bzimage64.c); it reserves it for normal
/// loads too, and answers EINVAL when it does not fit.
pub(crate) const ELFCOREHDR_RESERVE: usize = 30;

/// Load without an initrd; the initrd fd is then ignored (include/uapi/linux/kexec.h).
const KEXEC_FILE_NO_INITRAMFS: libc::c_ulong = 0x4;
/// Unload the loaded kernel; both fds and the command line are ignored.
const KEXEC_FILE_UNLOAD: libc::c_ulong = 0x1;

const KEXEC_LOADED: &[&str] = &["/sys/kernel/kexec_loaded", "/sys/kernel/kexec/loaded"];
const KEXEC_LOAD_DISABLED: &str = "/proc/sys/kernel/kexec_load_disabled";
const LOCKDOWN: &str = "/sys/kernel/security/lockdown";

impl HostFacts {
    /// Reads the facts from this host. Only reads: /proc/self/status, /proc/sys and securityfs.
    pub(crate) fn probe() -> HostFacts {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        HostFacts {
            euid: nix::unistd::geteuid().as_raw(),
            cap_sys_boot: read("/proc/self/status").and_then(|s| parse_cap_sys_boot(&s)),
            kexec_load_disabled: read(KEXEC_LOAD_DISABLED).and_then(|s| parse_flag(&s)),
            lockdown: read(LOCKDOWN).and_then(|s| parse_lockdown(&s)),
        }
    }
}

/// The longest command line, NUL excluded, that x86-64 `kexec_file_load` accepts for a kernel whose setup header
/// says `cmdline_size` (COMMAND_LINE_SIZE − 1 when unknown): the loader needs `len + 1 + 30 <= cmdline_size`.
pub(crate) fn max_cmdline_len(cmdline_size: Option<u32>) -> usize {
    let size = cmdline_size.map_or(COMMAND_LINE_SIZE - 1, |size| size as usize);
    size.saturating_sub(ELFCOREHDR_RESERVE + 1)
}

/// The command line as the syscall wants it (NUL-terminated), or why the kernel would refuse it.
pub(crate) fn prepare_cmdline(
    cmdline: &str,
    cmdline_size: Option<u32>,
) -> Result<CString, KexecError> {
    let limit = max_cmdline_len(cmdline_size);
    if cmdline.len() > limit {
        return Err(KexecError::CmdlineTooLong {
            len: cmdline.len(),
            limit,
        });
    }
    CString::new(cmdline).map_err(|e| KexecError::CmdlineContainsNul {
        position: e.nul_position(),
    })
}

fn open(role: ImageRole, path: &Path) -> Result<File, KexecError> {
    File::open(path).map_err(|source| KexecError::OpenImage {
        role,
        path: path.to_owned(),
        source,
    })
}

/// Loads `kernel` (and `initrd`) with `cmdline` for a later kexec, replacing any kernel loaded before. The kernel
/// verifies the image's signature when lockdown or KEXEC_SIG_FORCE demands it.
pub(crate) fn load_file(
    kernel: &Path,
    initrd: Option<&Path>,
    cmdline: &str,
) -> Result<(), KexecError> {
    // The exact limit comes from the new kernel's own header; a file that is no bzImage is left for the kernel to
    // refuse (ENOEXEC), which explains it better than a length check could.
    let cmdline_size = super::kernel_file::read_image(kernel)
        .ok()
        .and_then(|image| image.cmdline_size());
    let cmdline = prepare_cmdline(cmdline, cmdline_size)?;
    let kernel_file = open(ImageRole::Kernel, kernel)?;
    let initrd_file = initrd
        .map(|path| open(ImageRole::Initrd, path))
        .transpose()?;
    let (initrd_fd, flags) = match &initrd_file {
        Some(file) => (file.as_raw_fd(), 0),
        None => (-1, KEXEC_FILE_NO_INITRAMFS),
    };
    let cmdline_len = cmdline.as_bytes_with_nul().len() as libc::c_ulong;
    // SAFETY: kexec_file_load(int kernel_fd, int initrd_fd, unsigned long cmdline_len, const char *cmdline,
    // unsigned long flags). The fds belong to files that stay open until after the call (`kernel_file`,
    // `initrd_file` live to the end of this function), or initrd_fd is -1 with KEXEC_FILE_NO_INITRAMFS set, which
    // tells the kernel to ignore it. `cmdline` is a live CString: the pointer is valid for `cmdline_len` bytes,
    // which include its terminating NUL, as the kernel requires. The kernel only reads this memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            kernel_file.as_raw_fd(),
            initrd_fd,
            cmdline_len,
            cmdline.as_ptr(),
            flags,
        )
    };
    if rc == -1 {
        return Err(diagnose(Errno::last(), &HostFacts::probe()));
    }
    Ok(())
}

/// Unloads the kernel loaded by [`load_file`] (rollback before the point of no return). Unloading when nothing is
/// loaded succeeds.
pub(crate) fn unload() -> Result<(), KexecError> {
    let no_fd: libc::c_int = -1;
    let no_cmdline_len: libc::c_ulong = 0;
    // SAFETY: with KEXEC_FILE_UNLOAD the kernel ignores both fds and the command line (kernel/kexec_file.c goes
    // straight to freeing the loaded image), so -1, -1, 0 and a null pointer pass no memory to it at all.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            no_fd,
            no_fd,
            no_cmdline_len,
            std::ptr::null::<libc::c_char>(),
            KEXEC_FILE_UNLOAD,
        )
    };
    if rc == -1 {
        return Err(diagnose(Errno::last(), &HostFacts::probe()));
    }
    Ok(())
}

/// Whether a kexec kernel is loaded, from sysfs.
pub(crate) fn is_loaded() -> Result<bool, KexecError> {
    let paths: Vec<&Path> = KEXEC_LOADED.iter().map(Path::new).collect();
    is_loaded_from(&paths)
}

/// [`is_loaded`] reading the first of `paths` that exists (newer kernels moved the file; tests pass temp files).
pub(crate) fn is_loaded_from(paths: &[&Path]) -> Result<bool, KexecError> {
    for path in paths {
        match std::fs::read_to_string(path) {
            Ok(content) => {
                return parse_flag(&content).ok_or_else(|| KexecError::LoadedStateUnreadable {
                    path: path.to_path_buf(),
                    content,
                });
            }
            Err(_) => continue,
        }
    }
    Err(KexecError::LoadedStateUnavailable {
        tried: paths.iter().map(|p| p.to_path_buf()).collect(),
    })
}

/// Starts the loaded kernel at once: `sync`, then `reboot(RB_KEXEC)`. File systems stay mounted and services are
/// not stopped (the fast path; `systemctl kexec` is the clean one). Returns only on failure.
pub(crate) fn execute_direct() -> Result<Infallible, KexecError> {
    if !is_loaded()? {
        return Err(KexecError::NothingLoaded);
    }
    // Inside every guest's downtime, but by now it has only other processes' writes to flush: kup's own files are
    // durable (fsynced when written, the guests' RAM files by the `sync` step's syncfs). File systems stay mounted
    // on this path, so what the host's services wrote must reach the disk before the old kernel is gone.
    nix::unistd::sync();
    match nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_KEXEC) {
        Ok(never) => match never {},
        Err(errno) => Err(KexecError::Reboot { errno }),
    }
}

#[cfg(test)]
mod tests {
    //! None of these tests calls load_file, unload or execute_direct: they would act on the machine running them.

    use super::*;

    /// Why the kernel refused a load with EPERM on a host with these facts.
    fn eperm(facts: &HostFacts) -> KexecError {
        diagnose(Errno::EPERM, facts)
    }

    fn root() -> HostFacts {
        HostFacts {
            euid: 0,
            cap_sys_boot: Some(true),
            kexec_load_disabled: Some(false),
            lockdown: Some(Lockdown::None),
        }
    }

    #[test]
    fn eperm_as_a_user_is_not_root() {
        let err = eperm(&HostFacts {
            euid: 1000,
            cap_sys_boot: Some(false),
            ..root()
        });
        assert!(matches!(err, KexecError::NotRoot { euid: 1000 }), "{err:?}");
        assert!(
            err.explain().contains("run kup as root"),
            "{}",
            err.explain()
        );
        // Unknown capabilities: the uid decides.
        let unknown = HostFacts {
            euid: 1000,
            cap_sys_boot: None,
            ..root()
        };
        assert!(matches!(eperm(&unknown), KexecError::NotRoot { .. }));
    }

    #[test]
    fn eperm_as_root_without_cap_sys_boot() {
        let err = eperm(&HostFacts {
            cap_sys_boot: Some(false),
            ..root()
        });
        assert!(matches!(err, KexecError::MissingCapSysBoot), "{err:?}");
        assert!(err.explain().contains("AmbientCapabilities=CAP_SYS_BOOT"));
    }

    #[test]
    fn eperm_with_capability_but_not_root_is_not_a_uid_problem() {
        let facts = HostFacts {
            euid: 1000,
            cap_sys_boot: Some(true),
            kexec_load_disabled: Some(true),
            ..root()
        };
        assert!(matches!(eperm(&facts), KexecError::LoadDisabled));
    }

    #[test]
    fn eperm_with_kexec_load_disabled() {
        let err = eperm(&HostFacts {
            kexec_load_disabled: Some(true),
            lockdown: Some(Lockdown::Integrity),
            ..root()
        });
        assert!(matches!(err, KexecError::LoadDisabled), "{err:?}");
        let text = err.explain();
        assert!(
            text.contains("kexec_load_disabled is 1") && text.contains("until this host reboots"),
            "{text}"
        );
    }

    #[test]
    fn eperm_under_lockdown_asks_for_a_signed_kernel() {
        for mode in [Lockdown::Integrity, Lockdown::Confidentiality] {
            let err = eperm(&HostFacts {
                lockdown: Some(mode),
                ..root()
            });
            assert!(
                matches!(err, KexecError::LockdownRefusedImage { mode: m } if m == mode),
                "{err:?}"
            );
            let text = err.explain();
            assert!(
                text.contains(&format!("lockdown ({mode})")) && text.contains("signed"),
                "{text}"
            );
        }
    }

    #[test]
    fn eperm_otherwise_points_at_dmesg() {
        for facts in [
            root(),
            HostFacts {
                kexec_load_disabled: None,
                lockdown: None,
                ..root()
            },
        ] {
            let err = eperm(&facts);
            assert!(matches!(err, KexecError::PermissionDenied), "{err:?}");
            assert!(err.explain().contains("kexec_load_limit_reboot"));
        }
    }

    #[test]
    fn signature_errnos() {
        for errno in [
            Errno::EKEYREJECTED,
            Errno::EKEYREVOKED,
            Errno::EBADMSG,
            Errno::ENOKEY,
            Errno::ENODATA,
            Errno::ENOPKG,
        ] {
            let err = diagnose(errno, &root());
            assert!(
                matches!(err, KexecError::SignatureRejected { errno: e, .. } if e == errno),
                "{err:?}"
            );
            assert!(err.explain().contains("signed"), "{}", err.explain());
            assert!(err.cause().contains("KEXEC_SIG_FORCE"), "{}", err.cause());
        }
        let locked = HostFacts {
            lockdown: Some(Lockdown::Integrity),
            ..root()
        };
        let err = diagnose(Errno::EKEYREJECTED, &locked);
        assert!(
            err.cause()
                .contains("lockdown (integrity) requires a valid one"),
            "{}",
            err.cause()
        );
        assert!(err.cause().contains("EKEYREJECTED"), "{}", err.cause());
    }

    #[test]
    fn other_refusals_have_a_cause_and_a_fix() {
        let cases = [
            (Errno::ENOEXEC, "bzImage"),
            (Errno::EBUSY, "other kexec tool"),
            (Errno::ENOMEM, "free memory"),
            (Errno::EINVAL, "command line too long"),
            (Errno::ENOSYS, "loader = \"legacy\""),
            (Errno::EACCES, "IMA"),
        ];
        for (errno, hint) in cases {
            let err = diagnose(errno, &root());
            assert!(!matches!(err, KexecError::Other { .. }), "{errno}: {err:?}");
            let text = err.explain();
            assert!(text.contains(&format!("({errno:?})")), "{text}");
            assert!(
                text.contains("\nfix: ") && text.contains(hint),
                "{errno}: {text}"
            );
        }
        assert!(
            diagnose(Errno::ENOSYS, &root())
                .cause()
                .contains("CONFIG_KEXEC_FILE")
        );
    }

    #[test]
    fn unexpected_errno_is_reported_as_is() {
        let err = diagnose(Errno::EFAULT, &root());
        assert!(
            matches!(
                err,
                KexecError::Other {
                    errno: Errno::EFAULT
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("EFAULT"), "{err}");
        assert!(err.fix().is_none());
    }

    #[test]
    fn cmdline_limit_follows_the_x86_64_loader() {
        // Debian's 6.1 header says cmdline_size 2047: 2047 - 30 - 1.
        assert_eq!(max_cmdline_len(Some(2047)), 2016);
        assert_eq!(max_cmdline_len(None), 2016);
        assert_eq!(max_cmdline_len(Some(4095)), 4064);
        assert_eq!(max_cmdline_len(Some(10)), 0);

        let fits = "x".repeat(2016);
        let c = prepare_cmdline(&fits, Some(2047)).unwrap();
        assert_eq!(c.as_bytes_with_nul().len(), 2017);
        assert_eq!(c.as_bytes_with_nul().last(), Some(&0));

        let err = prepare_cmdline(&"x".repeat(2017), Some(2047)).unwrap_err();
        assert!(
            matches!(
                err,
                KexecError::CmdlineTooLong {
                    len: 2017,
                    limit: 2016
                }
            ),
            "{err:?}"
        );
        assert!(err.explain().contains("shorten"), "{}", err.explain());
        assert!(prepare_cmdline(&"x".repeat(COMMAND_LINE_SIZE + 1), None).is_err());
    }

    #[test]
    fn empty_cmdline_is_just_the_nul() {
        assert_eq!(
            prepare_cmdline("", None).unwrap().as_bytes_with_nul(),
            b"\0"
        );
    }

    #[test]
    fn cmdline_with_nul_is_refused() {
        let err = prepare_cmdline("ro\0quiet", None).unwrap_err();
        assert!(
            matches!(err, KexecError::CmdlineContainsNul { position: 2 }),
            "{err:?}"
        );
    }

    #[test]
    fn lockdown_file_parsing() {
        assert_eq!(
            parse_lockdown("[none] integrity confidentiality\n"),
            Some(Lockdown::None)
        );
        assert_eq!(
            parse_lockdown("none [integrity] confidentiality\n"),
            Some(Lockdown::Integrity)
        );
        assert_eq!(
            parse_lockdown("none integrity [confidentiality]"),
            Some(Lockdown::Confidentiality)
        );
        assert_eq!(parse_lockdown("none integrity confidentiality"), None);
        assert_eq!(parse_lockdown(""), None);
    }

    #[test]
    fn capability_parsing() {
        let status = "Name:\tkup\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_sys_boot(status), Some(true));
        // Everything but bit 22.
        let without = "CapEff:\t000001ffffbfffff\n";
        assert_eq!(parse_cap_sys_boot(without), Some(false));
        assert_eq!(parse_cap_sys_boot("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_sys_boot("Name:\tkup\n"), None);
    }

    #[test]
    fn flag_parsing() {
        assert_eq!(parse_flag("0\n"), Some(false));
        assert_eq!(parse_flag("1\n"), Some(true));
        assert_eq!(parse_flag("2\n"), None);
        assert_eq!(parse_flag(""), None);
    }

    #[test]
    fn is_loaded_reads_the_first_file_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("kexec_loaded");
        let new = dir.path().join("kexec_loaded_new");
        std::fs::write(&new, "1\n").unwrap();
        assert!(is_loaded_from(&[&old, &new]).unwrap());
        std::fs::write(&old, "0\n").unwrap();
        assert!(!is_loaded_from(&[&old, &new]).unwrap());
    }

    #[test]
    fn is_loaded_without_any_file_or_with_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = is_loaded_from(&[&missing]).unwrap_err();
        assert!(
            matches!(err, KexecError::LoadedStateUnavailable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("missing"), "{err}");

        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, "yes\n").unwrap();
        let err = is_loaded_from(&[&garbage]).unwrap_err();
        assert!(
            matches!(err, KexecError::LoadedStateUnreadable { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn probe_reads_without_failing() {
        // Whatever this host offers, probing only reads and always yields facts.
        let facts = HostFacts::probe();
        assert_eq!(facts.euid, nix::unistd::geteuid().as_raw());
    }
}
