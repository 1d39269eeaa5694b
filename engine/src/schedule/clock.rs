//! The scheduler's notion of time, injectable so tests run schedules in paused tokio time.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Wall-clock time for cron arithmetic, and a way to wait for an instant of it.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;

    /// Completes at or after `instant`.
    fn sleep_until(&self, instant: DateTime<Utc>) -> impl Future<Output = ()> + Send;

    /// Completes after `duration`.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send {
        let until =
            self.now() + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
        self.sleep_until(until)
    }
}

/// The system clock. Long waits are cut into slices so a wall-clock jump (NTP step, suspend)
/// delays an occurrence by at most one slice.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

const SYSTEM_SLEEP_SLICE: Duration = Duration::from_secs(15);

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    async fn sleep_until(&self, instant: DateTime<Utc>) {
        loop {
            let Ok(left) = (instant - Utc::now()).to_std() else {
                return;
            };
            if left.is_zero() {
                return;
            }
            tokio::time::sleep(left.min(SYSTEM_SLEEP_SLICE)).await;
        }
    }
}

/// A clock driven by tokio's timer: `now` is a fixed wall-clock origin plus the tokio time
/// elapsed since. Under `tokio::time::pause` it advances only when every task waits, so tests
/// run hours of schedule in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: DateTime<Utc>,
    started: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `origin` now.
    pub fn starting_at(origin: DateTime<Utc>) -> TokioClock {
        TokioClock {
            origin,
            started: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed =
            chrono::Duration::from_std(self.started.elapsed()).unwrap_or(chrono::Duration::MAX);
        self.origin + elapsed
    }

    async fn sleep_until(&self, instant: DateTime<Utc>) {
        let offset = (instant - self.origin).to_std().unwrap_or(Duration::ZERO);
        tokio::time::sleep_until(self.started + offset).await
    }
}
