//! A set deleted from a copy that keeps older versions (a versioned bucket, locked or not):
//! its files are still there under their delete markers. An audit names such a set; a
//! repairing audit brings its manifest back, then each file the manifest lists, copied by
//! the server from its newest older version with the manifest's size and SHA-256, and then
//! proves the set as any other. Sets darvault removed itself (cleanup's record is among the
//! deleted files) are left as they are.

use crate::copy::Store;
use crate::copy::backend::OlderVersion;
use crate::error::{Error, Result};
use crate::set::manifest::FileEntry;
use crate::set::{MANIFEST, Manifest, Role, SHA256SUMS};
use crate::state::State;

/// Bring back the set deleted at `dir`: its manifest (the version this machine sent, where
/// the state database knows it; else the newest one the server keeps a checksum of), its
/// SHA256SUMS and every file the manifest lists that an older version holds. The number of
/// files brought back.
pub(super) async fn bring_back_set(copy: &Store, dir: &str, state: &State) -> Result<usize> {
    let set = dir.rsplit('/').next().unwrap_or(dir);
    let manifest_path = format!("{dir}/{MANIFEST}");
    let versions = copy.older_versions(&manifest_path).await?;
    let mut sent = None;
    for version in &versions {
        if let Some(sha) = kept_sha256(version)
            && state.is_complete(&copy.name, set, sha)?
        {
            sent = Some(version);
            break;
        }
    }
    // Where this machine sent the set, only the manifest it sent is brought back (a newer
    // one may be whoever deleted the set's); else the newest one the server keeps a
    // checksum of, proven below like any other.
    let chosen = match (sent, state.was_replicated(&copy.name, set)?) {
        (Some(sent), _) => Some(sent),
        (None, true) => None,
        (None, false) => versions.iter().find(|v| kept_sha256(v).is_some()),
    };
    let Some(chosen) = chosen else {
        return Err(Error::Failed(format!(
            "{dir}: deleted, and no older version of the manifest sent there is kept"
        )));
    };
    let Some(_) = copy
        .from_history(&manifest_path, &small(chosen), true)
        .await?
    else {
        return Err(Error::Failed(format!(
            "{dir}: its manifest could not be brought back"
        )));
    };
    let bytes = copy.read_small(&manifest_path).await?.unwrap_or_default();
    let manifest = Manifest::parse_for(&bytes, set).ok_or_else(|| {
        Error::Failed(format!(
            "{dir}: the manifest brought back does not describe this set"
        ))
    })?;
    let mut brought = 1;
    let sums = format!("{dir}/{SHA256SUMS}");
    if let Some(newest) = copy
        .older_versions(&sums)
        .await?
        .into_iter()
        .find(|v| kept_sha256(v).is_some())
        && copy
            .from_history(&sums, &small(&newest), true)
            .await?
            .is_some()
    {
        brought += 1;
    }
    for entry in &manifest.files {
        let path = format!("{dir}/{}", entry.path);
        if copy.from_history(&path, entry, true).await?.is_some() {
            brought += 1;
        }
    }
    Ok(brought)
}

/// The SHA-256 the copy keeps of this version of a whole file (a manifest's, a
/// SHA256SUMS's: small files, never sent in parts).
fn kept_sha256(version: &OlderVersion) -> Option<&str> {
    version.kept.as_ref().and_then(|k| k.sha256())
}

/// A small file of the set (its manifest, its SHA256SUMS) as this version of it is: what
/// bringing it back proves against.
fn small(version: &OlderVersion) -> FileEntry {
    FileEntry {
        path: String::new(),
        size: version.size,
        sha256: kept_sha256(version).unwrap_or_default().to_owned(),
        role: Role::Bundle,
        parts: None,
    }
}
