//! Time, in one place: the wall clock that stamps exported timestamps (read by workers,
//! collectors and the reloader alike) and the [`Clock`] a worker schedules on, which tests
//! replace with a fake one so that hours of lease run in microseconds.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::watch::Wakeup;

/// Time as the worker sees it: a monotonic clock to schedule on, a wall clock to export.
pub trait Clock: Send + Sync {
    /// Monotonic time since an arbitrary origin.
    fn monotonic(&self) -> Duration;
    /// Unix seconds, for exported timestamps only.
    fn unix(&self) -> f64;
    /// Sleeps until `deadline` (monotonic; `None`: forever) or until `wakeup` rings; true if rung.
    fn sleep_until(&self, deadline: Option<Duration>, wakeup: &Wakeup) -> bool;
}

/// The real clocks.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
    fn unix(&self) -> f64 {
        unix_now()
    }
    fn sleep_until(&self, deadline: Option<Duration>, wakeup: &Wakeup) -> bool {
        wakeup.wait(deadline.map(|d| d.saturating_sub(self.monotonic())))
    }
}

/// The wall clock in Unix seconds.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
