//! `--demo`: the exporter against two embedded Vault test doubles on loopback, with tokens
//! that between them pass through every state within a few minutes, and make every
//! token alert of the shipped rules fire (with their shipped `for:`) and clear. It is the
//! README's first command: a newcomer sees every metric move without a Vault of their own.
//!
//! The script, from start-up (the README's alerts section says the same):
//! - 1:00 NotRenewable (`not-renewable`, `use-limited`, `batch`), ExpiringSoon (the same),
//!   MaxExpiryNear (`max-ttl-soon`: a max TTL 6 days away; `capped` until it is capped);
//! - 2:30 Invalid for `batch` (expired at 1:30); `rotated` is invalid from the start;
//! - ~3:30 Capped and ExpiringSoon for `capped` (capped at its renewal at 2:00-2:30,
//!   expired at 6:40, then Invalid);
//! - 5:00 `rotated` gets a new token: its Invalid clears; RenewalsFailing fires for
//!   `late-file` (no token file since start) until its file appears at 7:00;
//! - `flaky-vault` loses its Vault for 25 s every three minutes: retried, never an alert.

use std::path::PathBuf;
use std::time::Duration;

use collectors::secret::Token;
use collectors::source::TokenSource;
use collectors::worker::RenewSettings;
use vault_double::{TokenSpec, VaultDouble};

use crate::config::TokenConfig;

/// The doubles and the demo's token files; the doubles serve while this lives.
pub struct Demo {
    pub primary: VaultDouble,
    pub flaky: VaultDouble,
    pub token_dir: PathBuf,
}

fn token_config(name: &str, vault: &VaultDouble, source: TokenSource) -> TokenConfig {
    token_config_with(name, vault, source, None)
}

fn token_config_with(
    name: &str,
    vault: &VaultDouble,
    source: TokenSource,
    max_ttl: Option<Duration>,
) -> TokenConfig {
    TokenConfig {
        name: name.into(),
        address: vault.url(),
        namespace: None,
        source,
        tls: Default::default(),
        timeout: Duration::from_secs(2),
        renew: RenewSettings {
            max_backoff: Duration::from_secs(20),
            invalid_recheck: Duration::from_secs(60),
            increment: None,
            max_ttl,
        },
        // Often enough that the flaky Vault's 25 s outages show on the status page.
        health_interval: Duration::from_secs(5),
    }
}

/// Writes a token file readable by its owner only, as Vault Agent does.
fn write_token_file(path: &std::path::Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())
}

fn value(token: &str) -> TokenSource {
    TokenSource::Value(Token::new(token).expect("the double mints non-empty tokens"))
}

/// Starts the doubles, mints the tokens and the scripted events, and returns the config.
pub fn start() -> std::io::Result<(Demo, Vec<TokenConfig>)> {
    let primary = VaultDouble::start_on("127.0.0.1:0".parse().expect("literal address"))?;
    let flaky = VaultDouble::start_on("127.0.0.1:0".parse().expect("literal address"))?;
    let token_dir =
        std::env::temp_dir().join(format!("vault-token-exporter-demo-{}", std::process::id()));
    std::fs::create_dir_all(&token_dir)?;

    let renewing = primary.add_token(
        TokenSpec::service(60)
            .display_name("approle")
            .path("auth/approle/login")
            .policies(&["default", "app"]),
    );
    let not_renewable = primary.add_token(TokenSpec::service(300).renewable(false));
    // Renewed at 2:00-2:30 with 250-280 s of its 400 s max left: capped from then (longer
    // than VaultTokenCapped's `for: 1m`) until it expires at 6:40.
    let capped = primary.add_token(TokenSpec::service(300).explicit_max_ttl(400));
    // Renews fine, but dies at its max TTL in 6 days: VaultTokenMaxExpiryNear.
    let max_ttl_soon = primary.add_token(TokenSpec::service(120).explicit_max_ttl(6 * 24 * 3600));
    // Each call would spend one of its uses: never renewed, shown as not renewable.
    let use_limited = primary.add_token(TokenSpec::service(600).num_uses(10));
    let batch = primary.add_token(TokenSpec::batch(90));
    let root = primary.add_token(TokenSpec::root_init());
    let revoked = primary.add_token(TokenSpec::service(120));
    let flaky_token = flaky.add_token(TokenSpec::service(60));

    // A token Vault Agent would write, already revoked (403 at the start-up lookup:
    // invalid), replaced in its file after 5 minutes (renewal resumes without a restart).
    primary.revoke(&revoked);
    let rotated_file = token_dir.join("rotated.token");
    write_token_file(&rotated_file, &format!("{revoked}\n"))?;
    // A token file that does not exist yet (unknown, token_source failures) until 7 min.
    let late_file = token_dir.join("late.token");

    // The system's default max TTL, as an operator who knows it would configure it.
    let system_max_ttl = Some(Duration::from_secs(768 * 3600));
    let tokens = vec![
        token_config_with("renewing", &primary, value(&renewing), system_max_ttl),
        token_config("not-renewable", &primary, value(&not_renewable)),
        token_config("capped", &primary, value(&capped)),
        token_config("max-ttl-soon", &primary, value(&max_ttl_soon)),
        token_config("use-limited", &primary, value(&use_limited)),
        token_config("batch", &primary, value(&batch)),
        token_config("root", &primary, value(&root)),
        token_config("rotated", &primary, TokenSource::File(rotated_file.clone())),
        token_config("late-file", &primary, TokenSource::File(late_file.clone())),
        token_config("flaky-vault", &flaky, value(&flaky_token)),
    ];

    let (script_primary, script_flaky) = (primary.clone(), flaky.clone());
    std::thread::Builder::new()
        .name("demo-script".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            let at = |t: u64| {
                let due = started + Duration::from_secs(t);
                std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
            };
            // From about 2:30 to 5:00 every state is visible at once: capped (max TTL 400 s)
            // until it expires at 6:40, not renewable until 5:00, invalid until 5:00, unknown
            // until 7:00, expired (batch) from 1:30.
            at(20);
            log::info!(
                "demo: the flaky Vault goes down for 25s (its token is due for renewal meanwhile)"
            );
            script_flaky.stop_listening();
            at(45);
            log::info!("demo: the flaky Vault is back");
            script_flaky.resume_listening();
            for cycle in 1.. {
                // An outage of the flaky Vault every three minutes, each shorter than the time left.
                at(20 + 180 * cycle);
                log::info!("demo: the flaky Vault goes down for 25s");
                script_flaky.stop_listening();
                at(45 + 180 * cycle);
                log::info!("demo: the flaky Vault is back");
                script_flaky.resume_listening();
                if cycle == 1 {
                    at(300);
                    log::info!("demo: writing a new token into the file of vault=rotated");
                    let fresh = script_primary.add_token(TokenSpec::service(90));
                    let _ = write_token_file(&rotated_file, &fresh);
                }
                if cycle == 2 {
                    at(420);
                    log::info!("demo: creating the file of vault=late-file");
                    let late = script_primary.add_token(TokenSpec::service(90));
                    let _ = write_token_file(&late_file, &format!("{late}\n"));
                }
            }
        })?;
    log::info!(
        "demo: Vault test doubles at {} and {} (flaky); tokens in {}",
        primary.url(),
        flaky.url(),
        token_dir.display()
    );
    Ok((
        Demo {
            primary,
            flaky,
            token_dir,
        },
        tokens,
    ))
}
