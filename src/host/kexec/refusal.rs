//! Why the kernel refused a kexec load, in words an operator can act on: the kernel answers EPERM for four unrelated
//! reasons and EINVAL or EKEYREJECTED for others, and the fix differs for each. [`diagnose`] tells them apart from
//! [`HostFacts`] gathered after the failure; it is pure so that every branch is unit-tested without the syscall.
#![deny(unsafe_code)]

use super::ELFCOREHDR_RESERVE;
use nix::errno::Errno;
use std::fmt;
use std::io;
use std::path::PathBuf;

/// Bit of CAP_SYS_BOOT in the capability sets of /proc/PID/status (include/uapi/linux/capability.h).
const CAP_SYS_BOOT: u32 = 22;

/// The kernel lockdown mode (`/sys/kernel/security/lockdown`, the bracketed word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockdown {
    None,
    Integrity,
    Confidentiality,
}

impl fmt::Display for Lockdown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Lockdown::None => "none",
            Lockdown::Integrity => "integrity",
            Lockdown::Confidentiality => "confidentiality",
        })
    }
}

/// What [`diagnose`] needs to know about the host to explain a refusal. `None` means the fact could not be read
/// (no such file on this kernel, or not permitted): the diagnosis then does not rely on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostFacts {
    pub(crate) euid: u32,
    /// CAP_SYS_BOOT in the effective set, from /proc/self/status (root in a container may lack it).
    pub(crate) cap_sys_boot: Option<bool>,
    /// `kernel.kexec_load_disabled`: once 1, no kexec load is possible until the next reboot.
    pub(crate) kexec_load_disabled: Option<bool>,
    pub(crate) lockdown: Option<Lockdown>,
}

/// `0` or `1` with optional whitespace, as sysfs and procfs print booleans.
pub(crate) fn parse_flag(text: &str) -> Option<bool> {
    match text.trim() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// The active mode in securityfs's `none [integrity] confidentiality`.
pub(crate) fn parse_lockdown(text: &str) -> Option<Lockdown> {
    let active = text
        .split_whitespace()
        .find_map(|word| word.strip_prefix('[')?.strip_suffix(']'))?;
    match active {
        "none" => Some(Lockdown::None),
        "integrity" => Some(Lockdown::Integrity),
        "confidentiality" => Some(Lockdown::Confidentiality),
        _ => None,
    }
}

/// Whether the `CapEff:` line of a /proc/PID/status includes CAP_SYS_BOOT.
pub(crate) fn parse_cap_sys_boot(status: &str) -> Option<bool> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(hex, 16).ok()?;
    Some(caps & (1 << CAP_SYS_BOOT) != 0)
}

/// Which file a failed open was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageRole {
    Kernel,
    Initrd,
}

impl fmt::Display for ImageRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ImageRole::Kernel => "kernel image",
            ImageRole::Initrd => "initrd",
        })
    }
}

/// Why a kexec operation failed. [`KexecError::explain`] gives the cause and what to do about it.
#[derive(Debug)]
pub enum KexecError {
    /// Refused before the syscall: the kernel would answer EINVAL.
    CmdlineTooLong {
        len: usize,
        limit: usize,
    },
    /// Refused before the syscall: the kernel reads the command line as a C string.
    CmdlineContainsNul {
        position: usize,
    },
    OpenImage {
        role: ImageRole,
        path: PathBuf,
        source: io::Error,
    },
    /// EPERM: not root (and no CAP_SYS_BOOT granted otherwise).
    NotRoot {
        euid: u32,
    },
    /// EPERM: root, but CAP_SYS_BOOT is not in the effective set (a container, a systemd sandbox).
    MissingCapSysBoot,
    /// EPERM: `kernel.kexec_load_disabled` is 1.
    LoadDisabled,
    /// EPERM under lockdown: the image's signature could not be verified, and lockdown forbids unverified images.
    LockdownRefusedImage {
        mode: Lockdown,
    },
    /// EPERM with none of the above to explain it.
    PermissionDenied,
    /// EACCES: a security module (IMA appraisal, SELinux, AppArmor) refused to let the kernel read the image.
    SecurityPolicy,
    /// EKEYREJECTED, EKEYREVOKED, EBADMSG, ENOKEY, ENODATA, ENOPKG: signature verification failed and is enforced.
    SignatureRejected {
        errno: Errno,
        lockdown: Option<Lockdown>,
    },
    /// ENOEXEC: no loader for this architecture recognised the file.
    NotLoadable,
    /// EBUSY: another kexec load or unload is in progress.
    Busy,
    /// ENOMEM: the kernel could not reserve memory for the new kernel's segments.
    OutOfMemory,
    /// EINVAL: an argument the kernel did not accept.
    InvalidArgument,
    /// ENOSYS: the running kernel was built without CONFIG_KEXEC_FILE.
    Unsupported,
    /// Any other errno from kexec_file_load.
    Other {
        errno: Errno,
    },
    /// Neither /sys/kernel/kexec_loaded nor /sys/kernel/kexec/loaded could be read.
    LoadedStateUnavailable {
        tried: Vec<PathBuf>,
    },
    LoadedStateUnreadable {
        path: PathBuf,
        content: String,
    },
    /// reboot(RB_KEXEC) asked with no kernel loaded.
    NothingLoaded,
    /// reboot(RB_KEXEC) returned instead of starting the new kernel.
    Reboot {
        errno: Errno,
    },
}

impl KexecError {
    /// What went wrong, in one sentence.
    pub(crate) fn cause(&self) -> String {
        use KexecError::*;
        match self {
            CmdlineTooLong { len, limit } => format!(
                "the kernel command line is {len} bytes; kexec_file_load accepts at most {limit} (the kernel's \
                 cmdline_size less {ELFCOREHDR_RESERVE} bytes it reserves for elfcorehdr=, and the NUL)"
            ),
            CmdlineContainsNul { position } => {
                format!("the kernel command line contains a NUL byte at offset {position}")
            }
            OpenImage { role, path, source } => format!("cannot open the {role} {}: {source}", path.display()),
            NotRoot { euid } => format!(
                "kexec_file_load was refused (EPERM): kup runs as uid {euid}, and loading a kernel needs root \
                 (CAP_SYS_BOOT)"
            ),
            MissingCapSysBoot => "kexec_file_load was refused (EPERM): kup runs as root but without CAP_SYS_BOOT in \
                                  its effective capabilities (a container or a sandboxed service)"
                .to_owned(),
            LoadDisabled => "kexec_file_load was refused (EPERM): kernel.kexec_load_disabled is 1 on this host, which \
                             forbids loading any kernel until the next reboot (the setting cannot be turned back off)"
                .to_owned(),
            LockdownRefusedImage { mode } => format!(
                "kexec_file_load was refused (EPERM): the kernel is in lockdown ({mode}) and could not verify the \
                 image's signature"
            ),
            PermissionDenied => "kexec_file_load was refused (EPERM), though kup runs as root with CAP_SYS_BOOT, \
                                 kexec loading is enabled and there is no lockdown"
                .to_owned(),
            SecurityPolicy => "kexec_file_load was refused (EACCES): a security module (IMA appraisal, SELinux or \
                               AppArmor) denied reading the image"
                .to_owned(),
            SignatureRejected { errno, lockdown } => {
                let mut cause = format!(
                    "the kernel rejected the image's signature ({errno:?}: {})",
                    signature_meaning(*errno)
                );
                if let Some(mode @ (Lockdown::Integrity | Lockdown::Confidentiality)) = lockdown {
                    cause.push_str(&format!(", and lockdown ({mode}) requires a valid one"));
                } else {
                    cause.push_str(", and this kernel enforces kexec signatures (CONFIG_KEXEC_SIG_FORCE)");
                }
                cause
            }
            NotLoadable => "kexec_file_load was refused (ENOEXEC): the running kernel does not recognise the file as \
                            a kernel it can load on this architecture"
                .to_owned(),
            Busy => "kexec_file_load was refused (EBUSY): another kexec load or unload is in progress".to_owned(),
            OutOfMemory => "kexec_file_load failed (ENOMEM): the kernel could not allocate memory for the new \
                            kernel, initrd and command line"
                .to_owned(),
            InvalidArgument => "kexec_file_load was refused (EINVAL): the kernel did not accept the image, the \
                                command line or the flags"
                .to_owned(),
            Unsupported => "kexec_file_load does not exist here (ENOSYS): the running kernel was built without \
                            CONFIG_KEXEC_FILE"
                .to_owned(),
            Other { errno } => format!("kexec_file_load failed: {errno:?} ({})", errno.desc()),
            LoadedStateUnavailable { tried } => {
                let tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
                format!("cannot tell whether a kexec kernel is loaded: none of {} is readable", tried.join(", "))
            }
            LoadedStateUnreadable { path, content } => {
                format!("{} holds {content:?}, not 0 or 1", path.display())
            }
            NothingLoaded => "no kexec kernel is loaded, so there is nothing to start".to_owned(),
            Reboot { errno } => format!("reboot(RB_KEXEC) returned {errno:?} ({})", errno.desc()),
        }
    }

    /// What to do about it, when there is something to do.
    pub(crate) fn fix(&self) -> Option<String> {
        use KexecError::*;
        let fix = match self {
            CmdlineTooLong { .. } => {
                "shorten the command line: [kernel.cmdline] remove what the new kernel does not \
                                      need, or set inherit = false and list only what it does"
            }
            CmdlineContainsNul { .. } => "remove the NUL byte from [kernel.cmdline]",
            OpenImage { .. } => "check the path in [kernel] and that it is readable by root",
            NotRoot { .. } => "run kup as root (sudo kup …)",
            MissingCapSysBoot => {
                "run kup on the host itself, or grant CAP_SYS_BOOT (systemd: \
                                  AmbientCapabilities=CAP_SYS_BOOT, and no CapabilityBoundingSet without it)"
            }
            LoadDisabled => {
                "kexec is impossible until this host reboots: reboot it normally, and find what sets \
                             kernel.kexec_load_disabled = 1 (sysctl.d, a hardening profile) before relying on kup"
            }
            LockdownRefusedImage { .. } => {
                "use a kernel signed by a key the running kernel trusts (the \
                                            distribution's signed vmlinuz, not a locally built or -unsigned one), \
                                            or enrol your signing key (MOK); kexec-tools' legacy loader is also \
                                            blocked under lockdown"
            }
            PermissionDenied => {
                "check `dmesg` for the reason: kernel.kexec_load_limit_reboot may be used up, or an \
                                 LSM (SELinux, AppArmor) may deny kexec_file_load to this process"
            }
            SecurityPolicy => {
                "check `dmesg` and the audit log for the denial; sign the image for IMA, or allow kup \
                               in the SELinux/AppArmor policy"
            }
            SignatureRejected { .. } => {
                "use a kernel signed by a key in the running kernel's keyrings (the \
                                         distribution's signed vmlinuz, or one signed with your MOK-enrolled key); \
                                         check the file is complete (kup verifies sha256 when the plan pins it)"
            }
            NotLoadable => {
                "point [kernel] image at an x86-64 bzImage (/boot/vmlinuz-*), not an ELF vmlinux, an \
                            initrd or a kernel for another architecture, and check it is not truncated"
            }
            Busy => {
                "wait for the other kexec tool (kexec-tools, a kexec-load service) to finish and run kup again"
            }
            OutOfMemory => {
                "free memory on the host (the new kernel and initrd are copied into RAM), or use a \
                            smaller initrd"
            }
            InvalidArgument => {
                "check `dmesg` for the loader's reason: usually a command line too long for the new \
                                kernel, or an image without a 64-bit entry point"
            }
            Unsupported => {
                "set loader = \"legacy\" in [kernel] to load with kexec-tools (kexec_load); note that \
                            the legacy path cannot verify signatures and is blocked under lockdown"
            }
            Other { .. } => return None,
            LoadedStateUnavailable { .. } => {
                "check that the running kernel supports kexec (CONFIG_KEXEC_CORE) and \
                                              that sysfs is mounted"
            }
            LoadedStateUnreadable { .. } => return None,
            NothingLoaded => "load a kernel first (the kernel:load step)",
            Reboot { .. } => {
                "the old kernel is still running: check `dmesg`, then retry or reboot normally"
            }
        };
        Some(fix.to_owned())
    }

    /// Cause and fix together, for a terminal or a journal record.
    pub(crate) fn explain(&self) -> String {
        match self.fix() {
            Some(fix) => format!("{}\nfix: {fix}", self.cause()),
            None => self.cause(),
        }
    }
}

fn signature_meaning(errno: Errno) -> &'static str {
    match errno {
        Errno::EKEYREJECTED => "signed by a key the kernel rejects",
        Errno::EKEYREVOKED => "signed by a revoked key",
        Errno::EBADMSG => "the signature is malformed",
        Errno::ENOKEY => "signed by a key the kernel does not have",
        Errno::ENODATA => "the image carries no signature",
        Errno::ENOPKG => "the signature uses an algorithm this kernel lacks",
        _ => "verification failed",
    }
}

impl fmt::Display for KexecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cause())
    }
}

impl std::error::Error for KexecError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            KexecError::OpenImage { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl miette::Diagnostic for KexecError {
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.fix().map(|fix| Box::new(fix) as Box<dyn fmt::Display>)
    }
}

/// Turns the errno of a failed `kexec_file_load` into its likely cause, given what is known about the host.
pub(crate) fn diagnose(errno: Errno, facts: &HostFacts) -> KexecError {
    match errno {
        Errno::EPERM => {
            // The kernel checks CAP_SYS_BOOT and kexec_load_disabled first (kexec_load_permitted), the signature
            // under lockdown later, so the same order explains the refusal.
            let lacks_cap = facts.cap_sys_boot.map_or(facts.euid != 0, |has| !has);
            if lacks_cap && facts.euid != 0 {
                KexecError::NotRoot { euid: facts.euid }
            } else if lacks_cap {
                KexecError::MissingCapSysBoot
            } else if facts.kexec_load_disabled == Some(true) {
                KexecError::LoadDisabled
            } else if let Some(mode @ (Lockdown::Integrity | Lockdown::Confidentiality)) =
                facts.lockdown
            {
                KexecError::LockdownRefusedImage { mode }
            } else {
                KexecError::PermissionDenied
            }
        }
        Errno::EACCES => KexecError::SecurityPolicy,
        Errno::EKEYREJECTED
        | Errno::EKEYREVOKED
        | Errno::EBADMSG
        | Errno::ENOKEY
        | Errno::ENODATA
        | Errno::ENOPKG => KexecError::SignatureRejected {
            errno,
            lockdown: facts.lockdown,
        },
        Errno::ENOEXEC => KexecError::NotLoadable,
        Errno::EBUSY => KexecError::Busy,
        Errno::ENOMEM => KexecError::OutOfMemory,
        Errno::EINVAL => KexecError::InvalidArgument,
        Errno::ENOSYS => KexecError::Unsupported,
        errno => KexecError::Other { errno },
    }
}
