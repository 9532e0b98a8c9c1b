//! Making guest RAM and kup's files durable before the kexec without a host-wide `sync(2)`: the shared-RAM guests'
//! RAM files written back while the guests still run (the preflush), then inside their downtime one `syncfs` per
//! file system that holds what must survive, which writes only what was dirtied since — a host-wide `sync(2)` would
//! also wait for every other process's dirty data, and did for 418 ms of a 0.5 s downtime (docs/benchmarks.md).
//!
//! A RAM file on a DAX mount has no page cache: the guest's stores go to the device itself, so it is never
//! flushed. Only the file systems of non-DAX RAM files and of the directories named are synced.

use super::qmp::QmpClient;
use super::{HostError, SysfsRoot, ram_backing, ram_digest, vm};
use crate::action::{Preflushed, Synced};
use std::fs::File;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A pass this short means what is left would cost the downtime about as much as a journal commit: stop.
const SETTLED: Duration = Duration::from_millis(10);
/// A bound on passes whatever the budget: a guest that dirties exactly as fast as the disk writes would otherwise
/// keep a pass just under the previous one.
const MAX_PASSES: usize = 8;

fn took_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Opens a RAM file for `fdatasync`: read-only, and non-blocking so that a path that is no regular file (QEMU was
/// told a FIFO) cannot hang the step.
fn open_ram_file(path: &str) -> Result<File, HostError> {
    let context = || format!("RAM file {path}");
    let meta = std::fs::metadata(path).map_err(|e| HostError::io(context(), e))?;
    if !meta.is_file() {
        return Err(HostError::check(format!(
            "RAM file {path} is no regular file: kup cannot make it durable"
        )));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|e| HostError::io(context(), e))
}

/// The non-DAX files of `paths` (to flush) and the DAX ones (skipped), in order.
fn split_dax(
    sysfs: &SysfsRoot,
    paths: Vec<String>,
) -> Result<(Vec<String>, Vec<String>), HostError> {
    let mut flushed = Vec::new();
    let mut dax = Vec::new();
    for path in paths {
        if ram_backing::backing(sysfs, Path::new(&path))?.dax {
            dax.push(path);
        } else {
            flushed.push(path);
        }
    }
    Ok((flushed, dax))
}

/// `dir`, or its nearest ancestor that exists: a directory not created yet will be on that one's file system.
fn existing(dir: &Path) -> Option<&Path> {
    dir.ancestors().find(|a| a.exists())
}

/// One open file or directory per distinct file system (by device) among `paths`, each with its mount point
/// for the journal (the path itself when mountinfo does not say).
fn file_systems(sysfs: &SysfsRoot, paths: &[PathBuf]) -> Result<Vec<(PathBuf, File)>, HostError> {
    let mountinfo = std::fs::read_to_string(sysfs.resolve(Path::new("/proc/self/mountinfo")))
        .unwrap_or_default();
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for path in paths {
        let Some(path) = existing(path) else { continue };
        let meta = std::fs::metadata(path)
            .map_err(|e| HostError::io(format!("cannot stat {}", path.display()), e))?;
        if seen.contains(&meta.dev()) {
            continue;
        }
        seen.push(meta.dev());
        // Non-blocking: a path that turned into a FIFO since it was recorded cannot hang the flush.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(path)
            .map_err(|e| HostError::io(format!("cannot open {}", path.display()), e))?;
        let dev = (
            nix::sys::stat::major(meta.dev()),
            nix::sys::stat::minor(meta.dev()),
        );
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
        let label = ram_backing::find_mount(&mountinfo, dev, &canonical)
            .map_or_else(|| path.to_owned(), |m| m.mount_point);
        out.push((label, file));
    }
    Ok(out)
}

/// `syncfs` on each of `fss`, in order.
fn syncfs_all(fss: &[(PathBuf, File)]) -> Result<(), HostError> {
    for (label, file) in fss {
        nix::unistd::syncfs(file)
            .map_err(|e| HostError::io(format!("syncfs {}", label.display()), e.into()))?;
    }
    Ok(())
}

/// The RAM files, then the directories: the paths whose file systems a flush covers.
fn flushed_paths(ram_files: &[String], dirs: &[PathBuf]) -> Vec<PathBuf> {
    ram_files
        .iter()
        .map(PathBuf::from)
        .chain(dirs.iter().cloned())
        .collect()
}

/// Why passes stop, given the passes so far and the time since the first began. The remainder is measured as time:
/// a pass writes back what was dirtied since the previous one, so its duration is what the flush inside the
/// downtime would cost had the guests stopped then. The kernel counts dirty pages per file only in `cachestat(2)`,
/// which neither std nor nix wraps (and `unsafe` stays in the kexec module); /proc/meminfo's Dirty is host-wide
/// and moves with every other writer.
pub(crate) fn stop_reason(
    passes: &[Duration],
    elapsed: Duration,
    budget: Duration,
) -> Option<&'static str> {
    let last = *passes.last()?;
    if last <= SETTLED {
        Some("settled")
    } else if passes.len() >= 2 && last >= passes[passes.len() - 2] {
        Some("not-shrinking")
    } else if elapsed >= budget || passes.len() >= MAX_PASSES {
        Some("budget")
    } else {
        None
    }
}

/// The RAM files of the shared-RAM guest behind `client`, as the preflight checked them.
pub(crate) fn ram_files_of(
    client: &mut QmpClient,
    sysfs: &SysfsRoot,
) -> Result<Vec<String>, HostError> {
    Ok(vm::check_shared_ram(client, sysfs, None)?
        .into_iter()
        .map(|b| b.mem_path)
        .collect())
}

/// Performs [`crate::action::Action::Preflush`] on the guests' RAM files `paths` (from [`ram_files_of`]).
pub(crate) fn preflush(
    sysfs: &SysfsRoot,
    paths: Vec<String>,
    dirs: &[PathBuf],
    budget: Duration,
) -> Result<Preflushed, HostError> {
    let (ram_files, dax_skipped) = split_dax(sysfs, paths)?;
    let files = ram_files
        .iter()
        .map(|p| open_ram_file(p))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let mut passes = Vec::new();
    let stopped = if files.is_empty() {
        "no-ram-files"
    } else {
        loop {
            let pass = Instant::now();
            for (file, path) in files.iter().zip(&ram_files) {
                file.sync_data()
                    .map_err(|e| HostError::io(format!("fdatasync {path}"), e))?;
            }
            passes.push(pass.elapsed());
            if let Some(reason) = stop_reason(&passes, started.elapsed(), budget) {
                break reason;
            }
        }
    };
    let fss = file_systems(sysfs, &flushed_paths(&ram_files, dirs))?;
    let syncfs = Instant::now();
    syncfs_all(&fss)?;
    Ok(Preflushed {
        ram_files,
        dax_skipped,
        passes_ms: passes
            .iter()
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .collect(),
        stopped,
        file_systems: fss.into_iter().map(|(label, _)| label).collect(),
        syncfs_ms: took_ms(syncfs),
    })
}

/// Performs [`crate::action::Action::SyncFs`]: the RAM files named by the digest records (each save wrote its
/// record once the guest's RAM stopped changing) and `dirs`, one `syncfs` per file system.
pub(crate) fn sync_fs(
    sysfs: &SysfsRoot,
    ram_records: &[PathBuf],
    dirs: &[PathBuf],
) -> Result<Synced, HostError> {
    let started = Instant::now();
    let mut paths = Vec::new();
    for record in ram_records {
        paths.extend(ram_digest::ram_files(record)?);
    }
    let (ram_files, dax_skipped) = split_dax(sysfs, paths)?;
    let fss = file_systems(sysfs, &flushed_paths(&ram_files, dirs))?;
    syncfs_all(&fss)?;
    Ok(Synced {
        file_systems: fss.into_iter().map(|(label, _)| label).collect(),
        dax_skipped,
        ms: took_ms(started),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;
    const BUDGET: Duration = Duration::from_secs(10);

    #[test]
    fn passes_go_on_while_they_shrink() {
        assert_eq!(stop_reason(&[], MS(0), BUDGET), None);
        assert_eq!(stop_reason(&[MS(900)], MS(900), BUDGET), None);
        assert_eq!(stop_reason(&[MS(900), MS(200)], MS(1100), BUDGET), None);
    }

    #[test]
    fn passes_stop_when_settled_not_shrinking_or_out_of_time() {
        assert_eq!(
            stop_reason(&[MS(900), MS(8)], MS(908), BUDGET),
            Some("settled")
        );
        assert_eq!(stop_reason(&[MS(3)], MS(3), BUDGET), Some("settled"));
        assert_eq!(
            stop_reason(&[MS(300), MS(320)], MS(620), BUDGET),
            Some("not-shrinking")
        );
        assert_eq!(
            stop_reason(&[MS(9_000), MS(1_500)], MS(10_500), BUDGET),
            Some("budget")
        );
        let many = vec![MS(100); 1]
            .into_iter()
            .chain((0..7).map(|i| MS(90 - i)))
            .collect::<Vec<_>>();
        assert_eq!(stop_reason(&many, MS(700), BUDGET), Some("budget"));
    }

    #[test]
    fn one_file_system_is_synced_once_and_a_missing_dir_counts_as_its_parent() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a");
        std::fs::create_dir(&a).unwrap();
        let later = tmp.path().join("not-yet/deeper");
        let fss = file_systems(
            &SysfsRoot::default(),
            &[a.clone(), later, tmp.path().into()],
        )
        .unwrap();
        assert_eq!(
            fss.len(),
            1,
            "{:?}",
            fss.iter().map(|f| &f.0).collect::<Vec<_>>()
        );
        syncfs_all(&fss).unwrap();
    }

    /// A root whose mountinfo says the file system holding `file` is mounted with `options`.
    fn mounted(file: &Path, options: &str) -> (tempfile::TempDir, SysfsRoot) {
        let root = tempfile::tempdir().unwrap();
        let dev = std::fs::metadata(file).unwrap().dev();
        let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        std::fs::write(
            root.path().join("proc/self/mountinfo"),
            format!(
                "36 1 {major}:{minor} / / rw,relatime shared:1 - ext4 /dev/pmem0 rw,{options}\n"
            ),
        )
        .unwrap();
        let sysfs = SysfsRoot::new(root.path());
        (root, sysfs)
    }

    /// A digest record naming `ram` as the save writes it.
    fn record_naming(dir: &Path, ram: &Path) -> PathBuf {
        let record = dir.join("vmstate.ram-digest");
        let text = serde_json::json!({"kup_ram_digest": 1, "backends": [{
            "id": "mem", "mem_path": ram.display().to_string(), "size": 4096, "page_size": 4096,
            "pages": 1, "nonzero_pages": 1, "sha256": "00"}]});
        std::fs::write(&record, text.to_string()).unwrap();
        record
    }

    #[test]
    fn ram_on_a_dax_mount_is_not_flushed_and_ram_elsewhere_is() {
        let tmp = tempfile::tempdir().unwrap();
        let ram = tmp.path().join("ram");
        std::fs::write(&ram, vec![1u8; 4096]).unwrap();
        let record = record_naming(tmp.path(), &ram);
        let (_root, dax) = mounted(&ram, "dax");
        let synced = sync_fs(&dax, std::slice::from_ref(&record), &[]).unwrap();
        assert_eq!(synced.dax_skipped, [ram.display().to_string()]);
        assert!(synced.file_systems.is_empty(), "{synced:?}");
        let (_root, disk) = mounted(&ram, "data=ordered");
        let synced = sync_fs(&disk, &[record], &[]).unwrap();
        assert!(synced.dax_skipped.is_empty());
        assert_eq!(synced.file_systems, [PathBuf::from("/")]);
        let (ram_files, dax_skipped) = split_dax(&dax, vec![ram.display().to_string()]).unwrap();
        assert!(ram_files.is_empty() && dax_skipped.len() == 1);
    }

    #[test]
    fn a_preflush_without_ram_files_syncs_the_directories_once() {
        let tmp = tempfile::tempdir().unwrap();
        let done = preflush(
            &SysfsRoot::default(),
            Vec::new(),
            &[tmp.path().into()],
            BUDGET,
        )
        .unwrap();
        assert_eq!(done.stopped, "no-ram-files");
        assert!(done.passes_ms.is_empty());
        assert_eq!(done.file_systems.len(), 1);
    }

    #[test]
    fn a_preflush_of_a_written_file_makes_passes_until_it_settles() {
        let tmp = tempfile::tempdir().unwrap();
        let ram = tmp.path().join("ram");
        std::fs::write(&ram, vec![7u8; 4 << 20]).unwrap();
        let (_root, disk) = mounted(&ram, "data=ordered");
        let done = preflush(&disk, vec![ram.display().to_string()], &[], BUDGET).unwrap();
        assert_eq!(done.ram_files, [ram.display().to_string()]);
        // Nothing writes the file during the passes: they end long before the budget (settled, or a pass on a
        // loaded disk no shorter than the one before).
        assert!(
            ["settled", "not-shrinking"].contains(&done.stopped),
            "{done:?}"
        );
        assert!(!done.passes_ms.is_empty() && done.passes_ms.len() < MAX_PASSES);
    }

    #[test]
    fn a_ram_path_that_is_no_regular_file_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let err = open_ram_file(tmp.path().to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("no regular file"), "{err}");
    }
}
