//! The I/O runtime every operation on copies (and the webhook notifications) runs on.

use crate::error::{Error, Result};

pub fn runtime() -> Result<Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map(|rt| Runtime(Some(rt)))
        .map_err(|e| Error::Failed(format!("cannot start the I/O runtime: {e}")))
}

/// The I/O runtime. When it goes, blocking work still running (a write to a local disk
/// that hung, given up on after the stall deadline) gets a second, not forever: a
/// process holding a copy's lock must end.
pub struct Runtime(Option<tokio::runtime::Runtime>);

impl std::ops::Deref for Runtime {
    type Target = tokio::runtime::Runtime;
    fn deref(&self) -> &tokio::runtime::Runtime {
        self.0.as_ref().expect("the runtime lives until dropped")
    }
}

impl Runtime {
    /// `work` to its end, or `Err(Interrupted)` within a tenth of a second of SIGINT or
    /// SIGTERM: every wait in it (a request to a server that never answers, a retry's pause)
    /// is dropped there. What it left unfinished is what a kill leaves: temporary names and
    /// intent records the next run finishes.
    pub fn block_on_stoppable<T>(
        &self,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        self.block_on(async {
            tokio::select! {
                done = work => done,
                () = stop_requested() => Err(Error::Interrupted),
            }
        })
    }
}

/// Resolves once a stop was requested (see `tools::process::install_stop_handler`).
pub async fn stop_requested() {
    while crate::tools::process::check_stop().is_ok() {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_timeout(std::time::Duration::from_secs(1));
        }
    }
}
