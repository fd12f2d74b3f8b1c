//! A local copy's filesystem may stop answering instead of failing: a USB disk that hangs, a
//! FUSE or network mount whose server froze. A call into it then waits forever, in the
//! kernel, where no timer reaches it. So every call into a local copy runs on a thread of
//! its own and is waited for at most the copy's stall deadline; a call that does not come
//! back is left behind (its thread is killed with the process) and the run fails in time,
//! naming the copy.
//!
//! Closing a file there is worse: on a FUSE mount a close waits for the server to answer
//! (FLUSH) and nothing, not even SIGKILL, ends that wait; the closes the kernel makes when a
//! process ends wait the same way, so a process that merely held a file open on such a disk
//! could never end. Hence `close`: files of copies are closed by a helper process that shares
//! this process's table of open files (clone with CLONE_FILES). The table, and whatever is
//! still open in it, outlives this process in the helper, which alone waits for the disk.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

pub use crate::deadline::{bounded, while_moving};

/// Remove the folder `dir` and everything in it (links removed, never followed), counting
/// each entry in `removed`: a large folder on a slow disk keeps moving, a hung one does not.
/// Nothing when it is not there.
pub fn remove_all(dir: &Path, removed: &AtomicU64) -> std::io::Result<()> {
    remove_all_but(dir, None, removed)
}

/// `remove_all`, except that the file `last` directly inside `dir` (an intent record that
/// governs the rest) is removed only once everything else is gone, and the folder after it:
/// a run killed at any point leaves the record as long as anything it governs is left.
pub fn remove_all_last(dir: &Path, last: &str, removed: &AtomicU64) -> std::io::Result<()> {
    let record = dir.join(last);
    remove_all_but(dir, Some(&record), removed)?;
    for gone in [std::fs::remove_file(&record), std::fs::remove_dir(dir)] {
        match gone {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => removed.fetch_add(1, Ordering::Relaxed),
        };
    }
    Ok(())
}

fn remove_all_but(dir: &Path, kept: Option<&Path>, removed: &AtomicU64) -> std::io::Result<()> {
    for entry in walkdir::WalkDir::new(dir)
        .follow_links(false)
        .contents_first(true)
    {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if e.io_error().map(|io| io.kind()) == Some(std::io::ErrorKind::NotFound) => {
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if kept.is_some_and(|k| entry.path() == k || entry.path() == dir) {
            continue;
        }
        let gone = match entry.file_type().is_dir() {
            true => std::fs::remove_dir(entry.path()),
            false => std::fs::remove_file(entry.path()),
        };
        match gone {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {
                removed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// Close a file of a local copy without ever waiting for its disk (see above).
pub fn close(file: impl Into<std::os::fd::OwnedFd>) {
    use std::os::fd::IntoRawFd;
    let fd = file.into().into_raw_fd();
    match closer().filter(|pipe| keeps_up(**pipe)) {
        // SAFETY: a write of 4 bytes from a valid buffer to our pipe.
        Some(pipe) => {
            let sent = unsafe { libc::write(*pipe, (&fd as *const i32).cast(), 4) };
            if sent != 4 {
                // SAFETY: fd is ours, handed over by `into_raw_fd`.
                unsafe { libc::close(fd) };
            }
        }
        // SAFETY: as above.
        None => unsafe {
            libc::close(fd);
        },
    }
}

/// Start the helper that closes files of copies, once per process: before anything is
/// opened on a local copy, so that no file of it is ever in a table only this process holds.
pub fn expect_hanging_files() {
    closer();
}

/// Whether the helper keeps up (waiting up to 100 ms for it): each file handed to it stays
/// open here until it is closed, and a process may hold only so many (often 1,024).
fn keeps_up(pipe: i32) -> bool {
    const MOST_WAITING: libc::c_int = 128 * 4;
    for _ in 0..100 {
        let mut queued: libc::c_int = 0;
        // SAFETY: FIONREAD writes the bytes waiting in the pipe into `queued`.
        if unsafe { libc::ioctl(pipe, libc::FIONREAD, &mut queued) } != 0 {
            return false;
        }
        if queued < MOST_WAITING {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// The write end of the pipe to the helper that closes files, started on first use; None
/// where it cannot be started (files are then closed here).
fn closer() -> Option<&'static i32> {
    CLOSER.get_or_init(start_closer).as_ref()
}

static CLOSER: std::sync::OnceLock<Option<i32>> = std::sync::OnceLock::new();

/// The last thing a run does: its standard streams go to /dev/null, so that whoever reads
/// its output sees the end now, even while the helper still holds the shared table (and
/// waits for a copy that hangs).
pub fn end_of_output() {
    if CLOSER.get().is_some_and(|c| c.is_some())
        && let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
    {
        use std::io::Write;
        let _ = (std::io::stdout().flush(), std::io::stderr().flush());
        for stream in 0..=2 {
            // SAFETY: dup2 of a valid descriptor onto a standard one.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), stream) };
        }
    }
}

fn start_closer() -> Option<i32> {
    let mut ends = [0i32; 2];
    // SAFETY: pipe2 fills the two-element array.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return None;
    }
    let [read_end, write_end] = ends;
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: a fork that shares the file table (no CLONE_VM: the child has its own copy of
    // memory and stack). The child calls only async-signal-safe system calls, then _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_FILES | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match pid {
        0 => unsafe { closer_loop(read_end, parent) },
        p if p < 0 => {
            // SAFETY: both ends are ours.
            unsafe {
                libc::close(read_end);
                libc::close(write_end);
            }
            None
        }
        _ => Some(write_end),
    }
}

/// The helper: closes each descriptor named on the pipe; ends once its parent has (checked
/// every 50 ms), taking the shared file table with it.
///
/// # Safety
/// Only in the child of `start_closer`.
unsafe fn closer_loop(pipe: i32, parent: libc::pid_t) -> ! {
    loop {
        let mut ready = libc::pollfd {
            fd: pipe,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: async-signal-safe system calls on valid arguments.
        unsafe {
            if libc::poll(&mut ready, 1, 50) == 1 {
                let mut fd = -1i32;
                if libc::read(pipe, (&mut fd as *mut i32).cast(), 4) == 4 && fd > 2 {
                    libc::close(fd);
                }
            }
            if libc::getppid() != parent {
                libc::_exit(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn files_handed_to_the_helper_never_pile_up() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        // More than a process may hold at once: each must be closed in time.
        for _ in 0..5_000 {
            close(std::fs::File::open(&file).unwrap());
        }
    }

    #[test]
    fn the_helper_closes_files_for_this_process() {
        use std::os::fd::AsRawFd;
        let file = tempfile::NamedTempFile::new().unwrap();
        let named = file.path().to_owned();
        let open = std::fs::File::open(&named).unwrap();
        let link = format!("/proc/self/fd/{}", open.as_raw_fd());
        close(open);
        let deadline = Instant::now() + Duration::from_secs(5);
        // Closed once the descriptor no longer names the file (it may name another by then).
        while std::fs::read_link(&link).is_ok_and(|target| target == named) {
            assert!(Instant::now() < deadline, "{link} still open");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
