//! `darvault status`: per definition the last runs and their outcomes, per copy which sets it
//! holds, what was never or not lately proven there, and free space. From the state database
//! (runs, audits) and the copies themselves; `--html` draws it, `--prometheus` exports it.

pub mod html;
pub mod prometheus;
pub mod rule;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Serialize;

use crate::config::Config;
use crate::copy::Store;
use crate::error::{Error, Result};
use crate::state::{Run, State};

#[derive(Debug, Serialize)]
pub struct Status {
    pub generated: jiff::Timestamp,
    pub host: String,
    /// Per definition: does its backup rule (3-2-1-1-0) hold?
    pub rules: Vec<rule::RuleStatus>,
    pub definitions: Vec<DefinitionStatus>,
    pub copies: Vec<CopyStatus>,
}

#[derive(Debug, Serialize)]
pub struct DefinitionStatus {
    pub name: String,
    /// The last backup run of each level (FULL, DIFF, INCR).
    pub last: BTreeMap<String, Run>,
    pub last_failure: Option<Run>,
    /// The sets in the repository, oldest first.
    pub sets: Vec<SetPoint>,
    /// Backup runs with their phases, oldest first (the last 30).
    pub history: Vec<Run>,
}

impl DefinitionStatus {
    /// The last run of each level in the order of a chain: FULL, DIFF, INCR.
    pub fn last_in_chain_order(&self) -> Vec<(&str, &Run)> {
        let mut last: Vec<(&str, &Run)> = self.last.iter().map(|(l, r)| (l.as_str(), r)).collect();
        last.sort_by_key(|(level, _)| ["FULL", "DIFF", "INCR"].iter().position(|l| l == level));
        last
    }
}

#[derive(Debug, Serialize)]
pub struct SetPoint {
    pub set: String,
    pub level: String,
    pub created: jiff::Timestamp,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct CopyStatus {
    pub name: String,
    /// "repository" or the destination's kind.
    pub kind: String,
    pub sets: usize,
    pub bytes: u64,
    /// Sets of the repository this copy lacks.
    pub missing: Vec<String>,
    /// Sets never proven here by an audit.
    pub never_proven: Vec<String>,
    /// The set proven longest ago, and when.
    pub oldest_proof: Option<(String, jiff::Timestamp)>,
    pub free_bytes: Option<u64>,
    /// Set when the copy could not be read.
    pub error: Option<String>,
    /// With a read budget: how far its reads at rest have come.
    pub read_back: Option<ReadBack>,
    /// Whether the service keeps older versions of what is overwritten or deleted (a
    /// bucket's versioning); absent where it has no such setting or could not say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keeps_versions: Option<bool>,
}

/// A copy's read budget (`read_budget`, `read_every`) against what it holds.
#[derive(Debug, Serialize)]
pub struct ReadBack {
    /// Bytes a month the budget allows.
    pub budget_per_month: u64,
    /// Every byte should be read back within this many days.
    pub every_days: u64,
    /// When the byte read back least recently was last read (or sent, if never since).
    pub least_recently_read: Option<jiff::Timestamp>,
    /// Bytes a month needed to read the whole copy within `every_days`.
    pub needed_per_month: u64,
}

impl ReadBack {
    /// Whether the budget can read the whole copy within `every_days`.
    pub fn covers(&self) -> bool {
        self.needed_per_month <= self.budget_per_month
    }

    fn of(
        state: &State,
        dest: &crate::config::Destination,
        held: &std::collections::HashSet<String>,
    ) -> Result<Option<ReadBack>> {
        let Some(budget) = dest.read_budget else {
            return Ok(None);
        };
        let files: Vec<crate::state::HeldFile> = state
            .held_files(dest.name())?
            .into_iter()
            .filter(|f| held.contains(&f.set_name))
            .collect();
        let now = jiff::ZonedDateTime::now();
        let every_days = now
            .checked_add(dest.read_every())
            .map(|later| (later.timestamp().as_second() - now.timestamp().as_second()) / 86_400)
            .unwrap_or(365)
            .max(1) as u64;
        let bytes: u64 = files.iter().map(|f| f.size).sum();
        Ok(Some(ReadBack {
            budget_per_month: budget.0,
            every_days,
            least_recently_read: files.first().map(|f| f.last_read),
            needed_per_month: (bytes as u128 * 30 / every_days as u128) as u64,
        }))
    }
}

pub fn gather(config: &Config) -> Result<Status> {
    let state = State::open(&config.state_dir())?;
    let rt = crate::copy::runtime()?;
    let backups = state.runs("backup")?;
    let audits = state.audits()?;

    // Named "repository", as audits record it; a missing folder (an unplugged disk) is
    // reported below, not an error of the whole status.
    let repository = crate::copy::repository(config);
    let mut repository_sets: Vec<String> = Vec::new();
    // What the repository holds, read once: its definitions' rows and its copy row.
    let mut repository_held: Vec<(String, u64)> = Vec::new();
    let mut definitions = Vec::new();
    let mut found_sets = Vec::new();
    for d in &config.definitions {
        let name = d.name().as_str();
        let found = match &repository {
            Ok(store) => rt.block_on_stoppable(store.sets(name))?,
            Err(_) => crate::copy::Found::default(),
        };
        found_sets.push(found.sets.clone());
        let sets: Vec<SetPoint> = found
            .sets
            .iter()
            .map(|s| SetPoint {
                set: s.manifest.set.name.clone(),
                level: s.manifest.set.level.to_string(),
                created: s.manifest.set.created,
                bytes: s.manifest.files.iter().map(|f| f.size).sum(),
            })
            .collect();
        repository_sets.extend(sets.iter().map(|s| s.set.clone()));
        repository_held.extend(sets.iter().map(|s| (s.set.clone(), s.bytes)));
        let mine: Vec<&Run> = backups.iter().filter(|r| r.subject == name).collect();
        let mut last = BTreeMap::new();
        for r in &mine {
            if let Some(level) = &r.level {
                last.insert(level.clone(), (*r).clone());
            }
        }
        definitions.push(DefinitionStatus {
            name: name.to_owned(),
            last,
            last_failure: mine
                .iter()
                .rev()
                .find(|r| r.outcome == crate::state::RunOutcome::Failed)
                .map(|r| (*r).clone()),
            history: mine
                .iter()
                .rev()
                .take(30)
                .rev()
                .map(|r| (*r).clone())
                .collect(),
            sets,
        });
    }

    let names = |held: &[(String, u64)]| held.iter().map(|(s, _)| s.clone()).collect();
    let mut facts = vec![rule::CopyFacts::repository(
        repository.is_ok().then(|| names(&repository_held)),
    )];
    let mut copies = vec![match repository {
        Ok(store) => copy_status(
            &store,
            "repository",
            repository_held,
            &repository_sets,
            &audits,
        ),
        Err(e) => unreadable("repository", "repository", e),
    }];
    for dest in &config.destinations {
        let opened = Store::open(dest).and_then(|store| {
            let held = held_sets(&rt, config, &store)?;
            Ok((store, held))
        });
        // A copy not there now (an offline disk, a server down) is weighed by what the
        // state database knows it holds: the sets replicated there.
        let held = match &opened {
            Ok((_, held)) => names(held),
            Err(_) => replicated_to(&state, dest.name(), &found_sets)?,
        };
        let read_back = ReadBack::of(&state, dest, &held)?;
        let mut copy = rule::CopyFacts::of(dest, Some(held));
        copy.reachable = opened.is_ok();
        facts.push(copy);
        let mut status = match opened {
            Ok((store, held)) => {
                let mut status =
                    copy_status(&store, dest.kind.as_str(), held, &repository_sets, &audits);
                status.keeps_versions = rt.block_on_stoppable(store.keeps_history()).ok().flatten();
                status
            }
            Err(e) => unreadable(dest.name(), dest.kind.as_str(), e),
        };
        status.read_back = read_back;
        copies.push(status);
    }
    let now = jiff::Timestamp::now();
    let rules = config
        .definitions
        .iter()
        .zip(&found_sets)
        .map(|(d, sets)| rule::evaluate(d, sets, &facts, &audits, now))
        .collect();
    Ok(Status {
        generated: now,
        host: crate::host_name(),
        rules,
        definitions,
        copies,
    })
}

/// The sets of `sets` the state database records as replicated, complete, to `destination`.
fn replicated_to(
    state: &State,
    destination: &str,
    sets: &[Vec<crate::copy::FoundSet>],
) -> Result<HashSet<String>> {
    let mut held = HashSet::new();
    for set in sets.iter().flatten() {
        let name = &set.manifest.set.name;
        if state.is_complete(destination, name, &set.manifest_sha256)? {
            held.insert(name.clone());
        }
    }
    Ok(held)
}

fn unreadable(name: &str, kind: &str, e: crate::Error) -> CopyStatus {
    CopyStatus {
        name: name.to_owned(),
        kind: kind.to_owned(),
        sets: 0,
        bytes: 0,
        missing: Vec::new(),
        never_proven: Vec::new(),
        oldest_proof: None,
        free_bytes: None,
        error: Some(e.to_string()),
        read_back: None,
        keeps_versions: None,
    }
}

/// The sets of the config's definitions a copy holds, with their sizes.
fn held_sets(
    rt: &crate::copy::Runtime,
    config: &Config,
    store: &Store,
) -> Result<Vec<(String, u64)>> {
    let mut held = Vec::new();
    for d in &config.definitions {
        let found = rt.block_on_stoppable(store.sets(d.name().as_str()))?;
        held.extend(found.sets.iter().map(|s| {
            (
                s.manifest.set.name.clone(),
                s.manifest.files.iter().map(|f| f.size).sum(),
            )
        }));
    }
    Ok(held)
}

fn copy_status(
    store: &Store,
    kind: &str,
    held: Vec<(String, u64)>,
    repository_sets: &[String],
    audits: &[crate::state::Audited],
) -> CopyStatus {
    let held_names: std::collections::HashSet<&str> =
        held.iter().map(|(s, _)| s.as_str()).collect();
    let proofs: BTreeMap<&str, Option<jiff::Timestamp>> = audits
        .iter()
        .filter(|a| a.copy == store.name)
        .map(|a| {
            let when = a.proven_at.as_deref().and_then(|t| t.parse().ok());
            (a.set_name.as_str(), when)
        })
        .collect();
    let never_proven = held
        .iter()
        .filter(|(s, _)| !matches!(proofs.get(s.as_str()), Some(Some(_))))
        .map(|(s, _)| s.clone())
        .collect();
    let oldest_proof = held
        .iter()
        .filter_map(|(s, _)| {
            proofs
                .get(s.as_str())
                .copied()
                .flatten()
                .map(|t| (s.clone(), t))
        })
        .min_by_key(|(_, t)| *t);
    CopyStatus {
        name: store.name.clone(),
        kind: kind.to_owned(),
        sets: held.len(),
        bytes: held.iter().map(|(_, b)| b).sum(),
        missing: repository_sets
            .iter()
            .filter(|s| !held_names.contains(s.as_str()))
            .cloned()
            .collect(),
        never_proven,
        oldest_proof,
        free_bytes: store.free_bytes().unwrap_or(None),
        error: None,
        read_back: None,
        keeps_versions: None,
    }
}

impl Status {
    /// With `check`: RULE_FAILS when a definition's rule does not hold; OK else.
    pub fn exit_code(&self, check: bool) -> u8 {
        match check && self.rules.iter().any(|r| !r.holds) {
            true => crate::error::exit::RULE_FAILS,
            false => crate::error::exit::OK,
        }
    }
}

/// After `gather`: record each definition's verdict, and tell the ones that changed.
pub fn finish(config: &Config, status: &Status) -> Result<()> {
    let state = State::open(&config.state_dir())?;
    rule::tell_changes(config, &state, &status.rules);
    Ok(())
}

/// Write a report (the HTML page, the Prometheus textfile) to `file` through a temporary file in the same folder and a rename.
pub fn write_atomically(file: &Path, text: &str) -> Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp =
        tempfile::NamedTempFile::new_in(dir).map_err(Error::io("cannot write in", dir))?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())
        .map_err(Error::io("cannot write", file))?;
    // Readable by whoever serves it (a Prometheus collector, a web server): another user.
    let readable = std::os::unix::fs::PermissionsExt::from_mode(0o644);
    tmp.as_file()
        .set_permissions(readable)
        .map_err(Error::io("cannot write", file))?;
    tmp.persist(file)
        .map_err(|e| Error::io("cannot write", file)(e.error))?;
    Ok(())
}
