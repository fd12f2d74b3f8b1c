//! "Is my data safe?": the backup rule (3-2-1-1-0 by default) per definition. A copy counts
//! when it holds the definition's newest chain, each set of it proven there within
//! `proof_max_age`, and no set of the definition there was found damaged at its last audit.
//! The counted copies are then weighed: how many, on how many kinds of media, how many
//! offsite, how many offline or immutable; and every damaged set on any copy is an error.
//! What to do about each part that fails is said as a value (`Advice`), worded where shown.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::audit::Status;
use crate::config::{Config, Definition, Rule};
use crate::state::Audited;

/// What a copy is, for the rule, and what it holds.
pub struct CopyFacts {
    pub name: String,
    pub media: String,
    pub offsite: bool,
    pub offline: bool,
    pub immutable: bool,
    /// The set names it holds (as the state database knows them when it could not be
    /// read); None when not even that is known.
    pub held: Option<HashSet<String>>,
    /// It could be read now.
    pub reachable: bool,
}

impl CopyFacts {
    /// The repository: on this machine's disk, online, writable.
    pub fn repository(held: Option<HashSet<String>>) -> CopyFacts {
        CopyFacts {
            name: "repository".into(),
            media: "disk".into(),
            offsite: false,
            offline: false,
            immutable: false,
            reachable: held.is_some(),
            held,
        }
    }

    pub fn of(dest: &crate::config::Destination, held: Option<HashSet<String>>) -> CopyFacts {
        CopyFacts {
            name: dest.name().to_owned(),
            media: dest.media(),
            offsite: dest.is_offsite(),
            offline: dest.is_offline(),
            immutable: dest.is_immutable(),
            reachable: held.is_some(),
            held,
        }
    }
}

/// One part of the rule: what the copies give, and what the rule asks.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Part {
    pub have: u32,
    pub need: u32,
}

impl Part {
    /// At least `need` (errors: at most).
    fn at_least(have: u32, need: u32) -> Part {
        Part { have, need }
    }

    pub fn holds(&self) -> bool {
        self.have >= self.need
    }
}

/// What to do so that a part of the rule holds.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "do", rename_all = "kebab-case")]
pub enum Advice {
    /// The definition has no set yet.
    Backup,
    /// The copy lacks sets of the newest chain.
    Replicate { copy: String },
    /// The copy holds the chain, not proven within `proof_max_age` (days since the oldest
    /// proof of its sets; None: a set of it was never proven there).
    Audit {
        copy: String,
        proven_days_ago: Option<u64>,
    },
    /// Sets of the definition were found damaged on the copy.
    Repair { copy: String, sets: u32 },
    /// The copy could not be read, and is not one that is offline by design; weighed by
    /// what the state database knows of it.
    Unreachable { copy: String },
    /// Fewer copies are configured than the rule asks for.
    AddCopies { more: u32 },
    /// Every copy that counts is on the same kind of media.
    AnotherMedia,
    /// No configured copy is offsite.
    AnOffsiteCopy,
    /// No configured copy is offline or immutable.
    AnOfflineOrImmutableCopy,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuleStatus {
    pub definition: String,
    pub rule: Rule,
    pub holds: bool,
    pub copies: Part,
    pub media: Part,
    pub offsite: Part,
    pub offline_or_immutable: Part,
    /// Damaged sets found at their last audit (`need`: the most the rule allows).
    pub errors: Part,
    /// The copies that count.
    pub counted: Vec<String>,
    pub advice: Vec<Advice>,
}

/// A copy's standing for one definition.
struct Standing {
    holds_chain: bool,
    /// Days since the oldest proof of the chain's sets there; None: one was never proven.
    proven_days_ago: Option<u64>,
    damaged: u32,
}

/// The rule of `definition`, whose sets in the repository are `sets` (oldest first).
pub fn evaluate(
    definition: &Definition,
    sets: &[crate::copy::FoundSet],
    copies: &[CopyFacts],
    audits: &[Audited],
    now: jiff::Timestamp,
) -> RuleStatus {
    let rule = definition.rule;
    let chain: Vec<String> = sets
        .last()
        .map(|s| {
            let mut chain = s.manifest.set.chain.clone();
            chain.push(s.manifest.set.name.clone());
            chain
        })
        .unwrap_or_default();
    let all: HashSet<&str> = sets.iter().map(|s| s.manifest.set.name.as_str()).collect();
    let max_age_days = definition.proof_max_age.0.as_secs() / 86400;
    let mut advice = Vec::new();
    if chain.is_empty() {
        advice.push(Advice::Backup);
    }
    let mut counted: Vec<&CopyFacts> = Vec::new();
    let mut errors = 0;
    for copy in copies {
        if !copy.reachable && !copy.offline {
            advice.push(Advice::Unreachable {
                copy: copy.name.clone(),
            });
        }
        let Some(held) = &copy.held else {
            continue;
        };
        let standing = standing(copy, held, &chain, &all, audits, now);
        errors += standing.damaged;
        if chain.is_empty() {
            continue;
        }
        let fresh = standing
            .proven_days_ago
            .is_some_and(|days| days <= max_age_days);
        match () {
            _ if !standing.holds_chain => advice.push(Advice::Replicate {
                copy: copy.name.clone(),
            }),
            _ if standing.damaged > 0 => advice.push(Advice::Repair {
                copy: copy.name.clone(),
                sets: standing.damaged,
            }),
            _ if !fresh => advice.push(Advice::Audit {
                copy: copy.name.clone(),
                proven_days_ago: standing.proven_days_ago,
            }),
            _ => counted.push(copy),
        }
    }
    let media: HashSet<&str> = counted.iter().map(|c| c.media.as_str()).collect();
    let count = |f: fn(&CopyFacts) -> bool| counted.iter().filter(|c| f(c)).count() as u32;
    let status = RuleStatus {
        definition: definition.name().to_string(),
        rule,
        copies: Part::at_least(counted.len() as u32, rule.copies),
        media: Part::at_least(media.len() as u32, rule.media),
        offsite: Part::at_least(count(|c| c.offsite), rule.offsite),
        offline_or_immutable: Part::at_least(
            count(|c| c.offline || c.immutable),
            rule.offline_or_immutable,
        ),
        errors: Part {
            have: errors,
            need: rule.errors,
        },
        holds: false,
        counted: counted.iter().map(|c| c.name.clone()).collect(),
        advice,
    };
    finish(status, copies)
}

/// Whether every part holds, and what to add where no configured copy could make a part
/// hold.
fn finish(mut status: RuleStatus, copies: &[CopyFacts]) -> RuleStatus {
    let rule = status.rule;
    if (copies.len() as u32) < rule.copies {
        status.advice.push(Advice::AddCopies {
            more: rule.copies - copies.len() as u32,
        });
    }
    let media: HashSet<&str> = copies.iter().map(|c| c.media.as_str()).collect();
    if !status.media.holds() && (media.len() as u32) < rule.media {
        status.advice.push(Advice::AnotherMedia);
    }
    let offsite = copies.iter().filter(|c| c.offsite).count() as u32;
    if !status.offsite.holds() && offsite < rule.offsite {
        status.advice.push(Advice::AnOffsiteCopy);
    }
    let apart = copies.iter().filter(|c| c.offline || c.immutable).count() as u32;
    if !status.offline_or_immutable.holds() && apart < rule.offline_or_immutable {
        status.advice.push(Advice::AnOfflineOrImmutableCopy);
    }
    status.holds = status.copies.holds()
        && status.media.holds()
        && status.offsite.holds()
        && status.offline_or_immutable.holds()
        && status.errors.have <= status.errors.need;
    status
}

/// What `copy` holds of the chain, how recently it was proven, and its damaged sets of the
/// definition (`all`: the definition's sets).
fn standing(
    copy: &CopyFacts,
    held: &HashSet<String>,
    chain: &[String],
    all: &HashSet<&str>,
    audits: &[Audited],
    now: jiff::Timestamp,
) -> Standing {
    let mine: BTreeMap<&str, &Audited> = audits
        .iter()
        .filter(|a| a.copy == copy.name && held.contains(&a.set_name))
        .map(|a| (a.set_name.as_str(), a))
        .collect();
    let damaged = mine
        .iter()
        .filter(|(set, _)| all.contains(*set))
        .filter(|(_, a)| {
            !matches!(
                Status::named(&a.status),
                Some(Status::Ok | Status::Repaired)
            )
        })
        .count() as u32;
    let mut oldest: Option<u64> = Some(0);
    for set in chain {
        let proven = mine
            .get(set.as_str())
            .and_then(|a| a.proven_at.as_deref())
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        let days = proven.map(|t| now.duration_since(t).as_secs().max(0) as u64 / 86400);
        oldest = match (oldest, days) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
    }
    Standing {
        holds_chain: chain.iter().all(|s| held.contains(s)),
        proven_days_ago: oldest,
        damaged,
    }
}

/// Record each definition's verdict; a notice for each that changed since `status` last
/// looked (one that starts to fail, one that holds again).
pub fn tell_changes(config: &Config, state: &crate::state::State, rules: &[RuleStatus]) {
    let mut changed = Vec::new();
    for r in rules {
        match state.rule_verdict(&r.definition, r.holds) {
            Ok(Some(before)) if before != r.holds => changed.push(r),
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot record the rule's verdict: {e}"),
        }
    }
    if changed.is_empty() {
        return;
    }
    let failing = changed.iter().any(|r| !r.holds);
    let lines = changed
        .iter()
        .map(|r| {
            let verdict = if r.holds { "holds again" } else { "fails" };
            format!("{}: the {} rule {verdict}", r.definition, r.rule)
        })
        .collect();
    let ending = crate::notify::Ending {
        event: match failing {
            true => crate::config::Event::Failure,
            false => crate::config::Event::Success,
        },
        title: match failing {
            true => "status: a backup rule fails".into(),
            false => "status: the backup rules hold again".into(),
        },
        lines,
        runs: Vec::new(),
    };
    crate::notify::finish(Some(config), None, ending);
}
