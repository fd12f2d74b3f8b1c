//! Which sets of a chain a restore of some paths needs, and which of their slices.
//!
//! Each set's isolated catalogue says, per entry, whether the set stores its data, only its
//! changed inode, or a deletion. Walking the chain from the newest set back, a path is settled
//! once a set stores its data or records its deletion (or its parent folder's deletion): older
//! sets add nothing to it. A set that holds nothing unsettled is skipped; of a needed set dar
//! reads the first and last slices (header and trailer) and those holding the paths' data.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::copy::FoundSet;
use crate::error::Result;
use crate::tools::dar::{Dar, DataState, Entry, EntryKind, Slicing};
use crate::tools::secret::Passphrase;

pub struct Need {
    /// Index into the chain.
    pub set: usize,
    /// Slice numbers (1-based) holding what dar reads of the paths (their data, and their
    /// folders' records with attributes).
    pub slices: BTreeSet<u32>,
    /// The first and the last slice where they hold nothing of the paths: of those dar reads
    /// only the header and the end.
    pub edges: BTreeSet<u32>,
    /// Every slice dar opens for these paths: what is proven whole when the edges alone do
    /// not do.
    pub whole: BTreeSet<u32>,
    /// What this set writes under the paths (data, changed inodes): as recorded in the
    /// target after dar ran, or dar did not do all it was asked.
    pub written: Vec<Written>,
    /// The requested paths dar is asked for in this set: those it writes something under,
    /// and those it deletes something under that an older set wrote. (Asked for a path it
    /// only deletes, dar exits 5 "All files asked could not be restored" when the target
    /// never held it: a rename between two sets did that to a correct restore.)
    pub paths: Vec<String>,
    /// When every path asked of this set is a file whose data it stores, each under its
    /// own name: dar restores them flat (`-f`) and reads only the slices holding them, not
    /// those holding their folders' records (which may lie slices away: see
    /// `dar::Slicing`); these folders (deepest first) are then made by darvault with the
    /// mode and time the set records.
    pub flat: Option<Flat>,
    /// Flat, and dar is served the set's slices block by block, each proven as it reads.
    pub served: bool,
    /// `slices`, `edges`, `whole` (and a flat restore's tree slices) are known: read from
    /// the catalogue's slice list, which a served set needs only should serving fall short.
    pub located: bool,
}

/// How a set restores flat, and the tree restore it stands for (tried should it fall
/// short, before every slice is proven whole).
pub struct Flat {
    /// The folders to make, deepest first.
    pub folders: Vec<Folder>,
    /// The slices a tree restore of the same paths reads, and of them the first and last
    /// read only at their ends.
    pub tree_slices: BTreeSet<u32>,
    pub tree_edges: BTreeSet<u32>,
}

/// A parent folder of restored paths, as a set records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Folder {
    pub path: String,
    pub mode: Option<u32>,
    pub mtime: i64,
}

/// An entry a set writes into the target.
pub struct Written {
    pub path: String,
    /// Its data is stored in this set (not only a changed inode).
    pub data: bool,
    /// A regular file's size and modification time (seconds), as dar restores them.
    pub file: Option<(u64, i64)>,
}

impl Written {
    fn of(e: &Entry) -> Written {
        let data = e.data == DataState::Saved && e.kind != EntryKind::Directory;
        Written {
            path: e.path.clone(),
            data,
            file: (data && e.kind == EntryKind::File).then_some((e.size, e.mtime)),
        }
    }

    /// Whether the target holds it as this set records it.
    pub fn is_in(&self, target: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        std::fs::symlink_metadata(target.join(&self.path)).is_ok_and(|m| {
            self.file
                .is_none_or(|(size, mtime)| m.len() == size && m.mtime() == mtime)
        })
    }
}

/// The first and last slices (dar reads their header and end) and every slice holding
/// something of the paths: the slices dar opens, and those of them it reads only the ends of.
fn opened(count: u32, holding: &BTreeSet<u32>) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let first_and_last = BTreeSet::from([1, count.max(1)]);
    let edges = first_and_last.difference(holding).copied().collect();
    (holding.union(&first_and_last).copied().collect(), edges)
}

/// The requested paths that hold `entry`.
fn holders<'a>(entry: &str, wanted: &'a [String]) -> impl Iterator<Item = &'a String> {
    wanted
        .iter()
        .filter(move |w| ancestors_or_self(entry).any(|p| p == w.as_str()))
}

/// Paths whose state at the restore time a newer set already decides.
#[derive(Default)]
struct Settled {
    exact: BTreeSet<String>,
    /// Deleted: everything below is settled too.
    trees: BTreeSet<String>,
}

impl Settled {
    fn covers(&self, path: &str) -> bool {
        self.exact.contains(path) || ancestors_or_self(path).any(|p| self.trees.contains(p))
    }
}

fn ancestors_or_self(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rsplit_once('/').map(|(parent, _)| parent))
}

/// `path` is one of `wanted` or lies below one (parent folders dar lists along are not).
pub(super) fn within(path: &str, wanted: &[String]) -> bool {
    wanted
        .iter()
        .any(|w| ancestors_or_self(path).any(|p| p == w))
}

/// What one set's catalogue says of the requested paths: the entries it records within
/// them (data, changed inodes, deletions), the paths' parent folders, and the requested
/// paths that are folders existing in it.
struct Listing {
    records: Vec<Entry>,
    parents: BTreeMap<String, Folder>,
    folders: Vec<String>,
}

fn listing(
    dar: &Dar,
    key: Option<&Passphrase>,
    catalogue: &Path,
    paths: &[String],
) -> Result<Listing> {
    let mut out = Listing {
        records: Vec::new(),
        parents: BTreeMap::new(),
        folders: Vec::new(),
    };
    dar.list(catalogue, key, paths, |e| {
        if e.kind == EntryKind::Directory && paths.iter().any(|p| is_below(p, &e.path)) {
            let folder = Folder {
                path: e.path.clone(),
                mode: e.mode,
                mtime: e.mtime,
            };
            out.parents.insert(e.path.clone(), folder);
        }
        if e.kind == EntryKind::Directory && e.data != DataState::Deleted && paths.contains(&e.path)
        {
            out.folders.push(e.path.clone());
        }
        let recorded = match e.data {
            DataState::Saved | DataState::InodeOnly | DataState::Deleted => true,
            // A device or pipe carries no sign of having changed here: it counts.
            DataState::Referenced | DataState::Other => e.kind == EntryKind::Other,
        };
        if recorded && within(&e.path, paths) {
            out.records.push(e);
        }
    })?;
    Ok(out)
}

/// The sets of `chain` a restore of `paths` needs, oldest first. `servable(i)`: whether set
/// `i` can be served to dar block by block, each proven as dar reads it; such a set that
/// restores flat is not located (its slice list is read only should serving fall short).
pub fn needed(
    dar: &Dar,
    key: Option<&Passphrase>,
    chain: &[FoundSet],
    catalogues: &[PathBuf],
    paths: &[String],
    mut servable: impl FnMut(usize) -> Result<bool>,
) -> Result<Vec<Need>> {
    // Every set's catalogue says something of the paths' state at the restore time: they
    // are read side by side, a core each. With a core to spare for each, a set's slice list
    // is read beside its listing: most restores need it (one served flat does not), and
    // then it is there without a wait.
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let beside = cores >= 2 * chain.len();
    let read = crate::parallel::on_cores(chain.len(), |i| {
        std::thread::scope(|scope| {
            let slicing = beside.then(|| scope.spawn(|| dar.slicing(&catalogues[i], key, paths)));
            let listed = listing(dar, key, &catalogues[i], paths);
            (listed, slicing.map(|s| s.join().expect("dar -l thread")))
        })
    });
    let (listings, mut early): (Vec<_>, Vec<_>) = read.into_iter().unzip();
    let (candidates, folders) = newest_first(listings, paths)?;
    let (mut out, parents_of) = oldest_first(candidates);
    ask_folders(&mut out, folders, chain);
    for (need, parents) in out.iter_mut().zip(&parents_of) {
        flatten(need, parents);
        need.served = need.flat.is_some() && servable(need.set)?;
    }
    // The slices dar opens in each set not served, from its catalogue (a core each).
    for need in out.iter_mut().filter(|n| !n.located) {
        let count = chain[need.set].manifest.archive.slices;
        match early[need.set].take() {
            Some(Ok(slicing)) => place(need, &slicing, count),
            // Served, it may never need one.
            Some(Err(e)) if !need.served => return Err(e),
            _ => {}
        }
    }
    let unplaced: Vec<usize> = (0..out.len())
        .filter(|&n| !out[n].served && !out[n].located)
        .collect();
    let slicings = crate::parallel::on_cores(unplaced.len(), |k| {
        dar.slicing(&catalogues[out[unplaced[k]].set], key, paths)
    });
    for (n, slicing) in unplaced.into_iter().zip(slicings) {
        let count = chain[out[n].set].manifest.archive.slices;
        place(&mut out[n], &slicing?, count);
    }
    Ok(out)
}

/// A set that records something of the paths, before the older sets are weighed.
struct Candidate {
    need: Need,
    parents: BTreeMap<String, Folder>,
    /// It only records deletions.
    only_deletions: bool,
    writes: BTreeSet<String>,
    deletes: BTreeSet<String>,
}

/// From the newest set to the oldest: what each records of the paths that no newer set
/// settled. Also the requested folders that exist at the restore time (the newest set lists
/// them).
fn newest_first(
    listings: Vec<Result<Listing>>,
    paths: &[String],
) -> Result<(Vec<Candidate>, Vec<String>)> {
    let newest = listings.len();
    let mut settled = Settled::default();
    let mut candidates = Vec::new();
    let mut folders: Vec<String> = Vec::new();
    for (i, listed) in listings.into_iter().enumerate().rev() {
        let listed = listed?;
        if i + 1 == newest {
            folders = listed.folders;
        }
        let records: Vec<Entry> = listed
            .records
            .into_iter()
            .filter(|e| !settled.covers(&e.path))
            .collect();
        if records.is_empty() {
            continue;
        }
        let only_deletions = records.iter().all(|e| e.data == DataState::Deleted);
        let (mut writes, mut deletes) = (BTreeSet::new(), BTreeSet::new());
        for e in &records {
            let into = if e.data == DataState::Deleted {
                &mut deletes
            } else {
                &mut writes
            };
            into.extend(holders(&e.path, paths).cloned());
            match e.data {
                DataState::Deleted => {
                    settled.trees.insert(e.path.clone());
                }
                DataState::Saved if e.kind != EntryKind::Directory => {
                    settled.exact.insert(e.path.clone());
                }
                _ => {}
            }
        }
        let need = Need {
            set: i,
            slices: BTreeSet::new(),
            edges: BTreeSet::new(),
            whole: BTreeSet::new(),
            written: records
                .iter()
                .filter(|e| matches!(e.data, DataState::Saved | DataState::InodeOnly))
                .map(Written::of)
                .collect(),
            paths: Vec::new(),
            flat: None,
            served: false,
            located: false,
        };
        candidates.push(Candidate {
            need,
            parents: listed.parents,
            only_deletions,
            writes,
            deletes,
        });
    }
    Ok((candidates, folders))
}

/// The sets needed, oldest first, each with the paths asked of it: a deletion is asked for
/// only under what an older set wrote (with none, the path is simply absent).
fn oldest_first(mut candidates: Vec<Candidate>) -> (Vec<Need>, Vec<BTreeMap<String, Folder>>) {
    while candidates.last().is_some_and(|c| c.only_deletions) {
        candidates.pop();
    }
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    let mut parents_of = Vec::new();
    for c in candidates.into_iter().rev() {
        let Candidate {
            mut need,
            parents,
            writes,
            deletes,
            ..
        } = c;
        let mut asked: BTreeSet<String> = writes.clone();
        asked.extend(deletes.intersection(&written).cloned());
        written.extend(writes);
        if asked.is_empty() {
            continue;
        }
        need.paths = asked.into_iter().collect();
        out.push(need);
        parents_of.push(parents);
    }
    (out, parents_of)
}

/// Requested folders that exist at the restore time are asked of the newest set when no set
/// writes anything under them (an empty folder).
fn ask_folders(out: &mut Vec<Need>, folders: Vec<String>, chain: &[FoundSet]) {
    let unasked: Vec<String> = folders
        .into_iter()
        .filter(|f| !out.iter().any(|n| n.paths.iter().any(|p| p == f)))
        .collect();
    if unasked.is_empty() {
        return;
    }
    let last = chain.len() - 1;
    match out.iter_mut().find(|n| n.set == last) {
        Some(need) => need.paths.extend(unasked),
        None => {
            // No set records anything under it: dar reads only the newest set's ends.
            let (whole, edges) = opened(chain[last].manifest.archive.slices, &BTreeSet::new());
            out.push(Need {
                set: last,
                slices: BTreeSet::new(),
                edges,
                whole,
                written: Vec::new(),
                paths: unasked,
                flat: None,
                served: false,
                located: true,
            })
        }
    }
}

/// `need` located should serving it fall short: its set's slice list read now.
pub fn locate(
    dar: &Dar,
    key: Option<&Passphrase>,
    catalogue: &Path,
    paths: &[String],
    need: &mut Need,
    count: u32,
) -> Result<()> {
    if !need.located {
        place(need, &dar.slicing(catalogue, key, paths)?, count);
    }
    Ok(())
}

/// `path` lies strictly below the folder `folder`.
fn is_below(path: &str, folder: &str) -> bool {
    ancestors_or_self(path).skip(1).any(|a| a == folder)
}

/// Restore `need` flat where that is the same restore: every path asked is a file (or
/// link) whose data this set stores, and no two share a name. Then dar opens only the slices
/// holding them (and the first and last); their folders (`parents`, as the set records
/// them) are made by darvault.
fn flatten(need: &mut Need, parents: &BTreeMap<String, Folder>) {
    let stored = |p: &String| need.written.iter().any(|w| &w.path == p && w.data);
    let mut names = BTreeSet::new();
    let unique = need
        .paths
        .iter()
        .all(|p| names.insert(p.rsplit('/').next().unwrap_or(p)));
    if need.paths.is_empty() || !unique || !need.paths.iter().all(stored) {
        return;
    }
    // Only the folders of the paths this set restores: another path's may not exist yet.
    let folders: Vec<Folder> = parents
        .values()
        .rev()
        .filter(|f| need.paths.iter().any(|p| is_below(p, &f.path)))
        .cloned()
        .collect();
    need.flat = Some(Flat {
        folders,
        tree_slices: BTreeSet::new(),
        tree_edges: BTreeSet::new(),
    });
}

/// The slices dar opens for `need`, from the catalogue's slice list: as a tree, every slice
/// the listing names; flat, only those holding the files' data, where the list says so of
/// each (else the set restores as a tree).
fn place(need: &mut Need, slicing: &Slicing, count: u32) {
    let tree = slicing.all.clone();
    let (tree_whole, tree_edges) = opened(count, &tree);
    let holding = need.flat.as_ref().and_then(|_| {
        need.paths.iter().try_fold(BTreeSet::new(), |mut all, p| {
            all.extend(slicing.entries.get(p)?);
            Some(all)
        })
    });
    match (need.flat.as_mut(), holding) {
        (Some(flat), Some(slices)) => {
            (need.whole, need.edges) = opened(count, &slices);
            need.slices = slices;
            flat.tree_slices = tree;
            flat.tree_edges = tree_edges;
        }
        _ => {
            need.flat = None;
            need.slices = tree;
            need.whole = tree_whole;
            need.edges = tree_edges;
        }
    }
    need.served &= need.flat.is_some();
    need.located = true;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_folder_settles_what_was_below_it() {
        let mut s = Settled::default();
        s.trees.insert("photos/2019".into());
        s.exact.insert("docs/a.txt".into());
        assert!(s.covers("photos/2019/x.jpg"));
        assert!(s.covers("photos/2019"));
        assert!(!s.covers("photos/2019b/x.jpg"));
        assert!(s.covers("docs/a.txt"));
        assert!(!s.covers("docs/a.txt.bak"));
    }

    #[test]
    fn parents_listed_along_are_not_wanted() {
        let wanted = ["photos/2019".to_owned()];
        assert!(within("photos/2019/x.jpg", &wanted));
        assert!(within("photos/2019", &wanted));
        assert!(!within("photos", &wanted));
        assert!(!within("photos/2019b", &wanted));
    }

    fn need(paths: &[&str], stored: &[&str]) -> Need {
        Need {
            set: 0,
            slices: BTreeSet::from([1, 2, 3]),
            edges: BTreeSet::new(),
            whole: BTreeSet::from([1, 2, 3]),
            written: stored
                .iter()
                .map(|p| Written {
                    path: (*p).into(),
                    data: true,
                    file: None,
                })
                .collect(),
            paths: paths.iter().map(|p| (*p).into()).collect(),
            flat: None,
            served: false,
            located: false,
        }
    }

    fn slicing(entries: &[(&str, &[u32])]) -> Slicing {
        Slicing {
            all: BTreeSet::from([1, 2, 3]),
            entries: entries
                .iter()
                .map(|(p, s)| ((*p).into(), s.iter().copied().collect()))
                .collect(),
        }
    }

    fn parents(folders: &[&str]) -> BTreeMap<String, Folder> {
        folders
            .iter()
            .map(|f| {
                let folder = Folder {
                    path: (*f).into(),
                    mode: Some(0o750),
                    mtime: 1,
                };
                ((*f).into(), folder)
            })
            .collect()
    }

    #[test]
    fn files_a_set_stores_restore_flat_with_only_their_own_folders() {
        // Another asked path's folder ("b") is not this set's to make.
        let mut n = need(&["a/c/x.jpg"], &["a/c/x.jpg"]);
        flatten(&mut n, &parents(&["a", "a/c", "b"]));
        // Served, it is not located until serving falls short.
        assert!(n.flat.is_some() && !n.located);
        place(&mut n, &slicing(&[("a/c/x.jpg", &[2])]), 3);
        assert!(n.located);
        let flat = n.flat.unwrap();
        let made: Vec<&str> = flat.folders.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(made, ["a/c", "a"]);
        assert_eq!(flat.tree_slices, BTreeSet::from([1, 2, 3]));
        assert_eq!(n.slices, BTreeSet::from([2]));
        assert_eq!(n.whole, BTreeSet::from([1, 2, 3]));
        assert_eq!(n.edges, BTreeSet::from([1, 3]));
        // Not flat: a folder asked for, an inode-only change, two files of one name, a
        // path whose row could not be read.
        for (paths, stored, rows) in [
            (&["a"][..], &["a/x"][..], &[("a", &[1u32][..])][..]),
            (&["a/x"], &[], &[("a/x", &[1])]),
            (
                &["a/x", "b/x"],
                &["a/x", "b/x"],
                &[("a/x", &[1]), ("b/x", &[2])],
            ),
            (&["a/x"], &["a/x"], &[]),
        ] {
            let mut n = need(paths, stored);
            flatten(&mut n, &parents(&["a", "b"]));
            place(&mut n, &slicing(rows), 3);
            assert!(n.flat.is_none(), "{paths:?}");
            assert_eq!(n.slices, BTreeSet::from([1, 2, 3]));
        }
    }
}
