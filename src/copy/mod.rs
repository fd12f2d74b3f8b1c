//! A copy is any place that holds archive sets in the common layout
//! `<root>/<definition>/<set>/`. The repository is one; so is a USB disk mounted anywhere.
//! A set is recognised by its MANIFEST.toml only: staging leftovers and stray files are
//! reported, never taken for sets.

mod anchored;
pub mod backend;
mod composite;
mod dav;
pub mod disk;
mod failure;
mod held;
mod local;
#[cfg(test)]
mod memory;
mod put;
mod remote;
mod retention;
mod runtime;
mod s3;
mod s3_parts;
mod store;
mod streamed;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use composite::composite_of;
pub use failure::{Retry, understand};
pub use held::CopyLock;
pub use local::Scratch;
#[cfg(test)]
pub use memory::{Call, Fault, Memory, a_set_on_disk};
pub use put::{Expected, Limiter, PARTIAL};
pub use retention::renewal_due;
pub use runtime::{Runtime, runtime};
pub use store::{Examined, STALL, Store, odd_kind, storage_error};

use crate::error::{Error, Result};
use crate::hashing::sha256_hex;
use crate::set::{MANIFEST, Manifest, SetName, staging};

/// Log filter directives that keep the storage libraries quiet unless asked (-v): a request
/// given up on after a stall leaves its writer unfinished on purpose (a dead server would not
/// answer an abort either), and OpenDAL warns about it; the SFTP client logs its internals.
pub const QUIET_LOG_DIRECTIVES: &str =
    ",opendal::layers::complete=error,openssh=off,openssh_sftp_client=off";

/// Open a copy by what the user typed: a destination named in the config, `repository`, or
/// a directory (which needs no config at all: an old disk found in a drawer).
pub fn open(spec: &str, config: Option<&crate::config::Config>) -> Result<Store> {
    if let Some(dest) = config.and_then(|c| c.destination(spec)) {
        return Store::open(dest);
    }
    if spec == "repository"
        && let Some(c) = config
    {
        return repository(c);
    }
    let path = Path::new(spec);
    // A configured copy named by its path is that copy (audits are credited to it). The
    // folders are looked at under a deadline: any of these disks may hang.
    let candidates: Vec<PathBuf> = config
        .map(|c| {
            std::iter::once(c.repository.path().to_owned())
                .chain(
                    c.destinations
                        .iter()
                        .filter(|d| d.kind == crate::config::Kind::Fs)
                        .filter_map(|d| d.root().map(PathBuf::from)),
                )
                .collect()
        })
        .unwrap_or_default();
    let given = path.to_owned();
    let named = disk::bounded(store::STALL, move || {
        let canonical = given.is_dir().then(|| given.canonicalize().ok())?;
        Some(canonical.and_then(|canonical| {
            candidates
                .iter()
                .position(|c| c.canonicalize().is_ok_and(|c| c == canonical))
        }))
    })
    .ok_or_else(|| Error::Stalled {
        what: format!("cannot open {spec}"),
        copy: spec.to_owned(),
        seconds: store::STALL.as_secs(),
    })?;
    match (named, config) {
        (None, _) => Err(Error::Usage(format!(
            "{spec:?} is neither a directory nor a destination named in the config"
        ))),
        (Some(Some(0)), Some(c)) => repository(c),
        (Some(Some(i)), Some(c)) => {
            let dest = c
                .destinations
                .iter()
                .filter(|d| d.kind == crate::config::Kind::Fs && d.root().is_some())
                .nth(i - 1)
                .expect("found among them");
            Store::open(dest)
        }
        _ => Store::for_path(path),
    }
}

/// The configured repository, as a copy named "repository".
pub fn repository(config: &crate::config::Config) -> Result<Store> {
    let mut r = Store::for_path(config.repository.path())?;
    r.name = "repository".into();
    Ok(r)
}

/// A copy on a local (or locally mounted) filesystem.
pub struct LocalCopy {
    root: PathBuf,
}

/// A published set found on a copy.
#[derive(Debug, Clone)]
pub struct FoundSet {
    /// The set's directory: absolute on a local copy, `<definition>/<set>` on a remote one.
    pub dir: PathBuf,
    pub name: SetName,
    pub manifest: Manifest,
    /// SHA-256 of the MANIFEST.toml bytes as read (what a DIFF/INCR records for its base).
    pub manifest_sha256: String,
}

/// Everything found under one definition's folder.
#[derive(Debug, Default)]
pub struct Found {
    /// Sets in the order they were made (oldest first).
    pub sets: Vec<FoundSet>,
    /// Things that look like sets but are not usable, and why.
    pub problems: Vec<String>,
    /// Set folders an interrupted cleanup was removing (their location on the copy).
    pub removing: Vec<String>,
}

/// What `Found` says of a folder an interrupted cleanup left.
pub fn removal_in_progress(location: &str) -> String {
    format!(
        "{location}: removal in progress (an interrupted cleanup; the next cleanup finishes it), not a set"
    )
}

/// What `Found` says of a set's folder that holds nothing.
pub fn empty_set_folder(location: &str) -> String {
    format!(
        "{location}: an empty folder (what an interrupted removal or copy leaves; the next cleanup removes it), not a set"
    )
}

/// The folders that hold `path` (relative to a copy's root), innermost first, the root ("")
/// last: what a file on a copy belongs to is found by looking these up, not by comparing it
/// with every folder of interest.
pub fn folders_above(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| {
        (!p.is_empty()).then(|| p.rsplit_once('/').map_or("", |(folder, _)| folder))
    })
    .skip(1)
}

/// `path` seen from `folder`, one of its `folders_above`.
pub fn inside<'a>(folder: &str, path: &'a str) -> &'a str {
    if folder.is_empty() {
        path
    } else {
        &path[folder.len() + 1..]
    }
}

impl LocalCopy {
    pub fn new(root: &Path) -> LocalCopy {
        LocalCopy {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn definition_dir(&self, definition: &str) -> PathBuf {
        self.root.join(definition)
    }

    /// The definitions that have a folder on this copy.
    pub fn definitions(&self) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(names),
            Err(e) => return Err(Error::io("cannot read", &self.root)(e)),
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_dir() && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The published sets of one definition, oldest first.
    pub fn sets(&self, definition: &str) -> Result<Found> {
        let dir = self.definition_dir(definition);
        let mut found = Found::default();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(Error::io("cannot read", &dir)(e)),
        };
        for e in entries.flatten() {
            let file_name = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if staging::is_staging(&file_name) {
                found.problems.push(format!(
                    "{}: unfinished set (staging leftover)",
                    path.display()
                ));
                continue;
            }
            let Ok(name) = file_name.parse::<SetName>() else {
                continue;
            };
            if path.join(crate::set::REMOVING).exists() {
                found
                    .problems
                    .push(removal_in_progress(&path.display().to_string()));
                found.removing.push(path.display().to_string());
                continue;
            }
            if std::fs::read_dir(&path).is_ok_and(|mut entries| entries.next().is_none()) {
                found
                    .problems
                    .push(empty_set_folder(&path.display().to_string()));
                found.removing.push(path.display().to_string());
                continue;
            }
            match read_set(&path, name) {
                Ok(set) if set.manifest.set.definition == definition => found.sets.push(set),
                Ok(set) => found.problems.push(format!(
                    "{}: its manifest says it belongs to {:?}",
                    path.display(),
                    set.manifest.set.definition
                )),
                Err(e) => found.problems.push(format!("{}: {e}", path.display())),
            }
        }
        found.sort();
        Ok(found)
    }
}

impl Found {
    /// Oldest first, by the creation time the manifests record.
    fn sort(&mut self) {
        self.sets.sort_by(|a, b| {
            (a.manifest.set.created, &a.dir).cmp(&(b.manifest.set.created, &b.dir))
        });
    }
}

impl FoundSet {
    /// A set from its MANIFEST.toml bytes, checked against the folder's name.
    pub fn from_manifest(dir: PathBuf, name: SetName, bytes: &[u8]) -> Result<FoundSet> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| Error::Failed(format!("{MANIFEST} is not UTF-8 (damaged?)")))?;
        let manifest = Manifest::parse(text)?;
        if manifest.set.name != name.to_string() {
            return Err(Error::Failed(format!(
                "{MANIFEST} names the set {:?}, not its folder's name",
                manifest.set.name
            )));
        }
        Ok(FoundSet {
            dir,
            name,
            manifest_sha256: sha256_hex(bytes),
            manifest,
        })
    }
}

fn read_set(dir: &Path, name: SetName) -> Result<FoundSet> {
    let p = dir.join(MANIFEST);
    let bytes = std::fs::read(&p).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Failed(format!("no {MANIFEST}: not a finished set"))
        } else {
            Error::io("cannot read", &p)(e)
        }
    })?;
    FoundSet::from_manifest(dir.to_owned(), name, &bytes)
}
