//! The configuration: schema, the embedded commented default, and loading with errors that
//! name the file, the line and the key.

mod values;

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use values::{
    AbsPath, Age, Architecture, ByteSize, Compression, DefinitionName, Duration, LockRetention,
    Pattern, RelPath, Rule, StorageClass, human_bytes,
};

use crate::error::{Error, Result};

/// The commented default configuration; `darvault init` writes it, and it is the reference.
pub const DEFAULT_CONFIG: &str = include_str!("default.toml");

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub repository: AbsPath,
    pub state_dir: Option<AbsPath>,
    #[serde(default)]
    pub tools: Tools,
    #[serde(default, rename = "definition")]
    pub definitions: Vec<Definition>,
    #[serde(default, rename = "destination")]
    pub destinations: Vec<Destination>,
    #[serde(default)]
    pub notify: Notify,
    #[serde(default)]
    pub schedule: Schedule,
    /// The file this was read from (for messages).
    #[serde(skip)]
    pub file: PathBuf,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tools {
    pub dar: Option<AbsPath>,
    pub dar_static: Option<AbsPath>,
    pub par2: Option<AbsPath>,
    /// A statically linked darvault to carry in every set's bundle [default: this program,
    /// when it is statically linked].
    pub darvault_static: Option<AbsPath>,
    /// The machines each chain's bundle carries tools for [default: x86_64 and aarch64, each
    /// one whose tools are found]. Naming them makes a missing one an error.
    pub bundle_architectures: Option<Vec<Architecture>>,
    /// The folder holding `<architecture>/dar_static`, `par2` and `darvault` for the machines
    /// other than this one [default: `lib/darvault/bundle` beside the folder of this program
    /// (/usr/lib/darvault/bundle for the Debian package), `bundle/` in it (the tarball), then
    /// `$XDG_DATA_HOME/darvault/bundle`].
    pub bundle_tools: Option<AbsPath>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub name: toml::Spanned<DefinitionName>,
    pub source: AbsPath,
    #[serde(default)]
    pub include: Vec<RelPath>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub prune: Vec<RelPath>,
    #[serde(default = "yes")]
    pub cache_directory_tagging: bool,
    #[serde(default = "default_compression")]
    pub compression: Compression,
    #[serde(default = "default_no_compress")]
    pub no_compress: Vec<String>,
    #[serde(default = "default_slice_size")]
    pub slice_size: ByteSize,
    #[serde(default)]
    pub redundancy: Redundancy,
    #[serde(default = "default_whole_slice_max")]
    pub par2_whole_slice_max: ByteSize,
    /// The PAR2 block size preferred: smaller blocks repair more separate damaged places at
    /// the same redundancy, at more CPU.
    #[serde(default = "default_par2_block_size")]
    pub par2_block_size: ByteSize,
    /// Verify every PAR2 set with `par2 verify` before the set is published.
    #[serde(default)]
    pub par2_verify: bool,
    /// A second copy of every set's PAR2 files (and its manifest), on another disk.
    pub par2_dir: Option<AbsPath>,
    /// More options for `dar -c`, one per element; those darvault sets itself are refused.
    #[serde(default)]
    pub dar_options: Vec<String>,
    #[serde(default)]
    pub incr_base: IncrBase,
    /// The most sets a chain may hold: an INCR that would make it longer becomes a DIFF.
    #[serde(default = "default_max_chain")]
    pub max_chain: usize,
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    pub encryption: Option<Encryption>,
    #[serde(default)]
    pub restore_test: RestoreTest,
    #[serde(default)]
    pub keep: Keep,
    #[serde(default)]
    pub hooks: Hooks,
    /// The rule `darvault status` checks: copies-media-offsite-offline_or_immutable-errors
    /// [default: "3-2-1-1-0"].
    #[serde(default)]
    pub rule: Rule,
    /// A copy counts for the rule only when the definition's newest chain was proven there
    /// this recently [default: 35d].
    #[serde(default = "default_proof_max_age")]
    pub proof_max_age: Duration,
}

/// What a destination without `keep` keeps: everything (cleanup removes nothing there).
const NEVER_REMOVED: Keep = Keep {
    full: Age::Forever,
    diff: Age::Forever,
    incr: Age::Forever,
};

/// Retention: how long `darvault cleanup` keeps sets of each level. A set that a kept set
/// depends on is kept whatever its age.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    #[serde(default = "forever")]
    pub full: Age,
    #[serde(default = "keep_diff")]
    pub diff: Age,
    #[serde(default = "keep_incr")]
    pub incr: Age,
}

impl Default for Keep {
    fn default() -> Self {
        Keep {
            full: forever(),
            diff: keep_diff(),
            incr: keep_incr(),
        }
    }
}

/// Commands run before and after a backup of the definition (through `sh -c`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    /// Run in order before dar starts; a failing one stops this definition's backup.
    #[serde(default)]
    pub before: Vec<String>,
    /// Run in order after the backup, whatever its outcome (DARVAULT_OUTCOME says which).
    #[serde(default)]
    pub after: Vec<String>,
    /// Each command may take this long [default: 15m].
    #[serde(default = "hook_timeout")]
    pub timeout: Duration,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            before: Vec::new(),
            after: Vec::new(),
            timeout: hook_timeout(),
        }
    }
}

/// Where notices of unattended runs go. URLs are secrets: they come from the environment or
/// a file, never inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    pub discord_url_env: Option<String>,
    pub discord_url_file: Option<AbsPath>,
    /// Any URL that takes a JSON POST (ntfy, a healthchecks-style ping, your own service).
    pub webhook_url_env: Option<String>,
    pub webhook_url_file: Option<AbsPath>,
    /// Which events are sent [default: all of success, warning, failure, damage, repair].
    #[serde(default = "all_events")]
    pub events: Vec<Event>,
}

impl Default for Notify {
    fn default() -> Self {
        Notify {
            discord_url_env: None,
            discord_url_file: None,
            webhook_url_env: None,
            webhook_url_file: None,
            events: all_events(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Event {
    Success,
    Warning,
    Failure,
    Damage,
    Repair,
}

/// When the systemd timers fire (systemd OnCalendar expressions).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    #[serde(default = "schedule_full")]
    pub full: String,
    #[serde(default = "schedule_diff")]
    pub diff: String,
    #[serde(default = "schedule_incr")]
    pub incr: String,
    #[serde(default = "schedule_audit")]
    pub audit: String,
    #[serde(default = "schedule_cleanup")]
    pub cleanup: String,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            full: schedule_full(),
            diff: schedule_diff(),
            incr: schedule_incr(),
            audit: schedule_audit(),
            cleanup: schedule_cleanup(),
        }
    }
}

impl Definition {
    pub fn name(&self) -> &DefinitionName {
        self.name.get_ref()
    }
}

/// A copy named in the config: the target of `replicate`. Keys darvault does not know are
/// passed to the OpenDAL service as they are, so any service OpenDAL supports is a config
/// entry. A key ending in `_env` or `_file` names where a secret is read from instead of
/// holding it (`secret_access_key_env = "S3_SECRET"` sets `secret_access_key`).
#[derive(Debug, Clone, Deserialize)]
pub struct Destination {
    pub name: toml::Spanned<DefinitionName>,
    /// The storage service: fs, sftp, s3, webdav, gcs, azblob or b2.
    pub kind: Kind,
    /// fs only: refuse unless the root is on a mounted filesystem other than `/`'s.
    #[serde(default)]
    pub require_mount: bool,
    /// Refuse unless this file exists at the root (a marker put on the disk once).
    pub require_marker: Option<String>,
    /// Files sent at once [default: 1 for fs (disks are slowest with several writers), 4 else].
    pub concurrency: Option<usize>,
    /// Bytes per second, e.g. "10M" [default: unlimited].
    pub bandwidth_limit: Option<ByteSize>,
    /// Largest file for services that take a file in one piece (webdav): above it, refuse
    /// rather than hold the file in memory [default: 1G].
    pub max_single_write: Option<ByteSize>,
    /// What `darvault audit` does with damage on this copy when --repair is not given:
    /// "never" (report only), "ask" (on a terminal) or "auto" [default: never].
    #[serde(default)]
    pub repair: RepairPolicy,
    /// How often a request that failed for a temporary reason (a timeout, a reset, a server
    /// error) is tried again, with pauses doubling from 1 s to 30 s [default: 5]. A full disk,
    /// refused credentials or a missing bucket fail at once.
    pub retries: Option<usize>,
    /// A request that moves no byte for this long fails the destination [default: 2m].
    pub stall_timeout: Option<values::Duration>,
    /// Read every file back after sending it and compare its SHA-256 [default: false].
    #[serde(default)]
    pub verify_readback: bool,
    /// Retention here for `darvault cleanup` (may keep more than the repository)
    /// [default: none: cleanup never deletes on this destination].
    pub keep: Option<Keep>,
    /// S3 only: the storage class of every upload (STANDARD, STANDARD_IA, ONEZONE_IA,
    /// INTELLIGENT_TIERING, GLACIER_IR…) [default: the bucket's]. Classes that must be thawed
    /// before a read (GLACIER, DEEP_ARCHIVE) are refused.
    pub storage_class: Option<StorageClass>,
    /// S3 only: lock every file of a set against change and removal when it is uploaded:
    /// "compliance" (nobody can lift it, the account's owner included, until it ends) or
    /// "governance" (a user with the right permission can) [default: none]. The bucket must
    /// have object lock enabled (which turns versioning on); darvault checks it when the copy
    /// is opened. Needs `lock_retention`.
    pub object_lock: Option<LockMode>,
    /// With object_lock: how long each file stays locked. "keep": as long as `cleanup` keeps
    /// its set here (this destination's `keep`, else the definition's) plus 30 days; sets
    /// kept forever are locked a year ahead, renewed by `replicate`. Or a span from the
    /// upload, e.g. "400d", "13m" (months), "2y".
    pub lock_retention: Option<LockRetention>,
    /// With lock_retention = "keep": each definition's retention on this copy (filled when
    /// the config is read).
    #[serde(skip)]
    pub lock_keeps: std::collections::BTreeMap<String, Keep>,
    /// S3 and SFTP: a copy the server vouches for (its kept checksums, or hashing on the
    /// server) is also read back at rest, least recently read first: at most this many
    /// bytes a month (30 days), e.g. "20G" [default: none: nothing read back].
    pub read_budget: Option<ByteSize>,
    /// With read_budget: how often every byte should be read back; `status` warns when the
    /// budget cannot cover the copy in that time [default: "12m", twelve months].
    pub read_every: Option<values::Age>,
    /// For the backup rule: the kind of media this copy is on; copies on the same media
    /// count once [default: "removable-disk" for fs with require_mount, "disk" for other fs,
    /// "server" for sftp and webdav, "cloud" for object stores].
    pub media: Option<String>,
    /// For the backup rule: kept away from this machine's building (a cloud, a disk stored
    /// elsewhere) [default: true for object stores, false else].
    pub offsite: Option<bool>,
    /// For the backup rule: disconnected between runs (a USB disk unplugged after each
    /// replicate) [default: require_mount].
    pub offline: Option<bool>,
    /// For the backup rule: this machine's credentials cannot change or delete what is there
    /// (object lock, an append-only server) [default: true with object_lock, false else].
    #[serde(default)]
    pub immutable: bool,
    /// Everything else: OpenDAL options (root, endpoint, bucket, user, key…).
    #[serde(flatten)]
    pub options: std::collections::BTreeMap<String, toml::Value>,
}

impl Destination {
    pub fn name(&self) -> &str {
        self.name.get_ref().as_str()
    }

    /// The kind of media it is on (see `media`).
    pub fn media(&self) -> String {
        if let Some(media) = &self.media {
            return media.clone();
        }
        match self.kind {
            Kind::Fs if self.require_mount => "removable-disk",
            Kind::Fs => "disk",
            Kind::Sftp | Kind::Webdav => "server",
            _ => "cloud",
        }
        .to_owned()
    }

    pub fn is_offsite(&self) -> bool {
        self.offsite.unwrap_or(self.kind.is_object_store())
    }

    pub fn is_offline(&self) -> bool {
        self.offline.unwrap_or(self.require_mount)
    }

    /// The options for OpenDAL, with `*_env` and `*_file` references resolved.
    pub fn service_options(&self) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        for (key, value) in &self.options {
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(_) | toml::Value::Boolean(_) | toml::Value::Float(_) => {
                    value.to_string()
                }
                _ => {
                    return Err(Error::Config(format!(
                        "destination {:?}: option `{key}` must be a string, number or boolean",
                        self.name()
                    )));
                }
            };
            if let Some(base) = key.strip_suffix("_env") {
                crate::secrets::register_variable(&text);
                let secret = std::env::var(&text).map_err(|_| {
                    Error::Usage(format!(
                        "destination {:?}: ${text} is not set (named by `{key}`)",
                        self.name()
                    ))
                })?;
                crate::secrets::register(&secret);
                out.push((base.to_owned(), secret));
            } else if let Some(base) = key.strip_suffix("_file") {
                let path = AbsPath::try_from(text.clone()).map_err(Error::Config)?;
                let secret = std::fs::read_to_string(path.path()).map_err(|e| {
                    Error::Usage(format!(
                        "destination {:?}: cannot read {text} (named by `{key}`): {e}",
                        self.name()
                    ))
                })?;
                let secret = secret.lines().next().unwrap_or("").to_owned();
                crate::secrets::register(&secret);
                out.push((base.to_owned(), secret));
            } else {
                if crate::secrets::is_secret_option(key) {
                    crate::secrets::register(&text);
                }
                out.push((key.clone(), text));
            }
        }
        if let Some(class) = &self.storage_class {
            out.push(("default_storage_class".into(), class.as_str().to_owned()));
        }
        Ok(out)
    }

    /// What is wrong with this copy's object lock settings, if anything.
    fn lock_settings_wrong(&self) -> Option<&'static str> {
        match (self.object_lock, self.lock_retention) {
            (Some(_), _) if self.kind != Kind::S3 => {
                Some("object_lock applies to kind = \"s3\" only")
            }
            (Some(_), None) => Some(
                "object_lock needs lock_retention: how long each file stays locked, \"keep\" (as long as cleanup keeps it) or a span, e.g. \"400d\"",
            ),
            (Some(_), Some(LockRetention::For(values::Age::Forever))) => Some(
                "lock_retention = \"forever\" would make the copy impossible to clean up: give a span, e.g. \"10y\"",
            ),
            (None, Some(_)) => Some("lock_retention is set without object_lock"),
            _ => None,
        }
    }

    /// What is wrong with this copy's read budget settings, if anything.
    fn read_settings_wrong(&self) -> Option<&'static str> {
        match (self.read_budget, self.read_every) {
            (Some(_), _) if !matches!(self.kind, Kind::S3 | Kind::Sftp) => Some(
                "read_budget applies to kind = \"s3\" and \"sftp\" (other copies are read whole at every audit)",
            ),
            (None, Some(_)) => Some("read_every is set without read_budget"),
            (_, Some(values::Age::Forever)) => {
                Some("read_every = \"forever\" reads nothing: give a span, e.g. \"12m\"")
            }
            _ => None,
        }
    }

    /// How often every byte of this copy should be read back (with a read budget).
    pub fn read_every(&self) -> jiff::Span {
        match self.read_every {
            Some(values::Age::Span(span)) => span,
            _ => jiff::Span::new().months(12),
        }
    }

    /// Whether this machine's credentials cannot change or delete what is on this copy.
    pub fn is_immutable(&self) -> bool {
        self.immutable || self.object_lock.is_some()
    }

    /// The configured root (for messages and fs checks), if any.
    pub fn root(&self) -> Option<&str> {
        self.options.get("root").and_then(|v| v.as_str())
    }
}

/// Who can lift an object's lock before its retention ends (S3 Object Lock's modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody.
    Compliance,
    /// A user with the `s3:BypassGovernanceRetention` permission.
    Governance,
}

impl LockMode {
    /// As S3 names it.
    pub fn as_s3(self) -> &'static str {
        match self {
            LockMode::Compliance => "COMPLIANCE",
            LockMode::Governance => "GOVERNANCE",
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RepairPolicy {
    #[default]
    Never,
    Ask,
    Auto,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Redundancy {
    #[serde(default = "ten")]
    pub full: Percent,
    #[serde(default = "five")]
    pub diff: Percent,
    #[serde(default = "five")]
    pub incr: Percent,
}

impl Default for Redundancy {
    fn default() -> Self {
        Redundancy {
            full: ten(),
            diff: five(),
            incr: five(),
        }
    }
}

/// A PAR2 redundancy in percent, 1..=100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "u32")]
pub struct Percent(pub u32);

impl TryFrom<u32> for Percent {
    type Error = String;
    fn try_from(n: u32) -> std::result::Result<Self, String> {
        if (1..=100).contains(&n) {
            Ok(Percent(n))
        } else {
            Err(format!("redundancy {n}: use a percentage from 1 to 100"))
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IncrBase {
    /// The newest set of the chain: a true incremental.
    #[default]
    Latest,
    /// The newest DIFF (or the FULL): cumulative since the last DIFF, as the seed tool did.
    Diff,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    pub passphrase_env: Option<String>,
    pub passphrase_file: Option<AbsPath>,
    pub passphrase_command: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreTest {
    #[serde(default = "default_sample_count")]
    pub count: usize,
    #[serde(default = "zero_size")]
    pub min_size: ByteSize,
    #[serde(default = "default_max_sample")]
    pub max_size: ByteSize,
    /// When no file fits the window: the smallest larger one up to this size is restored
    /// and compared in part (0: never).
    #[serde(default = "default_partial_max")]
    pub partial_max_size: ByteSize,
    #[serde(default)]
    pub exclude_prefixes: Vec<String>,
    #[serde(default)]
    pub exclude_suffixes: Vec<String>,
    #[serde(default)]
    pub exclude_regex: Vec<Pattern>,
}

impl Default for RestoreTest {
    fn default() -> Self {
        RestoreTest {
            count: default_sample_count(),
            min_size: zero_size(),
            max_size: default_max_sample(),
            partial_max_size: default_partial_max(),
            exclude_prefixes: Vec::new(),
            exclude_suffixes: Vec::new(),
            exclude_regex: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}
fn forever() -> Age {
    Age::Forever
}
fn keep_diff() -> Age {
    "100d".parse().expect("a valid age")
}
fn keep_incr() -> Age {
    "40d".parse().expect("a valid age")
}
fn hook_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(15 * 60))
}
fn all_events() -> Vec<Event> {
    vec![
        Event::Success,
        Event::Warning,
        Event::Failure,
        Event::Damage,
        Event::Repair,
    ]
}
// FULL on 1 January, DIFF on the 1st of the other months, INCR every third day from the 4th:
// never two on the same day, so no run waits for another's repository lock.
fn schedule_full() -> String {
    "*-01-01 02:00".into()
}
fn schedule_diff() -> String {
    "*-02..12-01 02:00".into()
}
fn schedule_incr() -> String {
    "*-*-04/3 02:00".into()
}
fn schedule_audit() -> String {
    "*-*-* 05:00".into()
}
fn schedule_cleanup() -> String {
    "Sun *-*-* 06:00".into()
}
fn ten() -> Percent {
    Percent(10)
}
fn five() -> Percent {
    Percent(5)
}
fn default_compression() -> Compression {
    Compression {
        algorithm: "zstd".into(),
        level: Some(3),
    }
}
fn default_no_compress() -> Vec<String> {
    // Kept in one place: the list the embedded default config shows.
    #[derive(Deserialize)]
    struct Shown {
        definition: Vec<ShownDefinition>,
    }
    #[derive(Deserialize)]
    struct ShownDefinition {
        no_compress: Vec<String>,
    }
    let shown: Shown = toml::from_str(DEFAULT_CONFIG).expect("the embedded default config parses");
    shown
        .definition
        .into_iter()
        .next()
        .map(|d| d.no_compress)
        .unwrap_or_default()
}
fn default_whole_slice_max() -> ByteSize {
    ByteSize(64 << 20)
}
/// The PAR2 block size preferred where a set's size allows it (`par2_block_size`). Recovery
/// data costs CPU in proportion to the recovery blocks made, so at a given redundancy to the
/// inverse of the block size; measured with turbo on a 1 GiB slice at 10%, one thread: 1 MiB
/// blocks 7.7 CPU seconds, 2 MiB 5.3, 4 MiB 4.3 (about 3 of them hashing, the same at any
/// size). 4 MiB keeps 26 recovery blocks per GiB at 10%: as many separate damaged places
/// repairable in a slice, or one run of damage as long as the recovery data.
pub const DEFAULT_PAR2_BLOCK: u64 = 4 << 20;

fn default_par2_block_size() -> ByteSize {
    ByteSize(DEFAULT_PAR2_BLOCK)
}
fn default_slice_size() -> ByteSize {
    ByteSize(1 << 30)
}
fn default_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(7 * 86400))
}
fn default_sample_count() -> usize {
    5
}
fn zero_size() -> ByteSize {
    ByteSize(0)
}
fn default_max_sample() -> ByteSize {
    ByteSize(64 << 20)
}

fn default_max_chain() -> usize {
    30
}
fn default_proof_max_age() -> Duration {
    Duration(std::time::Duration::from_secs(35 * 86400))
}

fn default_partial_max() -> ByteSize {
    ByteSize(4 << 30)
}

impl Config {
    /// Where the config is looked for when `--config` is not given.
    pub fn default_path() -> PathBuf {
        if let Some(p) = std::env::var_os("DARVAULT_CONFIG") {
            return PathBuf::from(p);
        }
        crate::paths::config_home()
            .join("darvault")
            .join("config.toml")
    }

    pub fn load(file: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(file).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Config(format!(
                    "no config file at {}: write one with `darvault init` (or pass --config FILE)",
                    file.display()
                ))
            } else {
                Error::Config(format!("cannot read config {}: {e}", file.display()))
            }
        })?;
        Config::parse(&text, file)
    }

    pub fn parse(text: &str, file: &Path) -> Result<Config> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| Error::Config(format!("{}: {}", file.display(), e.to_string().trim())))?;
        config.file = file.to_owned();
        config.validate(text)?;
        config.derive_lock_keeps();
        Ok(config)
    }

    /// Give each copy locked as long as its sets are kept the retention of every definition
    /// there: its own `keep` (without one, cleanup removes nothing there).
    fn derive_lock_keeps(&mut self) {
        for dest in &mut self.destinations {
            if !matches!(dest.lock_retention, Some(LockRetention::Keep)) {
                continue;
            }
            dest.lock_keeps = self
                .definitions
                .iter()
                .map(|d| {
                    (
                        d.name().as_str().to_owned(),
                        dest.keep.unwrap_or(NEVER_REMOVED),
                    )
                })
                .collect();
        }
    }

    /// Rules that span several keys (single values validate themselves while parsing).
    fn validate(&self, text: &str) -> Result<()> {
        if self.definitions.is_empty() {
            return Err(Error::Config(format!(
                "{}: no [[definition]]: add one with a name and a source",
                self.file.display()
            )));
        }
        self.validate_destinations(text)?;
        self.validate_definitions(text)
    }

    /// A config error at the line of `span` in `text`.
    fn error_at(&self, text: &str, span: std::ops::Range<usize>, msg: String) -> Error {
        let line = text[..span.start.min(text.len())].lines().count().max(1);
        Error::Config(format!("{}:{line}: {msg}", self.file.display()))
    }

    fn validate_destinations(&self, text: &str) -> Result<()> {
        let at = |span, msg| self.error_at(text, span, msg);
        for (i, d) in self.destinations.iter().enumerate() {
            if self.destinations[..i].iter().any(|o| o.name() == d.name()) {
                return Err(at(
                    d.name.span(),
                    format!("key `name`: destination {:?} is defined twice", d.name()),
                ));
            }
            if d.storage_class.is_some() && d.kind != Kind::S3 {
                return Err(at(
                    d.name.span(),
                    format!(
                        "destination {:?}: storage_class applies to kind = \"s3\" only",
                        d.name()
                    ),
                ));
            }
            if let Some(why) = d.lock_settings_wrong().or(d.read_settings_wrong()) {
                return Err(at(
                    d.name.span(),
                    format!("destination {:?}: {why}", d.name()),
                ));
            }
            if d.require_mount && d.kind != Kind::Fs {
                return Err(at(
                    d.name.span(),
                    format!(
                        "destination {:?}: require_mount applies to kind = \"fs\" only",
                        d.name()
                    ),
                ));
            }
            if let Some(valid) = service_options(d.kind.as_str())
                && let Some(key) = d.options.keys().find(|k| {
                    let base = k
                        .strip_suffix("_env")
                        .or_else(|| k.strip_suffix("_file"))
                        .unwrap_or(k);
                    !valid.contains(&base)
                })
            {
                let line = key_line(text, d.name.span().start, key);
                return Err(Error::Config(format!(
                    "{}:{line}: destination {:?}: unknown key `{key}` for kind = \"{}\" (valid: {}, and darvault's own: {})",
                    self.file.display(),
                    d.name(),
                    d.kind,
                    valid.join(", "),
                    DESTINATION_KEYS.join(", ")
                )));
            }
            if d.kind == Kind::Fs && d.root().is_none_or(|r| !r.starts_with('/')) {
                return Err(at(
                    d.name.span(),
                    format!(
                        "destination {:?}: an fs destination needs an absolute `root`",
                        d.name()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_definitions(&self, text: &str) -> Result<()> {
        let at = |span, msg| self.error_at(text, span, msg);
        for (i, d) in self.definitions.iter().enumerate() {
            if self.definitions[..i].iter().any(|o| o.name() == d.name()) {
                return Err(at(
                    d.name.span(),
                    format!(
                        "key `name`: definition {:?} is defined twice",
                        d.name().as_str()
                    ),
                ));
            }
            if d.restore_test.min_size > d.restore_test.max_size {
                return Err(at(
                    d.name.span(),
                    format!(
                        "definition {:?}: restore_test.min_size is larger than max_size",
                        d.name().as_str()
                    ),
                ));
            }
            if d.slice_size.0 < 64 * 1024 {
                return Err(at(
                    d.name.span(),
                    format!(
                        "definition {:?}: slice_size must be at least 64K",
                        d.name().as_str()
                    ),
                ));
            }
            let block = d.par2_block_size.0;
            if !block.is_power_of_two() || !(4 << 10..=256 << 20).contains(&block) {
                return Err(at(
                    d.name.span(),
                    format!(
                        "definition {:?}: key `par2_block_size`: {block} bytes is not a power of two from 4K to 256M (e.g. \"1M\", \"4M\")",
                        d.name().as_str()
                    ),
                ));
            }
            if let Some(dir) = &d.par2_dir
                && (dir.path().starts_with(self.repository.path())
                    || self.repository.path().starts_with(dir.path()))
            {
                return Err(at(
                    d.name.span(),
                    format!(
                        "definition {:?}: key `par2_dir`: {} and the repository must not hold one another (it keeps PAR2 apart, best on another disk)",
                        d.name().as_str(),
                        dir.path().display()
                    ),
                ));
            }
            if let Some(refused) = d.dar_options.iter().find_map(|o| refused_dar_option(o)) {
                return Err(at(
                    d.name.span(),
                    format!(
                        "definition {:?}: key `dar_options`: {refused}",
                        d.name().as_str()
                    ),
                ));
            }
            if let Some(e) = &d.encryption {
                let sources = [
                    e.passphrase_env.is_some(),
                    e.passphrase_file.is_some(),
                    e.passphrase_command.is_some(),
                ];
                if sources.iter().filter(|s| **s).count() != 1 {
                    return Err(at(
                        d.name.span(),
                        format!(
                            "definition {:?}: [definition.encryption] needs exactly one of \
                             passphrase_env, passphrase_file, passphrase_command",
                            d.name().as_str()
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The destinations named on the command line (all when none are named).
    pub fn select_destinations(&self, names: &[String]) -> Result<Vec<&Destination>> {
        if names.is_empty() {
            if self.destinations.is_empty() {
                return Err(Error::Usage(format!(
                    "no [[destination]] in {}: add one (see `darvault init`)",
                    self.file.display()
                )));
            }
            return Ok(self.destinations.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.destination(n).ok_or_else(|| {
                    let known: Vec<&str> = self.destinations.iter().map(|d| d.name()).collect();
                    Error::Usage(format!(
                        "no destination named {n:?} in {} (known: {})",
                        self.file.display(),
                        known.join(", ")
                    ))
                })
            })
            .collect()
    }

    pub fn destination(&self, name: &str) -> Option<&Destination> {
        self.destinations.iter().find(|d| d.name() == name)
    }

    /// The definitions named on the command line (all when none are named).
    pub fn select(&self, names: &[String]) -> Result<Vec<&Definition>> {
        if names.is_empty() {
            return Ok(self.definitions.iter().collect());
        }
        names
            .iter()
            .map(|n| {
                self.definitions
                    .iter()
                    .find(|d| d.name().as_str() == n)
                    .ok_or_else(|| {
                        let known: Vec<&str> =
                            self.definitions.iter().map(|d| d.name().as_str()).collect();
                        Error::Usage(format!(
                            "no definition named {n:?} in {} (known: {})",
                            self.file.display(),
                            known.join(", ")
                        ))
                    })
            })
            .collect()
    }

    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .as_ref()
            .map(|p| p.path().to_owned())
            .unwrap_or_else(crate::paths::default_state_dir)
    }
}

/// Write the commented default config to `file`, never overwriting one that exists.
pub fn write_default(file: &Path, repository: Option<&Path>) -> Result<()> {
    let mut text = DEFAULT_CONFIG.to_owned();
    if let Some(repo) = repository {
        text = text.replacen(
            "repository = \"/srv/backups\"",
            &format!("repository = {}", toml_string(&repo.display().to_string())),
            1,
        );
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io("cannot create", dir))?;
    }
    // 0600: a config may hold a storage password inline.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(file)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Usage(format!(
                    "{} exists already: not overwriting it (remove it first to start anew)",
                    file.display()
                ))
            } else {
                Error::io("cannot write", file)(e)
            }
        })?;
    std::io::Write::write_all(&mut f, text.as_bytes()).map_err(Error::io("cannot write", file))
}

/// A TOML basic string literal.
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

/// dar options darvault gives itself, or that would break what a set promises (one command,
/// its own options, masks it decides, files it writes, no question, no command run per
/// slice): refused in `dar_options`, by name.
const DARVAULT_DAR_OPTIONS: &[(&str, &str, &str)] = &[
    ("c", "create", "the operation"),
    ("x", "extract", "the operation"),
    ("t", "test", "the operation"),
    ("l", "list", "the operation"),
    ("d", "diff", "the operation"),
    ("C", "isolate", "the operation"),
    ("+", "merge", "the operation"),
    ("R", "fs-root", "the source"),
    ("s", "slice", "slice_size"),
    ("S", "first-slice-size", "slice_size"),
    ("K", "key", "[definition.encryption]"),
    ("J", "ref-key", "[definition.encryption]"),
    ("A", "ref", "the base darvault chose"),
    ("@", "aux", "the isolated catalogue"),
    ("N", "no-conf", "darvault's own: no ~/.darrc"),
    ("Q", "", "darvault's own: no question"),
    ("B", "batch", "reading another options file"),
    ("E", "execute", "a command run per slice"),
    ("F", "execute-ref", "a command run per slice"),
    ("~", "aux-execute", "a command run per slice"),
    ("z", "compression", "compression"),
    ("w", "no-warn", "a question answered"),
];

/// Why `option` may not be in `dar_options`, if it may not.
fn refused_dar_option(option: &str) -> Option<String> {
    let (short, long) = match option.strip_prefix("--") {
        Some(long) => (None, Some(long.split('=').next().unwrap_or(long))),
        None => match option.strip_prefix('-') {
            Some(rest) => (rest.chars().next(), None),
            None => {
                return Some(format!(
                    "{option:?} is not an option (each element is one dar option, starting with -)"
                ));
            }
        },
    };
    DARVAULT_DAR_OPTIONS
        .iter()
        .find(|(s, l, _)| {
            short.is_some_and(|c| s.starts_with(c))
                || long.is_some_and(|x| !l.is_empty() && x == *l)
        })
        .map(|(_, _, why)| format!("{option:?} is set by darvault ({why}) and may not be given"))
}

/// darvault's own keys of a `[[destination]]` (the rest go to the OpenDAL service).
const DESTINATION_KEYS: &[&str] = &[
    "name",
    "kind",
    "require_mount",
    "require_marker",
    "concurrency",
    "bandwidth_limit",
    "max_single_write",
    "repair",
    "retries",
    "stall_timeout",
    "verify_readback",
    "keep",
    "storage_class",
    "object_lock",
    "lock_retention",
    "read_budget",
    "read_every",
    "media",
    "offsite",
    "offline",
    "immutable",
];

/// The kind of storage a destination is: one of the services this darvault is built with,
/// told apart once, when the config is read (an unknown kind is a config error naming its
/// line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Kind {
    /// A folder: a USB disk, a NAS or sshfs mount.
    Fs,
    Sftp,
    S3,
    Webdav,
    Gcs,
    Azblob,
    B2,
}

impl Kind {
    const ALL: [Kind; 7] = [
        Kind::Fs,
        Kind::Sftp,
        Kind::S3,
        Kind::Webdav,
        Kind::Gcs,
        Kind::Azblob,
        Kind::B2,
    ];

    /// Its name in the config, which is also the storage service's scheme.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Fs => "fs",
            Kind::Sftp => "sftp",
            Kind::S3 => "s3",
            Kind::Webdav => "webdav",
            Kind::Gcs => "gcs",
            Kind::Azblob => "azblob",
            Kind::B2 => "b2",
        }
    }

    /// Object stores have no folders (a marker object would only be clutter).
    pub fn is_object_store(self) -> bool {
        matches!(self, Kind::S3 | Kind::Gcs | Kind::Azblob | Kind::B2)
    }

    /// Files sent or read at once by default: one on a disk (a spinning disk is fastest with
    /// one), four on a server.
    pub fn default_concurrency(self) -> usize {
        if self == Kind::Fs { 1 } else { 4 }
    }
}

impl TryFrom<String> for Kind {
    type Error = String;
    fn try_from(name: String) -> std::result::Result<Kind, String> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<&str> = Kind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown kind {name:?} (darvault knows: {})",
                    known.join(", ")
                )
            })
    }
}

impl From<Kind> for &'static str {
    fn from(kind: Kind) -> &'static str {
        kind.as_str()
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The options OpenDAL's service of this kind takes (OpenDAL 0.59), for the kinds darvault
/// documents; None for the others, whose options pass unchecked. A typo must not silently
/// drop a setting (`require_mout = true` turned the mount check off).
fn service_options(kind: &str) -> Option<&'static [&'static str]> {
    Some(match kind {
        "fs" => &["root", "atomic_write_dir"],
        "sftp" => &[
            "endpoint",
            "root",
            "user",
            "key",
            "known_hosts_strategy",
            "enable_copy",
        ],
        "webdav" => &[
            "endpoint",
            "username",
            "password",
            "token",
            "root",
            "disable_copy",
            "disable_create_dir",
            "enable_user_metadata",
            "user_metadata_prefix",
            "user_metadata_uri",
            "enable_conditional_read",
        ],
        "s3" => &[
            "root",
            "bucket",
            "enable_versioning",
            "endpoint",
            "region",
            "profile",
            "access_key_id",
            "secret_access_key",
            "session_token",
            "role_arn",
            "external_id",
            "role_session_name",
            "assume_role_duration_seconds",
            "assume_role_session_tags",
            "disable_config_load",
            "skip_signature",
            "allow_anonymous",
            "server_side_encryption",
            "server_side_encryption_aws_kms_key_id",
            "server_side_encryption_customer_algorithm",
            "server_side_encryption_customer_key",
            "default_storage_class",
            "enable_virtual_host_style",
            "batch_max_operations",
            "delete_max_size",
            "disable_stat_with_override",
            "checksum_algorithm",
            "disable_write_with_if_match",
            "enable_write_with_append",
            "enable_request_payer",
            "default_acl",
            "aws_bucket",
            "aws_bucket_name",
            "bucket_name",
            "aws_endpoint",
            "aws_endpoint_url",
            "endpoint_url",
            "aws_region",
            "aws_profile",
            "aws_access_key_id",
            "aws_secret_access_key",
            "aws_session_token",
            "aws_token",
            "token",
            "aws_server_side_encryption",
            "aws_sse_kms_key_id",
            "aws_virtual_hosted_style_request",
            "virtual_hosted_style_request",
            "aws_checksum_algorithm",
            "aws_request_payer",
            "request_payer",
        ],
        "gcs" => &[
            "root",
            "bucket",
            "endpoint",
            "scope",
            "service_account",
            "credential",
            "credential_path",
            "predefined_acl",
            "default_storage_class",
            "skip_signature",
            "allow_anonymous",
            "disable_vm_metadata",
            "disable_config_load",
            "token",
        ],
        "azblob" => &[
            "root",
            "container",
            "endpoint",
            "account_name",
            "account_key",
            "encryption_key",
            "encryption_algorithm",
            "sas_token",
            "batch_max_operations",
            "skip_signature",
        ],
        "b2" => &[
            "root",
            "application_key_id",
            "application_key",
            "bucket",
            "bucket_id",
        ],
        _ => return None,
    })
}

/// The line of `key = …` in the table that starts at byte `from` of `text`.
fn key_line(text: &str, from: usize, key: &str) -> usize {
    let before = text[..from.min(text.len())].lines().count().max(1);
    text[from.min(text.len())..]
        .lines()
        .position(|l| {
            l.trim_start()
                .strip_prefix(key)
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(before, |i| before + i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("/etc/darvault.toml"))
    }

    #[test]
    fn a_storage_class_must_be_readable_at_once_and_on_s3() {
        let dest = |kind: &str, class: &str| {
            parse(&format!(
                "repository = \"/r\"\n[[definition]]\nname = \"d\"\nsource = \"/s\"\n\n\
                 [[destination]]\nname = \"b\"\nkind = \"{kind}\"\nroot = \"/x\"\nstorage_class = \"{class}\"\n"
            ))
        };
        let c = dest("s3", "standard_ia").unwrap();
        let options = c.destinations[0].service_options().unwrap();
        assert!(options.contains(&("default_storage_class".into(), "STANDARD_IA".into())));
        let err = dest("s3", "DEEP_ARCHIVE").unwrap_err().to_string();
        assert!(err.contains("thawed") && err.contains("line 10"), "{err}");
        let err = dest("sftp", "STANDARD").unwrap_err().to_string();
        assert!(err.contains("s3\" only"), "{err}");
    }

    #[test]
    fn object_lock_and_read_budget_are_for_copies_that_can_have_them() {
        let dest = |kind: &str, lock: &str| {
            parse(&format!(
                "repository = \"/r\"\n[[definition]]\nname = \"d\"\nsource = \"/s\"\n\n\
                 [[destination]]\nname = \"b\"\nkind = \"{kind}\"\nroot = \"/x\"\n{lock}"
            ))
        };
        let c = dest(
            "s3",
            "object_lock = \"compliance\"\nlock_retention = \"400d\"\n",
        )
        .unwrap();
        let b = &c.destinations[0];
        assert_eq!(b.object_lock, Some(LockMode::Compliance));
        assert!(b.is_immutable());
        assert!(b.lock_keeps.is_empty(), "a fixed span needs no retention");
        let kept = dest(
            "s3",
            "object_lock = \"compliance\"\nlock_retention = \"keep\"\n",
        )
        .unwrap();
        let keeps = &kept.destinations[0].lock_keeps;
        assert_eq!(keeps.len(), 1);
        assert_eq!(
            keeps["d"].diff.to_string(),
            "forever",
            "no keep: kept forever"
        );
        let kept = dest(
            "s3",
            "object_lock = \"compliance\"\nlock_retention = \"keep\"\nkeep = { diff = \"100d\" }\n",
        )
        .unwrap();
        assert_eq!(
            kept.destinations[0].lock_keeps["d"].diff.to_string(),
            "100d"
        );
        assert!(
            dest(
                "s3",
                "object_lock = \"compliance\"\nlock_retention = \"kept\"\n"
            )
            .is_err()
        );
        assert!(
            !b.service_options()
                .unwrap()
                .iter()
                .any(|(k, _)| k.contains("lock"))
        );
        for (kind, lock, says) in [
            (
                "fs",
                "object_lock = \"governance\"\nlock_retention = \"1y\"\n",
                "s3\" only",
            ),
            (
                "s3",
                "object_lock = \"compliance\"\n",
                "needs lock_retention",
            ),
            (
                "s3",
                "object_lock = \"compliance\"\nlock_retention = \"forever\"\n",
                "clean up",
            ),
            ("s3", "lock_retention = \"2y\"\n", "without object_lock"),
            ("fs", "read_budget = \"1G\"\n", "read_budget applies"),
            ("s3", "read_every = \"12m\"\n", "without read_budget"),
            (
                "s3",
                "object_lock = \"always\"\nlock_retention = \"2y\"\n",
                "always",
            ),
        ] {
            let err = dest(kind, lock).unwrap_err().to_string();
            assert!(
                err.contains(says) && err.contains(".toml:"),
                "{lock}: {err}"
            );
        }
    }

    #[test]
    fn a_rule_is_five_numbers_and_a_copy_says_what_it_is() {
        let c = parse(
            "repository = \"/r\"\n[[definition]]\nname = \"d\"\nsource = \"/s\"\nrule = \"2-1-1-0-0\"\n\n\
             [[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = \"/m\"\nrequire_mount = true\n\n\
             [[destination]]\nname = \"b\"\nkind = \"s3\"\nbucket = \"x\"\n",
        )
        .unwrap();
        let rule = c.definitions[0].rule;
        assert_eq!((rule.copies, rule.media, rule.errors), (2, 1, 0));
        let (usb, bucket) = (&c.destinations[0], &c.destinations[1]);
        assert_eq!(
            (usb.media().as_str(), usb.is_offsite(), usb.is_offline()),
            ("removable-disk", false, true)
        );
        assert_eq!(
            (
                bucket.media().as_str(),
                bucket.is_offsite(),
                bucket.is_offline()
            ),
            ("cloud", true, false)
        );
        let err = parse(
            "repository = \"/r\"\n[[definition]]\nname = \"d\"\nsource = \"/s\"\nrule = \"3-2-1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("/etc/darvault.toml") && err.contains("line 5"),
            "{err}"
        );
        assert!(err.contains("five numbers"), "{err}");
    }

    #[test]
    fn the_embedded_default_is_valid_and_shows_the_defaults() {
        let c = parse(DEFAULT_CONFIG).unwrap();
        let d = &c.definitions[0];
        assert_eq!(d.compression, default_compression());
        assert_eq!(d.slice_size, default_slice_size());
        assert_eq!(d.restore_test.max_size, default_max_sample());
        assert_eq!(d.timeout, default_timeout());
        assert_eq!(d.redundancy.full, Percent(10));
        assert_eq!(d.par2_whole_slice_max, default_whole_slice_max());
        assert_eq!(d.par2_block_size, default_par2_block_size());
        assert!(d.cache_directory_tagging);
        let keep = Keep::default();
        assert_eq!(d.keep.diff.to_string(), keep.diff.to_string());
        assert_eq!(d.keep.incr.to_string(), keep.incr.to_string());
        assert_eq!(d.keep.full.to_string(), keep.full.to_string());
        assert_eq!(d.hooks.timeout, hook_timeout());
        assert_eq!(d.rule, Rule::default());
        assert_eq!(d.rule.to_string(), "3-2-1-1-0");
        assert_eq!(d.proof_max_age, default_proof_max_age());
        let schedule = Schedule::default();
        assert_eq!(c.schedule.full, schedule.full);
        assert_eq!(c.schedule.diff, schedule.diff);
        assert_eq!(c.schedule.incr, schedule.incr);
        assert_eq!(c.schedule.audit, schedule.audit);
        assert_eq!(c.schedule.cleanup, schedule.cleanup);
    }

    #[test]
    fn the_config_reference_is_the_embedded_default() {
        let page = include_str!("../../docs/config.md");
        assert!(
            page.contains(&format!("```toml\n{DEFAULT_CONFIG}```")),
            "docs/config.md must hold src/config/default.toml verbatim: copy it over"
        );
    }

    #[test]
    fn a_minimal_config_is_enough() {
        let c = parse(
            "repository = \"/srv/backups\"\n[[definition]]\nname = \"photos\"\nsource = \"/home/me/Pictures\"\n",
        )
        .unwrap();
        assert_eq!(c.definitions[0].name().as_str(), "photos");
        assert!(!c.definitions[0].no_compress.is_empty());
    }

    #[test]
    fn a_par2_block_size_par2_cannot_use_is_refused_by_its_key() {
        let text = |size: &str| {
            format!(
                "repository = \"/r\"\n[[definition]]\nname = \"d\"\nsource = \"/s\"\npar2_block_size = \"{size}\"\n"
            )
        };
        for wrong in ["3M", "1K", "512M"] {
            let err = parse(&text(wrong)).unwrap_err().to_string();
            assert!(err.contains("key `par2_block_size`"), "{err}");
            assert!(err.contains("not a power of two from 4K to 256M"), "{err}");
        }
        assert_eq!(
            parse(&text("1M")).unwrap().definitions[0].par2_block_size,
            ByteSize(1 << 20)
        );
    }

    #[test]
    fn a_mistyped_destination_key_is_refused_with_its_line() {
        let text = "repository = \"/r\"\n[[definition]]\nname = \"d\"\nsource = \"/s\"\n\n\
                    [[destination]]\nname = \"usb\"\nkind = \"fs\"\nroot = \"/media/usb\"\n\
                    require_mout = true\n\n[[destination]]\nname = \"b\"\nkind = \"s3\"\n\
                    bucket = \"x\"\nsecret_access_key_env = \"S\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("/etc/darvault.toml:10:"), "{err}");
        assert!(err.contains("unknown key `require_mout`"), "{err}");
        assert!(
            err.contains("require_mount"),
            "the valid keys are listed: {err}"
        );
        // Keys of other kinds, and *_env references to valid ones, pass.
        assert!(parse(&text.replace("require_mout", "require_mount")).is_ok());
    }

    #[test]
    fn an_unknown_destination_kind_is_refused_with_its_line() {
        let text = "repository = \"/r\"\n[[definition]]\nname = \"d\"\nsource = \"/s\"\n\n\
                    [[destination]]\nname = \"usb\"\nkind = \"floppy\"\nroot = \"/media/usb\"\n";
        let err = parse(text).unwrap_err().to_string();
        assert!(err.starts_with("/etc/darvault.toml"), "{err}");
        assert!(err.contains("line 8"), "{err}");
        assert!(err.contains("unknown kind \"floppy\""), "{err}");
        assert!(
            err.contains("fs, sftp, s3, webdav"),
            "the kinds are listed: {err}"
        );
    }

    #[test]
    fn errors_name_file_line_and_key() {
        let err = parse("repository = \"/srv\"\n[[definition]]\nname = \"a\"\nsource = \"/x\"\ncompresion = \"zstd\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/etc/darvault.toml")
                && err.contains("line 5")
                && err.contains("compresion"),
            "{err}"
        );
        let err = parse("repository = \"/srv\"\n[[definition]]\nname = \"a\"\nsource = \"/x\"\ncompression = \"zstd:40\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 5") && err.contains("compression"),
            "{err}"
        );
        let err = parse("repository = \"/srv\"\n[[definition]]\nname = \"a\"\nsource = \"/x\"\n[[definition]]\nname = \"a\"\nsource = \"/y\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("darvault.toml:6") && err.contains("twice"),
            "{err}"
        );
    }
}
