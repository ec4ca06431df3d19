//! When to renew and when to retry: pure functions of (lease, time left, attempt, random),
//! so the whole policy is unit-tested without a clock.
//!
//! Renewal happens at half the lease, or up to a tenth of the lease earlier so that many
//! exporters (or many tokens) do not renew in lockstep; never later. After a failure the
//! wait starts at about a second and doubles, but never exceeds the backoff ceiling or a
//! quarter of the time the token has left: a Vault outage shorter than the time left gets
//! several more attempts before the token dies, where waiting a whole TTL/2 after one
//! failed call would lose it.

use std::time::Duration;

/// Shortest wait between two attempts on one token.
pub const MIN_RETRY: Duration = Duration::from_secs(1);

/// Delay from a grant of `lease` to its renewal: uniform in [40 %, 50 %] of the lease.
/// `random` is uniform in [0, 1).
pub fn renewal_delay(lease: Duration, random: f64) -> Duration {
    lease.mul_f64(0.5 - 0.1 * random.clamp(0.0, 1.0))
}

/// Delay before retry number `attempt` (1 for the first retry after a failure).
///
/// About 1 s, 2 s, 4 s ... (plus up to 25 % jitter), capped at `max_backoff` and at a
/// quarter of `time_left` when the expiry is known, and never under [`MIN_RETRY`].
pub fn retry_delay(
    attempt: u32,
    time_left: Option<Duration>,
    max_backoff: Duration,
    random: f64,
) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let base = MIN_RETRY.saturating_mul(1 << doublings);
    let mut delay = base
        .mul_f64(1.0 + 0.25 * random.clamp(0.0, 1.0))
        .min(max_backoff);
    if let Some(left) = time_left {
        delay = delay.min(left / 4);
    }
    delay.max(MIN_RETRY)
}

/// A small, seedable pseudo-random source for jitter (xorshift64*): no crate needed for
/// spreading renewals, and tests can fix the seed.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    /// A source seeded from `seed` (any value; 0 is remapped).
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed.max(1))
    }

    /// The next value, uniform in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);
    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn renewal_is_at_half_the_lease_at_the_latest_and_40_percent_at_the_earliest() {
        let hour = Duration::from_secs(3600);
        assert_eq!(renewal_delay(hour, 0.0), Duration::from_secs(1800));
        assert_eq!(renewal_delay(hour, 1.0), Duration::from_secs(1440));
        let mut jitter = Jitter::new(7);
        for _ in 0..1000 {
            let d = renewal_delay(hour, jitter.next_unit());
            assert!(
                d >= Duration::from_secs(1440) && d <= Duration::from_secs(1800),
                "{d:?}"
            );
        }
    }

    #[test]
    fn first_retry_after_about_a_second_then_doubling() {
        let no_expiry = None;
        assert_eq!(
            retry_delay(1, no_expiry, FIVE_MIN, 0.0),
            Duration::from_secs(1)
        );
        assert_eq!(
            retry_delay(2, no_expiry, FIVE_MIN, 0.0),
            Duration::from_secs(2)
        );
        assert_eq!(
            retry_delay(3, no_expiry, FIVE_MIN, 0.0),
            Duration::from_secs(4)
        );
        assert_eq!(
            retry_delay(1, no_expiry, FIVE_MIN, 0.999),
            Duration::from_micros(1_249_750)
        );
    }

    #[test]
    fn retries_are_capped_at_the_ceiling_and_a_quarter_of_the_time_left() {
        assert_eq!(retry_delay(20, None, FIVE_MIN, 0.5), FIVE_MIN);
        assert_eq!(retry_delay(u32::MAX, None, FIVE_MIN, 0.5), FIVE_MIN);
        assert_eq!(
            retry_delay(20, Some(Duration::from_secs(400)), FIVE_MIN, 0.5),
            Duration::from_secs(100)
        );
        assert_eq!(
            retry_delay(9, Some(MIN), FIVE_MIN, 0.0),
            Duration::from_secs(15)
        );
    }

    #[test]
    fn never_more_than_one_attempt_a_second() {
        assert_eq!(
            retry_delay(1, Some(Duration::from_secs(2)), FIVE_MIN, 0.0),
            MIN_RETRY
        );
        assert_eq!(
            retry_delay(5, Some(Duration::ZERO), FIVE_MIN, 0.0),
            MIN_RETRY
        );
        assert_eq!(
            retry_delay(1, None, Duration::from_millis(10), 0.0),
            MIN_RETRY
        );
    }

    #[test]
    fn an_outage_shorter_than_the_time_left_gets_an_attempt_after_it_ends() {
        // Failing from the renewal point (half of a 1 h lease left), a retry lands within
        // a quarter of whatever is left, so an outage ending before expiry is caught.
        let lease_left = Duration::from_secs(1800);
        let outage = Duration::from_secs(1700);
        let mut elapsed = Duration::ZERO;
        let mut attempt = 0;
        while elapsed < outage {
            attempt += 1;
            elapsed += retry_delay(attempt, Some(lease_left - elapsed), FIVE_MIN, 0.9);
        }
        assert!(
            elapsed < lease_left,
            "first attempt after the outage at {elapsed:?}"
        );
    }

    #[test]
    fn jitter_is_uniform_enough() {
        let mut jitter = Jitter::new(0);
        let values: Vec<f64> = (0..10_000).map(|_| jitter.next_unit()).collect();
        assert!(values.iter().all(|v| (0.0..1.0).contains(v)));
        let low = values.iter().filter(|v| **v < 0.5).count();
        assert!((4500..5500).contains(&low), "{low}");
    }
}
