//! Signals, as an operator expects of a daemon: SIGTERM, SIGINT and SIGQUIT end the
//! process at once with status 0 (workers hold nothing that needs flushing, and one may
//! be stuck in a Vault call for its whole timeout); SIGHUP reloads the configuration; the
//! other signals whose default action would end the process are logged and ignored, so
//! that none kills the renewer silently. (SIGPIPE is ignored by the Rust runtime itself:
//! a client that hangs up is a write error, not a signal.)

use std::sync::Arc;

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM};
use signal_hook::iterator::Signals;
use signal_hook::low_level::signal_name;

use crate::reload::ReloadTarget;

/// Catchable signals that would otherwise end the process without a word.
const IGNORED: &[i32] = &[
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGALRM,
    libc::SIGVTALRM,
    libc::SIGPROF,
    libc::SIGIO,
    libc::SIGPWR,
    libc::SIGSTKFLT,
    libc::SIGXCPU,
    libc::SIGXFSZ,
];

/// Installs the handlers, first thing (a signal before them would end the process);
/// SIGHUP goes to the reloader once it is set in the returned cell. Returns at once.
pub fn install() -> std::io::Result<ReloadTarget> {
    let target: ReloadTarget = Arc::default();
    let reloader = target.clone();
    let mut signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP].iter().chain(IGNORED))?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            for signal in signals.forever() {
                let name = signal_name(signal).unwrap_or("an unknown signal");
                match signal {
                    SIGTERM | SIGINT | SIGQUIT => {
                        log::info!("received {name}, shutting down");
                        std::process::exit(0);
                    }
                    SIGHUP => match reloader.get() {
                        Some(reloader) => {
                            log::info!("received {name}, reloading the configuration");
                            // The outcome is logged and exported by the reloader.
                            let _ = reloader.reload();
                        }
                        None => log::info!(
                            "received {name} while the configuration is being loaded, ignored"
                        ),
                    },
                    _ => log::warn!("received {name}, ignored (SIGHUP reloads, SIGTERM stops)"),
                }
            }
        })?;
    Ok(target)
}
