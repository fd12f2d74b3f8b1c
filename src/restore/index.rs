//! The version index: which set records which version of which path, read from the sets'
//! isolated catalogues into the state database. It is keyed by set and manifest hash, so an
//! index built from one copy serves every copy, and any copy can rebuild it.

use std::collections::BTreeMap;

use super::Fetch;
use crate::copy::FoundSet;
use crate::error::Result;
use crate::state::{Recorded, State};
use crate::tools::dar::{Dar, DataState, Entry, EntryKind};
use crate::tools::secret::Passphrase;

/// Read the catalogues of the sets the index lacks.
pub(super) fn refresh(
    state: &State,
    dar: &Dar,
    key: Option<&Passphrase>,
    fetch: &mut Fetch,
    sets: &[FoundSet],
) -> Result<()> {
    for set in sets {
        if state.is_indexed(&set.manifest.set.name, &set.manifest_sha256)? {
            continue;
        }
        tracing::info!(set = %set.manifest.set.name, "indexing the catalogue");
        let catalogue = fetch.catalogue(set)?;
        let mut rows = Vec::new();
        dar.list(&catalogue, key, &[], |e| rows.extend(recorded(e)))?;
        state.index_set(&set.manifest.set.name, &set.manifest_sha256, &rows)?;
    }
    Ok(())
}

/// What an entry records in its set, if anything. dar's catalogue of every set lists the
/// whole tree; a folder has no data of its own, so each set that lists it says it exists
/// ("listed": an empty folder exists too).
fn recorded(e: Entry) -> Option<Recorded> {
    let state = match e.data {
        DataState::Deleted => "deleted",
        _ if e.kind == EntryKind::Directory => "listed",
        DataState::Saved => "saved",
        DataState::InodeOnly => "metadata",
        DataState::Referenced | DataState::Other => return None,
    };
    let kind = match e.kind {
        EntryKind::File => "file",
        EntryKind::Directory => "folder",
        EntryKind::Symlink => "symlink",
        EntryKind::Other => "other",
    };
    Some(Recorded {
        path: e.path,
        state: state.into(),
        kind: kind.into(),
        size: e.size,
        mtime: e.mtime,
    })
}

/// A path as it stood at a time, and the set holding its data.
#[derive(Debug, serde::Serialize)]
pub struct Present {
    pub path: String,
    pub kind: String,
    pub size: u64,
    pub mtime: i64,
    pub set: String,
}

/// The paths that existed after applying `chain` in order (FULL first).
pub(super) fn present(state: &State, chain: &[FoundSet]) -> Result<BTreeMap<String, Present>> {
    let mut tree: BTreeMap<String, Present> = BTreeMap::new();
    for set in chain {
        for r in state.recorded(&set.manifest.set.name)? {
            match r.state.as_str() {
                "deleted" => {
                    let below = format!("{}/", r.path);
                    tree.retain(|p, _| *p != r.path && !p.starts_with(&below));
                }
                "metadata" if tree.contains_key(&r.path) => {
                    if let Some(p) = tree.get_mut(&r.path) {
                        p.mtime = r.mtime;
                    }
                }
                _ => {
                    let p = Present {
                        path: r.path.clone(),
                        kind: r.kind,
                        size: r.size,
                        mtime: r.mtime,
                        set: set.manifest.set.name.clone(),
                    };
                    tree.insert(r.path, p);
                }
            }
        }
    }
    Ok(tree)
}
