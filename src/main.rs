//! vault-token-exporter: keeps HashiCorp Vault tokens alive and tells Prometheus when each
//! will die.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use vault_token_exporter::{app, cli, config, demo, http, logging, signals};

/// A reason to exit, with its status: 2 for bad configuration, 1 for anything else.
struct Exit(u8, String);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit(code, message)) => {
            eprintln!("vault-token-exporter: error: {message}");
            ExitCode::from(code)
        }
    }
}

fn run() -> Result<(), Exit> {
    let cli = cli::parse(std::env::args_os());
    logging::init(cli.log_level);
    let config_error = |e: config::ConfigError| Exit(2, e.to_string());
    let env = |k: &str| std::env::var(k).ok();
    let web = match &cli.web_config_file {
        Some(path) => http::web_config::load(path).map_err(|e| Exit(2, e.to_string()))?,
        None => Default::default(),
    };
    let (demo, tokens) = if cli.demo {
        let (demo, tokens) =
            demo::start().map_err(|e| Exit(1, format!("cannot start the demo: {e}")))?;
        (Some(demo), tokens)
    } else if let Some(path) = &cli.config_file {
        (None, config::load_file(path, &env).map_err(config_error)?)
    } else {
        (None, vec![config::from_env(&env).map_err(config_error)?])
    };
    let prepared = app::prepare(tokens).map_err(config_error)?;

    let listener = http::bind(&cli.listen_address)
        .map_err(|e| Exit(1, format!("cannot listen on {}: {e}", cli.listen_address)))?;
    let address = listener.local_addr().map_err(|e| Exit(1, e.to_string()))?;
    log::info!("listening on {address}");
    if demo.is_some() {
        // `[::]:9846` is where we listen, not an address to scrape.
        let target = if address.ip().is_unspecified() {
            format!("localhost:{}", address.port())
        } else {
            address.to_string()
        };
        log::info!(
            "demo: point Prometheus at http://{target}{} (static_configs: targets: ['{target}'])",
            cli.telemetry_path
        );
    }
    signals::exit_on_termination().map_err(|e| Exit(1, format!("cannot handle signals: {e}")))?;

    let collectors = collectors::collector::Collectors::new(
        &collectors::collector::CollectorContext {
            tokens: prepared.states.clone(),
        },
        &cli.collectors,
    );
    log::info!("collectors enabled: {}", collectors.names().join(", "));
    let ready = Arc::new(AtomicBool::new(false));
    // Scrapes are written by the collectors directly: the bytes a prometheus Registry and
    // TextEncoder would serve, without the protobuf structures (see http::Site).
    let mut site = http::Site::for_collectors(
        Arc::new(collectors),
        cli.telemetry_path.clone(),
        ready.clone(),
    );
    site.headers = web.headers;
    let count = prepared.states.len();
    prepared
        .start(Arc::new(AtomicBool::new(false)))
        .map_err(|e| Exit(1, format!("cannot start renewal workers: {e}")))?;
    ready.store(true, std::sync::atomic::Ordering::Relaxed);
    log::info!("renewing {count} vault token(s)");
    http::serve(
        listener,
        http::Gate {
            site: Arc::new(site),
            tls: web.tls,
            basic_auth: web.basic_auth,
        },
    )
}
