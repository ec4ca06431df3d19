//! The renewal worker: one std thread per configured token keeps it alive and writes what
//! it learns into the token's [`TokenState`].
//!
//! [`Worker::step`] does one thing (read the token, look it up, renew it, or wait) and says
//! how long to sleep; [`Worker::run`] loops it on a real clock until its [`Stopper`] is
//! used (the token left the configuration). Tests drive `step` on a
//! fake clock, so hours of lease run in microseconds. Sleeping uses the monotonic clock,
//! so a wall-clock jump moves no renewal; the wall clock only stamps exported timestamps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use log::{debug, error, info, warn};

use crate::client::VaultApi;
use crate::clock::Clock;
use crate::error::{Reason, VaultError};
use crate::parse::Lookup;
use crate::schedule::{renewal_delay, retry_delay, Jitter};
use crate::secret::Token;
use crate::source::{SourceError, TokenSource};
use crate::state::{Outcome, TokenInfo, TokenState, TokenStatus};
use crate::watch::Wakeup;

/// The state a lookup puts a token in, before any renewal: what the worker does with it
/// and what `vault-token-exporter check` reports.
pub fn status_after_lookup(lookup: &Lookup) -> TokenStatus {
    let renewable = says_renewable(lookup);
    if lookup.never_expires() {
        TokenStatus::NeverExpires
    } else if lookup.ttl == 0 {
        TokenStatus::Expired
    } else if !renewable || lookup.num_uses != 0 {
        TokenStatus::NotRenewable
    } else {
        TokenStatus::Renewing
    }
}

/// Whether Vault calls the token renewable. The key is absent on old Vaults: a token that
/// expires is then assumed renewable, and Vault's answer to the renewal settles it.
fn says_renewable(lookup: &Lookup) -> bool {
    lookup.renewable.unwrap_or(lookup.ttl > 0) && lookup.token_type != "batch"
}

/// When the token dies whatever renewals do (Unix seconds): its explicit max TTL, or the
/// configured `max_ttl` (which a periodic token escapes), both from its issue time; the
/// sooner wins. `None` when neither is known.
pub fn max_expiry(lookup: &Lookup, configured_max_ttl: Option<Duration>) -> Option<f64> {
    let configured = configured_max_ttl.filter(|_| lookup.period.is_none());
    let max_ttl = match (lookup.explicit_max_ttl.map(Duration::from_secs), configured) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    lookup
        .issue_time
        .zip(max_ttl)
        .map(|(issued, max)| issued + max.as_secs_f64())
}

/// Tunables of one worker; the defaults are the contract's.
#[derive(Clone, Debug, PartialEq)]
pub struct RenewSettings {
    /// Ceiling of the wait between retries (`max_backoff`, default 5 min).
    pub max_backoff: Duration,
    /// How often an invalid token is looked up again, to notice a fixed policy (default 5 min).
    pub invalid_recheck: Duration,
    /// `increment` to send, in seconds; never less than the lease last granted. Default none.
    pub increment: Option<u64>,
    /// The mount's or system's max TTL as the operator knows it (`max_ttl`; Vault's default
    /// is 768h): with the lookup's `issue_time`, when the token dies whatever renewals do.
    pub max_ttl: Option<Duration>,
}

impl Default for RenewSettings {
    fn default() -> Self {
        RenewSettings {
            max_backoff: Duration::from_secs(300),
            invalid_recheck: Duration::from_secs(300),
            increment: None,
            max_ttl: None,
        }
    }
}

/// What the worker does next.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Phase {
    /// Get a token from the source (none read yet).
    ReadSource,
    /// Look the current token up.
    Lookup,
    /// Renew at this monotonic time.
    Renew,
    /// Nothing to do until the token source changes, or until `recheck` (invalid tokens).
    Stopped,
}

/// Stops one worker: sets its flag and rings its doorbell, so a sleeping worker ends at
/// once and a worker inside a Vault call ends when the call returns (its timeout at most).
#[derive(Clone, Debug)]
pub struct Stopper {
    stopped: Arc<AtomicBool>,
    wakeup: Arc<Wakeup>,
}

impl Stopper {
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.wakeup.wake();
    }
}

/// Keeps one token alive.
pub struct Worker {
    api: Arc<dyn VaultApi>,
    source: TokenSource,
    state: Arc<TokenState>,
    clock: Arc<dyn Clock>,
    wakeup: Arc<Wakeup>,
    stopped: Arc<AtomicBool>,
    settings: RenewSettings,
    jitter: Jitter,
    phase: Phase,
    /// When the current phase acts (monotonic); `None`: only when woken.
    due: Option<Duration>,
    token: Option<Token>,
    /// Monotonic time the token expires, when known.
    expires: Option<Duration>,
    /// The lease before the latest: a renewal granting less means the max TTL is reached.
    last_lease: Option<u64>,
    failures_in_a_row: u32,
    /// No successful lookup of this token value yet: the first one proves it good.
    fresh: bool,
    not_renewable_counted: bool,
    missing_file_warned: bool,
    expiry_logged: bool,
}

impl Worker {
    pub fn new(
        api: Arc<dyn VaultApi>,
        source: TokenSource,
        state: Arc<TokenState>,
        clock: Arc<dyn Clock>,
        settings: RenewSettings,
    ) -> Worker {
        let seed = state.vault.bytes().fold(clock.unix().to_bits(), |h, b| {
            h.rotate_left(5) ^ u64::from(b)
        });
        Worker {
            api,
            source,
            state,
            clock,
            wakeup: Arc::new(Wakeup::default()),
            stopped: Arc::new(AtomicBool::new(false)),
            settings,
            jitter: Jitter::new(seed),
            phase: Phase::ReadSource,
            due: Some(Duration::ZERO),
            token: None,
            expires: None,
            last_lease: None,
            failures_in_a_row: 0,
            fresh: true,
            not_renewable_counted: false,
            missing_file_warned: false,
            expiry_logged: false,
        }
    }

    /// The doorbell the file watcher rings when this worker's token file may have changed.
    pub fn wakeup(&self) -> Arc<Wakeup> {
        self.wakeup.clone()
    }

    /// The handle that ends [`Worker::run`].
    pub fn stopper(&self) -> Stopper {
        Stopper {
            stopped: self.stopped.clone(),
            wakeup: self.wakeup.clone(),
        }
    }

    /// Runs on this thread until stopped. `before_long_sleep` runs before each sleep of
    /// `long` or more (or without end): the shell gives the thread's idle stack pages back
    /// there, not before short retry waits, where the next attempt would touch them again.
    pub fn run(mut self, long: Duration, mut before_long_sleep: impl FnMut()) {
        let stopped = self.stopped.clone();
        loop {
            let sleep = self.step();
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            if sleep.is_none_or(|until| until >= self.clock.monotonic() + long) {
                before_long_sleep();
            }
            let woken = self.clock.sleep_until(sleep, &self.wakeup);
            if stopped.load(Ordering::Relaxed) {
                return;
            }
            if woken {
                self.on_source_changed();
            }
        }
    }

    /// Acts if the current phase is due, and returns the monotonic time to sleep until
    /// (`None`: until woken).
    pub fn step(&mut self) -> Option<Duration> {
        let now = self.clock.monotonic();
        if self.due.is_some_and(|due| due <= now) {
            match self.phase {
                Phase::ReadSource => self.read_source(),
                Phase::Lookup => self.lookup(),
                Phase::Renew => self.renew(),
                Phase::Stopped => self.schedule(Phase::Lookup, Duration::ZERO),
            }
            if self.due == Some(Duration::ZERO) {
                return Some(now);
            }
        }
        self.note_expiry();
        match (self.due, self.unnoticed_expiry()) {
            (Some(due), Some(expiry)) => Some(due.min(expiry)),
            (due, expiry) => due.or(expiry),
        }
    }

    /// The token file may have changed: pick up a new token at once.
    pub fn on_source_changed(&mut self) {
        match self.source.read() {
            Ok(token) if Some(&token) != self.token.as_ref() => {
                info!(
                    "vault token changed in its source, looking it up vault={}",
                    crate::logfmt::Value(&self.state.vault)
                );
                self.adopt(token);
            }
            Ok(_) => {
                if self.missing_file_warned {
                    info!(
                        "token file is back vault={}",
                        crate::logfmt::Value(&self.state.vault)
                    );
                    self.missing_file_warned = false;
                }
            }
            Err(_) => {}
        }
    }

    fn now(&self) -> Duration {
        self.clock.monotonic()
    }

    fn schedule(&mut self, phase: Phase, after: Duration) {
        self.phase = phase;
        if after.is_zero() {
            // Due at once: the next step acts before anyone could read an announcement.
            self.due = Some(Duration::ZERO);
            return;
        }
        self.due = Some(self.now() + after);
        self.state
            .next_renewal
            .set(self.clock.unix() + after.as_secs_f64());
    }

    fn stop(&mut self, status: TokenStatus, recheck: Option<Duration>) {
        self.state.set_status(status);
        self.phase = Phase::Stopped;
        self.due = recheck.map(|r| self.now() + r);
        self.state.next_renewal.clear();
    }

    /// Starts over with a new token value.
    fn adopt(&mut self, token: Token) {
        self.token = Some(token);
        self.expires = None;
        self.last_lease = None;
        self.failures_in_a_row = 0;
        self.fresh = true;
        self.not_renewable_counted = false;
        self.missing_file_warned = false;
        self.expiry_logged = false;
        self.state.expiry.clear();
        self.state.max_expiry.clear();
        self.state.set_capped(false);
        self.state.set_renewable(false);
        self.state.set_status(TokenStatus::Unknown);
        self.schedule(Phase::Lookup, Duration::ZERO);
    }

    fn time_left(&self) -> Option<Duration> {
        self.expires.map(|e| e.saturating_sub(self.now()))
    }

    fn unnoticed_expiry(&self) -> Option<Duration> {
        self.expires.filter(|_| !self.expiry_logged)
    }

    /// Once the expiry passes, say so once: only a new token helps now.
    fn note_expiry(&mut self) {
        if self.expiry_logged || self.time_left().is_none_or(|left| !left.is_zero()) {
            return;
        }
        self.expiry_logged = true;
        error!(
            "vault token expired vault={}; rotate the token",
            crate::logfmt::Value(&self.state.vault)
        );
        if self.phase != Phase::Stopped || self.due.is_some() {
            self.stop(TokenStatus::Expired, None);
        } else {
            self.state.set_status(TokenStatus::Expired);
        }
    }

    fn read_source(&mut self) {
        match self.source.read() {
            Ok(token) => self.adopt(token),
            Err(e) => self.source_failed(&e),
        }
    }

    fn source_failed(&mut self, e: &SourceError) {
        self.state.count_failure(Reason::TokenSource);
        self.failures_in_a_row += 1;
        let delay = self.retry_delay(None);
        error!(
            "vault token renewal failed vault={} reason={}: {e}; retrying in {}",
            crate::logfmt::Value(&self.state.vault),
            Reason::TokenSource.as_str(),
            seconds(delay)
        );
        self.schedule(Phase::ReadSource, delay);
    }

    fn retry_delay(&mut self, time_left: Option<Duration>) -> Duration {
        retry_delay(
            self.failures_in_a_row,
            time_left,
            self.settings.max_backoff,
            self.jitter.next_unit(),
        )
    }

    /// The token to use for an attempt: the file's if it has changed, else the one in memory.
    fn current_token(&mut self) -> Option<Token> {
        match self.source.read() {
            Ok(token) => {
                if self.token.as_ref() != Some(&token) {
                    info!(
                        "vault token changed in its source, looking it up vault={}",
                        crate::logfmt::Value(&self.state.vault)
                    );
                    self.adopt(token);
                    return None;
                }
                self.missing_file_warned = false;
            }
            Err(e) => {
                if !self.missing_file_warned {
                    self.missing_file_warned = true;
                    warn!(
                        "{e}; renewing with the token in memory until it is back vault={}",
                        crate::logfmt::Value(&self.state.vault)
                    );
                }
            }
        }
        self.token.clone()
    }

    fn lookup(&mut self) {
        let Some(token) = self.token.clone() else {
            return self.schedule(Phase::ReadSource, Duration::ZERO);
        };
        match self.api.lookup_self(&token) {
            Ok(lookup) => self.looked_up(&lookup),
            Err(e) => self.failed(Phase::Lookup, e),
        }
    }

    fn looked_up(&mut self, lookup: &Lookup) {
        self.failures_in_a_row = 0;
        // The first lookup of a new token value proves it good; a later one (the re-check
        // of an invalid token) does not: only a renewal does then.
        if self.fresh {
            self.fresh = false;
            self.state.reset_consecutive_failures();
        }
        let mut policies = lookup.policies.clone();
        policies.sort();
        self.state.set_info(TokenInfo {
            display_name: lookup.display_name.clone(),
            token_type: lookup.token_type.clone(),
            auth_path: lookup.path.clone(),
            policies: policies.join(","),
        });
        let status = status_after_lookup(lookup);
        self.state.set_renewable(says_renewable(lookup));
        if status == TokenStatus::NeverExpires {
            self.expires = None;
            self.state.expiry.clear();
            info!(
                "vault token never expires, nothing to renew vault={}",
                crate::logfmt::Value(&self.state.vault)
            );
            return self.stop(TokenStatus::NeverExpires, None);
        }
        self.set_expiry(lookup.ttl);
        match max_expiry(lookup, self.settings.max_ttl) {
            Some(at) => self.state.max_expiry.set(at),
            None => self.state.max_expiry.clear(),
        }
        match status {
            TokenStatus::Expired => return self.note_expiry(),
            // Every renew-self would spend one of the application's uses, and the last one
            // revokes the token: leave a use-limited token alone.
            TokenStatus::NotRenewable if lookup.num_uses != 0 => {
                return self.not_renewable(
                    "the token is use-limited (num_uses > 0) and each renewal would spend one of its uses",
                )
            }
            TokenStatus::NotRenewable => {
                return self.not_renewable("Vault says the token is not renewable")
            }
            _ => {}
        }
        // The re-check of an invalid token renews at once: only a renewal tells a fixed
        // policy from one that still denies renew-self.
        let recheck = self.state.status() == TokenStatus::Invalid;
        self.state.set_status(TokenStatus::Renewing);
        self.last_lease = Some(lookup.ttl);
        let delay = if recheck {
            Duration::ZERO
        } else {
            renewal_delay(Duration::from_secs(lookup.ttl), self.jitter.next_unit())
        };
        debug!(
            "vault token looked up vault={} ttl={}s, renewing in {}",
            crate::logfmt::Value(&self.state.vault),
            lookup.ttl,
            seconds(delay)
        );
        self.schedule(Phase::Renew, delay);
    }

    fn set_expiry(&mut self, ttl: u64) {
        let ttl = Duration::from_secs(ttl);
        self.expires = Some(self.now() + ttl);
        self.expiry_logged = false;
        self.state.expiry.set(self.clock.unix() + ttl.as_secs_f64());
    }

    fn not_renewable(&mut self, why: &str) {
        self.state.set_renewable(false);
        // State first, counter second: a scrape that sees the count sees the state too.
        self.stop(TokenStatus::NotRenewable, None);
        if !self.not_renewable_counted {
            self.not_renewable_counted = true;
            self.state.count(Outcome::NotRenewable);
            warn!(
                "vault token is not renewable vault={}: {why}; it dies at its expiry, rotate the token",
                crate::logfmt::Value(&self.state.vault)
            );
        }
    }

    fn renew(&mut self) {
        let Some(token) = self.current_token() else {
            return;
        };
        let increment = self
            .settings
            .increment
            .map(|i| i.max(self.last_lease.unwrap_or(0)));
        let attempt = self.api.renew_self(&token, increment);
        if let Some(latency) = attempt.latency {
            self.state.observe_duration(latency.as_secs_f64());
        }
        let renewal = match attempt.result {
            Ok(renewal) => renewal,
            Err(e) => return self.failed(Phase::Renew, e),
        };
        self.failures_in_a_row = 0;
        self.state.reset_consecutive_failures();
        self.state.count(Outcome::Success);
        self.state.last_renewal.set(self.clock.unix());
        self.set_expiry(renewal.lease_duration);
        let shorter = self
            .last_lease
            .is_some_and(|last| renewal.lease_duration < last);
        self.last_lease = Some(renewal.lease_duration);
        if !renewal.renewable {
            return self.not_renewable("the renewal says the token is no longer renewable");
        }
        if renewal.capped_by_max_ttl() || shorter || renewal.lease_duration == 0 {
            self.state.set_capped(true);
            // Capped: the expiry is the death, however the max TTL was guessed before.
            if let Some(expiry) = self.state.expiry.get() {
                let known = self.state.max_expiry.get().unwrap_or(f64::INFINITY);
                self.state.max_expiry.set(known.min(expiry));
            }
            warn!(
                "vault token reached its max TTL vault={}: renewals no longer extend it and it expires in {}s; rotate the token",
                crate::logfmt::Value(&self.state.vault), renewal.lease_duration
            );
            return self.stop(TokenStatus::Capped, None);
        }
        let delay = renewal_delay(
            Duration::from_secs(renewal.lease_duration),
            self.jitter.next_unit(),
        );
        debug!(
            "vault token renewed vault={} lease={}s, next in {}",
            crate::logfmt::Value(&self.state.vault),
            renewal.lease_duration,
            seconds(delay)
        );
        self.schedule(Phase::Renew, delay);
    }

    /// A failed lookup or renewal: count it, then retry, stop, or give up on this token.
    fn failed(&mut self, phase: Phase, e: VaultError) {
        if let VaultError::NotRenewable { message } = &e {
            if phase == Phase::Renew {
                return self.not_renewable(message);
            }
        }
        let reason = e.reason();
        let state = self.state.clone();
        let vault = crate::logfmt::Value(&state.vault);
        // State first, counter second: a scrape that sees the count sees the state too.
        if e.is_fatal_for_token() {
            // A later lookup that succeeds is a re-check, no proof the token is good.
            self.fresh = false;
            self.stop(TokenStatus::Invalid, Some(self.settings.invalid_recheck));
            self.state.count_failure(reason);
            let verdict = match (e.denied_by_policy(), phase) {
                // The token lives; a new one with the same policy would fail the same way.
                (true, Phase::Renew) => "the token is valid but its policy lacks the `update` capability on auth/token/renew-self; grant it",
                (true, _) => "the token is valid but its policy lacks the `read` capability on auth/token/lookup-self; grant it",
                (false, _) => "the token is invalid, rotate the token",
            };
            error!(
                "vault token renewal failed vault={vault} reason={}: {e}; {verdict}",
                reason.as_str()
            );
            return;
        }
        self.failures_in_a_row += 1;
        let left = self.time_left();
        if left.is_some_and(|l| l.is_zero()) {
            self.expiry_logged = true;
            self.stop(TokenStatus::Expired, None);
            self.state.count_failure(reason);
            error!(
                "vault token renewal failed vault={vault} reason={}: {e}; the token has expired, rotate the token",
                reason.as_str()
            );
            return;
        }
        self.state.count_failure(reason);
        let mut delay = self.retry_delay(left);
        if let VaultError::RateLimited {
            retry_after: Some(secs),
        } = e
        {
            let asked = Duration::from_secs(secs);
            delay = delay.max(left.map_or(asked, |l| asked.min(l / 4)));
        }
        error!(
            "vault token renewal failed vault={vault} reason={}: {e}; retrying in {}",
            reason.as_str(),
            seconds(delay)
        );
        self.schedule(phase, delay);
    }
}

fn seconds(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

#[cfg(test)]
mod tests;
