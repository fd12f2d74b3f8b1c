//! `darvault cleanup`: retention on the repository and on destinations that have a `keep`
//! policy, chain-aware (see `policy`). A set is removed manifest first, so an interrupted
//! removal leaves a folder no verb takes for a set. The repository keeps a set until every
//! destination holds it. Also removes staging leftovers (repository) and par2 `.1` files.

pub mod policy;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;

use crate::config::{Config, Keep};
use crate::copy::{FoundSet, Store, folders_above, inside};
use crate::error::{Error, Result};
use crate::set::{Level, MANIFEST, REMOVING, SHA256SUMS};
use crate::state::State;

pub struct Request {
    /// Only these definitions [default: all].
    pub definitions: Vec<String>,
    /// Only these destinations (not the repository) [default: the repository and every
    /// destination with a `keep` policy].
    pub destinations: Vec<String>,
    /// Remove these sets by name too (never one a kept set depends on).
    pub sets: Vec<String>,
    pub dry_run: bool,
    /// FULLs may go without asking.
    pub yes: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub copies: Vec<CopyReport>,
}

#[derive(Debug, Serialize)]
pub struct CopyReport {
    pub copy: String,
    pub removals: Vec<Removal>,
    pub kept: usize,
    /// Staging folders and par2 leftovers removed (or, in a dry run, to remove).
    pub leftovers: Vec<String>,
    pub error: Option<String>,
    /// The sets found there (to tell a `--set` name that matches nothing).
    #[serde(skip)]
    pub found: Vec<String>,
    /// Stopped by SIGINT or SIGTERM: the run ends there (exit 130).
    #[serde(skip)]
    pub interrupted: bool,
    /// Another run held the copy's writer lock (exit 7).
    #[serde(skip)]
    pub busy: bool,
}

#[derive(Debug, Serialize)]
pub struct Removal {
    pub set: String,
    pub reason: String,
    pub bytes: u64,
    /// Removed (false in a dry run, or when the removal was refused: see `refused`).
    pub removed: bool,
    pub refused: Option<String>,
}

impl Report {
    pub fn freed_bytes(&self) -> u64 {
        let counted = |r: &&Removal| r.removed || (self.dry_run && r.refused.is_none());
        self.copies
            .iter()
            .flat_map(|c| c.removals.iter().filter(counted))
            .map(|r| r.bytes)
            .sum()
    }

    pub fn failed(&self) -> bool {
        self.copies.iter().any(|c| c.error.is_some())
    }

    /// 0 when every copy was cleaned; 7 when another run held a copy's lock; else 3.
    pub fn exit_code(&self) -> u8 {
        use crate::error::exit;
        if self.copies.iter().any(|c| c.busy) {
            exit::BUSY
        } else if self.failed() {
            exit::PARTIAL
        } else {
            exit::OK
        }
    }
}

/// Asks a person whether FULL sets may go (None: nobody to ask).
pub type Confirm<'a> = crate::progress::Ask<'a>;

pub fn run(config: &Config, req: &Request, confirm: Confirm) -> Result<Report> {
    for d in &req.destinations {
        let dest = config
            .destinations
            .iter()
            .find(|x| x.name() == d)
            .ok_or_else(|| Error::Usage(format!("no destination named {d:?} in the config")))?;
        if dest.keep.is_none() {
            return Err(Error::Usage(format!(
                "destination {d:?} has no `keep` policy: cleanup never deletes there without one"
            )));
        }
    }
    let state = State::open(&config.state_dir())?;
    let rt = crate::copy::runtime()?;
    let mut copies = Vec::new();
    if req.destinations.is_empty() {
        let _lock = crate::lock::lock_repository(config.repository.path())?;
        let store = Store::for_path(config.repository.path())?;
        let mut report = clean_copy(config, req, &rt, &state, &store, None, confirm);
        if let Err(e) = clean_staging(config, req, &mut report) {
            report.error = Some(e.to_string());
        }
        copies.push(report);
    }
    for dest in &config.destinations {
        let Some(keep) = &dest.keep else { continue };
        if !req.destinations.is_empty() && !req.destinations.iter().any(|d| d == dest.name()) {
            continue;
        }
        let report = Store::open(dest)
            .and_then(|store| {
                let _locks = store.writer_locks(Some(config))?;
                let copy_lock = rt.block_on_stoppable(store.take_copy_lock("cleanup"))?;
                let report = clean_copy(config, req, &rt, &state, &store, Some(keep), confirm);
                if let Some(lock) = copy_lock {
                    let ended = match &report.error {
                        Some(_) if report.interrupted => Err(Error::Interrupted),
                        _ => Ok(()),
                    };
                    rt.block_on(lock.release(&ended));
                }
                Ok(report)
            })
            .unwrap_or_else(|e| CopyReport {
                copy: format!("destination {}", dest.name()),
                removals: Vec::new(),
                kept: 0,
                leftovers: Vec::new(),
                error: Some(e.to_string()),
                found: Vec::new(),
                interrupted: matches!(e, Error::Interrupted),
                busy: matches!(e, Error::Busy { .. }),
            });
        copies.push(report);
    }
    if copies.iter().any(|c| c.interrupted) {
        return Err(Error::Interrupted);
    }
    // A set named on the command line that no copy holds is a mistake to say, not a no-op.
    for named in &req.sets {
        if !copies.iter().any(|c| c.found.contains(named)) {
            return Err(Error::Usage(format!(
                "no set named {named:?} on the copies cleaned (see `darvault list`)"
            )));
        }
    }
    let report = Report {
        dry_run: req.dry_run,
        copies,
    };
    if !req.dry_run {
        crate::notify::finish(Some(config), Some(&state), report.ending());
    }
    Ok(report)
}

impl Report {
    fn ending(&self) -> crate::notify::Ending {
        let now = jiff::Timestamp::now();
        let runs: Vec<crate::state::Run> = self
            .copies
            .iter()
            .map(|c| crate::state::Run {
                command: "cleanup".into(),
                subject: c.copy.clone(),
                level: None,
                set_name: None,
                outcome: match c.error {
                    Some(_) => crate::state::RunOutcome::Failed,
                    None => crate::state::RunOutcome::Ok,
                },
                started_at: now,
                seconds: 0.0,
                bytes: c
                    .removals
                    .iter()
                    .filter(|r| r.removed)
                    .map(|r| r.bytes)
                    .sum(),
                details: serde_json::to_value(c).unwrap_or_default(),
            })
            .collect();
        let lines = self
            .copies
            .iter()
            .map(|c| {
                let removed: Vec<&str> = c
                    .removals
                    .iter()
                    .filter(|r| r.removed)
                    .map(|r| r.set.as_str())
                    .collect();
                match &c.error {
                    Some(e) => format!("{}: FAILED: {e}", c.copy),
                    None => format!("{}: removed {}", c.copy, removed.join(", ")),
                }
            })
            .collect();
        crate::notify::Ending {
            event: if self.failed() {
                crate::config::Event::Failure
            } else {
                crate::config::Event::Success
            },
            title: format!(
                "cleanup: {} freed",
                crate::config::human_bytes(self.freed_bytes())
            ),
            lines,
            runs,
        }
    }
}

/// One copy: `keep` is the destination's policy, None for the repository (each
/// definition's own).
fn clean_copy(
    config: &Config,
    req: &Request,
    rt: &crate::copy::Runtime,
    state: &State,
    store: &Store,
    keep: Option<&Keep>,
    confirm: Confirm,
) -> CopyReport {
    let mut report = CopyReport {
        copy: store.label(),
        removals: Vec::new(),
        kept: 0,
        leftovers: Vec::new(),
        error: None,
        found: Vec::new(),
        interrupted: false,
        busy: false,
    };
    let now = jiff::ZonedDateTime::now();
    for definition in &config.definitions {
        let name = definition.name().as_str();
        if !req.definitions.is_empty() && !req.definitions.iter().any(|d| d == name) {
            continue;
        }
        let is_destination = keep.is_some();
        let result = rt.block_on_stoppable(async {
            let found = store.sets(name).await?;
            let keep = keep.unwrap_or(&definition.keep);
            let candidates: Vec<policy::Candidate> = found
                .sets
                .iter()
                .map(|s| policy::Candidate {
                    name: &s.manifest.set.name,
                    level: s.manifest.set.level,
                    created: s.manifest.set.created,
                    chain: &s.manifest.set.chain,
                })
                .collect();
            report
                .found
                .extend(found.sets.iter().map(|s| s.manifest.set.name.clone()));
            let mut verdicts = policy::judge(&candidates, keep, &now);
            named_removals(&mut verdicts, &found.sets, &req.sets);
            for (set, verdict) in found.sets.iter().zip(verdicts) {
                if !verdict.remove {
                    report.kept += 1;
                    continue;
                }
                let removal = remove_set(
                    config,
                    req,
                    state,
                    store,
                    is_destination,
                    set,
                    verdict,
                    confirm,
                )
                .await?;
                report.removals.push(removal);
            }
            report
                .leftovers
                .extend(par2_leftovers(req, store, name, &found.sets).await?);
            for dir in &found.removing {
                report
                    .leftovers
                    .push(finish_removal(req, store, dir).await?);
                let set = Path::new(dir).file_name().map(|n| n.to_string_lossy());
                if let (false, false, Some(set)) = (is_destination, req.dry_run, set) {
                    remove_par2_copy(config, name, &set).await;
                }
            }
            Ok::<_, Error>(())
        });
        if let Err(e) = result {
            report.interrupted = matches!(e, Error::Interrupted);
            report.error = Some(format!("{name}: {e}"));
            if report.interrupted {
                break;
            }
        }
    }
    report
}

/// Sets named on the command line go too, unless a kept set needs them.
fn named_removals(verdicts: &mut [policy::Verdict], sets: &[FoundSet], named: &[String]) {
    for i in 0..verdicts.len() {
        if !named.contains(&verdicts[i].set) || verdicts[i].remove {
            continue;
        }
        let needed_by = sets
            .iter()
            .zip(verdicts.iter())
            .find(|(s, v)| !v.remove && s.manifest.set.chain.contains(&verdicts[i].set));
        match needed_by {
            Some((s, _)) => {
                verdicts[i].reason = format!("named, but {} depends on it", s.manifest.set.name)
            }
            None => {
                verdicts[i].remove = true;
                verdicts[i].reason = "named on the command line".into();
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn remove_set(
    config: &Config,
    req: &Request,
    state: &State,
    store: &Store,
    is_destination: bool,
    set: &FoundSet,
    verdict: policy::Verdict,
    confirm: Confirm<'_>,
) -> Result<Removal> {
    let mut removal = Removal {
        set: verdict.set,
        reason: verdict.reason,
        bytes: set.manifest.files.iter().map(|f| f.size).sum(),
        removed: false,
        refused: None,
    };
    if !is_destination {
        for dest in &config.destinations {
            if !state.is_complete(dest.name(), &removal.set, &set.manifest_sha256)? {
                removal.refused = Some(format!(
                    "not yet replicated to {}: run `darvault replicate` first",
                    dest.name()
                ));
                return Ok(removal);
            }
        }
    }
    if set.manifest.set.level == Level::Full && !req.yes && !req.dry_run {
        let question = format!(
            "remove the FULL set {} from {}?",
            removal.set,
            store.label()
        );
        if !confirm.is_some_and(|ask| ask(&question)) {
            removal.refused = Some("a FULL: confirm, or pass --yes".into());
            return Ok(removal);
        }
    }
    if req.dry_run {
        return Ok(removal);
    }
    let dir = store.location(set);
    // The intent first: an interrupted removal is finished by the next cleanup, and no
    // audit heals the folder back into a set.
    let why = format!("removed by darvault cleanup: {}\n", removal.reason);
    store
        .write_small(&format!("{dir}/{REMOVING}"), why.into_bytes())
        .await?;
    // Then the manifest: from then on no verb takes the folder for a set.
    for file in [MANIFEST, SHA256SUMS] {
        store.remove(&format!("{dir}/{file}")).await?;
    }
    store.remove_folder_last(&dir, Some(REMOVING)).await?;
    tracing::info!(set = %removal.set, copy = %store.label(), "removed: {}", removal.reason);
    if is_destination {
        state.forget_sent(&store.name, &removal.set)?;
    } else {
        let made = &set.manifest.set;
        remove_par2_copy(config, &made.definition, &made.name).await;
    }
    removal.removed = true;
    Ok(removal)
}

/// The set's folder in its definition's `par2_dir` goes with the set (a disk that is not
/// there today keeps it: it is only PAR2 files and a manifest, and is said in the log).
async fn remove_par2_copy(config: &Config, definition: &str, set: &str) {
    let Some(dir) = config
        .definitions
        .iter()
        .find(|d| d.name().as_str() == definition)
        .and_then(|d| d.par2_dir.as_ref())
    else {
        return;
    };
    let folder = format!("{definition}/{set}");
    let removed = match Store::for_path(dir.path()) {
        Ok(par2) => match par2.is_folder(&folder) {
            Ok(true) => par2.remove_folder(&folder).await,
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    if let Err(e) = removed {
        tracing::warn!(set, "its PAR2 copy in {} stays: {e}", dir.path().display());
    }
}

/// Finish the removal an interrupted cleanup began (the folder holds its marker).
async fn finish_removal(req: &Request, store: &Store, dir: &str) -> Result<String> {
    let relative = store.relative(Path::new(dir));
    if !req.dry_run {
        store.remove_folder_last(&relative, Some(REMOVING)).await?;
    }
    Ok(format!("{relative} (the rest of an interrupted removal)"))
}

/// par2 keeps a damaged original as `<file>.1` after a repair: once the set is whole again
/// (audit proves it), those are clutter. The definition's folder is listed once, not each
/// set's (thousands of listings were most of a dry run's time).
async fn par2_leftovers(
    req: &Request,
    store: &Store,
    definition: &str,
    sets: &[FoundSet],
) -> Result<Vec<String>> {
    let by_location: HashMap<String, &FoundSet> =
        sets.iter().map(|s| (store.location(s), s)).collect();
    let mut removed = Vec::new();
    for (path, is_dir) in store.walk(&format!("{definition}/")).await? {
        let Some(original) = path.strip_suffix(".1").filter(|_| !is_dir) else {
            continue;
        };
        let is_leftover = folders_above(original).any(|dir| {
            by_location.get(dir).is_some_and(|set| {
                let file = inside(dir, original);
                set.manifest.files.iter().any(|f| f.path == file)
            })
        });
        if !is_leftover {
            continue;
        }
        if !req.dry_run {
            store.remove(&path).await?;
        }
        removed.push(path);
    }
    Ok(removed)
}

/// Staging folders of interrupted backups in the repository (under its lock).
fn clean_staging(config: &Config, req: &Request, report: &mut CopyReport) -> Result<()> {
    for definition in &config.definitions {
        let dir = config.repository.path().join(definition.name().as_str());
        let stale = stale_staging(&dir)?;
        if !req.dry_run {
            crate::set::staging::clean_stale(&dir)?;
        }
        report.leftovers.extend(stale);
    }
    Ok(())
}

fn stale_staging(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("cannot read", dir)(e)),
    };
    Ok(entries
        .flatten()
        .filter(|e| crate::set::staging::is_staging(&e.file_name().to_string_lossy()))
        .map(|e| e.path().display().to_string())
        .collect())
}
