//! Where a restore writes: the paths asked for, inside the backed-up folder, and a target
//! that is new or empty, not a link, never a system folder.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::set::manifest::is_safe_relative;

use super::extract::FLAT_PREFIX;

/// Directories a restore must never write into.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/var",
];
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys",
    "/usr",
];

/// Requested paths, relative to the backed-up source, inside it.
pub(super) fn clean_paths(paths: &[String]) -> Result<Vec<String>> {
    paths
        .iter()
        .map(|p| {
            let p = p.trim_start_matches('/').trim_end_matches('/').to_owned();
            if is_safe_relative(&p) {
                Ok(p)
            } else {
                Err(Error::Usage(format!(
                    "{p:?}: give paths relative to the backed-up folder, without '..'"
                )))
            }
        })
        .collect()
}

/// The target must be new or empty (unless --overwrite), not a symlink, not a system folder.
pub(super) fn check_target(target: &Path, overwrite: bool) -> Result<PathBuf> {
    let cwd = std::env::current_dir()
        .map_err(|e| Error::Failed(format!("cannot read the current directory: {e}")))?;
    let target = if target.is_absolute() {
        target.to_owned()
    } else {
        cwd.join(target)
    };
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(Error::Usage(format!(
            "{} is a symlink: give the real folder",
            target.display()
        )));
    }
    // Resolve what exists of it, so that /tmp/../etc or a symlinked parent is seen for what it is.
    let existing = target
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let resolved = existing
        .canonicalize()
        .map_err(Error::io("cannot resolve", existing))?
        .join(target.strip_prefix(existing).unwrap_or(Path::new("")));
    let system = SYSTEM_DIRS.iter().any(|d| resolved == Path::new(d))
        || SYSTEM_TREES.iter().any(|d| resolved.starts_with(d));
    if system {
        return Err(Error::Usage(format!(
            "{} is a system folder: restore into a new folder and copy what you need from there",
            resolved.display()
        )));
    }
    if resolved.is_dir() && !overwrite {
        let entries = std::fs::read_dir(&resolved).map_err(Error::io("cannot read", &resolved))?;
        // A flat restore's scratch folder left by a restore that was killed is not the
        // user's: it goes.
        let mut entries = entries.flatten().filter(|e| {
            let ours = e.file_name().to_string_lossy().starts_with(FLAT_PREFIX)
                && e.file_type().is_ok_and(|t| t.is_dir());
            !(ours && std::fs::remove_dir_all(e.path()).is_ok())
        });
        if entries.next().is_some() {
            return Err(Error::Usage(format!(
                "{} is not empty: give a new or empty folder, or --overwrite",
                resolved.display()
            )));
        }
    }
    Ok(resolved)
}
