//! QEMU-specific checks and hand-over steps that need more than one QMP command: proving that a guest's RAM will
//! survive the kexec before trusting `memory = "shared"`, and ending an old QEMU without waiting for its exit.

use super::qmp::{QmpClient, QmpError};
use super::{HostError, SysfsRoot, ram_backing};
use crate::action::{ActionOutput, MemoryBackend};
use serde_json::{Value, json};
use std::path::Path;
use std::time::{Duration, Instant};

/// File systems whose contents live in RAM and so are gone after a kexec.
const VOLATILE_FS: [(i64, &str); 3] = [
    (0x0102_1994, "tmpfs"),
    (0x8584_58f6, "ramfs"),
    (0x9584_58f6, "hugetlbfs"),
];

fn qom_get(client: &mut QmpClient, path: &str, property: &str) -> Result<Value, QmpError> {
    client.execute("qom-get", &json!({ "path": path, "property": property }))
}

const HOW: &str = "start QEMU with `-object memory-backend-file,id=mem,size=SIZE,mem-path=FILE,share=on \
                   -machine memory-backend=mem`, FILE on a disk file system, or use memory = \"copy\"";

// Long by design: each way a guest's RAM can fail to survive the kexec, checked in turn with its own message.
/// Checks that the guest's RAM is a `share=on` `memory-backend-file` whose file sits on a file system that
/// survives a kexec; with anything else x-ignore-shared would skip RAM that is then lost. Reports each file's
/// device and DAX mount; with the new kernel's `cmdline`, a file on persistent memory needs every
/// `memmap=SIZE!OFFSET` of the running command line in it.
pub(crate) fn check_shared_ram(
    client: &mut QmpClient,
    sysfs: &SysfsRoot,
    cmdline: Option<&str>,
) -> Result<Vec<MemoryBackend>, HostError> {
    let socket = client.socket().to_owned();
    let memdevs = client.execute("query-memdev", &json!({}))?;
    let memdevs = memdevs.as_array().cloned().unwrap_or_default();
    // The machine's RAM backend when it has one (QEMU ≥ 5.0, `-machine memory-backend=`); otherwise every memdev
    // (NUMA guests give each node its own).
    let main = qom_get(client, "/machine", "memory-backend")
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .filter(|s| !s.is_empty())
        .map(|p| p.rsplit('/').next().unwrap_or_default().to_owned());
    let wanted: Vec<&Value> = memdevs
        .iter()
        .filter(|m| match &main {
            Some(id) => m.get("id").and_then(Value::as_str) == Some(id),
            None => true,
        })
        .collect();
    if wanted.is_empty() {
        return Err(HostError::check(format!(
            "memory = \"shared\", but the guest behind {socket} has its RAM in no memory backend (plain -m): it \
             would be lost at the kexec; {HOW}"
        )));
    }
    let mut checked = Vec::new();
    for m in wanted {
        let id = m.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
        let object = format!("/objects/{id}");
        // The implicit backend of a plain `-m` (`pc.ram`) is not under /objects; ask it by the machine's path.
        let kind = qom_get(client, &object, "type")
            .or_else(|_| qom_get(client, &format!("/machine/{id}"), "type"))
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        if kind == "memory-backend-ram" || id == "pc.ram" {
            return Err(HostError::check(format!(
                "memory = \"shared\", but the guest behind {socket} has its RAM in anonymous memory ({id:?}, \
                 plain -m or memory-backend-ram): it would be lost at the kexec; {HOW}"
            )));
        }
        if m.get("share").and_then(Value::as_bool) != Some(true) {
            return Err(HostError::check(format!(
                "memory = \"shared\", but memory backend {id:?} of the guest behind {socket} has share=off: \
                 its RAM is private to the QEMU process and would be lost; {HOW}"
            )));
        }
        if kind != "memory-backend-file" {
            return Err(HostError::check(format!(
                "memory = \"shared\", but memory backend {id:?} of the guest behind {socket} is a {kind}, whose \
                 memory does not outlive the kernel; {HOW}"
            )));
        }
        let mem_path = qom_get(client, &object, "mem-path")?
            .as_str()
            .unwrap_or("")
            .to_owned();
        let path = Path::new(&mem_path);
        let meta = std::fs::metadata(path).map_err(|e| {
            HostError::io(
                format!("memory backend {id:?} of the guest behind {socket}: mem-path {mem_path}"),
                e,
            )
        })?;
        if meta.is_dir() {
            return Err(HostError::check(format!(
                "memory = \"shared\", but memory backend {id:?} of the guest behind {socket} has mem-path \
                 {mem_path}, a directory: QEMU then backs RAM with a file it has already deleted, which no new \
                 QEMU can open; name a file"
            )));
        }
        let fs = nix::sys::statfs::statfs(path)
            .map_err(|e| HostError::io(format!("statfs {mem_path}"), e.into()))?;
        let magic = fs.filesystem_type().0 as i64;
        if let Some((_, name)) = VOLATILE_FS.iter().find(|(m, _)| *m == magic) {
            return Err(HostError::check(format!(
                "memory = \"shared\", but the RAM of the guest behind {socket} is in {mem_path}, on {name}, \
                 which a kexec wipes; put the file on a disk file system (and the state directory too)"
            )));
        }
        let backing = ram_backing::backing(sysfs, path)?;
        if let (true, Some(new)) = (backing.pmem, cmdline) {
            keeps_memmap(sysfs, &socket, &mem_path, &backing.device, new)?;
        }
        checked.push(MemoryBackend {
            id,
            mem_path,
            size: m.get("size").and_then(Value::as_u64),
            device: backing.device,
            pmem: backing.pmem,
            dax: backing.dax,
        });
    }
    Ok(checked)
}

/// Whether a connection error means that no QEMU is there (any more): the socket is gone, left behind, or was
/// just reset by a QEMU on its way out.
fn nobody_there(e: &QmpError) -> bool {
    [
        "no such socket",
        "nothing listens",
        "reset",
        "closed the connection",
    ]
    .iter()
    .any(|m| e.0.contains(m))
}

/// Waits until nothing accepts connections on `socket` any more (QEMU removes the path while it exits), so a new
/// QEMU can bind it.
fn wait_socket_released(socket: &Path, deadline: Instant, what: &str) -> Result<(), HostError> {
    while std::os::unix::net::UnixStream::connect(socket).is_ok() {
        if Instant::now() >= deadline {
            return Err(HostError::Timeout(format!(
                "QEMU behind {} {what}",
                socket.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Presses the ACPI power button of the guest behind `socket` (`system_powerdown`) and gives its OS `timeout` to
/// power off, which ends QEMU; a guest that does not (no OS, no ACPI daemon, hung) is ended with `quit`. Only for
/// guests the plan restarts across the kexec: nothing of their running state is kept.
pub(crate) fn power_down(socket: &Path, timeout: Duration) -> Result<ActionOutput, HostError> {
    let started = Instant::now();
    let elapsed_ms = || u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut client =
        match QmpClient::connect_with_timeout(socket, timeout.max(Duration::from_secs(1))) {
            Ok(client) => client,
            Err(e) if nobody_there(&e) => {
                return Ok(ActionOutput::PoweredDown {
                    answered: false,
                    by_guest: false,
                    ms: elapsed_ms(),
                });
            }
            Err(e) => return Err(e.into()),
        };
    client.execute("qmp_capabilities", &json!({}))?;
    client.execute("system_powerdown", &json!({}))?;
    let deadline = started + timeout;
    // QEMU exits when its guest powers off (unless started with -no-shutdown: then it reports `shutdown`).
    let by_guest = loop {
        match client.execute("query-status", &json!({})) {
            Ok(status) if status.get("status").and_then(Value::as_str) == Some("shutdown") => {
                break false;
            }
            Ok(_) => {}
            Err(e) if nobody_there(&e) => break true,
            Err(e) => return Err(e.into()),
        }
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        // Woken by QEMU's `SHUTDOWN` (or its closing the connection as it exits), polled every 100 ms otherwise.
        match client.next_event(Duration::from_millis(100).min(deadline - now)) {
            Ok(_) => {}
            Err(e) if nobody_there(&e) => break true,
            Err(e) => return Err(e.into()),
        }
    };
    if !by_guest {
        match client.quit(Duration::from_secs(10)) {
            Ok(()) => {}
            Err(e) if nobody_there(&e) => {}
            Err(e) => return Err(e.into()),
        }
    }
    wait_socket_released(
        socket,
        Instant::now() + Duration::from_secs(10),
        "was shut down but still listens after 10 s",
    )?;
    Ok(ActionOutput::PoweredDown {
        answered: true,
        by_guest,
        ms: elapsed_ms(),
    })
}

/// A RAM file on a pmem device that the running kernel carved out of RAM (`memmap=SIZE!OFFSET`): the new kernel
/// must carve the same region, or it takes it as ordinary RAM and the guest's memory is overwritten.
fn keeps_memmap(
    sysfs: &SysfsRoot,
    socket: &str,
    mem_path: &str,
    device: &str,
    new: &str,
) -> Result<(), HostError> {
    let running = std::fs::read_to_string(sysfs.resolve(Path::new("/proc/cmdline")))
        .map_err(|e| HostError::io("cannot read /proc/cmdline", e))?;
    let missing = ram_backing::missing_memmaps(&running, new);
    if missing.is_empty() {
        return Ok(());
    }
    Err(HostError::check(format!(
        "memory = \"shared\", but the RAM of the guest behind {socket} is in {mem_path} on persistent memory \
         {device}, and the new kernel's command line lacks {}, which the running kernel has: the new kernel would \
         take that region as ordinary RAM and the guest's memory with it; keep the parameter (drop it from \
         `kernel.cmdline.remove`, or add it to `set`, `append` or `value`)",
        missing.join(" and ")
    )))
}

/// Sends `quit` to the QEMU behind `socket` if one answers, and waits until it has let go of the socket path — not
/// until its process ends, which for a large guest takes seconds while the kernel frees its memory. A QEMU that
/// left the path behind (killed, or gone with the old kernel) is a no-op.
pub(crate) fn quit_if_running(socket: &Path, timeout: Duration) -> Result<ActionOutput, HostError> {
    let started = Instant::now();
    let mut client = match QmpClient::connect_with_timeout(socket, timeout) {
        Ok(client) => client,
        // Gone, or going: a QEMU killed a moment ago may still accept and then reset the connection.
        Err(e) if nobody_there(&e) => {
            return Ok(ActionOutput::Quit {
                quit: false,
                ms: None,
            });
        }
        Err(e) => return Err(e.into()),
    };
    client.execute("qmp_capabilities", &json!({}))?;
    // A guest that runs has moved on since its state was saved: restarting it from the file would roll it back
    // in time under its own disks. An old QEMU after a save is in `postmigrate`; a new one whose restore was
    // interrupted is `inmigrate` or `paused`.
    let status = client.execute("query-status", &json!({}))?;
    let status = status
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    if matches!(status.as_str(), "running" | "suspended") {
        return Err(HostError::check(format!(
            "a guest is {status} behind {}: its state file is older than it, so kup will not end it and restore \
             the file; if this restore is meant to run, stop that QEMU first",
            socket.display()
        )));
    }
    client.quit(timeout)?;
    // QEMU removes its socket path while exiting; a new QEMU bound to the same path before that would lose it.
    wait_socket_released(
        socket,
        started + timeout,
        &format!(
            "accepted `quit` but still listens after {} ms",
            timeout.as_millis()
        ),
    )?;
    Ok(ActionOutput::Quit {
        quit: true,
        ms: Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)),
    })
}
