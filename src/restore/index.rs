//! The version index: which set records which version of which path, read from the sets'
//! isolated catalogues into the state database. It is keyed by set and manifest hash, so an
//! index built from one copy serves every copy, and any copy can rebuild it.

use std::collections::HashMap;

use super::Fetch;
use crate::copy::FoundSet;
use crate::error::Result;
use crate::state::{PathKind, RecordState, Recorded, State};
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
        state.index_set(&set.manifest.set.name, &set.manifest_sha256, |insert| {
            dar.list(&catalogue, key, &[], |e| {
                if let Some(r) = recorded(e) {
                    insert(r);
                }
            })
        })?;
    }
    Ok(())
}

/// What an entry records in its set, if anything. dar's catalogue of every set lists the
/// whole tree; a folder has no data of its own, so each set that lists it says it exists
/// ("listed": an empty folder exists too).
fn recorded(e: Entry) -> Option<Recorded> {
    let state = match e.data {
        DataState::Deleted => RecordState::Deleted,
        _ if e.kind == EntryKind::Directory => RecordState::Listed,
        DataState::Saved => RecordState::Saved,
        DataState::InodeOnly => RecordState::Metadata,
        DataState::Referenced | DataState::Other => return None,
    };
    let kind = match e.kind {
        EntryKind::File => PathKind::File,
        EntryKind::Directory => PathKind::Folder,
        EntryKind::Symlink => PathKind::Symlink,
        EntryKind::Other => PathKind::Other,
    };
    Some(Recorded {
        path: e.path,
        state,
        kind,
        size: e.size,
        mtime: e.mtime,
    })
}

/// A path as it stood at a time, and the set holding its data.
#[derive(Debug, serde::Serialize)]
pub struct Present {
    pub path: String,
    pub kind: PathKind,
    pub size: u64,
    pub mtime: i64,
    pub set: String,
}

/// The paths that existed after applying `chain` in order (FULL first) and that `keep`
/// accepts, by path. Read from the index row by row: what is held at once is the answer and
/// the paths that were deleted.
pub(super) fn present(
    state: &State,
    chain: &[FoundSet],
    keep: impl Fn(&Present) -> bool,
) -> Result<Vec<Present>> {
    let names: Vec<&str> = chain.iter().map(|s| s.manifest.set.name.as_str()).collect();
    let mut out = Vec::new();
    // Paths some set of the chain deleted, with those sets' positions: what was below them
    // before is gone. A path always comes after its folders (byte order).
    let mut deleted: HashMap<String, Vec<usize>> = HashMap::new();
    let mut group: Vec<(usize, Recorded)> = Vec::new();
    let mut settle = |group: &mut Vec<(usize, Recorded)>| {
        let Some(path) = group.first().map(|(_, r)| r.path.clone()) else {
            return;
        };
        let folders = path.match_indices('/').map(|(i, _)| &path[..i]);
        let mut events: Vec<(usize, Option<&Recorded>)> = folders
            .filter_map(|f| deleted.get(f))
            .flat_map(|at| at.iter().map(|&p| (p, None)))
            .chain(group.iter().map(|(p, r)| (*p, Some(r))))
            .collect();
        // A folder's deletion in a set goes before what that set records below it.
        events.sort_by_key(|(p, r)| (*p, r.is_some()));
        let mut now: Option<Present> = None;
        for (position, r) in events {
            match r {
                None => now = None,
                Some(r) if r.state == RecordState::Deleted => now = None,
                // Only the metadata changed: the data stays the older set's.
                Some(r) if r.state == RecordState::Metadata && now.is_some() => {
                    if let Some(p) = now.as_mut() {
                        p.mtime = r.mtime;
                    }
                }
                Some(r) => {
                    now = Some(Present {
                        path: r.path.clone(),
                        kind: r.kind,
                        size: r.size,
                        mtime: r.mtime,
                        set: names[position].to_owned(),
                    })
                }
            }
        }
        let deletions: Vec<usize> = group
            .iter()
            .filter(|(_, r)| r.state == RecordState::Deleted)
            .map(|(p, _)| *p)
            .collect();
        if !deletions.is_empty() {
            deleted.insert(path.clone(), deletions);
        }
        out.extend(now.filter(&keep));
        group.clear();
    };
    state.each_in_chain(&names, |position, r| {
        if group.first().is_some_and(|(_, g)| g.path != r.path) {
            settle(&mut group);
        }
        group.push((position, r));
    })?;
    settle(&mut group);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(name: &str) -> FoundSet {
        let mut manifest = crate::set::manifest::tests::sample();
        manifest.set.name = name.into();
        FoundSet {
            dir: name.into(),
            name: name.parse().expect("a set name"),
            manifest,
            manifest_sha256: format!("sha of {name}"),
        }
    }

    fn row(path: &str, state: RecordState, kind: PathKind, mtime: i64) -> Recorded {
        Recorded {
            path: path.into(),
            state,
            kind,
            size: 1,
            mtime,
        }
    }

    #[test]
    fn a_chain_applies_deletions_metadata_and_later_writes() {
        use PathKind::{File, Folder};
        use RecordState::{Deleted, Listed, Metadata, Saved};
        let dir = tempfile::tempdir().unwrap();
        let state = State::open(dir.path()).unwrap();
        let chain = [
            set("d_FULL_2026-01-01_000000"),
            set("d_DIFF_2026-01-02_000000"),
            set("d_INCR_2026-01-03_000000"),
        ];
        let rows = [
            vec![
                row("a", Listed, Folder, 1),
                row("a/b", Saved, File, 1),
                row("a-z", Saved, File, 1),
                row("d", Saved, File, 1),
                row("gone", Saved, File, 1),
            ],
            // The folder a is deleted, d's metadata changed, gone deleted.
            vec![
                row("a", Deleted, Folder, 2),
                row("d", Metadata, File, 2),
                row("gone", Deleted, File, 2),
            ],
            // a is back with a new file; a/b stays gone.
            vec![row("a", Listed, Folder, 3), row("a/e", Saved, File, 3)],
        ];
        for (s, rows) in chain.iter().zip(rows) {
            state
                .index_set(&s.manifest.set.name, &s.manifest_sha256, |insert| {
                    rows.into_iter().for_each(insert);
                    Ok(())
                })
                .unwrap();
        }
        let got: Vec<(String, String, i64)> = present(&state, &chain, |_| true)
            .unwrap()
            .into_iter()
            .map(|p| (p.path, p.set, p.mtime))
            .collect();
        let incr = "d_INCR_2026-01-03_000000".to_string();
        let full = "d_FULL_2026-01-01_000000".to_string();
        assert_eq!(
            got,
            vec![
                ("a".into(), incr.clone(), 3),
                // Not below the deleted folder a, though it sorts between a and a/e.
                ("a-z".into(), full.clone(), 1),
                ("a/e".into(), incr, 3),
                ("d".into(), full, 2),
            ]
        );
    }
}
