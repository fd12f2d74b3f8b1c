//! darvault's command line: parse, dispatch, map the outcome to an exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::{Cli, Command, render};
use darvault::config::{self, Config};
use darvault::error::{Error, exit};
use darvault::set::Level;

fn main() -> ExitCode {
    bound_heap();
    cli::complete_if_asked();
    let cli = Cli::parse();
    // Before any thread exists: SFTP's ssh runs through darvault's wrapper (tools::ssh),
    // when the config has an SFTP destination (a run without one leaves nothing behind).
    let config_file = cli.config.clone().unwrap_or_else(Config::default_path);
    let has_sftp = Config::load(&config_file).is_ok_and(|c| {
        c.destinations
            .iter()
            .any(|d| d.kind == darvault::config::Kind::Sftp)
    });
    if has_sftp {
        darvault::tools::ssh::install(&darvault::paths::default_state_dir());
    }
    let code = match run(&cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let text = darvault::secrets::mask(&e.to_string()).into_owned();
            eprintln!("darvault: {}", darvault::printable(&text));
            ExitCode::from(e.exit_code())
        }
    };
    darvault::copy::disk::end_of_output();
    code
}

/// Large buffers (the 8 MiB chunks of every transfer) come from and go back to the kernel.
/// glibc otherwise raises its mmap threshold after the first such buffer is freed, and the
/// later ones pile up in per-thread arenas: peak memory then grows with the amount of data.
fn bound_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 4);
    }
}

/// `--json` prints the report as JSON, else as text.
fn present<T: serde::Serialize>(json: bool, report: &T, human: fn(&T)) {
    if json {
        render::json(report);
    } else {
        human(report);
    }
}

/// The config, which a command that was given a directory can do without (a disk found in
/// a drawer, a machine that never saw darvault): then a missing or broken config is ignored.
fn config_unless_path(
    config_path: &std::path::Path,
    paths: &[&str],
) -> Result<Option<Config>, Error> {
    match Config::load(config_path) {
        Ok(c) => Ok(Some(c)),
        Err(_) if !paths.is_empty() && paths.iter().all(|p| std::path::Path::new(p).is_dir()) => {
            Ok(None)
        }
        // Without a config, what was named can only be a folder: say what is wrong with it.
        Err(e) if !config_path.exists() => {
            match paths.iter().find(|p| !std::path::Path::new(p).is_dir()) {
                Some(named) => Err(Error::Usage(not_a_copy(named, config_path))),
                None => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Why `named` (given where a copy is expected, with no config to name destinations) is not
/// one.
fn not_a_copy(named: &str, config_path: &std::path::Path) -> String {
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

fn run(cli: &Cli) -> Result<u8, Error> {
    darvault::tools::process::install_stop_handler()
        .map_err(|e| Error::Failed(format!("cannot install signal handlers: {e}")))?;
    let config_path = cli.config.clone().unwrap_or_else(Config::default_path);
    if let Some(wait) = &cli.lock_wait {
        let wait = darvault::config::Duration::try_from(wait.clone())
            .map_err(|e| Error::Usage(format!("--lock-wait: {e}")))?;
        darvault::lock::set_wait(wait.0);
    }
    let progress = cli::progress::Terminal::new(cli.quiet || cli.json);
    match &cli.command {
        Command::Init { repository } => {
            config::write_default(&config_path, repository.as_deref())?;
            println!(
                "wrote {}: edit the repository and the definitions, then run `darvault backup --full`",
                config_path.display()
            );
            Ok(exit::OK)
        }
        Command::Demo { dir } => {
            let _log = cli::logging::init(cli.verbose, cli.quiet, None);
            let kept = dir.is_some();
            let temp;
            let dir = match dir {
                Some(d) => d.clone(),
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
            darvault::demo::run(&dir, kept, &progress, &mut |line| render::line(line))
        }
        Command::Backup(args) => {
            let config = Config::load(&config_path)?;
            let _log = cli::logging::init(cli.verbose, cli.quiet, Some(&config.state_dir()));
            let level = if args.full {
                Level::Full
            } else if args.diff {
                Level::Diff
            } else {
                Level::Incr
            };
            let report = darvault::backup::run(&config, level, &args.definitions, &progress)?;
            present(cli.json, &report, render::backup);
            Ok(report.exit_code())
        }
        Command::Replicate(args) => {
            let config = Config::load(&config_path)?;
            let _log = cli::logging::init(cli.verbose, cli.quiet, Some(&config.state_dir()));
            let report = darvault::replicate::run(
                &config,
                &args.destinations,
                &args.definitions,
                &progress,
            )?;
            present(cli.json, &report, render::replicate);
            Ok(report.exit_code())
        }
        Command::Audit(args) => {
            let copies: Vec<&str> = args.copies.iter().map(String::as_str).collect();
            let config = config_unless_path(&config_path, &copies)?;
            let state_dir = config
                .as_ref()
                .map(|c| c.state_dir())
                .unwrap_or_else(darvault::paths::default_state_dir);
            let _log = cli::logging::init(cli.verbose, cli.quiet, Some(&state_dir));
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
                &progress,
                Some(&cli::ask_on_terminal),
            )?;
            present(cli.json, &report, render::audit);
            Ok(report.exit_code())
        }
        Command::Restore(args) => {
            let from: Vec<&str> = args.from.iter().map(String::as_str).collect();
            let config = config_unless_path(&config_path, &from)?;
            let _log = cli::logging::init(cli.verbose, cli.quiet, None);
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
                    definition: definition.clone(),
                    as_of: args.as_of.clone(),
                    paths: args.paths.clone(),
                };
                let listing = darvault::restore::list(config.as_ref(), &request)?;
                present(cli.json, &listing, render::as_of_listing);
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
            present(cli.json, &report, render::restore);
            // Nothing of what was asked existed then, or some files could not be written:
            // say so with the exit code too.
            let none_existed = !args.paths.is_empty() && report.absent.len() == args.paths.len();
            if none_existed || !report.not_restored.is_empty() {
                return Ok(exit::FAILED);
            }
            Ok(exit::OK)
        }
        Command::Systemd { install } => {
            let config = Config::load(&config_path)?;
            let exe = std::env::current_exe()
                .map_err(|e| Error::Failed(format!("cannot find this program's path: {e}")))?;
            let units = darvault::systemd::units(&config, &exe);
            if *install {
                let installed = darvault::systemd::install(&units)?;
                present(cli.json, &installed, render::installed);
            } else {
                present(cli.json, &units, render::units);
            }
            Ok(exit::OK)
        }
        Command::Status { html, prometheus } => {
            let config = Config::load(&config_path)?;
            let _log = cli::logging::init(cli.verbose, cli.quiet, None);
            let status = darvault::status::gather(&config)?;
            if let Some(file) = html {
                let page = darvault::status::html::render(&status);
                darvault::status::write_atomically(file, &page)?;
            }
            if let Some(file) = prometheus {
                let text = darvault::status::prometheus::render(&status);
                darvault::status::write_atomically(file, &text)?;
            }
            present(cli.json, &status, render::status);
            Ok(exit::OK)
        }
        Command::Cleanup {
            dry_run,
            definitions,
            destinations,
            sets,
            yes,
        } => {
            let config = Config::load(&config_path)?;
            let _log = cli::logging::init(cli.verbose, cli.quiet, Some(&config.state_dir()));
            let request = darvault::cleanup::Request {
                definitions: definitions.clone(),
                destinations: destinations.clone(),
                sets: sets.clone(),
                dry_run: *dry_run,
                yes: *yes,
            };
            let report = darvault::cleanup::run(&config, &request, Some(&cli::ask_on_terminal))?;
            present(cli.json, &report, render::cleanup);
            Ok(report.exit_code())
        }
        Command::Drill {
            copy,
            definitions,
            sample,
            trust_bundle,
        } => {
            let copies: Vec<&str> = copy.iter().map(String::as_str).collect();
            let config = config_unless_path(&config_path, &copies)?;
            let _log = cli::logging::init(cli.verbose, cli.quiet, None);
            let request = darvault::restore::drill::Request {
                from: copy.clone(),
                definitions: definitions.clone(),
                sample: *sample,
                trust_bundle: *trust_bundle,
            };
            let report = darvault::restore::drill::run(config.as_ref(), &request)?;
            present(cli.json, &report, render::drill);
            Ok(if report.failed() {
                exit::FAILED
            } else {
                exit::OK
            })
        }
        Command::Find {
            pattern,
            from,
            definitions,
        } => {
            let copies: Vec<&str> = from.iter().map(String::as_str).collect();
            let config = config_unless_path(&config_path, &copies)?;
            let _log = cli::logging::init(cli.verbose, cli.quiet, None);
            let request = darvault::restore::FindRequest {
                from: from.clone(),
                definitions: definitions.clone(),
                pattern: pattern.clone(),
            };
            let found = darvault::restore::find(config.as_ref(), &request)?;
            present(cli.json, &found, render::found);
            Ok(exit::OK)
        }
        Command::Completions { shell } => {
            cli::completions(*shell)
                .inspect_err(render::quiet_exit_on_closed)
                .map_err(|e| Error::Failed(format!("cannot write the script: {e}")))?;
            Ok(exit::OK)
        }
        Command::Log { commands } => {
            let state_dir = Config::load(&config_path)
                .map(|c| c.state_dir())
                .unwrap_or_else(|_| darvault::paths::default_state_dir());
            let which = match commands {
                true => darvault::logs::Which::Commands,
                false => darvault::logs::Which::Main,
            };
            let lines = darvault::logs::last_run(&state_dir, which)?;
            present(cli.json, &lines, |lines| {
                for line in lines {
                    render::line(&darvault::printable(line));
                }
            });
            Ok(exit::OK)
        }
        Command::Man => {
            cli::man()
                .inspect_err(render::quiet_exit_on_closed)
                .map_err(|e| Error::Failed(format!("cannot write the manual page: {e}")))?;
            Ok(exit::OK)
        }
        Command::List { copy, definitions } => {
            let _log = cli::logging::init(cli.verbose, cli.quiet, None);
            // A destination name wins over a directory of the same name.
            let copies: Vec<&str> = copy.iter().map(String::as_str).collect();
            let config = config_unless_path(&config_path, &copies)?;
            let spec = match copy {
                Some(c) => c.clone(),
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
            present(cli.json, &listing, render::listing);
            Ok(exit::OK)
        }
    }
}
