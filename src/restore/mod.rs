//! `darvault restore`: the whole tree, or some paths, as they were at a time, from any copy.
//!
//! The chain is worked out from the manifests on the copy alone (no database, no config from
//! the original machine). Before anything is extracted, every slice and catalogue of the
//! sets involved is proven against its manifest (dar may return 0 with an interior slice
//! missing), and the target is checked: empty or new unless --overwrite, never a system
//! directory, never a symlink. The FULL is extracted, then each DIFF/INCR over it: files that
//! a later set records as deleted are removed, so nothing deleted is resurrected.

pub mod when;

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::copy::{FoundSet, Store};
use crate::error::{Error, Result};
use crate::set::Role;
use crate::set::manifest::is_safe_relative;
use crate::tools::dar::Dar;
use crate::tools::secret::Passphrase;

pub struct Request {
    /// A destination name or a path [default: the repository].
    pub from: Option<String>,
    pub definition: String,
    pub as_of: Option<String>,
    pub target: PathBuf,
    /// Paths relative to the backed-up source (files or directories); empty: everything.
    pub paths: Vec<String>,
    pub overwrite: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub copy: String,
    pub definition: String,
    /// The instant the restore is as of (UTC).
    pub as_of: String,
    /// The sets applied, FULL first.
    pub chain: Vec<String>,
    pub target: PathBuf,
    /// Requested paths that did not exist at that time (deleted before, or never saved).
    pub absent: Vec<String>,
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

pub fn run(config: Option<&Config>, req: &Request) -> Result<Report> {
    let began = Instant::now();
    let paths = clean_paths(&req.paths)?;
    let target = check_target(&req.target, req.overwrite)?;
    let copy = match (&req.from, config) {
        (Some(c), _) => crate::copy::open(c, config)?,
        (None, Some(c)) => crate::copy::repository(c)?,
        (None, None) => {
            return Err(Error::Usage(
                "no config: name the copy to restore from with --from (a path or a destination)"
                    .into(),
            ));
        }
    };
    let rt = crate::replicate::runtime()?;
    let found = rt.block_on(copy.sets(&req.definition))?;
    for p in &found.problems {
        tracing::warn!("{p}");
    }
    let as_of = match &req.as_of {
        Some(w) => when::parse(w, &jiff::ZonedDateTime::now())?,
        None => jiff::Timestamp::now(),
    };
    let chain = chain_as_of(&found.sets, as_of, &req.definition, &copy.name)?;

    // Prove every slice and catalogue before extracting anything.
    for set in &chain {
        for f in set
            .manifest
            .files
            .iter()
            .filter(|f| matches!(f.role, Role::Slice | Role::Catalogue))
        {
            let path = format!("{}/{}", rel(&copy, set), f.path);
            let ok = matches!(rt.block_on(copy.hash(&path))?, Some((size, sha)) if size == f.size && sha == f.sha256);
            if !ok {
                return Err(Error::Failed(format!(
                    "{} on {} is damaged or missing ({}): repair it with `darvault audit {} --repair`, or restore --from another copy",
                    set.manifest.set.name, copy.name, f.path, copy.name
                )));
            }
        }
    }
    let key = passphrase(config, &chain, &req.definition)?;
    let scratch = tempfile::Builder::new()
        .prefix(".darvault-restore.")
        .tempdir_in(target.parent().unwrap_or(Path::new("/tmp")))
        .map_err(|e| {
            Error::Failed(format!(
                "cannot make a scratch directory beside the target: {e}"
            ))
        })?;
    let dirs: Vec<PathBuf> = chain
        .iter()
        .map(|set| local_dir(&rt, &copy, set, scratch.path()))
        .collect::<Result<_>>()?;
    let dar = match config.and_then(|c| c.tools.dar.as_ref()) {
        Some(p) => Dar::at(p.path().to_owned())?,
        None => Dar::locate(None).or_else(|e| {
            let bundled = dirs.last().map(|d| d.join("bundle/dar_static"));
            match bundled {
                Some(b) if b.is_file() => Dar::at(b),
                _ => Err(e),
            }
        })?,
    };
    std::fs::create_dir_all(&target).map_err(Error::io("cannot create", &target))?;
    for (set, dir) in chain.iter().zip(&dirs) {
        tracing::info!(set = %set.manifest.set.name, "extracting");
        dar.extract(
            &dir.join(&set.manifest.archive.basename),
            key.as_ref(),
            &target,
            &paths,
        )?;
    }
    let absent = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(target.join(p)).is_err())
        .cloned()
        .collect();
    Ok(Report {
        copy: copy.label(),
        definition: req.definition.clone(),
        as_of: as_of.to_string(),
        chain: chain.iter().map(|s| s.manifest.set.name.clone()).collect(),
        target,
        absent,
        seconds: began.elapsed().as_secs_f64(),
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

/// The set's folder relative to the copy root.
fn rel(copy: &Store, set: &FoundSet) -> String {
    match &copy.local_root {
        Some(root) => set
            .dir
            .strip_prefix(root)
            .unwrap_or(&set.dir)
            .display()
            .to_string(),
        None => set.dir.display().to_string(),
    }
}

/// Where dar can read the set: in place on a local copy, else downloaded (slices only).
fn local_dir(
    rt: &tokio::runtime::Runtime,
    copy: &Store,
    set: &FoundSet,
    scratch: &Path,
) -> Result<PathBuf> {
    if let Some(root) = &copy.local_root {
        return Ok(root.join(rel(copy, set)));
    }
    let dir = scratch.join(&set.manifest.set.name);
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    for f in set.manifest.files.iter().filter(|f| f.role == Role::Slice) {
        rt.block_on(copy.download(
            &format!("{}/{}", rel(copy, set), f.path),
            &dir.join(&f.path),
        ))?;
    }
    Ok(dir)
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
        let mut entries =
            std::fs::read_dir(&resolved).map_err(Error::io("cannot read", &resolved))?;
        if entries.next().is_some() {
            return Err(Error::Usage(format!(
                "{} is not empty: give a new or empty folder, or --overwrite",
                resolved.display()
            )));
        }
    }
    Ok(resolved)
}
