//! What a restore may run: dar found on this machine or in the copy's bundle, a bundled
//! binary only when it is trusted; and the passphrase of an encrypted chain.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::copy::{FoundSet, Store};
use crate::error::{Error, Result};
use crate::tools::dar::Dar;
use crate::tools::secret::Passphrase;

use super::Fetch;

/// Whether the copy's bundled binary `name` of `set` (proven against its manifest) may run:
/// this darvault bundled it (the state database remembers), it is this machine's own, this
/// darvault is itself the copy's bundled one (whoever runs it trusts the copy already), or
/// the user said so. Ok(why) or the refusal, saying how to decide.
pub(super) fn trusted_bundled(
    state: &crate::state::State,
    copy: &Store,
    set: &FoundSet,
    name: &str,
    system: Option<&Path>,
    trust_bundle: bool,
) -> Result<String> {
    let Some((path, sha)) = set
        .manifest
        .bundled_program(name)
        .map(|f| (f.path.clone(), f.sha256.clone()))
    else {
        return Err(Error::Failed(format!(
            "no set of the chain of {} carries a {name} for this machine ({}) in its bundle (a chain's FULL carries its tools): there is no bundled binary to run",
            set.manifest.set.name,
            std::env::consts::ARCH
        )));
    };
    if state.was_bundled(&sha)? {
        return Ok(format!(
            "{path} of {}: bundled by this darvault",
            set.manifest.set.name
        ));
    }
    if let Some(system) = system
        && crate::hashing::hash_file(system).is_ok_and(|(_, s)| s == sha)
    {
        return Ok(format!(
            "{path} of {}: identical to {}",
            set.manifest.set.name,
            system.display()
        ));
    }
    if trust_bundle {
        return Ok(format!(
            "{path} of {}: trusted on request (--trust-bundle)",
            set.manifest.set.name
        ));
    }
    // /proc may be missing (a rescue chroot): then the path it was started by.
    let running = std::env::current_exe()
        .ok()
        .filter(|p| p.is_file())
        .or_else(|| std::env::args_os().next().map(PathBuf::from))
        .and_then(|p| p.canonicalize().ok());
    let own_darvault = set.manifest.bundled_program("darvault");
    if let (Some(running), Some(own)) = (running, own_darvault)
        && copy.holds(&running)
        && running.ends_with(&own.path)
        && crate::hashing::hash_file(&running).is_ok_and(|(_, sha)| sha == own.sha256)
    {
        return Ok(format!(
            "{path} of {}: this darvault is the copy's own bundled one",
            set.manifest.set.name
        ));
    }
    Err(Error::Failed(format!(
        "{path} of {} (SHA-256 {sha}) is not a binary this darvault bundled, nor this machine's own: it was not run (a copy is untrusted input). Compare it with a dar_static you trust (sha256sum; Debian's package dar-static), then add --trust-bundle",
        set.manifest.set.name
    )))
}

/// Copy `fetched` (the set's `path`) into `scratch` and prove the copy against the manifest:
/// the bytes that will run are the bytes that were checked.
pub(super) fn private_copy(
    scratch: &Path,
    set: &FoundSet,
    path: &str,
    fetched: &Path,
) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let dir = scratch.join("trusted");
    std::fs::create_dir_all(&dir).map_err(Error::io("cannot create", &dir))?;
    let copy = dir.join(path.rsplit('/').next().unwrap_or(path));
    let _ = std::fs::remove_file(&copy);
    std::fs::copy(fetched, &copy).map_err(Error::io("cannot copy", fetched))?;
    let expected = set.manifest.files.iter().find(|f| f.path == path);
    let (size, sha) = crate::hashing::hash_file(&copy)?;
    if expected.is_none_or(|f| f.size != size || f.sha256 != sha) {
        return Err(Error::Failed(format!(
            "{path} of {} changed while it was read: not run",
            set.manifest.set.name
        )));
    }
    // A bundle made before tools were carried per architecture holds the tools of the machine
    // that made it, which may not be this one.
    let this = crate::config::Architecture::this_machine();
    if let Some(arch) = crate::tools::static_executable_arch(&copy)
        && Some(arch) != this
    {
        return Err(Error::Failed(format!(
            "{path} of {} is built for {arch}, and this machine is {}: install dar (Debian/Ubuntu: apt-get install dar) and run again",
            set.manifest.set.name,
            std::env::consts::ARCH
        )));
    }
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o700))
        .map_err(Error::io("cannot make executable", &copy))?;
    Ok(copy)
}

/// Where `holder`'s bundle keeps `program` for this machine.
pub(super) fn bundled_path(holder: &FoundSet, program: &str) -> Result<String> {
    holder
        .manifest
        .bundled_program(program)
        .map(|f| f.path.clone())
        .ok_or_else(|| {
            Error::Failed(format!(
                "the bundle of {} holds no {program} for this machine ({})",
                holder.manifest.set.name,
                std::env::consts::ARCH
            ))
        })
}

/// The set of a chain whose bundle holds the tools: the newest that lists a dar_static for
/// this machine (the FULL; before tools were carried once per chain, every set had them).
pub(super) fn tools_holder(chain: &[FoundSet]) -> &FoundSet {
    // The newest with tools for this machine: a later set may carry another machine's only
    // (made where this machine's tools were not found).
    chain
        .iter()
        .rev()
        .find(|s| s.manifest.bundled_program("dar_static").is_some())
        .or_else(|| chain.iter().rev().find(|s| s.manifest.carries_tools()))
        .or(chain.last())
        .expect("a chain has a set")
}

/// dar from the config, else from PATH, else the copy's own bundled dar_static (when
/// trusted); stopped when the copy it reads in place stops answering.
pub(super) fn locate_dar(
    config: Option<&Config>,
    state: Option<&crate::state::State>,
    fetch: &mut Fetch,
    chain: &[FoundSet],
    trust_bundle: bool,
) -> Result<Dar> {
    let found = match config.and_then(|c| c.tools.dar.as_ref()) {
        Some(p) => Dar::at(p.path().to_owned()),
        None => Dar::locate(None).or_else(|missing| {
            let holder = tools_holder(chain);
            // The state database is opened only now: a restore with the system's dar leaves no
            // trace on a machine that has never run darvault.
            let opened;
            let state = match state {
                Some(s) => s,
                None => {
                    let dir =
                        config.map_or_else(crate::paths::default_state_dir, Config::state_dir);
                    opened = crate::state::State::open(&dir)?;
                    &opened
                }
            };
            trusted_bundled(state, fetch.copy, holder, "dar_static", None, trust_bundle)?;
            let path = bundled_path(holder, "dar_static")?;
            let fetched = fetch.file(holder, &path).map_err(|_| missing)?;
            // What runs is a private copy, proven after it was made: the copy's file could
            // change between the check and the run.
            let bundled = private_copy(fetch.scratch, holder, &path, &fetched)?;
            tracing::info!(
                "using the bundled dar_static of {}",
                holder.manifest.set.name
            );
            Dar::at(bundled)
        }),
    };
    let mut dar = found?;
    dar.io_stall = fetch.copy.tool_stall();
    Ok(dar)
}

pub(super) fn passphrase(
    config: Option<&Config>,
    chain: &[FoundSet],
    definition: &str,
) -> Result<Option<Passphrase>> {
    if !chain.iter().any(|s| s.manifest.archive.encrypted) {
        return Ok(None);
    }
    let encryption = config
        .and_then(|c| c.definitions.iter().find(|d| d.name().as_str() == definition))
        .and_then(|d| d.encryption.as_ref())
        .ok_or_else(|| {
            Error::Usage(format!(
                "the sets of {definition} are encrypted: configure its [definition.encryption] passphrase source"
            ))
        })?;
    Passphrase::resolve(encryption, definition).map(Some)
}
