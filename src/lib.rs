//! vault-token-exporter: keeps HashiCorp Vault tokens alive and exports, for Prometheus,
//! when each will die. This crate is the shell (flags, config, HTTP, signals); the engine
//! (Vault client, workers, collectors) is the `collectors` crate.

pub mod app;
pub mod cli;
pub mod config;
pub mod demo;
pub mod duration;
pub mod http;
pub mod logging;
pub mod signals;
