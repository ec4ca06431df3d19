//! SIGTERM and SIGINT end the process at once with status 0: workers hold nothing that
//! needs flushing, and one may be stuck in a Vault call for its whole timeout.

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

/// Installs the handler; the process exits 0 on the first SIGTERM or SIGINT.
pub fn exit_on_termination() -> std::io::Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])?;
    std::thread::Builder::new()
        .name("signals".into())
        .stack_size(64 * 1024)
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let name = if signal == SIGTERM {
                    "SIGTERM"
                } else {
                    "SIGINT"
                };
                log::info!("received {name}, shutting down");
                std::process::exit(0);
            }
        })?;
    Ok(())
}
