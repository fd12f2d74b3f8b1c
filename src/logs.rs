//! darvault's log files, in `<state dir>/logs/` (private: 0700, files 0600):
//! - `darvault.<date>.log`, one a day, 14 kept: what each run did (info; `-vv` adds the debug
//!   trace);
//! - `commands.log`, capped at 10 MiB and rotated to `commands.log.1` … `.3`: every external
//!   command a run started, what it wrote to stderr (dar's "Error while saving …", par2's
//!   summaries), dar's own report lines, and how it ended — without dar's per-file chatter.
//!
//! Every run begins both with a line holding [`RUN_MARK`], so `darvault log` can show the last
//! run alone. Lines are written through the secret mask (see `secrets`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The tracing target of child output: it goes to `commands.log` only.
pub const OUTPUT_TARGET: &str = "darvault::output";
/// Begins the first line of every run in both logs.
pub const RUN_MARK: &str = "=== darvault ";
/// Prefix and suffix of the daily main log files.
pub const MAIN_PREFIX: &str = "darvault";
pub const MAIN_SUFFIX: &str = "log";
const COMMANDS: &str = "commands.log";
/// Size of `commands.log` before it is rotated, and how many rotated files are kept.
const COMMANDS_MAX: u64 = 10 << 20;
const COMMANDS_KEPT: u32 = 3;

pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("logs")
}

/// The log `darvault log` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// What runs did.
    Main,
    /// What the commands they ran said.
    Commands,
}

/// The lines of the last run in the newest file of `which`: from the last line holding
/// [`RUN_MARK`] to the end (a run that overlapped it, from a timer, may be interleaved).
pub fn last_run(state_dir: &Path, which: Which) -> Result<Vec<String>> {
    let file = match which {
        Which::Main => newest_main(&dir(state_dir))?,
        Which::Commands => Some(dir(state_dir).join(COMMANDS)).filter(|f| f.is_file()),
    };
    let Some(file) = file else {
        return Err(Error::Failed(format!(
            "no log in {}: darvault writes one from its first backup, replicate, audit or cleanup",
            dir(state_dir).display()
        )));
    };
    let text = std::fs::read(&file).map_err(Error::io("cannot read", &file))?;
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.contains(RUN_MARK))
        .unwrap_or(0);
    Ok(lines[start..].iter().map(|l| l.to_string()).collect())
}

fn newest_main(dir: &Path) -> Result<Option<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(None);
    };
    // Daily names sort by date.
    Ok(entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_daily(p))
        .max())
}

/// Today's daily log (`darvault.<UTC date>.log`), opened to append and private (0600) from
/// its first byte; the oldest beyond `keep` are removed. A run that goes on past midnight
/// stays in the file of the day it started.
pub fn open_daily(state_dir: &Path, keep: usize) -> std::io::Result<File> {
    let dir = dir(state_dir);
    let today = jiff::Timestamp::now().strftime("%Y-%m-%d");
    let file = open_private(&dir.join(format!("{MAIN_PREFIX}.{today}.{MAIN_SUFFIX}")))?;
    let mut daily: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| is_daily(p))
        .collect();
    daily.sort();
    for old in daily.iter().rev().skip(keep) {
        let _ = std::fs::remove_file(old);
    }
    Ok(file)
}

fn is_daily(p: &Path) -> bool {
    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
        n.starts_with(&format!("{MAIN_PREFIX}.")) && n.ends_with(&format!(".{MAIN_SUFFIX}"))
    })
}

/// `commands.log`, rotated when it would grow past its cap: appends, creates it private.
pub struct CappedFile {
    path: PathBuf,
    file: File,
    size: u64,
}

impl CappedFile {
    pub fn open(state_dir: &Path) -> std::io::Result<CappedFile> {
        let path = dir(state_dir).join(COMMANDS);
        let file = open_private(&path)?;
        let size = file.metadata()?.len();
        Ok(CappedFile { path, file, size })
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let rotated = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..COMMANDS_KEPT).rev() {
            let _ = std::fs::rename(rotated(n), rotated(n + 1));
        }
        std::fs::rename(&self.path, rotated(1))?;
        self.file = open_private(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl CappedFile {
    /// Another run (a timer) may have rotated the file: write to the one with the name.
    fn follow_rotation(&mut self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let named = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        if named != Some(self.file.metadata()?.ino()) {
            self.file = open_private(&self.path)?;
            self.size = self.file.metadata()?.len();
        }
        Ok(())
    }
}

impl Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.follow_rotation()?;
        if self.size > 0 && self.size + buf.len() as u64 > COMMANDS_MAX {
            self.rotate()?;
        }
        let n = self.file.write(buf)?;
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commands_log_rotates_at_its_cap_and_keeps_three() {
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir(state.path())).unwrap();
        let mut log = CappedFile::open(state.path()).unwrap();
        let line = vec![b'x'; 1 << 20];
        for _ in 0..(4 * 11) {
            log.write_all(&line).unwrap();
        }
        let names: Vec<String> = std::fs::read_dir(dir(state.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 4, "{names:?}");
        for e in std::fs::read_dir(dir(state.path())).unwrap() {
            assert!(e.unwrap().metadata().unwrap().len() <= COMMANDS_MAX);
        }
    }

    #[test]
    fn the_last_run_starts_at_its_mark() {
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir(state.path())).unwrap();
        std::fs::write(
            dir(state.path()).join(COMMANDS),
            format!("{RUN_MARK}backup (pid 1)\nold\n{RUN_MARK}audit (pid 2)\nnew\n"),
        )
        .unwrap();
        let lines = last_run(state.path(), Which::Commands).unwrap();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("audit") && lines[1] == "new");
    }
}
