//! dar without gpg and without a terminal. A static dar, on a machine that has no gpg, asks
//! as it starts whether to go on without gpg support, and with no terminal to ask on it gives
//! up (exit 4) — a rescue shell, a script, a serial console. Measured with dar 2.7.8: gpgme
//! looks for `gpgconf`, then `gpg`, on PATH and runs `gpg --version`; a program answering a
//! GnuPG version makes the check pass and dar goes on, AES-encrypted archives included.
//! darvault never uses gpg, so the children that may meet the question get the stand-in
//! (static-bundle/gpg-stand-in, which every FULL set's bundle carries too) last on their PATH:
//! a real gpg, when there is one, is found first.

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The stand-in's text, as it is bundled.
pub const TEXT: &str = include_str!("../../static-bundle/gpg-stand-in");
/// Its name in a set's bundle.
pub const BUNDLED_NAME: &str = "gpg-stand-in";

/// Whether this machine has a gpg a child would find.
pub fn gpg_available() -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/bin", "/usr/local/bin"].map(Into::into))
        .any(|dir| dir.join("gpg").is_file())
}

/// `path` (a child's PATH) with the stand-in's folder last; `None` when it cannot be made
/// (the child then runs as it would have: the terminal may still answer).
pub fn path_with_stand_in(path: Option<OsString>) -> Option<OsString> {
    let dir = folder()?;
    let mut dirs: Vec<PathBuf> = path
        .as_ref()
        .map(|p| std::env::split_paths(p).collect())
        .unwrap_or_default();
    dirs.push(dir.to_owned());
    std::env::join_paths(dirs).ok()
}

/// A private folder holding only `gpg` (the stand-in), made once per process: under the
/// temporary folder, named for this user, mode 0700, and used only when it is a real
/// folder of this user's that nobody else may write into.
fn folder() -> Option<&'static Path> {
    static FOLDER: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOLDER
        .get_or_init(|| match make_folder() {
            Ok(dir) => Some(dir),
            Err(e) => {
                tracing::debug!("no gpg stand-in: {e}");
                None
            }
        })
        .as_deref()
}

fn make_folder() -> std::io::Result<PathBuf> {
    // The user's runtime folder (private by definition) when there is one; else the
    // temporary folder, under a name of this user's — and if someone else holds that name,
    // a fresh folder of this run's own.
    let uid = unsafe { libc::getuid() };
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let stable = base.join(format!("darvault-{uid}-gpg-stand-in"));
    match fill(&stable, uid) {
        Ok(()) => Ok(stable),
        Err(e) => {
            tracing::debug!(
                "{}: {e}; a folder of this run's own instead",
                stable.display()
            );
            let own = tempfile::Builder::new()
                .prefix("darvault-gpg-stand-in.")
                .tempdir()?
                .keep();
            fill(&own, uid)?;
            Ok(own)
        }
    }
}

/// Make `dir` (0700, this user's, not a link) hold only the stand-in as `gpg`.
fn fill(dir: &Path, uid: u32) -> std::io::Result<()> {
    let dir = dir.to_owned();
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = std::fs::symlink_metadata(&dir)?;
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "{} is not a private folder of this user",
            dir.display()
        )));
    }
    let gpg = dir.join("gpg");
    if std::fs::read(&gpg).ok().as_deref() != Some(TEXT.as_bytes()) {
        let partial = dir.join(format!(".gpg.{}", std::process::id()));
        std::fs::write(&partial, TEXT)?;
        std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o700))?;
        std::fs::rename(&partial, &gpg)?;
    }
    Ok(())
}
