//! vault-token-exporter: keeps HashiCorp Vault tokens alive and tells Prometheus when each
//! will die.

#![forbid(unsafe_code)]

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use collectors::collector::{CollectorContext, Collectors};
use collectors::exporter::ConfigStatus;
use collectors::health::HealthSet;
use collectors::state::TokenSet;
use vault_token_exporter::reload::{answer_reload, read_web_config, Reloader, Source};
use vault_token_exporter::{app, check, cli, config, demo, http, logging, signals, status_page};

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
    logging::init(cli.log_level, cli.log_format);
    let reload_target =
        signals::install().map_err(|e| Exit(1, format!("cannot handle signals: {e}")))?;
    let config_error = |e: config::ConfigError| Exit(2, e.to_string());
    let web = match &cli.web_config_file {
        Some(path) => Some(read_web_config(path).map_err(config_error)?),
        None => None,
    };
    let (demo, source) = if cli.demo {
        let (demo, tokens) =
            demo::start().map_err(|e| Exit(1, format!("cannot start the demo: {e}")))?;
        (Some(demo), Source::Fixed(tokens))
    } else if let Some(path) = &cli.config_file {
        (None, Source::File(path.clone()))
    } else {
        (None, Source::Env)
    };
    let tokens = source.load().map_err(config_error)?;
    app::check_clients(&tokens).map_err(config_error)?;
    if cli.config_check {
        let what = match &cli.config_file {
            Some(path) => path.display().to_string(),
            None => "the environment".into(),
        };
        let web = match &cli.web_config_file {
            Some(path) => format!(" and web config {}", path.display()),
            None => String::new(),
        };
        println!("config ok: {what}{web}: {} vault token(s)", tokens.len());
        return Ok(());
    }
    if cli.check {
        let healthy = check::run(&tokens, &mut std::io::stdout()).map_err(config_error)?;
        return match healthy {
            true => Ok(()),
            false => Err(Exit(
                1,
                "not every token is renewing or never expiring".into(),
            )),
        };
    }

    let listener = http::bind(&cli.listen_address)
        .map_err(|e| Exit(1, format!("cannot listen on {}: {e}", cli.listen_address)))?;
    let address = listener.local_addr().map_err(|e| Exit(1, e.to_string()))?;
    let context = CollectorContext {
        tokens: TokenSet::default(),
        config: Arc::new(ConfigStatus::default()),
        health: HealthSet::default(),
    };
    // `--no-collector.vault` stops the polling, not only the series.
    let health = cli
        .collectors
        .contains(&"vault")
        .then(|| context.health.clone());
    let collectors = Collectors::new(&context, &cli.collectors);
    log::info!("collectors enabled: {}", collectors.names().join(", "));
    // Ready once the configuration is loaded and its workers run.
    let ready = Arc::new(AtomicBool::new(false));
    // Scrapes are written by the collectors directly: the bytes a prometheus Registry and
    // TextEncoder would serve, without the protobuf structures (see http::Site).
    let mut site = http::Site::for_collectors(
        Arc::new(collectors),
        cli.telemetry_path.clone(),
        ready.clone(),
    );
    let web = web.unwrap_or_default();
    site.headers = web.headers;
    let (page_tokens, page_health) = (context.tokens.clone(), health.clone());
    site.status_page = Some(Arc::new(move |telemetry_path| {
        status_page::render_current(&page_tokens, page_health.as_ref(), telemetry_path)
    }));
    if cli.enable_lifecycle {
        let target = reload_target.clone();
        site.reload = Some(Arc::new(move || answer_reload(&target)));
    }
    // Basic-auth users change with a reload; TLS and headers need a restart.
    let basic_auth = Arc::new(RwLock::new(web.basic_auth));
    let gate = http::Gate {
        site: Arc::new(site),
        tls: web.tls,
        basic_auth: basic_auth.clone(),
    };
    // The server answers (/-/healthy at once, /-/ready 503) while the workers start.
    let http = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || match http::serve(listener, gate) {})
        .map_err(|e| Exit(1, format!("cannot serve HTTP: {e}")))?;

    let reloader = Reloader::start(
        source,
        tokens,
        cli.web_config_file.clone(),
        context.tokens.clone(),
        health,
        context.config.clone(),
    )
    .map_err(|e| Exit(1, format!("cannot start renewal workers: {e}")))?;
    reloader.on_web_config(Box::new(move |web| {
        *basic_auth.write().unwrap_or_else(|e| e.into_inner()) = web.basic_auth;
    }));
    let reloader = Arc::new(reloader);
    let _ = reload_target.set(reloader.clone());
    ready.store(true, Ordering::Relaxed);
    log::info!("renewing {} vault token(s)", reloader.tokens());
    // Said once ready, so that whoever waits for this line finds /-/ready answering 200;
    // the port answers (/-/healthy, /-/ready 503) from the bind on.
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

    // The acceptor restarts itself after a panic: it never ends.
    let _ = http.join();
    Err(Exit(1, "the HTTP server stopped".into()))
}
