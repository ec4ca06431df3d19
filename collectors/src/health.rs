//! The `vault` collector: is each Vault up, sealed or a standby, and does its clock agree
//! with ours?
//!
//! Why: a sealed or unreachable Vault renews nothing, and every expiry timestamp this
//! exporter publishes is Vault's clock read against ours, so a skewed clock moves them all.
//! An operator paged at night wants that in the same place as the tokens.
//!
//! As everywhere in this crate, a scrape never talks to Vault: one background poller per
//! distinct Vault address asks `GET /v1/sys/health` (unauthenticated, with that Vault's TLS
//! settings) every `health_interval` and writes a [`HealthState`]; the collector reads the
//! states at scrape time, once for every configured `vault` name that points there.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use prometheus::proto::{MetricFamily, MetricType};

use crate::client::{read_body, transport_error};
use crate::clock::unix_now;
use crate::collect::{Collect, CollectError};
use crate::error::VaultError;
use crate::family::{family, gauge, label, TextCache, TextOut};
use crate::state::{cap_label, AtomicF64};
use crate::watch::Wakeup;

/// What one `sys/health` answer says.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    pub sealed: bool,
    pub standby: bool,
    /// Vault's clock, Unix seconds (whole seconds, as Vault sends it).
    pub server_time: Option<f64>,
    pub version: String,
    /// Empty while sealed (Vault does not say).
    pub cluster_name: String,
}

/// Reads a `sys/health` body. Vault answers it with 200 (active), 429 (standby), 472/473
/// (DR or performance standby), 501 (not initialised) or 503 (sealed), always with this
/// body, so the status is not the verdict: the body is.
pub fn parse_health(body: &[u8]) -> Result<HealthReport, VaultError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|_| VaultError::BadResponse("sys/health: not valid JSON".into()))?;
    let object = value
        .as_object()
        .ok_or_else(|| VaultError::BadResponse("sys/health: not a JSON object".into()))?;
    let flag = |key: &str| -> Result<bool, VaultError> {
        match object.get(key) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(VaultError::BadResponse(format!(
                "sys/health: {key} is not a boolean"
            ))),
        }
    };
    let text = |key: &str| -> String {
        object
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_owned)
            .unwrap_or_default()
    };
    if !object.contains_key("sealed") {
        return Err(VaultError::BadResponse(
            "sys/health: sealed is missing".into(),
        ));
    }
    Ok(HealthReport {
        sealed: flag("sealed")?,
        standby: flag("standby")? || flag("performance_standby")?,
        server_time: object
            .get("server_time_utc")
            .and_then(|v| v.as_f64())
            .filter(|t| t.is_finite() && *t > 0.0),
        version: text("version"),
        cluster_name: text("cluster_name"),
    })
}

/// One Vault to poll.
pub struct HealthTarget {
    /// The Vault address, e.g. `https://vault:8200`.
    pub address: String,
    /// An agent with this Vault's TLS settings.
    pub agent: ureq::Agent,
    /// Per request, as for the token calls.
    pub timeout: Duration,
    /// Between polls.
    pub interval: Duration,
}

/// Asks `sys/health` once; also returns our clock at the middle of the exchange, the best
/// estimate of when Vault read its own.
pub fn check(target: &HealthTarget) -> Result<(HealthReport, f64), VaultError> {
    let url = format!("{}/v1/sys/health", target.address.trim_end_matches('/'));
    let started = Instant::now();
    let sent_at = unix_now();
    let response = match target.agent.get(&url).timeout(target.timeout).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => return Err(transport_error(&t)),
    };
    let status = response.status();
    let body = read_body(response)?;
    let midpoint = sent_at + started.elapsed().as_secs_f64() / 2.0;
    match parse_health(&body) {
        Ok(report) => Ok((report, midpoint)),
        // A proxy's error page or a 404 from something that is not Vault.
        Err(_) if !matches!(status, 200 | 429 | 472 | 473 | 501 | 503) => {
            Err(VaultError::ServerError {
                status,
                message: "sys/health answered without a health body".into(),
            })
        }
        Err(e) => Err(e),
    }
}

/// What a poller last learnt of one Vault; written by the poller, read by scrapes.
#[derive(Debug)]
pub struct HealthState {
    /// 0: not polled yet, 1: answered, 2: did not answer.
    outcome: AtomicU8,
    sealed: AtomicBool,
    standby: AtomicBool,
    skew: AtomicF64,
    info: RwLock<Option<(String, String)>>,
    /// Polls recorded, counted after each is written: the text is unchanged while this is.
    polls: AtomicU64,
}

impl Default for HealthState {
    fn default() -> Self {
        HealthState {
            outcome: AtomicU8::new(NOT_POLLED),
            sealed: AtomicBool::new(false),
            standby: AtomicBool::new(false),
            skew: AtomicF64::absent(),
            info: RwLock::new(None),
            polls: AtomicU64::new(0),
        }
    }
}

const NOT_POLLED: u8 = 0;
const ANSWERED: u8 = 1;
const UNREACHABLE: u8 = 2;

/// What a scrape sees of a [`HealthState`].
#[derive(Clone, Debug, PartialEq)]
pub struct HealthSnapshot {
    /// `None` before the first poll finished.
    pub up: Option<bool>,
    pub sealed: bool,
    pub standby: bool,
    /// Vault's clock minus ours, seconds; `None` when unknown.
    pub clock_skew: Option<f64>,
    /// `(version, cluster_name)` of the last answer.
    pub info: Option<(String, String)>,
}

impl HealthState {
    /// Records one poll's result; `now` is our clock at the middle of the exchange.
    pub fn record(&self, result: &Result<(HealthReport, f64), VaultError>) {
        match result {
            Ok((report, now)) => {
                self.sealed.store(report.sealed, Ordering::Relaxed);
                self.standby.store(report.standby, Ordering::Relaxed);
                // Vault truncates its clock to the second: on average it reads half a
                // second behind the instant it answered, so add that half back.
                match report.server_time {
                    Some(server) => self.skew.set(server + 0.5 - now),
                    None => self.skew.clear(),
                }
                // Label values: capped as `vault_token_info`'s are, whatever the server sends.
                *self.info.write().unwrap_or_else(|e| e.into_inner()) = Some((
                    cap_label(report.version.clone()),
                    cap_label(report.cluster_name.clone()),
                ));
                self.outcome.store(ANSWERED, Ordering::Release);
            }
            Err(_) => self.outcome.store(UNREACHABLE, Ordering::Release),
        }
        self.polls.fetch_add(1, Ordering::Release);
    }

    /// Polls recorded so far; what [`HealthState::snapshot`] shows changes only with it.
    pub fn polls(&self) -> u64 {
        self.polls.load(Ordering::Acquire)
    }

    /// The state, read once.
    pub fn snapshot(&self) -> HealthSnapshot {
        let outcome = self.outcome.load(Ordering::Acquire);
        let answered = outcome == ANSWERED;
        HealthSnapshot {
            up: (outcome != NOT_POLLED).then_some(answered),
            sealed: answered && self.sealed.load(Ordering::Relaxed),
            standby: answered && self.standby.load(Ordering::Relaxed),
            clock_skew: self.skew.get().filter(|_| answered),
            info: self
                .info
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .filter(|_| answered),
        }
    }
}

/// A running poller; [`HealthPoller::stop`], or dropping it, ends its thread.
pub struct HealthPoller {
    stop: Arc<AtomicBool>,
    wakeup: Arc<Wakeup>,
}

impl HealthPoller {
    /// Starts polling `target` at once, then every `target.interval`, into `state`.
    pub fn spawn(target: HealthTarget, state: Arc<HealthState>) -> std::io::Result<HealthPoller> {
        let stop = Arc::new(AtomicBool::new(false));
        let wakeup = Arc::new(Wakeup::default());
        let (thread_stop, thread_wakeup) = (stop.clone(), wakeup.clone());
        std::thread::Builder::new()
            .name("health".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut was_up = None;
                while !thread_stop.load(Ordering::Relaxed) {
                    let result = check(&target);
                    state.record(&result);
                    let up = result.is_ok();
                    if was_up != Some(up) {
                        match &result {
                            Ok(_) => log::debug!("vault health: {} answers", target.address),
                            Err(e) => log::warn!(
                                "vault health check failed address={} error=\"{e}\"",
                                target.address
                            ),
                        }
                        was_up = Some(up);
                    }
                    thread_wakeup.wait(Some(target.interval));
                }
            })?;
        Ok(HealthPoller { stop, wakeup })
    }

    /// Ends the poller; it exits at once if sleeping, else after its current request.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.wakeup.wake();
    }
}

impl Drop for HealthPoller {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every configured `vault` name with the state of the Vault it points at, in
/// configuration order; shared by the collector and the status page, replaced whole by a
/// reload (as [`crate::state::TokenSet`] is, for the same reasons).
#[derive(Clone, Default)]
pub struct HealthSet(Arc<RwLock<Vaults>>);

/// `(vault name, the state of the Vault it points at)`, in configuration order.
pub type Vaults = Arc<[(String, Arc<HealthState>)]>;

impl HealthSet {
    pub fn new(vaults: Vec<(String, Arc<HealthState>)>) -> HealthSet {
        HealthSet(Arc::new(RwLock::new(vaults.into())))
    }

    /// The vaults as of now.
    pub fn current(&self) -> Vaults {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Makes `vaults` the exported set.
    pub fn replace(&self, vaults: Vec<(String, Arc<HealthState>)>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = vaults.into();
    }

    /// The health of the Vault the entry `vault` points at, if it is configured.
    pub fn get(&self, vault: &str) -> Option<HealthSnapshot> {
        self.current()
            .iter()
            .find(|(name, _)| name == vault)
            .map(|(_, state)| state.snapshot())
    }
}

/// The `vault` collector: one set of `vault_health_*` series per configured vault name.
pub struct HealthCollector {
    vaults: HealthSet,
    /// Keyed by the polls recorded of each vault.
    text: TextCache<(SameSet, Vec<u64>)>,
}

impl HealthCollector {
    /// `vaults`: every configured `vault` name with the state of the Vault it points at.
    pub fn new(vaults: HealthSet) -> HealthCollector {
        HealthCollector {
            vaults,
            text: TextCache::default(),
        }
    }
}

/// The `vault_health_*` families (all gauges): up, sealed, standby, info, clock skew.
const FAMILIES: [(&str, &str); 5] = [
    (
        "vault_health_up",
        "1 if the Vault answered its last sys/health poll, 0 if not; absent before the first poll.",
    ),
    (
        "vault_health_sealed",
        "1 if the Vault is sealed (it renews nothing), as of its last answer.",
    ),
    (
        "vault_health_standby",
        "1 if the Vault node is a standby, as of its last answer.",
    ),
    (
        "vault_health_info",
        "Version and cluster name of the Vault, as of its last answer; the value is 1.",
    ),
    (
        "vault_health_clock_skew_seconds",
        "Vault's clock (sys/health server_time_utc) minus the exporter's; token expiry timestamps are off by this much.",
    ),
];

/// The families of `vaults` as `snapshots` (one per vault, in order) show them.
fn families(vaults: &Vaults, snapshots: &[HealthSnapshot]) -> Vec<MetricFamily> {
    let [mut up, mut sealed, mut standby, mut info, mut skew] =
        FAMILIES.map(|(name, help)| family(name, help, MetricType::GAUGE, vaults.len()));
    for ((vault, _), s) in vaults.iter().zip(snapshots) {
        let name = || vec![label("vault", vault)];
        let Some(is_up) = s.up else { continue };
        up.mut_metric()
            .push(gauge(name(), f64::from(u8::from(is_up))));
        if !is_up {
            continue;
        }
        sealed
            .mut_metric()
            .push(gauge(name(), f64::from(u8::from(s.sealed))));
        standby
            .mut_metric()
            .push(gauge(name(), f64::from(u8::from(s.standby))));
        if let Some((version, cluster_name)) = &s.info {
            info.mut_metric().push(gauge(
                vec![
                    label("vault", vault),
                    label("version", version),
                    label("cluster_name", cluster_name),
                ],
                1.0,
            ));
        }
        if let Some(seconds) = s.clock_skew {
            skew.mut_metric().push(gauge(name(), seconds));
        }
    }
    [up, sealed, standby, info, skew]
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
}

/// The vault set a text was written for: the same set, not an equal one.
struct SameSet(Vaults);

impl PartialEq for SameSet {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Collect for HealthCollector {
    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
        let vaults = self.vaults.current();
        let snapshots: Vec<_> = vaults.iter().map(|(_, state)| state.snapshot()).collect();
        out.extend(families(&vaults, &snapshots));
        Ok(())
    }

    /// Health changes at each poll, not each scrape: the text is kept in between.
    fn write_text(&self, out: &mut TextOut) -> Result<(), CollectError> {
        let vaults = self.vaults.current();
        let polls = vaults.iter().map(|(_, state)| state.polls()).collect();
        self.text
            .write((SameSet(vaults), polls), out, |key, fresh| {
                let SameSet(vaults) = &key.0;
                let snapshots: Vec<_> = vaults.iter().map(|(_, state)| state.snapshot()).collect();
                families(vaults, &snapshots)
                    .into_iter()
                    .try_for_each(|family| {
                        fresh
                            .push_family(family)
                            .map_err(|e| CollectError(format!("cannot encode: {e}")))
                    })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn fixture(dir: &str, name: &str) -> Vec<u8> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(dir)
            .join(name);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"))
    }

    #[test]
    fn every_captured_health_body_parses() {
        let cases = [
            (
                "vault-responses",
                "health.active.vault-1.1.0.json",
                false,
                false,
            ),
            (
                "vault-responses",
                "health.active.ce.vault-1.16.0-rc2.docs.json",
                false,
                false,
            ),
            (
                "vault-responses",
                "health.active.enterprise.vault-1.17.0-beta1-ent.docs.json",
                false,
                false,
            ),
            (
                "vault-responses",
                "health.active.vault-0.9.2.docs.json",
                false,
                false,
            ),
            (
                "vault-responses",
                "health.standby.ce.vault-1.19.0-beta1.docs.json",
                false,
                true,
            ),
            (
                "openbao-responses",
                "sys-health.sealed.503.openbao-2.7.2.json",
                true,
                true,
            ),
        ];
        for (dir, name, sealed, standby) in cases {
            let report =
                parse_health(&fixture(dir, name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((report.sealed, report.standby), (sealed, standby), "{name}");
            assert!(!report.version.is_empty(), "{name}");
            assert!(report.server_time.unwrap() > 1.0e9, "{name}");
        }
    }

    #[test]
    fn garbage_is_a_bad_response_never_a_panic() {
        for body in [
            &b"<html>502</html>"[..],
            b"[]",
            b"{}",
            br#"{"sealed":"no"}"#,
            b"\xff\xfe",
        ] {
            assert!(
                matches!(parse_health(body), Err(VaultError::BadResponse(_))),
                "{body:?}"
            );
        }
    }

    /// The collector's text; the scrape path's (kept between polls) must be what the
    /// registry path encodes, after every change.
    fn text(collector: &HealthCollector) -> String {
        let mut families = Vec::new();
        collector.collect(&mut families).unwrap();
        // In name order, as a registry gathers them.
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        prometheus::Encoder::encode(&prometheus::TextEncoder::new(), &families, &mut out).unwrap();
        let encoded = String::from_utf8(out).unwrap();
        for _ in 0..2 {
            let mut direct = TextOut::default();
            collector.write_text(&mut direct).unwrap();
            let direct = String::from_utf8(direct.into_ordered().to_vec()).unwrap();
            assert_eq!(direct, encoded, "the kept text is stale");
        }
        encoded
    }

    #[test]
    fn series_follow_what_the_poller_learnt() {
        let state = Arc::new(HealthState::default());
        let set = HealthSet::new(vec![
            ("a".into(), state.clone()),
            ("b".into(), state.clone()),
        ]);
        let collector = HealthCollector::new(set.clone());
        assert_eq!(text(&collector), "", "nothing before the first poll");

        let report = HealthReport {
            sealed: false,
            standby: true,
            server_time: Some(1000.0),
            version: "2.7.2".into(),
            cluster_name: "c\"1".into(),
        };
        state.record(&Ok((report, 1010.25)));
        let answered = text(&collector);
        for line in [
            "vault_health_up{vault=\"a\"} 1",
            "vault_health_up{vault=\"b\"} 1",
            "vault_health_sealed{vault=\"a\"} 0",
            "vault_health_standby{vault=\"b\"} 1",
            "vault_health_info{vault=\"a\",version=\"2.7.2\",cluster_name=\"c\\\"1\"} 1",
            "vault_health_clock_skew_seconds{vault=\"a\"} -9.75",
        ] {
            assert!(answered.lines().any(|l| l == line), "{line} in\n{answered}");
        }

        let long = HealthReport {
            version: "v".repeat(10_000),
            ..HealthReport::clone(&state_report())
        };
        state.record(&Ok((long, 1000.0)));
        let capped = state.snapshot().info.unwrap();
        assert!(
            capped.0.len() <= crate::state::MAX_LABEL_VALUE,
            "version capped"
        );

        state.record(&Err(VaultError::Timeout));
        let down = text(&collector);
        assert!(down.contains("vault_health_up{vault=\"a\"} 0"), "{down}");
        for gone in ["sealed", "standby", "info", "clock_skew"] {
            assert!(!down.contains(&format!("vault_health_{gone}")), "{down}");
        }

        set.replace(vec![("c".into(), state)]);
        let replaced = text(&collector);
        assert!(
            replaced.contains("vault_health_up{vault=\"c\"} 0"),
            "{replaced}"
        );
        assert!(
            !replaced.contains("vault=\"a\""),
            "a reload drops the old names"
        );
        assert_eq!(set.get("c").and_then(|h| h.up), Some(false));
        assert_eq!(set.get("a"), None);
    }

    fn state_report() -> HealthReport {
        HealthReport {
            sealed: true,
            standby: false,
            server_time: None,
            version: String::new(),
            cluster_name: String::new(),
        }
    }
}
