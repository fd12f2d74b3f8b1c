//! `darvault restore`: the whole tree, or some paths, as they were at a time, from any copy.
//!
//! The chain is worked out from the manifests on the copy alone (no database, no config from
//! the original machine). Before anything is extracted, every slice and catalogue of the
//! sets involved is proven against its manifest (dar may return 0 with an interior slice
//! missing) — of a first or last slice that dar opens only for its header and end, those ends,
//! by the set's PAR2 block checksums — and the target is checked: empty or new unless --overwrite, never a system
//! directory, never a symlink. The FULL is extracted, then each DIFF/INCR over it: files that
//! a later set records as deleted are removed, so nothing deleted is resurrected.

pub mod drill;
pub mod index;
pub mod select;
mod served;
pub mod when;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::copy::{FoundSet, Store};
use crate::error::{Error, Result};
use crate::set::manifest::is_safe_relative;
use crate::set::par2_index::BlockSums;
use crate::tools::dar::{Archive, Dar, Layout, NotRestored};
use crate::tools::dar_pipes;
use crate::tools::secret::Passphrase;

/// `restore --list`: what existed under some paths at a time.
pub struct ListRequest {
    pub from: Option<String>,
    pub definition: String,
    pub as_of: Option<String>,
    pub paths: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Listing {
    pub copy: String,
    pub definition: String,
    pub as_of: String,
    pub chain: Vec<String>,
    pub entries: Vec<index::Present>,
}

/// `darvault find PATTERN`: every version of matching paths across a copy's sets.
pub struct FindRequest {
    pub from: Option<String>,
    /// Empty: every definition on the copy.
    pub definitions: Vec<String>,
    /// A glob; without '/' it matches file names, with '/' whole paths.
    pub pattern: String,
}

#[derive(Debug, Serialize)]
pub struct Found {
    pub copy: String,
    pub pattern: String,
    /// Oldest set first.
    pub versions: Vec<Version>,
}

#[derive(Debug, Serialize)]
pub struct Version {
    // Shared by every version of a set (a find may answer with millions).
    pub definition: std::sync::Arc<str>,
    pub set: std::sync::Arc<str>,
    pub created: std::sync::Arc<str>,
    #[serde(flatten)]
    pub recorded: crate::state::Recorded,
}

pub struct Request {
    /// A destination name or a path [default: the repository].
    pub from: Option<String>,
    pub definition: String,
    pub as_of: Option<String>,
    pub target: PathBuf,
    /// Paths relative to the backed-up source (files or directories); empty: everything.
    pub paths: Vec<String>,
    pub overwrite: bool,
    /// Run the copy's bundled dar_static even when it is not one this darvault bundled.
    pub trust_bundle: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub copy: String,
    pub definition: String,
    /// The instant the restore is as of (UTC).
    pub as_of: String,
    /// The chain as of that time, FULL first.
    pub chain: Vec<String>,
    /// The sets extracted: all of the chain for a whole tree, those holding the paths else.
    pub applied: Vec<String>,
    /// Bytes fetched from a remote copy (0 for a local one: dar reads it in place).
    pub downloaded_bytes: u64,
    pub target: PathBuf,
    /// Requested paths that did not exist at that time (deleted before, or never saved).
    pub absent: Vec<String>,
    /// Files dar could not write into the target (a filesystem that cannot hold a symbolic
    /// link, a FIFO, a name), and why; every other file's data was restored.
    pub not_restored: Vec<crate::tools::dar::NotRestored>,
    /// A restore "as of now" from a copy that lacks sets the repository holds: the newest
    /// of those (the restore is older than the newest backup).
    pub newer_elsewhere: Option<String>,
    pub seconds: f64,
}

/// Directories a restore must never write into.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin",
    "/sys", "/usr", "/var",
];
const SYSTEM_TREES: &[&str] = &[
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys",
    "/usr",
];

/// The copy to read, named by --from, else the configured repository.
fn open_copy(config: Option<&Config>, from: Option<&str>) -> Result<Store> {
    match (from, config) {
        (Some(c), _) => crate::copy::open(c, config),
        (None, Some(c)) => crate::copy::repository(c),
        (None, None) => Err(Error::Usage(
            "no config: name the copy to read with --from (a path or a destination)".into(),
        )),
    }
}

fn sets_of(rt: &crate::copy::Runtime, copy: &Store, definition: &str) -> Result<Vec<FoundSet>> {
    let found = rt.block_on_stoppable(copy.sets(definition))?;
    for p in &found.problems {
        tracing::warn!("{p}");
    }
    Ok(found.sets)
}

fn as_of(when: Option<&str>) -> Result<jiff::Timestamp> {
    match when {
        Some(w) => when::parse(w, &jiff::ZonedDateTime::now()),
        None => Ok(jiff::Timestamp::now()),
    }
}

fn scratch_in(dir: &Path) -> Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(".darvault-restore.")
        .tempdir_in(dir)
        .map_err(|e| {
            Error::Failed(format!(
                "cannot make a scratch directory in {}: {e}",
                dir.display()
            ))
        })
}

pub fn run(config: Option<&Config>, req: &Request) -> Result<Report> {
    let began = Instant::now();
    let paths = clean_paths(&req.paths)?;
    let target = check_target(&req.target, req.overwrite)?;
    // Arguments are checked before any copy is read (a remote one may be slow to list).
    let as_of = as_of(req.as_of.as_deref())?;
    let copy = open_copy(config, req.from.as_deref())?;
    let rt = crate::copy::runtime()?;
    let sets = sets_of(&rt, &copy, &req.definition)?;
    let chain = chain_as_of(&sets, as_of, &req.definition, &copy.name)?;
    let key = passphrase(config, &chain, &req.definition)?;
    let scratch = scratch_in(target.parent().unwrap_or(Path::new("/tmp")))?;
    let mut fetch = Fetch::new(&rt, &copy, scratch.path());
    let dar = locate_dar(config, None, &mut fetch, &chain, req.trust_bundle)?;

    let (applied, not_restored) =
        extract_chain(&mut fetch, &dar, key.as_ref(), &chain, &paths, &target)?;
    let absent = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(target.join(p)).is_err())
        .cloned()
        .collect();
    let newer_elsewhere = match req.as_of {
        None => newer_in_repository(config, &copy, &rt, &req.definition, &sets),
        Some(_) => None,
    };
    Ok(Report {
        copy: copy.label(),
        definition: req.definition.clone(),
        as_of: as_of.to_string(),
        chain: chain.iter().map(|s| s.manifest.set.name.clone()).collect(),
        applied,
        downloaded_bytes: fetch.downloaded,
        target,
        absent,
        not_restored,
        newer_elsewhere,
        seconds: began.elapsed().as_secs_f64(),
    })
}

/// The newest set of `definition` in the configured repository when the copy restored from
/// (another one) lacks it: "as of now" from an older copy is older than the newest backup.
fn newer_in_repository(
    config: Option<&Config>,
    copy: &Store,
    rt: &crate::copy::Runtime,
    definition: &str,
    on_copy: &[FoundSet],
) -> Option<String> {
    let repository = crate::copy::repository(config?).ok()?;
    if repository.same_folder(copy) {
        return None;
    }
    let newest_here = on_copy.last().map(|s| s.manifest.set.created);
    let found = rt.block_on(repository.sets(definition)).ok()?;
    let newest = found.sets.last()?;
    (Some(newest.manifest.set.created) > newest_here).then(|| newest.manifest.set.name.clone())
}

/// Reads what the catalogues of a copy's sets record, through the version index.
struct Catalogues<'a> {
    config: Option<&'a Config>,
    state: crate::state::State,
    rt: crate::copy::Runtime,
    copy: Store,
    scratch: tempfile::TempDir,
    /// Run the copy's bundled dar_static even when this darvault did not bundle it.
    trust_bundle: bool,
}

impl<'a> Catalogues<'a> {
    fn open(config: Option<&'a Config>, from: Option<&str>) -> Result<Self> {
        let state_dir = config.map_or_else(crate::paths::default_state_dir, Config::state_dir);
        Ok(Catalogues {
            config,
            state: crate::state::State::open(&state_dir)?,
            rt: crate::copy::runtime()?,
            copy: open_copy(config, from)?,
            scratch: scratch_in(&std::env::temp_dir())?,
            trust_bundle: false,
        })
    }

    /// Index the sets the index lacks.
    fn index(&self, definition: &str, sets: &[FoundSet]) -> Result<()> {
        let key = passphrase(self.config, sets, definition)?;
        let mut fetch = Fetch::new(&self.rt, &self.copy, self.scratch.path());
        let Some(newest) = sets.last() else {
            return Ok(());
        };
        let dar = locate_dar(
            self.config,
            Some(&self.state),
            &mut fetch,
            std::slice::from_ref(newest),
            self.trust_bundle,
        )?;
        index::refresh(&self.state, &dar, key.as_ref(), &mut fetch, sets)
    }
}

pub fn list(config: Option<&Config>, req: &ListRequest) -> Result<Listing> {
    let paths = clean_paths(&req.paths)?;
    // Arguments are checked before any copy is read (a remote one may be slow to list).
    let as_of = as_of(req.as_of.as_deref())?;
    let c = Catalogues::open(config, req.from.as_deref())?;
    let sets = sets_of(&c.rt, &c.copy, &req.definition)?;
    let chain = chain_as_of(&sets, as_of, &req.definition, &c.copy.name)?;
    c.index(&req.definition, &chain)?;
    let entries = index::present(&c.state, &chain, |p| {
        paths.is_empty() || select::within(&p.path, &paths)
    })?;
    Ok(Listing {
        copy: c.copy.label(),
        definition: req.definition.clone(),
        as_of: as_of.to_string(),
        chain: chain.iter().map(|s| s.manifest.set.name.clone()).collect(),
        entries,
    })
}

pub fn find(config: Option<&Config>, req: &FindRequest) -> Result<Found> {
    let glob = globset::Glob::new(&req.pattern)
        .map_err(|e| Error::Usage(format!("{:?} is not a valid pattern: {e}", req.pattern)))?
        .compile_matcher();
    let whole_path = req.pattern.contains('/');
    let c = Catalogues::open(config, req.from.as_deref())?;
    let definitions = if req.definitions.is_empty() {
        c.rt.block_on_stoppable(c.copy.definitions())?
    } else {
        req.definitions.clone()
    };
    let mut versions = Vec::new();
    for definition in &definitions {
        let sets = sets_of(&c.rt, &c.copy, definition)?;
        c.index(definition, &sets)?;
        let definition: std::sync::Arc<str> = definition.as_str().into();
        for set in &sets {
            let name: std::sync::Arc<str> = set.manifest.set.name.as_str().into();
            let created: std::sync::Arc<str> = set.manifest.set.created.to_string().into();
            c.state.each_recorded(&set.manifest.set.name, |r| {
                // A folder has no versions of its own: every set lists it.
                if r.state == crate::state::RecordState::Listed {
                    return;
                }
                let subject = match whole_path {
                    true => r.path.as_str(),
                    false => r.path.rsplit('/').next().unwrap_or_default(),
                };
                if glob.is_match(subject) {
                    versions.push(Version {
                        definition: definition.clone(),
                        set: name.clone(),
                        created: created.clone(),
                        recorded: r,
                    });
                }
            })?;
        }
    }
    versions.sort_by(|a, b| {
        a.created
            .cmp(&b.created)
            .then(a.recorded.path.cmp(&b.recorded.path))
    });
    Ok(Found {
        copy: c.copy.label(),
        pattern: req.pattern.clone(),
        versions,
    })
}

/// The newest set made at or before `as_of`, preceded by the sets it needs.
fn chain_as_of(
    sets: &[FoundSet],
    as_of: jiff::Timestamp,
    definition: &str,
    copy: &str,
) -> Result<Vec<FoundSet>> {
    let newest = sets.iter().rev().find(|s| s.manifest.set.created <= as_of).ok_or_else(|| {
        match sets.first() {
            Some(first) => Error::Failed(format!(
                "no set of {definition} on {copy} was made at or before {as_of}; the oldest is {} ({})",
                first.manifest.set.name, first.manifest.set.created
            )),
            None => Error::Failed(format!("{copy} holds no set of {definition}")),
        }
    })?;
    let mut chain = Vec::new();
    for name in newest
        .manifest
        .set
        .chain
        .iter()
        .chain([&newest.manifest.set.name])
    {
        let set = sets.iter().find(|s| &s.manifest.set.name == name).ok_or_else(|| {
            Error::Failed(format!(
                "{} needs {name}, which is not on {copy}: restore --from another copy that holds the whole chain",
                newest.manifest.set.name
            ))
        })?;
        chain.push(set.clone());
    }
    Ok(chain)
}

/// Extract `paths` (everything when empty) as of the chain's newest set into `target`; the
/// names of the sets applied.
fn extract_chain(
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
fn prove_needed(
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
struct Restoring<'a> {
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
    fn served(
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
    fn with_proven(
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
fn tree_of_flat(
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
const FLAT_PREFIX: &str = ".darvault-flat.";

/// `need`'s files restored flat (dar reads no folder record, see `select::Need::flat`)
/// into a scratch folder in `target`, moved to their paths there, then their folders given
/// the mode and time the set records. Anything short of every file in place as recorded
/// is an error: the caller then restores the set as a tree.
fn extract_flat(
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
fn make_folders_within(target: &Path, path: &str) -> Result<()> {
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
fn set_modified(path: &Path, mtime: i64) -> Result<()> {
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

/// The proven slices of one set: their paths and the folder that holds them.
struct Proven {
    dir: PathBuf,
    files: Vec<PathBuf>,
}

/// Files of the copy made readable for dar, each proven against its manifest entry: in
/// place on a local copy, downloaded (and hashed on the way) into the scratch folder else.
struct Fetch<'a> {
    rt: &'a crate::copy::Runtime,
    copy: &'a Store,
    scratch: &'a Path,
    downloaded: u64,
    /// Where the stand-ins of slices proven by their ends go: in the system's temporary
    /// folder, which holds sparse files (the scratch folder is beside the target, which may
    /// be a FAT disk that would write out every zero).
    edges: Option<tempfile::TempDir>,
    /// The block checksums of each PAR2 index read, by set and index (None: unusable).
    sums: HashMap<(String, String), Option<Arc<BlockSums>>>,
}

impl<'a> Fetch<'a> {
    fn new(rt: &'a crate::copy::Runtime, copy: &'a Store, scratch: &'a Path) -> Self {
        Fetch {
            rt,
            copy,
            scratch,
            downloaded: 0,
            edges: None,
            sums: HashMap::new(),
        }
    }

    /// The checksums of each block of slice `name` of `set`, from the set's PAR2 index that
    /// protects it (proven against the manifest, read once): None when no index protects
    /// it, or the index is damaged or records another length.
    fn block_sums(&mut self, set: &FoundSet, name: &str) -> Result<Option<Arc<BlockSums>>> {
        let (Some(entry), Some(group)) = (
            set.manifest.files.iter().find(|f| f.path == name),
            set.manifest
                .par2
                .iter()
                .find(|g| g.covers.iter().any(|c| c == name)),
        ) else {
            return Ok(None);
        };
        let key = (set.manifest.set.name.clone(), group.index.clone());
        if !self.sums.contains_key(&key) {
            let sums = match self.file(set, &group.index) {
                Ok(index) => {
                    let bytes = self.rt.block_on_stoppable(self.copy.read_here(&index))?;
                    BlockSums::parse(&bytes).ok().map(Arc::new)
                }
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                Err(_) => None,
            };
            self.sums.insert(key.clone(), sums);
        }
        let sums = self.sums[&key].clone();
        Ok(sums.filter(|s| s.length(name) == Some(entry.size)))
    }
    fn file(&mut self, set: &FoundSet, path: &str) -> Result<PathBuf> {
        let mut proven = self.files(&[(set, path.to_owned())])?;
        Ok(proven.remove(0))
    }

    /// Several files: on a local copy proven in place side by side, a core each (hashing is
    /// the whole cost of proving a slice there); from a remote copy downloaded side by side.
    fn files(&mut self, wanted: &[(&FoundSet, String)]) -> Result<Vec<PathBuf>> {
        let in_place: Option<Vec<PathBuf>> = wanted
            .iter()
            .map(|(set, path)| {
                self.copy
                    .in_place(&format!("{}/{path}", self.copy.location(set)))
            })
            .collect();
        let Some(in_place) = in_place else {
            return self.download_all(wanted);
        };
        let hashes = self.hash_in_place(wanted)?;
        wanted
            .iter()
            .zip(in_place)
            .zip(hashes)
            .map(|(((set, path), local), got)| self.proven(set, path, local, got))
            .collect()
    }

    /// Size and SHA-256 of files of a local copy where they are, a core each (hashing is the
    /// whole cost there), under the copy's stall deadline; None for a file missing,
    /// unreadable or a link.
    fn hash_in_place(&self, wanted: &[(&FoundSet, String)]) -> Result<Vec<Option<(u64, String)>>> {
        use futures_util::StreamExt;
        let copy = self.copy;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let stored: Vec<String> = wanted
            .iter()
            .map(|(set, path)| format!("{}/{path}", copy.location(set)))
            .collect();
        let hashed: Vec<Result<Option<(u64, String)>>> = self.rt.block_on_stoppable(async {
            Ok(futures_util::stream::iter(stored.iter())
                .map(|path| copy.hash(path))
                .buffered(cores)
                .collect()
                .await)
        })?;
        hashed
            .into_iter()
            .map(|got| match got {
                Ok(got) => Ok(got),
                Err(e @ (Error::Stalled { .. } | Error::Interrupted)) => Err(e),
                Err(_) => Ok(None),
            })
            .collect()
    }

    /// Files of a remote copy into the scratch folder, as many at once as the copy reads
    /// (its `readers`), each hashed on the way.
    fn download_all(&mut self, wanted: &[(&FoundSet, String)]) -> Result<Vec<PathBuf>> {
        use futures_util::StreamExt;
        let mut targets = Vec::new();
        for (set, path) in wanted {
            let local = self.scratch.join(&set.manifest.set.name).join(path);
            if let Some(parent) = local.parent() {
                std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
            }
            targets.push((format!("{}/{path}", self.copy.location(set)), local));
        }
        let copy = self.copy;
        let got: Vec<Result<Option<(u64, String)>>> = self.rt.block_on_stoppable(async {
            Ok(futures_util::stream::iter(targets.iter())
                .map(|(stored, local)| copy.download(stored, local))
                .buffered(copy.readers)
                .collect()
                .await)
        })?;
        let mut proven = Vec::new();
        for (((set, path), (_, local)), got) in wanted.iter().zip(targets).zip(got) {
            let got = got?;
            self.downloaded += got.as_ref().map_or(0, |(size, _)| *size);
            proven.push(self.proven(set, path, local, got)?);
        }
        Ok(proven)
    }

    /// `local` when what was read there (`got`: size and SHA-256) is what the manifest says.
    fn proven(
        &self,
        set: &FoundSet,
        path: &str,
        local: PathBuf,
        got: Option<(u64, String)>,
    ) -> Result<PathBuf> {
        let entry = set.manifest.files.iter().find(|f| f.path == path);
        match (entry, got) {
            (Some(f), Some((size, sha))) if size == f.size && sha == f.sha256 => Ok(local),
            _ => Err(Error::Failed(format!(
                "{} on {} is damaged or missing ({path}): repair it with `darvault audit {} --repair`, or restore --from another copy",
                set.manifest.set.name, self.copy.name, self.copy.name
            ))),
        }
    }

    /// The given slices of each set, proven (all of them side by side).
    fn slices<'s>(
        &mut self,
        chain: &[FoundSet],
        wanted: impl Iterator<Item = (usize, &'s BTreeSet<u32>)>,
    ) -> Result<Vec<Proven>> {
        let wanted: Vec<(usize, Vec<String>)> = wanted
            .map(|(i, slices)| {
                let base = &chain[i].manifest.archive.basename;
                (
                    i,
                    slices.iter().map(|n| format!("{base}.{n}.dar")).collect(),
                )
            })
            .collect();
        let flat: Vec<(&FoundSet, String)> = wanted
            .iter()
            .flat_map(|(i, names)| names.iter().map(|n| (&chain[*i], n.clone())))
            .collect();
        let mut proven = self.files(&flat)?.into_iter();
        Ok(wanted
            .iter()
            .map(|(i, names)| {
                let files: Vec<PathBuf> = proven.by_ref().take(names.len()).collect();
                let dir = match files.first().and_then(|f| f.parent()) {
                    Some(dir) => dir.to_owned(),
                    None => self.scratch.join(&chain[*i].manifest.set.name),
                };
                Proven { dir, files }
            })
            .collect())
    }

    /// Slice `n` of `set` as dar reads it when it needs only its header and trailer: a file
    /// of the slice's size in a temporary folder holding the slice's first and last 64 KiB
    /// (whole PAR2 blocks), each block proven by the set's PAR2 index (itself proven by the
    /// manifest), and zeros elsewhere: were dar to read more, it would find zeros, never
    /// unproven bytes. None when no PAR2 index protects the slice or a block is not as it
    /// recorded: then the slice is proven whole.
    fn edge(&mut self, set: &FoundSet, n: u32) -> Result<Option<PathBuf>> {
        use std::os::unix::fs::FileExt;
        const EDGE: u64 = 64 * 1024;
        let name = format!("{}.{n}.dar", set.manifest.archive.basename);
        let Some(sums) = self.block_sums(set, &name)? else {
            return Ok(None);
        };
        let size = sums.length(&name).expect("the slice's own length");
        let dir = self.edges_of(set)?;
        let proxy = dir.join(&name);
        let file = std::fs::File::create(&proxy).map_err(Error::io("cannot create", &proxy))?;
        file.set_len(size)
            .map_err(Error::io("cannot write", &proxy))?;
        let stored = format!("{}/{name}", self.copy.location(set));
        for wanted in [0..EDGE.min(size), size.saturating_sub(EDGE)..size] {
            let Some(range) = sums.blocks_covering(&name, wanted) else {
                return Ok(None);
            };
            let read = match self
                .rt
                .block_on_stoppable(self.copy.read_range(&stored, range.clone()))
            {
                Ok(read) => read,
                Err(Error::Interrupted) => return Err(Error::Interrupted),
                // Unreadable here: proven whole (or refused) with the slices.
                Err(_) => None,
            };
            let whole_blocks = |b: &Vec<u8>| b.len() as u64 == range.end - range.start;
            let Some(bytes) =
                read.filter(|b| whole_blocks(b) && sums.proves(&name, range.start, b))
            else {
                return Ok(None);
            };
            if self.copy.in_place(&stored).is_none() {
                self.downloaded += bytes.len() as u64;
            }
            file.write_all_at(&bytes, range.start)
                .map_err(Error::io("cannot write", &proxy))?;
        }
        Ok(Some(proxy))
    }

    /// Of `slices` (of `set`), those in `edges` that their ends alone can stand in for
    /// (see `edge`): the slices to prove whole, and the stand-ins made.
    fn stand_ins(
        &mut self,
        set: &FoundSet,
        slices: &BTreeSet<u32>,
        edges: &BTreeSet<u32>,
    ) -> Result<(BTreeSet<u32>, Vec<PathBuf>)> {
        let mut whole = slices.clone();
        let mut made = Vec::new();
        for &n in edges {
            match self.edge(set, n)? {
                Some(proxy) => made.push(proxy),
                None => {
                    whole.insert(n);
                }
            }
        }
        Ok((whole, made))
    }

    /// The folder of `set`'s slice edges, with links to its proven whole slices beside them:
    /// one folder holding every slice dar opens.
    fn beside_edges(&mut self, set: &FoundSet, whole: &[PathBuf]) -> Result<PathBuf> {
        let dir = self.edges_of(set)?;
        for file in whole {
            let (Some(name), Ok(target)) = (file.file_name(), std::path::absolute(file)) else {
                continue;
            };
            let link = dir.join(name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(&target, &link).map_err(Error::io("cannot link", &link))?;
        }
        Ok(dir)
    }

    /// The folder of `set`'s stand-ins.
    fn edges_of(&mut self, set: &FoundSet) -> Result<PathBuf> {
        if self.edges.is_none() {
            let made = tempfile::Builder::new()
                .prefix("darvault-edges.")
                .tempdir()
                .map_err(|e| Error::Failed(format!("cannot make a temporary folder: {e}")))?;
            self.edges = Some(made);
        }
        let dir = self
            .edges
            .as_ref()
            .expect("made")
            .path()
            .join(&set.manifest.set.name);
        std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
        Ok(dir)
    }

    /// The set's isolated catalogue, proven; the basename dar is given.
    fn catalogue(&mut self, set: &FoundSet) -> Result<PathBuf> {
        let name = &set.manifest.archive.catalogue;
        Ok(self
            .file(set, &format!("{name}.1.dar"))?
            .with_file_name(name))
    }
}

/// Whether the copy's bundled binary `name` of `set` (proven against its manifest) may run:
/// this darvault bundled it (the state database remembers), it is this machine's own, this
/// darvault is itself the copy's bundled one (whoever runs it trusts the copy already), or
/// the user said so. Ok(why) or the refusal, saying how to decide.
fn trusted_bundled(
    state: &crate::state::State,
    copy: &Store,
    set: &FoundSet,
    name: &str,
    system: Option<&Path>,
    trust_bundle: bool,
) -> Result<String> {
    let path = format!("bundle/{name}");
    let Some(sha) = set
        .manifest
        .files
        .iter()
        .find(|f| f.path == path)
        .map(|f| f.sha256.clone())
    else {
        return Err(Error::Failed(format!(
            "no set of the chain of {} carries {path} (a chain's FULL carries its tools): there is no bundled binary to run",
            set.manifest.set.name
        )));
    };
    if state.was_bundled(&sha)? {
        return Ok(format!(
            "{path} of {}: bundled by this darvault",
            set.manifest.set.name
        ));
    }
    if let Some(system) = system
        && crate::hashing::hash_file(system).is_ok_and(|(_, s)| s == sha)
    {
        return Ok(format!(
            "{path} of {}: identical to {}",
            set.manifest.set.name,
            system.display()
        ));
    }
    if trust_bundle {
        return Ok(format!(
            "{path} of {}: trusted on request (--trust-bundle)",
            set.manifest.set.name
        ));
    }
    // /proc may be missing (a rescue chroot): then the path it was started by.
    let running = std::env::current_exe()
        .ok()
        .filter(|p| p.is_file())
        .or_else(|| std::env::args_os().next().map(PathBuf::from))
        .and_then(|p| p.canonicalize().ok());
    let own_darvault = set
        .manifest
        .files
        .iter()
        .find(|f| f.path == "bundle/darvault")
        .map(|f| f.sha256.as_str());
    if let (Some(running), Some(own)) = (running, own_darvault)
        && copy.holds(&running)
        && running.ends_with("bundle/darvault")
        && crate::hashing::hash_file(&running).is_ok_and(|(_, sha)| sha == own)
    {
        return Ok(format!(
            "{path} of {}: this darvault is the copy's own bundled one",
            set.manifest.set.name
        ));
    }
    Err(Error::Failed(format!(
        "{path} of {} (SHA-256 {sha}) is not a binary this darvault bundled, nor this machine's own: it was not run (a copy is untrusted input). Compare it with a dar_static you trust (sha256sum; Debian's package dar-static), then add --trust-bundle",
        set.manifest.set.name
    )))
}

/// Copy `fetched` (the set's `path`) into `scratch` and prove the copy against the manifest:
/// the bytes that will run are the bytes that were checked.
fn private_copy(scratch: &Path, set: &FoundSet, path: &str, fetched: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch.join("trusted");
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    let copy = dir.join(path.rsplit('/').next().unwrap_or(path));
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(fetched, &copy).map_err(Error::io("cannot copy", fetched))?;
    let expected = set.manifest.files.iter().find(|f| f.path == path);
    let (size, sha) = crate::hashing::hash_file(&copy)?;
    if expected.is_none_or(|f| f.size != size || f.sha256 != sha) {
        return Err(Error::Failed(format!(
            "{path} of {} changed while it was read: not run",
            set.manifest.set.name
        )));
    }
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io("cannot make executable", &copy))?;
    Ok(copy)
}

/// The set of a chain whose bundle holds the tools: the newest that lists a dar_static (the
/// FULL; before tools were carried once per chain, every set had them).
pub(super) fn tools_holder(chain: &[FoundSet]) -> &FoundSet {
    chain
        .iter()
        .rev()
        .find(|s| s.manifest.carries_tools())
        .or(chain.last())
        .expect("a chain has a set")
}

/// dar from the config, else from PATH, else the copy's own bundled dar_static (when
/// trusted); stopped when the copy it reads in place stops answering.
fn locate_dar(
    config: Option<&Config>,
    state: Option<&crate::state::State>,
    fetch: &mut Fetch,
    chain: &[FoundSet],
    trust_bundle: bool,
) -> Result<Dar> {
    let found = match config.and_then(|c| c.tools.dar.as_ref()) {
        Some(p) => Dar::at(p.path().to_owned()),
        None => Dar::locate(None).or_else(|missing| {
            let holder = tools_holder(chain);
            // The state database is opened only now: a restore with the system's dar leaves no
            // trace on a machine that has never run darvault.
            let opened;
            let state = match state {
                Some(s) => s,
                None => {
                    let dir =
                        config.map_or_else(crate::paths::default_state_dir, Config::state_dir);
                    opened = crate::state::State::open(&dir)?;
                    &opened
                }
            };
            trusted_bundled(state, fetch.copy, holder, "dar_static", None, trust_bundle)?;
            let fetched = fetch
                .file(holder, "bundle/dar_static")
                .map_err(|_| missing)?;
            // What runs is a private copy, proven after it was made: the copy's file could
            // change between the check and the run.
            let bundled = private_copy(fetch.scratch, holder, "bundle/dar_static", &fetched)?;
            tracing::info!(
                "using the bundled dar_static of {}",
                holder.manifest.set.name
            );
            Dar::at(bundled)
        }),
    };
    let mut dar = found?;
    dar.io_stall = fetch.copy.tool_stall();
    Ok(dar)
}

fn passphrase(
    config: Option<&Config>,
    chain: &[FoundSet],
    definition: &str,
) -> Result<Option<Passphrase>> {
    if !chain.iter().any(|s| s.manifest.archive.encrypted) {
        return Ok(None);
    }
    let encryption = config
        .and_then(|c| c.definitions.iter().find(|d| d.name().as_str() == definition))
        .and_then(|d| d.encryption.as_ref())
        .ok_or_else(|| {
            Error::Usage(format!(
                "the sets of {definition} are encrypted: configure its [definition.encryption] passphrase source"
            ))
        })?;
    Passphrase::resolve(encryption, definition).map(Some)
}

/// Requested paths, relative to the backed-up source, inside it.
fn clean_paths(paths: &[String]) -> Result<Vec<String>> {
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
fn check_target(target: &Path, overwrite: bool) -> Result<PathBuf> {
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
