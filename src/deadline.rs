//! Work on a thread of its own, waited for no longer than a deadline: a call into a disk
//! or a system call that may never come back (see `copy::disk`, `tools::process`). Work
//! given up on is left behind; its thread ends with it, or with the process.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

/// `work` on a thread of its own; None when it has not returned within `limit`.
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    let (done, result) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("disk".into())
        .spawn(move || {
            let _ = done.send(work());
        })
        .expect("a thread for a disk call");
    result.recv_timeout(limit).ok()
}

/// `work` on a thread of its own, given up on when the count it keeps (bytes, entries)
/// stops moving for `stall`: long work on a disk that answers goes on for as long as it
/// takes. None when given up on.
pub fn while_moving<T: Send + 'static>(
    stall: Duration,
    work: impl FnOnce(&AtomicU64) -> T + Send + 'static,
) -> Option<T> {
    let progress = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&progress);
    let (done, result) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("disk".into())
        .spawn(move || {
            let _ = done.send(work(&counted));
        })
        .expect("a thread for a disk call");
    let mut watch = Watch::new(stall);
    loop {
        match result.recv_timeout(Watch::EVERY) {
            Ok(value) => return Some(value),
            Err(mpsc::RecvTimeoutError::Disconnected) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) if watch.stalled(&progress) => return None,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
}

/// Whether a progress count has stopped moving for a stall deadline, looked at every
/// `EVERY`.
pub struct Watch {
    stall: Duration,
    seen: u64,
    since: Instant,
}

impl Watch {
    pub const EVERY: Duration = Duration::from_millis(250);

    pub fn new(stall: Duration) -> Watch {
        Watch {
            stall,
            seen: 0,
            since: Instant::now(),
        }
    }

    /// True once `progress` has not moved for the stall deadline.
    pub fn stalled(&mut self, progress: &AtomicU64) -> bool {
        let now = progress.load(Ordering::Relaxed);
        if now != self.seen {
            (self.seen, self.since) = (now, Instant::now());
        }
        self.since.elapsed() > self.stall
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_that_hangs_is_given_up_on_and_one_that_moves_is_not() {
        let started = Instant::now();
        let hung = bounded(Duration::from_millis(100), || {
            std::thread::sleep(Duration::from_secs(5))
        });
        assert!(hung.is_none() && started.elapsed() < Duration::from_secs(2));
        assert_eq!(bounded(Duration::from_secs(5), || 7), Some(7));
        let moving = while_moving(Duration::from_millis(400), |n| {
            for _ in 0..10 {
                std::thread::sleep(Duration::from_millis(100));
                n.fetch_add(1, Ordering::Relaxed);
            }
            "done"
        });
        assert_eq!(moving, Some("done"));
        let stuck = while_moving(Duration::from_millis(300), |_| {
            std::thread::sleep(Duration::from_secs(5))
        });
        assert!(stuck.is_none());
    }
}
