//! `par2_dir`: a second copy of each set's PAR2 files and manifest, kept apart from the
//! repository (best on another disk), in the common layout `<par2_dir>/<definition>/<set>/`.
//! The set keeps its own PAR2 files too: every copy of it stays self-contained. When the
//! repository's disk damages a set and its PAR2 files with it, `audit --repair` heals the
//! PAR2 files from here (they are proven against the manifest), then repairs the slices.
//! Each file is written under a temporary name, proven against the manifest and synced
//! before it takes its name.

use std::path::Path;

use crate::error::{Error, Result};
use crate::hashing::hash_file;
use crate::set::{MANIFEST, Manifest, Role};

pub fn keep(par2_dir: &Path, definition: &str, set_dir: &Path, manifest: &Manifest) -> Result<()> {
    if !par2_dir.is_dir() {
        return Err(Error::Failed(format!(
            "par2_dir {} does not exist (is its disk mounted?)",
            par2_dir.display()
        )));
    }
    let dir = par2_dir.join(definition).join(&manifest.set.name);
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    for f in manifest.files.iter().filter(|f| f.role == Role::Par2) {
        copy_proven(&set_dir.join(&f.path), &dir, &f.path, (f.size, &f.sha256))?;
    }
    // The manifest, byte for byte as the set's SHA256SUMS records it: it says what the PAR2
    // files protect and proves them.
    let published = set_dir.join(MANIFEST);
    let (size, sha) = hash_file(&published)?;
    copy_proven(&published, &dir, MANIFEST, (size, &sha))?;
    std::fs::File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("cannot sync", &dir))
}

/// Copy `source` to `dir/name` through a temporary name; only bytes proven to be `expected`
/// (size, SHA-256), synced, take the name.
fn copy_proven(source: &Path, dir: &Path, name: &str, expected: (u64, &str)) -> Result<()> {
    let partial = dir.join(format!(".{name}.partial"));
    std::fs::copy(source, &partial).map_err(Error::io("cannot copy", source))?;
    let (size, sha) = hash_file(&partial)?;
    if (size, sha.as_str()) != expected {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::Failed(format!(
            "{name} changed while it was copied to {}",
            dir.display()
        )));
    }
    std::fs::File::open(&partial)
        .and_then(|f| f.sync_all())
        .map_err(Error::io("cannot sync", &partial))?;
    std::fs::rename(&partial, dir.join(name)).map_err(Error::io("cannot rename", &partial))
}
