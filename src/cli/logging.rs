//! Logs go to stderr (warnings by default) and, in full detail, to a daily-rotated file under
//! the state directory, where dar's own messages are kept too. Both mask every registered
//! secret; the file keeps other crates (storage, HTTP, signing) at info, since their debug
//! output prints credentials, and lives in the private state directory (0700, files 0600).

use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use darvault::secrets::MaskingWriter;

/// Keep this many daily log files.
const KEEP_LOG_FILES: usize = 14;

/// Returns a guard that flushes the file log when dropped.
pub fn init(
    verbose: u8,
    quiet: bool,
    state_dir: Option<&Path>,
) -> Option<tracing_appender::non_blocking::WorkerGuard> {
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
    let (file_layer, guard) = match state_dir.and_then(file_appender) {
        Some(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(MaskingWriter(writer))
                .with_ansi(false)
                .with_target(false)
                .with_filter(EnvFilter::new("info,darvault=debug"));
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .init();
    guard
}

fn file_appender(state_dir: &Path) -> Option<tracing_appender::rolling::RollingFileAppender> {
    let dir = state_dir.join("logs");
    darvault::paths::private_dir(state_dir).ok()?;
    darvault::paths::private_dir(&dir).ok()?;
    // Files rotated in later keep to the private folder; the ones there now are closed too.
    for e in std::fs::read_dir(&dir).ok()?.flatten() {
        let _ = darvault::paths::private_file(&e.path());
    }
    tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("darvault")
        .filename_suffix("log")
        .max_log_files(KEEP_LOG_FILES)
        .build(dir)
        .ok()
}
