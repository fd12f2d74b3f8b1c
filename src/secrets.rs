//! Every secret darvault reads (passphrases, storage keys and passwords, webhook URLs) is
//! registered here the moment it is read, and masked in every log line and every message
//! darvault prints. The environment variables that hold secrets are registered too, so that
//! no child process inherits them (see `tools::process`).

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::Write;
use std::sync::RwLock;

const MASK: &str = "<redacted>";
/// Shorter values ("yes", a port) would mask ordinary words; no real secret is this short.
const SHORTEST: usize = 4;

static VALUES: RwLock<Vec<String>> = RwLock::new(Vec::new());
static VARIABLES: RwLock<Vec<OsString>> = RwLock::new(Vec::new());

/// A value to mask from now on.
pub fn register(value: &str) {
    let value = value.trim();
    if value.len() < SHORTEST {
        return;
    }
    let mut values = VALUES.write().unwrap_or_else(|e| e.into_inner());
    if !values.iter().any(|v| v == value) {
        values.push(value.to_owned());
        // Longest first, so a secret containing another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// An environment variable that holds a secret: children never inherit it.
pub fn register_variable(name: &str) {
    let mut vars = VARIABLES.write().unwrap_or_else(|e| e.into_inner());
    if !vars.iter().any(|v| v == name) {
        vars.push(name.into());
    }
}

pub fn variables() -> Vec<OsString> {
    VARIABLES.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether an option of a storage service holds a secret by its name (secret_access_key,
/// password, session_token, account_key, sas_token, client_secret, credential…).
pub fn is_secret_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "secret",
        "password",
        "token",
        "credential",
        "account_key",
        "sas",
        "passphrase",
    ]
    .iter()
    .any(|word| key.contains(word))
}

/// `text` with every registered secret replaced by `<redacted>`.
pub fn mask(text: &str) -> Cow<'_, str> {
    let values = VALUES.read().unwrap_or_else(|e| e.into_inner());
    if !values.iter().any(|v| text.contains(v.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_owned();
    for v in values.iter() {
        out = out.replace(v.as_str(), MASK);
    }
    Cow::Owned(out)
}

/// A writer that masks secrets in what passes through it. The log formatter writes each
/// event in one call, so a secret is never split between two writes.
pub struct Masking<W>(pub W);

impl<W: Write> Write for Masking<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        match mask(&text) {
            Cow::Borrowed(_) => self.0.write_all(buf)?,
            Cow::Owned(masked) => self.0.write_all(masked.as_bytes())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// `Masking` for every writer a log layer makes.
pub struct MaskingWriter<M>(pub M);

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for MaskingWriter<M>
{
    type Writer = Masking<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Masking(self.0.make_writer())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_values_are_masked_wherever_they_appear() {
        register("s3cr3t-key-value");
        register("ab"); // too short to be a secret: never masks ordinary text
        assert_eq!(
            mask("secret_access_key: \"s3cr3t-key-value\", ab"),
            "secret_access_key: \"<redacted>\", ab"
        );
        let mut out = Vec::new();
        Masking(&mut out)
            .write_all(b"x=s3cr3t-key-value\n")
            .unwrap();
        assert_eq!(out, b"x=<redacted>\n");
        assert!(is_secret_option("secret_access_key"));
        assert!(is_secret_option("password"));
        assert!(!is_secret_option("endpoint"));
    }
}
