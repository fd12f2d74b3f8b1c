//! Supervised external programs: one process runner, and the tools built on top of it.

pub mod bundled;
pub mod dar;
pub mod dar_pipes;
pub mod gpg_stand_in;
pub mod par2;
pub mod process;
pub mod secret;
pub mod shell;
pub mod ssh;
pub mod terminal;

use crate::config::Tools as Configured;
use crate::error::Result;

/// The external programs a backup needs, found and identified once per run.
pub struct Tools {
    pub dar: dar::Dar,
    pub par2: par2::Par2,
    /// What each chain's bundle carries, per architecture: for this machine the static dar,
    /// par2 when it is the static par2cmdline-turbo, and a static darvault when there is one
    /// (this program, if it is statically linked, or `[tools] darvault_static`).
    pub bundle: bundled::Carried,
}

impl Tools {
    pub fn locate(configured: &Configured) -> Result<Tools> {
        let path = |p: &Option<crate::config::AbsPath>| p.as_ref().map(|p| p.path().to_owned());
        let dar = dar::Dar::locate(path(&configured.dar).as_deref())?;
        let par2 = par2::Par2::locate(path(&configured.par2).as_deref())?;
        let dar_static = process::find_executable(
            "dar_static",
            path(&configured.dar_static).as_deref(),
            "install dar-static (Debian/Ubuntu: apt-get install dar-static): every set carries it",
        )?;
        let darvault_static = match path(&configured.darvault_static) {
            Some(p) if is_static_executable(&p) => Some(p),
            Some(p) => {
                return Err(crate::Error::Config(format!(
                    "[tools] darvault_static = {}: not a statically linked executable (build one with scripts/build-static)",
                    p.display()
                )));
            }
            None => std::env::current_exe()
                .ok()
                .filter(|exe| is_static_executable(exe)),
        };
        // This machine's programs for its own architecture: the static dar, par2 when it is
        // the static par2cmdline-turbo, and the static darvault.
        let mut host = vec![("dar_static", dar_static)];
        if par2.engine == par2::Engine::Turbo {
            host.push(("par2", par2.path.clone()));
        }
        if let Some(darvault) = darvault_static {
            host.push(("darvault", darvault));
        }
        let bundle = bundled::locate(
            configured.bundle_architectures.as_deref(),
            configured.bundle_tools.as_ref(),
            host,
        )?;
        Ok(Tools { dar, par2, bundle })
    }
}

/// A 64-bit ELF executable without a program interpreter: it runs on any Linux of its
/// architecture, with no shared library from the machine.
pub fn is_static_executable(path: &std::path::Path) -> bool {
    static_elf_machine(path).is_some()
}

/// The architecture of a static executable (see `is_static_executable`), when it is one a
/// bundle carries tools for.
pub fn static_executable_arch(path: &std::path::Path) -> Option<crate::config::Architecture> {
    static_elf_machine(path).and_then(crate::config::Architecture::of_elf_machine)
}

/// The ELF `e_machine` of a 64-bit little-endian static executable.
fn static_elf_machine(path: &std::path::Path) -> Option<u16> {
    use std::io::Read;
    const PT_INTERP: u32 = 3;
    // The program headers sit right after the ELF header.
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(64 * 1024).read_to_end(&mut bytes));
    if read.is_err() {
        return None;
    }
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        bytes
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    };
    // ELF magic, 64-bit, little-endian, an executable or position-independent executable.
    if bytes.get(..6) != Some(b"\x7fELF\x02\x01") || !matches!(u16_at(16), Some(2 | 3)) {
        return None;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(32), u16_at(54), u16_at(56)) else {
        return None;
    };
    let no_interpreter = (0..phnum as usize).all(|i| {
        let at = phoff as usize + i * phentsize as usize;
        u32_at(at).is_some_and(|kind| kind != PT_INTERP)
    });
    no_interpreter.then_some(u16_at(18)?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tells_static_executables_from_dynamic_ones() {
        let exe = std::env::current_exe().unwrap();
        assert!(
            !super::is_static_executable(&exe),
            "the test binary is dynamic"
        );
        assert!(!super::is_static_executable(std::path::Path::new(
            "/etc/hostname"
        )));
        let busybox = std::path::Path::new("/bin/busybox");
        assert!(super::is_static_executable(busybox), "busybox-static");
    }
}
