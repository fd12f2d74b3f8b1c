//! darvault: long-term archival backups with dar whose integrity can be proven, carried and
//! repaired anywhere. The library owns every operation; the command line only presents.

pub mod audit;
pub mod backup;
pub mod cleanup;
pub mod config;
pub mod copy;
pub mod demo;
pub mod error;
pub mod hashing;
pub mod list;
pub mod lock;
pub mod notify;
pub mod parallel;
pub mod paths;
pub mod progress;
pub mod replicate;
pub mod restore;
pub mod secrets;
pub mod set;
pub mod state;
pub mod status;
pub mod systemd;
pub mod tools;

pub use error::{Error, Result};

/// This machine's host name (recorded in manifests and lock files).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}
