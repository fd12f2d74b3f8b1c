//! Logs go to stderr (warnings by default) and, in full detail, to a daily-rotated file under
//! the state directory, where dar's own messages are kept too.

use std::path::Path;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
    // Storage retries are expected on flaky links: shown with -v, not by default.
    let quiet_retries = if verbose == 0 {
        ",opendal::layers::retry=error"
    } else {
        ""
    };
    let stderr_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level}{quiet_retries}")));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .with_filter(stderr_filter);
    let (file_layer, guard) = match state_dir.and_then(file_appender) {
        Some(appender) => {
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(false)
                .with_target(false)
                .with_filter(EnvFilter::new("debug"));
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
    std::fs::create_dir_all(&dir).ok()?;
    tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix("darvault")
        .filename_suffix("log")
        .max_log_files(KEEP_LOG_FILES)
        .build(dir)
        .ok()
}
