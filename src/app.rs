//! Turns the configuration into running workers: one Vault client per token (sharing one
//! agent per TLS setting), one std thread per token, one watcher for all token files.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use collectors::client::{Agents, VaultClient};
use collectors::source::loose_permissions_warning;
use collectors::state::TokenState;
use collectors::worker::{Clock, SystemClock, Worker};

use crate::config::{ConfigError, TokenConfig};

/// A worker needs little stack: no recursion, and TLS state lives on the heap. Small
/// stacks keep thousands of tokens cheap.
const WORKER_STACK: usize = 256 * 1024;

/// Workers built and ready to start.
pub struct Prepared {
    workers: Vec<Worker>,
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
        for worker in self.workers {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("renew".into())
                .stack_size(WORKER_STACK)
                .spawn(move || worker.run(stop))?;
        }
        collectors::watch::spawn_file_watcher(self.watched)
    }
}
