//! What a storage failure means: its cause in words, and whether trying again can help.
//!
//! Permanent: the disk is full or read-only, a quota is reached, access is denied,
//! credentials are refused, the bucket or folder does not exist, the server refuses the
//! connection or its name does not resolve, any other 4xx. These fail the destination at
//! once, with the cause named. Temporary: timeouts, resets, 5xx, throttling; those are tried
//! again within the destination's retry budget (`copy::Store::retrying`).

use std::error::Error as _;

use crate::error::Error;

/// Whether trying the same request again may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    Helps,
    Useless,
}

/// What one request to a copy's storage met, as a class and a person's words: made once,
/// where the storage library's error (or the server's answer) is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub kind: FailureKind,
    pub retry: Retry,
    pub cause: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// What was asked for is not there.
    NotFound,
    /// A file was to be created only if absent, and one is there.
    AlreadyThere,
    Other,
}

impl Failure {
    pub fn other(retry: Retry, cause: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::Other,
            retry,
            cause: cause.into(),
        }
    }

    pub fn not_found(cause: impl Into<String>) -> Failure {
        Failure {
            kind: FailureKind::NotFound,
            retry: Retry::Useless,
            cause: cause.into(),
        }
    }

    /// Older versions asked of a storage that keeps none.
    pub fn no_versions() -> Failure {
        Failure::other(Retry::Useless, "this storage keeps no older versions")
    }

    /// An OpenDAL error, classified.
    pub fn of(e: &opendal::Error) -> Failure {
        let (retry, cause) = understand(e);
        let kind = match e.kind() {
            opendal::ErrorKind::NotFound => FailureKind::NotFound,
            opendal::ErrorKind::ConditionNotMatch => FailureKind::AlreadyThere,
            _ => FailureKind::Other,
        };
        Failure { kind, retry, cause }
    }

    /// An OS error, classified like an OpenDAL one.
    pub fn of_io(io: &std::io::Error) -> Failure {
        let (retry, cause) = os_cause(io).unwrap_or_else(|| match io.kind() {
            std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => {
                (Retry::Helps, io.to_string())
            }
            _ => (Retry::Useless, io.to_string()),
        });
        let kind = match io.kind() {
            std::io::ErrorKind::NotFound => FailureKind::NotFound,
            std::io::ErrorKind::AlreadyExists => FailureKind::AlreadyThere,
            _ => FailureKind::Other,
        };
        Failure { kind, retry, cause }
    }

    /// The error of `what` (which names the copy) failing so.
    pub fn error(self, what: &str) -> Error {
        Error::Storage {
            what: crate::secrets::mask(what).into_owned(),
            cause: crate::secrets::mask(&self.cause).into_owned(),
            retry: self.retry == Retry::Helps,
        }
    }
}

/// The storage error for `what` failing with `e`, classified, its cause in words.
pub fn storage_error(what: &str, e: opendal::Error) -> Error {
    let (retry, cause) = understand(&e);
    Error::Storage {
        what: crate::secrets::mask(what).into_owned(),
        cause: crate::secrets::mask(&cause).into_owned(),
        retry: retry == Retry::Helps,
    }
}

/// The storage error for `what` failing with an OS error, classified like an OpenDAL one.
pub fn io_error(what: &str, io: &std::io::Error) -> Error {
    let (retry, cause) = os_cause(io).unwrap_or_else(|| match io.kind() {
        std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock => {
            (Retry::Helps, io.to_string())
        }
        _ => (Retry::Useless, io.to_string()),
    });
    Error::Storage {
        what: crate::secrets::mask(what).into_owned(),
        cause: crate::secrets::mask(&cause).into_owned(),
        retry: retry == Retry::Helps,
    }
}

/// The class and a plain cause of an OpenDAL error, from the OS error or HTTP status under it
/// where there is one.
pub fn understand(e: &opendal::Error) -> (Retry, String) {
    use opendal::ErrorKind as K;
    let detail = e.to_string();
    if let Some(io) = io_error_in(e)
        && let Some(known) = os_cause(io)
    {
        return known;
    }
    let permanent = |cause: &str| (Retry::Useless, format!("{cause} ({detail})"));
    // ssh said nothing more precise (above): the connection or the login failed.
    if let Some(openssh::Error::Connect(_)) = source_in::<openssh::Error>(e) {
        return permanent(
            "ssh could not connect or log in: check endpoint, user and key (ssh -i KEY -p PORT USER@HOST should work without a password)",
        );
    }
    match e.kind() {
        K::PermissionDenied => permanent("access denied: check the credentials and their rights"),
        K::NotFound => permanent("not found"),
        K::ConfigInvalid => permanent("the destination's settings are invalid"),
        K::Unsupported => permanent("the service does not support this"),
        K::RateLimited => (
            Retry::Helps,
            format!("the service asks to slow down ({detail})"),
        ),
        _ if detail.contains("<Code>NoSuchBucket</Code>") => permanent("no such bucket"),
        _ if e.is_temporary() => (Retry::Helps, detail),
        _ => (Retry::Useless, detail),
    }
}

/// The first `std::io::Error` in the chain of causes.
fn io_error_in(e: &opendal::Error) -> Option<&std::io::Error> {
    source_in::<std::io::Error>(e)
}

/// The first cause of type `T` in the chain of causes.
fn source_in<T: std::error::Error + 'static>(e: &opendal::Error) -> Option<&T> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(c) = cause {
        if let Some(found) = c.downcast_ref::<T>() {
            return Some(found);
        }
        cause = c.source();
    }
    None
}

/// Causes an OS error names exactly.
pub fn os_cause(io: &std::io::Error) -> Option<(Retry, String)> {
    use std::io::ErrorKind as K;
    let permanent = |s: &str| Some((Retry::Useless, s.to_owned()));
    match io.raw_os_error() {
        Some(libc::ENOSPC) => return permanent("the disk is full (no space left on device)"),
        Some(libc::EDQUOT) => return permanent("the disk quota is exhausted"),
        Some(libc::EROFS) => return permanent("the filesystem is read-only"),
        Some(libc::EACCES) | Some(libc::EPERM) => return permanent("permission denied"),
        Some(libc::EIO) => return permanent("input/output error (is the disk failing or gone?)"),
        Some(libc::ENODEV) | Some(libc::ENXIO) => return permanent("the device is gone"),
        Some(libc::ENOTCONN) => return permanent("the mount is not connected any more"),
        _ => {}
    }
    let text = io.to_string();
    if text.contains("Host key verification failed") {
        return permanent(
            "ssh: the server's host key is not in known_hosts, or it changed: check it, then add it (ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts), or set known_hosts_strategy = \"add\" to accept a new server's key on first use",
        );
    }
    match io.kind() {
        K::ConnectionRefused => permanent(
            "connection refused: is the server running, and is the endpoint's port right?",
        ),
        K::PermissionDenied if text.contains("Permission denied (") => Some((
            Retry::Useless,
            format!(
                "ssh: the server refused the user or key ({}); `ssh -i KEY -p PORT USER@HOST` must log in without a password",
                text.trim()
            ),
        )),
        K::PermissionDenied => Some((Retry::Useless, format!("permission denied ({text})"))),
        K::TimedOut => Some((Retry::Helps, "timed out".into())),
        // openssh reports whatever else ssh said as an aborted connection: ssh's words.
        K::ConnectionAborted if text.contains('@') || text.contains("ssh") => {
            Some((Retry::Useless, format!("ssh: {}", text.trim())))
        }
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Some((Retry::Helps, format!("the connection broke ({io})")))
        }
        _ if io.to_string().contains("failed to lookup address")
            || io.to_string().contains("Name or service not known") =>
        {
            permanent("the server's name does not resolve: check the endpoint")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_permanent_and_named() {
        let io = std::io::Error::from_raw_os_error(libc::ENOSPC);
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "write failed")
            .set_temporary()
            .set_source(io);
        let (retry, cause) = understand(&e);
        assert_eq!(retry, Retry::Useless);
        assert!(cause.contains("disk is full"), "{cause}");
    }

    #[test]
    fn an_ssh_connection_that_fails_says_what_to_check() {
        let refused = std::io::Error::other("ssh exited");
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "ssh error")
            .set_source(openssh::Error::Connect(refused));
        let (retry, cause) = understand(&e);
        assert_eq!(retry, Retry::Useless);
        assert!(
            cause.starts_with("ssh could not connect or log in"),
            "{cause}"
        );
    }

    #[test]
    fn a_server_error_is_temporary() {
        let e = opendal::Error::new(opendal::ErrorKind::Unexpected, "500 Internal Server Error")
            .set_temporary();
        assert_eq!(understand(&e).0, Retry::Helps);
    }
}
