//! Turns the configuration into running workers: one Vault client per token (sharing one
//! agent per TLS setting), one std thread per token, one watcher for all token files.
//!
//! [`Workers`] is the running set. [`Workers::apply`] moves it to a new configuration
//! (start-up and every reload): entries equal to a running one keep their worker, state
//! and counters; removed ones are stopped and leave the exported set; new ones start.
//! Every new client is built before anything changes, so a configuration with an
//! unusable TLS file changes nothing.

use std::sync::Arc;
use std::time::Duration;

use collectors::client::{Agents, VaultClient};
use collectors::clock::{Clock, SystemClock};
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

/// The running workers, and the token set the collectors export.
pub struct Workers {
    clock: Arc<dyn Clock>,
    watcher: FileWatcher,
    tokens: TokenSet,
    running: Vec<Running>,
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
    /// No workers yet; starts the file watcher.
    pub fn new(tokens: TokenSet) -> std::io::Result<Workers> {
        limit_malloc_arenas();
        Ok(Workers {
            clock: Arc::new(SystemClock::default()),
            watcher: collectors::watch::spawn_file_watcher(Vec::new())?,
            tokens,
            running: Vec::new(),
        })
    }

    /// Moves to `config`. On an error nothing has changed.
    pub fn apply(&mut self, config: Vec<TokenConfig>) -> Result<Change, ConfigError> {
        // Build every new worker first: a bad TLS file in one entry changes nothing.
        let agents = Agents::default();
        let mut next: Vec<Result<usize, Running>> = Vec::with_capacity(config.len());
        let mut workers = Vec::new();
        for token in config {
            if let Some(i) = self.running.iter().position(|r| r.config == token) {
                next.push(Ok(i));
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
                Ok(i) => {
                    change.kept += 1;
                    running.push(old[i].take().expect("an entry is kept once"));
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
            let stack = stack::ThreadStack::current();
            worker.run(RELEASE_AFTER, || {
                if let Some(stack) = &stack {
                    stack.release_unused();
                }
            });
        })?;
    Ok(())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets tunables of glibc's allocator; any value is valid.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
        libc::mallopt(libc::M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {
    let _ = (MALLOC_ARENAS, MALLOC_MMAP_THRESHOLD);
}

#[cfg(target_os = "linux")]
mod stack {
    /// The usable stack of the current thread.
    pub struct ThreadStack {
        /// Lowest usable address (above the guard page).
        low: usize,
    }

    /// Kept below the current frame: the madvise call's own frame and the red zone (128
    /// bytes on x86-64) need far less.
    const MARGIN: usize = 1024;

    impl ThreadStack {
        pub fn current() -> Option<ThreadStack> {
            // SAFETY: the attribute object is initialised by pthread_getattr_np before
            // it is read, and destroyed once; the out-pointers are valid locals.
            unsafe {
                let mut attr: libc::pthread_attr_t = std::mem::zeroed();
                if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
                    return None;
                }
                let mut addr: *mut libc::c_void = std::ptr::null_mut();
                let mut size: libc::size_t = 0;
                let ok = libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0;
                libc::pthread_attr_destroy(&mut attr);
                ok.then_some(ThreadStack { low: addr as usize })
            }
        }

        /// Drops the pages between the bottom of the stack and a margin below the
        /// current frame; they come back zeroed if a deeper call needs them again.
        #[inline(never)]
        pub fn release_unused(&self) {
            let here = 0u8;
            let sp = std::hint::black_box(&here) as *const u8 as usize;
            let page = 4096;
            let end = sp.saturating_sub(MARGIN) & !(page - 1);
            let start = (self.low + page - 1) & !(page - 1);
            if end > start {
                // SAFETY: [start, end) lies in this thread's own stack, below every live
                // frame (the stack grows down from above `sp`); the kernel zero-fills the
                // pages again on the next touch. MADV_DONTNEED changes no mapping.
                unsafe {
                    libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED);
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod stack {
    pub struct ThreadStack;
    impl ThreadStack {
        pub fn current() -> Option<ThreadStack> {
            None
        }
        pub fn release_unused(&self) {}
    }
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
        }
    }

    fn names(set: &TokenSet) -> Vec<String> {
        set.current().iter().map(|t| t.vault.clone()).collect()
    }

    #[test]
    fn apply_keeps_equal_entries_and_changes_nothing_on_an_error() {
        let set = TokenSet::default();
        let mut workers = Workers::new(set.clone()).unwrap();
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
}
