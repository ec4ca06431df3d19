//! Reloading the configuration while the exporter runs (SIGHUP, and `POST /-/reload`
//! with `--web.enable-lifecycle`), as Prometheus does.
//!
//! The [`Reloader`] owns the running workers and can be called from any thread; calls
//! are serialised. A reload reads and checks the config file and the web config file
//! first: an invalid one changes nothing (an ERROR line and
//! `vault_token_exporter_config_last_reload_successful` 0; the old configuration keeps
//! running). Otherwise the running set moves to the new configuration (see
//! [`crate::app::Workers::apply`]) and the new web config goes to whoever serves HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use collectors::clock::unix_now;
use collectors::exporter::ConfigStatus;
use collectors::health::HealthSet;
use collectors::state::TokenSet;

use crate::app::{Change, Workers};
use crate::config::{self, ConfigError, TokenConfig};
use crate::http::web_config::WebSetup;

/// Where the token list comes from.
pub enum Source {
    /// `--config.file`: read again on each reload.
    File(PathBuf),
    /// Env mode: the `VAULT_*` variables of the process, which a reload reads again (only
    /// a `~/.vault-token` that appeared or went can change the outcome).
    Env,
    /// `--demo`: the demo's tokens, fixed.
    Fixed(Vec<TokenConfig>),
}

impl Source {
    /// Reads and checks the token list (no network).
    pub fn load(&self) -> Result<Vec<TokenConfig>, ConfigError> {
        let env = |k: &str| std::env::var(k).ok();
        match self {
            Source::File(path) => config::load_file(path, &env),
            Source::Env => Ok(vec![config::from_env(&env)?]),
            Source::Fixed(tokens) => Ok(tokens.clone()),
        }
    }
}

/// Reads and checks the web config file (`--web.config.file`); no network.
pub fn read_web_config(path: &Path) -> Result<WebSetup, ConfigError> {
    crate::http::web_config::load(path).map_err(|e| ConfigError(e.to_string()))
}

/// What a reload hands the HTTP side: the newly read web config.
pub type WebConfigHook = Box<dyn Fn(WebSetup) + Send + Sync>;

/// Owns the running configuration; [`Reloader::reload`] moves it to the files' contents.
pub struct Reloader {
    source: Source,
    web_config_file: Option<PathBuf>,
    workers: Mutex<Workers>,
    status: Arc<ConfigStatus>,
    on_web_config: Mutex<Option<WebConfigHook>>,
}

impl Reloader {
    /// Starts the workers of `tokens` (already loaded from `source`): the first load.
    /// `health`: where the health pollers publish, `None` when the `vault` collector is off.
    pub fn start(
        source: Source,
        tokens: Vec<TokenConfig>,
        web_config_file: Option<PathBuf>,
        set: TokenSet,
        health: Option<HealthSet>,
        status: Arc<ConfigStatus>,
    ) -> Result<Reloader, ConfigError> {
        let mut workers = Workers::new(set, health)
            .map_err(|e| ConfigError(format!("cannot watch token files: {e}")))?;
        workers.apply(tokens)?;
        status.loaded(unix_now());
        Ok(Reloader {
            source,
            web_config_file,
            workers: Mutex::new(workers),
            status,
            on_web_config: Mutex::new(None),
        })
    }

    /// Where each successfully re-read web config goes (the HTTP side).
    pub fn on_web_config(&self, hook: WebConfigHook) {
        *self.on_web_config.lock().unwrap_or_else(|e| e.into_inner()) = Some(hook);
    }

    /// The number of configured tokens.
    pub fn tokens(&self) -> usize {
        self.workers.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Re-reads the config and web config files and applies them; logs the outcome. On an
    /// error nothing changes and the error is returned (for `POST /-/reload`'s answer).
    pub fn reload(&self) -> Result<Change, ConfigError> {
        let mut workers = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        let outcome = self.source.load().and_then(|tokens| {
            let web = self
                .web_config_file
                .as_deref()
                .map(read_web_config)
                .transpose()?;
            let change = workers.apply(tokens)?;
            Ok((change, web))
        });
        match outcome {
            Ok((change, web)) => {
                if let Some(web) = web {
                    if let Some(hook) =
                        &*self.on_web_config.lock().unwrap_or_else(|e| e.into_inner())
                    {
                        hook(web);
                    }
                }
                self.status.loaded(unix_now());
                log::info!(
                    "configuration reloaded: {} vault token(s), {} kept, {} started, {} stopped",
                    workers.len(),
                    change.kept,
                    change.started,
                    change.stopped
                );
                Ok(change)
            }
            Err(e) => {
                self.status.failed();
                log::error!(
                    "configuration reload failed, the previous configuration keeps running: {e}"
                );
                Err(e)
            }
        }
    }
}

/// The reloader, once the configuration is loaded: SIGHUP and `POST /-/reload` can
/// arrive before (the signal handlers and the server start first).
pub type ReloadTarget = Arc<OnceLock<Arc<Reloader>>>;

/// The answer to `POST /-/reload` (with `--web.enable-lifecycle`): status and body, as
/// Prometheus answers it (200, or 500 with the reason; 503 while still starting).
pub fn answer_reload(target: &ReloadTarget) -> (u16, String) {
    match target.get() {
        None => (503, "the configuration is still being loaded\n".into()),
        Some(reloader) => match reloader.reload() {
            Ok(_) => (200, "configuration reloaded\n".into()),
            Err(e) => (500, format!("failed to reload config: {e}\n")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn post_reload_answers_as_prometheus_does() {
        let target = ReloadTarget::default();
        assert_eq!(answer_reload(&target).0, 503, "before the first load");
        let dir = std::env::temp_dir().join(format!("vte-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("config.yml");
        let yaml =
            "vaults:\n  - name: a\n    address: http://127.0.0.1:1\n    token_file: /nonexistent\n";
        std::fs::write(&path, yaml).unwrap();
        let source = Source::File(path.clone());
        let tokens = source.load().unwrap();
        let status = Arc::new(ConfigStatus::default());
        let reloader = Reloader::start(
            source,
            tokens,
            None,
            TokenSet::default(),
            None,
            status.clone(),
        );
        let _ = target.set(Arc::new(reloader.unwrap()));
        assert_eq!(
            answer_reload(&target),
            (200, "configuration reloaded\n".into())
        );
        std::fs::write(&path, "vaults: [\n").unwrap();
        let (code, body) = answer_reload(&target);
        assert_eq!(code, 500);
        assert!(body.contains("config.yml"), "{body}");
        assert!(!status.successful());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
