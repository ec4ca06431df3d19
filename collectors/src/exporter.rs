//! The `exporter` collector: what this exporter is (`vault_token_exporter_build_info`) and
//! how its configuration last loaded, as the (re)loader records it in [`ConfigStatus`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use prometheus::core::Desc;
use prometheus::proto::{MetricFamily, MetricType};

use crate::collect::{Collect, CollectError};
use crate::family::{describe, family, gauge, label};
use crate::state::AtomicF64;

/// `vault_token_exporter_config_last_reload_successful` and
/// `..._success_timestamp_seconds`: written by the (re)loader, read by scrapes.
#[derive(Debug)]
pub struct ConfigStatus {
    successful: AtomicBool,
    last_success: AtomicF64,
}

impl Default for ConfigStatus {
    fn default() -> Self {
        ConfigStatus {
            successful: AtomicBool::new(false),
            last_success: AtomicF64::absent(),
        }
    }
}

impl ConfigStatus {
    /// The configuration was (re)loaded at `unix` seconds.
    pub fn loaded(&self, unix: f64) {
        self.last_success.set(unix);
        self.successful.store(true, Ordering::Relaxed);
    }

    /// A reload failed: the previous configuration keeps running.
    pub fn failed(&self) {
        self.successful.store(false, Ordering::Relaxed);
    }

    pub fn successful(&self) -> bool {
        self.successful.load(Ordering::Relaxed)
    }
}

/// What this binary was built from, recorded by `build.rs`.
pub mod build {
    /// The package version.
    pub const VERSION: &str = env!("CARGO_PKG_VERSION");
    /// `git rev-parse --short HEAD` at build time, `unknown` outside a git checkout.
    pub const REVISION: &str = env!("VTE_GIT_REVISION");
    /// `rustc --version` of the compiler that built it.
    pub const RUSTC_VERSION: &str = env!("VTE_RUSTC_VERSION");
}

/// `vault_token_exporter_build_info` and the config reload gauges.
pub(crate) struct ExporterInfo(pub(crate) Arc<ConfigStatus>);

/// Name and help of each family, and its label names.
const BUILD_INFO: (&str, &str, &[&str]) = (
    "vault_token_exporter_build_info",
    "Build information of vault-token-exporter; the value is 1.",
    &["version", "revision", "rustc_version"],
);
const RELOAD_SUCCESSFUL: (&str, &str, &[&str]) = (
    "vault_token_exporter_config_last_reload_successful",
    "1 if the last (re)load of the configuration succeeded.",
    &[],
);
const RELOAD_SUCCESS_TIME: (&str, &str, &[&str]) = (
    "vault_token_exporter_config_last_reload_success_timestamp_seconds",
    "Unix time of the last successful (re)load of the configuration.",
    &[],
);

impl Collect for ExporterInfo {
    fn describe(&self) -> Vec<Desc> {
        [BUILD_INFO, RELOAD_SUCCESSFUL, RELOAD_SUCCESS_TIME]
            .iter()
            .map(|(name, help, labels)| describe(name, help, labels))
            .collect()
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
        let gauge_family =
            |(name, help, _): (&str, &str, &[&str])| family(name, help, MetricType::GAUGE, 1);
        let mut f = gauge_family(BUILD_INFO);
        let values = [build::VERSION, build::REVISION, build::RUSTC_VERSION];
        let labels = BUILD_INFO.2.iter().zip(values);
        f.mut_metric().push(gauge(
            labels.map(|(name, value)| label(name, value)).collect(),
            1.0,
        ));
        out.push(f);
        let mut successful = gauge_family(RELOAD_SUCCESSFUL);
        successful
            .mut_metric()
            .push(gauge(Vec::new(), f64::from(u8::from(self.0.successful()))));
        out.push(successful);
        if let Some(at) = self.0.last_success.get() {
            let mut f = gauge_family(RELOAD_SUCCESS_TIME);
            f.mut_metric().push(gauge(Vec::new(), at));
            out.push(f);
        }
        Ok(())
    }
}
