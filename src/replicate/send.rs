//! Sending the files of one set: streamed, hashed on the way, size-checked after close,
//! optionally read back; memory bounded by chunk size × parts in flight × files at once.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::DESCRIPTORS;
use crate::copy::{Expected, FoundSet, Limiter, Store};
use crate::error::{Error, Result};
use crate::hashing::sha256_hex;
use crate::parallel::Bounded;
use crate::progress::Task;
use crate::set::{MANIFEST, WRITING};
use crate::state::State;

pub struct SetJob {
    pub store: Arc<Store>,
    pub destination: String,
    pub set: FoundSet,
    /// `<definition>/<set>` on the destination.
    pub remote_dir: String,
    pub state: Arc<State>,
    pub limiter: Arc<Limiter>,
    pub task: Arc<dyn Task>,
    pub concurrency: usize,
    pub readback: bool,
}

/// One file to send and what it must turn out to be.
#[derive(Clone)]
struct Upload {
    local: PathBuf,
    remote: String,
    sha256: String,
    size: u64,
    executable: bool,
    part: Option<u64>,
}

/// Every folder the files at `paths` (relative to a set) are in, each after the one it is in:
/// "" (the set's own), "bundle", "bundle/x86_64", …
fn folders_of<'a>(paths: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut folders = std::collections::BTreeSet::from([String::new()]);
    for path in paths {
        let mut at = 0;
        while let Some(slash) = path[at..].find('/') {
            at += slash;
            folders.insert(path[..at].to_owned());
            at += 1;
        }
    }
    // Sorted by name, a folder comes before the folders in it.
    folders.into_iter().collect()
}

impl SetJob {
    /// Write the record of the set being written, then send every file the manifest lists
    /// that is not on the destination yet, `concurrency` at a time. Returns (files, bytes)
    /// sent.
    pub async fn send_files(&self) -> Result<(u64, u64)> {
        if self.store.has_folders() {
            // Concurrent uploads would otherwise race to create the same folders.
            for dir in folders_of(self.set.manifest.files.iter().map(|f| f.path.as_str())) {
                let dir = match dir.is_empty() {
                    true => format!("{}/", self.remote_dir),
                    false => format!("{}/{dir}/", self.remote_dir),
                };
                self.store.make_dir(&dir).await?;
            }
        }
        // Known for what it is if cut short: a set being written, which the next run
        // finishes; never damage.
        let record = format!(
            "being copied here by darvault replicate from {} since {}\n",
            crate::host_name(),
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .unwrap_or_default()
        );
        self.store
            .write_small(&self.record(), record.into_bytes())
            .await?;
        let mut running = Bounded::new(self.concurrency);
        let name = &self.set.manifest.set.name;
        // The first failure stops what has not started: a full disk or a dead server fails
        // every later file the same way.
        let failed = Arc::new(AtomicBool::new(false));
        for f in &self.set.manifest.files {
            if failed.load(Ordering::Relaxed) {
                break;
            }
            let remote = format!("{}/{}", self.remote_dir, f.path);
            if self
                .state
                .was_sent(&self.destination, name, &f.path, &f.sha256)?
                && self.remote_size(&remote).await? == Some(f.size)
            {
                self.task.advance(f.size);
                continue;
            }
            let upload = Upload {
                local: self.set.dir.join(&f.path),
                remote,
                sha256: f.sha256.clone(),
                size: f.size,
                executable: f.is_program(),
                part: f.parts.as_ref().map(|p| p.size),
            };
            let (store, limiter, task, state) = (
                Arc::clone(&self.store),
                Arc::clone(&self.limiter),
                Arc::clone(&self.task),
                Arc::clone(&self.state),
            );
            let (destination, set, path, readback, failed) = (
                self.destination.clone(),
                name.clone(),
                f.path.clone(),
                self.readback,
                Arc::clone(&failed),
            );
            running
                .spawn(async move {
                    // It waited for a place another file left by failing: not begun (each
                    // file begun after a failure waited its own stall deadline again).
                    if failed.load(Ordering::Relaxed) {
                        return Ok(None);
                    }
                    let sent = send(&store, &upload, &limiter, task.as_ref(), readback).await;
                    if sent.is_err() {
                        failed.store(true, Ordering::Relaxed);
                    }
                    sent?;
                    state.file_sent(&destination, &set, &path, &upload.sha256, upload.size)?;
                    Ok::<Option<u64>, Error>(Some(upload.size))
                })
                .await;
        }
        let (mut files, mut bytes, mut first_error) = (0, 0, None);
        while let Some(sent) = running.next().await {
            match sent {
                Ok(Some(size)) => {
                    files += 1;
                    bytes += size;
                }
                Ok(None) => {}
                Err(e) => {
                    // The others would only meet the same server (or disk) and each wait
                    // its own deadline: stopped now. What they began stays under temporary
                    // names, as after a kill, and is sent again next time.
                    running.abort_all();
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok((files, bytes)),
        }
    }

    /// Send SHA256SUMS, then MANIFEST.toml (which must still hash to what was read when the
    /// set was found), remove the record of the set being written, and note the set as
    /// complete.
    pub async fn finish(&self) -> Result<()> {
        for name in DESCRIPTORS {
            let local = self.set.dir.join(name);
            let bytes = std::fs::read(&local).map_err(Error::io("cannot read", &local))?;
            let sha256 = sha256_hex(&bytes);
            if name == MANIFEST && sha256 != self.set.manifest_sha256 {
                return Err(Error::Failed(format!(
                    "{} changed while being replicated: run darvault audit on the repository",
                    local.display()
                )));
            }
            let upload = Upload {
                local,
                remote: format!("{}/{name}", self.remote_dir),
                sha256,
                size: bytes.len() as u64,
                executable: false,
                part: None,
            };
            send(
                &self.store,
                &upload,
                &self.limiter,
                self.task.as_ref(),
                self.readback,
            )
            .await?;
        }
        // The manifest is there: the set is complete, its record of being written goes.
        self.store.remove(&self.record()).await?;
        self.state.set_complete(
            &self.destination,
            &self.set.manifest.set.name,
            &self.set.manifest_sha256,
        )
    }

    /// Where the record of the set being written is.
    fn record(&self) -> String {
        format!("{}/{WRITING}", self.remote_dir)
    }

    async fn remote_size(&self, path: &str) -> Result<Option<u64>> {
        self.store.size_of(path).await
    }
}

async fn send(
    store: &Store,
    u: &Upload,
    limiter: &Limiter,
    task: &dyn Task,
    readback: bool,
) -> Result<()> {
    let expected = Expected {
        size: u.size,
        sha256: &u.sha256,
        executable: u.executable,
        part: u.part,
    };
    store
        .put_file(&u.local, &u.remote, &expected, limiter, task, readback)
        .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn folders_come_before_the_folders_in_them() {
        let paths = [
            "a.1.dar",
            "bundle/RESTORE.txt",
            "bundle/x86_64/dar_static",
            "bundle/aarch64/par2",
        ];
        assert_eq!(
            super::folders_of(paths.into_iter()),
            ["", "bundle", "bundle/aarch64", "bundle/x86_64"]
        );
    }
}
