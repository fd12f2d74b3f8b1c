//! The archive set: its name, its level, its files, and how it goes from staging to published.

pub mod bundle;
pub mod manifest;
pub mod par2_index;
pub mod seal;
pub mod staging;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use manifest::{DefinitionRecord, Manifest};

/// The name of MANIFEST.toml inside a set directory.
pub const MANIFEST: &str = "MANIFEST.toml";
/// The name of the `sha256sum -c` file inside a set directory.
pub const SHA256SUMS: &str = "SHA256SUMS";
/// Written into a set folder by cleanup before it deletes anything there: the folder is
/// being removed, is no longer a set, and must never be healed back. The next cleanup
/// finishes the removal.
pub const REMOVING: &str = ".darvault-removing";
/// The record of a set being copied onto a copy (replicate): written before its first file,
/// removed after its manifest, so a copy cut short is known for what it is.
pub const WRITING: &str = ".darvault-writing";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Full,
    Diff,
    Incr,
}

impl Level {
    /// How long `keep` keeps sets of this level.
    pub fn kept(self, keep: &crate::config::Keep) -> crate::config::Age {
        match self {
            Level::Full => keep.full,
            Level::Diff => keep.diff,
            Level::Incr => keep.incr,
        }
    }
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Full => "FULL",
            Level::Diff => "DIFF",
            Level::Incr => "INCR",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "FULL" => Ok(Level::Full),
            "DIFF" => Ok(Level::Diff),
            "INCR" => Ok(Level::Incr),
            _ => Err(format!("{s:?} is not a level (FULL, DIFF, INCR)")),
        }
    }
}

/// `<definition>_<LEVEL>_<YYYY-MM-DD>_<HHMMSS>` in local time, with no colons so that FAT and
/// exFAT disks can hold it. The time makes several sets per day distinct.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetName {
    pub definition: String,
    pub level: Level,
    /// Local wall-clock time the set was started, as in the name.
    pub stamp: jiff::civil::DateTime,
}

impl SetName {
    pub fn new(definition: &str, level: Level, at: jiff::ZonedDateTime) -> SetName {
        let stamp = at.datetime();
        SetName {
            definition: definition.to_owned(),
            level,
            stamp: stamp.with().subsec_nanosecond(0).build().unwrap_or(stamp),
        }
    }

    /// The basename dar is given: slices are `<name>.<N>.dar`.
    pub fn archive_basename(&self) -> String {
        self.to_string()
    }

    /// The basename of the isolated catalogue: `<name>.catalog.1.dar`.
    pub fn catalogue_basename(&self) -> String {
        format!("{self}.catalog")
    }
}

impl fmt::Display for SetName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}_{}",
            self.definition,
            self.level,
            self.stamp.strftime("%Y-%m-%d_%H%M%S")
        )
    }
}

impl FromStr for SetName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not a set name (<definition>_<LEVEL>_<YYYY-MM-DD>_<HHMMSS>)");
        let mut parts = s.rsplitn(4, '_');
        let (time, date, level, definition) = (
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
            parts.next().ok_or_else(bad)?,
        );
        if definition.is_empty()
            || !definition
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(bad());
        }
        let level = level.parse().map_err(|_| bad())?;
        let stamp = jiff::civil::DateTime::strptime("%Y-%m-%d_%H%M%S", format!("{date}_{time}"))
            .map_err(|_| bad())?;
        Ok(SetName {
            definition: definition.to_owned(),
            level,
            stamp,
        })
    }
}

/// What a file in a set is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Slice,
    Par2,
    Catalogue,
    Bundle,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_names_round_trip() {
        let at: jiff::ZonedDateTime = "2026-03-28T02:30:15.75+01:00[Europe/Paris]"
            .parse()
            .unwrap();
        let name = SetName::new("photos-2", Level::Diff, at);
        let text = name.to_string();
        assert_eq!(text, "photos-2_DIFF_2026-03-28_023015");
        assert_eq!(text.parse::<SetName>().unwrap(), name);
        assert!("photos_FULL_2026-01-01".parse::<SetName>().is_err());
        assert!("a_b_FULL_2026-01-01_000000".parse::<SetName>().is_err());
    }
}
