//! darvault: long-term archival backups with dar whose integrity can be proven, carried and
//! repaired anywhere. The library owns every operation; the command line only presents.

pub mod audit;
pub mod backup;
pub mod cleanup;
pub mod config;
pub mod copy;
pub mod cpu;
pub mod deadline;
pub mod demo;
pub mod error;
pub mod fault;
pub mod hashing;
pub mod list;
pub mod lock;
pub mod logs;
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

/// A name as it may be shown on a terminal: control characters escaped as `ls -b` does
/// (a file name from a copy could otherwise move the cursor or recolour the screen). JSON
/// output keeps names exact.
pub fn printable(name: &str) -> std::borrow::Cow<'_, str> {
    if !name.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}
