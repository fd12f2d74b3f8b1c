//! What a kind of storage does, and what it can do: the few requests a copy is made of
//! (list, stat, read, write, rename, remove) behind one trait, with the capabilities that
//! differ from one kind to another. `Store` is the policy above it (deadlines, retries,
//! temporary names, the lock, set discovery); the OpenDAL services and WebDAV's streamed
//! upload implement it (`remote`), and so does an in-memory store that fails on demand, for
//! unit tests (`memory`). A local copy is written through its anchored folder descriptor
//! (`anchored`, `disk`), which keeps the rules of a folder on a disk (links refused, a
//! mount that must stay, disk threads that may hang).
//!
//! A request that fails says so as a `Failure`: its class (not found, already there, other),
//! whether trying again can help, and its cause in words; made where the library's error or
//! the server's answer is read (`failure`), once for every kind.

use std::future::Future;
use std::ops::Range;
use std::pin::Pin;

use crate::set::manifest::PartDigests;

pub use super::failure::{Failure, FailureKind};

/// The answer to one request.
pub type Io<'a, T> = Pin<Box<dyn Future<Output = Result<T, Failure>> + Send + 'a>>;

/// What a kind of storage can do beyond the requests every kind answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// A file can be renamed in one step: written under a temporary name, then moved into
    /// place (else an upload replaces an object only when it completes).
    pub atomic_rename: bool,
    /// A file can be written in several requests (multipart, append); else in one piece
    /// held in memory.
    pub write_in_pieces: bool,
    /// A file can be created only if none is there, in one step (S3 `If-None-Match`).
    pub create_only_if_absent: bool,
    /// The service checks each file's SHA-256 as it receives it, keeps it and returns it
    /// (S3 `x-amz-checksum-sha256`): a copy is proven without reading it back.
    pub server_checksums: bool,
    /// The server can hash a file itself (`sha256sum` by its shell, over ssh): a copy is
    /// proven at rest without downloading it (`hash_there` asks it).
    pub remote_hashing: bool,
    /// Every file of a set is locked against change and removal when uploaded, until its
    /// retention ends (S3 Object Lock; the bucket's setting is checked by `check_access`).
    pub object_lock: bool,
    /// Files live in folders that must exist before a file is written in them (SFTP, WebDAV,
    /// a local disk); an object store has none (a folder there is only a marker object).
    pub folders: bool,
    /// The service can be asked for an object's older versions and bring one back
    /// (`history`, `bring_back`); whether it keeps any is the bucket's setting.
    pub versions: bool,
}

/// One entry of a listing: its path from the copy's root, and whether it is a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: String,
    pub is_dir: bool,
}

/// The requests a copy's storage answers. Paths are relative to the copy's root; a folder's
/// path may end with '/'.
pub trait Backend: Send + Sync {
    fn capabilities(&self) -> Capabilities;

    /// The size of a file (`NotFound` when it is not there).
    fn stat<'a>(&'a self, path: &'a str) -> Io<'a, u64>;

    fn exists<'a>(&'a self, path: &'a str) -> Io<'a, bool>;

    /// A whole (small) file.
    fn read<'a>(&'a self, path: &'a str) -> Io<'a, Vec<u8>>;

    /// `range` of a file (fewer bytes where it ends first).
    fn read_range<'a>(&'a self, path: &'a str, range: Range<u64>) -> Io<'a, Vec<u8>>;

    /// A whole (small) file, replacing what is there.
    fn write<'a>(&'a self, path: &'a str, bytes: Vec<u8>) -> Io<'a, ()>;

    /// A whole (small) file, only if none is there (`ConditionNotMatch` when one is). Only
    /// where `create_only_if_absent`.
    fn create_new<'a>(&'a self, path: &'a str, bytes: Vec<u8>) -> Io<'a, ()>;

    /// A file of `size` bytes whose SHA-256 is `sha256` (hex), written chunk by chunk. Where
    /// the service keeps checksums (`server_checksums`) it refuses bytes that do not hash to
    /// it.
    fn writer<'a>(
        &'a self,
        path: &'a str,
        size: u64,
        sha256: &'a str,
        part: Option<u64>,
    ) -> Io<'a, Box<dyn Sink + 'a>>;

    /// The size and SHA-256 of each of `paths`, computed by the server (`remote_hashing`),
    /// without downloading them; None where the server cannot.
    fn hash_there<'a>(&'a self, paths: &'a [String]) -> Io<'a, Option<Vec<There>>> {
        let _ = paths;
        Box::pin(async { Ok(None) })
    }

    /// A file's size and the SHA-256 the service keeps for it, read without the file's
    /// bytes (`server_checksums`); None for a file stored without one, and where the service
    /// keeps none. `NotFound` when there is no file.
    fn stored_checksum<'a>(&'a self, path: &'a str) -> Io<'a, Option<(u64, Kept)>> {
        let _ = path;
        Box::pin(async { Ok(None) })
    }

    /// Whether the service keeps older versions of what is overwritten or deleted (a
    /// bucket with versioning on); None where it has no such setting.
    fn keeps_history(&self) -> Io<'_, Option<bool>> {
        Box::pin(async { Ok(None) })
    }

    /// Until when the file at `path` is due to be locked now, where the service's locks
    /// are lengthened while their sets are kept (`object_lock`, `lock_retention = "keep"`).
    fn lock_target(&self, path: &str) -> Option<jiff::Timestamp> {
        let _ = path;
        None
    }

    /// Lock the file at `path` as long as its set is now due to be kept, if its lock ends
    /// sooner (a lock is never shortened): when its lock ends. None where nothing is
    /// locked.
    fn renew_lock<'a>(&'a self, path: &'a str) -> Io<'a, Option<jiff::Timestamp>> {
        let _ = path;
        Box::pin(async { Ok(None) })
    }

    /// The versions of the file at `path` older than its current one, newest first, each
    /// with its size and the SHA-256 the service keeps for it (None where it keeps none);
    /// deleted ones left out (`versions`).
    fn history<'a>(&'a self, path: &'a str) -> Io<'a, Vec<OlderVersion>> {
        let _ = path;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The files under `dir` deleted while an older version of each is kept (`versions`).
    fn deleted<'a>(&'a self, dir: &'a str) -> Io<'a, Vec<String>> {
        let _ = dir;
        Box::pin(async { Ok(Vec::new()) })
    }

    /// The bytes `range` of version `id` of the file at `path` (`versions`).
    fn read_version_range<'a>(
        &'a self,
        path: &'a str,
        id: &'a str,
        range: std::ops::Range<u64>,
    ) -> Io<'a, Vec<u8>> {
        let _ = (path, id, range);
        Box::pin(async { Err(Failure::no_versions()) })
    }

    /// Make version `id` of the file at `path` its current one again, on the server
    /// (`versions`).
    fn bring_back<'a>(&'a self, path: &'a str, id: &'a str) -> Io<'a, ()> {
        let _ = (path, id);
        Box::pin(async { Err(Failure::no_versions()) })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> Io<'a, ()>;

    /// Remove a file; nothing when it is not there.
    fn remove<'a>(&'a self, path: &'a str) -> Io<'a, ()>;

    /// Remove a folder and everything in it.
    fn remove_all<'a>(&'a self, dir: &'a str) -> Io<'a, ()>;

    fn make_dir<'a>(&'a self, dir: &'a str) -> Io<'a, ()>;

    /// The entries of `dir` (everything below it when `recursive`), without `dir` itself
    /// (`NotFound`, or nothing, when it is not there).
    fn list<'a>(&'a self, dir: &'a str, recursive: bool) -> Io<'a, Vec<Entry>>;

    /// Whether the credentials are taken, where the service can be asked that alone (a
    /// refusal is then named as such); Ok elsewhere.
    fn check_access(&self) -> Io<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    /// The service's endpoint, named in errors (a refused connection says where).
    fn endpoint(&self) -> Option<&str> {
        None
    }
}

/// An older version of a file, as the service keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OlderVersion {
    pub id: String,
    pub size: u64,
    pub kept: Option<Kept>,
}

/// The checksum a service keeps of a file (S3's `x-amz-checksum-sha256`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// The SHA-256 of the whole file, in hex.
    Sha256(String),
    /// Of a file sent in parts: the composite S3 defines (base64 of the SHA-256 of the
    /// parts' digests, "-", their count), as the server shows it.
    Composite(String),
}

impl Kept {
    /// The SHA-256 of the whole file this checksum stands for, given the manifest's SHA-256
    /// of the file and its parts' digests. A composite stands for the manifest's SHA-256
    /// when it is the composite of the manifest's parts (hashed from the same bytes at
    /// backup). None where it cannot say (then the file is read): a composite, and no
    /// parts in the manifest or other ones.
    pub fn whole(&self, sha256: &str, parts: Option<&PartDigests>) -> Option<String> {
        match self {
            Kept::Sha256(hex) => Some(hex.clone()),
            // Another composite may be the same bytes cut elsewhere: it says nothing.
            Kept::Composite(kept) => {
                let ours = super::composite::composite_of(&parts?.sha256)?;
                (&ours == kept).then(|| sha256.to_owned())
            }
        }
    }

    /// A whole file's SHA-256 (hex), where that is what is kept.
    pub fn sha256(&self) -> Option<&str> {
        match self {
            Kept::Sha256(hex) => Some(hex),
            Kept::Composite(_) => None,
        }
    }
}

/// What a server that hashes files found of one (its shell's answer, as `tools::shell` reads it).
pub use crate::tools::shell::Hashed as There;

/// A file being written.
pub trait Sink: Send {
    /// One chunk; waits while the service is not taking more.
    fn write(&mut self, chunk: Vec<u8>) -> Io<'_, ()>;

    /// The last chunk was written: the file is complete once this returns Ok.
    fn close(&mut self) -> Io<'_, ()>;

    /// Give up: nothing of what was written replaces the file.
    fn abort(&mut self) -> Io<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_composite_stands_for_the_manifest_sha256_only_when_made_of_its_parts() {
        let parts = PartDigests {
            size: 16,
            sha256: vec!["ab".repeat(32), "cd".repeat(32)],
        };
        let ours = super::super::composite::composite_of(&parts.sha256).unwrap();
        let whole = "ef".repeat(32);
        let kept = Kept::Composite(ours);
        assert_eq!(kept.whole(&whole, Some(&parts)), Some(whole.clone()));
        assert_eq!(kept.whole(&whole, None), None, "no parts: read it");
        let other = Kept::Composite("AAAA-2".into());
        assert_eq!(
            other.whole(&whole, Some(&parts)),
            None,
            "cut elsewhere: read it"
        );
        assert_eq!(
            Kept::Sha256("01".into()).whole(&whole, None),
            Some("01".into())
        );
    }
}
