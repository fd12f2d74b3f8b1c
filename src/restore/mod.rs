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
mod extract;
mod fetch;
pub mod index;
pub mod select;
mod served;
mod target;
mod trust;
pub mod when;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use extract::extract_chain;
use fetch::{Fetch, Proven};
use target::{check_target, clean_paths};
use trust::{locate_dar, passphrase, private_copy, trusted_bundled};

use crate::config::Config;
use crate::copy::{FoundSet, Store};
use crate::error::{Error, Result};

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

impl Report {
    /// FAILED when some files could not be written, or when paths were asked for and none
    /// existed then (`asked`: how many were); OK else.
    pub fn exit_code(&self, asked: usize) -> u8 {
        let none_existed = asked > 0 && self.absent.len() == asked;
        if none_existed || !self.not_restored.is_empty() {
            crate::error::exit::FAILED
        } else {
            crate::error::exit::OK
        }
    }
}

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
