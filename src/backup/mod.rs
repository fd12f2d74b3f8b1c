//! `darvault backup`: one set per definition at the requested level. A failing definition
//! never stops the others; the report says what happened to each.

mod estimate;
mod halves;
mod hooks;
mod par2_dir;
mod plan;
mod restore_test;
mod run;

use serde::Serialize;

pub use run::{SetReport, prune_masks, slice_path};

use crate::config::{Config, Definition};
use crate::copy::LocalCopy;
use crate::error::{Error, Result, exit};
use crate::progress::Progress;
use crate::set::{Level, staging};
use crate::state::RunOutcome;
use crate::tools::Tools;
use crate::tools::secret::Passphrase;

#[derive(Debug, Serialize)]
pub struct Report {
    pub level: Level,
    pub definitions: Vec<DefinitionOutcome>,
}

#[derive(Debug, Serialize)]
pub struct DefinitionOutcome {
    pub definition: String,
    #[serde(flatten)]
    pub result: Outcome,
}

#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Outcome {
    Published(Box<SetReport>),
    Failed { error: String, exit_code: u8 },
}

impl Report {
    /// 0 all published cleanly; 6 all published, some with warnings; 3 some failed;
    /// 1 all failed (130 if the run was interrupted).
    pub fn exit_code(&self) -> u8 {
        let failed: Vec<u8> = self
            .definitions
            .iter()
            .filter_map(|d| match &d.result {
                Outcome::Failed { exit_code, .. } => Some(*exit_code),
                Outcome::Published(_) => None,
            })
            .collect();
        let code = exit::of_units(&failed, self.definitions.len());
        let warned = self
            .definitions
            .iter()
            .any(|d| matches!(&d.result, Outcome::Published(s) if !s.warnings.is_empty()));
        if code == exit::OK && warned {
            exit::WARNINGS
        } else {
            code
        }
    }
}

/// Back up the named definitions (all when `names` is empty). Errors only for what stops the
/// whole run (unknown definition, lock held, dar missing); per-definition failures are in
/// the report.
pub fn run(
    config: &Config,
    level: Level,
    names: &[String],
    progress: &dyn Progress,
) -> Result<Report> {
    let definitions = config.select(names)?;
    let tools = Tools::locate(&config.tools)?;
    let repository = LocalCopy::new(config.repository.path());
    let _lock = crate::lock::lock_repository(repository.root())?;
    let mut report = Report {
        level,
        definitions: Vec::new(),
    };
    let mut runs = Vec::new();
    for definition in definitions {
        let name = definition.name().to_string();
        let started = jiff::Timestamp::now();
        let began = std::time::Instant::now();
        tracing::info!(definition = %name, %level, "backup starting");
        let hooks = &definition.hooks;
        let made = hooks::run(hooks, &hooks.before, &name, level, None)
            .and_then(|()| back_up_one(definition, level, &repository, &tools, progress));
        let word = match &made {
            Ok(set) if set.warnings.is_empty() => "published",
            Ok(_) => "published-with-warnings",
            Err(_) => "failed",
        };
        let after = hooks::run(hooks, &hooks.after, &name, level, Some(word));
        let made = match (made, after) {
            (Ok(mut set), Err(e)) => {
                set.warnings.push(e.to_string());
                Ok(set)
            }
            (made, _) => made,
        };
        let result = match made {
            Ok(set) => {
                tracing::info!(definition = %name, set = %set.set, seconds = set.seconds, "published");
                Outcome::Published(Box::new(set))
            }
            Err(e) => {
                // The report says it on stdout; the log keeps it too.
                tracing::info!(definition = %name, "backup failed: {e}");
                Outcome::Failed {
                    error: e.to_string(),
                    exit_code: e.exit_code(),
                }
            }
        };
        runs.push(metrics(&name, level, &result, started, began.elapsed()));
        let interrupted =
            matches!(&result, Outcome::Failed { exit_code, .. } if *exit_code == exit::INTERRUPTED);
        report.definitions.push(DefinitionOutcome {
            definition: name,
            result,
        });
        if interrupted {
            break;
        }
    }
    let state = crate::state::State::open(&config.state_dir())
        .inspect_err(|e| tracing::warn!("cannot record metrics: {e}"))
        .ok();
    if let Some(state) = &state {
        remember_bundled(state, &report);
        remember_proven(state, &report);
    }
    crate::notify::finish(Some(config), state.as_ref(), report.ending(runs));
    Ok(report)
}

/// A published set was proven on the repository by the backup that made it (every file
/// hashed and sealed, `dar -t` and the restore test passed): that is its first proof there.
fn remember_proven(state: &crate::state::State, report: &Report) {
    for d in &report.definitions {
        if let Outcome::Published(set) = &d.result
            && let Err(e) = state.audited("repository", &set.set, "ok", true)
        {
            tracing::warn!("cannot record the proof of {}: {e}", set.set);
        }
    }
}

/// The binaries put into the bundles just made: the ones `drill` and `restore` may run from a
/// copy without --trust-bundle.
fn remember_bundled(state: &crate::state::State, report: &Report) {
    for d in &report.definitions {
        let Outcome::Published(set) = &d.result else {
            continue;
        };
        let Ok(manifest) = crate::set::Manifest::read(&set.path) else {
            continue;
        };
        for f in manifest
            .files
            .iter()
            .filter(|f| f.role == crate::set::Role::Bundle && !f.path.ends_with(".txt"))
        {
            let name = f.path.rsplit('/').next().unwrap_or(&f.path);
            if let Err(e) = state.bundled(name, &f.sha256) {
                tracing::warn!("cannot record the bundled {name}: {e}");
            }
        }
    }
}

fn metrics(
    definition: &str,
    level: Level,
    result: &Outcome,
    started: jiff::Timestamp,
    took: std::time::Duration,
) -> crate::state::Run {
    let (outcome, set_name, bytes) = match result {
        Outcome::Published(s) if s.warnings.is_empty() => {
            (RunOutcome::Ok, Some(s.set.clone()), s.size)
        }
        Outcome::Published(s) => (RunOutcome::Warning, Some(s.set.clone()), s.size),
        Outcome::Failed { .. } => (RunOutcome::Failed, None, 0),
    };
    crate::state::Run {
        command: "backup".into(),
        subject: definition.into(),
        level: Some(level.to_string()),
        set_name,
        outcome,
        started_at: started,
        seconds: took.as_secs_f64(),
        bytes,
        details: serde_json::to_value(result).unwrap_or_default(),
    }
}

impl Report {
    fn ending(&self, runs: Vec<crate::state::Run>) -> crate::notify::Ending {
        use crate::config::Event;
        let event = match self.exit_code() {
            exit::OK => Event::Success,
            exit::WARNINGS => Event::Warning,
            _ => Event::Failure,
        };
        let published = runs
            .iter()
            .filter(|r| r.outcome != RunOutcome::Failed)
            .count();
        let lines = self
            .definitions
            .iter()
            .map(|d| match &d.result {
                Outcome::Published(s) if s.warnings.is_empty() => {
                    format!("{}: published {}", d.definition, s.set)
                }
                Outcome::Published(s) => format!(
                    "{}: published {} with {} warning(s): {}{}",
                    d.definition,
                    s.set,
                    s.warnings.len(),
                    s.warnings
                        .iter()
                        .take(5)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join("; "),
                    if s.warnings.len() > 5 { "; …" } else { "" }
                ),
                Outcome::Failed { error, .. } => format!("{}: FAILED: {error}", d.definition),
            })
            .collect();
        crate::notify::Ending {
            event,
            title: format!(
                "backup --{}: {published} of {} definition(s) published",
                self.level.to_string().to_lowercase(),
                self.definitions.len()
            ),
            lines,
            runs,
        }
    }
}

fn back_up_one(
    definition: &Definition,
    level: Level,
    repository: &LocalCopy,
    tools: &Tools,
    progress: &dyn Progress,
) -> Result<SetReport> {
    let source = definition.source.path();
    if !source.is_dir() {
        return Err(Error::Failed(format!(
            "source {} is missing or not a directory",
            source.display()
        )));
    }
    let name = definition.name().as_str();
    let dir = repository.definition_dir(name);
    for stale in staging::clean_stale(&dir)? {
        tracing::warn!(
            "removed an unfinished set left by an interrupted run: {}",
            stale.display()
        );
    }
    let found = repository.sets(name)?;
    for problem in &found.problems {
        tracing::warn!("{problem}");
    }
    let key = match &definition.encryption {
        Some(e) => Some(Passphrase::resolve(e, name)?),
        None => None,
    };
    let plan = plan::plan(definition, level, &found.sets, jiff::ZonedDateTime::now())?;
    if let Some(base) = &plan.base
        && base.manifest.archive.encrypted != key.is_some()
    {
        return Err(Error::Failed(format!(
            "{name}: the base set {} is {}encrypted but the definition now {} encryption: make a new FULL",
            base.name,
            if base.manifest.archive.encrypted {
                ""
            } else {
                "not "
            },
            if key.is_some() { "asks for" } else { "has no" },
        )));
    }
    run::make_set(definition, plan, repository, tools, key.as_ref(), progress)
}
