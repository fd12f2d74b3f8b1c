//! A copy as an OpenDAL store: an SFTP server, an S3 bucket, a WebDAV share, a local path,
//! a USB disk (fs)… built from a `[[destination]]` entry (with retries and timeouts sized for
//! multi-GB objects) or from a path given on the command line.

use std::ops::Range;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::future::{Future, IntoFuture};

use opendal::Operator;
use opendal::layers::TimeoutLayer;
use sha2::{Digest, Sha256};

use super::anchored::Anchored;
use super::backend::{Backend, Failure, FailureKind, There};
use super::dav::Dav;
pub use super::failure::storage_error;
use super::remote::{Remote, Shell};
use super::s3::S3;
use super::{Found, FoundSet};
use crate::config::{Destination, Kind};
use crate::error::{Error, Result};
use crate::set::manifest::FileEntry;
use crate::set::{MANIFEST, SetName, staging};

/// A backstop for one whole request; the stall deadline below is what normally fires.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(60 * 60);
/// A request that moves no byte for this long fails the copy [stall_timeout].
pub const STALL: Duration = Duration::from_secs(120);
/// Temporary failures of one request are tried again this often [retries].
const RETRIES: usize = 5;
/// The longest pause between two tries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub struct Store {
    pub name: String,
    /// The storage's requests (on a local copy: those not made through `anchor`).
    pub(super) backend: Arc<dyn Backend>,
    /// Where the bytes are when the copy is on a local filesystem (repository, USB path).
    pub(super) local_root: Option<std::path::PathBuf>,
    /// Files read at once (a spinning USB disk is fastest with one reader).
    pub readers: usize,
    /// What an audit may do with damage here without --repair.
    pub repair: crate::config::RepairPolicy,
    /// A request that moves nothing for this long fails.
    pub(super) stall: Duration,
    retries: usize,
    /// `require_mount`: the filesystem the root must stay on (device id of the root).
    mount: Option<(std::path::PathBuf, u64)>,
    /// A local copy: written through a descriptor of its root (see `anchored`).
    pub(super) anchor: Option<Anchored>,
    /// How this copy's files were proven: (vouched for by the server's checksum, bytes read).
    proof: Proof,
}

/// Files the server vouched for (the SHA-256 it keeps), and bytes read from a remote copy.
#[derive(Default)]
struct Proof {
    vouched: AtomicU64,
    downloaded: AtomicU64,
    /// Files to read back whole even where the server vouches for them (the read budget).
    due: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Files read whole and hashed since last asked, with their sizes.
    read: std::sync::Mutex<Vec<(String, u64)>>,
    /// Hashing on the server was given up for this copy.
    shell_off: std::sync::atomic::AtomicBool,
}

/// The lock each file of a set gets on this copy, if it locks them.
fn lock_of(dest: &Destination) -> Option<super::s3::Lock> {
    use super::retention::LockSpan;
    use crate::config::{Age, LockRetention};
    let retention = match dest.lock_retention? {
        LockRetention::For(Age::Span(span)) => LockSpan::For(span),
        LockRetention::For(Age::Forever) => return None,
        LockRetention::Keep => LockSpan::Kept(dest.lock_keeps.clone()),
    };
    Some(super::s3::Lock {
        mode: dest.object_lock?,
        retention,
    })
}

/// Bytes per read when hashing a stored file.
const READ_CHUNK: u64 = 8 << 20;
/// Files a server hashes in one ssh session: keeps its command line well below any limit.
const HASHED_PER_SESSION: usize = 512;

impl Store {
    /// Build the operator. Refuses an fs destination whose disk is not there before anything
    /// can be written (an unplugged USB disk must never fill the root filesystem).
    pub fn open(dest: &Destination) -> Result<Store> {
        let stall = dest.stall_timeout.map(|d| d.0).unwrap_or(STALL);
        let local_root = (dest.kind == Kind::Fs)
            .then(|| dest.root().map(std::path::PathBuf::from))
            .flatten();
        if local_root.is_some() {
            super::disk::expect_hanging_files();
        }
        // The disk is looked at (and anchored) now, while it is known to be there; one that
        // hangs fails here, in time.
        let (mount, anchor) = {
            let (given, root) = (dest.clone(), local_root.clone());
            super::disk::bounded(stall, move || -> Result<_> {
                let mount = match given.kind {
                    Kind::Fs => check_fs(&given)?,
                    _ => None,
                };
                Ok((mount, root.as_deref().map(Anchored::at).transpose()?))
            })
            .ok_or_else(|| opening_stalled(&format!("destination {}", dest.name()), stall))??
        };
        let options = dest.service_options()?;
        let endpoint = options
            .iter()
            .find(|(k, _)| k == "endpoint")
            .map(|(_, v)| v.clone());
        let dav = match dest.kind {
            Kind::Webdav => Some(Dav::new(&options)?),
            _ => None,
        };
        let s3 = match dest.kind {
            Kind::S3 => S3::new(&options, lock_of(dest), stall),
            _ => None,
        };
        if dest.object_lock.is_some() && s3.is_none() {
            return Err(Error::Config(format!(
                "destination {:?}: object_lock needs access_key_id and secret_access_key (or their _env or _file forms): darvault signs the locked uploads itself",
                dest.name()
            )));
        }
        let shell = match dest.kind {
            Kind::Sftp => Shell::new(&options, stall),
            _ => None,
        };
        let op = Operator::via_iter(dest.kind.as_str(), options)
            .map_err(|e| {
                Error::Config(format!(
                    "destination {:?} (kind {:?}): {e}",
                    dest.name(),
                    dest.kind
                ))
            })?
            // Retries are darvault's own (`retrying`): OpenDAL calls a full disk temporary.
            .layer(
                TimeoutLayer::new()
                    .with_timeout(OPERATION_TIMEOUT)
                    // A backstop behind darvault's own stall deadline (`within`), which
                    // fires first and is not retried (at the same length, OpenDAL's would
                    // win the race and be retried as a temporary error).
                    .with_io_timeout(dest.stall_timeout.map(|d| d.0).unwrap_or(STALL) * 3),
            );
        Ok(Store {
            name: dest.name().to_owned(),
            backend: Arc::new(Remote::new(
                op,
                dav,
                s3,
                shell,
                endpoint,
                !dest.kind.is_object_store(),
            )),
            local_root,
            readers: dest
                .concurrency
                .unwrap_or(dest.kind.default_concurrency())
                .max(1),
            repair: dest.repair,
            stall,
            retries: dest.retries.unwrap_or(RETRIES),
            mount,
            anchor,
            proof: Proof::default(),
        })
    }

    /// A copy over `backend`, for unit tests.
    #[cfg(test)]
    pub fn over(name: &str, backend: Arc<dyn Backend>, stall: Duration) -> Store {
        Store {
            name: name.to_owned(),
            backend,
            local_root: None,
            readers: 1,
            repair: crate::config::RepairPolicy::Never,
            stall,
            retries: RETRIES,
            mount: None,
            anchor: None,
            proof: Proof::default(),
        }
    }

    /// A request under the stall deadline, its failure named.
    pub(super) async fn within<T>(
        &self,
        what: &str,
        request: impl IntoFuture<Output = std::result::Result<T, Failure>>,
    ) -> Result<T> {
        self.within_plus(what, Duration::ZERO, request).await
    }

    /// The same with `slack` more (a paced upload may wait that long by design).
    pub(super) async fn within_plus<T>(
        &self,
        what: &str,
        slack: Duration,
        request: impl IntoFuture<Output = std::result::Result<T, Failure>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.stall + slack, request).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(failure)) => Err(failure.error(&self.on_this(what))),
            Err(_) => Err(self.stalled(what)),
        }
    }

    /// `within`, with None for what the service says is not there.
    pub(super) async fn within_found<T>(
        &self,
        what: &str,
        request: impl IntoFuture<Output = std::result::Result<T, Failure>>,
    ) -> Result<Option<T>> {
        match tokio::time::timeout(self.stall, request).await {
            Ok(Ok(v)) => Ok(Some(v)),
            Ok(Err(failure)) if failure.kind == FailureKind::NotFound => Ok(None),
            Ok(Err(failure)) => Err(failure.error(&self.on_this(what))),
            Err(_) => Err(self.stalled(what)),
        }
    }

    /// `what` naming this copy (and its endpoint) unless it does already.
    pub(super) fn on_this(&self, what: &str) -> String {
        if what.contains(&self.name) {
            return what.to_owned();
        }
        match self.backend.endpoint() {
            Some(endpoint) => format!("{what} on {} ({endpoint})", self.label()),
            None => format!("{what} on {}", self.label()),
        }
    }

    pub(super) fn stalled(&self, what: &str) -> Error {
        Error::Stalled {
            what: self.on_this(what),
            copy: self.label(),
            seconds: self.stall.as_secs(),
        }
    }

    /// Run `attempt` until it succeeds, fails for good, or has failed temporarily
    /// `retries` times; pauses double from 1 s up to 30 s between tries. The tries after the
    /// first failure share one stall deadline: failing requests and pauses together never
    /// wait longer than `stall_timeout` (a server timing out each request after a minute
    /// held an audit for 391 s).
    pub async fn retrying<T, F: Future<Output = Result<T>>>(
        &self,
        what: &str,
        mut attempt: impl FnMut() -> F,
    ) -> Result<T> {
        let mut pause = Duration::from_secs(1);
        let mut failures = 0;
        let mut failing_since = None;
        loop {
            let outcome = attempt().await;
            // The budget runs from the first failure (a long transfer that moved bytes for
            // an hour and then broke is tried again).
            let since = *failing_since.get_or_insert_with(std::time::Instant::now);
            let within_budget = since.elapsed() + pause <= self.stall;
            match outcome {
                Err(e) if e.retry_helps() && failures < self.retries && within_budget => {
                    failures += 1;
                    tracing::warn!(
                        "{}: {e}; trying again in {}s ({failures} of {})",
                        self.label(),
                        pause.as_secs(),
                        self.retries
                    );
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_BACKOFF);
                }
                Ok(v) => return Ok(v),
                Err(e) if e.retry_helps() => {
                    return Err(Error::Storage {
                        what: what.to_owned(),
                        cause: format!("{e} (after {failures} tries)"),
                        retry: true,
                    });
                }
                other => return other,
            }
        }
    }

    /// Whether `path`, or a folder on the way to it, is a symbolic link (local copies; a
    /// copy is read and written only inside its own folder).
    pub fn is_link(&self, path: &str) -> Result<bool> {
        let Some(root) = self.local_root.clone() else {
            return Ok(false);
        };
        let path = path.to_owned();
        self.on_disk(&format!("cannot look at {path}"), move || {
            goes_through_link(&root, &path)
        })
    }

    /// Those of `paths` that are (or go through) symbolic links, looked at in one go (local
    /// copies; a remote copy holds no links).
    pub async fn links_among(&self, paths: Vec<String>) -> Result<Vec<String>> {
        self.local_among(paths, goes_through_link).await
    }

    /// Those of `paths` where a folder stands (local copies), looked at in one go.
    pub async fn folders_among(&self, paths: Vec<String>) -> Result<Vec<String>> {
        self.local_among(paths, |root, p| {
            std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.is_dir())
        })
        .await
    }

    /// Those of `paths` of a local copy for which `is` holds, on one thread under the stall
    /// deadline (one call per path would cost a thread each); none on a remote copy.
    async fn local_among(
        &self,
        paths: Vec<String>,
        is: fn(&Path, &str) -> bool,
    ) -> Result<Vec<String>> {
        let Some(root) = self.local_root.clone() else {
            return Ok(Vec::new());
        };
        self.blocking("cannot look at the files", move |seen| {
            paths
                .into_iter()
                .filter(|p| {
                    seen.fetch_add(1, Ordering::Relaxed);
                    is(&root, p)
                })
                .collect()
        })
        .await
    }

    /// Whether a folder stands at `path` (local copies).
    pub fn is_folder(&self, path: &str) -> Result<bool> {
        let Some(root) = self.local_root.clone() else {
            return Ok(false);
        };
        let path = path.to_owned();
        self.on_disk(&format!("cannot look at {path}"), move || {
            std::fs::symlink_metadata(root.join(path)).is_ok_and(|m| m.is_dir())
        })
    }

    /// Refuse to write `path` when it would go through a symbolic link.
    pub fn check_no_link(&self, path: &str) -> Result<()> {
        if self.is_link(path)? {
            return Err(Error::Failed(format!(
                "{path} on {} is (or goes through) a symbolic link: refusing to write through it",
                self.label()
            )));
        }
        Ok(())
    }

    /// Whether the service takes a file in one piece held in memory (gdrive, onedrive…;
    /// WebDAV is streamed instead).
    pub fn takes_one_piece(&self) -> bool {
        !self.backend.capabilities().write_in_pieces
    }

    /// Write a small file (a marker) as it is, under the stall deadline.
    pub async fn write_small(&self, path: &str, bytes: Vec<u8>) -> Result<()> {
        self.check_mount()?;
        let what = format!("cannot write {path}");
        if let Some(anchor) = self.anchor.clone() {
            let path = path.to_owned();
            return self.on_disk(&what, move || {
                let mut file = anchor.create(&path, 0o644)?;
                let written = std::io::Write::write_all(&mut file, &bytes)
                    .and_then(|_| file.sync_all())
                    .map_err(Error::io("cannot write", Path::new(&path)));
                super::disk::close(file);
                written
            })?;
        }
        self.within(&what, self.backend.write(path, bytes)).await
    }

    /// Write a small file only if nothing is there yet, in one step the service makes atomic:
    /// false when something is. None when the service has no such step (WebDAV).
    pub(super) async fn create_small(&self, path: &str, bytes: Vec<u8>) -> Result<Option<bool>> {
        if !self.backend.capabilities().create_only_if_absent || self.anchor.is_some() {
            return Ok(None);
        }
        let what = format!("cannot create {path}");
        match tokio::time::timeout(self.stall, self.backend.create_new(path, bytes)).await {
            Ok(Ok(())) => Ok(Some(true)),
            Ok(Err(failure)) if failure.kind == FailureKind::AlreadyThere => Ok(Some(false)),
            Ok(Err(failure)) => Err(failure.error(&self.on_this(&what))),
            Err(_) => Err(self.stalled(&what)),
        }
    }

    /// Remove a file (a link is removed, never followed); nothing when it is not there.
    pub async fn remove(&self, path: &str) -> Result<()> {
        crate::fault::point(crate::fault::REMOVE);
        let what = format!("cannot remove {path}");
        if let Some(anchor) = self.anchor.clone() {
            let path = path.to_owned();
            return self.on_disk(&what, move || anchor.remove(&path));
        }
        self.retrying(&what, || self.within(&what, self.backend.remove(path)))
            .await
    }

    /// Remove a folder and everything in it (links inside are removed, not followed).
    pub async fn remove_folder(&self, dir: &str) -> Result<()> {
        self.remove_folder_last(dir, None).await
    }

    /// Remove a folder whose intent record `last` (a file directly in it) governs the rest:
    /// everything else goes first, then the record, then the folder, so that a run killed
    /// at any point leaves the record for the next run to find and finish.
    pub async fn remove_folder_last(&self, dir: &str, last: Option<&str>) -> Result<()> {
        self.check_mount()?;
        let what = format!("cannot remove {dir}");
        if let Some(root) = &self.local_root {
            if self.is_link(dir)? {
                return Err(Error::Failed(format!(
                    "{dir} on {} is (or goes through) a symbolic link: not removed",
                    self.label()
                )));
            }
            let (path, last) = (root.join(dir), last.map(str::to_owned));
            return self
                .blocking(&what, move |removed| {
                    match &last {
                        Some(last) => super::disk::remove_all_last(&path, last, removed),
                        None => super::disk::remove_all(&path, removed),
                    }
                    .map_err(Error::io("cannot remove", &path))
                })
                .await?;
        }
        let folder = format!("{}/", dir.trim_end_matches('/'));
        if let Some(last) = last {
            let record = format!("{folder}{last}");
            for (path, is_dir) in self.walk(&folder).await? {
                if !is_dir && path != record {
                    self.remove(&path).await?;
                }
            }
            self.remove(&record).await?;
        }
        self.retrying(&what, || {
            self.within(&what, self.backend.remove_all(&folder))
        })
        .await
    }

    /// Create a folder (and its parents), on services that have folders.
    pub async fn make_dir(&self, dir: &str) -> Result<()> {
        self.check_mount()?;
        let what = format!("cannot create {dir}");
        if let Some(anchor) = self.anchor.clone() {
            let dir = dir.to_owned();
            return self.on_disk(&what, move || anchor.folder(&dir).map(|_| ()))?;
        }
        self.retrying(&what, || self.within(&what, self.backend.make_dir(dir)))
            .await
    }

    /// Whether this copy's files are in folders that must exist before a file goes in them.
    pub fn has_folders(&self) -> bool {
        self.backend.capabilities().folders
    }

    /// Create the folder `path` is in, where this copy has folders: a file put back into a
    /// folder someone removed (a heal) then has one to go to.
    pub async fn make_parent(&self, path: &str) -> Result<()> {
        match path.rsplit_once('/') {
            Some((dir, _)) if self.has_folders() => self.make_dir(&format!("{dir}/")).await,
            _ => Ok(()),
        }
    }

    /// The size of a stored file, None when it is missing.
    pub async fn size_of(&self, path: &str) -> Result<Option<u64>> {
        let what = format!("cannot check {path}");
        self.retrying(&what, || self.stat_size(path)).await
    }

    /// `require_mount`: refuse as soon as the root is no longer on the filesystem it was on
    /// when the copy was opened (a USB disk pulled or unmounted mid-run), before anything
    /// more is written onto the disk under the mount point.
    pub fn check_mount(&self) -> Result<()> {
        let Some((root, dev)) = &self.mount else {
            return Ok(());
        };
        let at = root.clone();
        let now = self.on_disk(&format!("cannot look at {}", root.display()), move || {
            std::fs::metadata(at).map(|m| m.dev()).ok()
        })?;
        if now == Some(*dev) {
            return Ok(());
        }
        Err(Error::Storage {
            what: format!("destination {:?}", self.name),
            cause: format!(
                "{} is no longer on the disk it was on when the run started (unplugged or unmounted?): stopped before writing anything more",
                root.display()
            ),
            retry: false,
        })
    }

    /// How the copy is shown to people.
    pub fn label(&self) -> String {
        match &self.local_root {
            Some(root) if root.display().to_string() == self.name => self.name.clone(),
            Some(root) if self.name == "repository" => {
                format!("the repository ({})", root.display())
            }
            _ => format!("destination {}", self.name),
        }
    }

    /// A copy at a local path (a repository, a mounted disk found in a drawer): no config.
    pub fn for_path(path: &Path) -> Result<Store> {
        super::disk::expect_hanging_files();
        let given = path.to_owned();
        let (root, anchor) = super::disk::bounded(STALL, move || -> Result<_> {
            let root = given
                .canonicalize()
                .map_err(Error::io("cannot open", &given))?;
            let anchor = Anchored::at(&root)?;
            Ok((root, anchor))
        })
        .ok_or_else(|| opening_stalled(&path.display().to_string(), STALL))??;
        let op = Operator::via_iter("fs", [("root".to_owned(), root.display().to_string())])
            .map_err(|e| storage_error(&format!("cannot open {}", root.display()), e))?;
        Ok(Store {
            name: root.display().to_string(),
            backend: Arc::new(Remote::new(op, None, None, None, None, true)),
            local_root: Some(root),
            readers: 1,
            repair: crate::config::RepairPolicy::Never,
            stall: STALL,
            retries: RETRIES,
            mount: None,
            anchor: Some(anchor),
            proof: Proof::default(),
        })
    }

    /// Size and SHA-256 of a stored file in one streaming read; None when it is missing.
    /// Temporary failures (a broken connection) are tried again, from the start. A link on
    /// a local copy is refused, never followed.
    pub async fn hash(&self, path: &str) -> Result<Option<(u64, String)>> {
        let what = format!("cannot read {path}");
        let read = self
            .retrying(&what, || self.examine_once(path, &|_| {}, false, None))
            .await?;
        match read {
            Examined::Hashed(found) => Ok(found),
            Examined::Sized(_) => unreachable!("read whatever its size"),
            Examined::Link => Err(Error::Failed(format!(
                "{path} on {} is a symbolic link (refused)",
                self.name
            ))),
            Examined::Odd(kind) => Err(Error::Failed(format!(
                "{path} on {} is {kind}, not a regular file (refused)",
                self.name
            ))),
        }
    }

    /// A stored file as an audit looks at it: a link (or a path through one) on a local
    /// copy, else its size and SHA-256 (None when missing); both in one job on the disk.
    pub async fn examine(&self, path: &str) -> Result<Examined> {
        self.examine_told(path, None, &|_| {}).await
    }

    /// `examine`, telling `told` the bytes read as they are (a local copy's: a remote one's
    /// file is told whole by the caller). A remote file whose size is not the `expected`
    /// one's is not read: its size says enough; the checksum its server keeps is read
    /// against the expected file's parts.
    pub async fn examine_told(
        &self,
        path: &str,
        expected: Option<&FileEntry>,
        told: &(dyn Fn(u64) + Sync),
    ) -> Result<Examined> {
        let what = format!("cannot read {path}");
        self.retrying(&what, || self.examine_once(path, told, true, expected))
            .await
    }

    /// With `vouched`, a file the server keeps a SHA-256 of is proven by it, unread.
    async fn examine_once(
        &self,
        path: &str,
        told: &(dyn Fn(u64) + Sync),
        vouched: bool,
        expected: Option<&FileEntry>,
    ) -> Result<Examined> {
        if let Some(root) = &self.local_root {
            return self.hash_local(root, path, told).await;
        }
        if vouched
            && !self.is_due(path)
            && let Some(found) = self.vouched_for(path, expected).await?
        {
            return Ok(Examined::Hashed(found));
        }
        let Some(size) = self.stat_size(path).await? else {
            return Ok(Examined::Hashed(None));
        };
        if expected.is_some_and(|expected| expected.size != size) {
            return Ok(Examined::Sized(size));
        }
        let sha = self.hash_stored(path, size).await?;
        let mut read = self.proof.read.lock().expect("read files");
        read.push((path.to_owned(), size));
        Ok(Examined::Hashed(Some((size, sha))))
    }

    /// A file of a local copy, hashed with plain reads on a blocking thread (OpenDAL's fs
    /// reader copies every chunk and zero-fills its buffers: an audit took twice as long as
    /// reading the files). A link is never followed: one on the way is reported as such.
    async fn hash_local(
        &self,
        root: &Path,
        path: &str,
        told: &(dyn Fn(u64) + Sync),
    ) -> Result<Examined> {
        let (root, path) = (root.to_owned(), path.to_owned());
        let file = root.join(path.trim_start_matches('/'));
        let what = format!("cannot read {path}");
        // One look at each step of the path tells a link, a missing file and a FIFO apart
        // before anything is opened.
        let job = move |read: &AtomicU64| match look(&root, &path) {
            Looked::Link => Ok(Examined::Link),
            Looked::Missing => Ok(Examined::Hashed(None)),
            Looked::Is(kind) => match odd_kind(kind) {
                Some(odd) => Ok(Examined::Odd(odd)),
                None => hash_unlinked(&file, read).map(Examined::Hashed),
            },
        };
        match self.blocking_told(&what, job, told).await? {
            Err(Error::Io { source, .. }) => {
                Err(super::failure::io_error(&self.on_this(&what), &source))
            }
            found => found,
        }
    }

    /// `work` on a thread of its own, under the stall deadline: given up on when the count
    /// it keeps (bytes read, entries listed) stops moving for that long, so a local disk
    /// that stops answering (pulled, a dead FUSE mount) fails the run in time (see `disk`).
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce(&AtomicU64) -> T + Send + 'static,
    ) -> Result<T> {
        self.blocking_told(what, work, &|_| {}).await
    }

    /// `blocking`, telling `told` how far the count moved, as it moves (progress shown while a
    /// large file is read, not once it is done).
    pub(super) async fn blocking_told<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce(&AtomicU64) -> T + Send + 'static,
        told: &(dyn Fn(u64) + Sync),
    ) -> Result<T> {
        // A thread of the runtime's pool (no thread made per call, as `disk::while_moving`
        // would: an audit makes thousands); one that hangs is left to the runtime's end.
        let progress = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&progress);
        let mut running = tokio::task::spawn_blocking(move || work(&counted));
        let mut watch = crate::deadline::Watch::new(self.stall);
        let mut said = 0;
        let mut tell = |progress: &AtomicU64| {
            let now = progress.load(Ordering::Relaxed);
            if now > said {
                told(now - said);
                said = now;
            }
        };
        loop {
            match tokio::time::timeout(crate::deadline::Watch::EVERY, &mut running).await {
                Ok(done) => {
                    tell(&progress);
                    return Ok(done.expect("blocking work"));
                }
                Err(_) if watch.stalled(&progress) => return Err(self.stalled(what)),
                Err(_) => tell(&progress),
            }
        }
    }

    /// One call into a local copy (a folder opened, a file renamed), waited for at most the
    /// stall deadline (see `disk`).
    pub fn on_disk<T: Send + 'static>(
        &self,
        what: &str,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T> {
        super::disk::bounded(self.stall, work).ok_or_else(|| self.stalled(what))
    }

    /// Stream a stored file to a local path, hashing it on the way: its size and SHA-256, or
    /// None (and nothing written) when it is missing. Tried again from the start after a
    /// temporary failure.
    pub async fn download(&self, path: &str, target: &Path) -> Result<Option<(u64, String)>> {
        let what = format!("cannot read {path}");
        self.retrying(&what, || self.download_once(path, target))
            .await
    }

    /// The newest older version of the file at `path` whose size and kept checksum are the
    /// manifest's (`entry`), downloaded to `target` and hashed on the way (what was read:
    /// the caller proves it); None where the copy keeps no such version. For a restore from
    /// a copy whose current file is damaged: the copy is left as it is.
    pub async fn download_older(
        &self,
        path: &str,
        entry: &FileEntry,
        target: &Path,
    ) -> Result<Option<(u64, String)>> {
        let size = entry.size;
        let Some(id) = self.from_history(path, entry, false).await? else {
            return Ok(None);
        };
        let what = format!("cannot read an older version of {path}");
        self.retrying(&what, || {
            self.download_chunks(path, Some(&id), size, target)
        })
        .await
        .map(Some)
    }

    async fn download_once(&self, path: &str, target: &Path) -> Result<Option<(u64, String)>> {
        let Some(size) = self.stat_size(path).await? else {
            return Ok(None);
        };
        self.download_chunks(path, None, size, target)
            .await
            .map(Some)
    }

    /// `size` bytes of the file at `path` (or of its older `version`) into `target`: their
    /// size and SHA-256.
    async fn download_chunks(
        &self,
        path: &str,
        version: Option<&str>,
        size: u64,
        target: &Path,
    ) -> Result<(u64, String)> {
        use tokio::io::AsyncWriteExt;
        let mut chunks = self.chunks(path, size);
        chunks.version = version;
        let mut out = tokio::fs::File::create(target)
            .await
            .map_err(Error::io("cannot create", target))?;
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.next().await? {
            hasher.update(&chunk);
            out.write_all(&chunk)
                .await
                .map_err(Error::io("cannot write", target))?;
        }
        out.flush()
            .await
            .map_err(Error::io("cannot write", target))?;
        Ok((size, crate::hashing::hex(&hasher.finalize())))
    }

    /// A file's size and SHA-256 as the server vouches for them, unread: Some(None) when it
    /// is missing; None where the server keeps no checksum of it, or one that cannot be
    /// read against the `expected` file (then it is read).
    async fn vouched_for(
        &self,
        path: &str,
        expected: Option<&FileEntry>,
    ) -> Result<Option<Option<(u64, String)>>> {
        if !self.backend.capabilities().server_checksums {
            return Ok(None);
        }
        let what = format!("cannot check {path}");
        match self
            .within_found(&what, self.backend.stored_checksum(path))
            .await?
        {
            None => Ok(Some(None)),
            Some(Some((size, kept))) => {
                let whole = match expected {
                    Some(entry) => kept.whole(&entry.sha256, entry.parts.as_ref()),
                    None => kept.sha256().map(str::to_owned),
                };
                let Some(whole) = whole else { return Ok(None) };
                self.proof.vouched.fetch_add(1, Ordering::Relaxed);
                Ok(Some(Some((size, whole))))
            }
            Some(None) => Ok(None),
        }
    }

    /// Whether this copy keeps older versions of what is overwritten or deleted, as its
    /// service says; None where it has no such setting.
    pub async fn keeps_history(&self) -> Result<Option<bool>> {
        let what = format!("cannot ask {} whether it keeps older versions", self.name);
        self.within(&what, self.backend.keeps_history()).await
    }

    /// Until when the files of the set at `dir` are due to be locked now, where this copy
    /// lengthens its locks while their sets are kept (`renew_locks`).
    pub fn lock_target(&self, dir: &str) -> Option<jiff::Timestamp> {
        self.backend.lock_target(&format!("{dir}/{MANIFEST}"))
    }

    /// Renew the lock of each of `files` of the set at `dir` (and of its manifest and
    /// SHA256SUMS) where it ends sooner than the set is now due to be kept: when the
    /// earliest of them ends; None where nothing is locked.
    pub async fn renew_locks(
        &self,
        dir: &str,
        files: &[String],
    ) -> Result<Option<jiff::Timestamp>> {
        let mut earliest: Option<jiff::Timestamp> = None;
        let described = [MANIFEST, crate::set::SHA256SUMS].map(str::to_owned);
        for file in files.iter().chain(&described) {
            let path = format!("{dir}/{file}");
            let what = format!("cannot renew the lock of {path}");
            let until = self
                .retrying(&what, || self.within(&what, self.backend.renew_lock(&path)))
                .await?;
            let Some(until) = until else { return Ok(None) };
            earliest = Some(earliest.map_or(until, |e| e.min(until)));
        }
        Ok(earliest)
    }

    /// Whether this copy can be asked for its files' older versions.
    pub fn keeps_versions(&self) -> bool {
        self.backend.capabilities().versions
    }

    /// The older versions of the file at `path`, newest first, with their sizes and kept
    /// SHA-256 (none where the copy keeps no versions).
    pub async fn older_versions(&self, path: &str) -> Result<Vec<super::backend::OlderVersion>> {
        if !self.keeps_versions() {
            return Ok(Vec::new());
        }
        let what = format!("cannot list the older versions of {path}");
        self.retrying(&what, || self.within(&what, self.backend.history(path)))
            .await
    }

    /// Make version `id` of the file at `path` its current one again, copied by the
    /// server (unproven: the caller proves it).
    pub async fn bring_back(&self, path: &str, id: &str) -> Result<()> {
        let what = format!("cannot bring back an older version of {path}");
        self.retrying(&what, || {
            self.within(&what, self.backend.bring_back(path, id))
        })
        .await
    }

    /// The set folders of this copy that were deleted (their manifest among the files
    /// deleted while older versions are kept), each with whether cleanup's record is among
    /// its deleted files (removed by darvault, or made to look so): folder paths from the
    /// root.
    pub async fn deleted_sets(&self) -> Result<Vec<(String, bool)>> {
        if !self.keeps_versions() {
            return Ok(Vec::new());
        }
        // Page by page, each under the stall deadline (a listing of a large bucket may
        // take longer than one).
        let what = "cannot list the older versions";
        let deleted = self
            .retrying(what, || async {
                let listed = self.backend.deleted("").await;
                listed.map_err(|failure| failure.error(&self.on_this(what)))
            })
            .await?;
        let deleted: std::collections::HashSet<&str> = deleted.iter().map(String::as_str).collect();
        let mut sets: Vec<(String, bool)> = deleted
            .iter()
            .filter_map(|path| path.strip_suffix(&format!("/{}", crate::set::MANIFEST)))
            .map(|dir| {
                let removing = format!("{dir}/{}", crate::set::REMOVING);
                (dir.to_owned(), deleted.contains(removing.as_str()))
            })
            .collect();
        sets.sort();
        Ok(sets)
    }

    /// The newest older version of the file at `path` whose size and kept checksum are the
    /// manifest's (`entry`), if the copy keeps one (a file deleted or overwritten behind
    /// darvault's back); with `bring_back`, made current again by the server (nothing
    /// downloaded) and proven so by its kept checksum. Its version id.
    pub async fn from_history(
        &self,
        path: &str,
        entry: &FileEntry,
        bring_back: bool,
    ) -> Result<Option<String>> {
        if !self.keeps_versions() {
            return Ok(None);
        }
        let (size, sha256) = (entry.size, entry.sha256.as_str());
        let parts = entry.parts.as_ref();
        let matching: Vec<_> = self
            .older_versions(path)
            .await?
            .into_iter()
            .filter(|v| {
                let whole = v.kept.as_ref().and_then(|k| k.whole(sha256, parts));
                v.size == size && whole.as_deref() == Some(sha256)
            })
            .collect();
        if !bring_back {
            return Ok(matching.into_iter().next().map(|v| v.id));
        }
        // One CopyObject copies 5 GiB at most: a larger version is no source here.
        let copyable = matching
            .into_iter()
            .filter(|v| v.size <= crate::set::manifest::SINGLE_PUT_MAX);
        for good in copyable {
            match self.bring_back(path, &good.id).await {
                Ok(()) => {}
                Err(e @ (Error::Interrupted | Error::Stalled { .. })) => return Err(e),
                Err(e) => {
                    tracing::warn!(
                        "{}: version {} not brought back: {e}",
                        self.on_this(path),
                        good.id
                    );
                    continue;
                }
            }
            crate::fault::point(crate::fault::BROUGHT_BACK);
            // Proven by the checksum the server keeps for the copy it made, else by
            // reading it; one that is not is followed by the next older one.
            let proven = match self.vouched_for(path, Some(entry)).await? {
                Some(Some((found_size, found))) => found_size == size && found == sha256,
                _ => self.hash_stored(path, size).await? == sha256,
            };
            if proven {
                return Ok(Some(good.id));
            }
            tracing::warn!(
                "{}: version {} brought back does not match the manifest",
                self.on_this(path),
                good.id
            );
        }
        Ok(None)
    }

    /// Read back whole the files at `paths` when they are examined, even where the server
    /// vouches for them (the read budget's share of an audit).
    pub fn read_back(&self, paths: std::collections::HashSet<String>) {
        *self.proof.due.lock().expect("due files") = paths;
    }

    /// Whether the file at `path` is to be read back whole.
    pub fn is_due(&self, path: &str) -> bool {
        self.proof.due.lock().expect("due files").contains(path)
    }

    /// The files read whole from this remote copy (and their sizes) since last asked.
    pub fn take_read(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.proof.read.lock().expect("read files"))
    }

    /// The files of a set at `paths`, hashed by the server in one go where it can
    /// (`remote_hashing`), unread; each None that is to be examined alone (the server could
    /// not read it), and all None where the server cannot hash. `anchor` (a file of the set
    /// and its SHA-256, e.g. its manifest, read the usual way) is hashed with them: a server
    /// whose shell sees another tree than its SFTP session (a chroot, a virtual root) is
    /// noticed so, and not asked again.
    pub async fn examine_there(
        &self,
        paths: &[String],
        anchor: (&str, &str),
    ) -> Result<Vec<Option<Examined>>> {
        let unread = || {
            paths
                .iter()
                .map(|_| None)
                .collect::<Vec<Option<Examined>>>()
        };
        if !self.backend.capabilities().remote_hashing
            || self.proof.shell_off.load(Ordering::Relaxed)
            || paths.is_empty()
        {
            return Ok(unread());
        }
        let mut hashed = Vec::with_capacity(paths.len());
        for batch in paths.chunks(HASHED_PER_SESSION) {
            let mut batch = batch.to_vec();
            batch.push(anchor.0.to_owned());
            // One ssh session per batch, its wait the ssh child's own deadline (no answer
            // for `stall_timeout`: while one file is hashed), not one for the batch.
            let answer = match self.backend.hash_there(&batch).await {
                Ok(Some(answer)) => answer,
                Ok(None) => return Ok(unread()),
                Err(failure) => return Ok(self.shell_off(&failure.cause, unread())),
            };
            match answer.last() {
                Some(There::Found { sha256, .. }) if sha256 == anchor.1 => {}
                _ => {
                    let why = format!(
                        "its shell does not see {} as its SFTP session does",
                        anchor.0
                    );
                    return Ok(self.shell_off(&why, unread()));
                }
            }
            hashed.extend(answer.into_iter().take(batch.len() - 1));
        }
        let found = hashed.into_iter().map(|h| match h {
            There::Found { size, sha256 } => {
                self.proof.vouched.fetch_add(1, Ordering::Relaxed);
                Some(Examined::Hashed(Some((size, sha256))))
            }
            There::Missing => Some(Examined::Hashed(None)),
            There::Link => Some(Examined::Link),
            There::NotAFile => Some(Examined::Odd("a folder or a special file")),
            There::Unreadable => None,
        });
        Ok(found.collect())
    }

    /// Hashing on the server given up for this copy (said once): its files are read.
    fn shell_off<T>(&self, why: &str, then: T) -> T {
        if !self.proof.shell_off.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "{}: not hashed on the server ({why}): its files are read",
                self.label()
            );
        }
        then
    }

    /// How this copy's files were proven so far: (files the server vouched for, bytes read
    /// from it); None for a local copy (read in place).
    pub fn proof(&self) -> Option<(u64, u64)> {
        self.local_root.is_none().then(|| {
            (
                self.proof.vouched.load(Ordering::Relaxed),
                self.proof.downloaded.load(Ordering::Relaxed),
            )
        })
    }

    /// A stored file of `size` bytes, read a bounded chunk at a time.
    fn chunks<'a>(&'a self, path: &'a str, size: u64) -> Chunks<'a> {
        Chunks {
            store: self,
            path,
            version: None,
            offset: 0,
            size,
        }
    }

    /// The SHA-256 of a stored file of `size` bytes, read in bounded chunks.
    async fn hash_stored(&self, path: &str, size: u64) -> Result<String> {
        let mut chunks = self.chunks(path, size);
        let mut hasher = Sha256::new();
        while let Some(chunk) = chunks.next().await? {
            hasher.update(&chunk);
        }
        Ok(crate::hashing::hex(&hasher.finalize()))
    }

    /// The size of a stored file from the service (None when missing), under the stall
    /// deadline.
    async fn stat_size(&self, path: &str) -> Result<Option<u64>> {
        let what = format!("cannot read {path}");
        self.within_found(&what, self.backend.stat(path)).await
    }

    /// A small file's bytes (a manifest); None when it is missing.
    pub async fn read_small(&self, path: &str) -> Result<Option<Vec<u8>>> {
        if let Some(root) = &self.local_root {
            // Read as it is: OpenDAL's fs reader zero-fills a 2 MiB buffer per file first.
            return self
                .read_local(root, path, |f, bytes| {
                    std::io::Read::read_to_end(f, bytes).map(|_| ())
                })
                .await;
        }
        let what = format!("cannot read {path}");
        self.retrying(&what, || self.read_remote(path)).await
    }

    async fn read_remote(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let what = format!("cannot read {path}");
        let read = self.within_found(&what, self.backend.read(path)).await?;
        if let Some(bytes) = &read {
            let size = bytes.len() as u64;
            self.proof.downloaded.fetch_add(size, Ordering::Relaxed);
        }
        Ok(read)
    }

    /// What `read` gets of a file of a local copy; None when it is missing. A link is never
    /// read (a copy is read only inside its own folder).
    async fn read_local(
        &self,
        root: &Path,
        path: &str,
        read: impl FnOnce(&mut std::fs::File, &mut Vec<u8>) -> std::io::Result<()> + Send + 'static,
    ) -> Result<Option<Vec<u8>>> {
        let (root, path) = (root.to_owned(), path.to_owned());
        let what = format!("cannot read {path}");
        self.blocking(&what, move |_| read_unlinked(&root, &path, read))
            .await?
    }

    /// The bytes of `range` of a stored file (fewer where the file ends first); None when it
    /// is missing.
    pub async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Option<Vec<u8>>> {
        if let Some(root) = &self.local_root {
            use std::io::{Read, Seek, SeekFrom};
            return self
                .read_local(root, path, move |f, bytes| {
                    f.seek(SeekFrom::Start(range.start))?;
                    f.take(range.end - range.start)
                        .read_to_end(bytes)
                        .map(|_| ())
                })
                .await;
        }
        let what = format!("cannot read {path}");
        self.retrying(&what, || {
            self.within_found(&what, self.backend.read_range(path, range.clone()))
        })
        .await
    }

    /// Every entry under `dir`, recursively: (path relative to the copy root, is a directory).
    /// On a local copy symbolic links are listed as what they are (not directories) and
    /// never followed.
    pub async fn walk(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        if let Some(root) = &self.local_root {
            let (root, name) = (root.clone(), self.name.clone());
            let start = root.join(dir.trim_start_matches('/'));
            let what = format!("cannot list {dir}");
            return self
                .blocking(&what, move |listed| {
                    walk_local(&root, &start, &name, listed)
                })
                .await?;
        }
        let what = format!("cannot list {}", self.name);
        self.retrying(&what, || self.walk_remote(dir)).await
    }

    async fn walk_remote(&self, dir: &str) -> Result<Vec<(String, bool)>> {
        let what = format!("cannot list {dir}");
        let entries = self
            .within_found(&what, self.backend.list(dir, true))
            .await?
            .unwrap_or_default();
        Ok(entries.into_iter().map(|e| (e.path, e.is_dir)).collect())
    }

    /// Refused credentials named as such, where the service lets them be asked about
    /// (WebDAV); under the stall deadline.
    pub async fn check_access(&self) -> Result<()> {
        let what = format!("destination {:?}", self.name);
        match tokio::time::timeout(self.stall, self.backend.check_access()).await {
            Ok(checked) => checked.map_err(|failure| failure.error(&what)),
            Err(_) => Err(self.stalled("cannot log in")),
        }
    }

    pub async fn check_marker(&self, dest: &Destination) -> Result<()> {
        if let Some(marker) = &dest.require_marker {
            match tokio::time::timeout(self.stall, self.backend.stat(marker)).await {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => {
                    return Err(Error::Failed(format!(
                        "destination {:?}: the marker file {marker:?} is not there: is this the right disk (or bucket), and is it mounted? Nothing was written",
                        dest.name()
                    )));
                }
                Err(_) => return Err(self.stalled(&format!("cannot look for {marker}"))),
            }
        }
        Ok(())
    }

    pub async fn definitions(&self) -> Result<Vec<String>> {
        let what = format!("cannot list {}", self.name);
        let mut names = Vec::new();
        for entry in self.within(&what, self.backend.list("/", false)).await? {
            let name = entry.path.as_str();
            if entry.is_dir && !name.is_empty() && !name.starts_with('.') && !self.is_link(name)? {
                names.push(name.to_owned());
            }
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    pub async fn sets(&self, definition: &str) -> Result<Found> {
        let mut found = Found::default();
        let folders = match &self.local_root {
            Some(root) => {
                let (root, definition) = (root.clone(), definition.to_owned());
                let what = format!("cannot list {definition}");
                self.blocking(&what, move |seen| {
                    set_folders_here(&root, &definition, seen)
                })
                .await??
            }
            None => self.set_folders(definition).await?,
        };
        for folder in folders {
            let location = match folder.name.as_str() {
                "" => definition.to_owned(),
                name => format!("{definition}/{name}"),
            };
            if folder.link {
                found.problems.push(format!(
                    "{location}: a symbolic link (refused: a copy is read only inside its own folder)"
                ));
                continue;
            }
            if staging::is_staging(&folder.name) {
                found
                    .problems
                    .push(format!("{location}: unfinished set (staging leftover)"));
                continue;
            }
            if folder.name.parse::<SetName>().is_err() {
                continue;
            }
            match folder.set {
                Some(Ok(set)) => found.sets.push(set),
                Some(Err(err)) => found.problems.push(format!("{location}: {err}")),
                None if folder.removing => {
                    found.problems.push(super::removal_in_progress(&location));
                    found.removing.push(location);
                }
                None if folder.empty => {
                    found.problems.push(super::empty_set_folder(&location));
                    found.removing.push(location);
                }
                None if folder.writing => found.problems.push(format!(
                    "{location}: being written (in progress, or cut short: the next replicate finishes it)"
                )),
                None => found
                    .problems
                    .push(format!("{location}: no {MANIFEST}: an incomplete copy")),
            }
        }
        found.sort();
        Ok(found)
    }

    /// Whether a (record) file is at `path`; a failure to tell counts as no.
    async fn has_file(&self, what: &str, path: String) -> bool {
        matches!(
            self.within(what, self.backend.exists(&path)).await,
            Ok(true)
        )
    }

    /// The folders under `definition` on a remote copy, with what `sets` needs of each.
    async fn set_folders(&self, definition: &str) -> Result<Vec<SetFolder>> {
        let what = format!("cannot list {}/{definition}", self.name);
        let folder = format!("{definition}/");
        let Some(entries) = self
            .within_found(&what, self.backend.list(&folder, false))
            .await?
        else {
            return Ok(Vec::new());
        };
        let mut folders = Vec::new();
        for e in entries {
            let name = e.path.rsplit('/').next().unwrap_or_default().to_owned();
            if name.is_empty() || name.parse::<SetName>().is_err() {
                folders.push(SetFolder::named(name));
                continue;
            }
            let location = format!("{definition}/{name}");
            let manifest = self.read_small(&format!("{location}/{MANIFEST}")).await?;
            let set = manifest.map(|bytes| read_manifest(&location, &name, &bytes));
            let holds = |record: &str| self.has_file(&what, format!("{location}/{record}"));
            let removing = set.is_none() && holds(crate::set::REMOVING).await;
            let writing = set.is_none() && !removing && holds(crate::set::WRITING).await;
            let empty =
                set.is_none() && !removing && !writing && self.walk(&location).await?.is_empty();
            folders.push(SetFolder {
                set,
                removing,
                empty,
                writing,
                ..SetFolder::named(name)
            });
        }
        Ok(folders)
    }
}

/// A folder found under a definition's folder, and what tells whether it is a set.
struct SetFolder {
    name: String,
    /// A symbolic link (never followed).
    link: bool,
    /// The set its MANIFEST.toml describes, or why it does not (sets only).
    set: Option<std::result::Result<FoundSet, String>>,
    /// An interrupted cleanup's marker stands in it.
    removing: bool,
    /// A set's name on a folder that holds nothing: the last step of a removal (or the first
    /// of a copy) was cut short. Not a set; removing it loses nothing.
    empty: bool,
    /// A replicate's record of the set being written stands in it, and no manifest yet.
    writing: bool,
}

impl SetFolder {
    fn named(name: String) -> SetFolder {
        SetFolder {
            name,
            link: false,
            set: None,
            removing: false,
            empty: false,
            writing: false,
        }
    }
}

/// The folders under `definition` of a local copy at `root`, read in one go (one call per
/// set would cost a thread each), counted in `seen` as they come. Links are never followed.
fn set_folders_here(root: &Path, definition: &str, seen: &AtomicU64) -> Result<Vec<SetFolder>> {
    let dir = root.join(definition);
    if goes_through_link(root, definition) {
        return Ok(vec![SetFolder {
            link: true,
            ..SetFolder::named(String::new())
        }]);
    }
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot list", &dir)(e)),
    };
    let mut named = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("cannot list", &dir))?;
        let link = entry.file_type().is_ok_and(|t| t.is_symlink());
        named.push((entry.file_name().to_string_lossy().into_owned(), link));
    }
    // Thousands of manifests are read and parsed a core each (parsing is most of `list`).
    crate::parallel::on_cores(named.len(), |i| {
        let (name, link) = &named[i];
        seen.fetch_add(1, Ordering::Relaxed);
        set_folder_here(root, definition, name, *link)
    })
    .into_iter()
    .collect()
}

/// What one entry of a definition's folder is; a set's manifest parsed as read, so the bytes
/// of thousands of manifests are never held at once.
fn set_folder_here(root: &Path, definition: &str, name: &str, link: bool) -> Result<SetFolder> {
    let mut folder = SetFolder::named(name.to_owned());
    folder.link = link;
    if !folder.link && folder.name.parse::<SetName>().is_ok() {
        let location = format!("{definition}/{}", folder.name);
        let manifest = read_unlinked(root, &format!("{location}/{MANIFEST}"), |f, b| {
            std::io::Read::read_to_end(f, b).map(|_| ())
        })?;
        folder.set = manifest.map(|bytes| read_manifest(&location, &folder.name, &bytes));
        let dir = root.join(&location);
        folder.removing = folder.set.is_none()
            && std::fs::symlink_metadata(dir.join(crate::set::REMOVING)).is_ok();
        folder.writing = folder.set.is_none()
            && !folder.removing
            && std::fs::symlink_metadata(dir.join(crate::set::WRITING)).is_ok();
        folder.empty = folder.set.is_none()
            && !folder.removing
            && std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_none());
    }
    Ok(folder)
}

/// What a file that is neither a regular file nor a folder is, in a person's words.
pub fn odd_kind(kind: std::fs::FileType) -> Option<&'static str> {
    use std::os::unix::fs::FileTypeExt;
    [
        (kind.is_fifo(), "a FIFO"),
        (kind.is_socket(), "a socket"),
        (kind.is_block_device(), "a block device"),
        (kind.is_char_device(), "a character device"),
    ]
    .into_iter()
    .find_map(|(is, name)| is.then_some(name))
}

/// Open a copy's file for reading only when it is a regular file: never through a link, and
/// never waiting on a FIFO (an open of one waits for a writer, deaf to every signal) or a
/// device; anything else is refused by its type once opened without blocking.
pub(super) fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if !kind.is_file() {
        let what = odd_kind(kind).unwrap_or(if kind.is_dir() {
            "a folder"
        } else {
            "not a regular file"
        });
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{what} stands there (refused: only regular files are read)"),
        ));
    }
    // Reads of a regular file block as usual again.
    // SAFETY: fcntl on a descriptor `file` owns.
    unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    Ok(file)
}

/// Size and SHA-256 of a file that is not a symbolic link (None when it is missing), the
/// bytes read so far counted in `progress` as they are.
pub(super) fn hash_unlinked(path: &Path, progress: &AtomicU64) -> Result<Option<(u64, String)>> {
    match open_regular(path) {
        Ok(mut file) => {
            let hashed = crate::hashing::hash_open(&mut file, path, progress).map(Some);
            // A copy's file: closed without waiting for its disk (see `copy::disk`).
            super::disk::close(file);
            hashed
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot open", path)(e)),
    }
}

/// What an audit finds of a stored file.
#[derive(Debug)]
pub enum Examined {
    /// A symbolic link, or a path through one (a copy is untrusted: it is not followed).
    Link,
    /// A FIFO, a socket or a device: refused by its type, never opened.
    Odd(&'static str),
    /// Its size and SHA-256; None when missing.
    Hashed(Option<(u64, String)>),
    /// A remote file whose size is not the one expected: left unread.
    Sized(u64),
}

/// The set a manifest read at `location` describes, or why it does not.
fn read_manifest(
    location: &str,
    folder: &str,
    bytes: &[u8],
) -> std::result::Result<FoundSet, String> {
    let name = folder.parse::<SetName>().map_err(|e| e.to_string())?;
    FoundSet::from_manifest(location.into(), name, bytes).map_err(|e| e.to_string())
}

/// What `read` gets of the file `path` of a local copy at `root`; None when it is missing
/// or is (or goes through) a symbolic link: a copy is read only inside its own folder.
fn read_unlinked(
    root: &Path,
    path: &str,
    read: impl FnOnce(&mut std::fs::File, &mut Vec<u8>) -> std::io::Result<()>,
) -> Result<Option<Vec<u8>>> {
    if goes_through_link(root, path) {
        return Ok(None);
    }
    let file = root.join(path.trim_start_matches('/'));
    let mut bytes = Vec::new();
    let read = open_regular(&file).and_then(|mut f| {
        let read = read(&mut f, &mut bytes);
        super::disk::close(f);
        read
    });
    match read {
        Ok(()) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("cannot read", &file)(e)),
    }
}

/// Whether `path` under `root`, or a folder on the way to it, is a symbolic link.
fn goes_through_link(root: &Path, path: &str) -> bool {
    matches!(look(root, path), Looked::Link)
}

/// What `path` under `root` is, each step looked at without following a link.
enum Looked {
    /// It, or a folder on the way, is a symbolic link.
    Link,
    /// It (or a folder on the way) is not there; or it is the root itself.
    Missing,
    Is(std::fs::FileType),
}

fn look(root: &Path, path: &str) -> Looked {
    let mut at = root.to_owned();
    let mut last = Looked::Missing;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        at.push(part);
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.file_type().is_symlink() => return Looked::Link,
            Ok(m) => last = Looked::Is(m.file_type()),
            Err(_) => return Looked::Missing,
        }
    }
    last
}

/// A copy that hung while it was being opened.
fn opening_stalled(copy: &str, stall: Duration) -> Error {
    Error::Stalled {
        what: format!("cannot open {copy}"),
        copy: copy.to_owned(),
        seconds: stall.as_secs(),
    }
}

/// Every entry below `start` of a local copy at `root`, links not followed, counted in
/// `listed` as they come.
fn walk_local(
    root: &Path,
    start: &Path,
    name: &str,
    listed: &AtomicU64,
) -> Result<Vec<(String, bool)>> {
    let mut out = Vec::new();
    for e in walkdir::WalkDir::new(start)
        .min_depth(1)
        .follow_links(false)
    {
        let e = match e {
            Ok(e) => e,
            Err(err)
                if err.io_error().map(|io| io.kind()) == Some(std::io::ErrorKind::NotFound) =>
            {
                continue;
            }
            Err(err) => return Err(Error::Failed(format!("cannot list {name}: {err}"))),
        };
        let rel = e.path().strip_prefix(root).expect("under the root");
        out.push((rel.to_string_lossy().into_owned(), e.file_type().is_dir()));
        listed.fetch_add(1, Ordering::Relaxed);
    }
    Ok(out)
}

/// `size` bytes of a stored file in bounded reads (memory stays bounded), stoppable; a read
/// that gets nothing for the stall deadline fails.
struct Chunks<'a> {
    store: &'a Store,
    path: &'a str,
    /// An older version of the file, not its current one.
    version: Option<&'a str>,
    offset: u64,
    size: u64,
}

impl Chunks<'_> {
    async fn next(&mut self) -> Result<Option<Vec<u8>>> {
        if self.offset >= self.size {
            return Ok(None);
        }
        crate::tools::process::check_stop()?;
        let end = (self.offset + READ_CHUNK).min(self.size);
        let what = format!("cannot read {}", self.path);
        let read = match self.version {
            Some(id) => self
                .store
                .backend
                .read_version_range(self.path, id, self.offset..end),
            None => self.store.backend.read_range(self.path, self.offset..end),
        };
        let chunk = self.store.within(&what, read).await?;
        if chunk.len() as u64 != end - self.offset {
            return Err(Error::Failed(format!(
                "{} on {}: {} bytes read at {}, {} expected (the file changed while read?)",
                self.path,
                self.store.label(),
                chunk.len(),
                self.offset,
                end - self.offset
            )));
        }
        self.offset = end;
        let read = chunk.len() as u64;
        self.store
            .proof
            .downloaded
            .fetch_add(read, Ordering::Relaxed);
        Ok(Some(chunk))
    }
}

/// `require_mount`: the root (or its nearest existing ancestor) must be on another filesystem
/// than `/`, i.e. on a mounted disk; `require_marker` is checked by `check_marker`. Returns
/// the path and device to hold the copy to for the rest of the run.
fn check_fs(dest: &Destination) -> Result<Option<(std::path::PathBuf, u64)>> {
    let root = Path::new(dest.root().unwrap_or("/"));
    if !dest.require_mount {
        return Ok(None);
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
    let device = dev(existing)?;
    if device == dev(Path::new("/"))? {
        return Err(Error::Failed(format!(
            "destination {:?}: {} is not on a mounted disk (is the USB disk plugged in and mounted?): nothing was written",
            dest.name(),
            root.display()
        )));
    }
    Ok(Some((existing.to_owned(), device)))
}
