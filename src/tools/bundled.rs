//! The programs a chain's bundle carries, for each machine architecture it is made for: this
//! machine's own (the static dar, par2 and darvault a backup already uses) and the others',
//! from a folder of tools built for them (`<folder>/<architecture>/<program>`). Each program
//! is proven to be a static executable of its architecture before it is carried.

use std::path::{Path, PathBuf};

use crate::config::{AbsPath, Architecture};
use crate::error::{Error, Result};

/// The programs of a bundle, in the order RESTORE.txt names them; dar_static is required.
pub const PROGRAMS: [&str; 3] = ["dar_static", "par2", "darvault"];

/// The tools carried for one architecture.
#[derive(Debug, Clone)]
pub struct ArchTools {
    pub arch: Architecture,
    /// (program name, where it is), dar_static first.
    pub programs: Vec<(&'static str, PathBuf)>,
}

impl ArchTools {
    pub fn has(&self, program: &str) -> bool {
        self.programs.iter().any(|(p, _)| *p == program)
    }
}

/// What a backup carries in a chain's bundle, and the architectures it leaves out.
#[derive(Debug, Clone, Default)]
pub struct Carried {
    pub architectures: Vec<ArchTools>,
    /// Architectures asked for by default whose tools were not found (and why).
    pub missing: Vec<(Architecture, NotCarried)>,
}

/// Why a machine's tools are not carried.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum NotCarried {
    /// No dar_static for it in any of these folders (`<folder>/<architecture>`).
    NotFound { searched: Vec<PathBuf> },
    /// A program there is not a static executable of that machine.
    NotStaticFor { path: PathBuf },
}

impl NotCarried {
    /// In a person's words, for the architecture `arch`.
    pub fn describe(&self, arch: Architecture) -> String {
        match self {
            NotCarried::NotFound { searched } => {
                let places: Vec<String> = searched
                    .iter()
                    .map(|f| format!("{}/{arch}", f.display()))
                    .collect();
                format!(
                    "no dar_static for {arch} in {} (the Debian package installs them; scripts/bundle-tools makes them)",
                    places.join(" or ")
                )
            }
            NotCarried::NotStaticFor { path } => {
                format!("{} is not a static executable for {arch}", path.display())
            }
        }
    }
}

impl Carried {
    /// Every (path inside `bundle/`, source) pair: `x86_64/dar_static`, …
    pub fn files(&self) -> Vec<(String, &Path)> {
        self.architectures
            .iter()
            .flat_map(|a| {
                a.programs
                    .iter()
                    .map(move |(name, path)| (format!("{}/{name}", a.arch), path.as_path()))
            })
            .collect()
    }

    /// Whether every carried architecture has `program`.
    pub fn all_have(&self, program: &str) -> bool {
        !self.architectures.is_empty() && self.architectures.iter().all(|a| a.has(program))
    }
}

/// The tools for every architecture asked for: `host` (this machine's programs) for this
/// machine, the tools folder for the others. An architecture named in the config must be
/// found; one carried by default is left out when its tools are not there.
pub fn locate(
    asked: Option<&[Architecture]>,
    folder: Option<&AbsPath>,
    host: Vec<(&'static str, PathBuf)>,
) -> Result<Carried> {
    let this = Architecture::this_machine();
    let mut carried = Carried::default();
    let wanted = asked.unwrap_or(&Architecture::ALL);
    for &arch in wanted {
        if carried.architectures.iter().any(|a| a.arch == arch) {
            continue;
        }
        let found = if Some(arch) == this {
            Ok(ArchTools {
                arch,
                programs: host.clone(),
            })
        } else {
            foreign(arch, folder)
        };
        match found {
            Ok(tools) => carried.architectures.push(tools),
            Err(why) if asked.is_none() => carried.missing.push((arch, why)),
            Err(why) => {
                return Err(Error::Config(format!(
                    "[tools] bundle_architectures names {arch}, but {}",
                    why.describe(arch)
                )));
            }
        }
    }
    if carried.architectures.is_empty() {
        let why: Vec<String> = carried
            .missing
            .iter()
            .map(|(arch, why)| why.describe(*arch))
            .collect();
        return Err(Error::Config(format!(
            "[tools] bundle_architectures: no machine's tools can be carried (this machine is {}, and a chain must carry at least one machine's tools){}",
            std::env::consts::ARCH,
            match why.is_empty() {
                true => String::new(),
                false => format!(": {}", why.join("; ")),
            }
        )));
    }
    Ok(carried)
}

/// The folders searched for other machines' tools, in order: the configured one alone, or
/// `lib/darvault/bundle` beside the program's folder, `bundle` in it, then the XDG data folder.
fn folders(configured: Option<&AbsPath>) -> Vec<PathBuf> {
    if let Some(folder) = configured {
        return vec![folder.path().to_owned()];
    }
    // Installed (the Debian package: /usr/bin and /usr/lib), or unpacked from the tarball
    // (the program and bundle/ side by side).
    let program_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.to_owned()));
    let beside_program = program_dir.iter().flat_map(|dir| {
        let installed = dir.parent().map(|p| p.join("lib/darvault/bundle"));
        installed.into_iter().chain([dir.join("bundle")])
    });
    beside_program
        .chain([crate::paths::data_home().join("darvault/bundle")])
        .collect()
}

/// One other architecture's tools: the first folder that holds its dar_static.
fn foreign(
    arch: Architecture,
    configured: Option<&AbsPath>,
) -> std::result::Result<ArchTools, NotCarried> {
    let searched = folders(configured);
    let Some(dir) = searched
        .iter()
        .map(|f| f.join(arch.as_str()))
        .find(|d| d.join("dar_static").exists())
    else {
        return Err(NotCarried::NotFound { searched });
    };
    let mut programs = Vec::new();
    for program in PROGRAMS {
        let path = dir.join(program);
        if !path.exists() {
            continue;
        }
        match crate::tools::static_executable_arch(&path) {
            Some(a) if a == arch => programs.push((program, path)),
            _ => return Err(NotCarried::NotStaticFor { path }),
        }
    }
    Ok(ArchTools { arch, programs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Vec<(&'static str, PathBuf)> {
        vec![("dar_static", PathBuf::from("/bin/busybox"))]
    }

    fn folder(dir: &Path) -> AbsPath {
        AbsPath::try_from(dir.display().to_string()).unwrap()
    }

    #[test]
    fn a_default_architecture_without_tools_is_left_out_and_a_named_one_is_an_error() {
        let empty = tempfile::tempdir().unwrap();
        let carried = locate(None, Some(&folder(empty.path())), host()).unwrap();
        let this = Architecture::this_machine().unwrap();
        assert_eq!(carried.architectures.len(), 1);
        assert_eq!(carried.architectures[0].arch, this);
        assert_eq!(carried.missing.len(), 1);
        let other = Architecture::ALL.into_iter().find(|a| *a != this).unwrap();
        let err = locate(Some(&[this, other]), Some(&folder(empty.path())), host())
            .unwrap_err()
            .to_string();
        assert!(err.contains("bundle_architectures names"), "{err}");
        let none = locate(Some(&[]), Some(&folder(empty.path())), host()).unwrap_err();
        assert!(none.to_string().contains("at least one"), "{none}");
        let only_this = locate(Some(&[this]), Some(&folder(empty.path())), host()).unwrap();
        assert!(only_this.missing.is_empty());
        assert_eq!(only_this.files()[0].0, format!("{this}/dar_static"));
    }

    #[test]
    fn another_architectures_tools_must_be_static_executables_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let this = Architecture::this_machine().unwrap();
        let other = Architecture::ALL.into_iter().find(|a| *a != this).unwrap();
        let arch_dir = dir.path().join(other.as_str());
        std::fs::create_dir_all(&arch_dir).unwrap();
        // This machine's busybox is static, but not for the other architecture.
        std::fs::copy("/bin/busybox", arch_dir.join("dar_static")).unwrap();
        let err = locate(Some(&[other]), Some(&folder(dir.path())), host())
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a static executable for"), "{err}");
    }
}
