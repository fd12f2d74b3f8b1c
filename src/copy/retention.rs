//! How long a file uploaded to an object-locked copy stays locked: a span from its upload,
//! or as long as `cleanup` keeps its set there. A set kept forever cannot be locked forever
//! (the lock could never be lifted, nor shortened once set): it is locked a year ahead. And
//! a set may be kept past its level's age (a kept set needs it): `replicate` lengthens the
//! locks of the sets it still knows whenever less than half of what they are due is left.

use std::collections::BTreeMap;

use jiff::{Span, Timestamp, tz::TimeZone};

use crate::config::{Age, Keep};
use crate::set::SetName;

/// Added to the end of a set's keep: a lock that ends the day cleanup removes the set leaves
/// no room for a clock that runs late, nor for a removal that waits a few days.
pub fn margin() -> Span {
    Span::new().days(30)
}

/// How far ahead a set kept forever is locked.
pub fn horizon() -> Span {
    Span::new().years(1)
}

/// Whether a lock that ends at `until` is lengthened `now` toward `target`: when less than
/// half of what the target gives is left (a renewal is a request per file: for a set kept
/// forever about twice a year, not at every run).
pub fn renewal_due(until: Timestamp, target: Timestamp, now: Timestamp) -> bool {
    let half = jiff::SignedDuration::from_secs((target.as_second() - now.as_second()) / 2);
    now.checked_add(half).is_ok_and(|middle| until < middle)
}

/// The retention an object-locked copy gives what it uploads.
#[derive(Debug, Clone)]
pub enum LockSpan {
    /// This long from the upload.
    For(Span),
    /// As long as each definition's retention keeps the set (by definition name).
    Kept(BTreeMap<String, Keep>),
}

impl LockSpan {
    /// Until when the file at `path` (its set is the folder named after a set, in the
    /// definition's folder) is locked if uploaded `now`. A file outside any set (a writer's
    /// record) is locked for the margin.
    pub fn until(&self, path: &str, now: Timestamp) -> Timestamp {
        match self {
            LockSpan::For(span) => after(now, *span),
            LockSpan::Kept(keeps) => match kept_age(keeps, path) {
                Some((created, Age::Span(span))) => {
                    let end = after(created, span).max(now);
                    after(end, margin())
                }
                Some((_, Age::Forever)) => after(after(now, horizon()), margin()),
                None => after(now, margin()),
            },
        }
    }

    /// Whether locks are lengthened while their sets are kept (not a fixed span).
    pub fn renews(&self) -> bool {
        matches!(self, LockSpan::Kept(_))
    }
}

/// When the set holding `path` was made, and how long its definition keeps sets of its level.
fn kept_age(keeps: &BTreeMap<String, Keep>, path: &str) -> Option<(Timestamp, Age)> {
    let parts: Vec<&str> = path.split('/').collect();
    parts.windows(2).rev().find_map(|pair| {
        let name = pair[1].parse::<SetName>().ok()?;
        let keep = keeps.get(pair[0]).filter(|_| name.definition == pair[0])?;
        let created = name
            .stamp
            .to_zoned_datetime(TimeZone::system())
            .ok()?
            .timestamp();
        Some((created, name.level.kept(keep)))
    })
}

/// `span` after `at`, in UTC (years and months as the calendar has them).
fn after(at: Timestamp, span: Span) -> Timestamp {
    at.to_zoned_datetime(TimeZone::UTC)
        .checked_add(span)
        .map(|z| z.timestamp())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keeps() -> BTreeMap<String, Keep> {
        BTreeMap::from([("docs".to_owned(), Keep::default())])
    }

    #[test]
    fn a_set_is_locked_as_long_as_it_is_kept() {
        let span = LockSpan::Kept(keeps());
        let now: Timestamp = "2026-12-07T12:00:00Z".parse().unwrap();
        let days = |t: Timestamp| ((t - now).as_secs_f64() / 86400.0).round() as i64;
        // Kept 100 days (the default for a DIFF), made 10 days ago: 90 more, and the margin.
        let diff = "root/docs/docs_DIFF_2026-11-27_120000/docs_DIFF_2026-11-27_120000.1.dar";
        let until = span.until(diff, now);
        assert!((119..=121).contains(&days(until)), "{until}");
        assert!(span.renews());
        // Kept forever: a year ahead.
        let full = "docs/docs_FULL_2026-01-01_120000/MANIFEST.toml";
        assert!((394..=397).contains(&days(span.until(full, now))));
        // Past its keep: the margin from now. Outside a set: the margin.
        let old = "docs/docs_INCR_2020-01-01_120000/SHA256SUMS";
        assert_eq!(days(span.until(old, now)), 30);
        assert_eq!(days(span.until(".darvault/lock", now)), 30);
        // Another definition's folder does not lend its retention.
        let odd = "other/docs_FULL_2026-01-01_120000/MANIFEST.toml";
        assert_eq!(days(span.until(odd, now)), 30);
        // Renewed when less than half of what is due is left.
        let year = span.until(full, now);
        assert!(renewal_due(after(now, Span::new().months(5)), year, now));
        assert!(!renewal_due(after(now, Span::new().months(8)), year, now));
        assert!(!renewal_due(year, year, now));
        let old = span.until(old, now);
        assert!(renewal_due(after(now, Span::new().days(10)), old, now));
        assert!(!renewal_due(after(now, Span::new().days(20)), old, now));
        let fixed = LockSpan::For(Span::new().days(400));
        assert!(!fixed.renews());
        assert_eq!(days(fixed.until(full, now)), 400);
    }
}
