//! The OpenDAL services as a copy's storage (SFTP, S3, WebDAV, GCS, Azure, B2, a folder),
//! each request's error classified where it is read; WebDAV's uploads are streamed by `dav`.

use std::future::Future;
use std::ops::Range;

use opendal::Operator;

use super::backend::{Backend, Capabilities, Entry, Failure, Io, Kept, OlderVersion, Sink, There};
use super::dav::Dav;
use super::put::{CHUNK, PARTS_IN_FLIGHT};
use super::s3::S3;

pub(super) struct Remote {
    op: Operator,
    /// WebDAV: uploads as one streamed request.
    dav: Option<Dav>,
    /// S3 with static keys: uploads with their SHA-256, which the server checks and keeps.
    s3: Option<S3>,
    /// SFTP: files hashed by the server's shell, where it has one.
    shell: Option<std::sync::Arc<Shell>>,
    endpoint: Option<String>,
    /// Not an object store: files are in folders that must exist first.
    folders: bool,
}

/// An SFTP server's shell, to hash files there (asked once whether it can).
pub(super) struct Shell {
    login: crate::tools::shell::Login,
    /// The copy's root as the SFTP session names it.
    root: String,
    io_stall: Option<std::time::Duration>,
    able: std::sync::OnceLock<bool>,
}

impl Shell {
    pub(super) fn new(options: &[(String, String)], stall: std::time::Duration) -> Option<Shell> {
        let root = options
            .iter()
            .find(|(k, _)| k == "root")
            .map(|(_, v)| v.trim_end_matches('/').to_owned())
            .unwrap_or_default();
        // As the SFTP session names it: OpenDAL makes a relative root absolute.
        let root = match root.as_str() {
            "" => root,
            r if r.starts_with('/') => root,
            r => format!("/{r}"),
        };
        Some(Shell {
            login: crate::tools::shell::Login::from_options(options)?,
            root,
            io_stall: Some(stall),
            able: std::sync::OnceLock::new(),
        })
    }

    /// `paths` hashed by the server in one session: None where its shell cannot.
    fn hash(&self, paths: &[String]) -> Result<Option<Vec<There>>, Failure> {
        if !*self.able.get_or_init(|| self.login.can_hash(self.io_stall)) {
            return Ok(None);
        }
        let full: Vec<String> = paths
            .iter()
            .map(|path| match self.root.as_str() {
                "" => path.clone(),
                root => format!("{root}/{}", path.trim_start_matches('/')),
            })
            .collect();
        let hashed = self.login.hash(&full, self.io_stall).map_err(|e| {
            // ssh failing (a dropped connection) may pass; a server gone silent for the
            // whole stall_timeout is not waited for again.
            let retry = match e {
                crate::Error::Tool { .. } => super::failure::Retry::Helps,
                _ => super::failure::Retry::Useless,
            };
            Failure::other(retry, e.to_string())
        })?;
        Ok(Some(hashed))
    }
}

impl Remote {
    pub(super) fn new(
        op: Operator,
        dav: Option<Dav>,
        s3: Option<S3>,
        shell: Option<Shell>,
        endpoint: Option<String>,
        folders: bool,
    ) -> Remote {
        Remote {
            op,
            dav,
            s3,
            shell: shell.map(std::sync::Arc::new),
            endpoint,
            folders,
        }
    }
}

/// An OpenDAL request as the answer of a `Backend`.
fn io<'a, T: 'a>(request: impl Future<Output = opendal::Result<T>> + Send + 'a) -> Io<'a, T> {
    Box::pin(async move { request.await.map_err(|e| Failure::of(&e)) })
}

impl Backend for Remote {
    fn capabilities(&self) -> Capabilities {
        let can = self.op.info().capability();
        Capabilities {
            atomic_rename: can.rename,
            write_in_pieces: self.dav.is_some() || can.write_can_multi,
            create_only_if_absent: can.write_with_if_not_exists,
            server_checksums: self.s3.is_some(),
            remote_hashing: self.shell.is_some(),
            object_lock: self.s3.as_ref().is_some_and(S3::locks),
            versions: self.s3.is_some(),
            folders: self.folders,
        }
    }

    fn stat<'a>(&'a self, path: &'a str) -> Io<'a, u64> {
        io(async move { Ok(self.op.stat(path).await?.content_length()) })
    }

    fn exists<'a>(&'a self, path: &'a str) -> Io<'a, bool> {
        io(self.op.exists(path))
    }

    fn read<'a>(&'a self, path: &'a str) -> Io<'a, Vec<u8>> {
        io(async move { Ok(self.op.read(path).await?.to_vec()) })
    }

    fn read_range<'a>(&'a self, path: &'a str, range: Range<u64>) -> Io<'a, Vec<u8>> {
        io(async move { Ok(self.op.read_with(path).range(range).await?.to_vec()) })
    }

    fn write<'a>(&'a self, path: &'a str, bytes: Vec<u8>) -> Io<'a, ()> {
        io(async move { self.op.write(path, bytes).await.map(|_| ()) })
    }

    fn create_new<'a>(&'a self, path: &'a str, bytes: Vec<u8>) -> Io<'a, ()> {
        io(async move {
            let create = self.op.write_with(path, bytes).if_not_exists(true);
            create.await.map(|_| ())
        })
    }

    fn writer<'a>(
        &'a self,
        path: &'a str,
        size: u64,
        sha256: &'a str,
        part: Option<u64>,
    ) -> Io<'a, Box<dyn Sink + 'a>> {
        // One PUT carries the checksum; a larger file goes in parts, each with its own.
        if let Some(s3) = &self.s3 {
            // Cut where the manifest's parts are, so the server keeps their composite.
            let upload: Box<dyn Sink + 'a> = match super::s3_parts::parts_for(size) {
                None => s3.put(path, size, sha256),
                Some(ours) => {
                    // A part is held in memory: a manifest (untrusted on a copy) may not ask
                    // for larger ones than darvault would cut.
                    let part = part
                        .filter(|&p| super::s3_parts::allowed(size, p) && p <= ours.max(64 << 20));
                    Box::new(super::s3_parts::Parts::new(s3, path, part.unwrap_or(ours)))
                }
            };
            return Box::pin(async move { Ok(upload) });
        }
        if let Some(dav) = &self.dav {
            let upload: Box<dyn Sink + 'a> = Box::new(dav.start(path, size));
            return Box::pin(async move { Ok(upload) });
        }
        io(async move {
            let writer = self
                .op
                .writer_with(path)
                .chunk(CHUNK)
                .concurrent(PARTS_IN_FLIGHT)
                .await?;
            Ok(Box::new(Written(writer)) as Box<dyn Sink>)
        })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> Io<'a, ()> {
        io(self.op.rename(from, to))
    }

    fn remove<'a>(&'a self, path: &'a str) -> Io<'a, ()> {
        io(self.op.delete(path))
    }

    fn remove_all<'a>(&'a self, dir: &'a str) -> Io<'a, ()> {
        io(async move { self.op.delete_with(dir).recursive(true).await })
    }

    fn make_dir<'a>(&'a self, dir: &'a str) -> Io<'a, ()> {
        io(self.op.create_dir(dir))
    }

    fn list<'a>(&'a self, dir: &'a str, recursive: bool) -> Io<'a, Vec<Entry>> {
        io(async move {
            let listed = self.op.list_with(dir).recursive(recursive).await?;
            let itself = dir.trim_matches('/');
            Ok(listed
                .into_iter()
                .map(|e| Entry {
                    path: e.path().trim_matches('/').to_owned(),
                    is_dir: e.metadata().is_dir(),
                })
                .filter(|e| !e.path.is_empty() && e.path != itself)
                .collect())
        })
    }

    fn stored_checksum<'a>(&'a self, path: &'a str) -> Io<'a, Option<(u64, Kept)>> {
        match &self.s3 {
            Some(s3) => Box::pin(async move {
                let (size, kept) = s3.stored(path).await?;
                Ok(kept.map(|kept| (size, kept)))
            }),
            None => Box::pin(async { Ok(None) }),
        }
    }

    fn hash_there<'a>(&'a self, paths: &'a [String]) -> Io<'a, Option<Vec<There>>> {
        let Some(shell) = &self.shell else {
            return Box::pin(async { Ok(None) });
        };
        let (shell, paths) = (shell.clone(), paths.to_vec());
        Box::pin(async move {
            tokio::task::spawn_blocking(move || shell.hash(&paths))
                .await
                .map_err(|e| Failure::other(super::failure::Retry::Useless, e.to_string()))?
        })
    }

    fn keeps_history(&self) -> Io<'_, Option<bool>> {
        match &self.s3 {
            Some(s3) => Box::pin(async move {
                match s3.keeping().await {
                    Ok(keeping) => Ok(Some(keeping.versions)),
                    // Keys that may not ask: no answer, not a "no".
                    Err(f) if f.retry == super::failure::Retry::Useless => Ok(None),
                    Err(f) => Err(f),
                }
            }),
            None => Box::pin(async { Ok(None) }),
        }
    }

    fn lock_target(&self, path: &str) -> Option<jiff::Timestamp> {
        self.s3.as_ref()?.lock_target(path)
    }

    fn renew_lock<'a>(&'a self, path: &'a str) -> Io<'a, Option<jiff::Timestamp>> {
        match &self.s3 {
            Some(s3) => Box::pin(s3.renew_lock(path)),
            None => Box::pin(async { Ok(None) }),
        }
    }

    fn history<'a>(&'a self, path: &'a str) -> Io<'a, Vec<OlderVersion>> {
        let Some(s3) = &self.s3 else {
            return Box::pin(async { Ok(Vec::new()) });
        };
        Box::pin(async move {
            let mut older = Vec::new();
            for version in s3.versions(path).await? {
                if version.latest || version.deleted {
                    continue;
                }
                let (size, kept) = s3.stored_version(path, &version.id).await?;
                older.push(OlderVersion {
                    id: version.id,
                    size,
                    kept,
                });
            }
            Ok(older)
        })
    }

    fn read_version_range<'a>(
        &'a self,
        path: &'a str,
        id: &'a str,
        range: Range<u64>,
    ) -> Io<'a, Vec<u8>> {
        match &self.s3 {
            Some(s3) => Box::pin(s3.read_version_range(path, id, range)),
            None => Box::pin(async { Err(Failure::no_versions()) }),
        }
    }

    fn deleted<'a>(&'a self, dir: &'a str) -> Io<'a, Vec<String>> {
        match &self.s3 {
            Some(s3) => Box::pin(s3.deleted_under(dir)),
            None => Box::pin(async { Ok(Vec::new()) }),
        }
    }

    fn bring_back<'a>(&'a self, path: &'a str, id: &'a str) -> Io<'a, ()> {
        match &self.s3 {
            Some(s3) => Box::pin(s3.bring_back(path, id)),
            None => Box::pin(async { Err(Failure::no_versions()) }),
        }
    }

    fn check_access(&self) -> Io<'_, ()> {
        if let Some(dav) = &self.dav {
            return Box::pin(dav.check_access());
        }
        match &self.s3 {
            Some(s3) if s3.locks() => Box::pin(async move {
                let keeping = s3.keeping().await?;
                if keeping.object_lock && keeping.versions {
                    return Ok(());
                }
                Err(Failure::other(
                    super::failure::Retry::Useless,
                    "object_lock is set, but the bucket does not have object lock enabled: \
                     create the bucket with object lock (it cannot be turned on later on every \
                     service), or remove object_lock",
                ))
            }),
            _ => Box::pin(async { Ok(()) }),
        }
    }

    fn endpoint(&self) -> Option<&str> {
        self.endpoint.as_deref()
    }
}

/// An OpenDAL writer (multipart where the service has it).
struct Written(opendal::Writer);

impl Sink for Written {
    fn write(&mut self, chunk: Vec<u8>) -> Io<'_, ()> {
        io(self.0.write(chunk))
    }

    fn close(&mut self) -> Io<'_, ()> {
        io(async move { self.0.close().await.map(|_| ()) })
    }

    fn abort(&mut self) -> Io<'_, ()> {
        io(self.0.abort())
    }
}
