//! Reading the running kernel's log: `/dev/kmsg` records, or `dmesg` where /dev/kmsg is unreadable. Parsing it is
//! `boot`'s (pure) business.

use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::process::Command;

use nix::fcntl::OFlag;

/// A kmsg record is at most about 8 KiB (message plus dictionary); a read into a smaller buffer fails.
const KMSG_RECORD_MAX: usize = 16 * 1024;

/// The kernel log of the running kernel, in kmsg record format, or from `dmesg` if /dev/kmsg is unreadable.
/// Returns the bytes and a name for where they came from.
pub(crate) fn kernel_log() -> io::Result<(Vec<u8>, &'static str)> {
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
