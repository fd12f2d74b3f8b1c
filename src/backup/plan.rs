//! Decide what a backup of one definition will make: the level, the set's name, its base and
//! chain, before anything is written.

use crate::config::{Definition, IncrBase};
use crate::copy::FoundSet;
use crate::error::{Error, Result};
use crate::set::{Level, SetName};

#[derive(Debug)]
pub struct Plan {
    pub name: SetName,
    pub base: Option<FoundSet>,
    /// The sets this one will need, oldest first (the base's chain plus the base).
    pub chain: Vec<String>,
}

/// `sets` are the definition's published sets, oldest first.
pub fn plan(
    definition: &Definition,
    level: Level,
    sets: &[FoundSet],
    now: jiff::ZonedDateTime,
) -> Result<Plan> {
    let name = definition.name().as_str();
    let newest = |want: &dyn Fn(Level) -> bool| sets.iter().rev().find(|s| want(s.name.level));
    let level = match level {
        Level::Incr if chain_too_long(definition, sets) => {
            tracing::warn!(
                "{name}: an INCR would make the chain longer than max_chain = {}: this set is a DIFF (everything since the FULL), which starts a short chain again",
                definition.max_chain
            );
            Level::Diff
        }
        level => level,
    };
    let base = match level {
        Level::Full => None,
        Level::Diff => Some(newest(&|l| l == Level::Full).ok_or_else(|| {
            Error::Failed(format!(
                "{name}: a DIFF needs a FULL to be based on and there is none: run `darvault backup --full -d {name}` first"
            ))
        })?),
        Level::Incr => {
            Some(incr_base(definition, sets).ok_or_else(|| {
                Error::Failed(format!(
                    "{name}: an INCR needs a set to be based on and there is none: run `darvault backup --full -d {name}` first"
                ))
            })?)
        }
    };
    let chain = match base {
        Some(b) => {
            let mut c = b.manifest.set.chain.clone();
            c.push(b.manifest.set.name.clone());
            c
        }
        None => Vec::new(),
    };
    Ok(Plan {
        name: unique_name(name, level, sets, now),
        base: base.cloned(),
        chain,
    })
}

/// What an INCR is based on (`incr_base`). Everything newer than the newest FULL belongs to
/// its chain.
fn incr_base<'a>(definition: &Definition, sets: &'a [FoundSet]) -> Option<&'a FoundSet> {
    let newest_full = || sets.iter().rev().find(|s| s.name.level == Level::Full);
    match definition.incr_base {
        IncrBase::Latest => sets.last(),
        IncrBase::Diff => sets
            .iter()
            .rev()
            .take_while(|s| s.name.level != Level::Full)
            .find(|s| s.name.level == Level::Diff)
            .or_else(newest_full),
    }
}

/// Whether an INCR would make its chain hold more than `max_chain` sets.
fn chain_too_long(definition: &Definition, sets: &[FoundSet]) -> bool {
    // The base's chain, the base, and the new set.
    let length = incr_base(definition, sets).map_or(0, |b| b.manifest.set.chain.len() + 2);
    definition.max_chain > 0 && length > definition.max_chain
}

/// Names carry the time to the second; a second set in the same second moves to the next one.
fn unique_name(
    definition: &str,
    level: Level,
    sets: &[FoundSet],
    now: jiff::ZonedDateTime,
) -> SetName {
    let mut at = now;
    loop {
        let candidate = SetName::new(definition, level, at.clone());
        let taken = sets.iter().any(|s| s.name.stamp == candidate.stamp);
        if !taken {
            return candidate;
        }
        at = at
            .checked_add(jiff::SignedDuration::from_secs(1))
            .expect("time in range");
    }
}
