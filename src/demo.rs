//! `--demo`: the exporter against two embedded Vault test doubles on loopback, with tokens
//! that between them pass through every state within a few minutes. It is the README's
//! first command: a newcomer sees every metric move without a Vault of their own.

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
            max_ttl: None,
        },
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
    let capped = primary.add_token(TokenSpec::service(60).explicit_max_ttl(200));
    let batch = primary.add_token(TokenSpec::batch(90));
    let root = primary.add_token(TokenSpec::root_init());
    let revoked = primary.add_token(TokenSpec::service(120));
    let flaky_token = flaky.add_token(TokenSpec::service(60));

    // A token Vault Agent would write, already revoked (403 at the start-up lookup:
    // invalid), replaced in its file after 5 minutes (renewal resumes without a restart).
    primary.revoke(&revoked);
    let rotated_file = token_dir.join("rotated.token");
    write_token_file(&rotated_file, &format!("{revoked}\n"))?;
    // A token file that does not exist yet (unknown, token_source failures) until 5 min.
    let late_file = token_dir.join("late.token");

    let tokens = vec![
        token_config("renewing", &primary, value(&renewing)),
        token_config("not-renewable", &primary, value(&not_renewable)),
        token_config("capped", &primary, value(&capped)),
        token_config("batch", &primary, value(&batch)),
        token_config("root", &primary, value(&root)),
        token_config("rotated", &primary, TokenSource::File(rotated_file.clone())),
        token_config("late-file", &primary, TokenSource::File(late_file.clone())),
        token_config("flaky-vault", &flaky, value(&flaky_token)),
    ];

    let (script_primary, script_flaky) = (primary.clone(), flaky.clone());
    std::thread::Builder::new().name("demo-script".into()).spawn(move || {
        let started = std::time::Instant::now();
        let at = |t: u64| {
            let due = started + Duration::from_secs(t);
            std::thread::sleep(due.saturating_duration_since(std::time::Instant::now()));
        };
        // From about 2:50 to 3:20 every state is visible at once: capped (max TTL 200 s)
        // until it expires, not renewable until 5:00, invalid and unknown until 5:00.
        at(20);
        log::info!("demo: the flaky Vault goes down for 25s (its token is due for renewal meanwhile)");
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
                log::info!("demo: writing a new token into the file of vault=rotated and creating the file of vault=late-file");
                let fresh = script_primary.add_token(TokenSpec::service(90));
                let late = script_primary.add_token(TokenSpec::service(90));
                let _ = write_token_file(&rotated_file, &fresh);
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
