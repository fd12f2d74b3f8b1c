//! A copy as an OpenDAL store: an SFTP server, an S3 bucket, a WebDAV share, a local path,
//! a USB disk (fs)… built from a `[[destination]]` entry (with retries and timeouts sized for
//! multi-GB objects) or from a path given on the command line.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use opendal::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use sha2::{Digest, Sha256};

use super::{Found, FoundSet};
use crate::config::Destination;
use crate::error::{Error, Result};
use crate::set::{MANIFEST, SetName, staging};

/// The whole of one request (a part upload, a stat) may take this long before it is retried.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// No byte moving for this long counts as a stall.
const IO_TIMEOUT: Duration = Duration::from_secs(120);
const RETRIES: usize = 5;

pub struct Store {
    pub name: String,
    pub op: Operator,
    /// Where the bytes are when the copy is on a local filesystem (repository, USB path).
    pub local_root: Option<std::path::PathBuf>,
    /// Files read at once (a spinning USB disk is fastest with one reader).
    pub readers: usize,
    /// What an audit may do with damage here without --repair.
    pub repair: crate::config::RepairPolicy,
}

/// Bytes per read when hashing a stored file.
const READ_CHUNK: u64 = 8 << 20;

/// Map an OpenDAL error, saying whether a later retry could help.
pub fn storage_error(what: &str, e: opendal::Error) -> Error {
    let hint = if e.is_temporary() {
        " (temporary: a later run may succeed)"
    } else {
        ""
    };
    let text = format!("{what}: {e}{hint}");
    Error::Failed(crate::secrets::mask(&text).into_owned())
}

impl Store {
    /// Build the operator. Refuses an fs destination whose disk is not there before anything
    /// can be written (an unplugged USB disk must never fill the root filesystem).
    pub fn open(dest: &Destination) -> Result<Store> {
        if dest.kind == "fs" {
            check_fs(dest)?;
        }
        let op = Operator::via_iter(&dest.kind, dest.service_options()?)
            .map_err(|e| {
                Error::Config(format!(
                    "destination {:?} (kind {:?}): {e}",
                    dest.name(),
                    dest.kind
                ))
            })?
            // Timeout inside retry: a stalled request is cut, then tried again.
            .layer(
                TimeoutLayer::new()
                    .with_timeout(OPERATION_TIMEOUT)
                    .with_io_timeout(IO_TIMEOUT),
            )
            .layer(
                RetryLayer::new()
                    .with_max_times(dest.retries.unwrap_or(RETRIES))
                    .with_jitter(),
            );
        let local_root = (dest.kind == "fs")
            .then(|| dest.root().map(std::path::PathBuf::from))
            .flatten();
        Ok(Store {
            name: dest.name().to_owned(),
            op,
            local_root,
            readers: dest
                .concurrency
                .unwrap_or(if dest.kind == "fs" { 1 } else { 4 })
                .max(1),
            repair: dest.repair,
        })
    }

    /// How the copy is shown to people.
    pub fn label(&self) -> String {
        match &self.local_root {
            Some(root) if root.display().to_string() == self.name => self.name.clone(),
            _ => format!("destination {}", self.name),
        }
    }

    /// A copy at a local path (a repository, a mounted disk found in a drawer): no config.
    pub fn for_path(path: &Path) -> Result<Store> {
        let root = path
            .canonicalize()
            .map_err(Error::io("cannot open", path))?;
        let op = Operator::via_iter("fs", [("root".to_owned(), root.display().to_string())])
            .map_err(|e| storage_error(&format!("cannot open {}", root.display()), e))?;
        Ok(Store {
            name: root.display().to_string(),
            op,
            local_root: Some(root),
            readers: 1,
            repair: crate::config::RepairPolicy::Never,
        })
    }

    /// Size and SHA-256 of a stored file in one streaming read; None when it is missing.
    pub async fn hash(&self, path: &str) -> Result<Option<(u64, String)>> {
        let failed = |e| storage_error(&format!("cannot read {path} on {}", self.name), e);
        let size = match self.op.stat(path).await {
            Ok(m) => m.content_length(),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        Ok(Some((size, hash_stored(&self.op, path, size).await?)))
    }

    /// Stream a stored file to a local path, hashing it on the way: its size and SHA-256, or
    /// None (and nothing written) when it is missing.
    pub async fn download(&self, path: &str, target: &Path) -> Result<Option<(u64, String)>> {
        use tokio::io::AsyncWriteExt;
        let failed = |e| storage_error(&format!("cannot read {path} on {}", self.name), e);
        let size = match self.op.stat(path).await {
            Ok(m) => m.content_length(),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(failed(e)),
        };
        let mut chunks = Chunks::open(&self.op, path, size).await?;
        let mut out = tokio::fs::File::create(target)
            .await
            .map_err(Error::io("cannot create", target))?;
        let mut hasher = Sha256::new();
        while let Some(buffer) = chunks.next().await? {
            for chunk in buffer {
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .await
                    .map_err(Error::io("cannot write", target))?;
            }
        }
        out.flush()
            .await
            .map_err(Error::io("cannot write", target))?;
        Ok(Some((size, crate::hashing::hex(&hasher.finalize()))))
    }

    /// A small file's bytes (a manifest); None when it is missing.
    pub async fn read_small(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self.op.read(path).await {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(storage_error(
                &format!("cannot read {path} on {}", self.name),
                e,
            )),
        }
    }

    /// Every entry under `dir`, recursively: (path relative to the copy root, is a directory).
    pub async fn walk(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        let entries = match self.op.list_with(dir).recursive(true).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(storage_error(&format!("cannot list {}", self.name), e)),
        };
        Ok(entries
            .into_iter()
            .map(|e| {
                (
                    e.path().trim_end_matches('/').to_owned(),
                    e.metadata().is_dir(),
                )
            })
            .filter(|(p, _)| !p.is_empty())
            .collect())
    }

    pub async fn check_marker(&self, dest: &Destination) -> Result<()> {
        if let Some(marker) = &dest.require_marker {
            self.op.stat(marker).await.map_err(|_| {
                Error::Failed(format!(
                    "destination {:?}: the marker file {marker:?} is not there: is this the right disk (or bucket), and is it mounted? Nothing was written",
                    dest.name()
                ))
            })?;
        }
        Ok(())
    }

    pub async fn definitions(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .op
            .list("/")
            .await
            .map_err(|e| storage_error(&format!("cannot list {}", self.name), e))?
            .into_iter()
            .filter(|e| e.metadata().is_dir())
            .map(|e| e.name().trim_end_matches('/').to_owned())
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    pub async fn sets(&self, definition: &str) -> Result<Found> {
        let mut found = Found::default();
        let entries = match self.op.list(&format!("{definition}/")).await {
            Ok(e) => e,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => return Ok(found),
            Err(e) => {
                return Err(storage_error(
                    &format!("cannot list {}/{definition}", self.name),
                    e,
                ));
            }
        };
        for e in entries {
            let dir_name = e.name().trim_end_matches('/').to_owned();
            let location = format!("{definition}/{dir_name}");
            if staging::is_staging(&dir_name) {
                found
                    .problems
                    .push(format!("{location}: unfinished set (staging leftover)"));
                continue;
            }
            let Ok(name) = dir_name.parse::<SetName>() else {
                continue;
            };
            match self.op.read(&format!("{location}/{MANIFEST}")).await {
                Ok(bytes) => {
                    match FoundSet::from_manifest(location.clone().into(), name, &bytes.to_vec()) {
                        Ok(set) => found.sets.push(set),
                        Err(err) => found.problems.push(format!("{location}: {err}")),
                    }
                }
                Err(err) if err.kind() == opendal::ErrorKind::NotFound => found
                    .problems
                    .push(format!("{location}: no {MANIFEST}: an incomplete copy")),
                Err(err) => {
                    return Err(storage_error(
                        &format!("cannot read {location}/{MANIFEST}"),
                        err,
                    ));
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

/// SHA-256 of `size` bytes of a stored file, read in chunks (memory stays bounded).
pub async fn hash_stored(op: &Operator, path: &str, size: u64) -> Result<String> {
    let mut chunks = Chunks::open(op, path, size).await?;
    let mut hasher = Sha256::new();
    while let Some(buffer) = chunks.next().await? {
        for chunk in buffer {
            hasher.update(&chunk);
        }
    }
    Ok(crate::hashing::hex(&hasher.finalize()))
}

/// `size` bytes of a stored file in bounded reads (memory stays bounded), stoppable.
struct Chunks {
    reader: opendal::Reader,
    path: String,
    offset: u64,
    size: u64,
}

impl Chunks {
    async fn open(op: &Operator, path: &str, size: u64) -> Result<Chunks> {
        let reader = op
            .reader(path)
            .await
            .map_err(|e| storage_error(&format!("cannot read {path}"), e))?;
        Ok(Chunks {
            reader,
            path: path.to_owned(),
            offset: 0,
            size,
        })
    }

    async fn next(&mut self) -> Result<Option<opendal::Buffer>> {
        if self.offset >= self.size {
            return Ok(None);
        }
        crate::tools::process::check_stop()?;
        let end = (self.offset + READ_CHUNK).min(self.size);
        let buffer = self
            .reader
            .read(self.offset..end)
            .await
            .map_err(|e| storage_error(&format!("cannot read {}", self.path), e))?;
        self.offset = end;
        Ok(Some(buffer))
    }
}

/// `require_mount`: the root (or its nearest existing ancestor) must be on another filesystem
/// than `/`, i.e. on a mounted disk; `require_marker` is checked by `check_marker`.
fn check_fs(dest: &Destination) -> Result<()> {
    let root = Path::new(dest.root().unwrap_or("/"));
    if !dest.require_mount {
        return Ok(());
    }
    let existing = root
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let dev = |p: &Path| {
        p.metadata()
            .map(|m| m.dev())
            .map_err(Error::io("cannot stat", p))
    };
    if dev(existing)? == dev(Path::new("/"))? {
        return Err(Error::Failed(format!(
            "destination {:?}: {} is not on a mounted disk (is the USB disk plugged in and mounted?): nothing was written",
            dest.name(),
            root.display()
        )));
    }
    Ok(())
}
