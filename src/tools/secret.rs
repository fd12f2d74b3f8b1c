//! Archive passphrases: read from the environment, a file or a command; never stored, logged,
//! nor put on a command line that `ps` shows. dar receives them through an options file that
//! lives only in memory (a memfd passed as `-B /dev/fd/N`).

use std::fmt;
use std::io::{Seek, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use crate::config::Encryption;
use crate::error::{Error, Result};

pub struct Passphrase {
    text: String,
    /// Whose passphrase it is, for messages ("wrong passphrase for definition …").
    definition: String,
}

impl fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Passphrase(<redacted>)")
    }
}

impl Drop for Passphrase {
    fn drop(&mut self) {
        // Overwrite the bytes so the secret does not linger in freed memory.
        // SAFETY: zero bytes are valid UTF-8.
        unsafe { self.text.as_bytes_mut() }.fill(0);
    }
}

impl Passphrase {
    /// Read the passphrase a definition's `[definition.encryption]` points at.
    pub fn resolve(e: &Encryption, definition: &str) -> Result<Passphrase> {
        let text = if let Some(var) = &e.passphrase_env {
            crate::secrets::register_variable(var);
            std::env::var(var).map_err(|_| {
                Error::Usage(format!(
                    "{definition}: the passphrase variable ${var} is not set (encryption.passphrase_env)"
                ))
            })?
        } else if let Some(file) = &e.passphrase_file {
            let text = std::fs::read_to_string(file.path()).map_err(|err| {
                Error::Usage(format!(
                    "{definition}: cannot read the passphrase file {}: {err}",
                    file.path().display()
                ))
            })?;
            text.lines().next().unwrap_or_default().to_owned()
        } else if let Some(cmd) = &e.passphrase_command {
            let out = std::process::Command::new("/bin/sh")
                .args(["-c", cmd])
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit())
                .output()
                .map_err(|err| {
                    Error::Usage(format!(
                        "{definition}: cannot run passphrase_command: {err}"
                    ))
                })?;
            if !out.status.success() {
                return Err(Error::Usage(format!(
                    "{definition}: passphrase_command failed ({})",
                    out.status
                )));
            }
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned()
        } else {
            return Err(Error::Usage(format!(
                "{definition}: no passphrase source configured"
            )));
        };
        crate::secrets::register(&text);
        let mut key =
            Passphrase::new(text).map_err(|why| Error::Usage(format!("{definition}: {why}")))?;
        key.definition = definition.to_owned();
        Ok(key)
    }

    pub fn new(text: String) -> std::result::Result<Passphrase, String> {
        if text.is_empty() {
            return Err("the passphrase is empty".into());
        }
        // dar's option files and its command line read these differently; refusing them keeps
        // the passphrase the same wherever it is typed (including on a rescue machine).
        if text.contains(['\'', '"', '\\', '\n', '\r', '\0']) {
            return Err("the passphrase may not contain quotes, backslashes or line breaks".into());
        }
        Ok(Passphrase {
            text,
            definition: String::new(),
        })
    }

    /// `dar` key option value: `aes:<passphrase>` in quotes for an options file.
    pub fn dar_key(&self) -> String {
        format!("'aes:{}'", self.text)
    }

    /// The definition whose passphrase this is.
    pub fn definition(&self) -> &str {
        &self.definition
    }
}

/// An in-memory file (never on disk) holding `text`, readable and seekable.
pub fn memory_file(text: &str) -> Result<OwnedFd> {
    // SAFETY: memfd_create with a valid C string; the returned fd is owned below.
    let fd = unsafe { libc::memfd_create(c"darvault-options".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::Failed(format!(
            "cannot create an in-memory file: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut file = std::fs::File::from(owned);
    file.write_all(text.as_bytes())
        .and_then(|_| file.rewind())
        .map_err(|e| Error::Failed(format!("cannot write an in-memory file: {e}")))?;
    Ok(OwnedFd::from(file))
}
