//! The renewal policy on a fake clock against a scripted Vault.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use super::*;
use crate::client::RenewAttempt;
use crate::clock::SystemClock;
use crate::parse::Renewal;

const UNIX_BASE: f64 = 1_700_000_000.0;

#[derive(Default)]
struct FakeClock {
    now: Mutex<Duration>,
    wall_offset: Mutex<f64>,
}

impl FakeClock {
    fn set(&self, t: Duration) {
        let mut now = self.now.lock().unwrap();
        *now = (*now).max(t);
    }
    fn jump_wall_clock(&self, secs: f64) {
        *self.wall_offset.lock().unwrap() += secs;
    }
}

impl Clock for FakeClock {
    fn monotonic(&self) -> Duration {
        *self.now.lock().unwrap()
    }
    fn unix(&self) -> f64 {
        UNIX_BASE + *self.wall_offset.lock().unwrap() + self.monotonic().as_secs_f64()
    }
    fn sleep_until(&self, deadline: Option<Duration>, _: &Wakeup) -> bool {
        if let Some(d) = deadline {
            self.set(d);
        }
        false
    }
}

type Script<T> = Mutex<Box<dyn FnMut(Duration) -> Result<T, VaultError> + Send>>;

/// A Vault whose answers are functions of the (fake) time of the call.
struct ScriptedVault {
    clock: Arc<FakeClock>,
    lookup: Script<Lookup>,
    renew: Script<Renewal>,
    calls: Mutex<Vec<(&'static str, Duration, Option<u64>)>>,
}

impl ScriptedVault {
    fn new(
        clock: Arc<FakeClock>,
        lookup: impl FnMut(Duration) -> Result<Lookup, VaultError> + Send + 'static,
        renew: impl FnMut(Duration) -> Result<Renewal, VaultError> + Send + 'static,
    ) -> Arc<ScriptedVault> {
        Arc::new(ScriptedVault {
            clock,
            lookup: Mutex::new(Box::new(lookup)),
            renew: Mutex::new(Box::new(renew)),
            calls: Mutex::new(Vec::new()),
        })
    }
    fn calls(&self, kind: &str) -> Vec<Duration> {
        let calls = self.calls.lock().unwrap();
        calls.iter().filter(|c| c.0 == kind).map(|c| c.1).collect()
    }
}

impl VaultApi for ScriptedVault {
    fn lookup_self(&self, _: &Token) -> Result<Lookup, VaultError> {
        let now = self.clock.monotonic();
        self.calls.lock().unwrap().push(("lookup", now, None));
        (self.lookup.lock().unwrap())(now)
    }
    fn renew_self(&self, _: &Token, increment: Option<u64>) -> RenewAttempt {
        let now = self.clock.monotonic();
        self.calls.lock().unwrap().push(("renew", now, increment));
        let result = (self.renew.lock().unwrap())(now);
        RenewAttempt {
            latency: Some(Duration::from_millis(3)),
            result,
        }
    }
}

fn service(ttl: u64) -> Lookup {
    Lookup {
        ttl,
        expire_time: Some(UNIX_BASE + ttl as f64),
        renewable: Some(true),
        token_type: "service".into(),
        display_name: "approle".into(),
        path: "auth/approle/login".into(),
        policies: vec!["default".into(), "app".into()],
        period: None,
        issue_time: Some(UNIX_BASE - 100.0),
        explicit_max_ttl: None,
        num_uses: 0,
    }
}

fn granted(lease: u64) -> Renewal {
    Renewal {
        lease_duration: lease,
        renewable: true,
        warnings: vec![],
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

struct Harness {
    clock: Arc<FakeClock>,
    vault: Arc<ScriptedVault>,
    state: Arc<TokenState>,
    worker: Worker,
}

impl Harness {
    fn new(
        lookup: impl FnMut(Duration) -> Result<Lookup, VaultError> + Send + 'static,
        renew: impl FnMut(Duration) -> Result<Renewal, VaultError> + Send + 'static,
    ) -> Harness {
        Self::with_settings(RenewSettings::default(), lookup, renew)
    }

    fn with_settings(
        settings: RenewSettings,
        lookup: impl FnMut(Duration) -> Result<Lookup, VaultError> + Send + 'static,
        renew: impl FnMut(Duration) -> Result<Renewal, VaultError> + Send + 'static,
    ) -> Harness {
        let clock = Arc::new(FakeClock::default());
        let vault = ScriptedVault::new(clock.clone(), lookup, renew);
        let state = Arc::new(TokenState::new("test"));
        let source = TokenSource::Value(Token::new("hvs.TEST").unwrap());
        let worker = Worker::new(
            vault.clone(),
            source,
            state.clone(),
            clock.clone(),
            settings,
        );
        Harness {
            clock,
            vault,
            state,
            worker,
        }
    }

    /// Steps the worker until it sleeps past `until` (or forever).
    fn run_until(&mut self, until: Duration) {
        for _ in 0..100_000 {
            match self.worker.step() {
                Some(t) if t <= until => self.clock.set(t),
                _ => {
                    self.clock.set(until);
                    return;
                }
            }
        }
        panic!("worker never slept past {until:?}");
    }

    fn outcome(&self, o: Outcome) -> u64 {
        self.state.snapshot().renewals[o as usize]
    }

    fn reason(&self, r: Reason) -> u64 {
        self.state.snapshot().failures[r.index()]
    }

    fn status(&self) -> TokenStatus {
        self.state.snapshot().status_at(self.clock.unix())
    }
}

#[test]
fn renews_at_half_of_each_granted_lease_and_no_earlier_than_40_percent() {
    let mut h = Harness::new(|_| Ok(service(3600)), |_| Ok(granted(7200)));
    h.run_until(secs(10_000));
    let renewals = h.vault.calls("renew");
    assert!(renewals.len() >= 2, "{renewals:?}");
    assert!(
        renewals[0] >= secs(1440) && renewals[0] <= secs(1800),
        "{:?}",
        renewals[0]
    );
    for pair in renewals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= secs(2880) && gap <= secs(3600), "gap {gap:?}");
    }
    assert_eq!(
        h.vault.calls("lookup").len(),
        1,
        "no renewal at start, one lookup"
    );
    assert_eq!(h.outcome(Outcome::Success) as usize, renewals.len());
    assert_eq!(h.status(), TokenStatus::Renewing);
    let s = h.state.snapshot();
    assert!(s.renewing && s.renewable && !s.capped);
    let next = s.next_renewal.unwrap();
    assert!(
        next > h.clock.unix(),
        "next renewal is announced in the future"
    );
    let info = h.state.info().unwrap();
    assert_eq!(info.policies, "app,default");
    assert_eq!(info.auth_path, "auth/approle/login");
}

#[test]
fn the_renewal_happens_when_announced() {
    let mut h = Harness::new(|_| Ok(service(100)), |_| Ok(granted(100)));
    h.run_until(secs(1));
    let announced = h.state.snapshot().next_renewal.unwrap();
    h.run_until(secs(60));
    let renewed_at = UNIX_BASE + h.vault.calls("renew")[0].as_secs_f64();
    assert!(
        (renewed_at - announced).abs() < 0.001,
        "{renewed_at} vs {announced}"
    );
}

#[test]
fn no_increment_is_sent_by_default_and_a_configured_one_never_below_the_last_lease() {
    let mut h = Harness::new(|_| Ok(service(600)), |_| Ok(granted(600)));
    h.run_until(secs(2000));
    assert!(h.vault.calls.lock().unwrap().iter().all(|c| c.2.is_none()));

    let settings = RenewSettings {
        increment: Some(60),
        ..RenewSettings::default()
    };
    let mut h = Harness::with_settings(settings, |_| Ok(service(600)), |_| Ok(granted(600)));
    h.run_until(secs(2000));
    let calls = h.vault.calls.lock().unwrap().clone();
    let increments: Vec<_> = calls
        .iter()
        .filter(|c| c.0 == "renew")
        .map(|c| c.2)
        .collect();
    assert!(!increments.is_empty());
    assert!(increments.iter().all(|i| *i == Some(600)), "{increments:?}");
}

#[test]
fn not_renewable_at_start_is_counted_once_and_never_renewed() {
    let mut h = Harness::new(
        |_| {
            Ok(Lookup {
                renewable: Some(false),
                ..service(300)
            })
        },
        |_| panic!("must not renew"),
    );
    h.run_until(secs(200));
    assert_eq!(h.outcome(Outcome::NotRenewable), 1);
    assert_eq!(h.outcome(Outcome::Failure), 0);
    assert_eq!(h.status(), TokenStatus::NotRenewable);
    let s = h.state.snapshot();
    assert!(!s.renewing && !s.renewable);
    assert_eq!(s.next_renewal, None);
    h.run_until(secs(400));
    assert_eq!(h.status(), TokenStatus::Expired);
    assert_eq!(h.state.snapshot().ttl_at(h.clock.unix()), Some(0.0));
    assert_eq!(h.vault.calls("lookup").len(), 1);
}

#[test]
fn batch_tokens_are_not_renewable() {
    let mut h = Harness::new(
        |_| {
            Ok(Lookup {
                renewable: Some(false),
                token_type: "batch".into(),
                ..service(300)
            })
        },
        |_| panic!("must not renew"),
    );
    h.run_until(secs(100));
    assert_eq!(h.status(), TokenStatus::NotRenewable);
    assert_eq!(h.outcome(Outcome::NotRenewable), 1);
}

#[test]
fn a_root_token_never_expires_and_is_no_failure() {
    let mut h = Harness::new(
        |_| {
            Ok(Lookup {
                ttl: 0,
                expire_time: None,
                renewable: None,
                ..service(0)
            })
        },
        |_| panic!("must not renew"),
    );
    h.run_until(secs(1_000_000));
    assert_eq!(h.status(), TokenStatus::NeverExpires);
    assert_eq!(h.outcome(Outcome::NotRenewable), 0);
    assert_eq!(h.outcome(Outcome::Failure), 0);
    let s = h.state.snapshot();
    assert_eq!((s.expiry, s.next_renewal), (None, None));
    assert!(!s.renewing);
}

#[test]
fn an_outage_across_the_renewal_point_does_not_cost_the_token() {
    // 600 s token; Vault refuses connections from t=100 s to t=550 s (90 % of the
    // time left at the renewal point), then answers again.
    let mut h = Harness::new(
        |_| Ok(service(600)),
        |t| {
            if t < secs(550) {
                Err(VaultError::Network("connection refused".into()))
            } else {
                Ok(granted(600))
            }
        },
    );
    h.run_until(secs(600));
    let renewals = h.vault.calls("renew");
    assert!(
        h.outcome(Outcome::Success) >= 1,
        "renewed after the outage: {renewals:?}"
    );
    assert_eq!(h.status(), TokenStatus::Renewing);
    let failures = h.outcome(Outcome::Failure);
    assert_eq!(failures, h.reason(Reason::Network));
    assert!(failures >= 3, "{failures}");
    for pair in renewals.windows(2) {
        assert!(
            pair[1] - pair[0] >= secs(1),
            "more than one attempt a second"
        );
    }
}

#[test]
fn retries_back_off_from_about_a_second() {
    let mut h = Harness::new(|_| Ok(service(100_000)), |_| Err(VaultError::Sealed));
    h.run_until(secs(50_000) + secs(200));
    let renewals = h.vault.calls("renew");
    let gaps: Vec<f64> = renewals
        .windows(2)
        .map(|p| (p[1] - p[0]).as_secs_f64())
        .collect();
    assert!((1.0..1.3).contains(&gaps[0]), "{gaps:?}");
    assert!((2.0..2.6).contains(&gaps[1]), "{gaps:?}");
    assert!(gaps.iter().all(|g| *g <= 300.0), "ceiling of 5 min");
    assert_eq!(h.reason(Reason::Sealed) as usize, renewals.len());
}

#[test]
fn a_token_lost_during_an_outage_is_expired() {
    let mut h = Harness::new(
        |_| Ok(service(60)),
        |_| Err(VaultError::Network("refused".into())),
    );
    h.run_until(secs(120));
    assert_eq!(h.status(), TokenStatus::Expired);
    let attempts = h.vault.calls("renew").len();
    h.run_until(secs(10_000));
    assert_eq!(
        h.vault.calls("renew").len(),
        attempts,
        "nothing after expiry"
    );
    assert!(!h.state.snapshot().renewing);
}

#[test]
fn a_capped_renewal_by_warning_stops_renewing() {
    let mut h = Harness::new(
        |_| Ok(service(3600)),
        |_| {
            Ok(Renewal {
                warnings: vec![
                    "TTL of \"1h0m0s\" exceeded the effective max_ttl of \"45m0s\"; TTL value is capped accordingly"
                        .into(),
                ],
                ..granted(2700)
            })
        },
    );
    h.run_until(secs(3000));
    assert_eq!(h.vault.calls("renew").len(), 1);
    assert_eq!(h.status(), TokenStatus::Capped);
    let s = h.state.snapshot();
    assert!(s.capped && !s.renewing);
    assert_eq!(s.next_renewal, None);
    h.run_until(secs(10_000));
    assert_eq!(h.vault.calls("renew").len(), 1, "quiet after the cap");
    assert_eq!(h.status(), TokenStatus::Expired);
}

#[test]
fn a_shorter_lease_than_the_one_before_is_capped() {
    let mut leases = VecDeque::from([3600, 3600, 1000]);
    let mut h = Harness::new(
        |_| Ok(service(3600)),
        move |_| Ok(granted(leases.pop_front().unwrap_or(1000))),
    );
    h.run_until(secs(20_000));
    assert_eq!(h.vault.calls("renew").len(), 3);
    assert_eq!(h.status(), TokenStatus::Expired);
    assert!(h.state.snapshot().capped);
}

#[test]
fn a_periodic_tokens_period_warning_is_not_capped() {
    let mut h = Harness::new(
        |_| {
            Ok(Lookup {
                period: Some(600),
                ..service(600)
            })
        },
        |_| {
            Ok(Renewal {
                warnings: vec!["period of \"20m0s\" exceeded the effective max_ttl of \"10m0s\"; period value is capped accordingly".into()],
                ..granted(600)
            })
        },
    );
    h.run_until(secs(6000));
    assert!(h.vault.calls("renew").len() >= 10);
    assert_eq!(h.status(), TokenStatus::Renewing);
}

#[test]
fn permission_denied_makes_the_token_invalid_and_rechecks_at_most_every_five_minutes() {
    // Revoked between the start-up lookup and the renewal: every later call is a 403.
    let mut h = Harness::new(
        |t| {
            if t.is_zero() {
                Ok(service(100_000))
            } else {
                Err(VaultError::PermissionDenied {
                    message: "permission denied".into(),
                })
            }
        },
        |_| {
            Err(VaultError::PermissionDenied {
                message: "permission denied".into(),
            })
        },
    );
    h.run_until(secs(50_000));
    assert_eq!(h.status(), TokenStatus::Invalid);
    assert_eq!(h.vault.calls("renew").len(), 1);
    h.run_until(secs(50_000) + secs(3600));
    let lookups = h.vault.calls("lookup");
    // one at start, then at most one every 5 minutes once invalid
    for pair in lookups[1..].windows(2) {
        assert!(pair[1] - pair[0] >= secs(300));
    }
    let in_last_hour = lookups.iter().filter(|t| **t >= secs(50_000)).count();
    assert!((11..=13).contains(&in_last_hour), "{in_last_hour}");
}

#[test]
fn an_invalid_token_recovers_when_the_policy_is_fixed() {
    let mut h = Harness::new(
        |t| {
            if t < secs(1000) {
                Err(VaultError::PermissionDenied {
                    message: "permission denied".into(),
                })
            } else {
                Ok(service(3600))
            }
        },
        |_| Ok(granted(3600)),
    );
    h.run_until(secs(100));
    assert_eq!(h.status(), TokenStatus::Invalid);
    h.run_until(secs(1400));
    assert_eq!(h.status(), TokenStatus::Renewing);
}

#[test]
fn renew_refused_as_not_renewable_stops_without_a_failure() {
    let mut h = Harness::new(
        |_| Ok(service(600)),
        |_| {
            Err(VaultError::NotRenewable {
                message: "lease is not renewable".into(),
            })
        },
    );
    h.run_until(secs(500));
    assert_eq!(h.status(), TokenStatus::NotRenewable);
    assert_eq!(h.outcome(Outcome::NotRenewable), 1);
    assert_eq!(h.outcome(Outcome::Failure), 0);
    assert_eq!(h.vault.calls("renew").len(), 1);
}

#[test]
fn token_not_found_is_invalid() {
    let mut h = Harness::new(|_| Ok(service(600)), |_| Err(VaultError::TokenNotFound));
    h.run_until(secs(400));
    assert_eq!(h.status(), TokenStatus::Invalid);
    assert_eq!(h.reason(Reason::BadRequest), 1);
}

#[test]
fn vault_down_at_start_is_unknown_and_retried() {
    let mut h = Harness::new(
        |t| {
            if t < secs(30) {
                Err(VaultError::Network("refused".into()))
            } else {
                Ok(service(600))
            }
        },
        |_| Ok(granted(600)),
    );
    h.run_until(secs(5));
    assert_eq!(h.status(), TokenStatus::Unknown);
    assert!(h.reason(Reason::Network) >= 2);
    assert!(
        h.state.snapshot().next_renewal.is_some(),
        "a retry is scheduled"
    );
    h.run_until(secs(100));
    assert_eq!(h.status(), TokenStatus::Renewing);
    assert_eq!(
        h.outcome(Outcome::Success),
        0,
        "a start-up lookup is no renewal"
    );
}

#[test]
fn rate_limit_retry_after_is_respected_within_the_time_left() {
    let mut h = Harness::new(
        |_| Ok(service(100_000)),
        |_| {
            Err(VaultError::RateLimited {
                retry_after: Some(30),
            })
        },
    );
    h.run_until(secs(50_000) + secs(100));
    let renewals = h.vault.calls("renew");
    assert!(
        renewals.windows(2).all(|p| p[1] - p[0] >= secs(30)),
        "{renewals:?}"
    );
}

#[test]
fn a_wall_clock_jump_moves_no_renewal() {
    // Jumps a day forward, a day back, and far back, each after the lookup has
    // scheduled the renewal: it still happens 40-50 % of the lease after the lookup on
    // the monotonic clock, and so does every later one.
    for jump in [86_400.0, -86_400.0, -1_000_000.0] {
        let mut h = Harness::new(|_| Ok(service(1000)), |_| Ok(granted(1000)));
        h.run_until(secs(10));
        assert_eq!(h.vault.calls("lookup"), [Duration::ZERO]);
        let announced = h.state.snapshot().next_renewal.unwrap();
        h.clock.jump_wall_clock(jump);
        h.run_until(secs(1400));
        let renewals = h.vault.calls("renew");
        assert!(renewals.len() >= 2, "jump {jump}: {renewals:?}");
        assert!(
            renewals[0] >= secs(400) && renewals[0] <= secs(500),
            "jump {jump}: first renewal at {:?}",
            renewals[0]
        );
        for pair in renewals.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(gap >= secs(400) && gap <= secs(500), "jump {jump}: {gap:?}");
        }
        // Timestamps stamped before the jump keep the old wall clock; those stamped after
        // it use the new one: the next renewal is announced 400-500 s ahead of it.
        let announced_after = h.state.snapshot().next_renewal.unwrap();
        let ahead = announced_after - h.clock.unix();
        assert!((0.0..=500.0).contains(&ahead), "jump {jump}: {ahead}");
        assert!(
            (announced_after - announced - jump).abs() > 1.0,
            "re-announced after the jump"
        );
    }
}

#[test]
fn a_wall_clock_jump_during_backoff_keeps_the_retry_spacing() {
    // The renewal (due at 400-500 s) and the next four retries fail; the wall clock jumps
    // back an hour at t=501 s, in the middle of that backoff: retries stay 1 s, 2 s, 4 s,
    // 8 s (+ up to 25 % jitter) apart on the monotonic clock, and the fifth one renews.
    let mut calls = 0;
    let mut h = Harness::new(
        |_| Ok(service(1000)),
        move |_| {
            calls += 1;
            if calls <= 5 {
                Err(VaultError::Network("connection refused".into()))
            } else {
                Ok(granted(1000))
            }
        },
    );
    h.run_until(secs(501));
    assert!(!h.vault.calls("renew").is_empty());
    h.clock.jump_wall_clock(-3600.0);
    h.run_until(secs(600));
    let renewals = h.vault.calls("renew");
    assert_eq!(renewals.len(), 6, "{renewals:?}");
    let gaps: Vec<f64> = renewals
        .windows(2)
        .map(|p| (p[1] - p[0]).as_secs_f64())
        .collect();
    for (i, gap) in gaps.iter().enumerate().take(4) {
        let base = f64::from(1u32 << i);
        assert!(
            *gap >= base && *gap <= base * 1.25 + 1e-9,
            "retry {i}: {gap} s ({gaps:?})"
        );
    }
    assert_eq!(h.outcome(Outcome::Success), 1);
    assert_eq!(h.reason(Reason::Network), 5);
}

#[test]
fn a_new_token_in_the_source_is_looked_up_and_counted_afresh() {
    let dir = std::env::temp_dir().join(format!("vte-worker-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("token");
    std::fs::write(&file, "hvs.ONE\n").unwrap();
    let clock = Arc::new(FakeClock::default());
    let vault = ScriptedVault::new(
        clock.clone(),
        |_| {
            Ok(Lookup {
                renewable: Some(false),
                ..service(600)
            })
        },
        |_| panic!("must not renew"),
    );
    let state = Arc::new(TokenState::new("file"));
    let mut worker = Worker::new(
        vault.clone(),
        TokenSource::File(file.clone()),
        state.clone(),
        clock.clone(),
        RenewSettings::default(),
    );
    worker.step();
    worker.step();
    assert_eq!(state.snapshot().renewals[Outcome::NotRenewable as usize], 1);
    worker.on_source_changed();
    worker.step();
    assert_eq!(vault.calls("lookup").len(), 1, "same token: nothing to do");
    std::fs::write(&file, "hvs.TWO").unwrap();
    worker.on_source_changed();
    worker.step();
    assert_eq!(vault.calls("lookup").len(), 2);
    assert_eq!(state.snapshot().renewals[Outcome::NotRenewable as usize], 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_missing_token_file_before_any_token_is_a_token_source_failure() {
    let clock = Arc::new(FakeClock::default());
    let vault = ScriptedVault::new(clock.clone(), |_| Ok(service(600)), |_| Ok(granted(600)));
    let state = Arc::new(TokenState::new("file"));
    let path = std::env::temp_dir().join("vte-definitely-missing/token");
    let mut worker = Worker::new(
        vault.clone(),
        TokenSource::File(path),
        state.clone(),
        clock.clone(),
        RenewSettings::default(),
    );
    worker.step();
    let s = state.snapshot();
    assert_eq!(s.failures[Reason::TokenSource.index()], 1);
    assert_eq!(s.renewals[Outcome::Failure as usize], 1);
    assert_eq!(s.status, TokenStatus::Unknown);
    assert!(vault.calls("lookup").is_empty());
}

fn denied() -> VaultError {
    VaultError::PermissionDenied {
        message: "permission denied".into(),
    }
}

impl Harness {
    fn consecutive_failures(&self) -> u64 {
        self.state.snapshot().consecutive_failures
    }
}

#[test]
fn consecutive_failures_count_each_failed_attempt_until_a_renewal_succeeds() {
    // Renewals fail from the first one (at 40-50 % of 100 000 s) until t=60 000 s.
    let mut h = Harness::new(
        |_| Ok(service(100_000)),
        |t| {
            if t < secs(60_000) {
                Err(VaultError::Sealed)
            } else {
                Ok(granted(100_000))
            }
        },
    );
    h.run_until(secs(59_000));
    let failed = h.vault.calls("renew").len() as u64;
    assert!(failed >= 5, "{failed}");
    assert_eq!(h.consecutive_failures(), failed, "one per failed attempt");
    h.run_until(secs(61_000));
    assert_eq!(h.outcome(Outcome::Success), 1);
    assert_eq!(h.consecutive_failures(), 0, "reset by the renewal");
    let failed = h.vault.calls("renew").len() as u64 - 1;
    assert_eq!(
        h.outcome(Outcome::Failure),
        failed,
        "the counter keeps them"
    );
}

#[test]
fn a_transient_failure_is_forgotten_at_the_next_renewal() {
    let mut calls = 0;
    let mut h = Harness::new(
        |_| Ok(service(1000)),
        move |_| {
            calls += 1;
            if calls == 1 {
                Err(VaultError::Network("connection reset".into()))
            } else {
                Ok(granted(1000))
            }
        },
    );
    // Second by second up to the failed renewal: its retry comes at least 1 s later.
    for t in 390..=500 {
        h.run_until(secs(t));
        if !h.vault.calls("renew").is_empty() {
            break;
        }
    }
    assert_eq!(h.vault.calls("renew").len(), 1);
    assert_eq!(h.consecutive_failures(), 1);
    h.run_until(secs(510));
    assert_eq!(h.vault.calls("renew").len(), 2);
    assert_eq!(h.consecutive_failures(), 0);
}

#[test]
fn a_recheck_of_a_token_whose_policy_denies_renew_self_does_not_reset_the_failures() {
    // lookup-self is allowed, renew-self is not: every re-check looks the token up
    // (success) and renews at once (403 again).
    let mut h = Harness::with_settings(
        RenewSettings {
            invalid_recheck: secs(300),
            ..RenewSettings::default()
        },
        |_| Ok(service(3600)),
        |_| Err(denied()),
    );
    h.run_until(secs(1801));
    assert_eq!(h.status(), TokenStatus::Invalid);
    assert_eq!(h.consecutive_failures(), 1);
    h.run_until(secs(1801 + 3 * 300 + 10));
    let renewals = h.vault.calls("renew");
    let lookups = h.vault.calls("lookup");
    assert_eq!(renewals.len(), 4, "one renewal per re-check: {renewals:?}");
    assert_eq!(lookups.len(), 4, "{lookups:?}");
    for (lookup, renewal) in lookups[1..].iter().zip(&renewals[1..]) {
        assert_eq!(lookup, renewal, "the re-check renews at once");
    }
    assert_eq!(
        h.consecutive_failures(),
        4,
        "successful re-check lookups reset nothing"
    );
    assert_eq!(h.status(), TokenStatus::Invalid);
}

#[test]
fn a_recheck_that_renews_resets_the_failures() {
    let mut h = Harness::new(
        |t| {
            if t < secs(1000) {
                Err(denied())
            } else {
                Ok(service(3600))
            }
        },
        |_| Ok(granted(3600)),
    );
    h.run_until(secs(1000));
    assert_eq!(h.consecutive_failures(), 4, "at 0, 300, 600 and 900 s");
    h.run_until(secs(1201));
    assert_eq!(h.status(), TokenStatus::Renewing);
    assert_eq!(h.outcome(Outcome::Success), 1, "renewed at the re-check");
    assert_eq!(h.consecutive_failures(), 0);
}

/// A worker on a token file in a fresh directory; `valid` says whether Vault accepts
/// the token now in the file.
fn file_worker(
    tag: &str,
    valid: Arc<AtomicBool>,
    settings: RenewSettings,
) -> (
    Arc<FakeClock>,
    Arc<ScriptedVault>,
    Arc<TokenState>,
    Worker,
    std::path::PathBuf,
) {
    let dir = std::env::temp_dir().join(format!("vte-worker-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let clock = Arc::new(FakeClock::default());
    let vault = ScriptedVault::new(
        clock.clone(),
        move |_| {
            if valid.load(Ordering::Relaxed) {
                Ok(service(3600))
            } else {
                Err(denied())
            }
        },
        |_| Ok(granted(3600)),
    );
    let state = Arc::new(TokenState::new(tag));
    let worker = Worker::new(
        vault.clone(),
        TokenSource::File(dir.join("token")),
        state.clone(),
        clock.clone(),
        settings,
    );
    (clock, vault, state, worker, dir)
}

#[test]
fn the_first_lookup_of_a_new_token_value_resets_the_failures() {
    let valid = Arc::new(AtomicBool::new(false));
    let (clock, vault, state, mut worker, dir) =
        file_worker("rotated", valid.clone(), RenewSettings::default());
    std::fs::write(dir.join("token"), "hvs.REVOKED").unwrap();
    for t in [0, 300, 600] {
        clock.set(secs(t));
        worker.step();
        worker.step();
    }
    assert_eq!(state.snapshot().status, TokenStatus::Invalid);
    assert_eq!(state.snapshot().consecutive_failures, 3);
    // A new token is written: looked up (not renewed) at once, and the streak is over.
    clock.set(secs(700));
    valid.store(true, Ordering::Relaxed);
    std::fs::write(dir.join("token"), "hvs.NEW").unwrap();
    worker.on_source_changed();
    worker.step();
    let s = state.snapshot();
    assert_eq!(s.status, TokenStatus::Renewing);
    assert_eq!(s.renewals[Outcome::Success as usize], 0, "no renewal yet");
    assert_eq!(s.consecutive_failures, 0);
    assert_eq!(vault.calls("lookup").len(), 4);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_late_token_file_counts_failures_until_its_token_is_looked_up() {
    let valid = Arc::new(AtomicBool::new(true));
    let (clock, _vault, state, mut worker, dir) =
        file_worker("late", valid, RenewSettings::default());
    let mut attempts = 0;
    while clock.monotonic() < secs(120) {
        let next = worker.step().unwrap();
        attempts += 1;
        clock.set(next);
    }
    let s = state.snapshot();
    assert_eq!(s.status, TokenStatus::Unknown);
    assert_eq!(
        s.consecutive_failures,
        s.failures[Reason::TokenSource.index()]
    );
    assert!(s.consecutive_failures >= 3 && s.consecutive_failures <= attempts);
    std::fs::write(dir.join("token"), "hvs.LATE\n").unwrap();
    worker.on_source_changed();
    worker.step();
    assert_eq!(state.snapshot().consecutive_failures, 0);
    assert_eq!(state.snapshot().status, TokenStatus::Renewing);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn max_expiry_comes_from_explicit_max_ttl_or_the_configured_max_ttl_the_sooner_winning() {
    let issued = UNIX_BASE - 100.0;
    let cases = [
        (Some(7200), None, None, Some(issued + 7200.0)),
        (None, Some(768 * 3600), None, Some(issued + 768.0 * 3600.0)),
        (Some(7200), Some(3600), None, Some(issued + 3600.0)),
        (Some(7200), Some(86_400), None, Some(issued + 7200.0)),
        // A periodic token escapes the mount's max TTL, not its explicit one.
        (None, Some(3600), Some(600), None),
        (Some(7200), Some(3600), Some(600), Some(issued + 7200.0)),
        (None, None, None, None),
    ];
    for (explicit, configured, period, expected) in cases {
        let settings = RenewSettings {
            max_ttl: configured.map(secs),
            ..RenewSettings::default()
        };
        let mut h = Harness::with_settings(
            settings,
            move |_| {
                Ok(Lookup {
                    explicit_max_ttl: explicit,
                    period,
                    ..service(600)
                })
            },
            |_| Ok(granted(600)),
        );
        h.run_until(secs(1));
        let case = format!("explicit {explicit:?}, max_ttl {configured:?}, period {period:?}");
        assert_eq!(h.state.snapshot().max_expiry, expected, "{case}");
        h.run_until(secs(2000));
        assert_eq!(h.status(), TokenStatus::Renewing, "{case}");
        assert_eq!(h.state.snapshot().max_expiry, expected, "{case}: kept");
    }
}

#[test]
fn max_expiry_is_unknown_without_an_issue_time() {
    let settings = RenewSettings {
        max_ttl: Some(secs(3600)),
        ..RenewSettings::default()
    };
    let mut h = Harness::with_settings(
        settings,
        |_| {
            Ok(Lookup {
                issue_time: None,
                ..service(600)
            })
        },
        |_| Ok(granted(600)),
    );
    h.run_until(secs(1));
    assert_eq!(h.state.snapshot().max_expiry, None);
}

#[test]
fn a_capped_token_dies_at_its_expiry_so_that_is_its_max_expiry() {
    let mut leases = VecDeque::from([3600, 1000]);
    let mut h = Harness::new(
        |_| Ok(service(3600)),
        move |_| Ok(granted(leases.pop_front().unwrap_or(1000))),
    );
    h.run_until(secs(1));
    assert_eq!(
        h.state.snapshot().max_expiry,
        None,
        "unknown while renewing"
    );
    h.run_until(secs(3700));
    let s = h.state.snapshot();
    assert!(s.capped);
    assert!(s.max_expiry.is_some());
    assert_eq!(s.max_expiry, s.expiry);
}

#[test]
fn a_new_token_forgets_the_max_expiry_of_the_old_one() {
    let valid = Arc::new(AtomicBool::new(true));
    let settings = RenewSettings {
        max_ttl: Some(secs(3600)),
        ..RenewSettings::default()
    };
    let (_clock, _vault, state, mut worker, dir) = file_worker("maxnew", valid.clone(), settings);
    std::fs::write(dir.join("token"), "hvs.ONE").unwrap();
    worker.step();
    worker.step();
    assert!(state.snapshot().max_expiry.is_some());
    valid.store(false, Ordering::Relaxed);
    std::fs::write(dir.join("token"), "hvs.TWO").unwrap();
    worker.on_source_changed();
    worker.step();
    assert_eq!(state.snapshot().status, TokenStatus::Invalid);
    assert_eq!(state.snapshot().max_expiry, None);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_use_limited_token_is_never_renewed_and_counted_not_renewable_once() {
    let mut h = Harness::new(
        |_| {
            Ok(Lookup {
                num_uses: 5,
                ..service(600)
            })
        },
        |_| panic!("a renewal would spend one of the application's uses"),
    );
    h.run_until(secs(400));
    assert_eq!(h.status(), TokenStatus::NotRenewable);
    assert_eq!(h.outcome(Outcome::NotRenewable), 1);
    assert_eq!(h.outcome(Outcome::Failure), 0);
    let s = h.state.snapshot();
    assert!(!s.renewable && !s.renewing);
    assert_eq!(h.vault.calls("lookup").len(), 1, "no more uses spent");
    h.run_until(secs(700));
    assert_eq!(h.status(), TokenStatus::Expired);
    assert_eq!(h.outcome(Outcome::NotRenewable), 1);
}

#[test]
fn a_stopped_worker_ends_at_once_even_in_a_long_sleep() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let api = ScriptedVault::new(
        Arc::new(FakeClock::default()),
        |_| Ok(service(3600)),
        |_| Ok(granted(3600)),
    );
    let state = Arc::new(TokenState::new("prod"));
    let worker = Worker::new(
        api.clone(),
        TokenSource::Value(Token::new("hvs.X").unwrap()),
        state.clone(),
        clock,
        RenewSettings::default(),
    );
    let stopper = worker.stopper();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let (idle_tx, idle_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        worker.run(Duration::from_secs(10), || {
            let _ = idle_tx.send(());
        });
        done_tx.send(()).unwrap();
    });
    // Looked up, now asleep for half an hour: the long sleep is announced first.
    idle_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("before_long_sleep runs before the long sleep");
    assert_eq!(state.status(), TokenStatus::Renewing);
    let asked = std::time::Instant::now();
    stopper.stop();
    done_rx
        .recv_timeout(Duration::from_secs(2))
        .expect("the worker ends when stopped");
    assert!(asked.elapsed() < Duration::from_secs(1));
    assert_eq!(api.calls("renew").len(), 0, "no renewal after the stop");
}
