//! Kill points for tests: with `DARVAULT_KILL_AT=<point>:<n>` in its environment, darvault
//! ends itself with SIGKILL the nth time it passes the named point. A kill point is chosen,
//! not hoped for, also where no system call of darvault's own marks the moment (a file
//! removed on a server is removed by the server). Without the variable a point costs a load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where darvault may be killed: a file of a copy removed (`Store::remove`).
pub const REMOVE: &str = "remove";
/// A file about to be moved into place on a copy, written and proven (`Store::put_file`).
pub const PLACE: &str = "place";
/// A file put into place on a copy (`Store::put_file`).
pub const PUT: &str = "put";
/// An older version of a file made current again by the server, not yet proven
/// (`Store::from_history`).
pub const BROUGHT_BACK: &str = "brought-back";

pub fn point(name: &str) {
    static AT: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static PASSED: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        let spec = std::env::var("DARVAULT_KILL_AT").ok()?;
        let (point, n) = spec.rsplit_once(':')?;
        Some((point.to_owned(), n.parse().ok()?))
    });
    if let Some((point, n)) = at
        && point == name
        && PASSED.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        eprintln!("darvault: killed at {name} #{n} (DARVAULT_KILL_AT)");
        // SAFETY: a signal to this process itself.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// The largest file S3 takes in one PUT (5 GiB), or for tests what
/// `DARVAULT_TEST_SINGLE_PUT_MAX` says (bytes): a multipart upload chosen, not hoped for,
/// without writing 5 GiB.
pub fn single_put_max(real: u64) -> u64 {
    static MAX: OnceLock<Option<u64>> = OnceLock::new();
    MAX.get_or_init(|| {
        std::env::var("DARVAULT_TEST_SINGLE_PUT_MAX")
            .ok()?
            .parse()
            .ok()
    })
    .unwrap_or(real)
}

/// For tests: what `DARVAULT_TEST_SHELL_PAUSE` says (seconds, e.g. "37.5"): a server's
/// shell pauses that long before it hashes, so that a signal reaches darvault while it
/// waits on the server, chosen, not hoped for. Only digits and a dot are taken.
pub fn shell_pause() -> Option<&'static str> {
    static PAUSE: OnceLock<Option<String>> = OnceLock::new();
    PAUSE
        .get_or_init(|| {
            let pause = std::env::var("DARVAULT_TEST_SHELL_PAUSE").ok()?;
            let plain = !pause.is_empty() && pause.bytes().all(|b| b.is_ascii_digit() || b == b'.');
            plain.then_some(pause)
        })
        .as_deref()
}
