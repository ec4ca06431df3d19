//! Turns the configuration into running workers: one Vault client per token (sharing one
//! agent per TLS setting), one std thread per token, one watcher for all token files.
//!
//! [`Workers`] is the running set. [`Workers::apply`] moves it to a new configuration
//! (start-up and every reload): entries equal to a running one keep their worker, state
//! and counters; removed ones are stopped and leave the exported set; new ones start.
//! Every new client is built before anything changes, so a configuration with an
//! unusable TLS file changes nothing.
//!
//! With the `vault` collector on, it also runs one health poller per distinct Vault
//! (address and TLS settings: the same key as the HTTP agents), polling at the smallest
//! `health_interval` of the entries that point there; a reload keeps the pollers whose
//! Vault is still configured, starts new ones and stops those no entry needs any more.

use std::sync::Arc;
use std::time::Duration;

use collectors::client::TlsSettings;
use collectors::client::{Agents, VaultClient};
use collectors::clock::{Clock, SystemClock};
use collectors::health::{HealthPoller, HealthSet, HealthState, HealthTarget};
use collectors::logfmt::Value;
use collectors::source::loose_permissions_warning;
use collectors::state::TokenSet;
use collectors::state::TokenState;
use collectors::watch::{FileWatcher, Wakeup};
use collectors::worker::{Stopper, Worker};

use crate::config::{ConfigError, TokenConfig};

/// A worker needs little stack: no recursion, and TLS state lives on the heap. Small
/// stacks keep thousands of tokens cheap.
const WORKER_STACK: usize = 256 * 1024;

/// glibc malloc arenas: the default (8 per core) gives each of the first threads of a
/// thousand-thread process its own heap, each keeping what it once held. The workers
/// allocate a few KiB per renewal and a scrape a buffer or two: two arenas serve them.
const MALLOC_ARENAS: i32 = 2;

/// Allocations from this size up get their own mapping, returned to the kernel when
/// freed. glibc's default is 128 KiB, but glibc raises it (up to 32 MiB) once such a
/// block is freed, so its behaviour depends on history; setting it pins it. 8 MiB keeps
/// scrape bodies (250 KiB at 100 tokens, 2.5 MiB at 1000) in the heap, reused from one
/// scrape to the next: a fresh mapping per body cost page faults on every scrape, about
/// 40 % of the throughput at 100 tokens (`bench`), for no gain in RSS at 100 or 1000.
const MALLOC_MMAP_THRESHOLD: i32 = 8 * 1024 * 1024;

/// A call goes deep (the resolver, the HTTP client, the JSON parser: about 24 KiB of
/// stack) and then the worker sleeps for half a lease: without a release, every idle
/// worker keeps those pages, 24 MiB per thousand tokens. Only before sleeps at least this
/// long: each release costs the other cores a TLB flush, and a worker retrying every
/// second would touch the same pages again at once.
const RELEASE_AFTER: Duration = Duration::from_secs(10);

/// One configured token with its running worker.
struct Running {
    config: TokenConfig,
    state: Arc<TokenState>,
    stopper: Stopper,
    wakeup: Arc<Wakeup>,
}

/// Which health poller an entry's Vault gets: entries equal in both share one.
#[derive(Clone, Debug, PartialEq)]
struct VaultKey {
    address: String,
    tls: TlsSettings,
}

impl VaultKey {
    fn of(token: &TokenConfig) -> VaultKey {
        VaultKey {
            address: token.address.clone(),
            tls: token.tls.clone(),
        }
    }
}

/// One Vault's running health poller.
struct Poller {
    key: VaultKey,
    interval: Duration,
    timeout: Duration,
    state: Arc<HealthState>,
    /// Stops the thread when dropped.
    _poller: HealthPoller,
}

/// A poller the next configuration needs: kept, or to start.
enum NextPoller {
    Kept(usize),
    New {
        target: Box<HealthTarget>,
        key: VaultKey,
        timeout: Duration,
        state: Arc<HealthState>,
    },
}

/// The running workers, and the token set the collectors export.
pub struct Workers {
    clock: Arc<dyn Clock>,
    watcher: FileWatcher,
    tokens: TokenSet,
    running: Vec<Running>,
    /// What the `vault` collector exports; `None` when it is off, and then no poller runs.
    health: Option<HealthSet>,
    pollers: Vec<Poller>,
}

/// What [`Workers::apply`] did.
#[derive(Debug, Default, PartialEq)]
pub struct Change {
    pub kept: usize,
    pub started: usize,
    pub stopped: usize,
}

/// Builds the client of every entry: fails (exit 2 at start-up, a failed reload later)
/// on an unusable TLS setting. Makes no network call.
pub fn check_clients(tokens: &[TokenConfig]) -> Result<(), ConfigError> {
    let agents = Agents::default();
    tokens.iter().try_for_each(|t| client(&agents, t).map(drop))
}

pub(crate) fn client(agents: &Agents, token: &TokenConfig) -> Result<VaultClient, ConfigError> {
    let agent = agents
        .for_address(&token.address, &token.tls)
        .map_err(|e| ConfigError(format!("vault {:?}: tls: {e}", token.name)))?;
    Ok(VaultClient::new(
        agent,
        &token.address,
        token.namespace.clone(),
        token.timeout,
    ))
}

impl Workers {
    /// No workers yet; starts the file watcher. With `health` (the `vault` collector on),
    /// [`Workers::apply`] also runs the health pollers and publishes them there.
    pub fn new(tokens: TokenSet, health: Option<HealthSet>) -> std::io::Result<Workers> {
        crate::sys::tune_malloc(MALLOC_ARENAS, MALLOC_MMAP_THRESHOLD);
        Ok(Workers {
            clock: Arc::new(SystemClock::default()),
            watcher: collectors::watch::spawn_file_watcher(Vec::new())?,
            tokens,
            running: Vec::new(),
            health,
            pollers: Vec::new(),
        })
    }

    /// The pollers `config` needs, one per distinct Vault: the running one where its Vault,
    /// interval and timeout are unchanged, else a new one (keeping the state of the one it
    /// replaces, so a changed interval leaves no gap in the series). Builds every agent
    /// and changes nothing.
    fn plan_pollers(
        &self,
        agents: &Agents,
        config: &[TokenConfig],
    ) -> Result<Vec<NextPoller>, ConfigError> {
        // (key, smallest interval, smallest timeout, an entry's name for errors)
        let mut groups: Vec<(VaultKey, Duration, Duration, &str)> = Vec::new();
        for token in config {
            let key = VaultKey::of(token);
            match groups.iter_mut().find(|g| g.0 == key) {
                Some(group) => {
                    group.1 = group.1.min(token.health_interval);
                    group.2 = group.2.min(token.timeout);
                }
                None => groups.push((key, token.health_interval, token.timeout, &token.name)),
            }
        }
        let mut next = Vec::with_capacity(groups.len());
        for (key, interval, timeout, name) in groups {
            let running = self.pollers.iter().position(|p| p.key == key);
            if let Some(i) = running.filter(|i| {
                let p = &self.pollers[*i];
                (p.interval, p.timeout) == (interval, timeout)
            }) {
                next.push(NextPoller::Kept(i));
                continue;
            }
            let agent = agents
                .for_address(&key.address, &key.tls)
                .map_err(|e| ConfigError(format!("vault {name:?}: tls: {e}")))?;
            next.push(NextPoller::New {
                target: Box::new(HealthTarget {
                    address: key.address.clone(),
                    agent,
                    timeout,
                    interval,
                }),
                state: running
                    .map(|i| self.pollers[i].state.clone())
                    .unwrap_or_default(),
                key,
                timeout,
            });
        }
        Ok(next)
    }

    /// Moves the pollers to `next` (from [`Workers::plan_pollers`]) and publishes the
    /// health of every entry of `config` under its name.
    fn apply_pollers(
        &mut self,
        next: Vec<NextPoller>,
        config: &[TokenConfig],
    ) -> std::io::Result<()> {
        let Some(health) = self.health.clone() else {
            return Ok(());
        };
        let mut old: Vec<Option<Poller>> = self.pollers.drain(..).map(Some).collect();
        let mut pollers = Vec::with_capacity(next.len());
        let mut spawn_error = None;
        for entry in next {
            match entry {
                NextPoller::Kept(i) => pollers.push(old[i].take().expect("a poller is kept once")),
                NextPoller::New {
                    target,
                    key,
                    timeout,
                    state,
                } => {
                    // The poller it replaces (same Vault, other interval) stops first.
                    if let Some(slot) = old
                        .iter_mut()
                        .find(|p| p.as_ref().is_some_and(|p| p.key == key))
                    {
                        slot.take();
                    }
                    let interval = target.interval;
                    log::info!(
                        "vault health poller started address={} interval={}s",
                        Value(&key.address),
                        interval.as_secs_f64()
                    );
                    match HealthPoller::spawn(*target, state.clone()) {
                        Ok(poller) => pollers.push(Poller {
                            key,
                            interval,
                            timeout,
                            state,
                            _poller: poller,
                        }),
                        Err(e) => spawn_error = Some(e),
                    }
                }
            }
        }
        for gone in old.into_iter().flatten() {
            log::info!(
                "vault health poller stopped, no entry uses it address={}",
                Value(&gone.key.address)
            );
        }
        health.replace(
            config
                .iter()
                .filter_map(|token| {
                    let key = VaultKey::of(token);
                    let poller = pollers.iter().find(|p| p.key == key)?;
                    Some((token.name.clone(), poller.state.clone()))
                })
                .collect(),
        );
        self.pollers = pollers;
        spawn_error.map_or(Ok(()), Err)
    }

    /// Moves to `config`. On an error nothing has changed.
    pub fn apply(&mut self, config: Vec<TokenConfig>) -> Result<Change, ConfigError> {
        // Build every new worker first: a bad TLS file in one entry changes nothing.
        let agents = Agents::default();
        let pollers = match self.health {
            Some(_) => self.plan_pollers(&agents, &config)?,
            None => Vec::new(),
        };
        let health_config = config.clone();
        let mut next: Vec<Result<(usize, TokenConfig), Running>> = Vec::with_capacity(config.len());
        let mut workers = Vec::new();
        for token in config {
            if let Some(i) = self
                .running
                .iter()
                .position(|r| r.config.same_worker(&token))
            {
                next.push(Ok((i, token)));
                continue;
            }
            let state = Arc::new(TokenState::new(token.name.clone()));
            let worker = Worker::new(
                Arc::new(client(&agents, &token)?),
                token.source.clone(),
                state.clone(),
                self.clock.clone(),
                token.renew.clone(),
            );
            next.push(Err(Running {
                state,
                stopper: worker.stopper(),
                wakeup: worker.wakeup(),
                config: token,
            }));
            workers.push(worker);
        }
        let mut old: Vec<Option<Running>> = self.running.drain(..).map(Some).collect();
        let mut change = Change::default();
        let mut running = Vec::with_capacity(next.len());
        let mut watched = Vec::new();
        for entry in next {
            match entry {
                Ok((i, config)) => {
                    change.kept += 1;
                    let mut kept = old[i].take().expect("an entry is kept once");
                    // Only its health interval may differ: that is the poller's business.
                    kept.config = config;
                    running.push(kept);
                }
                Err(new) => {
                    announce(&new.config);
                    if let Some(path) = new.config.source.path() {
                        watched.push((path.to_owned(), new.wakeup.clone()));
                    }
                    running.push(new);
                }
            }
        }
        let removed: Vec<Running> = old.into_iter().flatten().collect();
        for r in &removed {
            r.stopper.stop();
            log::info!(
                "vault token removed from the configuration, worker stopped vault={}",
                Value(&r.config.name)
            );
        }
        change.stopped = removed.len();
        self.watcher
            .remove(removed.iter().map(|r| r.wakeup.clone()).collect());
        self.tokens
            .replace(running.iter().map(|r| r.state.clone()).collect());
        self.running = running;
        change.started = workers.len();
        for worker in workers {
            spawn(worker)
                .map_err(|e| ConfigError(format!("cannot start a renewal worker: {e}")))?;
        }
        self.watcher.add(watched);
        self.apply_pollers(pollers, &health_config)
            .map_err(|e| ConfigError(format!("cannot start a health poller: {e}")))?;
        Ok(change)
    }

    /// The number of running workers.
    pub fn len(&self) -> usize {
        self.running.len()
    }

    pub fn is_empty(&self) -> bool {
        self.running.is_empty()
    }
}

/// Logs what an operator should know about a new entry.
fn announce(config: &TokenConfig) {
    let name = Value(&config.name);
    if config.tls.insecure_skip_verify {
        log::warn!(
            "TLS certificate verification is disabled for vault={name}: anyone on the path can read its token"
        );
    }
    if let Some(warning) = config.source.path().and_then(loose_permissions_warning) {
        log::warn!("{warning} vault={name}");
    }
}

/// Runs `worker` on its own small-stacked thread, giving idle stack pages back before
/// each long sleep.
fn spawn(worker: Worker) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("renew".into())
        .stack_size(WORKER_STACK)
        .spawn(move || {
            let stack = crate::sys::ThreadStack::current();
            worker.run(RELEASE_AFTER, || {
                if let Some(stack) = &stack {
                    stack.release_unused();
                }
            });
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use collectors::client::TlsSettings;
    use collectors::secret::Token;
    use collectors::source::TokenSource;

    fn entry(name: &str) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            // Nothing listens on port 1: the workers fail fast and back off.
            address: "http://127.0.0.1:1".into(),
            namespace: None,
            source: TokenSource::Value(Token::new("hvs.TEST").unwrap()),
            tls: TlsSettings::default(),
            timeout: Duration::from_secs(1),
            renew: Default::default(),
            health_interval: Duration::from_secs(30),
        }
    }

    fn names(set: &TokenSet) -> Vec<String> {
        set.current().iter().map(|t| t.vault.clone()).collect()
    }

    #[test]
    fn apply_keeps_equal_entries_and_changes_nothing_on_an_error() {
        let set = TokenSet::default();
        let mut workers = Workers::new(set.clone(), None).unwrap();
        let change = workers.apply(vec![entry("a"), entry("b")]).unwrap();
        assert_eq!((change.kept, change.started, change.stopped), (0, 2, 0));
        let a = set.current()[0].clone();

        let mut moved = entry("b");
        moved.address = "http://127.0.0.1:2".into();
        let change = workers.apply(vec![entry("c"), entry("a"), moved]).unwrap();
        assert_eq!((change.kept, change.started, change.stopped), (1, 2, 1));
        assert_eq!(names(&set), ["c", "a", "b"], "configuration order");
        assert!(Arc::ptr_eq(&set.current()[1], &a), "a kept its state");

        let mut broken = entry("d");
        broken.tls.ca_file = Some("/nonexistent/ca.pem".into());
        let before = set.current();
        let err = workers.apply(vec![entry("a"), broken]).unwrap_err();
        assert!(err.to_string().contains("\"d\""), "{err}");
        assert!(Arc::ptr_eq(&before, &set.current()), "nothing changed");
        assert_eq!(workers.len(), 3);
    }

    fn health_names(set: &HealthSet) -> Vec<String> {
        set.current().iter().map(|(name, _)| name.clone()).collect()
    }

    #[test]
    fn one_health_poller_per_vault_following_the_configuration() {
        let health = HealthSet::default();
        let mut workers = Workers::new(TokenSet::default(), Some(health.clone())).unwrap();
        let on = |name: &str, port: u16, every: u64| {
            let mut e = entry(name);
            e.address = format!("http://127.0.0.1:{port}");
            e.health_interval = Duration::from_secs(every);
            e
        };
        workers.apply(vec![on("a", 1, 30), on("b", 1, 10)]).unwrap();
        assert_eq!(workers.pollers.len(), 1, "one Vault, one poller");
        assert_eq!(
            workers.pollers[0].interval,
            Duration::from_secs(10),
            "the smallest"
        );
        let shared = health.current();
        assert!(Arc::ptr_eq(&shared[0].1, &shared[1].1));
        let first = workers.pollers[0].state.clone();

        // A second Vault gets its own; another TLS setting is another poller too.
        let mut tls = on("d", 1, 30);
        tls.tls.server_name = Some("vault.internal".into());
        let change = workers
            .apply(vec![on("a", 1, 10), on("c", 2, 30), tls])
            .unwrap();
        assert_eq!((change.kept, change.started, change.stopped), (1, 2, 1));
        assert_eq!(workers.pollers.len(), 3);
        assert!(Arc::ptr_eq(&workers.pollers[0].state, &first), "kept");
        assert_eq!(health_names(&health), ["a", "c", "d"]);

        // A changed interval restarts the poller but keeps what it learnt, and the
        // token's worker (only its health interval changed).
        let change = workers.apply(vec![on("a", 1, 5)]).unwrap();
        assert_eq!((change.kept, change.started, change.stopped), (1, 0, 2));
        assert_eq!(workers.pollers.len(), 1);
        assert_eq!(workers.pollers[0].interval, Duration::from_secs(5));
        assert!(Arc::ptr_eq(&workers.pollers[0].state, &first));
        assert_eq!(health_names(&health), ["a"]);

        // The collector off: no poller at all.
        let mut off = Workers::new(TokenSet::default(), None).unwrap();
        off.apply(vec![on("a", 1, 1)]).unwrap();
        assert!(off.pollers.is_empty());
    }
}
