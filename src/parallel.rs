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

    /// The next result, or None when every task has finished.
    pub async fn next(&mut self) -> Option<T> {
        self.running
            .join_next()
            .await
            .map(|r| r.expect("task panicked"))
    }
}
