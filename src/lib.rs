//! vault-token-exporter: keeps HashiCorp Vault tokens alive and exports, for Prometheus,
//! when each will die. This crate is the shell (flags, config, HTTP, signals); the engine
//! (Vault client, workers, collectors) is the `collectors` crate.

// No `unsafe` outside `sys`, the one module of platform calls (each with its SAFETY
// comment). `deny`, not `forbid`: `forbid` could not be lifted for that module.
#![deny(unsafe_code)]

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
/// Built without the `demo` feature: `--demo` explains why it cannot run.
#[cfg(not(feature = "demo"))]
pub mod demo {
    use crate::config::TokenConfig;

    /// Nothing to keep alive: there is no demo in this build.
    pub struct Demo;

    /// Always an error: this binary was built without the Vault double.
    pub fn start() -> std::io::Result<(Demo, Vec<TokenConfig>)> {
        Err(std::io::Error::other(
            "this binary was built without the `demo` feature",
        ))
    }
}
pub mod duration;
pub mod http;
pub mod logging;
pub mod reload;
pub mod signals;
pub mod status_page;
#[allow(unsafe_code)]
mod sys;
