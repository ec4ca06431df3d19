//! The engine of vault-token-exporter: the Vault client, the renewal workers and the
//! Prometheus collectors that export what the workers learn.
//!
//! Data flows one way: workers write [`state::TokenState`] atomics, collectors read them
//! at scrape time. A scrape never talks to Vault and never waits for a worker.

#![forbid(unsafe_code)]

pub mod client;
pub mod clock;
pub mod collect;
pub mod collector;
pub mod error;
pub mod exporter;
pub mod family;
pub mod health;
pub mod logfmt;
pub mod parse;
pub mod process;
pub mod proxy;
pub mod schedule;
pub mod secret;
pub mod source;
pub mod state;
pub mod tls;
pub mod token_collector;
pub mod watch;
pub mod worker;
