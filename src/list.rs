//! `darvault list`: the sets and chains a copy holds.

use serde::Serialize;

use crate::copy::Store;
use crate::error::Result;

#[derive(Debug, Serialize)]
pub struct Listing {
    pub copy: String,
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
    /// The definition as it was used for this set (sets made before darvault recorded it:
    /// absent), so a restore years later knows what the set was meant to hold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub definition: Option<crate::set::DefinitionRecord>,
}

/// List the sets of a copy for the named definitions (all found when `names` is empty).
pub fn list(copy: &Store, names: &[String]) -> Result<Listing> {
    crate::copy::runtime()?.block_on_stoppable(list_async(copy, names))
}

async fn list_async(copy: &Store, names: &[String]) -> Result<Listing> {
    let definitions = if names.is_empty() {
        copy.definitions().await?
    } else {
        names.to_vec()
    };
    let mut listing = Listing {
        copy: copy.label(),
        definitions: Vec::new(),
    };
    for definition in definitions {
        let found = copy.sets(&definition).await?;
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
                    definition: s.manifest.definition.clone(),
                })
                .collect(),
            problems: found.problems,
        });
    }
    Ok(listing)
}
