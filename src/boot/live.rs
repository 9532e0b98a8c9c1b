//! Reading the live host's kernel log and build configuration: the only part of `boot` with side effects,
//! kept small so the analysis stays pure (and to move into the `host` module once it exists).

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

use nix::fcntl::OFlag;

use super::advice::KernelConfig;

/// A kmsg record is at most about 8 KiB (message plus dictionary); a read into a smaller buffer fails.
const KMSG_RECORD_MAX: usize = 16 * 1024;

/// The kernel log of the running kernel, in kmsg record format, or from `dmesg` if /dev/kmsg is unreadable.
/// Returns the bytes and a name for where they came from.
pub fn kernel_log() -> io::Result<(Vec<u8>, &'static str)> {
    match read_kmsg() {
        Ok(bytes) if !bytes.is_empty() => Ok((bytes, "/dev/kmsg")),
        Ok(_) | Err(_) => run_dmesg().map(|b| (b, "dmesg")),
    }
}

/// Reads every record currently in the ring buffer. Non-blocking, because a blocking read of /dev/kmsg waits
/// for new messages forever once the buffer is drained.
fn read_kmsg() -> io::Result<Vec<u8>> {
    let mut file: File = OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open("/dev/kmsg")?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; KMSG_RECORD_MAX];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                out.extend_from_slice(buf.get(..n).unwrap_or_default());
                if !out.ends_with(b"\n") {
                    out.push(b'\n');
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            // EPIPE: records were overwritten while we read; the next read continues with the oldest left.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::EPIPE as i32) => continue,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

fn run_dmesg() -> io::Result<Vec<u8>> {
    let output = Command::new("dmesg").output()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(io::Error::other(format!(
            "dmesg failed ({}): {}",
            output.status,
            stderr.trim()
        )));
    }
    Ok(output.stdout)
}

/// `/boot/config-$(uname -r)` of the running kernel, if present. A missing file is not an error: many hosts
/// (containers, custom kernels) have none, and the advice then falls back to what the log shows.
pub fn kernel_config() -> Option<KernelConfig> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    let path = format!("/boot/config-{}", release.trim());
    let text = std::fs::read(&path).ok()?;
    Some(KernelConfig {
        deferred_struct_page_init: config_enabled(&text, "CONFIG_DEFERRED_STRUCT_PAGE_INIT"),
        path,
    })
}

/// `CONFIG_X=y` means on; `# CONFIG_X is not set` or no line at all means off.
pub fn config_enabled(config: &[u8], option: &str) -> bool {
    let wanted = format!("{option}=y");
    String::from_utf8_lossy(config)
        .lines()
        .any(|l| l.trim() == wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines() {
        let config = b"CONFIG_X86_64=y\n# CONFIG_DEFERRED_STRUCT_PAGE_INIT is not set\nCONFIG_HOTPLUG_PARALLEL=y\n";
        assert!(!config_enabled(config, "CONFIG_DEFERRED_STRUCT_PAGE_INIT"));
        assert!(config_enabled(config, "CONFIG_HOTPLUG_PARALLEL"));
        assert!(!config_enabled(
            b"CONFIG_HOTPLUG_PARALLEL_X=y",
            "CONFIG_HOTPLUG_PARALLEL"
        ));
    }
}
