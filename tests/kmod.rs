//! `kup::kmod` reads real modules: the lab's own live patch as `lab/build-livepatch` built it (and its
//! wrong-release copy), and every module the Debian lab kernel ships (signed, so with a signature appended).
//!
//! Needs `lab/setup` (which builds the live patch) in `target/lab/` or `$KUP_LAB_DIR`. Without a lab these tests
//! print a note and pass: the unit tests in `src/kmod.rs` cover the parser on synthetic bytes. Once the lab is
//! set up (CI runs lab/setup), a missing module is a failure.

use kup::kmod::{ModInfo, modinfo};
use std::fs;
use std::path::{Path, PathBuf};

struct Lab {
    dir: PathBuf,
    release: String,
}

/// The lab as `lab/env.sh` finds it, or `None` (with a note on stderr) when it has not been set up.
fn lab() -> Option<Lab> {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::var_os("KUP_LAB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo.join("target/lab"));
    if !dir.join("ready").is_file() {
        eprintln!(
            "note: skipped: the lab is not set up in {} (run lab/setup to build the live patch module)",
            dir.display()
        );
        return None;
    }
    let release = fs::read_to_string(dir.join("kernel/version"))
        .expect("kernel/version in a lab that is ready")
        .trim()
        .to_string();
    Some(Lab { dir, release })
}

fn read(path: &Path) -> ModInfo {
    let bytes = fs::read(path).unwrap_or_else(|e| {
        panic!(
            "cannot read {} (lab/setup builds it; run lab/build-livepatch): {e}",
            path.display()
        )
    });
    modinfo(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_lab_live_patch_is_a_livepatch_for_the_lab_kernel() {
    let Some(lab) = lab() else { return };
    let info = read(&lab.dir.join("livepatch/kup_lab_livepatch.ko"));
    assert_eq!(info.vermagic_release(), Some(lab.release.as_str()));
    let vermagic = info.vermagic().unwrap();
    assert!(
        vermagic.starts_with(&format!("{} ", lab.release)),
        "{vermagic:?}"
    );
    assert!(vermagic.contains("modversions"), "{vermagic:?}");
    assert_eq!(info.get("livepatch"), Some("Y"));
    assert!(info.is_livepatch());
    assert_eq!(info.name(), Some("kup_lab_livepatch"));
    assert_eq!(info.license(), Some("GPL"));
}

#[test]
fn the_wrong_release_copy_names_another_release_and_nothing_else_differs() {
    let Some(lab) = lab() else { return };
    let right = read(&lab.dir.join("livepatch/kup_lab_livepatch.ko"));
    let wrong = read(&lab.dir.join("livepatch/kup_lab_livepatch-wrong-release.ko"));
    let other = wrong.vermagic_release().unwrap();
    assert_ne!(other, lab.release);
    // Another release of the same series and flavour: 6.1.0-57-cloud-amd64 → 6.1.0-58-cloud-amd64.
    assert_eq!(other.len(), lab.release.len());
    let (ours, theirs): (Vec<_>, Vec<_>) =
        (lab.release.split('-').collect(), other.split('-').collect());
    assert_eq!(ours.len(), theirs.len(), "{other}");
    assert_eq!((ours[0], &ours[2..]), (theirs[0], &theirs[2..]), "{other}");
    assert_ne!(ours[1], theirs[1], "{other}");
    let tail = |info: &ModInfo| {
        info.vermagic()
            .unwrap()
            .split_once(' ')
            .unwrap()
            .1
            .to_string()
    };
    assert_eq!(tail(&wrong), tail(&right));
    assert!(wrong.is_livepatch());
    let without_vermagic = |info: &ModInfo| {
        info.entries()
            .iter()
            .filter(|(k, _)| k != "vermagic")
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(without_vermagic(&wrong), without_vermagic(&right));
}

#[test]
fn every_module_of_the_lab_kernel_names_its_release_and_itself() {
    let Some(lab) = lab() else { return };
    let root = lab.dir.join("kernel/lib/modules").join(&lab.release);
    let mut stack = vec![root.clone()];
    let mut count = 0;
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let Some(stem) = path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .strip_suffix(".ko")
            else {
                continue;
            };
            let info = read(&path);
            assert_eq!(
                info.vermagic_release(),
                Some(lab.release.as_str()),
                "{}",
                path.display()
            );
            // Kbuild's module names use '_' where file names may have '-'.
            assert_eq!(
                info.name(),
                Some(stem.replace('-', "_").as_str()),
                "{}",
                path.display()
            );
            assert!(!info.is_livepatch(), "{}", path.display());
            assert!(info.license().is_some(), "{}", path.display());
            count += 1;
        }
    }
    assert!(count > 100, "only {count} modules under {}", root.display());
}
