//! Command-line flags, in the Prometheus exporters' dotted style (`--web.listen-address`).

use std::path::PathBuf;

use clap::{Arg, ArgAction, Command};
use collectors::collector::COLLECTORS;
use collectors::exporter::build;

use crate::logging::LogFormat;

/// The parsed command line.
#[derive(Clone, Debug)]
pub struct Cli {
    pub config_file: Option<PathBuf>,
    pub listen_address: String,
    pub telemetry_path: String,
    pub web_config_file: Option<PathBuf>,
    /// Names of the collectors to run.
    pub collectors: Vec<&'static str>,
    /// `--log.level`, when given.
    pub log_level: Option<log::LevelFilter>,
    pub log_format: LogFormat,
    pub demo: bool,
    /// `--config.check`: validate the config and web config files, then exit.
    pub config_check: bool,
    /// `--web.enable-lifecycle`: `POST /-/reload` reloads the configuration.
    pub enable_lifecycle: bool,
    /// `check`: look every token up once, print its state, exit.
    pub check: bool,
}

/// `--version`: the version, and what it was built from.
fn version() -> String {
    format!(
        "{} (revision {}, {})",
        build::VERSION,
        build::REVISION,
        build::RUSTC_VERSION
    )
}

fn command() -> Command {
    let mut cmd = Command::new("vault-token-exporter")
        .version(version())
        .about("Keeps HashiCorp Vault tokens alive and exports when they will die, for Prometheus.")
        .after_help(
            "Without --config.file, watches one token named `default` configured as the Vault CLI is: \
             VAULT_ADDR, VAULT_TOKEN (else ~/.vault-token), VAULT_NAMESPACE, VAULT_CACERT, VAULT_CAPATH, \
             VAULT_CLIENT_CERT, VAULT_CLIENT_KEY, VAULT_TLS_SERVER_NAME, VAULT_SKIP_VERIFY; OpenBao's \
             BAO_* names where the VAULT_* one is unset. HTTPS_PROXY, HTTP_PROXY and NO_PROXY apply as \
             for the Vault CLI.",
        )
        .arg(
            Arg::new("config.file")
                .long("config.file")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .global(true)
                .help("YAML file listing the Vaults and tokens to watch"),
        )
        .arg(
            Arg::new("config.check")
                .long("config.check")
                .action(ArgAction::SetTrue)
                .help("Check the config file and web config file (no network), print the outcome and exit: 0 if valid, 2 if not"),
        )
        .arg(
            Arg::new("web.listen-address")
                .long("web.listen-address")
                .value_name("ADDR")
                .default_value(":9846")
                .help("Address to listen on for the web interface and telemetry"),
        )
        .arg(
            Arg::new("web.telemetry-path")
                .long("web.telemetry-path")
                .value_name("PATH")
                .default_value("/metrics")
                .value_parser(telemetry_path)
                .help("Path under which to expose metrics"),
        )
        .arg(
            Arg::new("web.config.file")
                .long("web.config.file")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help("exporter-toolkit web config file: TLS and basic auth"),
        )
        .arg(
            Arg::new("web.enable-lifecycle")
                .long("web.enable-lifecycle")
                .action(ArgAction::SetTrue)
                .help("Enable POST /-/reload, which reloads the configuration as SIGHUP does"),
        )
        .arg(
            Arg::new("log.level")
                .long("log.level")
                .value_name("LEVEL")
                .value_parser(["error", "warn", "info", "debug", "trace"])
                .global(true)
                .help("Only log messages with the given severity or above [default: info; RUST_LOG applies when not given]"),
        )
        .arg(
            Arg::new("log.format")
                .long("log.format")
                .value_name("FORMAT")
                .value_parser(["logfmt", "json"])
                .default_value("logfmt")
                .global(true)
                .help("Output format of log messages: logfmt (text) or json (one object per line)"),
        )
        .subcommand(
            Command::new("check")
                .about("Look every configured token up once (no renewal) and print its state; exit 0 if every token is renewing or never expires, 1 otherwise, 2 on a config error"),
        )
        .arg(
            Arg::new("demo")
                .long("demo")
                .action(ArgAction::SetTrue)
                .conflicts_with("config.file")
                .help("Run against an embedded Vault test double with example tokens in every state"),
        )
        .arg(
            Arg::new("collector.disable-defaults")
                .long("collector.disable-defaults")
                .action(ArgAction::SetTrue)
                .help("Disable all collectors by default; enable them one by one with --collector.NAME"),
        );
    for spec in COLLECTORS {
        let on = format!("collector.{}", spec.name);
        let off = format!("no-collector.{}", spec.name);
        let default = if spec.enabled_by_default {
            "enabled"
        } else {
            "disabled"
        };
        cmd = cmd
            .arg(
                Arg::new(on.clone())
                    .long(on.clone())
                    .action(ArgAction::SetTrue)
                    .overrides_with(off.clone())
                    .help(format!(
                        "Enable the {} collector: {} [default: {default}]",
                        spec.name, spec.help
                    )),
            )
            .arg(
                Arg::new(off.clone())
                    .long(off)
                    .action(ArgAction::SetTrue)
                    .overrides_with(on)
                    .help(format!("Disable the {} collector", spec.name)),
            );
    }
    cmd
}

/// Paths the exporter serves itself; metrics there would hide them or be hidden.
const RESERVED_PATHS: [&str; 4] = ["/", "/-/healthy", "/-/ready", "/-/reload"];

/// `--web.telemetry-path`: an absolute path that is not one of the exporter's own pages.
fn telemetry_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("{path:?} must start with /"));
    }
    if RESERVED_PATHS.contains(&path) {
        return Err(format!(
            "{path:?} is taken by the exporter itself ({})",
            RESERVED_PATHS.join(", ")
        ));
    }
    Ok(path.to_owned())
}

/// Parses `args` (program name first); clap prints help, version or a usage error and exits.
pub fn parse<I, T>(args: I) -> Cli
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = command().get_matches_from(args);
    let disable_defaults = m.get_flag("collector.disable-defaults");
    let collectors = COLLECTORS
        .iter()
        .filter(|spec| {
            if m.get_flag(&format!("no-collector.{}", spec.name)) {
                false
            } else if m.get_flag(&format!("collector.{}", spec.name)) {
                true
            } else {
                spec.enabled_by_default && !disable_defaults
            }
        })
        .map(|spec| spec.name)
        .collect();
    let log_level = m
        .get_one::<String>("log.level")
        .and_then(|l| l.parse::<log::LevelFilter>().ok());
    Cli {
        config_file: m.get_one::<PathBuf>("config.file").cloned(),
        listen_address: m
            .get_one::<String>("web.listen-address")
            .cloned()
            .unwrap_or_default(),
        telemetry_path: m
            .get_one::<String>("web.telemetry-path")
            .cloned()
            .unwrap_or_default(),
        web_config_file: m.get_one::<PathBuf>("web.config.file").cloned(),
        collectors,
        log_level,
        log_format: match m.get_one::<String>("log.format").map(String::as_str) {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Logfmt,
        },
        demo: m.get_flag("demo"),
        config_check: m.get_flag("config.check"),
        enable_lifecycle: m.get_flag("web.enable-lifecycle"),
        check: m.subcommand_matches("check").is_some(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_args(args: &[&str]) -> Cli {
        parse(std::iter::once("vault-token-exporter").chain(args.iter().copied()))
    }

    #[test]
    fn defaults_follow_exporter_conventions() {
        let cli = parse_args(&[]);
        assert_eq!(cli.listen_address, ":9846");
        assert_eq!(cli.telemetry_path, "/metrics");
        assert_eq!(cli.collectors, ["token", "vault", "exporter", "process"]);
        assert_eq!(cli.log_level, None);
        assert!(!cli.demo && cli.config_file.is_none());
    }

    #[test]
    fn collectors_switch_on_and_off() {
        assert_eq!(
            parse_args(&["--no-collector.process"]).collectors,
            ["token", "vault", "exporter"]
        );
        assert_eq!(
            parse_args(&["--collector.disable-defaults", "--collector.token"]).collectors,
            ["token"]
        );
        assert_eq!(
            parse_args(&["--no-collector.token", "--collector.token"]).collectors,
            ["token", "vault", "exporter", "process"]
        );
    }

    #[test]
    fn dotted_flags_with_equals() {
        let cli = parse_args(&[
            "--config.file=/etc/vte.yml",
            "--web.listen-address=127.0.0.1:0",
            "--web.telemetry-path=/m",
            "--log.level=debug",
        ]);
        assert_eq!(cli.config_file.unwrap(), PathBuf::from("/etc/vte.yml"));
        assert_eq!(cli.listen_address, "127.0.0.1:0");
        assert_eq!(cli.telemetry_path, "/m");
        assert_eq!(cli.log_level, Some(log::LevelFilter::Debug));
        assert_eq!(cli.log_format, LogFormat::Logfmt);
        assert!(!cli.check && !cli.config_check && !cli.enable_lifecycle);
    }

    #[test]
    fn the_check_command_takes_the_config_before_or_after_it() {
        for args in [
            &["check", "--config.file=/c.yml", "--log.format=json"][..],
            &["--config.file=/c.yml", "--log.format=json", "check"][..],
        ] {
            let cli = parse_args(args);
            assert!(cli.check, "{args:?}");
            assert_eq!(cli.config_file.unwrap(), PathBuf::from("/c.yml"));
            assert_eq!(cli.log_format, LogFormat::Json);
        }
        let cli = parse_args(&["--config.check", "--web.enable-lifecycle"]);
        assert!(cli.config_check && cli.enable_lifecycle && !cli.check);
    }
}
