//! The kernel a starter plan names: the newest bzImage in /boot other than the running one (or the image the
//! operator names), with what kup can read off it without guessing — its release from the setup header, its
//! SHA-256, the initrd beside it built for that release, its build configuration and installed modules.

use super::super::{HostError, SysfsRoot, kernel_file};
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// The kernel the plan kexecs into, as found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetImage {
    /// As the plan writes it (a host path, not under the test root).
    pub(crate) image: PathBuf,
    /// `uname -r` of the image, from its setup header.
    pub(crate) release: String,
    pub(crate) sha256: String,
    /// `initrd.img-REL`, `initramfs-REL.img`, … beside the image.
    pub(crate) initrd: Option<PathBuf>,
    /// Why this image: "The newest of … in /boot …", or "Named with --kernel".
    pub(crate) chosen: String,
    /// `config-REL` beside the image or `/lib/modules/REL/config`, and whether it builds parallel CPU bring-up.
    pub(crate) config: Option<(PathBuf, bool)>,
    /// Whether `/lib/modules/REL` exists: without it the preflight refuses the kernel.
    pub(crate) modules: bool,
}

/// Release names compared as versions: runs of digits by value (`6.10` after `6.9`), the rest as text.
pub(crate) fn compare_releases(a: &str, b: &str) -> Ordering {
    fn parts(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                out.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (pa, pb) = (parts(a), parts(b));
    for (x, y) in pa.iter().zip(&pb) {
        let order = match (x, y) {
            ((true, x), (true, y)) => x
                .trim_start_matches('0')
                .len()
                .cmp(&y.trim_start_matches('0').len())
                .then_with(|| x.trim_start_matches('0').cmp(y.trim_start_matches('0'))),
            ((_, x), (_, y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    pa.len().cmp(&pb.len())
}

/// The image `--kernel` names, or the newest bzImage in `/boot` (under `root`) whose release is not `running`.
pub(crate) fn find(
    root: &SysfsRoot,
    named: Option<&Path>,
    running: Option<&str>,
) -> Result<TargetImage, HostError> {
    let (image, release, chosen) = match named {
        Some(path) => {
            let release = read_release(&root.resolve(path))?;
            let chosen = if Some(release.as_str()) == running {
                "Named with --kernel; it is the running kernel's release".to_owned()
            } else {
                "Named with --kernel".to_owned()
            };
            (path.to_owned(), release, chosen)
        }
        None => newest_in_boot(root, running)?,
    };
    let sha256 = kernel_file::sha256_file(&root.resolve(&image))
        .map_err(|source| HostError::KernelImage {
            path: image.clone(),
            source,
        })?
        .to_string();
    let dir = image.parent().unwrap_or(Path::new("/")).to_owned();
    let suffix = image
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .map(str::to_owned);
    let mut names = Vec::new();
    for version in std::iter::once(release.as_str()).chain(suffix.as_deref()) {
        names.extend([
            format!("initrd.img-{version}"),
            format!("initramfs-{version}.img"),
            format!("initrd-{version}.img"),
            format!("initrd-{version}"),
            format!("initramfs-{version}"),
        ]);
    }
    let initrd = names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| root.resolve(p).is_file());
    let modules = PathBuf::from("/lib/modules").join(&release);
    let config = [
        dir.join(format!("config-{release}")),
        modules.join("config"),
    ]
    .into_iter()
    .find(|p| root.resolve(p).is_file())
    .map(|p| {
        let text = std::fs::read_to_string(root.resolve(&p)).unwrap_or_default();
        let parallel = text
            .lines()
            .any(|l| matches!(l.trim(), "CONFIG_HOTPLUG_PARALLEL=y"));
        (p, parallel)
    });
    Ok(TargetImage {
        modules: root.resolve(&modules).is_dir(),
        image,
        release,
        sha256,
        initrd,
        chosen,
        config,
    })
}

fn read_release(path: &Path) -> Result<String, HostError> {
    kernel_file::read_image(path)
        .map(|k| k.release().to_owned())
        .map_err(|source| HostError::KernelImage {
            path: path.to_owned(),
            source,
        })
}

fn newest_in_boot(
    root: &SysfsRoot,
    running: Option<&str>,
) -> Result<(PathBuf, String, String), HostError> {
    let boot = Path::new("/boot");
    let entries =
        std::fs::read_dir(root.resolve(boot)).map_err(|e| HostError::io("cannot list /boot", e))?;
    let mut found: Vec<(PathBuf, String)> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("vmlinuz") || !entry.path().is_file() {
            continue;
        }
        // An unreadable image, or one that is no bzImage, is no candidate.
        if let Ok(release) = read_release(&entry.path()) {
            found.push((boot.join(&name), release));
        }
    }
    let others = found
        .iter()
        .filter(|(_, r)| Some(r.as_str()) != running)
        .max_by(|a, b| compare_releases(&a.1, &b.1).then_with(|| a.0.cmp(&b.0)));
    let Some((image, release)) = others else {
        return Err(HostError::check(format!(
            "no kernel image in /boot other than the running one ({}): install the new kernel, or name its image \
             with --kernel IMAGE",
            running.unwrap_or("release unknown")
        )));
    };
    let chosen = format!(
        "The newest of {} image(s) in /boot other than the running kernel ({})",
        found.len(),
        running.unwrap_or("release unknown")
    );
    Ok((image.clone(), release.clone(), chosen))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_compare_as_versions() {
        assert_eq!(compare_releases("6.10.1", "6.9.12"), Ordering::Greater);
        assert_eq!(
            compare_releases("6.1.0-28-amd64", "6.1.0-9-amd64"),
            Ordering::Greater
        );
        assert_eq!(
            compare_releases("6.12.9-lts", "6.12.9-lts"),
            Ordering::Equal
        );
        assert_eq!(compare_releases("6.1", "6.1.0"), Ordering::Less);
    }
}
