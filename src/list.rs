//! `darvault list`: the sets and chains a copy holds.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::copy::LocalCopy;
use crate::error::Result;

#[derive(Debug, Serialize)]
pub struct Listing {
    pub copy: PathBuf,
    pub definitions: Vec<DefinitionListing>,
}

#[derive(Debug, Serialize)]
pub struct DefinitionListing {
    pub definition: String,
    pub sets: Vec<SetLine>,
    /// Unfinished or unreadable sets, and why.
    pub problems: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct SetLine {
    pub name: String,
    pub level: String,
    pub base: Option<String>,
    pub created: String,
    pub size: u64,
    pub slices: u32,
    pub files: usize,
}

/// List the sets under `root` for the named definitions (all found when `names` is empty).
pub fn list(root: &Path, names: &[String]) -> Result<Listing> {
    let copy = LocalCopy::new(root);
    let definitions = if names.is_empty() {
        copy.definitions()?
    } else {
        names.to_vec()
    };
    let mut listing = Listing {
        copy: root.to_owned(),
        definitions: Vec::new(),
    };
    for definition in definitions {
        let found = copy.sets(&definition)?;
        if found.sets.is_empty() && found.problems.is_empty() && names.is_empty() {
            continue;
        }
        listing.definitions.push(DefinitionListing {
            definition,
            sets: found
                .sets
                .iter()
                .map(|s| SetLine {
                    name: s.manifest.set.name.clone(),
                    level: s.manifest.set.level.to_string(),
                    base: s.manifest.set.base.as_ref().map(|b| b.name.clone()),
                    created: s.manifest.set.created.to_string(),
                    size: s.manifest.total_size(),
                    slices: s.manifest.archive.slices,
                    files: s.manifest.files.len(),
                })
                .collect(),
            problems: found.problems,
        });
    }
    Ok(listing)
}
