//! `darvault audit`: prove every set on a copy against its manifest, and repair in place.
//!
//! A copy is untrusted input: sets are found by their MANIFEST.toml at any depth, manifest
//! paths that could point outside their set are refused, symlinks inside a set are refused,
//! staging leftovers and stray files are reported and never taken for sets. Damage is healed
//! from another copy whose file matches the manifest hash (exact and cheap), else by PAR2 in a
//! scratch directory, and the result must match the manifest hash before it is put back.

mod budget;
mod check;
mod history;
mod portion;
mod repair;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

pub use portion::Portion;

use crate::config::{Config, RepairPolicy};
use crate::copy::Store;
use crate::error::{Error, Result, exit};
use crate::progress::Progress;
use crate::state::{RunOutcome, State};

#[derive(Debug, Clone, Default)]
pub struct Options {
    pub repair: bool,
    pub deep: bool,
    pub definitions: Vec<String>,
    pub portion: Option<Portion>,
}

/// What was found of a file (or of a set, the worst of its files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Ok,
    Repaired,
    /// The data (slices, catalogue) is intact and restores; PAR2 or bundle files are
    /// damaged and could not be healed.
    RedundancyDamaged,
    DamagedRepairable,
    Unrepairable,
}

impl Status {
    /// The status `as_str` names (as the state database keeps it).
    pub fn named(name: &str) -> Option<Status> {
        [
            Status::Ok,
            Status::Repaired,
            Status::RedundancyDamaged,
            Status::DamagedRepairable,
            Status::Unrepairable,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Repaired => "repaired",
            Status::RedundancyDamaged => "redundancy-damaged",
            Status::DamagedRepairable => "damaged-repairable",
            Status::Unrepairable => "unrepairable",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub copies: Vec<CopyReport>,
}

#[derive(Debug, Serialize)]
pub struct CopyReport {
    pub copy: String,
    pub sets: Vec<SetReport>,
    /// Staging leftovers, stray files, unreadable folders: reported, never taken for sets.
    pub problems: Vec<String>,
    /// Set when the copy could not be audited at all.
    pub error: Option<String>,
    /// The exit code of that error (7 when another run held the copy's lock).
    #[serde(skip)]
    pub error_code: u8,
    /// How a remote copy's files were proven: vouched for by the SHA-256 its server keeps,
    /// or read and hashed (bytes downloaded).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof: Option<Proof>,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Proof {
    pub files_vouched_by_server: u64,
    pub bytes_downloaded: u64,
}

#[derive(Debug, Serialize)]
pub struct SetReport {
    pub set: String,
    /// The set's folder relative to the copy root.
    pub location: String,
    pub status: Status,
    /// Only the files that were not simply ok (all files are checked).
    pub files: Vec<FileReport>,
    pub files_checked: usize,
    pub bytes_checked: u64,
    /// `par2 verify` and `dar -t` results with --deep.
    pub deep: Vec<DeepCheck>,
    /// The sets this one needs, FULL first.
    pub chain: Vec<String>,
    /// Set when a set of the chain is missing from the copy or unrepairable.
    pub chain_broken: Option<String>,
}

/// One deep check of a set (`--deep`): what ran, and its verdict as a value.
#[derive(Debug, Clone, Serialize)]
pub struct DeepCheck {
    pub check: DeepKind,
    pub verdict: DeepVerdict,
    /// The tool's complaint, or why the check did not run.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum DeepKind {
    /// `par2 verify` of one PAR2 group, by its index file.
    Par2Verify { index: String },
    /// `dar -t` of the archive, with the dar that ran it.
    DarTest { dar: Option<String> },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeepVerdict {
    Passed,
    Failed,
    /// Not run: no evidence either way (an encrypted archive without its passphrase).
    NotRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileReport {
    pub path: String,
    /// What was found: "damaged", "missing", "symlink (refused)"…
    pub found: String,
    pub status: Status,
    /// Where the fix came from ("copy <name>", "par2", "manifest").
    pub repaired_from: Option<String>,
}

impl Report {
    /// 0 all proven (after repairs); 4 damage left that could be repaired; 5 damage that
    /// cannot be repaired; 1/3 when copies could not be audited at all.
    pub fn exit_code(&self) -> u8 {
        let worst = self
            .copies
            .iter()
            .flat_map(|c| c.sets.iter())
            .map(|s| {
                if s.chain_broken.is_some() {
                    Status::Unrepairable
                } else {
                    s.status
                }
            })
            .max()
            .unwrap_or(Status::Ok);
        let failed: Vec<u8> = self
            .copies
            .iter()
            .filter(|c| c.error.is_some())
            .map(|c| c.error_code)
            .collect();
        match worst {
            Status::Unrepairable => exit::UNREPAIRABLE,
            Status::DamagedRepairable | Status::RedundancyDamaged => exit::DAMAGE_LEFT,
            _ => exit::of_units(&failed, self.copies.len()),
        }
    }
}

/// Audit the copies named (paths or destination names), or every configured copy (the
/// repository and each destination) when none is named.
pub fn run(
    config: Option<&Config>,
    copies: &[String],
    options: &Options,
    state: &State,
    progress: &dyn Progress,
    ask: crate::progress::Ask,
) -> Result<Report> {
    let rt = crate::copy::runtime()?;
    let (all, unreachable) = all_copies(config)?;
    let named = !copies.is_empty();
    let targets: Vec<Arc<Store>> = if copies.is_empty() {
        if all.is_empty() {
            return Err(Error::Usage(
                "name a copy to audit (a path or a destination)".into(),
            ));
        }
        all.clone()
    } else {
        copies
            .iter()
            .map(|c| crate::copy::open(c, config).map(Arc::new))
            .collect::<Result<_>>()?
    };
    let mut report = Report { copies: Vec::new() };
    let mut runs = Vec::new();
    if !named {
        // Every configured copy was asked for: one that cannot be reached is said, not skipped.
        for (name, why) in unreachable {
            report.copies.push(CopyReport {
                copy: name,
                sets: Vec::new(),
                problems: Vec::new(),
                error: Some(format!("not audited: {why}")),
                error_code: exit::FAILED,
                proof: None,
            });
        }
    }
    let par2_dirs = par2_dirs(config);
    for copy in &targets {
        let started = jiff::Timestamp::now();
        // Healing sources: every other configured copy, then the par2_dir copies of PAR2
        // files (never audited themselves: they hold no slices).
        let others: Vec<Arc<Store>> = all
            .iter()
            .filter(|o| o.name != copy.name)
            .chain(&par2_dirs)
            .cloned()
            .collect();
        let mut copy_report = CopyReport {
            copy: copy.name.clone(),
            sets: Vec::new(),
            problems: Vec::new(),
            error: None,
            error_code: exit::OK,
            proof: None,
        };
        let options = Options {
            repair: options.repair || may_repair(copy, ask),
            ..options.clone()
        };
        let outcome = writer_lock(&rt, config, copy, options.repair).and_then(|held| {
            // Without the lock, another run may be writing sets here right now.
            let written = match held.is_none() {
                true => being_written(&rt, config, copy)?,
                false => false,
            };
            let audited = rt.block_on_stoppable(check::audit_copy(
                copy,
                &others,
                config,
                &options,
                written,
                state,
                progress,
                &mut copy_report,
            ));
            if let Some(lock) = held.and_then(|h| h.copy) {
                rt.block_on(lock.release(&audited));
            }
            audited
        });
        if matches!(outcome, Ok(false)) && named {
            copy_report.error = Some(format!(
                "no archive set found in {} (no folder holds a {})",
                copy.name,
                crate::set::MANIFEST
            ));
            copy_report.error_code = exit::FAILED;
        }
        if let Err(e) = outcome {
            if matches!(e, Error::Interrupted) {
                return Err(e);
            }
            copy_report.error = Some(e.to_string());
            copy_report.error_code = e.exit_code();
        }
        copy_report.proof = copy.proof().map(|(vouched, downloaded)| Proof {
            files_vouched_by_server: vouched,
            bytes_downloaded: downloaded,
        });
        runs.push(copy_report.metrics(started));
        report.copies.push(copy_report);
    }
    crate::notify::finish(config, Some(state), report.ending(runs));
    Ok(report)
}

impl CopyReport {
    fn metrics(&self, started: jiff::Timestamp) -> crate::state::Run {
        let worst = self
            .sets
            .iter()
            .map(|s| s.status)
            .max()
            .unwrap_or(Status::Ok);
        let broken = self.sets.iter().any(|s| s.chain_broken.is_some());
        let outcome = match (&self.error, worst) {
            (Some(_), _) => RunOutcome::Failed,
            (
                None,
                Status::DamagedRepairable | Status::Unrepairable | Status::RedundancyDamaged,
            ) => RunOutcome::Damage,
            _ if broken => RunOutcome::Damage,
            (None, Status::Repaired) => RunOutcome::Repaired,
            (None, Status::Ok) => RunOutcome::Ok,
        };
        crate::state::Run {
            command: "audit".into(),
            subject: self.copy.clone(),
            level: None,
            set_name: None,
            outcome,
            started_at: started,
            seconds: (jiff::Timestamp::now() - started).as_secs_f64(),
            bytes: self.sets.iter().map(|s| s.bytes_checked).sum(),
            details: serde_json::json!({
                "sets": self.sets.len(),
                "statuses": self.sets.iter().map(|s| (s.set.clone(), s.status.as_str())).collect::<std::collections::BTreeMap<_, _>>(),
                "problems": self.problems,
                "error": self.error,
            }),
        }
    }
}

impl Report {
    fn ending(&self, runs: Vec<crate::state::Run>) -> crate::notify::Ending {
        use crate::config::Event;
        let ended = |outcome| runs.iter().any(|r| r.outcome == outcome);
        let event = if ended(RunOutcome::Damage) {
            Event::Damage
        } else if ended(RunOutcome::Failed) {
            Event::Failure
        } else if ended(RunOutcome::Repaired) {
            Event::Repair
        } else {
            Event::Success
        };
        let mut lines = Vec::new();
        for c in &self.copies {
            let proven = c
                .sets
                .iter()
                .filter(|s| s.status <= Status::Repaired)
                .count();
            lines.push(format!(
                "{}: {proven} of {} set(s) proven",
                c.copy,
                c.sets.len()
            ));
            for s in c.sets.iter().filter(|s| s.status != Status::Ok) {
                lines.push(format!("  {}: {}", s.set, s.status.as_str()));
            }
            if let Some(e) = &c.error {
                lines.push(format!("  FAILED: {e}"));
            }
        }
        crate::notify::Ending {
            event,
            title: format!("audit of {} cop(y/ies): {event:?}", self.copies.len()).to_lowercase(),
            lines,
            runs,
        }
    }
}

/// The destination's `repair` policy, when --repair is not given: "auto" repairs, "ask"
/// asks (and does not repair with nobody to ask), "never" reports only.
fn may_repair(copy: &Store, ask: crate::progress::Ask) -> bool {
    match copy.repair {
        RepairPolicy::Never => false,
        RepairPolicy::Auto => true,
        RepairPolicy::Ask => {
            ask.is_some_and(|ask| ask(&format!("Repair damage found on {} in place?", copy.name)))
        }
    }
}

/// The definitions' `par2_dir` folders that exist, as copies to heal PAR2 files from.
fn par2_dirs(config: Option<&Config>) -> Vec<Arc<Store>> {
    let mut dirs: Vec<&std::path::Path> = config
        .map(|c| {
            c.definitions
                .iter()
                .filter_map(|d| d.par2_dir.as_ref().map(|p| p.path()))
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.dedup();
    // Opened under the stall deadline; one that is missing or not a folder is no source.
    dirs.into_iter()
        .filter_map(|d| Store::for_path(d).ok())
        .map(|mut s| {
            s.name = format!("par2_dir {}", s.name);
            Arc::new(s)
        })
        .collect()
}

/// The repository and every destination of the config, by name; and those that cannot be
/// opened (an unplugged disk), with why.
#[allow(clippy::type_complexity)]
fn all_copies(config: Option<&Config>) -> Result<(Vec<Arc<Store>>, Vec<(String, String)>)> {
    let Some(config) = config else {
        return Ok((Vec::new(), Vec::new()));
    };
    let (mut copies, mut unreachable) = (Vec::new(), Vec::new());
    // Looked at under the stall deadline: the repository's disk may hang too.
    let repo = config.repository.path().to_owned();
    let seen = crate::deadline::bounded(crate::copy::STALL, move || repo.is_dir());
    match seen {
        Some(true) => copies.push(Arc::new(crate::copy::repository(config)?)),
        Some(false) => unreachable.push((
            "repository".to_owned(),
            format!("{} does not exist", config.repository.path().display()),
        )),
        None => unreachable.push((
            "repository".to_owned(),
            format!(
                "{} did not answer for {}s",
                config.repository.path().display(),
                crate::copy::STALL.as_secs()
            ),
        )),
    }
    for d in &config.destinations {
        match Store::open(d) {
            Ok(c) => copies.push(Arc::new(c)),
            // Not a healing source today, and said in the report.
            Err(e) => unreachable.push((d.name().to_owned(), e.to_string())),
        }
    }
    Ok((copies, unreachable))
}

/// The writer locks a repairing audit holds while it writes into a copy.
struct Held {
    _locks: Vec<crate::lock::Lock>,
    copy: Option<crate::copy::CopyLock>,
}

/// A repairing audit writes into the copy: it takes the copy's writer locks (the ones backup,
/// replicate and cleanup take), then removes scratch folders of killed repairs.
fn writer_lock(
    rt: &crate::copy::Runtime,
    config: Option<&Config>,
    copy: &Store,
    repair: bool,
) -> Result<Option<Held>> {
    if !repair {
        return Ok(None);
    }
    let locks = copy.writer_locks(config)?;
    let copy_lock = rt.block_on_stoppable(copy.take_copy_lock("audit --repair"))?;
    copy.clear_scratch()?;
    Ok(Some(Held {
        _locks: locks,
        copy: copy_lock,
    }))
}

/// Whether another run holds the copy's writer lock (replicate, cleanup, a repair).
fn being_written(rt: &crate::copy::Runtime, config: Option<&Config>, copy: &Store) -> Result<bool> {
    let in_state = config.is_some_and(|c| {
        c.destination(&copy.name).is_some()
            && crate::lock::held(&crate::lock::destination_lock(c, &copy.name))
    });
    Ok(in_state || copy.lock_held() || rt.block_on_stoppable(copy.copy_lock_held())?)
}

/// Sets per status, for summaries.
pub fn tally(report: &CopyReport) -> BTreeMap<Status, usize> {
    let mut t = BTreeMap::new();
    for s in &report.sets {
        *t.entry(s.status).or_insert(0) += 1;
    }
    t
}
