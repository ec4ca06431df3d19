//! Turns the configuration into running workers: one Vault client per token (sharing one
//! agent per TLS setting), one std thread per token, one watcher for all token files.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use collectors::client::{Agents, VaultClient};
use collectors::source::loose_permissions_warning;
use collectors::state::TokenState;
use collectors::worker::{Clock, SystemClock, Worker};

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

/// Workers built and ready to start.
pub struct Prepared {
    workers: Vec<Worker>,
    clock: Arc<dyn Clock>,
    watched: Vec<(std::path::PathBuf, Arc<collectors::watch::Wakeup>)>,
    /// The state of every token, in configuration order.
    pub states: Vec<Arc<TokenState>>,
}

/// Builds every client and worker; fails (exit 2) on an unusable TLS setting before
/// anything starts.
pub fn prepare(tokens: Vec<TokenConfig>) -> Result<Prepared, ConfigError> {
    let agents = Agents::default();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock::default());
    let mut prepared = Prepared {
        workers: Vec::with_capacity(tokens.len()),
        clock: clock.clone(),
        watched: Vec::new(),
        states: Vec::with_capacity(tokens.len()),
    };
    for token in tokens {
        let agent = agents
            .get(&token.tls)
            .map_err(|e| ConfigError(format!("vault {:?}: tls: {e}", token.name)))?;
        if token.tls.insecure_skip_verify {
            log::warn!(
                "TLS certificate verification is disabled for vault={}: anyone on the path can read its token",
                token.name
            );
        }
        let client = VaultClient::new(
            agent,
            &token.address,
            token.namespace.clone(),
            token.timeout,
        );
        let state = Arc::new(TokenState::new(token.name.clone()));
        let worker = Worker::new(
            Arc::new(client),
            token.source.clone(),
            state.clone(),
            clock.clone(),
            token.renew.clone(),
        );
        if let Some(path) = token.source.path() {
            if let Some(warning) = loose_permissions_warning(path) {
                log::warn!("{warning} vault={}", token.name);
            }
            prepared.watched.push((path.to_owned(), worker.wakeup()));
        }
        prepared.states.push(state);
        prepared.workers.push(worker);
    }
    Ok(prepared)
}

impl Prepared {
    /// Starts every worker thread and the file watcher; returns at once.
    pub fn start(self, stop: Arc<AtomicBool>) -> std::io::Result<()> {
        limit_malloc_arenas();
        for worker in self.workers {
            let (stop, clock) = (stop.clone(), self.clock.clone());
            std::thread::Builder::new()
                .name("renew".into())
                .stack_size(WORKER_STACK)
                .spawn(move || run_worker(worker, clock.as_ref(), &stop))?;
        }
        collectors::watch::spawn_file_watcher(self.watched)
    }
}

/// [`Worker::run`]'s loop, giving the stack pages a Vault call touched back to the kernel
/// before each sleep. A call goes deep (the resolver, the HTTP client, the JSON parser:
/// about 24 KiB of stack) and then the worker sleeps for half a lease: without this,
/// every idle worker keeps those pages, 24 MiB per thousand tokens.
/// Sleeps at least this long give their stack pages back first.
const RELEASE_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

fn run_worker(mut worker: Worker, clock: &dyn Clock, stop: &AtomicBool) {
    let wakeup = worker.wakeup();
    let stack = stack::ThreadStack::current();
    loop {
        let sleep = worker.step();
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // Only before a long sleep: each release costs the other cores a TLB flush, and a
        // worker retrying every second would touch the same pages again at once.
        let long_sleep = sleep.is_none_or(|until| until >= clock.monotonic() + RELEASE_AFTER);
        if let (Some(stack), true) = (&stack, long_sleep) {
            stack.release_unused();
        }
        let woken = clock.sleep_until(sleep, &wakeup);
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if woken {
            worker.on_source_changed();
        }
    }
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
