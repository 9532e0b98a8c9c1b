//! Making a state file durable under its final name. A guest's saved state is the only copy of the guest across
//! a kexec, so it is written under a temporary name and renamed only when complete and on disk, and a file an
//! earlier run left is moved aside rather than overwritten: it may be the only copy of some other attempt.

use serde_json::{Value, json};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Highest `.kept-N` tried before giving up; a directory with that many leftovers needs an operator.
const MAX_KEPT: u32 = 1000;

/// fsync `from`, move an existing `to` aside, rename `from` to `to`, fsync the directory.
pub fn commit(from: &Path, to: &Path) -> Result<Value, String> {
    let file = File::open(from).map_err(|e| {
        format!(
            "the state was not written to {}: {e} (did the save fail?)",
            from.display()
        )
    })?;
    file.sync_all()
        .map_err(|e| format!("cannot fsync {}: {e}", from.display()))?;
    let size = file
        .metadata()
        .map_err(|e| format!("{}: {e}", from.display()))?
        .len();
    if size == 0 {
        return Err(format!(
            "{} is empty: the save wrote nothing",
            from.display()
        ));
    }
    drop(file);
    let kept = keep_aside(to)?;
    std::fs::rename(from, to)
        .map_err(|e| format!("cannot rename {} to {}: {e}", from.display(), to.display()))?;
    let dir = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot fsync directory {}: {e}", dir.display()))?;
    Ok(json!({ "path": to, "size": size, "kept_aside": kept }))
}

/// Renames an existing `path` to the first free `path.kept-N`; returns where it went.
pub fn keep_aside(path: &Path) -> Result<Option<PathBuf>, String> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(None);
    }
    for n in 1..=MAX_KEPT {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".kept-{n}"));
        let aside = PathBuf::from(name);
        if std::fs::symlink_metadata(&aside).is_err() {
            std::fs::rename(path, &aside).map_err(|e| {
                format!(
                    "cannot move the earlier {} aside to {}: {e}",
                    path.display(),
                    aside.display()
                )
            })?;
            return Ok(Some(aside));
        }
    }
    Err(format!(
        "{} exists and {MAX_KEPT} earlier copies are kept beside it: remove the ones you do not need",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_renames_and_keeps_earlier_files() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("vmstate");
        let from = dir.path().join("vmstate.partial");
        std::fs::write(&from, b"first").unwrap();
        let out = commit(&from, &to).unwrap();
        assert_eq!(out["size"], 5);
        assert_eq!(out["kept_aside"], Value::Null);
        assert!(!from.exists());
        assert_eq!(std::fs::read(&to).unwrap(), b"first");

        for (n, text) in [(1, "second"), (2, "third")] {
            std::fs::write(&from, text).unwrap();
            let out = commit(&from, &to).unwrap();
            let kept = dir.path().join(format!("vmstate.kept-{n}"));
            assert_eq!(out["kept_aside"], json!(kept));
            assert_eq!(std::fs::read_to_string(&to).unwrap(), text);
        }
        assert_eq!(
            std::fs::read_to_string(dir.path().join("vmstate.kept-1")).unwrap(),
            "first"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("vmstate.kept-2")).unwrap(),
            "second"
        );
    }

    #[test]
    fn a_missing_or_empty_partial_file_is_an_error_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("vmstate");
        let from = dir.path().join("vmstate.partial");
        std::fs::write(&to, b"old").unwrap();
        let e = commit(&from, &to).unwrap_err();
        assert!(e.contains("did the save fail"), "{e}");
        std::fs::write(&from, b"").unwrap();
        let e = commit(&from, &to).unwrap_err();
        assert!(e.contains("is empty"), "{e}");
        assert_eq!(std::fs::read(&to).unwrap(), b"old");
    }
}
