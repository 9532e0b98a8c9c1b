//! Live patches: whether the running kernel takes one (`/sys/kernel/livepatch`, the module's `.modinfo` against
//! `uname -r`, lockdown and `module.sig_enforce` against its signature), loading it (`finit_module(2)`), waiting
//! for its transition, disabling it and removing its module (`delete_module(2)`). Every `/sys` and `/proc` path is
//! resolved through [`SysfsRoot`], so tests run these against a fake tree; only the two syscalls need a kernel.

use super::{HostError, SysfsRoot};
use crate::action::{LivepatchModule, LivepatchState};
use crate::kmod::{ModInfoError, modinfo};
use nix::errno::Errno;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What a signed module ends with (`scripts/sign-file`, `MODULE_SIG_STRING`).
const SIGNATURE_MARKER: &[u8] = b"~Module signature appended~\n";
/// Longest interval between two reads of a transition's state.
const POLL: Duration = Duration::from_millis(50);
/// Tasks named in a transition timeout, at most.
const MAX_TASKS_NAMED: usize = 10;

/// Why a live patch could not be checked, loaded, settled or removed; each worded for an operator.
// Each variant's `#[error]` message is its documentation, and its fields are what the message names.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum LivepatchError {
    #[error(
        "the running kernel cannot be live-patched: {} does not exist (a kernel built without CONFIG_LIVEPATCH); \
         use a `[kernel]` plan to kexec into the fixed kernel instead",
        .path.display()
    )]
    Unsupported { path: PathBuf },
    #[error("{}: not a kernel module whose .modinfo kup can read: {source}", .path.display())]
    Modinfo { path: PathBuf, source: ModInfoError },
    #[error(
        "{} is not a live patch: its .modinfo has no `livepatch=Y` (a kpatch or klp module declares \
         MODULE_INFO(livepatch, \"Y\"))",
        .path.display()
    )]
    NotLivepatch { path: PathBuf },
    #[error(
        "{} is module {found:?}, but the plan names the live patch {expected:?}: fix `livepatch.name` (the name \
         /sys/kernel/livepatch will show) or `livepatch.module`",
        .path.display()
    )]
    NameMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    #[error(
        "{} was built for kernel {module_release} (its vermagic), but the running kernel is {running}: a live \
         patch only fits the exact kernel it was built against; build it for {running} (kpatch-build against \
         that kernel's sources and debug info) or kexec into {module_release} first",
        .path.display()
    )]
    WrongRelease {
        path: PathBuf,
        module_release: String,
        running: String,
    },
    #[error(
        "live patch {name} is already loaded (/sys/kernel/livepatch/{name} exists): nothing to load; remove it \
         first (a plan with `action = \"remove\"`) to load it again"
    )]
    AlreadyLoaded { name: String },
    #[error(
        "live patch {name} is not loaded (/sys/kernel/livepatch/{name} does not exist){}",
        if *.module_loaded { "; a module of that name is, but it is no live patch or is being removed" } else { "" }
    )]
    NotLoaded { name: String, module_loaded: bool },
    #[error(
        "{} is not signed, and {why}: the kernel would refuse it (EKEYREJECTED or EPERM); sign it with a key \
         the kernel trusts (scripts/sign-file sha256 KEY.priv KEY.x509 MODULE.ko, the key enrolled with mokutil \
         or built in)",
        .path.display()
    )]
    Unsigned { path: PathBuf, why: String },
    #[error(
        "module loading is disabled on this host (/proc/sys/kernel/modules_disabled is 1, which only a reboot \
         undoes): no live patch can be loaded; kexec into the fixed kernel instead"
    )]
    ModulesDisabled,
    #[error("finit_module of {} failed: {errno}: {}", .path.display(), explain_load(*.errno))]
    Load { path: PathBuf, errno: Errno },
    #[error("delete_module({name:?}) failed: {errno}{}", explain_unload(*.errno))]
    Unload { name: String, errno: Errno },
    #[error(
        "live patch {name}: the transition {} did not finish in {} ms; {} still in the old state: {}; the \
         kernel keeps retrying — a task sleeping in a patched function holds it up: wake it (`echo 1 > \
         /sys/kernel/livepatch/{name}/signal` sends it a fake signal) or raise `livepatch.timeout`",
        if *.patching { "to the patched code" } else { "back to the original code" },
        .timeout_ms,
        if .tasks.len() == 1 { "this task is" } else { "these tasks are" },
        if .tasks.is_empty() { "(none found in /proc: it may just have finished)".to_owned() } else { .tasks.join(", ") }
    )]
    Transition {
        name: String,
        patching: bool,
        timeout_ms: u64,
        tasks: Vec<String>,
    },
    #[error(
        "live patch {name} is loaded but not enabled (enabled = {enabled}): it was disabled, or its load failed \
         half-way; see dmesg"
    )]
    NotEnabled { name: String, enabled: String },
    #[error("live patch {name} is still there after its removal: {what}")]
    StillLoaded { name: String, what: String },
}

fn explain_load(errno: Errno) -> &'static str {
    match errno {
        Errno::EKEYREJECTED | Errno::EKEYEXPIRED | Errno::ENOKEY | Errno::EBADMSG => {
            "the kernel rejected the module's signature (no trusted key signed it)"
        }
        Errno::EPERM => {
            "not permitted: kup is not root (CAP_SYS_MODULE), module loading is disabled, or lockdown refuses an \
             unsigned module"
        }
        Errno::EEXIST => "a module of that name is already loaded",
        Errno::ENOEXEC => "not a module this kernel can load (another architecture, or corrupt)",
        Errno::EINVAL => {
            "the kernel refused the module (a vermagic or symbol version mismatch, or the live patch could not be \
             enabled — another patch it conflicts with; see dmesg)"
        }
        Errno::ENOENT => {
            "the module needs a symbol or an object the running kernel does not have (see dmesg)"
        }
        Errno::EBUSY => "another live patch is in transition: wait for it, then try again",
        _ => "see dmesg for the kernel's reason",
    }
}

fn explain_unload(errno: Errno) -> &'static str {
    match errno {
        Errno::EBUSY | Errno::EAGAIN => {
            ": the module is still in use (a live patch must be disabled, and its transition finished, before its \
             module can go)"
        }
        Errno::EPERM => ": not permitted (kup must be root)",
        _ => "",
    }
}

impl From<LivepatchError> for HostError {
    fn from(e: LivepatchError) -> Self {
        HostError::Livepatch(Box::new(e))
    }
}

fn read_trimmed(path: &Path) -> Result<String, HostError> {
    std::fs::read_to_string(path)
        .map(|t| t.trim().to_owned())
        .map_err(|e| HostError::io(format!("cannot read {}", path.display()), e))
}

/// `/sys/kernel/livepatch/NAME` under `root`.
fn patch_dir(root: &SysfsRoot, name: &str) -> PathBuf {
    root.resolve(Path::new("/sys/kernel/livepatch")).join(name)
}

/// `/sys/kernel/livepatch` exists.
pub fn check_support(root: &SysfsRoot) -> Result<(), HostError> {
    let path = root.resolve(Path::new("/sys/kernel/livepatch"));
    if path.is_dir() {
        Ok(())
    } else {
        Err(LivepatchError::Unsupported { path }.into())
    }
}

/// Why the running kernel would refuse an unsigned module, if it would: lockdown (any mode but `none`) or
/// `module.sig_enforce`.
pub fn signature_required(root: &SysfsRoot) -> Option<String> {
    let enforce = root.resolve(Path::new("/sys/module/module/parameters/sig_enforce"));
    if read_trimmed(&enforce).is_ok_and(|v| v == "Y") {
        return Some(format!(
            "module signatures are enforced ({} is Y: module.sig_enforce=1 or CONFIG_MODULE_SIG_FORCE)",
            enforce.display()
        ));
    }
    let lockdown = root.resolve(Path::new("/sys/kernel/security/lockdown"));
    let text = read_trimmed(&lockdown).ok()?;
    let mode = text
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))?;
    (mode != "none").then(|| {
        format!(
            "the kernel is locked down ({} is [{mode}], as under Secure Boot): only signed modules load",
            lockdown.display()
        )
    })
}

/// The running kernel's release, as `uname -r` prints it.
pub fn running_release(root: &SysfsRoot) -> Result<String, HostError> {
    read_trimmed(&root.resolve(Path::new("/proc/sys/kernel/osrelease")))
}

/// Checks that the module at `path` is a live patch named `name` built for the running kernel, not yet loaded, and
/// loadable as far as its signature goes.
pub fn check_module(
    root: &SysfsRoot,
    path: &Path,
    name: &str,
) -> Result<LivepatchModule, HostError> {
    let bytes = std::fs::read(path)
        .map_err(|e| HostError::io(format!("cannot read {}", path.display()), e))?;
    let info = modinfo(&bytes).map_err(|source| LivepatchError::Modinfo {
        path: path.to_owned(),
        source,
    })?;
    if !info.is_livepatch() {
        return Err(LivepatchError::NotLivepatch {
            path: path.to_owned(),
        }
        .into());
    }
    let found = info.name().unwrap_or_default();
    if found != name {
        return Err(LivepatchError::NameMismatch {
            path: path.to_owned(),
            found: found.to_owned(),
            expected: name.to_owned(),
        }
        .into());
    }
    let running = running_release(root)?;
    let module_release = info.vermagic_release().unwrap_or_default();
    if module_release != running {
        return Err(LivepatchError::WrongRelease {
            path: path.to_owned(),
            module_release: module_release.to_owned(),
            running,
        }
        .into());
    }
    if patch_dir(root, name).exists() {
        return Err(LivepatchError::AlreadyLoaded {
            name: name.to_owned(),
        }
        .into());
    }
    let disabled = root.resolve(Path::new("/proc/sys/kernel/modules_disabled"));
    if read_trimmed(&disabled).is_ok_and(|v| v == "1") {
        return Err(LivepatchError::ModulesDisabled.into());
    }
    let signed = bytes.ends_with(SIGNATURE_MARKER);
    if !signed && let Some(why) = signature_required(root) {
        return Err(LivepatchError::Unsigned {
            path: path.to_owned(),
            why,
        }
        .into());
    }
    Ok(LivepatchModule {
        name: found.to_owned(),
        release: running,
        signed,
        size: bytes.len() as u64,
    })
}

/// `finit_module(fd, "", 0)`.
pub fn load(path: &Path) -> Result<(), HostError> {
    let file = std::fs::File::open(path)
        .map_err(|e| HostError::io(format!("cannot open {}", path.display()), e))?;
    nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()).map_err(|errno| {
        LivepatchError::Load {
            path: path.to_owned(),
            errno,
        }
        .into()
    })
}

/// The patch's state as sysfs shows it now.
pub fn state(root: &SysfsRoot, name: &str) -> Result<LivepatchState, HostError> {
    let dir = patch_dir(root, name);
    if !dir.exists() {
        return Ok(LivepatchState {
            name: name.to_owned(),
            loaded: false,
            enabled: false,
            transition: false,
            waited_ms: None,
        });
    }
    Ok(LivepatchState {
        name: name.to_owned(),
        loaded: true,
        enabled: read_trimmed(&dir.join("enabled"))? == "1",
        transition: read_trimmed(&dir.join("transition"))? == "1",
        waited_ms: None,
    })
}

/// The entries of `dir` named by a number (`/proc`'s processes, a process's tasks), in numeric order; none when
/// it cannot be read (a process that has just exited).
fn numbered_entries(dir: &Path) -> Vec<(u64, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut numbered: Vec<(u64, PathBuf)> = entries
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path())))
        .collect();
    numbered.sort();
    numbered
}

/// Tasks whose `patch_state` is neither "not in a transition" (-1) nor `target`: "PID/TID (comm)".
pub fn lagging_tasks(root: &SysfsRoot, target: &str) -> Vec<String> {
    let proc = root.resolve(Path::new("/proc"));
    let mut found = Vec::new();
    for (pid, dir) in numbered_entries(&proc) {
        for (tid, task) in numbered_entries(&dir.join("task")) {
            let Ok(state) = read_trimmed(&task.join("patch_state")) else {
                continue;
            };
            if state != "-1" && state != target {
                let comm = read_trimmed(&task.join("comm")).unwrap_or_else(|_| "?".to_owned());
                found.push(format!("{pid}/{tid} ({comm})"));
            }
        }
    }
    let total = found.len();
    if total > MAX_TASKS_NAMED {
        found.truncate(MAX_TASKS_NAMED);
        found.push(format!("and {} more", total - MAX_TASKS_NAMED));
    }
    found
}

/// A wait on the kernel: polls 1 ms apart at first, doubling up to [`POLL`], until `timeout` has passed.
struct Poll {
    t0: Instant,
    timeout: Duration,
    pause: Duration,
}

impl Poll {
    fn new(timeout: Duration) -> Self {
        Self {
            t0: Instant::now(),
            timeout,
            pause: Duration::from_millis(1),
        }
    }

    fn expired(&self) -> bool {
        self.t0.elapsed() >= self.timeout
    }

    /// Sleeps until the next poll.
    fn sleep(&mut self) {
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(POLL);
    }

    fn waited_ms(&self) -> Option<u64> {
        Some(millis(self.t0.elapsed()))
    }

    /// The transition (`patching`: to the patched state; else back) that did not end in time, with the tasks
    /// holding it up.
    fn transition_timed_out(&self, root: &SysfsRoot, name: &str, patching: bool) -> HostError {
        LivepatchError::Transition {
            name: name.to_owned(),
            patching,
            timeout_ms: millis(self.timeout),
            tasks: lagging_tasks(root, if patching { "1" } else { "0" }),
        }
        .into()
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Waits until the loaded patch's `transition` reads 0, then checks `enabled` reads 1.
pub fn wait_transition(
    root: &SysfsRoot,
    name: &str,
    timeout: Duration,
) -> Result<LivepatchState, HostError> {
    let mut poll = Poll::new(timeout);
    loop {
        let now = state(root, name)?;
        if !now.loaded {
            return Err(LivepatchError::NotLoaded {
                name: name.to_owned(),
                module_loaded: root.resolve(Path::new("/sys/module")).join(name).exists(),
            }
            .into());
        }
        if !now.transition {
            if !now.enabled {
                let enabled = read_trimmed(&patch_dir(root, name).join("enabled"))?;
                return Err(LivepatchError::NotEnabled {
                    name: name.to_owned(),
                    enabled,
                }
                .into());
            }
            return Ok(LivepatchState {
                waited_ms: poll.waited_ms(),
                ..now
            });
        }
        if poll.expired() {
            return Err(poll.transition_timed_out(root, name, true));
        }
        poll.sleep();
    }
}

/// Checks the patch: loaded, enabled, settled (`loaded`), or gone with its module (`!loaded`).
pub fn check(root: &SysfsRoot, name: &str, loaded: bool) -> Result<LivepatchState, HostError> {
    let now = state(root, name)?;
    let module = root.resolve(Path::new("/sys/module")).join(name);
    match (loaded, now.loaded) {
        (true, false) => Err(LivepatchError::NotLoaded {
            name: name.to_owned(),
            module_loaded: module.exists(),
        }
        .into()),
        (true, true) if !now.enabled => Err(LivepatchError::NotEnabled {
            name: name.to_owned(),
            enabled: "0".to_owned(),
        }
        .into()),
        (true, true) if now.transition => Err(LivepatchError::Transition {
            name: name.to_owned(),
            patching: true,
            timeout_ms: 0,
            tasks: lagging_tasks(root, "1"),
        }
        .into()),
        (false, true) => Err(LivepatchError::StillLoaded {
            name: name.to_owned(),
            what: format!("{} exists", patch_dir(root, name).display()),
        }
        .into()),
        (false, false) if module.exists() => Err(LivepatchError::StillLoaded {
            name: name.to_owned(),
            what: format!("its module is loaded ({} exists)", module.display()),
        }
        .into()),
        _ => Ok(now),
    }
}

/// Disables the patch (write 0 to `enabled`) and waits until the kernel has freed it (its directory gone).
pub fn disable(
    root: &SysfsRoot,
    name: &str,
    timeout: Duration,
) -> Result<LivepatchState, HostError> {
    let dir = patch_dir(root, name);
    if !dir.exists() {
        return state(root, name);
    }
    let mut poll = Poll::new(timeout);
    let enabled = dir.join("enabled");
    if read_trimmed(&enabled)? == "1" {
        std::fs::write(&enabled, "0")
            .map_err(|e| HostError::io(format!("cannot write 0 to {}", enabled.display()), e))?;
    }
    while dir.exists() {
        if poll.expired() {
            return Err(poll.transition_timed_out(root, name, false));
        }
        poll.sleep();
    }
    Ok(LivepatchState {
        waited_ms: poll.waited_ms(),
        ..state(root, name)?
    })
}

/// `delete_module(name, O_NONBLOCK)`, retried while the module is busy; nothing when it is not loaded.
pub fn unload(name: &str, timeout: Duration) -> Result<(), HostError> {
    let c_name = CString::new(name).map_err(|_| {
        HostError::check(format!(
            "{name:?} is not a module name (it holds a NUL byte)"
        ))
    })?;
    let mut poll = Poll::new(timeout);
    loop {
        match nix::kmod::delete_module(&c_name, nix::kmod::DeleteModuleFlags::O_NONBLOCK) {
            Ok(()) | Err(Errno::ENOENT) => return Ok(()),
            Err(Errno::EBUSY | Errno::EAGAIN) if !poll.expired() => poll.sleep(),
            Err(errno) => {
                return Err(LivepatchError::Unload {
                    name: name.to_owned(),
                    errno,
                }
                .into());
            }
        }
    }
}
