//! `darvault replicate`: copy every published set that a destination does not hold yet.
//!
//! Per set, its files go first (slices, PAR2, catalogue, bundle) and then SHA256SUMS and
//! MANIFEST.toml, the manifest last: a copy without a manifest is never taken for a set.
//! Each file is hashed while it streams out and must match the manifest (a file damaged in
//! the repository is never spread), and the destination must report the right size after
//! close. What was sent and verified is recorded in the state database, so a re-run after a
//! kill, a crash or a lost server sends only what is missing. Nothing is ever deleted.

mod send;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Instant;

use serde::Serialize;

use crate::config::{Config, Destination, human_bytes};
use crate::copy::{FoundSet, LocalCopy, Store};
use crate::error::{Error, Result, exit};
use crate::progress::{Progress, Task};
use crate::set::{MANIFEST, SHA256SUMS};
use crate::state::State;

pub use crate::copy::Limiter;

#[derive(Debug, Serialize)]
pub struct Report {
    pub destinations: Vec<DestinationOutcome>,
}

#[derive(Debug, Serialize)]
pub struct DestinationOutcome {
    pub destination: String,
    #[serde(flatten)]
    pub result: Outcome,
}

#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Done(Summary),
    Failed { error: String, exit_code: u8 },
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Sets sent (completed) by this run.
    pub sent: Vec<String>,
    /// Sets the destination held already.
    pub present: usize,
    pub files_sent: u64,
    pub bytes_sent: u64,
    /// Sets whose locks were checked and lengthened where due (`lock_retention = "keep"`).
    pub locks_renewed: u64,
    /// Sets whose locks could not be lengthened (the log says why).
    pub locks_not_renewed: u64,
    pub seconds: f64,
}

impl Report {
    pub fn exit_code(&self) -> u8 {
        let failed: Vec<u8> = self
            .destinations
            .iter()
            .filter_map(|d| match &d.result {
                Outcome::Failed { exit_code, .. } => Some(*exit_code),
                Outcome::Done(_) => None,
            })
            .collect();
        exit::of_units(&failed, self.destinations.len())
    }
}

/// Replicate the named definitions (all when empty) to the named destinations (all when
/// empty). Destinations are handled one after another; one failing never stops the others.
pub fn run(
    config: &Config,
    destinations: &[String],
    definitions: &[String],
    progress: &dyn Progress,
) -> Result<Report> {
    let destinations = config.select_destinations(destinations)?;
    let repository = LocalCopy::new(config.repository.path());
    let mut sets = Vec::new();
    for d in config.select(definitions)? {
        let found = repository.sets(d.name().as_str())?;
        for p in &found.problems {
            tracing::warn!("{p}");
        }
        sets.extend(found.sets);
    }
    let state = Arc::new(State::open(&config.state_dir())?);
    let rt = crate::copy::runtime()?;
    let mut report = Report {
        destinations: Vec::new(),
    };
    let mut runs = Vec::new();
    for dest in destinations {
        let started = jiff::Timestamp::now();
        let outcome = rt.block_on_stoppable(to_destination(config, dest, &sets, &state, progress));
        let result = match outcome {
            Ok(summary) => Outcome::Done(summary),
            Err(e) => {
                // The report says it on stdout; the log keeps it too.
                tracing::info!(destination = dest.name(), "replication failed: {e}");
                Outcome::Failed {
                    error: e.to_string(),
                    exit_code: e.exit_code(),
                }
            }
        };
        let interrupted =
            matches!(&result, Outcome::Failed { exit_code, .. } if *exit_code == exit::INTERRUPTED);
        runs.push(crate::state::Run {
            command: "replicate".into(),
            subject: dest.name().to_owned(),
            level: None,
            set_name: None,
            outcome: match &result {
                Outcome::Done(_) => crate::state::RunOutcome::Ok,
                Outcome::Failed { .. } => crate::state::RunOutcome::Failed,
            },
            started_at: started,
            seconds: (jiff::Timestamp::now() - started).as_secs_f64(),
            bytes: match &result {
                Outcome::Done(s) => s.bytes_sent,
                Outcome::Failed { .. } => 0,
            },
            details: serde_json::to_value(&result).unwrap_or_default(),
        });
        report.destinations.push(DestinationOutcome {
            destination: dest.name().to_owned(),
            result,
        });
        if interrupted {
            break;
        }
    }
    crate::notify::finish(Some(config), Some(&state), report.ending(runs));
    Ok(report)
}

impl Report {
    fn ending(&self, runs: Vec<crate::state::Run>) -> crate::notify::Ending {
        let lines: Vec<String> = self
            .destinations
            .iter()
            .map(|d| match &d.result {
                Outcome::Done(s) => format!(
                    "{}: {} set(s) sent ({}), {} already there",
                    d.destination,
                    s.sent.len(),
                    crate::config::human_bytes(s.bytes_sent),
                    s.present
                ),
                Outcome::Failed { error, .. } => format!("{}: FAILED: {error}", d.destination),
            })
            .collect();
        let failed = runs
            .iter()
            .filter(|r| r.outcome == crate::state::RunOutcome::Failed)
            .count();
        crate::notify::Ending {
            event: if failed == 0 {
                crate::config::Event::Success
            } else {
                crate::config::Event::Failure
            },
            title: format!(
                "replicate: {} of {} destination(s) up to date",
                runs.len() - failed,
                runs.len()
            ),
            lines,
            runs,
        }
    }
}

/// Where a set lives on every copy: `<definition>/<set name>`.
fn set_path(set: &FoundSet) -> String {
    format!("{}/{}", set.manifest.set.definition, set.manifest.set.name)
}

async fn to_destination(
    config: &Config,
    dest: &Destination,
    sets: &[FoundSet],
    state: &Arc<State>,
    progress: &dyn Progress,
) -> Result<Summary> {
    let began = Instant::now();
    let remote = Arc::new(Store::open(dest)?);
    remote.check_access().await?;
    remote.check_marker(dest).await?;
    let _locks = remote.writer_locks(Some(config))?;
    let copy_lock = remote.take_copy_lock("replicate").await?;
    let sent = send_missing(dest, sets, state, progress, &remote, began).await;
    if let Some(lock) = copy_lock {
        lock.release(&sent).await;
    }
    sent
}

/// The sets `dest` lacks, sent (under its writer locks).
async fn send_missing(
    dest: &Destination,
    sets: &[FoundSet],
    state: &Arc<State>,
    progress: &dyn Progress,
    remote: &Arc<Store>,
    began: Instant,
) -> Result<Summary> {
    let one_shot = remote.takes_one_piece();
    let single_write_cap = dest.max_single_write.map(|b| b.0).unwrap_or(1 << 30);
    let concurrency = dest
        .concurrency
        .unwrap_or(dest.kind.default_concurrency())
        .max(1);

    // Plan: which sets are complete already, and how many bytes the rest need.
    let mut todo = Vec::new();
    let mut summary = Summary::default();
    let mut total = 0u64;
    for set in sets {
        if is_present(remote, dest.name(), set, state).await? {
            summary.present += 1;
            continue;
        }
        if one_shot
            && let Some(big) = set
                .manifest
                .files
                .iter()
                .find(|f| f.size > single_write_cap)
        {
            return Err(Error::Failed(format!(
                "destination {:?}: {} takes each file in one piece (held in memory), and {}/{} is {} (max_single_write = {}): use smaller slices for this definition, or raise max_single_write",
                dest.name(),
                dest.kind,
                set_path(set),
                big.path,
                human_bytes(big.size),
                human_bytes(single_write_cap)
            )));
        }
        total += set.manifest.total_size();
        todo.push(set);
    }
    // Before any sending: a set that fails to send does not keep the others' locks short.
    (summary.locks_renewed, summary.locks_not_renewed) =
        renew_locks(remote, dest.name(), sets, state).await?;
    let task: Arc<dyn Task> =
        Arc::from(progress.start(&format!("replicate to {}", dest.name()), Some(total)));
    let limiter = Arc::new(Limiter::new(dest.bandwidth_limit.map(|b| b.0)));
    for set in todo {
        let job = send::SetJob {
            store: Arc::clone(remote),
            destination: dest.name().to_owned(),
            set: set.clone(),
            remote_dir: set_path(set),
            state: Arc::clone(state),
            limiter: Arc::clone(&limiter),
            task: Arc::clone(&task),
            concurrency,
            readback: dest.verify_readback,
        };
        let (files, bytes) = job.send_files().await?;
        job.finish().await?;
        tracing::info!(destination = dest.name(), set = %set.name, files, bytes, "replicated");
        summary.files_sent += files;
        summary.bytes_sent += bytes;
        summary.sent.push(set.manifest.set.name.clone());
    }
    summary.seconds = began.elapsed().as_secs_f64();
    Ok(summary)
}

/// Lengthen the locks of the sets on this copy that are still kept (in the repository and
/// complete there, or lengthened from here before), where less than half of what they are
/// due is left (as this machine last saw them; else the copy is asked): the sets checked
/// and lengthened where due. A set whose locks cannot be lengthened is named in the log and
/// does not fail the run.
async fn renew_locks(
    remote: &Store,
    destination: &str,
    sets: &[FoundSet],
    state: &State,
) -> Result<(u64, u64)> {
    if remote.lock_target("").is_none() {
        return Ok((0, 0));
    }
    let now = jiff::Timestamp::now();
    let mut known: Vec<(String, String, Option<Vec<String>>)> = Vec::new();
    for set in sets {
        let name = &set.manifest.set.name;
        if state.is_complete(destination, name, &set.manifest_sha256)? {
            let files = set.manifest.files.iter().map(|f| f.path.clone()).collect();
            known.push((set_path(set), name.clone(), Some(files)));
        }
    }
    for name in state.locked_sets(destination)? {
        let Ok(parsed) = name.parse::<crate::set::SetName>() else {
            continue;
        };
        if !known.iter().any(|(_, n, _)| *n == name) {
            known.push((format!("{}/{name}", parsed.definition), name, None));
        }
    }
    let (mut renewed, mut failed) = (0, 0);
    for (dir, name, files) in known {
        let Some(target) = remote.lock_target(&dir) else {
            return Ok((0, 0));
        };
        let until = state.locked_until(destination, &name)?;
        if until.is_some_and(|until| !crate::copy::renewal_due(until, target, now)) {
            continue;
        }
        let files = match files {
            Some(files) => files,
            None => match remote.read_small(&format!("{dir}/{MANIFEST}")).await? {
                Some(bytes) => match crate::set::Manifest::parse_for(&bytes, &name) {
                    Some(m) => m.files.iter().map(|f| f.path.clone()).collect(),
                    None => continue,
                },
                // Removed from the copy (by another machine's cleanup): nothing to keep.
                None => {
                    state.forget_locked(destination, &name)?;
                    continue;
                }
            },
        };
        match remote.renew_locks(&dir, &files).await {
            Ok(Some(until)) => {
                state.locked(destination, &name, until)?;
                renewed += 1;
            }
            Ok(None) => {}
            Err(e @ (Error::Interrupted | Error::Stalled { .. })) => return Err(e),
            Err(e) => {
                tracing::warn!("{destination}: the locks of {name} were not lengthened: {e}");
                failed += 1;
            }
        }
    }
    Ok((renewed, failed))
}

/// Complete on the destination: recorded as sent with this manifest, and the manifest is
/// still there with its size (a wiped disk or bucket is noticed without reading data).
async fn is_present(
    remote: &Store,
    destination: &str,
    set: &FoundSet,
    state: &State,
) -> Result<bool> {
    if !state.is_complete(destination, &set.manifest.set.name, &set.manifest_sha256)? {
        return Ok(false);
    }
    let manifest_len = std::fs::metadata(set.dir.join(MANIFEST))
        .map(|m| m.len())
        .ok();
    let there = remote
        .size_of(&format!("{}/{MANIFEST}", set_path(set)))
        .await?;
    Ok(there.is_some() && there == manifest_len)
}

/// The two files that describe a set, sent after everything they describe.
pub const DESCRIPTORS: [&str; 2] = [SHA256SUMS, MANIFEST];
