//! Config values that validate themselves while being parsed, so that a bad value is reported
//! by the TOML parser with its file, line and column.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A definition name: `[A-Za-z0-9-]+` (`_` separates the fields of a set name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct DefinitionName(String);

impl TryFrom<String> for DefinitionName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if !s.is_empty()
            && s.len() <= 64
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            Ok(DefinitionName(s))
        } else {
            Err(format!(
                "name {s:?}: use 1 to 64 letters, digits and '-' (no '_', spaces or dots)"
            ))
        }
    }
}

impl DefinitionName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DefinitionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An absolute path; a leading `~/` stands for $HOME.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AbsPath(PathBuf);

impl TryFrom<String> for AbsPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let path = match s.strip_prefix("~/") {
            Some(rest) => match std::env::var_os("HOME") {
                Some(home) => PathBuf::from(home).join(rest),
                None => return Err(format!("{s:?}: '~' used but $HOME is not set")),
            },
            None => PathBuf::from(&s),
        };
        if path.is_absolute() {
            Ok(AbsPath(path))
        } else {
            Err(format!("{s:?} is not an absolute path"))
        }
    }
}

impl AbsPath {
    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// A path relative to a definition's source, staying inside it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct RelPath(String);

impl TryFrom<String> for RelPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let trimmed = s.trim_end_matches('/');
        if trimmed.is_empty()
            || trimmed.starts_with('/')
            || trimmed.split('/').any(|c| c == ".." || c.is_empty())
        {
            Err(format!(
                "{s:?} must be a path relative to the source, without '..'"
            ))
        } else {
            Ok(RelPath(trimmed.to_owned()))
        }
    }
}

impl RelPath {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A size in bytes, written as a number with an optional K/M/G/T suffix (powers of 1024).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "SizeText")]
pub struct ByteSize(pub u64);

/// Sizes may be written as a string ("1G") or a plain integer of bytes.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeText {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeText> for ByteSize {
    type Error = String;
    fn try_from(v: SizeText) -> Result<Self, String> {
        match v {
            SizeText::Bytes(n) => Ok(ByteSize(n)),
            SizeText::Text(s) => s.parse(),
        }
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let t = t.strip_suffix(['B', 'b']).unwrap_or(t);
        let t = t.strip_suffix(['i']).unwrap_or(t);
        let (digits, shift) = match t.char_indices().last() {
            Some((i, c)) if c.is_ascii_alphabetic() => {
                let shift = match c.to_ascii_uppercase() {
                    'K' => 10,
                    'M' => 20,
                    'G' => 30,
                    'T' => 40,
                    _ => return Err(format!("{s:?}: unknown size suffix (use K, M, G or T)")),
                };
                (&t[..i], shift)
            }
            _ => (t, 0),
        };
        let n: u64 = digits
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a size (examples: 4096, \"512M\", \"1G\")"))?;
        n.checked_mul(1 << shift)
            .map(ByteSize)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let units = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
        for (shift, unit) in units {
            if self.0 >= 1 << shift && self.0.is_multiple_of(1 << shift) {
                return write!(f, "{}{unit}", self.0 >> shift);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Human-readable byte count for reports (1.5 GiB).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < units.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}

/// A dar compression: `algorithm[:level]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Compression {
    pub algorithm: String,
    pub level: Option<u32>,
}

impl TryFrom<String> for Compression {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (algorithm, level) = match s.split_once(':') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        // Level ranges of the algorithms dar 2.7 builds in.
        let max_level = match algorithm {
            "none" => 0,
            "gzip" | "bzip2" | "xz" | "lzo" => 9,
            "lz4" => 12,
            "zstd" => 22,
            _ => {
                return Err(format!(
                    "compression {s:?}: unknown algorithm (none, gzip, bzip2, xz, lzo, lz4, zstd)"
                ));
            }
        };
        let level = match level {
            None => None,
            Some(l) => match l.parse::<u32>() {
                Ok(n) if (1..=max_level).contains(&n) => Some(n),
                _ => return Err(format!("compression {s:?}: level must be 1..={max_level}")),
            },
        };
        Ok(Compression {
            algorithm: algorithm.to_owned(),
            level,
        })
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.level {
            Some(l) => write!(f, "{}:{l}", self.algorithm),
            None => f.write_str(&self.algorithm),
        }
    }
}

/// A regular expression, compiled once while the config is read.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "String")]
pub struct Pattern(pub regex::Regex);

impl TryFrom<String> for Pattern {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        regex::Regex::new(&s)
            .map(Pattern)
            .map_err(|e| format!("invalid regular expression {s:?}: {e}"))
    }
}

/// A duration such as "90s", "30m", "12h" or "2d".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Duration(pub std::time::Duration);

impl TryFrom<String> for Duration {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let n: u64 = n.parse().map_err(|_| {
            format!("{s:?} is not a duration (examples: \"90s\", \"30m\", \"12h\")")
        })?;
        let secs = match unit.trim() {
            "s" | "" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86400,
            _ => return Err(format!("{s:?}: unknown unit (s, m, h or d)")),
        };
        Ok(Duration(std::time::Duration::from_secs(secs)))
    }
}

/// How long sets are kept: "40d", "12w", "6m" (months), "3y", or "forever".
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub enum Age {
    Forever,
    /// A calendar span (months and years have their calendar length).
    Span(jiff::Span),
}

impl TryFrom<String> for Age {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let t = s.trim();
        if t == "forever" {
            return Ok(Age::Forever);
        }
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (n, unit) = t.split_at(split);
        let bad = || {
            format!("{s:?} is not an age (examples: \"40d\", \"12w\", \"6m\", \"3y\", \"forever\")")
        };
        let n: i64 = n.parse().map_err(|_| bad())?;
        let span = match unit.trim() {
            "d" => jiff::Span::new().try_days(n),
            "w" => jiff::Span::new().try_weeks(n),
            "m" => jiff::Span::new().try_months(n),
            "y" => jiff::Span::new().try_years(n),
            _ => return Err(bad()),
        }
        .map_err(|e| format!("{s:?}: {e}"))?;
        Ok(Age::Span(span))
    }
}

impl std::str::FromStr for Age {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Age::try_from(s.to_owned())
    }
}

/// A machine architecture a bundle carries tools for, named as `uname -m` prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Architecture {
    #[serde(rename = "x86_64", alias = "amd64")]
    X86_64,
    #[serde(rename = "aarch64", alias = "arm64")]
    Aarch64,
}

impl Architecture {
    pub const ALL: [Architecture; 2] = [Architecture::X86_64, Architecture::Aarch64];

    /// The name `uname -m` prints, which is also the bundle's folder for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64",
            Architecture::Aarch64 => "aarch64",
        }
    }

    /// The machine this program runs on, when it is one a bundle can carry tools for.
    pub fn this_machine() -> Option<Architecture> {
        Architecture::ALL
            .into_iter()
            .find(|a| a.as_str() == std::env::consts::ARCH)
    }

    /// The architecture of an ELF header's `e_machine`.
    pub fn of_elf_machine(machine: u16) -> Option<Architecture> {
        match machine {
            62 => Some(Architecture::X86_64),
            183 => Some(Architecture::Aarch64),
            _ => None,
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How long an object-locked copy locks each file: "keep" (as long as `cleanup` keeps its set
/// there, by its level's age; a year at a time, renewed, for sets kept forever), or a span
/// from the upload.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "String")]
pub enum LockRetention {
    Keep,
    For(Age),
}

impl TryFrom<String> for LockRetention {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match s.trim() {
            "keep" => Ok(LockRetention::Keep),
            _ => Age::try_from(s)
                .map(LockRetention::For)
                .map_err(|e| format!("{e}, or \"keep\"")),
        }
    }
}

impl std::fmt::Display for Age {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            Age::Forever => f.write_str("forever"),
            Age::Span(span) => write!(f, "{span:#}"),
        }
    }
}

impl Age {
    /// The instant before which a set made is older than this age; None for forever.
    pub fn cutoff(&self, now: &jiff::ZonedDateTime) -> Option<jiff::Timestamp> {
        match self {
            Age::Forever => None,
            Age::Span(span) => now.checked_sub(*span).ok().map(|z| z.timestamp()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!("1G".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("512MiB".parse::<ByteSize>().unwrap().0, 512 << 20);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert!("12Q".parse::<ByteSize>().is_err());
        assert_eq!(ByteSize(3 << 30).to_string(), "3G");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }

    #[test]
    fn ages() {
        assert!(matches!("forever".parse::<Age>().unwrap(), Age::Forever));
        let now: jiff::ZonedDateTime = "2026-03-31T12:00:00+00:00[UTC]".parse().unwrap();
        let cutoff = |a: &str| a.parse::<Age>().unwrap().cutoff(&now).unwrap().to_string();
        assert_eq!(cutoff("40d"), "2026-02-19T12:00:00Z");
        assert_eq!(cutoff("1m"), "2026-02-28T12:00:00Z");
        assert_eq!(cutoff("2y"), "2024-03-31T12:00:00Z");
        assert!("10x".parse::<Age>().is_err());
    }

    #[test]
    fn compressions() {
        assert_eq!(
            "zstd:3".parse::<Compression>().unwrap().to_string(),
            "zstd:3"
        );
        assert!("zstd:99".parse::<Compression>().is_err());
        assert!("rar".parse::<Compression>().is_err());
        assert_eq!("none".parse::<Compression>().unwrap().level, None);
    }

    #[test]
    fn names_and_paths() {
        assert!(DefinitionName::try_from("my-photos2".to_string()).is_ok());
        assert!(DefinitionName::try_from("my_photos".to_string()).is_err());
        assert!(RelPath::try_from("a/../b".to_string()).is_err());
        assert!(AbsPath::try_from("relative/dir".to_string()).is_err());
    }
}

/// The backup rule `darvault status` checks per definition, "3-2-1-1-0": at least this many
/// copies, on this many kinds of media, this many offsite, this many offline or immutable, and
/// at most this many errors at their last verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Rule {
    pub copies: u32,
    pub media: u32,
    pub offsite: u32,
    pub offline_or_immutable: u32,
    pub errors: u32,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            copies: 3,
            media: 2,
            offsite: 1,
            offline_or_immutable: 1,
            errors: 0,
        }
    }
}

impl TryFrom<String> for Rule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let parts: Vec<Option<u32>> = s.trim().split('-').map(|p| p.parse().ok()).collect();
        match parts[..] {
            [
                Some(copies),
                Some(media),
                Some(offsite),
                Some(offline_or_immutable),
                Some(errors),
            ] => Ok(Rule {
                copies,
                media,
                offsite,
                offline_or_immutable,
                errors,
            }),
            _ => Err(format!(
                "{s:?} is not a rule: five numbers, copies-media-offsite-offline_or_immutable-errors, e.g. \"3-2-1-1-0\""
            )),
        }
    }
}

impl From<Rule> for String {
    fn from(r: Rule) -> String {
        r.to_string()
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}-{}",
            self.copies, self.media, self.offsite, self.offline_or_immutable, self.errors
        )
    }
}

/// An S3 storage class whose objects can be read at once.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct StorageClass(String);

impl StorageClass {
    const READABLE: &[&str] = &[
        "STANDARD",
        "REDUCED_REDUNDANCY",
        "STANDARD_IA",
        "ONEZONE_IA",
        "INTELLIGENT_TIERING",
        "GLACIER_IR",
        "EXPRESS_ONEZONE",
    ];

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StorageClass {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        let class = s.trim().to_ascii_uppercase();
        if Self::READABLE.contains(&class.as_str()) {
            return Ok(StorageClass(class));
        }
        match class.as_str() {
            "GLACIER" | "DEEP_ARCHIVE" => Err(format!(
                "storage class {s:?}: its objects must be restored (thawed) before they can be read, which darvault does not do yet: an audit or a restore would fail; use GLACIER_IR (read at once) or STANDARD_IA"
            )),
            _ => Err(format!(
                "unknown storage class {s:?} (readable at once: {})",
                Self::READABLE.join(", ")
            )),
        }
    }
}
