//! The state database (`<state dir>/state.db`, SQLite): what was replicated where, so that a
//! re-run sends only what is missing. Schema changes are numbered migrations, applied in order
//! and recorded in `PRAGMA user_version`.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};

use crate::error::{Error, Result};

const MIGRATIONS: &[&str] = &[
    // 1: replication progress per destination.
    "CREATE TABLE replicated_file (
         destination TEXT NOT NULL,
         set_name    TEXT NOT NULL,
         path        TEXT NOT NULL,
         sha256      TEXT NOT NULL,
         size        INTEGER NOT NULL,
         sent_at     TEXT NOT NULL,
         PRIMARY KEY (destination, set_name, path)
     );
     CREATE TABLE replicated_set (
         destination     TEXT NOT NULL,
         set_name        TEXT NOT NULL,
         manifest_sha256 TEXT NOT NULL,
         completed_at    TEXT NOT NULL,
         PRIMARY KEY (destination, set_name)
     );",
    // 2: audits: when each set was last proven on each copy, and every repair.
    "CREATE TABLE audited_set (
         copy       TEXT NOT NULL,
         set_name   TEXT NOT NULL,
         audited_at TEXT NOT NULL,
         status     TEXT NOT NULL,
         proven_at  TEXT,
         PRIMARY KEY (copy, set_name)
     );
     CREATE TABLE repair (
         copy        TEXT NOT NULL,
         set_name    TEXT NOT NULL,
         path        TEXT NOT NULL,
         old_sha256  TEXT,
         new_sha256  TEXT NOT NULL,
         source      TEXT NOT NULL,
         repaired_at TEXT NOT NULL
     );",
    // 3: the version index: what each set's catalogue records (shared by every copy of the
    // set: a set is its manifest).
    "CREATE TABLE indexed_set (
         set_name        TEXT PRIMARY KEY,
         manifest_sha256 TEXT NOT NULL
     );
     CREATE TABLE version (
         set_name TEXT NOT NULL,
         path     TEXT NOT NULL,
         state    TEXT NOT NULL,
         kind     TEXT NOT NULL,
         size     INTEGER NOT NULL,
         mtime    INTEGER NOT NULL
     );
     CREATE INDEX version_by_set ON version (set_name);",
    // 4: metrics of every run: one row per definition (backup), destination (replicate),
    // copy (audit, cleanup), with the details as JSON.
    "CREATE TABLE run (
         id         INTEGER PRIMARY KEY,
         command    TEXT NOT NULL,
         subject    TEXT NOT NULL,
         level      TEXT,
         set_name   TEXT,
         outcome    TEXT NOT NULL,
         started_at TEXT NOT NULL,
         seconds    REAL NOT NULL,
         bytes      INTEGER NOT NULL,
         details    TEXT NOT NULL
     );
     CREATE INDEX run_by_subject ON run (command, subject, started_at);",
    // 5: the binaries this darvault put into bundles: only these (or the system's own) are
    // ever run from a copy without --trust-bundle.
    "CREATE TABLE bundled_binary (
         sha256        TEXT PRIMARY KEY,
         name          TEXT NOT NULL,
         first_bundled TEXT NOT NULL
     );",
    // 6: the version index now lists folders (an empty folder exists too): indexes built
    // before are dropped, to be read again from the catalogues on first use.
    "DELETE FROM version; DELETE FROM indexed_set;",
    // 7: whether each definition's backup rule held when `status` last looked, so that a
    // change is told once.
    "CREATE TABLE rule_verdict (
         definition TEXT PRIMARY KEY,
         holds      INTEGER NOT NULL,
         since      TEXT NOT NULL
     );",
    // 8: when each file of a remote copy was last downloaded and hashed whole (a copy the
    // server vouches for is read back within its read budget, least recently read first).
    "CREATE TABLE read_back (
         copy     TEXT NOT NULL,
         set_name TEXT NOT NULL,
         path     TEXT NOT NULL,
         size     INTEGER NOT NULL,
         read_at  TEXT NOT NULL,
         PRIMARY KEY (copy, set_name, path)
     );",
    // 9: every read back counted once, for the read budget's month (read_back keeps only
    // each file's latest read).
    "CREATE TABLE read_log (
         copy    TEXT NOT NULL,
         read_at TEXT NOT NULL,
         bytes   INTEGER NOT NULL
     );",
    // 10: until when every file of a set locked a year at a time is locked (a cache: the
    // copy's objects say it too).
    "CREATE TABLE locked_until (
         copy     TEXT NOT NULL,
         set_name TEXT NOT NULL,
         until    TEXT NOT NULL,
         PRIMARY KEY (copy, set_name)
     );",
];

/// A file sent to a copy, and when its bytes there were last read back whole (when it was
/// sent, if never since: the server checked them as it received them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldFile {
    pub set_name: String,
    pub path: String,
    pub size: u64,
    pub last_read: jiff::Timestamp,
}

/// A set's last audit on a copy.
#[derive(Debug, Clone)]
pub struct Audited {
    pub copy: String,
    pub set_name: String,
    pub status: String,
    /// RFC 3339; None when it was never proven there.
    pub proven_at: Option<String>,
}

/// One unit of a run: a definition's backup, a destination's replication, a copy's audit
/// or cleanup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    /// backup, replicate, audit or cleanup.
    pub command: String,
    /// The definition, destination or copy.
    pub subject: String,
    pub level: Option<String>,
    pub set_name: Option<String>,
    pub outcome: RunOutcome,
    pub started_at: jiff::Timestamp,
    pub seconds: f64,
    /// Archive size, bytes sent, checked or freed.
    pub bytes: u64,
    /// Phases, counters, samples: what the command reported.
    pub details: serde_json::Value,
}

/// How one unit of a run ended; stored by its name (`ok`, `warning`, ...), so the rows read
/// as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    Ok,
    /// Done, with something to say (a backup that could not read some files).
    Warning,
    /// Damage was repaired (audit).
    Repaired,
    /// Damage found and left (audit).
    Damage,
    Failed,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Ok => "ok",
            RunOutcome::Warning => "warning",
            RunOutcome::Repaired => "repaired",
            RunOutcome::Damage => "damage",
            RunOutcome::Failed => "failed",
        }
    }

    /// The outcome a row names; a name this darvault does not know (a newer one's) counts
    /// as a failure, so that nothing unknown is taken for success.
    fn from_row(name: &str) -> RunOutcome {
        [
            RunOutcome::Ok,
            RunOutcome::Warning,
            RunOutcome::Repaired,
            RunOutcome::Damage,
        ]
        .into_iter()
        .find(|o| o.as_str() == name)
        .unwrap_or(RunOutcome::Failed)
    }
}

impl std::fmt::Display for RunOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry a set's catalogue records: data saved there, a changed inode, or a deletion.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Recorded {
    pub path: String,
    pub state: RecordState,
    pub kind: PathKind,
    pub size: u64,
    /// Seconds since the epoch.
    pub mtime: i64,
}

/// What a set records of a path (stored in the index by these lowercase names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordState {
    /// Its data is stored in the set.
    Saved,
    /// Only its metadata changed; the data is an older set's.
    Metadata,
    /// It was deleted since the set's base.
    Deleted,
    /// A folder that exists in the set (every set lists the whole tree's folders).
    Listed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    File,
    Folder,
    Symlink,
    Other,
}

impl RecordState {
    pub fn as_str(self) -> &'static str {
        match self {
            RecordState::Saved => "saved",
            RecordState::Metadata => "metadata",
            RecordState::Deleted => "deleted",
            RecordState::Listed => "listed",
        }
    }

    fn parse(s: &str) -> Option<RecordState> {
        [Self::Saved, Self::Metadata, Self::Deleted, Self::Listed]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::File => "file",
            PathKind::Folder => "folder",
            PathKind::Symlink => "symlink",
            PathKind::Other => "other",
        }
    }

    fn parse(s: &str) -> Option<PathKind> {
        [Self::File, Self::Folder, Self::Symlink, Self::Other]
            .into_iter()
            .find(|v| v.as_str() == s)
    }
}

/// Shared between concurrent uploads: one connection behind a lock (writes are tiny).
pub struct State {
    conn: Mutex<Connection>,
}

fn db_error(e: rusqlite::Error) -> Error {
    Error::Failed(format!("state database: {e}"))
}

impl State {
    pub fn open(state_dir: &Path) -> Result<State> {
        crate::paths::private_dir(state_dir).map_err(Error::io("cannot create", state_dir))?;
        let path = state_dir.join("state.db");
        let mut conn = Connection::open(&path).map_err(db_error)?;
        // The folder is private already; the database (and its WAL files) are too.
        for suffix in ["", "-wal", "-shm"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = crate::paths::private_file(Path::new(&file));
        }
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(db_error)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error)?;
        // Every record here says something a later run can find out again (a file sent, a
        // set audited, an index built): one lost to a power cut costs a re-check, never a
        // wrong answer. So a commit is not waited on to reach the disk (WAL stays consistent;
        // checkpoints still sync): an audit or a replication writes one per set or file.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db_error)?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db_error)?;
        if version > MIGRATIONS.len() as i64 {
            return Err(Error::Failed(format!(
                "{} was written by a newer darvault (schema {version}): upgrade darvault",
                path.display()
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(db_error)?;
            tx.execute_batch(sql).map_err(db_error)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)
                .map_err(db_error)?;
            tx.commit().map_err(db_error)?;
        }
        Ok(State {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        f(&self.conn.lock().expect("state lock")).map_err(db_error)
    }

    pub fn file_sent(
        &self,
        destination: &str,
        set: &str,
        path: &str,
        sha256: &str,
        size: u64,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO replicated_file VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![destination, set, path, sha256, size as i64, now()],
            )
            .map(|_| ())
        })
    }

    /// Whether this exact file (by SHA-256) was sent and verified before.
    pub fn was_sent(&self, destination: &str, set: &str, path: &str, sha256: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM replicated_file WHERE destination = ?1 AND set_name = ?2 AND path = ?3 AND sha256 = ?4",
                params![destination, set, path, sha256],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
    }

    pub fn set_complete(&self, destination: &str, set: &str, manifest_sha256: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO replicated_set VALUES (?1, ?2, ?3, ?4)",
                params![destination, set, manifest_sha256, now()],
            )
            .map(|_| ())
        })
    }

    pub fn is_complete(&self, destination: &str, set: &str, manifest_sha256: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM replicated_set WHERE destination = ?1 AND set_name = ?2 AND manifest_sha256 = ?3",
                params![destination, set, manifest_sha256],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
    }
}

impl State {
    /// Record an audit of a set on a copy; `proven` when every file matched its manifest.
    pub fn audited(&self, copy: &str, set: &str, status: &str, proven: bool) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO audited_set (copy, set_name, audited_at, status, proven_at)
                 VALUES (?1, ?2, ?3, ?4, CASE WHEN ?5 THEN ?3 END)
                 ON CONFLICT (copy, set_name) DO UPDATE SET audited_at = ?3, status = ?4,
                     proven_at = CASE WHEN ?5 THEN ?3 ELSE proven_at END",
                params![copy, set, now(), status, proven],
            )
            .map(|_| ())
        })
    }

    /// `set` was removed from `destination` by darvault: what the state knew of it there
    /// goes (what it held, what was read back).
    pub fn forget_sent(&self, destination: &str, set: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM replicated_set WHERE destination = ?1 AND set_name = ?2",
                params![destination, set],
            )?;
            c.execute(
                "DELETE FROM replicated_file WHERE destination = ?1 AND set_name = ?2",
                params![destination, set],
            )?;
            c.execute(
                "DELETE FROM locked_until WHERE copy = ?1 AND set_name = ?2",
                params![destination, set],
            )?;
            c.execute(
                "DELETE FROM read_back WHERE copy = ?1 AND set_name = ?2",
                params![destination, set],
            )
            .map(|_| ())
        })
    }

    /// Until when every file of `set` on `copy` is locked, as last renewed from here.
    pub fn locked_until(&self, copy: &str, set: &str) -> Result<Option<jiff::Timestamp>> {
        let until: Option<String> = self.with(|c| {
            c.query_row(
                "SELECT until FROM locked_until WHERE copy = ?1 AND set_name = ?2",
                params![copy, set],
                |r| r.get(0),
            )
            .optional()
        })?;
        Ok(until.and_then(|t| t.parse().ok()))
    }

    /// The sets of `copy` whose locks this machine lengthens.
    pub fn locked_sets(&self, copy: &str) -> Result<Vec<String>> {
        self.with(|c| {
            let mut query = c.prepare("SELECT set_name FROM locked_until WHERE copy = ?1")?;
            let rows = query.query_map(params![copy], |r| r.get(0))?;
            rows.collect()
        })
    }

    /// `set` is no longer on `copy`: its locks are not lengthened any more.
    pub fn forget_locked(&self, copy: &str, set: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "DELETE FROM locked_until WHERE copy = ?1 AND set_name = ?2",
                params![copy, set],
            )
            .map(|_| ())
        })
    }

    /// Every file of `set` on `copy` is locked until `until`.
    pub fn locked(&self, copy: &str, set: &str, until: jiff::Timestamp) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO locked_until (copy, set_name, until) VALUES (?1, ?2, ?3)",
                params![copy, set, until.to_string()],
            )
            .map(|_| ())
        })
    }

    /// Whether `set` was sent whole to `destination` (and not removed by darvault since).
    pub fn was_replicated(&self, destination: &str, set: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM replicated_set WHERE destination = ?1 AND set_name = ?2",
                params![destination, set],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
    }

    /// The file `path` of `set` on `copy` was read back whole and hashed now.
    pub fn read_back(&self, copy: &str, set: &str, path: &str, size: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO read_back VALUES (?1, ?2, ?3, ?4, ?5)",
                params![copy, set, path, size as i64, now()],
            )
            .map(|_| ())
        })
    }

    /// `bytes` were downloaded from `copy` now, to read files back whole.
    pub fn read_bytes(&self, copy: &str, bytes: u64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO read_log VALUES (?1, ?2, ?3)",
                params![copy, now(), bytes as i64],
            )
            .map(|_| ())
        })
    }

    /// The bytes of `copy` read back whole since `since`.
    pub fn bytes_read_back_since(&self, copy: &str, since: jiff::Timestamp) -> Result<u64> {
        let rows: Vec<(i64, String)> = self.with(|c| {
            let mut q = c.prepare("SELECT bytes, read_at FROM read_log WHERE copy = ?1")?;
            q.query_map(params![copy], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })?;
        Ok(rows
            .into_iter()
            .filter(|(_, at)| at.parse::<jiff::Timestamp>().is_ok_and(|at| at >= since))
            .map(|(size, _)| size.max(0) as u64)
            .sum())
    }

    /// The files sent to `copy`, least recently read back first.
    pub fn held_files(&self, copy: &str) -> Result<Vec<HeldFile>> {
        let rows: Vec<(String, String, i64, String)> = self.with(|c| {
            let mut q = c.prepare(
                "SELECT f.set_name, f.path, f.size, COALESCE(r.read_at, f.sent_at)
                 FROM replicated_file f LEFT JOIN read_back r
                   ON r.copy = f.destination AND r.set_name = f.set_name AND r.path = f.path
                 WHERE f.destination = ?1",
            )?;
            q.query_map(params![copy], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect()
        })?;
        let mut held: Vec<HeldFile> = rows
            .into_iter()
            .map(|(set_name, path, size, at)| HeldFile {
                set_name,
                path,
                size: size.max(0) as u64,
                last_read: at.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            })
            .collect();
        held.sort_by(|a, b| a.last_read.cmp(&b.last_read).then(a.path.cmp(&b.path)));
        Ok(held)
    }

    /// When the set was last proven on the copy (RFC 3339), if ever.
    pub fn last_proven(&self, copy: &str, set: &str) -> Result<Option<String>> {
        self.with(|c| {
            c.query_row(
                "SELECT proven_at FROM audited_set WHERE copy = ?1 AND set_name = ?2",
                params![copy, set],
                |r| r.get::<_, Option<String>>(0),
            )
            .optional()
            .map(Option::flatten)
        })
    }

    pub fn repaired(
        &self,
        copy: &str,
        set: &str,
        path: &str,
        old: Option<&str>,
        new: &str,
        source: &str,
    ) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO repair VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![copy, set, path, old, new, source, now()],
            )
            .map(|_| ())
        })
    }
}

impl State {
    /// Remember a binary put into a set's bundle.
    pub fn bundled(&self, name: &str, sha256: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO bundled_binary VALUES (?1, ?2, ?3)",
                params![sha256, name, now()],
            )
            .map(|_| ())
        })
    }

    /// Record whether `definition`'s backup rule holds now; what was recorded before (None
    /// the first time).
    pub fn rule_verdict(&self, definition: &str, holds: bool) -> Result<Option<bool>> {
        self.with(|c| {
            let before: Option<bool> = c
                .query_row(
                    "SELECT holds FROM rule_verdict WHERE definition = ?1",
                    params![definition],
                    |r| r.get(0),
                )
                .optional()?;
            if before != Some(holds) {
                c.execute(
                    "INSERT OR REPLACE INTO rule_verdict VALUES (?1, ?2, ?3)",
                    params![definition, holds, now()],
                )?;
            }
            Ok(before)
        })
    }

    /// Whether this darvault bundled a binary with this SHA-256.
    pub fn was_bundled(&self, sha256: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM bundled_binary WHERE sha256 = ?1",
                params![sha256],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        })
    }
}

impl State {
    pub fn is_indexed(&self, set: &str, manifest_sha256: &str) -> Result<bool> {
        self.with(|c| {
            c.query_row(
                "SELECT 1 FROM indexed_set WHERE set_name = ?1 AND manifest_sha256 = ?2",
                params![set, manifest_sha256],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
        })
    }

    /// Replace what the index holds for a set with the rows `fill` gives, written as they
    /// come (a catalogue of a million files is never held in memory).
    pub fn index_set(
        &self,
        set: &str,
        manifest_sha256: &str,
        fill: impl FnOnce(&mut dyn FnMut(Recorded)) -> Result<()>,
    ) -> Result<()> {
        let mut conn = self.conn.lock().expect("state lock");
        let tx = conn.transaction().map_err(db_error)?;
        tx.execute("DELETE FROM version WHERE set_name = ?1", params![set])
            .map_err(db_error)?;
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO version (set_name, path, state, kind, size, mtime)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .map_err(db_error)?;
            let mut failed = None;
            fill(&mut |r| {
                if failed.is_none() {
                    failed = insert
                        .execute(params![
                            set,
                            r.path,
                            r.state.as_str(),
                            r.kind.as_str(),
                            r.size as i64,
                            r.mtime
                        ])
                        .err();
                }
            })?;
            if let Some(e) = failed {
                return Err(db_error(e));
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO indexed_set VALUES (?1, ?2)",
            params![set, manifest_sha256],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)
    }

    /// Each row a set records, in archive order, one at a time.
    pub fn each_recorded(&self, set: &str, mut f: impl FnMut(Recorded)) -> Result<()> {
        self.with(|c| {
            let mut query = c.prepare(
                "SELECT path, state, kind, size, mtime FROM version WHERE set_name = ?1
                 ORDER BY rowid",
            )?;
            let mut rows = query.query(params![set])?;
            while let Some(r) = rows.next()? {
                f(recorded_row(r)?);
            }
            Ok(())
        })
    }

    /// Each row the sets of a chain record, one at a time: by path (a folder before what is
    /// below it), each path's rows in chain order; with the position of its set in `chain`.
    pub fn each_in_chain(&self, chain: &[&str], mut f: impl FnMut(usize, Recorded)) -> Result<()> {
        if chain.is_empty() {
            return Ok(());
        }
        let positions = (1..=chain.len())
            .map(|i| format!("(?{i}, {})", i - 1))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "WITH chain(name, position) AS (VALUES {positions})
             SELECT v.path, v.state, v.kind, v.size, v.mtime, chain.position
             FROM version v JOIN chain ON v.set_name = chain.name
             ORDER BY v.path, chain.position, v.rowid"
        );
        self.with(|c| {
            let mut query = c.prepare(&sql)?;
            let mut rows = query.query(rusqlite::params_from_iter(chain))?;
            while let Some(r) = rows.next()? {
                let position = r.get::<_, i64>(5)? as usize;
                f(position, recorded_row(r)?);
            }
            Ok(())
        })
    }
}

fn recorded_row(r: &rusqlite::Row) -> rusqlite::Result<Recorded> {
    let unknown = |column: usize| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            "not a value this darvault writes".into(),
        )
    };
    Ok(Recorded {
        path: r.get(0)?,
        state: RecordState::parse(r.get_ref(1)?.as_str()?).ok_or_else(|| unknown(1))?,
        kind: PathKind::parse(r.get_ref(2)?.as_str()?).ok_or_else(|| unknown(2))?,
        size: r.get::<_, i64>(3)? as u64,
        mtime: r.get(4)?,
    })
}

impl State {
    pub fn record_run(&self, run: &Run) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO run (command, subject, level, set_name, outcome, started_at,
                                  seconds, bytes, details)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    run.command,
                    run.subject,
                    run.level,
                    run.set_name,
                    run.outcome.as_str(),
                    run.started_at.to_string(),
                    run.seconds,
                    run.bytes as i64,
                    run.details.to_string()
                ],
            )
            .map(|_| ())
        })
    }

    /// Runs of a command, oldest first.
    pub fn runs(&self, command: &str) -> Result<Vec<Run>> {
        self.with(|c| {
            c.prepare(
                "SELECT command, subject, level, set_name, outcome, started_at, seconds, bytes,
                        details
                 FROM run WHERE command = ?1 ORDER BY started_at, id",
            )?
            .query_map(params![command], |r| {
                let started: String = r.get(5)?;
                let details: String = r.get(8)?;
                let outcome: String = r.get(4)?;
                Ok(Run {
                    command: r.get(0)?,
                    subject: r.get(1)?,
                    level: r.get(2)?,
                    set_name: r.get(3)?,
                    outcome: RunOutcome::from_row(&outcome),
                    started_at: started.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                    seconds: r.get(6)?,
                    bytes: r.get::<_, i64>(7)? as u64,
                    details: serde_json::from_str(&details).unwrap_or_default(),
                })
            })?
            .collect()
        })
    }

    /// Every set's last audit on every copy.
    pub fn audits(&self) -> Result<Vec<Audited>> {
        self.with(|c| {
            c.prepare("SELECT copy, set_name, status, proven_at FROM audited_set")?
                .query_map([], |r| {
                    Ok(Audited {
                        copy: r.get(0)?,
                        set_name: r.get(1)?,
                        status: r.get(2)?,
                        proven_at: r.get(3)?,
                    })
                })?
                .collect()
        })
    }
}

fn now() -> String {
    jiff::Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_once_and_remembers() {
        let dir = tempfile::tempdir().unwrap();
        let s = State::open(dir.path()).unwrap();
        s.file_sent("usb", "a_FULL_2026-01-01_000000", "x.1.dar", "ab", 3)
            .unwrap();
        drop(s);
        let s = State::open(dir.path()).unwrap();
        assert!(
            s.was_sent("usb", "a_FULL_2026-01-01_000000", "x.1.dar", "ab")
                .unwrap()
        );
        assert!(
            !s.was_sent("usb", "a_FULL_2026-01-01_000000", "x.1.dar", "cd")
                .unwrap()
        );
        assert!(
            !s.is_complete("usb", "a_FULL_2026-01-01_000000", "m")
                .unwrap()
        );
        s.set_complete("usb", "a_FULL_2026-01-01_000000", "m")
            .unwrap();
        assert!(
            s.is_complete("usb", "a_FULL_2026-01-01_000000", "m")
                .unwrap()
        );
    }
}
