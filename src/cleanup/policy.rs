//! Which sets retention lets go: pure logic over names, levels, times and chains.
//!
//! A set is kept when it is younger than its level's age, when it belongs to the newest
//! set's chain (a copy is never emptied by the calendar), or when a kept set depends on it.
//! Everything else may go; FULLs only with confirmation.

use std::collections::BTreeSet;

use serde::Serialize;

use crate::config::{Age, Keep};
use crate::set::Level;

pub struct Candidate<'a> {
    pub name: &'a str,
    pub level: Level,
    pub created: jiff::Timestamp,
    /// The sets this one needs, FULL first.
    pub chain: &'a [String],
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub set: String,
    pub remove: bool,
    pub reason: String,
}

/// How long sets of this level are kept.
fn kept_for(keep: &Keep, level: Level) -> Age {
    level.kept(keep)
}

/// Verdicts in the order of `sets` (oldest first).
pub fn judge(sets: &[Candidate], keep: &Keep, now: &jiff::ZonedDateTime) -> Vec<Verdict> {
    let mut reasons: Vec<Option<String>> = sets
        .iter()
        .map(|s| {
            let age = kept_for(keep, s.level);
            match age.cutoff(now) {
                None => Some(format!("{} sets are kept forever", s.level)),
                Some(cutoff) if s.created >= cutoff => Some(format!("younger than {age}")),
                Some(_) => None,
            }
        })
        .collect();
    if let Some(newest) = reasons.last_mut() {
        newest.get_or_insert_with(|| "the newest set".into());
    }
    // Dependencies of kept sets are kept; walking newest first settles chains of any length.
    let mut needed: BTreeSet<&str> = BTreeSet::new();
    for (s, reason) in sets.iter().zip(&mut reasons).rev() {
        if reason.is_none() && needed.contains(s.name) {
            *reason = Some("a kept set depends on it".into());
        }
        if reason.is_some() {
            needed.extend(s.chain.iter().map(String::as_str));
        }
    }
    sets.iter()
        .zip(reasons)
        .map(|(s, reason)| Verdict {
            set: s.name.to_owned(),
            remove: reason.is_none(),
            reason: reason.unwrap_or_else(|| format!("older than {}", kept_for(keep, s.level))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two years of the default schedule: FULL each 1 January, DIFF on the 1st of the other
    /// months, INCR every third day (on the newest set: INCRs chain up since the last DIFF).
    fn history() -> Vec<(String, Level, jiff::Timestamp, Vec<String>)> {
        let mut sets: Vec<(String, Level, jiff::Timestamp, Vec<String>)> = Vec::new();
        let mut day: jiff::civil::Date = "2024-01-01".parse().unwrap();
        let end: jiff::civil::Date = "2025-12-31".parse().unwrap();
        let mut chain: Vec<String> = Vec::new();
        while day <= end {
            let level = if day.month() == 1 && day.day() == 1 {
                Some(Level::Full)
            } else if day.day() == 1 {
                Some(Level::Diff)
            } else if day.day() >= 4 && (day.day() - 4) % 3 == 0 {
                Some(Level::Incr)
            } else {
                None
            };
            if let Some(level) = level {
                let name = format!("{level}-{day}");
                let created = day.at(2, 0, 0, 0).in_tz("UTC").unwrap().timestamp();
                let base_chain = match level {
                    Level::Full => Vec::new(),
                    Level::Diff => chain[..1].to_vec(),
                    Level::Incr => chain.clone(),
                };
                chain = base_chain.iter().cloned().chain([name.clone()]).collect();
                sets.push((name, level, created, base_chain));
            }
            day = day.tomorrow().unwrap();
        }
        sets
    }

    #[test]
    fn two_years_keep_exactly_the_policy_and_every_dependency() {
        let sets = history();
        let candidates: Vec<Candidate> = sets
            .iter()
            .map(|(n, l, c, chain)| Candidate {
                name: n,
                level: *l,
                created: *c,
                chain,
            })
            .collect();
        let keep = Keep {
            full: "1y".parse().unwrap(),
            diff: "100d".parse().unwrap(),
            incr: "40d".parse().unwrap(),
        };
        let now: jiff::ZonedDateTime = "2026-01-01T00:00:00+00:00[UTC]".parse().unwrap();
        let verdicts = judge(&candidates, &keep, &now);
        let kept: BTreeSet<&str> = verdicts
            .iter()
            .filter(|v| !v.remove)
            .map(|v| v.set.as_str())
            .collect();

        // Every kept set's whole chain is kept.
        for c in &candidates {
            if kept.contains(c.name) {
                for dep in c.chain {
                    assert!(kept.contains(dep.as_str()), "{} needs {dep}", c.name);
                }
            }
        }
        // The 2024 FULL is over a year old and no kept set needs it; the 2025 one stays.
        assert!(!kept.contains("FULL-2024-01-01"));
        assert!(kept.contains("FULL-2025-01-01"));
        // DIFFs: the last 100 days (October to December 2025), none older.
        let diffs: Vec<&str> = kept
            .iter()
            .copied()
            .filter(|n| n.starts_with("DIFF"))
            .collect();
        assert_eq!(
            diffs,
            ["DIFF-2025-10-01", "DIFF-2025-11-01", "DIFF-2025-12-01"]
        );
        // INCRs: those of the last 40 days (from 22 November), plus the older ones of
        // November that they chain to (an INCR needs every INCR since its DIFF).
        let incrs: Vec<&str> = kept
            .iter()
            .copied()
            .filter(|n| n.starts_with("INCR"))
            .collect();
        assert_eq!(incrs.first(), Some(&"INCR-2025-11-04"));
        assert!(incrs.iter().all(|n| *n >= "INCR-2025-11-04"));
        // Nothing else kept: removal is exactly the complement.
        assert_eq!(kept.len(), 1 + 3 + incrs.len());
        let reason = |n: &str| verdicts.iter().find(|v| v.set == n).unwrap().reason.clone();
        assert_eq!(reason("INCR-2025-11-04"), "a kept set depends on it");
        assert_eq!(reason("INCR-2025-11-22"), "younger than 40d");
        assert_eq!(reason("DIFF-2025-02-01"), "older than 100d");
        assert_eq!(reason("INCR-2025-10-31"), "older than 40d");
    }

    #[test]
    fn the_newest_chain_survives_a_copy_that_stopped_getting_backups() {
        let chain_of_diff = vec!["F".to_owned()];
        let old: jiff::Timestamp = "2020-01-01T00:00:00Z".parse().unwrap();
        let sets = [
            Candidate {
                name: "F",
                level: Level::Full,
                created: old,
                chain: &[],
            },
            Candidate {
                name: "D",
                level: Level::Diff,
                created: old,
                chain: &chain_of_diff,
            },
        ];
        let keep = Keep {
            full: "1y".parse().unwrap(),
            ..Keep::default()
        };
        let now = jiff::ZonedDateTime::now();
        assert!(judge(&sets, &keep, &now).iter().all(|v| !v.remove));
    }
}
