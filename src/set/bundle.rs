//! The restore kit. Every set's `bundle/` holds RESTORE.txt, plain steps for this set and its
//! chain. The tools are carried once per chain, by its FULL set (which every restore of the
//! chain needs anyway), in a folder per machine architecture named as `uname -m` prints it
//! (`bundle/x86_64/`, `bundle/aarch64/`): a static dar, the static par2 when the engine is
//! par2cmdline-turbo, a static darvault when there is one; and the gpg stand-in (a script,
//! the same on every machine: see `tools::gpg_stand_in`). A DIFF
//! or INCR of a few small files thus costs kilobytes on a copy, not the tools' megabytes
//! again. On the repository the binaries are stored once (`.darvault/bundle/<sha256>`) and
//! hard-linked into each FULL where the filesystem allows.

use std::path::{Path, PathBuf};

use super::Role;
use super::manifest::FileEntry;
use crate::error::{Error, Result};
use crate::hashing::{hash_file, sha256_hex};
use crate::tools::gpg_stand_in;

pub const DIR: &str = "bundle";
const TEMPLATE: &str = include_str!("../../static-bundle/RESTORE.txt");
const DARVAULT_TEXT: &str = include_str!("../../static-bundle/RESTORE-darvault.txt");

/// What the RESTORE.txt of a set says.
pub struct RestoreText<'a> {
    pub set: &'a str,
    pub definition: &'a str,
    pub level: &'a str,
    pub created: &'a str,
    pub dar_version: &'a str,
    /// The sets to restore in order, this one last.
    pub chain: &'a [String],
    /// The set of the chain whose bundle holds the tools (this one, or an older one).
    pub tools_set: &'a str,
    pub par2_indexes: &'a [String],
    /// The architectures the tools are carried for, as `uname -m` prints them.
    pub architectures: &'a [&'a str],
    pub par2_bundled: bool,
    pub darvault_bundled: bool,
    pub encrypted: bool,
    /// Where the machine that made the set kept a second copy of its PAR2 files.
    pub par2_dir: Option<&'a str>,
}

/// Where RESTORE.txt's step 0 puts the tools.
const TOOLS: &str = "/tmp/restore-tools";

impl RestoreText<'_> {
    /// The folder holding the tools, from inside this set's folder.
    fn tools_dir(&self) -> String {
        match self.tools_set == self.set {
            true => DIR.to_owned(),
            false => format!("../{}/{DIR}", self.tools_set),
        }
    }

    /// The machines the tools run on, as the text names them.
    fn machines(&self) -> String {
        let named: Vec<String> = self
            .architectures
            .iter()
            .map(|a| match *a {
                "aarch64" => "aarch64 (arm64)".to_owned(),
                other => other.to_owned(),
            })
            .collect();
        match named.as_slice() {
            [] => std::env::consts::ARCH.to_owned(),
            [one] => one.clone(),
            [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
        }
    }

    pub fn render(&self) -> String {
        let key = if self.encrypted { " -K aes:" } else { "" };
        let par2 = if self.par2_bundled {
            format!("{TOOLS}/par2")
        } else {
            "par2".to_owned()
        };
        let chain_list: String = self
            .chain
            .iter()
            .enumerate()
            .map(|(i, s)| format!("    {}. {s}\n", i + 1))
            .collect();
        let extract = |extra: &str| -> String {
            self.chain
                .iter()
                .map(|s| {
                    format!(
                        "    {TOOLS}/dar_static -x ../{s}/{s} -R /path/to/target -O -w{extra}{key}\n"
                    )
                })
                .collect()
        };
        let repair: String = self
            .par2_indexes
            .iter()
            .map(|i| format!("    {par2} repair -B . {i}\n"))
            .collect();
        TEMPLATE
            .replace("{{SET}}", self.set)
            .replace("{{DEFINITION}}", self.definition)
            .replace(
                "{{A_LEVEL}}",
                &match self.level {
                    "INCR" => format!("an {}", self.level),
                    level => format!("a {level}"),
                },
            )
            .replace("{{CREATED}}", self.created)
            .replace("{{DAR_VERSION}}", self.dar_version)
            .replace(
                "{{ENCRYPTION}}",
                if self.encrypted {
                    "\nTHE ARCHIVE IS ENCRYPTED (AES-256). Every dar command below ends with\n\
                     -K aes: and dar asks for the passphrase on the terminal (with no terminal,\n\
                     write -K aes:PASSPHRASE instead: other users of the machine can see it).\n\
                     Without the passphrase nothing can be restored.\n"
                } else {
                    ""
                },
            )
            .replace(
                "{{PAR2_BUNDLED}}",
                if self.par2_bundled {
                    " and a static par2 (the repair tool)"
                } else {
                    "; for repairs install par2 (Debian/Ubuntu: apt-get install par2)"
                },
            )
            .replace("{{PAR2_REPAIR}}", &repair)
            .replace(
                "{{PAR2_ELSEWHERE}}",
                &self
                    .par2_dir
                    .map(|dir| {
                        format!(
                            "\n   If the .par2 files are damaged too: the machine that made this set kept a\n   second copy of them in {dir}/{}/{} — copy them here from\n   there first (step 1 then checks them).\n",
                            self.definition, self.set
                        )
                    })
                    .unwrap_or_default(),
            )
            .replace("{{CHAIN_LIST}}", &chain_list)
            .replace("{{CHAIN_NAMES}}", &self.chain.join(" "))
            .replace("{{MACHINES}}", &self.machines())
            .replace("{{TOOLS_DIR}}", &self.tools_dir())
            .replace("{{TOOLS_SET}}", self.tools_set)
            .replace("{{CHAIN_COMMANDS}}", &extract(""))
            .replace(
                "{{ONE_FILE_COMMANDS}}",
                &extract(" -g 'Documents/letter.odt'"),
            )
            .replace(
                "{{DARVAULT}}",
                &if self.darvault_bundled {
                    DARVAULT_TEXT.replace("{{DEFINITION}}", self.definition)
                } else {
                    String::new()
                },
            )
            .replace("{{KEY}}", key)
    }
}

/// Write `bundle/` into `set_dir`: RESTORE.txt, and for a set that carries its chain's tools
/// the binaries (each named by its path inside `bundle/`, `x86_64/dar_static`; hard-linked from
/// `store` when possible) and the gpg stand-in. Returns their manifest entries.
pub fn write(
    set_dir: &Path,
    store: &Path,
    tools: Option<&[(String, &Path)]>,
    restore_text: &str,
) -> Result<Vec<FileEntry>> {
    let dir = set_dir.join(DIR);
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    let mut entries = Vec::new();
    let mut texts = vec![("RESTORE.txt", restore_text, 0o644)];
    if tools.is_some() {
        texts.push((gpg_stand_in::BUNDLED_NAME, gpg_stand_in::TEXT, 0o755));
    }
    for (name, source) in tools.unwrap_or_default() {
        let (size, sha256) = hash_file(source)?;
        let stored = store_once(store, source, &sha256)?;
        let target = dir.join(name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(Error::io("cannot create", parent))?;
        }
        if std::fs::hard_link(&stored, &target).is_err() {
            std::fs::copy(&stored, &target).map_err(Error::io("cannot copy", &target))?;
        }
        entries.push(FileEntry {
            path: format!("{DIR}/{name}"),
            size,
            sha256,
            role: Role::Bundle,
            parts: None,
        });
    }
    for (name, text, mode) in texts {
        let path = dir.join(name);
        super::manifest::write_synced(&path, text.as_bytes())?;
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .map_err(Error::io("cannot set permissions on", &path))?;
        entries.push(FileEntry {
            path: format!("{DIR}/{name}"),
            size: text.len() as u64,
            sha256: sha256_hex(text.as_bytes()),
            role: Role::Bundle,
            parts: None,
        });
    }
    Ok(entries)
}

/// A machine's tools carried again from an older set of the chain.
pub struct Kept {
    pub arch: crate::config::Architecture,
    /// (name inside `bundle/`, e.g. `aarch64/dar_static`; its file in that set; its entry there).
    pub files: Vec<(String, PathBuf, FileEntry)>,
}

/// The tools of each machine in `archs` (whose tools are not found now) from the newest set of
/// `chain` (in `definition_dir`) whose bundle holds that machine's dar_static: a set that
/// carries its chain's tools again (this machine's changed) keeps the other machine's, so that
/// its own RESTORE.txt still serves both. Kept only where that set was made with the same dar
/// (`dar_version`: an older dar may not read a newer archive), holds every program of
/// `programs` (what this machine carries) and every file is a regular file with its manifest's
/// size and SHA-256; else that machine is left out, as when nothing held its tools.
pub fn kept_from_chain(
    definition_dir: &Path,
    chain: &[String],
    archs: &[crate::config::Architecture],
    dar_version: &str,
    programs: &[&str],
) -> Vec<Kept> {
    let mut kept = Vec::new();
    for arch in archs {
        let folder = format!("{DIR}/{}/", arch.as_str());
        let dar = format!("{folder}dar_static");
        let held = chain.iter().rev().find_map(|set| {
            let manifest = super::Manifest::read(&definition_dir.join(set)).ok()?;
            manifest
                .files
                .iter()
                .any(|f| f.path == dar)
                .then(|| (set.clone(), manifest))
        });
        let Some((set, manifest)) = held else {
            continue;
        };
        let refused = |why: String| {
            tracing::warn!(
                "the {} tools of {set} are not carried again: {why}",
                arch.as_str()
            );
        };
        if manifest.tools.dar != dar_version {
            refused(format!(
                "made with dar {}, this set with dar {dar_version}",
                manifest.tools.dar
            ));
            continue;
        }
        let entries: Vec<FileEntry> = manifest
            .files
            .into_iter()
            .filter(|f| {
                f.path
                    .strip_prefix(&folder)
                    .is_some_and(|n| !n.contains('/'))
            })
            .collect();
        if let Some(program) = programs
            .iter()
            .find(|p| !entries.iter().any(|e| e.path == format!("{folder}{p}")))
        {
            refused(format!("they have no {program}"));
            continue;
        }
        let mut files = Vec::new();
        for entry in entries {
            let path = definition_dir.join(&set).join(&entry.path);
            let regular = std::fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_file());
            match regular.then(|| hash_file(&path)) {
                Some(Ok((size, sha256))) if size == entry.size && sha256 == entry.sha256 => {}
                _ => {
                    refused(format!("{} is not what its manifest says", entry.path));
                    files.clear();
                    break;
                }
            }
            let name = entry.path[DIR.len() + 1..].to_owned();
            files.push((name, path, entry));
        }
        if !files.is_empty() {
            kept.push(Kept { arch: *arch, files });
        }
    }
    kept
}

/// Keep one read-only, executable copy of each binary in the store.
fn store_once(store: &Path, source: &Path, sha256: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let stored = store.join(sha256);
    if stored.is_file() && hash_file(&stored)?.1 == sha256 {
        return Ok(stored);
    }
    std::fs::create_dir_all(store).map_err(Error::io("cannot create", store))?;
    let partial = store.join(format!(".{sha256}.partial"));
    std::fs::copy(source, &partial).map_err(Error::io("cannot copy", source))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))
        .map_err(Error::io("cannot set permissions on", &partial))?;
    std::fs::rename(&partial, &stored).map_err(Error::io("cannot store", &stored))?;
    Ok(stored)
}
