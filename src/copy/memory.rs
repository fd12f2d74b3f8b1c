//! A copy's storage in memory that fails on demand: the Nth call of a request fails
//! (temporarily, for good, with a full disk), never answers, takes fewer bytes than sent,
//! changes them, or finds its file gone. With it the unit tests put `Store`'s policies (one
//! deadline, the retry budget, temporary names, proof after upload, removal last, the lock)
//! through each failure without a server; the real servers stay in the integration tests.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use super::backend::{Backend, Capabilities, Entry, Failure, FailureKind, Io, Sink};
use super::failure::Retry;

/// The requests a fault can be planned on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Call {
    Stat,
    Exists,
    Read,
    ReadRange,
    Write,
    CreateNew,
    Writer,
    /// One chunk into a writer.
    Chunk,
    Close,
    Rename,
    Remove,
    RemoveAll,
    MakeDir,
    List,
}

/// What a planned call meets.
#[derive(Debug, Clone)]
pub enum Fault {
    /// A failure that may pass (a reset connection, a 503).
    Temporary,
    /// A failure that will not (access denied).
    Permanent,
    /// No space left on the server's disk.
    NoSpace,
    /// No answer, ever.
    Stall,
    /// The chunk is taken short by one byte, and the call says nothing.
    ShortWrite,
    /// The chunk's first byte is changed on the way, and the call says nothing.
    Corrupt,
    /// Just before the call, another writer puts `bytes` at `path`.
    Raced { path: String, bytes: Vec<u8> },
}

#[derive(Default)]
struct State {
    files: BTreeMap<String, Vec<u8>>,
    /// (call, its number counted from 1, what it meets)
    planned: Vec<(Call, usize, Fault)>,
    calls: BTreeMap<Call, usize>,
}

pub struct Memory {
    state: Mutex<State>,
    capabilities: Capabilities,
}

impl Memory {
    pub fn new(capabilities: Capabilities) -> Arc<Memory> {
        Arc::new(Memory {
            state: Mutex::new(State::default()),
            capabilities,
        })
    }

    /// The `nth` call of `call` (counted from 1, from now on) meets `fault`.
    pub fn plan(&self, call: Call, nth: usize, fault: Fault) {
        let mut state = self.state.lock().unwrap();
        let done = state.calls.get(&call).copied().unwrap_or(0);
        state.planned.push((call, done + nth, fault));
    }

    pub fn put(&self, path: &str, bytes: &[u8]) {
        let mut state = self.state.lock().unwrap();
        state.files.insert(path.to_owned(), bytes.to_vec());
    }

    pub fn get(&self, path: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().files.get(path).cloned()
    }

    pub fn paths(&self) -> Vec<String> {
        self.state.lock().unwrap().files.keys().cloned().collect()
    }

    /// How many times `call` was made.
    pub fn calls(&self, call: Call) -> usize {
        self.state
            .lock()
            .unwrap()
            .calls
            .get(&call)
            .copied()
            .unwrap_or(0)
    }

    /// Count the call; fail it as planned, or give the fault it must apply itself.
    async fn enter(&self, call: Call) -> Result<Option<Fault>, Failure> {
        let fault = {
            let mut state = self.state.lock().unwrap();
            let n = {
                let count = state.calls.entry(call).or_insert(0);
                *count += 1;
                *count
            };
            let at = state
                .planned
                .iter()
                .position(|(c, nth, _)| *c == call && *nth == n);
            at.map(|at| state.planned.remove(at).2)
        };
        match fault {
            Some(Fault::Temporary) => Err(Failure::other(Retry::Helps, "connection reset")),
            Some(Fault::Permanent) => Err(Failure::other(Retry::Useless, "access denied")),
            Some(Fault::NoSpace) => Err(Failure::of_io(&std::io::Error::from_raw_os_error(
                libc::ENOSPC,
            ))),
            Some(Fault::Stall) => std::future::pending().await,
            Some(Fault::Raced { path, bytes }) => {
                self.put(&path, &bytes);
                Ok(None)
            }
            other => Ok(other),
        }
    }

    fn file(&self, path: &str) -> Result<Vec<u8>, Failure> {
        self.get(path)
            .ok_or_else(|| Failure::not_found(format!("{path}: not found")))
    }
}

fn folder(dir: &str) -> String {
    match dir.trim_matches('/') {
        "" => String::new(),
        d => format!("{d}/"),
    }
}

impl Backend for Memory {
    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn stat<'a>(&'a self, path: &'a str) -> Io<'a, u64> {
        Box::pin(async move {
            self.enter(Call::Stat).await?;
            Ok(self.file(path)?.len() as u64)
        })
    }

    fn exists<'a>(&'a self, path: &'a str) -> Io<'a, bool> {
        Box::pin(async move {
            self.enter(Call::Exists).await?;
            Ok(self.get(path).is_some())
        })
    }

    fn read<'a>(&'a self, path: &'a str) -> Io<'a, Vec<u8>> {
        Box::pin(async move {
            self.enter(Call::Read).await?;
            self.file(path)
        })
    }

    fn read_range<'a>(&'a self, path: &'a str, range: Range<u64>) -> Io<'a, Vec<u8>> {
        Box::pin(async move {
            self.enter(Call::ReadRange).await?;
            let bytes = self.file(path)?;
            let end = (range.end as usize).min(bytes.len());
            let start = (range.start as usize).min(end);
            Ok(bytes[start..end].to_vec())
        })
    }

    fn write<'a>(&'a self, path: &'a str, bytes: Vec<u8>) -> Io<'a, ()> {
        Box::pin(async move {
            self.enter(Call::Write).await?;
            self.put(path, &bytes);
            Ok(())
        })
    }

    fn create_new<'a>(&'a self, path: &'a str, bytes: Vec<u8>) -> Io<'a, ()> {
        Box::pin(async move {
            self.enter(Call::CreateNew).await?;
            let mut state = self.state.lock().unwrap();
            if state.files.contains_key(path) {
                return Err(Failure {
                    kind: FailureKind::AlreadyThere,
                    retry: Retry::Useless,
                    cause: format!("{path}: already there"),
                });
            }
            state.files.insert(path.to_owned(), bytes);
            Ok(())
        })
    }

    fn writer<'a>(
        &'a self,
        path: &'a str,
        _size: u64,
        _sha256: &'a str,
        _part: Option<u64>,
    ) -> Io<'a, Box<dyn Sink + 'a>> {
        Box::pin(async move {
            self.enter(Call::Writer).await?;
            let sink: Box<dyn Sink + 'a> = Box::new(Upload {
                memory: self,
                path: path.to_owned(),
                bytes: Vec::new(),
            });
            Ok(sink)
        })
    }

    fn rename<'a>(&'a self, from: &'a str, to: &'a str) -> Io<'a, ()> {
        Box::pin(async move {
            self.enter(Call::Rename).await?;
            let mut state = self.state.lock().unwrap();
            let bytes = state
                .files
                .remove(from)
                .ok_or_else(|| Failure::not_found(format!("{from}: not found")))?;
            state.files.insert(to.to_owned(), bytes);
            Ok(())
        })
    }

    fn remove<'a>(&'a self, path: &'a str) -> Io<'a, ()> {
        Box::pin(async move {
            self.enter(Call::Remove).await?;
            self.state.lock().unwrap().files.remove(path);
            Ok(())
        })
    }

    fn remove_all<'a>(&'a self, dir: &'a str) -> Io<'a, ()> {
        Box::pin(async move {
            self.enter(Call::RemoveAll).await?;
            let prefix = folder(dir);
            let mut state = self.state.lock().unwrap();
            state.files.retain(|p, _| !p.starts_with(&prefix));
            Ok(())
        })
    }

    fn make_dir<'a>(&'a self, _dir: &'a str) -> Io<'a, ()> {
        Box::pin(async move {
            self.enter(Call::MakeDir).await?;
            Ok(())
        })
    }

    /// As an object store lists: folders are the prefixes of the files under them.
    fn list<'a>(&'a self, dir: &'a str, recursive: bool) -> Io<'a, Vec<Entry>> {
        Box::pin(async move {
            self.enter(Call::List).await?;
            let prefix = folder(dir);
            let state = self.state.lock().unwrap();
            let mut entries = BTreeMap::new();
            for path in state.files.keys() {
                let Some(rest) = path.strip_prefix(&prefix) else {
                    continue;
                };
                let parts: Vec<&str> = rest.split('/').collect();
                let shown = if recursive { parts.len() } else { 1 };
                for depth in 1..=shown {
                    let is_dir = depth < parts.len();
                    let path = format!("{prefix}{}", parts[..depth].join("/"));
                    entries.insert(path, is_dir);
                }
            }
            Ok(entries
                .into_iter()
                .map(|(path, is_dir)| Entry { path, is_dir })
                .collect())
        })
    }
}

/// A file being written into `Memory`: it appears whole at `close`, as an object does.
struct Upload<'a> {
    memory: &'a Memory,
    path: String,
    bytes: Vec<u8>,
}

impl Sink for Upload<'_> {
    fn write(&mut self, mut chunk: Vec<u8>) -> Io<'_, ()> {
        Box::pin(async move {
            match self.memory.enter(Call::Chunk).await? {
                Some(Fault::ShortWrite) => {
                    chunk.pop();
                }
                Some(Fault::Corrupt) => {
                    if let Some(first) = chunk.first_mut() {
                        *first ^= 0xff;
                    }
                }
                _ => {}
            }
            self.bytes.extend_from_slice(&chunk);
            Ok(())
        })
    }

    fn close(&mut self) -> Io<'_, ()> {
        Box::pin(async move {
            self.memory.enter(Call::Close).await?;
            let bytes = std::mem::take(&mut self.bytes);
            self.memory.put(&self.path, &bytes);
            Ok(())
        })
    }

    fn abort(&mut self) -> Io<'_, ()> {
        self.bytes.clear();
        Box::pin(async { Ok(()) })
    }
}

/// A small set in `root` (a folder named after it): two slices of 9 MiB (two chunks each)
/// and a catalogue of pseudo-random bytes, its manifest and SHA256SUMS; as found there.
pub fn a_set_on_disk(root: &std::path::Path) -> super::FoundSet {
    use crate::set::manifest::FileEntry;
    let mut manifest = crate::set::manifest::tests::sample();
    let name = manifest.set.name.clone();
    let dir = root.join(&name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let files = [
        (format!("{name}.1.dar"), 9 << 20),
        (format!("{name}.2.dar"), 9 << 20),
        (format!("{name}.catalog.1.dar"), 4096),
    ];
    manifest.files = files
        .iter()
        .map(|(path, size)| {
            let mut bytes = vec![0u8; *size];
            rng.fill(&mut bytes);
            std::fs::write(dir.join(path), &bytes).unwrap();
            FileEntry {
                path: path.clone(),
                size: *size as u64,
                sha256: crate::hashing::sha256_hex(&bytes),
                role: crate::set::Role::Slice,
                parts: None,
            }
        })
        .collect();
    manifest.archive.slices = 2;
    manifest.par2 = Vec::new();
    manifest.write(&dir).unwrap();
    let bytes = std::fs::read(dir.join(crate::set::MANIFEST)).unwrap();
    super::FoundSet::from_manifest(dir, name.parse().unwrap(), &bytes).unwrap()
}
