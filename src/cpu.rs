//! CPU seconds a run spent, by what spent them: each child process (its user and system
//! time with its own children's, as the kernel reports them when it is reaped), and work
//! darvault does on one of its threads, measured with that thread's clock. A backup
//! reports them per phase; what no label covers is darvault's own remainder.

use std::collections::BTreeMap;
use std::sync::Mutex;

static SPENT: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

/// Hashing the files of a set (SHA-256), in darvault.
pub const HASHING: &str = "sha-256 of the set's files";
/// What darvault leaves to no label: its remainder.
pub const OTHER: &str = "darvault, the rest";

/// Count `seconds` of CPU under `label`.
pub fn add(label: &str, seconds: f64) {
    let mut spent = SPENT.lock().unwrap_or_else(|e| e.into_inner());
    *spent.entry(label.to_owned()).or_default() += seconds;
}

/// Everything counted since the last call, by label.
pub fn take() -> BTreeMap<String, f64> {
    std::mem::take(&mut *SPENT.lock().unwrap_or_else(|e| e.into_inner()))
}

/// `work` done on this thread, its CPU time counted under `label`.
pub fn on_this_thread<T>(label: &str, work: impl FnOnce() -> T) -> T {
    let before = clock(libc::CLOCK_THREAD_CPUTIME_ID);
    let done = work();
    add(label, clock(libc::CLOCK_THREAD_CPUTIME_ID) - before);
    done
}

/// CPU seconds of this process (all its threads) and of its reaped children so far.
pub fn process_and_children() -> (f64, f64) {
    (usage(libc::RUSAGE_SELF), usage(libc::RUSAGE_CHILDREN))
}

/// User and system seconds of a reaped child, from what `wait4` reported.
pub fn of_child(usage: &libc::rusage) -> f64 {
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

fn clock(which: libc::clockid_t) -> f64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(which, &mut now) };
    now.tv_sec as f64 + now.tv_nsec as f64 / 1e9
}

fn usage(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the plain struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(who, &mut usage) };
    of_child(&usage)
}

fn seconds(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

#[cfg(test)]
mod tests {
    #[test]
    fn work_on_a_thread_is_counted_under_its_label() {
        let spun = super::on_this_thread("test spin", || {
            let mut x = 0u64;
            for i in 0..20_000_000u64 {
                x = x.wrapping_mul(31).wrapping_add(i);
            }
            std::hint::black_box(x)
        });
        std::hint::black_box(spun);
        let spent = super::take();
        assert!(spent["test spin"] > 0.0, "{spent:?}");
    }
}
