//! darvault's command line: parse, dispatch, map the outcome to an exit code.

mod cli;

use std::process::ExitCode;

use clap::Parser;

use cli::Cli;
use darvault::config::Config;
use darvault::error::Error;

fn main() -> ExitCode {
    bound_heap();
    cli::complete_if_asked();
    let cli = Cli::parse();
    // Before any thread exists: SFTP's ssh runs through darvault's wrapper (tools::ssh),
    // when the config has an SFTP destination (a run without one leaves nothing behind).
    let config_path = cli.config.clone().unwrap_or_else(Config::default_path);
    let loaded = Config::load(&config_path);
    let has_sftp = loaded.as_ref().is_ok_and(|c| {
        c.destinations
            .iter()
            .any(|d| d.kind == darvault::config::Kind::Sftp)
    });
    if has_sftp {
        darvault::tools::ssh::install(&darvault::paths::default_state_dir());
    }
    let code = match run(&cli, config_path, loaded) {
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

fn run(
    cli: &Cli,
    config_path: std::path::PathBuf,
    loaded: Result<Config, Error>,
) -> Result<u8, Error> {
    darvault::tools::process::install_stop_handler()
        .map_err(|e| Error::Failed(format!("cannot install signal handlers: {e}")))?;
    if let Some(wait) = &cli.lock_wait {
        let wait = darvault::config::Duration::try_from(wait.clone())
            .map_err(|e| Error::Usage(format!("--lock-wait: {e}")))?;
        darvault::lock::set_wait(wait.0);
    }
    cli::verbs::Verb::new(cli, config_path, loaded).run()
}
