//! Supervised external programs: one process runner, and the tools built on top of it.

pub mod dar;
pub mod par2;
pub mod process;
pub mod secret;

use std::path::PathBuf;

use crate::config::Tools as Configured;
use crate::error::Result;

/// The external programs a backup needs, found and identified once per run.
pub struct Tools {
    pub dar: dar::Dar,
    pub par2: par2::Par2,
    /// The static dar copied into every set's bundle.
    pub dar_static: PathBuf,
}

impl Tools {
    pub fn locate(configured: &Configured) -> Result<Tools> {
        let path = |p: &Option<crate::config::AbsPath>| p.as_ref().map(|p| p.path().to_owned());
        Ok(Tools {
            dar: dar::Dar::locate(path(&configured.dar).as_deref())?,
            par2: par2::Par2::locate(path(&configured.par2).as_deref())?,
            dar_static: process::find_executable(
                "dar_static",
                path(&configured.dar_static).as_deref(),
                "install dar-static (Debian/Ubuntu: apt-get install dar-static): every set carries it",
            )?,
        })
    }
}
