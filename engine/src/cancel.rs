//! Cooperative cancellation of a run, with the reason recorded.
//!
//! A run is cancelled (by a scheduler timeout or shutdown) only before its commits: the
//! writers stop, the files they wrote are deleted, and the run fails with
//! [`EngineError::Cancelled`] naming the reason. Once commits start they finish, so a
//! cancelled run never leaves some products committed and others not.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use crate::error::{EngineError, Result};

/// A cancellation handle shared by the run and whoever may stop it.
#[derive(Debug, Clone, Default)]
pub struct RunCancellation {
    token: CancellationToken,
    reason: Arc<OnceLock<String>>,
}

impl RunCancellation {
    /// A handle that is not cancelled.
    pub fn new() -> RunCancellation {
        RunCancellation::default()
    }

    /// Asks the run to stop; the first reason given is the one recorded.
    pub fn cancel(&self, reason: impl Into<String>) {
        // A second cancellation keeps the first reason: that is what stopped the run.
        let _ = self.reason.set(reason.into());
        self.token.cancel();
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes once the run is cancelled.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The error a cancelled run fails with.
    pub fn error(&self) -> EngineError {
        EngineError::Cancelled {
            reason: self
                .reason
                .get()
                .cloned()
                .unwrap_or_else(|| "cancelled".to_string()),
        }
    }

    /// Fails with [`error`](Self::error) if the run was cancelled.
    pub fn check(&self) -> Result<()> {
        if self.is_cancelled() {
            Err(self.error())
        } else {
            Ok(())
        }
    }

    /// Runs `work` unless the run is cancelled first, in which case `work` is dropped. Only for
    /// work that writes nothing (planning, reference scans): writers clean up through their own
    /// cancellation checks instead.
    pub async fn guard<T>(&self, work: impl Future<Output = Result<T>>) -> Result<T> {
        tokio::select! {
            biased;
            _ = self.token.cancelled() => Err(self.error()),
            result = work => result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_reason_wins_and_guard_stops_work() {
        let cancel = RunCancellation::new();
        assert!(cancel.check().is_ok());
        cancel.cancel("timed out after 1s");
        cancel.cancel("shutting down");
        assert_eq!(
            cancel.check().unwrap_err().to_string(),
            "cancelled: timed out after 1s"
        );
        let never = std::future::pending::<Result<()>>();
        assert!(matches!(
            cancel.guard(never).await,
            Err(EngineError::Cancelled { .. })
        ));
    }
}
