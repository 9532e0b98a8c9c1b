//! Facts about the running machine that kup reads from procfs, sysfs and syscalls: who it is (host name, boot id,
//! kernel release, command line), whether systemd runs it, whether kexec is allowed, who kup runs as.

use super::{BootIdentity, HostError, SysfsRoot};
use std::path::Path;

/// Where the running kernel's command line is.
pub(crate) const PROC_CMDLINE: &str = "/proc/cmdline";

/// `gethostname(2)`.
pub(crate) fn hostname() -> Result<String, HostError> {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .map_err(|e| HostError::io("cannot read the host name", e.into()))
}

/// Whether systemd runs this machine (it creates /run/systemd/system at boot; sd_booted(3) checks the same).
pub fn systemd_is_pid1() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The running kernel's boot id: it changes at every boot, kexec included, which is how `resume` proves a kexec.
pub(crate) fn boot_id() -> Result<String, HostError> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .map_err(|e| HostError::io("cannot read the boot id", e))
}

/// Milliseconds since this kernel started (CLOCK_BOOTTIME, which counts suspend too).
pub(crate) fn uptime_ms() -> Option<u64> {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    u64::try_from(t.tv_sec())
        .ok()?
        .checked_mul(1000)?
        .checked_add(u64::try_from(t.tv_nsec() / 1_000_000).ok()?)
}

/// The wall clock (CLOCK_REALTIME) in Unix milliseconds, as the journal stamps its records; 0 before 1970.
pub(crate) fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// `uname -r` of the running kernel.
pub fn kernel_release() -> Result<String, HostError> {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .map_err(|e| HostError::io("uname", e.into()))
}

/// The boot id and release together, as the kexec record keeps them.
pub(crate) fn identity() -> Result<BootIdentity, HostError> {
    Ok(BootIdentity {
        boot_id: boot_id()?,
        release: kernel_release()?,
    })
}

/// The running kernel's command line (`/proc/cmdline`).
pub(crate) fn proc_cmdline() -> Result<String, HostError> {
    std::fs::read_to_string(PROC_CMDLINE)
        .map_err(|e| HostError::io(format!("cannot read {PROC_CMDLINE}"), e))
}

/// Whether kup runs as root (effective uid 0).
pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// This process's id.
pub(crate) fn pid() -> u32 {
    std::process::id()
}

/// Whether process `pid` exists and is not this one.
pub(crate) fn other_process_alive(pid: u32) -> bool {
    pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists()
}

/// `kernel.kexec_load_disabled` is 0: once set to 1 it stays so until the next boot, and every load would fail.
pub(crate) fn check_kexec_enabled(sysfs: &SysfsRoot) -> Result<(), HostError> {
    let path = Path::new("/proc/sys/kernel/kexec_load_disabled");
    let found = super::sysfs::read_attribute(&sysfs.resolve(path))?;
    if found == "0" {
        Ok(())
    } else {
        Err(HostError::check(format!(
            "{} is \"{found}\", expected \"0\"",
            path.display()
        )))
    }
}

/// `/boot/config-$(uname -r)` of the running kernel: its path and text, if present. A missing file is not an
/// error: many hosts (containers, custom kernels) have none.
pub(crate) fn running_kernel_config() -> Option<(String, Vec<u8>)> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let path = format!("/boot/config-{}", release.trim());
    let text = std::fs::read(&path).ok()?;
    Some((path, text))
}

/// Kills this process with SIGKILL, as a crash would (the fault-injection hook).
#[cfg(feature = "fault-injection")]
pub(crate) fn crash_now() {
    let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
}

/// A flag set by SIGINT or SIGTERM: the engine then launches nothing new and rolls back if before the kexec.
pub(crate) fn interrupt_flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, std::sync::Arc::clone(&flag));
    }
    flag
}

/// An environment variable of this process, when set and valid UTF-8.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// This process's arguments, without the program name.
pub(crate) fn own_args() -> Vec<String> {
    std::env::args().skip(1).collect()
}
