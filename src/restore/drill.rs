//! `darvault drill`: rehearse the day a copy is all there is. For each definition, a sample
//! of files as of the newest set is restored from the copy with the set's own bundled
//! `dar_static`, run with an empty environment in an empty scratch folder, and each file is
//! checked: size as the catalogue recorded it, and bytes against the source when the source
//! still holds the same version.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use super::{
    Catalogues, Fetch, extract_chain, index, passphrase, private_copy, sets_of, trusted_bundled,
};
use crate::config::Config;
use crate::copy::FoundSet;
use crate::error::{Error, Result};
use crate::tools::dar::Dar;

pub struct Request {
    pub from: Option<String>,
    /// Empty: every definition on the copy.
    pub definitions: Vec<String>,
    /// Files restored per definition.
    pub sample: usize,
    /// Run the bundled dar_static even when this darvault did not bundle it.
    pub trust_bundle: bool,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub copy: String,
    pub drills: Vec<Drill>,
}

#[derive(Debug, Serialize)]
pub struct Drill {
    pub definition: String,
    /// The newest set (restored as of it, with its chain's bundled dar_static).
    pub set: String,
    pub dar_version: String,
    /// Which binary ran, and why it was trusted.
    pub dar: String,
    pub files: Vec<Checked>,
    /// None when every file came back right.
    pub failure: Option<String>,
    pub seconds: f64,
}

#[derive(Debug, Serialize)]
pub struct Checked {
    pub path: String,
    pub size: u64,
    /// "identical to the source", "size as recorded (the source has changed since)", or what
    /// went wrong.
    pub result: String,
    pub ok: bool,
}

impl Report {
    pub fn failed(&self) -> bool {
        self.drills.iter().any(|d| d.failure.is_some())
    }

    pub fn exit_code(&self) -> u8 {
        match self.failed() {
            true => crate::error::exit::FAILED,
            false => crate::error::exit::OK,
        }
    }
}

pub fn run(config: Option<&Config>, req: &Request) -> Result<Report> {
    let mut c = Catalogues::open(config, req.from.as_deref())?;
    c.trust_bundle = req.trust_bundle;
    let definitions = if req.definitions.is_empty() {
        c.rt.block_on_stoppable(c.copy.definitions())?
    } else {
        req.definitions.clone()
    };
    if definitions.is_empty() {
        return Err(Error::Failed(format!("{} holds no sets", c.copy.label())));
    }
    let mut drills = Vec::new();
    for definition in definitions {
        let began = Instant::now();
        let sets = sets_of(&c.rt, &c.copy, &definition)?;
        let Some(newest) = sets.last() else {
            continue;
        };
        let mut drill = Drill {
            definition: definition.clone(),
            set: newest.manifest.set.name.clone(),
            dar_version: String::new(),
            dar: String::new(),
            files: Vec::new(),
            failure: None,
            seconds: 0.0,
        };
        if let Err(e) = rehearse(&c, config, &sets, req.sample, &mut drill) {
            drill.failure = Some(e.to_string());
        }
        if drill.failure.is_none() && drill.files.iter().any(|f| !f.ok) {
            drill.failure = Some("some files did not come back right".into());
        }
        drill.seconds = began.elapsed().as_secs_f64();
        drills.push(drill);
    }
    Ok(Report {
        copy: c.copy.label(),
        drills,
    })
}

fn rehearse(
    c: &Catalogues,
    config: Option<&Config>,
    sets: &[FoundSet],
    sample: usize,
    drill: &mut Drill,
) -> Result<()> {
    let definition = drill.definition.as_str();
    let chain = super::chain_as_of(sets, jiff::Timestamp::now(), definition, &c.copy.name)?;
    c.index(definition, &chain)?;
    let mut files = index::present(&c.state, &chain, |p| p.kind == crate::state::PathKind::File)?;
    fastrand::shuffle(&mut files);
    files.truncate(sample.max(1));
    files.sort_by(|a, b| a.path.cmp(&b.path));

    let scratch = tempfile::Builder::new()
        .prefix("darvault-drill.")
        .tempdir()
        .map_err(|e| Error::Failed(format!("cannot make a scratch folder: {e}")))?;
    let copy_scratch = scratch.path().join("copy");
    let mut fetch = Fetch::new(&c.rt, &c.copy, &copy_scratch);
    let holder = super::trust::tools_holder(&chain);
    let system = crate::tools::process::find_executable("dar_static", None, "").ok();
    // Whether it may run is decided on the bytes proven to be the bundled binary: a file
    // that is damaged, missing or a link is said as such, and nothing is said to have run.
    let trusted = trusted_bundled(
        &c.state,
        &c.copy,
        holder,
        "dar_static",
        system.as_deref(),
        c.trust_bundle,
    );
    let dar = match trusted {
        Ok(why) => {
            let dar = bundled_dar(&mut fetch, holder, scratch.path())?;
            drill.dar = why;
            dar
        }
        Err(e) => return Err(e),
    };
    drill.dar_version = dar.version.clone();
    let key = passphrase(config, &chain, definition)?;
    let target = scratch.path().join("restored");
    let paths: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    extract_chain(&mut fetch, &dar, key.as_ref(), &chain, &paths, &target)?;

    let source = config
        .and_then(|c| {
            c.definitions
                .iter()
                .find(|d| d.name().as_str() == definition)
        })
        .map(|d| d.source.path().to_owned());
    for f in files {
        let result = check(&target.join(&f.path), &f, source.as_deref())?;
        drill.files.push(Checked {
            ok: result.is_ok(),
            result: result.unwrap_or_else(|e| e),
            path: f.path,
            size: f.size,
        });
    }
    Ok(())
}

/// The chain's bundled dar_static (in `holder`, its FULL), copied into the empty scratch folder
/// and run there with an empty environment.
fn bundled_dar(fetch: &mut Fetch, holder: &FoundSet, scratch: &Path) -> Result<Dar> {
    let path = super::trust::bundled_path(holder, "dar_static")?;
    let fetched = fetch.file(holder, &path)?;
    let dar_static = private_copy(scratch, holder, &path, &fetched)?;
    let mut dar = Dar::at(dar_static)?;
    dar.isolated_in = Some(scratch.to_owned());
    dar.io_stall = fetch.copy.tool_stall();
    Ok(dar)
}

/// Ok(how it was proven) or Err(what is wrong).
fn check(
    restored: &Path,
    recorded: &index::Present,
    source: Option<&Path>,
) -> Result<std::result::Result<String, String>> {
    let Ok(meta) = std::fs::symlink_metadata(restored) else {
        return Ok(Err("not restored".into()));
    };
    if meta.len() != recorded.size {
        return Ok(Err(format!(
            "restored with {} bytes, the catalogue says {}",
            meta.len(),
            recorded.size
        )));
    }
    let original = source.map(|s| s.join(&recorded.path));
    let unchanged = original.as_ref().and_then(|o| {
        let m = std::fs::symlink_metadata(o).ok()?;
        use std::os::unix::fs::MetadataExt;
        (m.len() == recorded.size && m.mtime() == recorded.mtime).then_some(o)
    });
    let Some(original) = unchanged else {
        return Ok(Ok(
            "size as recorded (dar checked its CRC; the source has changed since)".into(),
        ));
    };
    let (_, a) = crate::hashing::hash_file(restored)?;
    let (_, b) = crate::hashing::hash_file(original)?;
    Ok(if a == b {
        Ok("identical to the source".into())
    } else {
        Err("differs from the source, which has the same size and time".into())
    })
}
