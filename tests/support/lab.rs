//! The lab cache the lab tests boot their guests from (`tests/lab_*.rs` include this file with `#[path]`).

#![allow(dead_code)] // each lab test binary uses a different part

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The lab cache, as `lab/env.sh` finds it.
pub struct Lab {
    /// This repository (its `lab/` scripts).
    pub repo: PathBuf,
    /// `target/lab` or `$KUP_LAB_DIR`.
    pub dir: PathBuf,
}

impl Lab {
    /// The lab of this repository, or a panic that tells how to set it up.
    pub fn get() -> Lab {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::var_os("KUP_LAB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo.join("target/lab"));
        Lab::locate(&repo, &dir).unwrap_or_else(|message| panic!("{message}"))
    }

    /// The lab in `dir`, or why there is none.
    pub fn locate(repo: &Path, dir: &Path) -> Result<Lab, String> {
        if !dir.join("ready").is_file() || !dir.join("kernel/version").is_file() {
            return Err(format!(
                "the lab is not set up in {}: run `lab/setup` (as root; it fetches QEMU, the Debian cloud kernel \
                 and busybox into target/lab/), then run the tests again",
                dir.display()
            ));
        }
        Ok(Lab {
            repo: repo.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    }

    /// A lab script (`lab/NAME`) with the lab directory this test uses.
    pub fn script(&self, name: &str) -> Command {
        let mut command = Command::new(self.repo.join("lab").join(name));
        command.env("KUP_LAB_DIR", &self.dir);
        command
    }

    /// The release the guests boot first (bookworm's 6.1 cloud kernel).
    pub fn kernel_version(&self) -> String {
        fs::read_to_string(self.dir.join("kernel/version"))
            .expect("kernel/version")
            .trim()
            .to_owned()
    }

    /// The release the plans kexec into (`$LAB_NEW_KERNEL_VERSION`).
    pub fn new_kernel_version(&self) -> String {
        let version = fs::read_to_string(self.dir.join("new-kernel/version"))
            .expect("new-kernel/version: run lab/setup")
            .trim()
            .to_owned();
        assert_ne!(version, self.kernel_version(), "the lab must upgrade");
        version
    }
}
