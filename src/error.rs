//! The errors darvault expects, and the exit codes they and run outcomes map to.

use std::path::{Path, PathBuf};

/// Documented exit codes (see `darvault --help` and docs/exit-codes.md).
pub mod exit {
    /// Everything done and proven.
    pub const OK: u8 = 0;
    /// An operation failed (for a multi-definition run: every one of them failed).
    pub const FAILED: u8 = 1;
    /// Usage or configuration error: nothing was done.
    pub const USAGE: u8 = 2;
    /// Partial success: some definitions or destinations failed, the others succeeded.
    pub const PARTIAL: u8 = 3;
    /// An audit found damage that was not repaired (repairable).
    pub const DAMAGE_LEFT: u8 = 4;
    /// An audit found damage that cannot be repaired.
    pub const UNREPAIRABLE: u8 = 5;
    /// Done, with warnings (e.g. some source files could not be read and are not in the set).
    pub const WARNINGS: u8 = 6;
    /// Another darvault run holds the repository lock.
    pub const BUSY: u8 = 7;
    /// `status --check`: a definition's backup rule (3-2-1-1-0) does not hold.
    pub const RULE_FAILS: u8 = 8;
    /// Interrupted by SIGINT/SIGTERM; nothing half-done was published.
    pub const INTERRUPTED: u8 = 130;

    /// The code of a run over `total` independent units (definitions, destinations) of which
    /// those in `failed` failed with these codes: OK when none failed, PARTIAL when some did,
    /// their common code (or FAILED) when all did; an interruption wins over everything.
    pub fn of_units(failed: &[u8], total: usize) -> u8 {
        if failed.contains(&INTERRUPTED) {
            INTERRUPTED
        } else if failed.is_empty() {
            OK
        } else if failed.len() < total {
            PARTIAL
        } else if failed.iter().all(|c| *c == failed[0]) {
            failed[0]
        } else {
            FAILED
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What an error ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reach {
    /// The file or the set being worked on: the others go on (a file that cannot be read,
    /// a tool failing on one archive).
    Item,
    /// The copy: its storage keeps failing or stopped answering, or another run holds it.
    Copy,
    /// The whole run: it was interrupted, or nothing can be done as configured.
    Run,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration file is missing, unreadable or invalid (message names file, line, key).
    #[error("{0}")]
    Config(String),
    /// The command line asks for something that cannot be done as asked.
    #[error("{0}")]
    Usage(String),
    /// A required external program is not installed.
    #[error("`{tool}` was not found: {hint}")]
    MissingTool { tool: String, hint: String },
    /// Another run holds the lock.
    #[error("another darvault run is using {}: {holder}", path.display())]
    Busy { path: PathBuf, holder: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// An external program failed; `detail` carries the tail of its stderr.
    #[error("{tool} failed ({status}){detail}")]
    Tool {
        tool: String,
        status: String,
        detail: String,
    },
    /// A copy's storage failed; `retry` says whether trying again later can help.
    #[error("{what}: {cause}{}", if *retry { " (temporary: a later run may succeed)" } else { "" })]
    Storage {
        what: String,
        cause: String,
        retry: bool,
    },
    /// A copy stopped answering: nothing moved for the stall timeout. Not tried again.
    #[error("{what}: nothing moved for {seconds}s: {copy} stopped answering (stall_timeout)")]
    Stalled {
        what: String,
        copy: String,
        seconds: u64,
    },
    /// dar could not decrypt an archive with the configured passphrase.
    #[error(
        "wrong passphrase for definition {definition}: dar could not decrypt the archive with it (or the archive's encryption header is damaged: `darvault audit` tells)"
    )]
    WrongPassphrase { definition: String },
    /// An operation could not be completed (the message says why).
    #[error("{0}")]
    Failed(String),
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Config(_) | Error::Usage(_) | Error::MissingTool { .. } => exit::USAGE,
            Error::Busy { .. } => exit::BUSY,
            Error::Interrupted => exit::INTERRUPTED,
            Error::Io { .. }
            | Error::Tool { .. }
            | Error::Failed(_)
            | Error::Storage { .. }
            | Error::Stalled { .. }
            | Error::WrongPassphrase { .. } => exit::FAILED,
        }
    }

    /// How far the error reaches when it happens while working on one file or set of a copy:
    /// what it ends.
    pub fn reach(&self) -> Reach {
        match self {
            Error::Interrupted | Error::Config(_) | Error::Usage(_) | Error::MissingTool { .. } => {
                Reach::Run
            }
            Error::Stalled { .. } | Error::Busy { .. } | Error::Storage { retry: true, .. } => {
                Reach::Copy
            }
            Error::Storage { retry: false, .. }
            | Error::Io { .. }
            | Error::Tool { .. }
            | Error::WrongPassphrase { .. }
            | Error::Failed(_) => Reach::Item,
        }
    }

    /// Whether trying the same thing again may succeed (a timeout, a reset, a 5xx).
    pub fn retry_helps(&self) -> bool {
        matches!(self, Error::Storage { retry: true, .. })
    }

    /// Wrap an I/O error with what was being done and to which path.
    pub fn io(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
        let context = format!("{what} {}", path.display());
        move |source| Error::Io { context, source }
    }
}
