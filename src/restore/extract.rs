//! The chain applied to the target, oldest set first: served to dar block by block where it
//! can be, else from proven slices; a flat restore for a few files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::copy::FoundSet;
use crate::error::{Error, Result};
use crate::tools::dar::{Archive, Dar, Layout, NotRestored};
use crate::tools::dar_pipes;
use crate::tools::secret::Passphrase;

use super::{Fetch, Proven, select, served};

/// Extract `paths` (everything when empty) as of the chain's newest set into `target`; the
/// names of the sets applied.
pub(super) fn extract_chain(
    fetch: &mut Fetch,
    dar: &Dar,
    key: Option<&Passphrase>,
    chain: &[FoundSet],
    paths: &[String],
    target: &Path,
) -> Result<(Vec<String>, Vec<NotRestored>)> {
    // What dar will read: every slice of every set for a whole tree; for some paths, what
    // the catalogues say holds them, and the header and trailer of the first and last
    // slices. Each file is proven against its manifest first (dar may return 0 with an
    // interior slice missing); dar only ever reads proven bytes.
    let (needs, catalogues) = if paths.is_empty() {
        let whole =
            |set: &FoundSet| -> BTreeSet<u32> { (1..=set.manifest.archive.slices).collect() };
        let needs = (0..chain.len())
            .map(|i| select::Need {
                set: i,
                slices: whole(&chain[i]),
                edges: BTreeSet::new(),
                whole: whole(&chain[i]),
                written: Vec::new(),
                paths: Vec::new(),
                flat: None,
                served: false,
                located: true,
            })
            .collect();
        (needs, vec![None; chain.len()])
    } else {
        let catalogues = chain
            .iter()
            .map(|set| fetch.catalogue(set))
            .collect::<Result<Vec<_>>>()?;
        // A flat restore (some files, into a scratch folder first) is served to dar block
        // by block where the set's PAR2 index proves its slices so: dar reads only what it
        // needs, and damage found as it reads leaves nothing in the target.
        let servable = |i: usize| -> Result<bool> {
            Ok(served::ProvenBlocks::of(fetch, &chain[i])?.is_some())
        };
        let needs = select::needed(dar, key, chain, &catalogues, paths, servable)?;
        (needs, catalogues.into_iter().map(Some).collect())
    };
    // The rest is proven up front, side by side.
    let up_front: Vec<&select::Need> = needs.iter().filter(|n| !n.served).collect();
    let mut proven = prove_needed(fetch, chain, &up_front)?.into_iter();
    std::fs::create_dir_all(target).map_err(Error::io("cannot create", target))?;
    let restoring = Restoring {
        dar,
        key,
        chain,
        target,
    };
    // One line per file, with the last set's reason.
    let mut failed: BTreeMap<String, NotRestored> = BTreeMap::new();
    let applied = needs
        .iter()
        .map(|n| chain[n.set].manifest.set.name.clone())
        .collect();
    for mut need in needs {
        let set = &chain[need.set];
        let catalogue = catalogues[need.set].as_deref();
        tracing::info!(set = %set.manifest.set.name, "extracting");
        let served = match need.served {
            true => restoring.served(fetch, &need, catalogue)?,
            false => None,
        };
        let mut not_restored = match (served, catalogue) {
            (Some(not_restored), _) => not_restored,
            (None, Some(catalogue)) if need.served => {
                let count = set.manifest.archive.slices;
                select::locate(dar, key, catalogue, paths, &mut need, count)?;
                let ready = prove_needed(fetch, chain, &[&need])?.remove(0);
                restoring.with_proven(fetch, &need, Some(catalogue), ready)?
            }
            (None, catalogue) => {
                let ready = proven.next().expect("proven up front");
                restoring.with_proven(fetch, &need, catalogue, ready)?
            }
        };
        // An older set's failure is over for a path whose data this set has written.
        for w in need.written.iter().filter(|w| w.data) {
            if !not_restored.iter().any(|f| f.path == w.path) {
                failed.remove(&w.path);
            }
        }
        for f in not_restored.drain(..) {
            tracing::debug!(set = %set.manifest.set.name, "{} not restored: {}", f.path, f.reason);
            failed.insert(f.path.clone(), f);
        }
    }
    Ok((applied, failed.into_values().collect()))
}

/// The slices `needs` make dar read, proven (side by side): for each, the stand-ins made for
/// slices needed only by their ends, and the slices proven whole.
pub(super) fn prove_needed(
    fetch: &mut Fetch,
    chain: &[FoundSet],
    needs: &[&select::Need],
) -> Result<Vec<(Vec<PathBuf>, Proven)>> {
    // The first and last slices, where they hold no data asked for, by their edges alone.
    let mut edges: Vec<Vec<PathBuf>> = Vec::new();
    let mut whole: Vec<BTreeSet<u32>> = Vec::new();
    for need in needs {
        let (slices, made) = fetch.stand_ins(&chain[need.set], &need.slices, &need.edges)?;
        edges.push(made);
        whole.push(slices);
    }
    let proven = fetch.slices(chain, needs.iter().map(|n| n.set).zip(&whole))?;
    Ok(edges.into_iter().zip(proven).collect())
}

/// What every set of a restore is extracted with.
pub(super) struct Restoring<'a> {
    dar: &'a Dar,
    key: Option<&'a Passphrase>,
    chain: &'a [FoundSet],
    target: &'a Path,
}

impl Restoring<'_> {
    /// `need` (a flat restore) extracted with dar reading the set's slices through pipes,
    /// every block it reads proven by the set's PAR2 index first. None when the slices
    /// cannot be served so, or the restore fell short of what it was to write: then they
    /// are proven whole and dar runs again.
    pub(super) fn served(
        &self,
        fetch: &mut Fetch,
        need: &select::Need,
        catalogue: Option<&Path>,
    ) -> Result<Option<Vec<NotRestored>>> {
        let set = &self.chain[need.set];
        let (Some(flat), Some(mut blocks)) = (&need.flat, served::ProvenBlocks::of(fetch, set)?)
        else {
            return Ok(None);
        };
        let local = fetch.copy.in_place(&fetch.copy.location(set)).is_some();
        let extracted = match dar_pipes::Archive::open(blocks.sizes(), &mut blocks) {
            Ok(Some(mut archive)) => {
                let extracted = extract_flat(
                    self.dar,
                    Archive::Served(&mut archive),
                    catalogue,
                    self.key,
                    self.target,
                    need,
                    &flat.folders,
                );
                tracing::debug!(set = %set.manifest.set.name, "served {} bytes to dar", archive.served);
                extracted
            }
            Ok(None) => Err(Error::Failed("slices of a layout not known here".into())),
            Err(e) => Err(e),
        };
        if !local {
            fetch.downloaded += blocks.read;
        }
        tracing::debug!(set = %set.manifest.set.name, "read {} bytes of its slices", blocks.read);
        match extracted {
            Ok(not_restored)
                if not_restored.is_empty() && need.written.iter().all(|w| w.is_in(self.target)) =>
            {
                Ok(Some(not_restored))
            }
            Err(Error::Interrupted) => Err(Error::Interrupted),
            outcome => {
                tracing::debug!(set = %set.manifest.set.name, "served to dar: {outcome:?}; again with its slices proven whole");
                Ok(None)
            }
        }
    }

    /// `need` extracted from its slices proven (`ready`: stand-ins and whole slices).
    pub(super) fn with_proven(
        &self,
        fetch: &mut Fetch,
        need: &select::Need,
        catalogue: Option<&Path>,
        (proxies, proven): (Vec<PathBuf>, Proven),
    ) -> Result<Vec<NotRestored>> {
        let Restoring {
            dar,
            key,
            chain,
            target,
        } = *self;
        let set = &chain[need.set];
        let archive = |dir: &Path| dir.join(&set.manifest.archive.basename);
        let dir = if proxies.is_empty() {
            proven.dir
        } else {
            fetch.beside_edges(set, &proven.files)?
        };
        // Given some slices only (or only the ends of some), dar may want more: it exits 0
        // having restored nothing when it cannot open a slice it wants, and reports what it
        // could not read of a stand-in. So what it was to write is looked at in the target,
        // and short of that it runs again with every slice of the set proven whole (and as a
        // tree, should a flat restore have fallen short).
        let partial = need.flat.is_some()
            || !proxies.is_empty()
            || proven.files.len() < set.manifest.archive.slices as usize;
        let extracted = match &need.flat {
            Some(flat) => extract_flat(
                dar,
                Archive::Slices(&archive(&dir)),
                catalogue,
                key,
                target,
                need,
                &flat.folders,
            ),
            None => dar.extract(
                Archive::Slices(&archive(&dir)),
                catalogue,
                key,
                target,
                &need.paths,
                Layout::Tree,
            ),
        };
        let not_restored = match extracted {
            Ok(not_restored)
                if !partial
                    || (not_restored.is_empty()
                        && need.written.iter().all(|w| w.is_in(target))) =>
            {
                not_restored
            }
            Err(e) if !partial || matches!(e, Error::Interrupted) => return Err(e),
            Err(e)
                if need.flat.is_some()
                    && tree_of_flat(fetch, dar, (catalogue, key), chain, need, target, &e)? =>
            {
                Vec::new()
            }
            outcome => {
                tracing::debug!(set = %set.manifest.set.name, "with slices {:?} and the ends of {:?}: {outcome:?}; again with every slice whole", need.slices, need.edges);
                let every: BTreeSet<u32> = (1..=set.manifest.archive.slices).collect();
                let all = fetch.slices(chain, [(need.set, &every)].into_iter())?;
                let dir = &all[0].dir;
                dar.extract(
                    Archive::Slices(&archive(dir)),
                    catalogue,
                    key,
                    target,
                    &need.paths,
                    Layout::Tree,
                )?
            }
        };
        Ok(not_restored)
    }
}

/// A flat restore of `need` fell short (`why`): the tree restore it stands for, with the
/// slices that reads (its folders' records too). Whether that restored all it was to write
/// (else every slice is proven whole and dar runs again).
pub(super) fn tree_of_flat(
    fetch: &mut Fetch,
    dar: &Dar,
    (catalogue, key): (Option<&Path>, Option<&Passphrase>),
    chain: &[FoundSet],
    need: &select::Need,
    target: &Path,
    why: &Error,
) -> Result<bool> {
    let (Some(flat), set) = (&need.flat, &chain[need.set]) else {
        return Ok(false);
    };
    tracing::debug!(set = %set.manifest.set.name, "flat: {why}; as a tree");
    let (slices, made) = fetch.stand_ins(set, &flat.tree_slices, &flat.tree_edges)?;
    let proven = fetch
        .slices(chain, [(need.set, &slices)].into_iter())?
        .remove(0);
    let dir = match made.is_empty() {
        true => proven.dir,
        false => fetch.beside_edges(set, &proven.files)?,
    };
    let archive = dir.join(&set.manifest.archive.basename);
    match dar.extract(
        Archive::Slices(&archive),
        catalogue,
        key,
        target,
        &need.paths,
        Layout::Tree,
    ) {
        Ok(not_restored) => {
            Ok(not_restored.is_empty() && need.written.iter().all(|w| w.is_in(target)))
        }
        Err(Error::Interrupted) => Err(Error::Interrupted),
        Err(_) => Ok(false),
    }
}

/// The name of a flat restore's scratch folder in the target starts so.
pub(super) const FLAT_PREFIX: &str = ".darvault-flat.";

/// `need`'s files restored flat (dar reads no folder record, see `select::Need::flat`)
/// into a scratch folder in `target`, moved to their paths there, then their folders given
/// the mode and time the set records. Anything short of every file in place as recorded
/// is an error: the caller then restores the set as a tree.
pub(super) fn extract_flat(
    dar: &Dar,
    archive: Archive,
    catalogue: Option<&Path>,
    key: Option<&Passphrase>,
    target: &Path,
    need: &select::Need,
    folders: &[select::Folder],
) -> Result<Vec<NotRestored>> {
    let flat = tempfile::Builder::new()
        .prefix(FLAT_PREFIX)
        .tempdir_in(target)
        .map_err(Error::io("cannot create a folder in", target))?;
    let not_restored = dar.extract(
        archive,
        catalogue,
        key,
        flat.path(),
        &need.paths,
        Layout::Flat,
    )?;
    if let Some(f) = not_restored.first() {
        return Err(Error::Failed(format!(
            "{} not restored flat: {}",
            f.path, f.reason
        )));
    }
    for path in &need.paths {
        let name = path.rsplit('/').next().unwrap_or(path);
        let to = target.join(path);
        make_folders_within(target, path)?;
        std::fs::rename(flat.path().join(name), &to).map_err(Error::io("cannot move", &to))?;
    }
    // Deepest first, after every move: a move changes its folder's time, and a folder
    // recorded read-only could not take the moves. The time first: it needs no permission
    // on the folder (its owner may set it), the mode may take some away.
    for folder in folders {
        let dir = target.join(&folder.path);
        set_modified(&dir, folder.mtime)?;
        if let Some(mode) = folder.mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))
                .map_err(Error::io("cannot set the mode of", &dir))?;
        }
    }
    match need.written.iter().find(|w| !w.is_in(target)) {
        Some(w) => Err(Error::Failed(format!(
            "{} not in place after a flat restore",
            w.path
        ))),
        None => Ok(Vec::new()),
    }
}

/// The folders above `path` in `target`, made where missing. A folder already there must be
/// one, not a link: a flat restore never writes through a link (dar, restoring a tree,
/// decides what to do with it).
pub(super) fn make_folders_within(target: &Path, path: &str) -> Result<()> {
    let mut dir = target.to_owned();
    let Some((parents, _)) = path.rsplit_once('/') else {
        return Ok(());
    };
    for part in parents.split('/') {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(Error::Failed(format!("{} is not a folder", dir.display())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(Error::io("cannot create", &dir))?;
            }
            Err(e) => return Err(Error::io("cannot read", &dir)(e)),
        }
    }
    Ok(())
}

/// Set `path`'s modification time (seconds since the epoch), not following a link, to the
/// second as dar records it; its access time is left as it is.
pub(super) fn set_modified(path: &Path, mtime: i64) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::Failed(format!("{} holds a NUL byte", path.display())))?;
    let times = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: mtime as _,
            tv_nsec: 0,
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs, as utimensat wants.
    let done = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if done != 0 {
        return Err(Error::io("cannot set the time of", path)(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
