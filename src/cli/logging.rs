//! Logs go to stderr (warnings by default) and to files in the state directory (see
//! `darvault::logs`): a daily log of what each run did (the debug trace with -vv) and
//! `commands.log`, what the commands darvault ran said. All mask every registered secret;
//! the files keep other crates (storage, HTTP, signing) at info, since their debug output
//! prints credentials, and live in the private state directory (0700, files 0600).

use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use darvault::logs::{OUTPUT_TARGET, RUN_MARK};
use darvault::secrets::MaskingWriter;

/// Keep this many daily log files.
const KEEP_LOG_FILES: usize = 14;

/// Flushes the file logs when dropped.
pub struct Guards(#[allow(dead_code)] Vec<tracing_appender::non_blocking::WorkerGuard>);

pub fn init(verbose: u8, quiet: bool, state_dir: Option<&Path>) -> Guards {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        _ => "debug",
    };
    // RUST_LOG, when set, overrides -v/-q for stderr.
    // The storage libraries' own chatter is shown with -v, not by default.
    let quiet_storage = if verbose == 0 {
        darvault::copy::QUIET_LOG_DIRECTIVES
    } else {
        ""
    };
    let stderr_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level}{quiet_storage}")));
    // Colours only for a terminal: a log file or a pipe gets plain text.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(MaskingWriter(std::io::stderr))
        .with_target(false)
        .without_time()
        .with_filter(stderr_filter);
    let mut guards = Vec::new();
    let main_filter = if verbose >= 2 {
        format!("info,darvault=debug,{OUTPUT_TARGET}=off")
    } else {
        format!("info,{OUTPUT_TARGET}=off")
    };
    let file_layer = state_dir.and_then(file_appender).map(|appender| {
        let (writer, guard) = tracing_appender::non_blocking(appender);
        guards.push(guard);
        tracing_subscriber::fmt::layer()
            .with_writer(MaskingWriter(writer))
            .with_ansi(false)
            .with_target(false)
            .with_filter(EnvFilter::new(main_filter))
    });
    let commands_layer = state_dir
        .and_then(|d| darvault::logs::CappedFile::open(d).ok())
        .map(|file| {
            let (writer, guard) = tracing_appender::non_blocking(file);
            guards.push(guard);
            tracing_subscriber::fmt::layer()
                .with_writer(MaskingWriter(writer))
                .with_ansi(false)
                .with_target(false)
                .with_filter(EnvFilter::new(format!("off,{OUTPUT_TARGET}=debug")))
        });
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .with(commands_layer)
        .init();
    if state_dir.is_some() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mark = format!(
            "{RUN_MARK}{} (pid {}) ===",
            args.join(" "),
            std::process::id()
        );
        tracing::info!("{mark}");
        tracing::info!(target: OUTPUT_TARGET, "{mark}");
    }
    Guards(guards)
}

fn file_appender(state_dir: &Path) -> Option<std::fs::File> {
    let dir = darvault::logs::dir(state_dir);
    darvault::paths::private_dir(state_dir).ok()?;
    darvault::paths::private_dir(&dir).ok()?;
    // Files an older darvault left readable are closed too.
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let _ = darvault::paths::private_file(&e.path());
    }
    darvault::logs::open_daily(state_dir, KEEP_LOG_FILES).ok()
}
