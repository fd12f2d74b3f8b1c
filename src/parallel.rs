//! A bounded set of concurrent tasks: at most N run at once (readers on a disk, uploads to a
//! server), and their results come back as they finish.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub struct Bounded<T> {
    permits: Arc<Semaphore>,
    running: JoinSet<T>,
}

impl<T: Send + 'static> Bounded<T> {
    pub fn new(at_once: usize) -> Bounded<T> {
        Bounded {
            permits: Arc::new(Semaphore::new(at_once.max(1))),
            running: JoinSet::new(),
        }
    }

    /// Wait for a free place, then start `task`.
    pub async fn spawn(&mut self, task: impl Future<Output = T> + Send + 'static) {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .expect("never closed");
        self.running.spawn(async move {
            let _permit = permit;
            task.await
        });
    }

    /// Stop every task still running (dropped where it waits).
    pub fn abort_all(&mut self) {
        self.running.abort_all();
    }

    /// The next result, or None when every task has finished (or was stopped).
    pub async fn next(&mut self) -> Option<T> {
        loop {
            match self.running.join_next().await? {
                Ok(done) => return Some(done),
                Err(e) if e.is_cancelled() => continue,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        }
    }
}

/// `job(0)` .. `job(n - 1)` on threads, as many at once as there are cores (blocking work:
/// each runs a program), their results in order.
pub fn on_cores<T: Send>(n: usize, job: impl Fn(usize) -> T + Sync) -> Vec<T> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let next = AtomicUsize::new(0);
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..cores.min(n))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return done;
                        }
                        done.push((i, job(i)));
                    }
                })
            })
            .collect();
        for worker in workers {
            for (i, t) in worker.join().expect("worker thread") {
                out[i] = Some(t);
            }
        }
    });
    out.into_iter().map(|t| t.expect("every job ran")).collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn jobs_on_cores_come_back_in_order() {
        let got = super::on_cores(9, |i| i * 10);
        assert_eq!(got, (0..9).map(|i| i * 10).collect::<Vec<_>>());
        assert!(super::on_cores(0, |i| i).is_empty());
    }
}
