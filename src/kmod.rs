//! Reads a kernel module's `.modinfo` (`vermagic`, `name`, `livepatch`, `license`, ...) from its bytes, so that kup
//! can check a live patch against the running kernel before it asks that kernel to load it.
//!
//! The check matters because the kernel's own is weaker than it looks: with `CONFIG_MODVERSIONS` (Debian's 6.1
//! kernels have it) `load_module` compares only the part of `vermagic` *after* the release (`SMP preempt
//! mod_unload modversions`) and trusts the symbol CRCs for the rest, so a module whose `vermagic` names another
//! release of the same series loads (verified in the lab: `lab/run-livepatch`). A live patch is built for one
//! exact kernel; kup compares [`ModInfo::vermagic_release`] with `uname -r` itself.
//!
//! A module is an ELF64 relocatable object (`ET_REL`); `.modinfo` is a section of NUL-separated `key=value`
//! strings (`MODULE_INFO`, `MODULE_LICENSE`, ..., and `vermagic` and `name` from modpost). This is a minimal
//! reader of exactly that: the ELF header, the section header table, the section names, one section. It copies
//! nothing but the entries, never panics on hostile input (every offset is checked), and has no dependencies.
//! Pure: it takes bytes; reading the file is the caller's business. Compressed modules (`.ko.xz`, `.ko.zst`,
//! `.ko.gz`) must be decompressed first; [`ModInfoError::NotElf`] says when the bytes look compressed.

use std::fmt;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const EI_CLASS: usize = 4;
const ELFCLASS64: u8 = 2;
const EI_DATA: usize = 5;
const ELFDATA2LSB: u8 = 1;
/// `e_type`: a relocatable object, which every kernel module is.
const ET_REL: u16 = 1;
/// The ELF64 header's length; the fields below lie inside it.
const EHDR_LEN: u64 = 64;
const E_TYPE: usize = 16;
const E_SHOFF: usize = 0x28;
const E_SHENTSIZE: usize = 0x3A;
const E_SHNUM: usize = 0x3C;
const E_SHSTRNDX: usize = 0x3E;
/// An ELF64 section header's length.
const SHDR_LEN: u64 = 64;
/// `e_shstrndx` when the index does not fit: the real one is section 0's `sh_link`.
const SHN_XINDEX: u16 = 0xFFFF;
/// `sh_type` of a section that occupies no bytes in the file (`.bss`).
const SHT_NOBITS: u32 = 8;

/// The `.modinfo` entries of a kernel module, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    entries: Vec<(String, String)>,
}

/// Why bytes are not a kernel module whose `.modinfo` can be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModInfoError {
    /// No `\x7fELF` magic. `compressed` names the compression when the bytes start with its magic instead.
    NotElf {
        /// `xz`, `zstd` or `gzip` when the bytes carry that magic.
        compressed: Option<&'static str>,
    },
    /// An ELF file, but not the kind a kernel module is here: 32-bit, big-endian, or not `ET_REL`.
    Unsupported {
        /// What kind of ELF file it is.
        what: String,
    },
    /// The file ends before something its headers point at: an interrupted copy or download.
    Truncated {
        /// The part that is cut off.
        what: &'static str,
        /// Where that part ends, in bytes.
        end: u64,
        /// The file's length, in bytes.
        len: u64,
    },
    /// Headers that contradict themselves (a section header size that is not 64, an index out of range, a
    /// section name outside the name table).
    Malformed {
        /// Which header field is wrong.
        what: String,
    },
    /// A well-formed ELF file without a `.modinfo` section: an object file, but not a kernel module.
    NoModinfo,
}

impl fmt::Display for ModInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModInfoError::NotElf { compressed: None } => {
                write!(
                    f,
                    "not a kernel module: no ELF magic (\\x7fELF) at the start"
                )
            }
            ModInfoError::NotElf {
                compressed: Some(kind),
            } => write!(
                f,
                "not a kernel module as it is: the bytes are {kind}-compressed; decompress the module first"
            ),
            ModInfoError::Unsupported { what } => {
                write!(f, "not a kernel module kup can read: {what}")
            }
            ModInfoError::Truncated { what, end, len } => write!(
                f,
                "truncated kernel module: the {what} ends at byte {end}, but the file has {len} bytes"
            ),
            ModInfoError::Malformed { what } => write!(f, "malformed kernel module: {what}"),
            ModInfoError::NoModinfo => write!(
                f,
                "no .modinfo section: an ELF object, but not a kernel module"
            ),
        }
    }
}

impl std::error::Error for ModInfoError {}

impl ModInfo {
    /// Every `key=value` entry, in file order (keys may repeat: `alias`, `depends`, `firmware`, ...).
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// The first value of `key`, as the kernel's `get_modinfo` finds it.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`, in file order.
    pub fn get_all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// `vermagic`: the release the module was built for, then the kernel features it assumes, e.g.
    /// `6.1.0-57-cloud-amd64 SMP preempt mod_unload modversions ` (modpost writes the trailing space).
    pub fn vermagic(&self) -> Option<&str> {
        self.get("vermagic")
    }

    /// The release in `vermagic` (its first word), to compare with `uname -r` of the kernel that is to load it.
    pub fn vermagic_release(&self) -> Option<&str> {
        self.vermagic()?.split_whitespace().next()
    }

    /// `name`: the module's name (what `lsmod` shows and `rmmod` takes; for a live patch also its directory
    /// under `/sys/kernel/livepatch/`).
    pub fn name(&self) -> Option<&str> {
        self.get("name")
    }

    /// `license`, e.g. `GPL` (a live patch must be GPL-compatible to use the livepatch API).
    pub fn license(&self) -> Option<&str> {
        self.get("license")
    }

    /// Whether the module is a live patch. Like the kernel (`check_modinfo_livepatch`), this looks for a
    /// `livepatch` entry of any value; `MODULE_INFO(livepatch, "Y")` writes `livepatch=Y`.
    pub fn is_livepatch(&self) -> bool {
        self.get("livepatch").is_some()
    }
}

/// Reads the `.modinfo` entries of the kernel module (an ELF64 little-endian relocatable object) in `bytes`.
///
/// Empty strings between entries (section padding) are skipped, and so are entries without a `=`, which the
/// kernel ignores too. Bytes that are not UTF-8 are replaced (`U+FFFD`); keys are ASCII in practice.
pub fn modinfo(bytes: &[u8]) -> Result<ModInfo, ModInfoError> {
    let elf = Elf::parse(bytes)?;
    let section = elf
        .section_named(b".modinfo")?
        .ok_or(ModInfoError::NoModinfo)?;
    let data = elf.data(&section, ".modinfo section")?;
    let entries = data
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let eq = entry.iter().position(|&b| b == b'=')?;
            let (key, value) = (&entry[..eq], &entry[eq + 1..]);
            Some((
                String::from_utf8_lossy(key).into_owned(),
                String::from_utf8_lossy(value).into_owned(),
            ))
        })
        .collect();
    Ok(ModInfo { entries })
}

/// The fields of one section header this reader uses.
#[derive(Debug, Clone, Copy)]
struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

/// A checked view of an ELF64 little-endian relocatable object: its section header table and name table.
struct Elf<'a> {
    bytes: &'a [u8],
    shoff: u64,
    shnum: u64,
    shstrtab: Section,
}

impl<'a> Elf<'a> {
    // Long by design: the ELF header and section table read in file order, each field bounds-checked.
    fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ModInfoError> {
        if !bytes.starts_with(ELF_MAGIC) {
            if !bytes.is_empty() && ELF_MAGIC.starts_with(bytes) {
                return Err(truncated("ELF magic", ELF_MAGIC.len() as u64, bytes));
            }
            return Err(ModInfoError::NotElf {
                compressed: compression(bytes),
            });
        }
        if (bytes.len() as u64) < EHDR_LEN {
            return Err(truncated("ELF header", EHDR_LEN, bytes));
        }
        // (identification byte, the value read, the other known value and what it means, the field's name)
        for (at, read, (known, means), field) in [
            (
                EI_CLASS,
                ELFCLASS64,
                (1, "a 32-bit ELF file (kernel modules here are ELF64)"),
                "ELF class",
            ),
            (
                EI_DATA,
                ELFDATA2LSB,
                (2, "a big-endian ELF file (only little-endian is read)"),
                "ELF data encoding",
            ),
        ] {
            match bytes[at] {
                v if v == read => {}
                v if v == known => return Err(unsupported(means)),
                other => return Err(unsupported(format!("{field} {other}"))),
            }
        }
        let e_type = u16_at(bytes, E_TYPE);
        if e_type != ET_REL {
            return Err(unsupported(format!(
                "ELF type {e_type} ({}), but a kernel module is a relocatable object (ET_REL, 1)",
                match e_type {
                    2 => "an executable",
                    3 => "a shared object or PIE",
                    4 => "a core dump",
                    _ => "unknown",
                }
            )));
        }
        let shoff = u64_at(bytes, E_SHOFF);
        let shentsize = u16_at(bytes, E_SHENTSIZE);
        let mut shnum = u64::from(u16_at(bytes, E_SHNUM));
        let shstrndx = u16_at(bytes, E_SHSTRNDX);
        if shoff == 0 {
            return Err(malformed("no section header table (e_shoff is 0)"));
        }
        if u64::from(shentsize) != SHDR_LEN {
            return Err(malformed(format!(
                "section header size {shentsize}, not {SHDR_LEN}"
            )));
        }
        let mut elf = Elf {
            bytes,
            shoff,
            shnum: 1, // enough to read section 0, which holds the real counts when they overflow
            shstrtab: Section {
                name: 0,
                kind: 0,
                offset: 0,
                size: 0,
                link: 0,
            },
        };
        let zero = elf.section(0)?;
        // Extended numbering: 65280 sections or more put the count in section 0's sh_size.
        if shnum == 0 {
            shnum = zero.size;
        }
        let shstrndx = if shstrndx == SHN_XINDEX {
            u64::from(zero.link)
        } else {
            u64::from(shstrndx)
        };
        let table_end = shnum
            .checked_mul(SHDR_LEN)
            .and_then(|len| len.checked_add(shoff))
            .ok_or_else(|| malformed("the section header table does not fit in 64 bits"))?;
        if table_end > bytes.len() as u64 {
            return Err(truncated("section header table", table_end, bytes));
        }
        elf.shnum = shnum;
        if shstrndx == 0 || shstrndx >= shnum {
            return Err(malformed(format!(
                "the section name table's index {shstrndx} is not one of the {shnum} sections"
            )));
        }
        elf.shstrtab = elf.section(shstrndx)?;
        elf.data(&elf.shstrtab, "section name table")?;
        Ok(elf)
    }

    /// Section header `index` (checked against the table and the file).
    fn section(&self, index: u64) -> Result<Section, ModInfoError> {
        if index >= self.shnum {
            return Err(malformed(format!(
                "section {index} of {} requested",
                self.shnum
            )));
        }
        let start = self
            .shoff
            .checked_add(index * SHDR_LEN)
            .ok_or_else(|| malformed("a section header's offset does not fit in 64 bits"))?;
        let header = slice(self.bytes, start, SHDR_LEN, "section header table")?;
        Ok(Section {
            name: u32_at(header, 0),
            kind: u32_at(header, 4),
            offset: u64_at(header, 24),
            size: u64_at(header, 32),
            link: u32_at(header, 40),
        })
    }

    /// The bytes of `section` in the file (`what` names it in the error).
    fn data(&self, section: &Section, what: &'static str) -> Result<&'a [u8], ModInfoError> {
        if section.kind == SHT_NOBITS {
            return Err(malformed(format!(
                "the {what} occupies no bytes (SHT_NOBITS)"
            )));
        }
        slice(self.bytes, section.offset, section.size, what)
    }

    /// The NUL-terminated name of `section`, from the section name table.
    fn name(&self, section: &Section) -> Result<&'a [u8], ModInfoError> {
        let table = self.data(&self.shstrtab, "section name table")?;
        let start = usize::try_from(section.name).unwrap_or(usize::MAX);
        let rest = table.get(start..).ok_or_else(|| {
            malformed(format!(
                "a section name at offset {} lies outside the {}-byte section name table",
                section.name,
                table.len()
            ))
        })?;
        let end = rest.iter().position(|&b| b == 0).ok_or_else(|| {
            malformed("a section name runs off the end of the section name table")
        })?;
        Ok(&rest[..end])
    }

    /// The first section called `wanted`, if any.
    fn section_named(&self, wanted: &[u8]) -> Result<Option<Section>, ModInfoError> {
        for index in 1..self.shnum {
            let section = self.section(index)?;
            if self.name(&section)? == wanted {
                return Ok(Some(section));
            }
        }
        Ok(None)
    }
}

/// `len` bytes of `bytes` from `offset`, or why not.
fn slice<'a>(
    bytes: &'a [u8],
    offset: u64,
    len: u64,
    what: &'static str,
) -> Result<&'a [u8], ModInfoError> {
    let end = offset
        .checked_add(len)
        .ok_or_else(|| malformed(format!("the {what}'s offset and size overflow 64 bits")))?;
    if end > bytes.len() as u64 {
        return Err(truncated(what, end, bytes));
    }
    // Both fit in usize now: they are at most bytes.len().
    let (start, end) = (offset as usize, end as usize);
    Ok(&bytes[start..end])
}

fn truncated(what: &'static str, end: u64, bytes: &[u8]) -> ModInfoError {
    ModInfoError::Truncated {
        what,
        end,
        len: bytes.len() as u64,
    }
}

fn unsupported(what: impl Into<String>) -> ModInfoError {
    ModInfoError::Unsupported { what: what.into() }
}

fn malformed(what: impl Into<String>) -> ModInfoError {
    ModInfoError::Malformed { what: what.into() }
}

/// The compression whose magic `bytes` start with, for a helpful [`ModInfoError::NotElf`].
fn compression(bytes: &[u8]) -> Option<&'static str> {
    [
        (&b"\xfd7zXZ\x00"[..], "xz"),
        (&b"\x28\xb5\x2f\xfd"[..], "zstd"),
        (&b"\x1f\x8b"[..], "gzip"),
    ]
    .into_iter()
    .find(|(magic, _)| bytes.starts_with(magic))
    .map(|(_, kind)| kind)
}

// The readers below are only called on ranges already checked to lie inside `bytes`: the ELF header (64 bytes,
// checked in `Elf::parse`) or a 64-byte section header from `slice`.

fn u16_at(bytes: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes([bytes[offset], bytes[offset + 1]])
}

fn u32_at(bytes: &[u8], offset: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(field)
}

fn u64_at(bytes: &[u8], offset: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A minimal ELF64 LE relocatable object: the null section, then `sections` (name, type, contents), then
    /// `.shstrtab`; contents follow the header, and the section header table comes last.
    fn elf(sections: &[(&str, u32, &[u8])]) -> Vec<u8> {
        const SHT_STRTAB: u32 = 3;
        let mut names = vec![0u8];
        let mut headers: Vec<(u32, u32, u64, u64)> = vec![(0, 0, 0, 0)];
        let mut out = vec![0u8; EHDR_LEN as usize];
        let mut add = |out: &mut Vec<u8>, name: &str, kind: u32, data: &[u8]| {
            let name_at = names.len() as u32;
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            headers.push((name_at, kind, out.len() as u64, data.len() as u64));
            out.extend_from_slice(data);
        };
        for (name, kind, data) in sections {
            add(&mut out, name, *kind, data);
        }
        let shstrtab_index = headers.len() as u16;
        // .shstrtab names itself: add its own name before writing its bytes.
        let name_at = names.len() as u32;
        names.extend_from_slice(b".shstrtab\0");
        headers.push((name_at, SHT_STRTAB, out.len() as u64, names.len() as u64));
        out.extend_from_slice(&names);
        while out.len() % 8 != 0 {
            out.push(0);
        }
        let shoff = out.len() as u64;
        for (name, kind, offset, size) in &headers {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&offset.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            out.extend_from_slice(&h);
        }
        out[0..4].copy_from_slice(ELF_MAGIC);
        out[EI_CLASS] = ELFCLASS64;
        out[EI_DATA] = ELFDATA2LSB;
        out[6] = 1; // EV_CURRENT
        out[E_TYPE..E_TYPE + 2].copy_from_slice(&ET_REL.to_le_bytes());
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[E_SHOFF..E_SHOFF + 8].copy_from_slice(&shoff.to_le_bytes());
        out[0x34..0x36].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
        out[E_SHENTSIZE..E_SHENTSIZE + 2].copy_from_slice(&64u16.to_le_bytes());
        out[E_SHNUM..E_SHNUM + 2].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[E_SHSTRNDX..E_SHSTRNDX + 2].copy_from_slice(&shstrtab_index.to_le_bytes());
        out
    }

    const MODINFO: &[u8] =
        b"livepatch=Y\0license=GPL\0depends=\0retpoline=Y\0name=kup_lab_livepatch\0\
        vermagic=6.1.0-57-cloud-amd64 SMP preempt mod_unload modversions \0";

    const SHT_PROGBITS: u32 = 1;
    const SHT_RELA: u32 = 4;

    /// A module-like object: .text, .modinfo, .rela.text.
    fn module() -> Vec<u8> {
        elf(&[
            (".text", SHT_PROGBITS, b"\xc3\xcc\xcc\xcc"),
            (".modinfo", SHT_PROGBITS, MODINFO),
            (".rela.text", SHT_RELA, &[0u8; 24]),
        ])
    }

    #[test]
    fn reads_the_entries_of_a_live_patch() {
        let info = modinfo(&module()).unwrap();
        assert_eq!(info.entries().len(), 6);
        assert_eq!(info.entries()[0], ("livepatch".into(), "Y".into()));
        assert_eq!(
            info.vermagic(),
            Some("6.1.0-57-cloud-amd64 SMP preempt mod_unload modversions ")
        );
        assert_eq!(info.vermagic_release(), Some("6.1.0-57-cloud-amd64"));
        assert_eq!(info.name(), Some("kup_lab_livepatch"));
        assert_eq!(info.license(), Some("GPL"));
        assert_eq!(info.get("depends"), Some(""));
        assert_eq!(info.get("missing"), None);
        assert!(info.is_livepatch());
    }

    #[test]
    fn padding_and_entries_without_equals_are_skipped_and_keys_may_repeat() {
        let bytes = elf(&[(
            ".modinfo",
            SHT_PROGBITS,
            b"\0\0alias=a\0\0\0junk\0alias=b\0value=has=equals\0\0",
        )]);
        let info = modinfo(&bytes).unwrap();
        assert_eq!(info.get_all("alias").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(info.get("alias"), Some("a"));
        assert_eq!(info.get("value"), Some("has=equals"));
        assert_eq!(info.get("junk"), None);
        assert_eq!(info.entries().len(), 3);
        assert!(!info.is_livepatch());
        assert_eq!(info.vermagic_release(), None);
        assert_eq!(info.name(), None);
    }

    #[test]
    fn an_empty_modinfo_section_has_no_entries() {
        let info = modinfo(&elf(&[(".modinfo", SHT_PROGBITS, b"")])).unwrap();
        assert!(info.entries().is_empty());
    }

    #[test]
    fn not_an_elf_file() {
        for bytes in [&b""[..], b"hello, world", b"\x7fELG\x02\x01", b"MZ\x90\x00"] {
            assert_eq!(
                modinfo(bytes),
                Err(ModInfoError::NotElf { compressed: None }),
                "{bytes:?}"
            );
        }
        let err = modinfo(b"\xfd7zXZ\x00\x00\x04").unwrap_err();
        assert_eq!(
            err,
            ModInfoError::NotElf {
                compressed: Some("xz")
            }
        );
        assert!(err.to_string().contains("xz-compressed"), "{err}");
        assert_eq!(
            modinfo(b"\x28\xb5\x2f\xfd\x00"),
            Err(ModInfoError::NotElf {
                compressed: Some("zstd")
            })
        );
    }

    #[test]
    fn every_truncation_is_reported_as_truncated() {
        let bytes = module();
        for len in 1..bytes.len() {
            match modinfo(&bytes[..len]) {
                Err(ModInfoError::Truncated { len: l, end, .. }) => {
                    assert_eq!(l, len as u64);
                    assert!(end > l, "len {len}: end {end}");
                }
                other => panic!("prefix of {len} bytes: {other:?}"),
            }
        }
        let err = modinfo(&bytes[..40]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "truncated kernel module: the ELF header ends at byte 64, but the file has 40 bytes"
        );
    }

    #[test]
    fn a_section_beyond_the_end_of_the_file_is_truncated() {
        let mut bytes = module();
        let shoff = u64_at(&bytes, E_SHOFF) as usize;
        // Section 2 is .modinfo: move its contents past the end.
        let at = shoff + 2 * 64 + 24;
        let len = bytes.len() as u64;
        bytes[at..at + 8].copy_from_slice(&len.to_le_bytes());
        assert!(matches!(
            modinfo(&bytes),
            Err(ModInfoError::Truncated {
                what: ".modinfo section",
                ..
            })
        ));
        // An offset near u64::MAX must not overflow.
        bytes[at..at + 8].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
        assert!(matches!(
            modinfo(&bytes),
            Err(ModInfoError::Malformed { .. })
        ));
    }

    #[test]
    fn no_modinfo_section() {
        let err = modinfo(&elf(&[
            (".text", SHT_PROGBITS, b"\xc3"),
            (".data", SHT_PROGBITS, b"x"),
        ]))
        .unwrap_err();
        assert_eq!(err, ModInfoError::NoModinfo);
        assert!(err.to_string().contains("no .modinfo section"));
        // A name that merely starts with .modinfo is another section.
        assert_eq!(
            modinfo(&elf(&[(".modinfox", SHT_PROGBITS, b"a=b\0")])),
            Err(ModInfoError::NoModinfo)
        );
    }

    #[test]
    fn other_kinds_of_elf_are_unsupported() {
        let good = module();
        let mut elf32 = good.clone();
        elf32[EI_CLASS] = 1;
        let mut big = good.clone();
        big[EI_DATA] = 2;
        let mut exec = good.clone();
        exec[E_TYPE] = 2;
        assert_refused(
            vec![(elf32, "32-bit"), (big, "big-endian"), (exec, "executable")],
            |e| matches!(e, ModInfoError::Unsupported { .. }),
        );
    }

    /// `modinfo` refuses each case with an error of the `kind` that says the case's text.
    #[track_caller]
    fn assert_refused(cases: Vec<(Vec<u8>, &str)>, kind: impl Fn(&ModInfoError) -> bool) {
        for (bytes, says) in cases {
            match modinfo(&bytes) {
                Err(err) if kind(&err) => assert!(err.to_string().contains(says), "{says}: {err}"),
                other => panic!("{says}: {other:?}"),
            }
        }
    }

    #[test]
    fn contradictory_headers_are_malformed() {
        let good = module();
        let shoff = u64_at(&good, E_SHOFF) as usize;
        let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
        let mut b = good.clone();
        b[E_SHENTSIZE] = 40;
        cases.push((b, "section header size 40"));
        let mut b = good.clone();
        b[E_SHSTRNDX] = 99;
        cases.push((b, "index 99"));
        let mut b = good.clone();
        b[E_SHSTRNDX] = 0;
        cases.push((b, "index 0"));
        let mut b = good.clone();
        b[E_SHOFF..E_SHOFF + 8].fill(0);
        cases.push((b, "e_shoff is 0"));
        let mut b = good.clone();
        // Section 1's name offset far outside .shstrtab.
        b[shoff + 64..shoff + 68].copy_from_slice(&0xFFFF_FFFFu32.to_le_bytes());
        cases.push((b, "outside"));
        let mut b = good.clone();
        // .shstrtab (the last section) as SHT_NOBITS.
        let last = u16_at(&good, E_SHSTRNDX) as usize;
        b[shoff + last * 64 + 4..shoff + last * 64 + 8].copy_from_slice(&SHT_NOBITS.to_le_bytes());
        cases.push((b, "SHT_NOBITS"));
        // A name table without a final NUL (shrunk by one byte), in an object without .modinfo, so that the
        // search reaches the last name.
        let mut b = elf(&[(".text", SHT_PROGBITS, b"\xc3")]);
        let (shoff, last) = (
            u64_at(&b, E_SHOFF) as usize,
            u16_at(&b, E_SHSTRNDX) as usize,
        );
        let size_at = shoff + last * 64 + 32;
        let size = u64_at(&b, size_at);
        b[size_at..size_at + 8].copy_from_slice(&(size - 1).to_le_bytes());
        cases.push((b, "runs off the end"));
        assert_refused(cases, |e| matches!(e, ModInfoError::Malformed { .. }));
    }

    #[test]
    fn extended_section_numbering_is_followed() {
        let mut bytes = module();
        let shoff = u64_at(&bytes, E_SHOFF) as usize;
        let shnum = u16_at(&bytes, E_SHNUM);
        let shstrndx = u16_at(&bytes, E_SHSTRNDX);
        // e_shnum 0 → section 0's sh_size; e_shstrndx SHN_XINDEX → section 0's sh_link.
        bytes[shoff + 32..shoff + 40].copy_from_slice(&u64::from(shnum).to_le_bytes());
        bytes[shoff + 40..shoff + 44].copy_from_slice(&u32::from(shstrndx).to_le_bytes());
        bytes[E_SHNUM..E_SHNUM + 2].fill(0);
        bytes[E_SHSTRNDX..E_SHSTRNDX + 2].copy_from_slice(&SHN_XINDEX.to_le_bytes());
        assert_eq!(modinfo(&bytes).unwrap(), modinfo(&module()).unwrap());
        // A huge extended count is a truncated table, not an overflow or an allocation.
        bytes[shoff + 32..shoff + 40].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(modinfo(&bytes).is_err());
    }

    #[test]
    fn non_utf8_bytes_are_replaced() {
        let info = modinfo(&elf(&[(".modinfo", SHT_PROGBITS, b"author=Andr\xe9\0")])).unwrap();
        assert_eq!(info.get("author"), Some("Andr\u{fffd}"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Corrupting any bytes of a module gives an answer or an error, never a panic.
        #[test]
        fn corrupt_modules_never_panic(edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            let mut bytes = module();
            for (at, value) in edits {
                let len = bytes.len();
                bytes[at % len] = value;
            }
            let _ = modinfo(&bytes);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if bytes.len() >= 4 {
                bytes[..4].copy_from_slice(ELF_MAGIC);
            }
            let _ = modinfo(&bytes);
        }
    }
}
