//! One function per verb: read what it needs (the config once), run the library's operation,
//! present its report, give the exit code the report decides.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use super::progress::Terminal;
use super::{AuditArgs, BackupArgs, Cli, Command, ReplicateArgs, RestoreArgs, render};
use darvault::config::{self, Config};
use darvault::error::{Error, exit};
use darvault::set::Level;

/// What every verb may use: the command line, the config (read once), the progress display.
pub struct Verb<'a> {
    cli: &'a Cli,
    config_path: PathBuf,
    /// The config as read at start; taken by the first verb step that needs it.
    loaded: RefCell<Option<Result<Config, Error>>>,
    progress: Terminal,
}

impl<'a> Verb<'a> {
    pub fn new(cli: &'a Cli, config_path: PathBuf, loaded: Result<Config, Error>) -> Verb<'a> {
        Verb {
            cli,
            config_path,
            loaded: RefCell::new(Some(loaded)),
            progress: Terminal::new(cli.quiet || cli.json),
        }
    }

    /// The config (read once, at start).
    fn config(&self) -> Result<Config, Error> {
        self.loaded
            .borrow_mut()
            .take()
            .unwrap_or_else(|| Config::load(&self.config_path))
    }

    /// The config, which a command that was given a directory can do without (a disk found
    /// in a drawer, a machine that never saw darvault): then a missing or broken config is
    /// ignored.
    fn config_unless_path(&self, paths: &[&str]) -> Result<Option<Config>, Error> {
        let config_path = &self.config_path;
        match self.config() {
            Ok(c) => Ok(Some(c)),
            Err(_) if !paths.is_empty() && paths.iter().all(|p| Path::new(p).is_dir()) => Ok(None),
            // Without a config, what was named can only be a folder: say what is wrong with it.
            Err(e) if !config_path.exists() => {
                match paths.iter().find(|p| !Path::new(p).is_dir()) {
                    Some(named) => Err(Error::Usage(not_a_copy(named, config_path))),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Logging to the terminal, and to the daily log in `state` when given.
    fn log(&self, state: Option<&Path>) -> super::logging::Guards {
        super::logging::init(self.cli.verbose, self.cli.quiet, state)
    }

    /// `--json` prints the report as JSON, else as text.
    fn present<T: serde::Serialize>(&self, report: &T, human: fn(&T)) {
        if self.cli.json {
            render::json(report);
        } else {
            human(report);
        }
    }

    pub fn run(&self) -> Result<u8, Error> {
        let cli = self.cli;
        match &cli.command {
            Command::Init { repository } => self.init(repository.as_deref()),
            Command::Demo { dir } => self.demo(dir.as_deref()),
            Command::Backup(args) => self.backup(args),
            Command::Replicate(args) => self.replicate(args),
            Command::Audit(args) => self.audit(args),
            Command::Restore(args) => self.restore(args),
            Command::Systemd { install } => self.systemd(*install),
            Command::Status {
                html,
                prometheus,
                check,
            } => self.status(html.as_deref(), prometheus.as_deref(), *check),
            Command::Cleanup {
                dry_run,
                definitions,
                destinations,
                sets,
                yes,
            } => self.cleanup(darvault::cleanup::Request {
                definitions: definitions.clone(),
                destinations: destinations.clone(),
                sets: sets.clone(),
                dry_run: *dry_run,
                yes: *yes,
            }),
            Command::Drill {
                copy,
                definitions,
                sample,
                trust_bundle,
            } => self.drill(darvault::restore::drill::Request {
                from: copy.clone(),
                definitions: definitions.clone(),
                sample: *sample,
                trust_bundle: *trust_bundle,
            }),
            Command::Find {
                pattern,
                from,
                definitions,
            } => self.find(darvault::restore::FindRequest {
                from: from.clone(),
                definitions: definitions.clone(),
                pattern: pattern.clone(),
            }),
            Command::Completions { shell } => {
                super::completions(*shell)
                    .inspect_err(render::quiet_exit_on_closed)
                    .map_err(|e| Error::Failed(format!("cannot write the script: {e}")))?;
                Ok(exit::OK)
            }
            Command::Log { commands } => self.log_of_last_run(*commands),
            Command::Man => {
                super::man()
                    .inspect_err(render::quiet_exit_on_closed)
                    .map_err(|e| Error::Failed(format!("cannot write the manual page: {e}")))?;
                Ok(exit::OK)
            }
            Command::List { copy, definitions } => self.list(copy.as_deref(), definitions),
        }
    }

    fn init(&self, repository: Option<&Path>) -> Result<u8, Error> {
        config::write_default(&self.config_path, repository)?;
        println!(
            "wrote {}: edit the repository and the definitions, then run `darvault backup --full`",
            self.config_path.display()
        );
        Ok(exit::OK)
    }

    fn demo(&self, dir: Option<&Path>) -> Result<u8, Error> {
        let _log = self.log(None);
        let temp;
        let path = match dir {
            Some(d) => d.to_owned(),
            None => {
                temp = tempfile::Builder::new()
                    .prefix("darvault-demo.")
                    .tempdir()
                    .map_err(|e| {
                        Error::Failed(format!("cannot make a temporary directory: {e}"))
                    })?;
                temp.path().to_owned()
            }
        };
        darvault::demo::run(&path, dir.is_some(), &self.progress, &mut |line| {
            render::line(line)
        })
    }

    fn backup(&self, args: &BackupArgs) -> Result<u8, Error> {
        let config = self.config()?;
        let _log = self.log(Some(&config.state_dir()));
        let level = if args.full {
            Level::Full
        } else if args.diff {
            Level::Diff
        } else {
            Level::Incr
        };
        let report = darvault::backup::run(&config, level, &args.definitions, &self.progress)?;
        self.present(&report, render::backup);
        Ok(report.exit_code())
    }

    fn replicate(&self, args: &ReplicateArgs) -> Result<u8, Error> {
        let config = self.config()?;
        let _log = self.log(Some(&config.state_dir()));
        let report = darvault::replicate::run(
            &config,
            &args.destinations,
            &args.definitions,
            &self.progress,
        )?;
        self.present(&report, render::replicate);
        Ok(report.exit_code())
    }

    fn audit(&self, args: &AuditArgs) -> Result<u8, Error> {
        let copies: Vec<&str> = args.copies.iter().map(String::as_str).collect();
        let config = self.config_unless_path(&copies)?;
        let state_dir = config
            .as_ref()
            .map(|c| c.state_dir())
            .unwrap_or_else(darvault::paths::default_state_dir);
        let _log = self.log(Some(&state_dir));
        let state = darvault::state::State::open(&state_dir)?;
        let options = darvault::audit::Options {
            repair: args.repair,
            deep: args.deep,
            definitions: args.definitions.clone(),
            portion: args.portion,
        };
        let report = darvault::audit::run(
            config.as_ref(),
            &args.copies,
            &options,
            &state,
            &self.progress,
            Some(&super::ask_on_terminal),
        )?;
        self.present(&report, render::audit);
        Ok(report.exit_code())
    }

    fn restore(&self, args: &RestoreArgs) -> Result<u8, Error> {
        let from: Vec<&str> = args.from.iter().map(String::as_str).collect();
        let config = self.config_unless_path(&from)?;
        let _log = self.log(None);
        let definition = match (&args.definition, config.as_ref()) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) if c.definitions.len() == 1 => c.definitions[0].name().to_string(),
            _ => {
                return Err(Error::Usage(
                    "name the definition to restore with -d (the config has several, or none is read)".into(),
                ));
            }
        };
        let Some(target) = args.target.clone().filter(|_| !args.list) else {
            let request = darvault::restore::ListRequest {
                from: args.from.clone(),
                definition,
                as_of: args.as_of.clone(),
                paths: args.paths.clone(),
            };
            let listing = darvault::restore::list(config.as_ref(), &request)?;
            self.present(&listing, render::as_of_listing);
            return Ok(exit::OK);
        };
        let request = darvault::restore::Request {
            from: args.from.clone(),
            definition,
            as_of: args.as_of.clone(),
            target,
            paths: args.paths.clone(),
            overwrite: args.overwrite,
            trust_bundle: args.trust_bundle,
        };
        let report = darvault::restore::run(config.as_ref(), &request)?;
        self.present(&report, render::restore);
        Ok(report.exit_code(args.paths.len()))
    }

    fn systemd(&self, install: bool) -> Result<u8, Error> {
        let config = self.config()?;
        let exe = std::env::current_exe()
            .map_err(|e| Error::Failed(format!("cannot find this program's path: {e}")))?;
        let units = darvault::systemd::units(&config, &exe);
        if install {
            let installed = darvault::systemd::install(&units)?;
            self.present(&installed, render::installed);
        } else {
            self.present(&units, render::units);
        }
        Ok(exit::OK)
    }

    fn status(
        &self,
        html: Option<&Path>,
        prometheus: Option<&Path>,
        check: bool,
    ) -> Result<u8, Error> {
        let config = self.config()?;
        let _log = self.log(None);
        let status = darvault::status::gather(&config)?;
        darvault::status::finish(&config, &status)?;
        if let Some(file) = html {
            let page = darvault::status::html::render(&status);
            darvault::status::write_atomically(file, &page)?;
        }
        if let Some(file) = prometheus {
            let text = darvault::status::prometheus::render(&status);
            darvault::status::write_atomically(file, &text)?;
        }
        self.present(&status, render::status);
        Ok(status.exit_code(check))
    }

    fn cleanup(&self, request: darvault::cleanup::Request) -> Result<u8, Error> {
        let config = self.config()?;
        let _log = self.log(Some(&config.state_dir()));
        let report = darvault::cleanup::run(&config, &request, Some(&super::ask_on_terminal))?;
        self.present(&report, render::cleanup);
        Ok(report.exit_code())
    }

    fn drill(&self, request: darvault::restore::drill::Request) -> Result<u8, Error> {
        let copies: Vec<&str> = request.from.iter().map(String::as_str).collect();
        let config = self.config_unless_path(&copies)?;
        let _log = self.log(None);
        let report = darvault::restore::drill::run(config.as_ref(), &request)?;
        self.present(&report, render::drill);
        Ok(report.exit_code())
    }

    fn find(&self, request: darvault::restore::FindRequest) -> Result<u8, Error> {
        let copies: Vec<&str> = request.from.iter().map(String::as_str).collect();
        let config = self.config_unless_path(&copies)?;
        let _log = self.log(None);
        let found = darvault::restore::find(config.as_ref(), &request)?;
        self.present(&found, render::found);
        Ok(exit::OK)
    }

    fn log_of_last_run(&self, commands: bool) -> Result<u8, Error> {
        let state_dir = self
            .config()
            .map(|c| c.state_dir())
            .unwrap_or_else(|_| darvault::paths::default_state_dir());
        let which = match commands {
            true => darvault::logs::Which::Commands,
            false => darvault::logs::Which::Main,
        };
        let lines = darvault::logs::last_run(&state_dir, which)?;
        self.present(&lines, |lines| {
            for line in lines {
                render::line(&darvault::printable(line));
            }
        });
        Ok(exit::OK)
    }

    fn list(&self, copy: Option<&str>, definitions: &[String]) -> Result<u8, Error> {
        let _log = self.log(None);
        // A destination name wins over a directory of the same name.
        let copies: Vec<&str> = copy.into_iter().collect();
        let config = self.config_unless_path(&copies)?;
        let spec = match copy {
            Some(c) => c.to_owned(),
            None => config
                .as_ref()
                .expect("loaded above")
                .repository
                .path()
                .display()
                .to_string(),
        };
        let copy = darvault::copy::open(&spec, config.as_ref())?;
        let listing = darvault::list::list(&copy, definitions)?;
        self.present(&listing, render::listing);
        Ok(exit::OK)
    }
}

/// Why `named` (given where a copy is expected, with no config to name destinations) is not
/// one.
fn not_a_copy(named: &str, config_path: &Path) -> String {
    let what = match std::fs::metadata(named) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "no such folder".to_owned(),
        Err(e) => format!("cannot be looked at ({e})"),
        Ok(_) => "is a file, not a folder: a copy is the folder that holds the sets".to_owned(),
    };
    format!(
        "{named}: {what} (and there is no config at {} to name a destination by)",
        config_path.display()
    )
}
