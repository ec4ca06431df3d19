//! The black-box tests: the exporter binary over loopback against the Vault test double,
//! a real OpenBao, promtool, a real Prometheus and a headless browser. One test binary
//! (as ripgrep does): one link instead of fifteen, and one place for the harness
//! (`common`).

mod common;
mod fault_support;

mod alert_gauges;
mod cli_config;
mod dashboards;
mod faults;
mod health;
mod http_robustness;
mod openbao;
mod operate;
mod prometheus_e2e;
mod renewal;
mod secrets;
mod status_page;
mod vault_tls;
mod web_config;
