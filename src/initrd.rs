//! Which kernel an initramfs was built for: the releases of the `lib/modules/RELEASE/` trees inside it. An initrd
//! of another release boots the new kernel with modules it refuses to load — no disk driver, no root file system —
//! so the preflight compares it with the image's release before anything pauses.
//!
//! An initramfs is a concatenation of `newc` cpio archives, each plain or compressed (Debian puts the CPU
//! microcode first, uncompressed, then the main archive compressed with zstd; lab images are gzip). Pure: bytes
//! in, releases out.

use std::collections::BTreeSet;
use std::io::Read;

/// The newc header: magic, 13 fields of 8 hex digits.
const HEADER_LEN: usize = 110;
const NEWC_MAGIC: &[u8] = b"070701";
const NEWC_CRC_MAGIC: &[u8] = b"070702";
const TRAILER: &str = "TRAILER!!!";
/// Uncompressed size a decompressed archive may reach before kup stops reading it (a corrupt or hostile file).
const MAX_UNPACKED: u64 = 4 << 30;

/// What the initramfs says about its kernel.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InitrdKernels {
    /// Releases with a module tree (`lib/modules/R/` or `usr/lib/modules/R/`).
    pub releases: BTreeSet<String>,
    /// A compressed part kup cannot read (xz, lz4, lzma, bzip2): its releases, if any, are unknown.
    pub unreadable: Option<&'static str>,
}

/// Why an initramfs could not be read at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InitrdError {
    /// Neither a cpio archive nor a compression kup knows.
    #[error("not an initramfs: no cpio archive at byte {at} (found {found})")]
    NotCpio {
        /// Where the unknown bytes start.
        at: usize,
        /// The first bytes, in hex.
        found: String,
    },
    /// A compressed part is damaged.
    #[error("a {format}-compressed part is damaged: {reason}")]
    Damaged {
        /// gzip or zstd.
        format: &'static str,
        /// The decompressor's message.
        reason: String,
    },
}

/// The kernel releases whose modules the initramfs `bytes` holds.
pub fn kernels(bytes: &[u8]) -> Result<InitrdKernels, InitrdError> {
    let mut found = InitrdKernels::default();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest[0] == 0 {
            // Archives are padded to 4 bytes, and some builders pad whole blocks with zeros.
            at += 1;
            continue;
        }
        if rest.starts_with(NEWC_MAGIC) || rest.starts_with(NEWC_CRC_MAGIC) {
            match cpio(rest, &mut found.releases) {
                // A header cut short: nothing more can be read.
                0 => break,
                used => at += used,
            }
            continue;
        }
        let unpacked = match compression(rest) {
            Some("gzip") => unpack("gzip", flate2::read::MultiGzDecoder::new(rest))?,
            Some("zstd") => {
                let decoder = ruzstd::decoding::StreamingDecoder::new(rest).map_err(|e| {
                    InitrdError::Damaged {
                        format: "zstd",
                        reason: e.to_string(),
                    }
                })?;
                unpack("zstd", decoder)?
            }
            Some(other) => {
                found.unreadable = Some(other);
                return Ok(found);
            }
            None => {
                return Err(InitrdError::NotCpio {
                    at,
                    found: rest.iter().take(6).map(|b| format!("{b:02x}")).collect(),
                });
            }
        };
        // A compressed archive runs to the end of the file (what follows it is inside it).
        let inner = kernels(&unpacked)?;
        found.releases.extend(inner.releases);
        found.unreadable = found.unreadable.or(inner.unreadable);
        return Ok(found);
    }
    Ok(found)
}

fn compression(bytes: &[u8]) -> Option<&'static str> {
    const MAGICS: [(&[u8], &str); 6] = [
        (&[0x1f, 0x8b], "gzip"),
        (&[0x28, 0xb5, 0x2f, 0xfd], "zstd"),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], "xz"),
        (&[0x02, 0x21, 0x4c, 0x18], "lz4"),
        (&[0x5d, 0x00, 0x00], "lzma"),
        (b"BZh", "bzip2"),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, name)| *name)
}

fn unpack(format: &'static str, reader: impl Read) -> Result<Vec<u8>, InitrdError> {
    let mut out = Vec::new();
    reader
        .take(MAX_UNPACKED)
        .read_to_end(&mut out)
        .map_err(|e| InitrdError::Damaged {
            format,
            reason: e.to_string(),
        })?;
    Ok(out)
}

/// Reads one newc archive at the start of `bytes`, adding the releases of its module trees; returns its length
/// (up to its trailer, or all of `bytes` when it is cut short).
fn cpio(bytes: &[u8], releases: &mut BTreeSet<String>) -> usize {
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER_LEN) {
        if !(header.starts_with(NEWC_MAGIC) || header.starts_with(NEWC_CRC_MAGIC)) {
            break;
        }
        let field = |i: usize| {
            std::str::from_utf8(&header[6 + 8 * i..14 + 8 * i])
                .ok()
                .and_then(|h| usize::from_str_radix(h, 16).ok())
        };
        let (Some(file_size), Some(name_size)) = (field(6), field(11)) else {
            break;
        };
        let name_start = at + HEADER_LEN;
        let name_end = name_start + name_size.saturating_sub(1);
        let Some(name) = bytes.get(name_start..name_end) else {
            return bytes.len();
        };
        let name = String::from_utf8_lossy(name);
        let data_start = (name_start + name_size).next_multiple_of(4);
        at = (data_start + file_size).next_multiple_of(4);
        if name == TRAILER {
            return at.min(bytes.len());
        }
        if let Some(release) = module_release(&name) {
            releases.insert(release.to_owned());
        }
    }
    at.min(bytes.len())
}

/// `R` of a path under `lib/modules/R/` or `usr/lib/modules/R/` (with or without a leading `./` or `/`).
fn module_release(path: &str) -> Option<&str> {
    let path = path.trim_start_matches("./").trim_start_matches('/');
    let rest = path
        .strip_prefix("usr/lib/modules/")
        .or_else(|| path.strip_prefix("lib/modules/"))?;
    let release = rest.split('/').next()?;
    (!release.is_empty()).then_some(release)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A newc archive of `names` (directories and empty files alike), with its trailer.
    fn archive(names: &[&str]) -> Vec<u8> {
        let mut out = Vec::new();
        for (ino, name) in names.iter().chain([&TRAILER]).enumerate() {
            let header = format!(
                "070701{ino:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
                0o40755,
                0,
                0,
                1,
                0,
                0,
                0,
                0,
                0,
                0,
                name.len() + 1,
                0
            );
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(name.as_bytes());
            out.push(0);
            while out.len() % 4 != 0 {
                out.push(0);
            }
        }
        out
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn a_plain_archive_names_its_module_trees() {
        let bytes = archive(&[
            "bin",
            "lib/modules",
            "lib/modules/6.1.0-27-cloud-amd64",
            "init",
        ]);
        let found = kernels(&bytes).unwrap();
        assert_eq!(
            found.releases.into_iter().collect::<Vec<_>>(),
            ["6.1.0-27-cloud-amd64"]
        );
    }

    #[test]
    fn microcode_first_then_a_compressed_archive_as_debian_builds_them() {
        let mut bytes = archive(&["kernel/x86/microcode/GenuineIntel.bin"]);
        bytes.extend(gzip(&archive(&[
            "usr/lib/modules/7.2.13+deb14-cloud-amd64/kernel",
        ])));
        let found = kernels(&bytes).unwrap();
        assert!(
            found.releases.contains("7.2.13+deb14-cloud-amd64"),
            "{found:?}"
        );
        assert_eq!(found.unreadable, None);
    }

    #[test]
    fn no_module_tree_and_unknown_compressions_say_nothing_about_the_release() {
        assert!(
            kernels(&archive(&["init", "bin/busybox"]))
                .unwrap()
                .releases
                .is_empty()
        );
        let mut xz = archive(&["early"]);
        xz.extend([0xfd, b'7', b'z', b'X', b'Z', 0x00, 1, 2, 3]);
        assert_eq!(kernels(&xz).unwrap().unreadable, Some("xz"));
    }

    #[test]
    fn garbage_is_not_an_initramfs_and_never_panics() {
        assert!(matches!(
            kernels(b"MZ\x90\x00not an initrd"),
            Err(InitrdError::NotCpio { .. })
        ));
        let good = archive(&["lib/modules/6.1.0/kernel"]);
        for cut in 0..good.len() {
            let _ = kernels(&good[..cut]);
        }
        assert!(kernels(&gzip(b"070701 broken")).is_ok());
    }

    #[test]
    fn module_paths_in_every_spelling() {
        assert_eq!(
            module_release("./lib/modules/6.1.0/kernel/x.ko"),
            Some("6.1.0")
        );
        assert_eq!(
            module_release("/usr/lib/modules/7.2/modules.dep"),
            Some("7.2")
        );
        assert_eq!(module_release("lib/modules/"), None);
        assert_eq!(module_release("lib/firmware/x"), None);
    }
}
