//! A digest of a shared-RAM guest's RAM files, recorded by its save and checked first by its restore: the state file
//! holds device state only, so a RAM file that did not survive (a power cut or a cold boot wiped the persistent
//! memory, the file was recreated) would otherwise be loaded under the saved devices and run the guest on garbage.
//!
//! Sampling, not hashing the whole file: [`RAM_DIGEST_PAGES`] pages spread evenly over the file, plus its first and
//! its last page, at most 1026 reads of 4 KiB inside the guest's downtime. Measured on this lab machine (a 1 GiB
//! file of random bytes on the lab disk, release and debug builds alike): 4–5 ms with the page cache warm, as it is
//! at the save; 85 ms once the file's cache was dropped (`POSIX_FADV_DONTNEED`), as after a kexec onto a disk file
//! system (on DAX pmem there is no cache to miss); `sha256sum` of the whole file took 3 s, and grows with the guest.
//! Sampling is enough for what it must catch: RAM that is lost is lost
//! as a whole region — it reads as zeros, or as another file system's blocks, or the file is shorter or gone — and
//! any lost region larger than 1/1024 of the file contains a sampled page. The hash also covers the file's size,
//! the page size and every sampled offset, so a file of another size or a different sampling never matches.
//!
//! The limits, documented in docs/drivers.md: a change of a few pages between samples is not seen (the digest
//! proves the region survived, not that every byte did); and a guest whose sampled pages were all zero at the
//! save cannot be told from a wiped, zeroed file, since both read as zeros. The record counts the non-zero sampled
//! pages (`nonzero_pages`), so such a weak digest is visible in the journal; the lab's guests have none.

use super::qmp::QmpClient;
use super::{HostError, SysfsRoot, journal_files, vm};
use crate::action::{ActionOutput, RAM_DIGEST_PAGES, RamDigest};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

/// The unit sampled: the smallest page a RAM backend is mapped with.
const PAGE: u64 = 4096;
/// Hashed first, so that a change of the sampling (a later kup) never matches an older record by accident.
const TAG: &[u8] = b"kup-ram-digest-1\0";

/// The file beside the state file, as JSON.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The format's version.
    kup_ram_digest: u32,
    /// One digest per RAM backend file.
    backends: Vec<RamDigest>,
}

/// The offsets sampled in a file of `size` bytes: page-aligned, the first and the last page and
/// [`RAM_DIGEST_PAGES`] spread evenly between, each once (a small file has fewer).
pub(crate) fn sample_offsets(size: u64) -> Vec<u64> {
    if size == 0 {
        return Vec::new();
    }
    let pages = size.div_ceil(PAGE);
    let mut chosen = std::collections::BTreeSet::from([0, pages - 1]);
    for i in 0..RAM_DIGEST_PAGES {
        let page = u128::from(i) * u128::from(pages) / u128::from(RAM_DIGEST_PAGES);
        chosen.insert(u64::try_from(page).unwrap_or(pages - 1));
    }
    chosen.into_iter().map(|p| p * PAGE).collect()
}

/// The digest of the file at `mem_path` as it is now.
pub(crate) fn digest(id: &str, mem_path: &str) -> std::io::Result<RamDigest> {
    let file = std::fs::File::open(mem_path)?;
    let size = file.metadata()?.len();
    let offsets = sample_offsets(size);
    let mut hash = Sha256::new();
    hash.update(TAG);
    hash.update(size.to_le_bytes());
    hash.update(PAGE.to_le_bytes());
    hash.update((offsets.len() as u64).to_le_bytes());
    let mut page = vec![0u8; PAGE as usize];
    let mut nonzero = 0;
    for &offset in &offsets {
        let len = usize::try_from(PAGE.min(size - offset)).unwrap_or(PAGE as usize);
        let bytes = &mut page[..len];
        file.read_exact_at(bytes, offset)?;
        hash.update(offset.to_le_bytes());
        hash.update(&*bytes);
        if bytes.iter().any(|b| *b != 0) {
            nonzero += 1;
        }
    }
    Ok(RamDigest {
        id: id.to_owned(),
        mem_path: mem_path.to_owned(),
        size,
        page_size: PAGE,
        pages: offsets.len() as u64,
        nonzero_pages: nonzero,
        sha256: hex(&hash.finalize()),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Why the file is not the one saved, or `None` when size and digest match.
pub(crate) fn mismatch(saved: &RamDigest, now: &std::io::Result<RamDigest>) -> Option<String> {
    let path = &saved.mem_path;
    match now {
        Err(e) => Some(format!("{path} cannot be read ({e})")),
        Ok(now) if now.size != saved.size => Some(format!(
            "{path} is {} bytes, but the save recorded {}",
            now.size, saved.size
        )),
        Ok(now) if now.sha256 != saved.sha256 => Some(format!(
            "the sampled pages of {path} differ from the save's ({} of {} sampled pages non-zero now, {} at the \
             save)",
            now.nonzero_pages, now.pages, saved.nonzero_pages
        )),
        Ok(_) => None,
    }
}

fn took_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Performs [`crate::action::Action::RecordRamDigest`]: the backends as the preflight checked them, each digested,
/// written atomically and fsynced to `record`.
pub(crate) fn record(
    client: &mut QmpClient,
    sysfs: &SysfsRoot,
    record: &Path,
) -> Result<ActionOutput, HostError> {
    let started = Instant::now();
    let backends = vm::check_shared_ram(client, sysfs, None)?;
    let mut digests = Vec::new();
    for b in &backends {
        digests.push(digest(&b.id, &b.mem_path).map_err(|e| {
            HostError::io(format!("RAM file {} of backend {:?}", b.mem_path, b.id), e)
        })?);
    }
    let text = serde_json::to_vec_pretty(&Record {
        kup_ram_digest: 1,
        backends: digests.clone(),
    })
    .unwrap_or_default();
    journal_files::write_atomic(record, &text)
        .map_err(|e| HostError::io(format!("cannot write {}", record.display()), e))?;
    Ok(ActionOutput::RamDigest {
        ram_digest: digests,
        checked: false,
        ms: took_ms(started),
    })
}

/// The RAM files a save's digest `record` names, for the flush before the kexec.
pub(crate) fn ram_files(record: &Path) -> Result<Vec<String>, HostError> {
    let bytes = std::fs::read(record)
        .map_err(|e| HostError::io(format!("RAM digest record {}", record.display()), e))?;
    let saved: Record = serde_json::from_slice(&bytes).map_err(|e| {
        HostError::check(format!(
            "{} is not a RAM digest kup wrote ({e}): it cannot say which RAM files to make durable",
            record.display()
        ))
    })?;
    Ok(saved.backends.into_iter().map(|b| b.mem_path).collect())
}

/// Performs [`crate::action::Action::CheckRamDigest`]: every file of `record` as it was at the save, or a refusal
/// that keeps `state` and says what the operator can do.
pub(crate) fn check(record: &Path, state: &Path) -> Result<ActionOutput, HostError> {
    let started = Instant::now();
    let saved: Record = match std::fs::read(record) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
            refusal(
                &format!(
                    "{} is not a RAM digest kup wrote ({e}), so nothing proves the RAM file still holds the \
                     guest's memory",
                    record.display()
                ),
                record,
                state,
            )
        })?,
        Err(e) => {
            return Err(refusal(
                &format!(
                    "no RAM digest could be read from {} ({e}), so nothing proves the RAM file still holds the \
                     guest's memory",
                    record.display()
                ),
                record,
                state,
            ));
        }
    };
    let mut checked = Vec::new();
    for b in &saved.backends {
        let now = digest(&b.id, &b.mem_path);
        if let Some(why) = mismatch(b, &now) {
            return Err(refusal(
                &format!(
                    "the guest's RAM in {} is not what was saved: {why}",
                    b.mem_path
                ),
                record,
                state,
            ));
        }
        checked.extend(now.ok());
    }
    Ok(ActionOutput::RamDigest {
        ram_digest: checked,
        checked: true,
        ms: took_ms(started),
    })
}

fn refusal(why: &str, record: &Path, state: &Path) -> HostError {
    HostError::check(format!(
        "{why}. A power cut or a cold boot may have wiped the persistent memory holding it (or the file was \
         recreated); the saved device state loaded onto it would run the guest on garbage, so no QEMU was ended \
         or started. Nothing was deleted: the state file is kept at {}. Start the guest cold from its disks (its \
         QEMU without `-incoming`) and discard the state (remove {} and the records beside it, {}); or, if the RAM \
         file can be brought back as it was, put it back and run `kup plan resume` to check again",
        state.display(),
        state.display(),
        record.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::action::RAM_DIGEST_PAGES;

    #[test]
    fn the_samples_are_the_first_and_last_page_and_an_even_spread() {
        assert!(sample_offsets(0).is_empty());
        assert_eq!(sample_offsets(1), [0]);
        assert_eq!(sample_offsets(3 * PAGE), [0, PAGE, 2 * PAGE]);
        let size = 256 << 20;
        let offsets = sample_offsets(size);
        assert_eq!(offsets.len() as u64, RAM_DIGEST_PAGES + 1);
        assert_eq!(offsets[0], 0);
        assert_eq!(*offsets.last().unwrap(), size - PAGE);
        // Evenly: 256 MiB / 1024 = one sample every 256 KiB.
        assert_eq!(offsets[1], 256 << 10);
        assert!(offsets.iter().all(|o| o % PAGE == 0));
        // A size that is no multiple of a page: the last, partial page is sampled.
        let odd = sample_offsets(10 * PAGE + 5);
        assert_eq!(*odd.last().unwrap(), 10 * PAGE);
    }

    fn file(bytes: &[u8]) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ram");
        std::fs::write(&path, bytes).unwrap();
        (dir, path.display().to_string())
    }

    fn ram(pages: usize) -> Vec<u8> {
        (0..pages * PAGE as usize)
            .map(|i| (i % 251) as u8 + 1)
            .collect()
    }

    #[test]
    fn a_lost_region_a_wipe_a_resize_or_a_missing_file_is_found() {
        let bytes = ram(4096);
        let (_dir, path) = file(&bytes);
        let saved = digest("mem", &path).unwrap();
        assert_eq!(saved.pages, RAM_DIGEST_PAGES + 1);
        assert_eq!(saved.nonzero_pages, saved.pages);
        assert_eq!(mismatch(&saved, &digest("mem", &path)), None);
        let write_at = |at: usize, with: &[u8]| {
            let mut b = bytes.clone();
            b[at..at + with.len()].copy_from_slice(with);
            std::fs::write(&path, b).unwrap();
        };
        // A few pages at the start (as the rehearsal test's `dd` does), and a region in the middle.
        write_at(0, &[0xAA; 3 * PAGE as usize]);
        let why = mismatch(&saved, &digest("mem", &path)).unwrap();
        assert!(
            why.contains("sampled pages") && why.contains(&path),
            "{why}"
        );
        write_at(1 << 23, &[0; 1 << 20]);
        assert!(mismatch(&saved, &digest("mem", &path)).is_some());
        // Wiped to zeros: every sampled page reads zero now.
        std::fs::write(&path, vec![0; bytes.len()]).unwrap();
        let why = mismatch(&saved, &digest("mem", &path)).unwrap();
        assert!(
            why.contains("0 of 1025 sampled pages non-zero now, 1025 at the save"),
            "{why}"
        );
        // Another size.
        std::fs::write(&path, &bytes[..bytes.len() - PAGE as usize]).unwrap();
        let why = mismatch(&saved, &digest("mem", &path)).unwrap();
        assert!(why.contains("bytes, but the save recorded"), "{why}");
        // Gone.
        std::fs::remove_file(&path).unwrap();
        let why = mismatch(&saved, &digest("mem", &path)).unwrap();
        assert!(why.contains("cannot be read"), "{why}");
        // Restored as it was: equal again.
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(mismatch(&saved, &digest("mem", &path)), None);
    }

    #[test]
    fn a_guest_with_all_zero_samples_is_a_weak_digest_and_says_so() {
        // The limit: zeros at the save and zeros after a wipe cannot be told apart — only counted.
        let (_dir, path) = file(&vec![0; 64 * PAGE as usize]);
        let saved = digest("mem", &path).unwrap();
        assert_eq!((saved.pages, saved.nonzero_pages), (64, 0));
        // The same size of zeros elsewhere still differs from another size, and from a file of any content.
        let (_other, bigger) = file(&vec![0; 65 * PAGE as usize]);
        assert_ne!(digest("mem", &bigger).unwrap().sha256, saved.sha256);
        let mut one = vec![0; 64 * PAGE as usize];
        one[PAGE as usize * 63] = 1;
        std::fs::write(&path, one).unwrap();
        assert!(mismatch(&saved, &digest("mem", &path)).is_some());
    }

    #[test]
    fn the_restore_refuses_keeping_the_state_file_and_saying_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (_ram_dir, path) = file(&ram(16));
        let record = dir.path().join("vmstate.ram-digest");
        let state = dir.path().join("vmstate");
        std::fs::write(&state, b"devices").unwrap();
        // No record.
        let e = check(&record, &state).unwrap_err().to_string();
        assert!(e.contains("no RAM digest could be read"), "{e}");
        let saved = Record {
            kup_ram_digest: 1,
            backends: vec![digest("mem", &path).unwrap()],
        };
        std::fs::write(&record, serde_json::to_vec(&saved).unwrap()).unwrap();
        match check(&record, &state).unwrap() {
            ActionOutput::RamDigest {
                ram_digest,
                checked,
                ..
            } => {
                assert!(checked);
                assert_eq!(ram_digest, saved.backends);
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&path, vec![0; 16 * PAGE as usize]).unwrap();
        let e = check(&record, &state).unwrap_err().to_string();
        for part in [
            &format!("the guest's RAM in {path} is not what was saved"),
            "power cut or a cold boot",
            &format!("the state file is kept at {}", state.display()),
            "Start the guest cold from its disks",
            "discard the state",
        ] {
            assert!(e.contains(part), "{part:?} not in {e}");
        }
        assert!(state.exists(), "nothing is deleted");
        std::fs::write(&record, b"{").unwrap();
        let e = check(&record, &state).unwrap_err().to_string();
        assert!(e.contains("not a RAM digest kup wrote"), "{e}");
    }
}
