//! The state a renewal worker shares with the collectors.
//!
//! Workers write, scrapes read: every field is an atomic (f64 stored as bits), so a scrape
//! never takes a lock a worker could hold while it waits on Vault. Only the `info` labels,
//! which change once per token value, sit behind a `RwLock` held for a clone.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, RwLock};

use crate::error::Reason;

/// The one-hot `vault_token_state` of a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenStatus {
    Unknown = 0,
    Renewing = 1,
    NotRenewable = 2,
    Capped = 3,
    Invalid = 4,
    Expired = 5,
    NeverExpires = 6,
}

impl TokenStatus {
    /// Every state, in the order the series are exported.
    pub const ALL: [TokenStatus; 7] = [
        TokenStatus::Renewing,
        TokenStatus::NotRenewable,
        TokenStatus::Capped,
        TokenStatus::Invalid,
        TokenStatus::Expired,
        TokenStatus::NeverExpires,
        TokenStatus::Unknown,
    ];

    /// The `state` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Unknown => "unknown",
            TokenStatus::Renewing => "renewing",
            TokenStatus::NotRenewable => "not_renewable",
            TokenStatus::Capped => "capped",
            TokenStatus::Invalid => "invalid",
            TokenStatus::Expired => "expired",
            TokenStatus::NeverExpires => "never_expires",
        }
    }

    fn from_u8(v: u8) -> TokenStatus {
        match v {
            1 => TokenStatus::Renewing,
            2 => TokenStatus::NotRenewable,
            3 => TokenStatus::Capped,
            4 => TokenStatus::Invalid,
            5 => TokenStatus::Expired,
            6 => TokenStatus::NeverExpires,
            _ => TokenStatus::Unknown,
        }
    }
}

/// A renewal outcome: the `result` label of `vault_token_renewals_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success = 0,
    Failure = 1,
    NotRenewable = 2,
}

impl Outcome {
    /// Every outcome, in the order the series are exported.
    pub const ALL: [Outcome; 3] = [Outcome::Success, Outcome::Failure, Outcome::NotRenewable];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::NotRenewable => "not_renewable",
        }
    }
}

/// Labels of `vault_token_info`, from the last successful lookup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TokenInfo {
    pub display_name: String,
    pub token_type: String,
    pub auth_path: String,
    /// Sorted and comma-joined.
    pub policies: String,
}

/// The longest label value taken from Vault, in bytes: a token with a megabyte of
/// display name or ten thousand policies would otherwise put all of it in every scrape.
pub const MAX_LABEL_VALUE: usize = 256;

/// Cuts `value` to at most [`MAX_LABEL_VALUE`] bytes, on a character boundary, marked
/// with `…` where it was cut.
pub fn cap_label(mut value: String) -> String {
    if value.len() <= MAX_LABEL_VALUE {
        return value;
    }
    let mut end = MAX_LABEL_VALUE - '…'.len_utf8();
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value.truncate(end);
    value.push('…');
    value
}

/// Upper bounds of the renew-self latency histogram, in seconds. Few on purpose: every
/// bucket is one more series per token, and Vault answers in milliseconds or not at all.
pub const DURATION_BUCKETS: [f64; 8] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0];

/// An `f64` in an `AtomicU64`; NaN means "absent".
#[derive(Debug)]
pub struct AtomicF64(AtomicU64);

impl AtomicF64 {
    /// An absent value.
    pub fn absent() -> AtomicF64 {
        AtomicF64(AtomicU64::new(f64::NAN.to_bits()))
    }
    pub fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Relaxed)
    }
    pub fn clear(&self) {
        self.set(f64::NAN)
    }
    /// The value, or `None` when absent.
    pub fn get(&self) -> Option<f64> {
        let v = f64::from_bits(self.0.load(Relaxed));
        (!v.is_nan()).then_some(v)
    }
    fn add(&self, delta: f64) {
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + delta).to_bits())
        });
    }
}

/// Everything exported about one configured token.
#[derive(Debug)]
pub struct TokenState {
    /// The configured name: the `vault` label.
    pub vault: String,
    renewals: [AtomicU64; 3],
    failures: [AtomicU64; 10],
    status: AtomicU8,
    renewable: AtomicBool,
    capped: AtomicBool,
    renewing: AtomicBool,
    /// Unix seconds the token expires; absent when it never expires or is not looked up yet.
    pub expiry: AtomicF64,
    /// Unix seconds the token dies whatever renewals do (its max TTL); absent when unknown.
    pub max_expiry: AtomicF64,
    /// Unix seconds of the last successful renewal by this exporter.
    pub last_renewal: AtomicF64,
    /// Unix seconds of the next scheduled attempt; absent while none is scheduled.
    pub next_renewal: AtomicF64,
    /// Failed attempts since the token was last known good (see [`TokenState::count_failure`]).
    consecutive_failures: AtomicU64,
    /// The reason of the latest failure, as `Reason::index() + 1`; 0 before any (the
    /// status page's "last failure": the counters say how many, not which came last).
    last_failure: AtomicU8,
    duration_buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum: AtomicF64,
    info: RwLock<Option<TokenInfo>>,
    /// Bumped at every [`TokenState::set_info`].
    info_changes: AtomicU64,
}

/// What a scrape sees of a [`TokenState`], read once.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub renewals: [u64; 3],
    pub failures: [u64; 10],
    pub status: TokenStatus,
    pub renewable: bool,
    pub capped: bool,
    pub renewing: bool,
    pub expiry: Option<f64>,
    pub max_expiry: Option<f64>,
    pub last_renewal: Option<f64>,
    pub next_renewal: Option<f64>,
    pub consecutive_failures: u64,
    /// The reason of the latest failed attempt; `None` before any.
    pub last_failure: Option<Reason>,
    /// Cumulative counts per bucket of [`DURATION_BUCKETS`].
    pub duration_buckets: [u64; DURATION_BUCKETS.len()],
    pub duration_count: u64,
    pub duration_sum: f64,
}

impl Snapshot {
    /// The state as of `now` (Unix seconds): a token past its expiry is `expired` whatever
    /// the worker last wrote, so the state flips on time even while the worker sleeps.
    pub fn status_at(&self, now: f64) -> TokenStatus {
        match self.expiry {
            Some(expiry) if now >= expiry && self.status != TokenStatus::NeverExpires => {
                TokenStatus::Expired
            }
            _ => self.status,
        }
    }

    /// Seconds left as of `now`, 0 once expired; `None` when the expiry is absent.
    pub fn ttl_at(&self, now: f64) -> Option<f64> {
        self.expiry.map(|e| (e - now).max(0.0))
    }
}

impl TokenState {
    /// A token not yet looked up.
    pub fn new(vault: impl Into<String>) -> TokenState {
        TokenState {
            vault: vault.into(),
            renewals: Default::default(),
            failures: Default::default(),
            status: AtomicU8::new(TokenStatus::Unknown as u8),
            renewable: AtomicBool::new(false),
            capped: AtomicBool::new(false),
            renewing: AtomicBool::new(false),
            expiry: AtomicF64::absent(),
            max_expiry: AtomicF64::absent(),
            last_renewal: AtomicF64::absent(),
            next_renewal: AtomicF64::absent(),
            consecutive_failures: AtomicU64::new(0),
            last_failure: AtomicU8::new(0),
            duration_buckets: Default::default(),
            duration_count: AtomicU64::new(0),
            duration_sum: AtomicF64(AtomicU64::new(0f64.to_bits())),
            info: RwLock::new(None),
            info_changes: AtomicU64::new(0),
        }
    }

    pub fn count(&self, outcome: Outcome) {
        self.renewals[outcome as usize].fetch_add(1, Relaxed);
    }

    /// One failed attempt: one `failure`, one `reason`, and one more consecutive failure.
    pub fn count_failure(&self, reason: Reason) {
        self.consecutive_failures.fetch_add(1, Relaxed);
        self.count(Outcome::Failure);
        self.failures[reason.index()].fetch_add(1, Relaxed);
        self.last_failure.store(reason.index() as u8 + 1, Relaxed);
    }

    /// The token is known good again (renewed, or a new token looked up): alerts keyed on
    /// the failure streak clear at once, whatever the counters' recent history.
    pub fn reset_consecutive_failures(&self) {
        self.consecutive_failures.store(0, Relaxed);
    }

    pub fn set_status(&self, status: TokenStatus) {
        self.status.store(status as u8, Relaxed);
        self.renewing
            .store(status == TokenStatus::Renewing, Relaxed);
    }

    pub fn status(&self) -> TokenStatus {
        TokenStatus::from_u8(self.status.load(Relaxed))
    }

    pub fn set_renewable(&self, v: bool) {
        self.renewable.store(v, Relaxed)
    }

    pub fn set_capped(&self, v: bool) {
        self.capped.store(v, Relaxed)
    }

    /// Sets the info labels, each capped at [`MAX_LABEL_VALUE`] bytes.
    pub fn set_info(&self, info: TokenInfo) {
        let info = TokenInfo {
            display_name: cap_label(info.display_name),
            token_type: cap_label(info.token_type),
            auth_path: cap_label(info.auth_path),
            policies: cap_label(info.policies),
        };
        let mut kept = self.info.write().unwrap_or_else(|e| e.into_inner());
        *kept = Some(info);
        self.info_changes.fetch_add(1, Relaxed);
    }

    /// How many times the info labels were set: they changed unless this is the same.
    pub fn info_changes(&self) -> u64 {
        self.info_changes.load(Relaxed)
    }

    pub fn info(&self) -> Option<TokenInfo> {
        self.info.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs `f` on the info labels without copying them (the scrape path).
    pub fn with_info<R>(&self, f: impl FnOnce(Option<&TokenInfo>) -> R) -> R {
        f(self.info.read().unwrap_or_else(|e| e.into_inner()).as_ref())
    }

    /// Records the latency of one renew-self call that got an HTTP answer.
    pub fn observe_duration(&self, seconds: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            self.duration_buckets[i].fetch_add(1, Relaxed);
        }
        self.duration_sum.add(seconds);
        self.duration_count.fetch_add(1, Relaxed);
    }

    /// Reads every value once for a scrape.
    pub fn snapshot(&self) -> Snapshot {
        let mut duration_buckets = [0u64; DURATION_BUCKETS.len()];
        let mut cumulative = 0;
        for (out, bucket) in duration_buckets.iter_mut().zip(&self.duration_buckets) {
            cumulative += bucket.load(Relaxed);
            *out = cumulative;
        }
        Snapshot {
            renewals: std::array::from_fn(|i| self.renewals[i].load(Relaxed)),
            failures: std::array::from_fn(|i| self.failures[i].load(Relaxed)),
            status: self.status(),
            renewable: self.renewable.load(Relaxed),
            capped: self.capped.load(Relaxed),
            renewing: self.renewing.load(Relaxed),
            expiry: self.expiry.get(),
            max_expiry: self.max_expiry.get(),
            last_renewal: self.last_renewal.get(),
            next_renewal: self.next_renewal.get(),
            consecutive_failures: self.consecutive_failures.load(Relaxed),
            last_failure: (self.last_failure.load(Relaxed) as usize)
                .checked_sub(1)
                .and_then(|i| Reason::ALL.get(i).copied()),
            duration_buckets,
            duration_count: self.duration_count.load(Relaxed),
            duration_sum: self.duration_sum.get().unwrap_or(0.0),
        }
    }
}

/// The configured tokens, shared by the collectors and replaced whole by a reload.
///
/// The lock is held only to clone or swap an `Arc`: workers never take it, so a scrape
/// never waits for a worker, and a reload waits for no scrape longer than that clone.
#[derive(Clone, Default)]
pub struct TokenSet(Arc<RwLock<Arc<[Arc<TokenState>]>>>);

impl TokenSet {
    pub fn new(tokens: Vec<Arc<TokenState>>) -> TokenSet {
        TokenSet(Arc::new(RwLock::new(tokens.into())))
    }

    /// The tokens as of now.
    pub fn current(&self) -> Arc<[Arc<TokenState>]> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `tokens` the exported set: the series of tokens not in it go.
    pub fn replace(&self, tokens: Vec<Arc<TokenState>>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = tokens.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_from_vault_are_capped_on_a_char_boundary() {
        assert_eq!(cap_label("short".into()), "short");
        let exact = "a".repeat(MAX_LABEL_VALUE);
        assert_eq!(cap_label(exact.clone()), exact);
        let long = cap_label("b".repeat(1 << 20));
        assert_eq!(long.len(), MAX_LABEL_VALUE);
        assert!(long.ends_with('…') && long.starts_with("bbb"));
        // Multi-byte characters are never split.
        let wide = cap_label("é".repeat(MAX_LABEL_VALUE));
        assert!(wide.len() <= MAX_LABEL_VALUE && wide.ends_with('…'));
        assert!(wide.trim_end_matches('…').chars().all(|c| c == 'é'));
        let state = TokenState::new("prod");
        state.set_info(TokenInfo {
            display_name: "d".repeat(10_000),
            token_type: "service".into(),
            auth_path: "auth/token/create".into(),
            policies: "p,".repeat(10_000),
        });
        let info = state.info().unwrap();
        assert!(info.display_name.len() <= MAX_LABEL_VALUE);
        assert!(info.policies.len() <= MAX_LABEL_VALUE);
        assert_eq!(info.token_type, "service");
    }

    #[test]
    fn a_new_token_is_unknown_with_every_counter_at_zero() {
        let s = TokenState::new("prod").snapshot();
        assert_eq!(s.status, TokenStatus::Unknown);
        assert_eq!(s.renewals, [0; 3]);
        assert_eq!(s.failures, [0; 10]);
        assert_eq!(s.last_failure, None);
        assert!(!s.renewing && !s.renewable && !s.capped);
        assert_eq!(
            (s.expiry, s.last_renewal, s.next_renewal),
            (None, None, None)
        );
    }

    #[test]
    fn a_failure_counts_once_as_failure_and_once_under_its_reason() {
        let state = TokenState::new("prod");
        state.count_failure(Reason::Sealed);
        state.count_failure(Reason::Sealed);
        let s = state.snapshot();
        assert_eq!(s.renewals[Outcome::Failure as usize], 2);
        assert_eq!(s.failures[Reason::Sealed.index()], 2);
        assert_eq!(s.failures.iter().sum::<u64>(), 2);
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(s.last_failure, Some(Reason::Sealed));
        state.count_failure(Reason::Timeout);
        assert_eq!(state.snapshot().last_failure, Some(Reason::Timeout));
        state.reset_consecutive_failures();
        let s = state.snapshot();
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!(
            s.last_failure,
            Some(Reason::Timeout),
            "kept after a success"
        );
        assert_eq!(s.renewals[Outcome::Failure as usize], 3, "counters stay");
    }

    #[test]
    fn only_renewing_sets_the_renewing_flag() {
        let state = TokenState::new("prod");
        state.set_status(TokenStatus::Renewing);
        assert!(state.snapshot().renewing);
        state.set_status(TokenStatus::Capped);
        assert!(!state.snapshot().renewing);
    }

    #[test]
    fn past_its_expiry_a_token_is_expired_and_its_ttl_is_zero() {
        let state = TokenState::new("prod");
        state.set_status(TokenStatus::Capped);
        state.expiry.set(1000.0);
        let s = state.snapshot();
        assert_eq!(s.status_at(999.0), TokenStatus::Capped);
        assert_eq!(s.ttl_at(990.5), Some(9.5));
        assert_eq!(s.status_at(1000.0), TokenStatus::Expired);
        assert_eq!(s.ttl_at(2000.0), Some(0.0));
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let state = TokenState::new("prod");
        state.observe_duration(0.004);
        state.observe_duration(0.2);
        state.observe_duration(30.0);
        let s = state.snapshot();
        assert_eq!(s.duration_buckets[0], 1);
        assert_eq!(s.duration_buckets[DURATION_BUCKETS.len() - 1], 2);
        assert_eq!(s.duration_count, 3);
        assert!((s.duration_sum - 30.204).abs() < 1e-9);
    }
}
