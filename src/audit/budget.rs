//! The read budget. A copy its server vouches for (a checksum it keeps, a hash it computes)
//! is proven without being downloaded; that proves what the server says, not what its disks
//! still hold. With `read_budget`, each audit also downloads and hashes whole the files read
//! back least recently (or never since they were sent), as many as the month's budget has
//! room for, so that every byte is read again every `read_every`.

use std::collections::{HashMap, HashSet};

use crate::config::Config;
use crate::copy::Store;
use crate::error::Result;
use crate::state::State;

/// The budget's month.
const MONTH: jiff::SignedDuration = jiff::SignedDuration::from_hours(30 * 24);

/// The files of `copy`, among the sets in `set_dirs`, to read back whole in this audit: the
/// least recently read first, within what is left of the month's budget.
pub(super) fn due(
    copy: &Store,
    config: Option<&Config>,
    state: &State,
    set_dirs: &[String],
) -> Result<HashSet<String>> {
    let budget = config
        .and_then(|c| c.destinations.iter().find(|d| d.name() == copy.name))
        .and_then(|d| d.read_budget);
    let Some(budget) = budget else {
        return Ok(HashSet::new());
    };
    let month_ago = jiff::Timestamp::now() - MONTH;
    let mut room = budget
        .0
        .saturating_sub(state.bytes_read_back_since(&copy.name, month_ago)?);
    let dirs: HashMap<&str, &str> = set_dirs
        .iter()
        .map(|dir| (dir.rsplit('/').next().unwrap_or(dir), dir.as_str()))
        .collect();
    let mut due = HashSet::new();
    for held in state.held_files(&copy.name)? {
        // Oldest first: the rest were read within the month (read them again next month).
        if held.last_read >= month_ago {
            break;
        }
        let Some(dir) = dirs.get(held.set_name.as_str()) else {
            continue;
        };
        // One that does not fit leaves room for smaller ones after it.
        if held.size > room {
            continue;
        }
        room -= held.size;
        due.insert(format!("{dir}/{}", held.path));
    }
    Ok(due)
}

/// Note the files of the set `set` at `dir` that were just read whole from `copy` and
/// matched its manifest: a file found damaged (`damaged`: every file its report names) stays
/// due, read again at the next audit until it is repaired.
pub(super) fn note_read(
    copy: &Store,
    state: &State,
    dir: &str,
    set: &str,
    damaged: &[&str],
) -> Result<()> {
    if copy.proof().is_none() {
        // A local copy is read whole at every audit.
        return Ok(());
    }
    // Every audit of a set reads its manifest and SHA256SUMS whole (a few KiB: not counted).
    for small in [crate::set::MANIFEST, crate::set::SHA256SUMS] {
        state.read_back(&copy.name, set, small, 0)?;
    }
    let prefix = format!("{dir}/");
    let read = copy.take_read();
    let bytes: u64 = read.iter().map(|(_, size)| size).sum();
    if bytes > 0 {
        state.read_bytes(&copy.name, bytes)?;
    }
    for (path, size) in read {
        if let Some(inside) = path.strip_prefix(&prefix)
            && !damaged.contains(&inside)
        {
            state.read_back(&copy.name, set, inside, size)?;
        }
    }
    Ok(())
}
