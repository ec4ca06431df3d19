//! Parsers for Vault's token answers, tolerant of every shape Vault 0.4 to 1.19 sends.
//!
//! Bodies are read into a `serde_json::Value` and the few fields we need are picked by
//! hand. That keeps unknown fields harmless (newer Vaults add `mount_type`), lets a missing
//! key mean what Vault means by it (no `renewable` on an initial root token), and gives
//! error texts that name the field but never echo a value: lookup-self echoes the token
//! itself in `data.id`.

use serde_json::{Map, Value};

use crate::error::VaultError;

/// What lookup-self says about a token (`data.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Lookup {
    /// Seconds left (`data.ttl`); 0 for a token that never expires.
    pub ttl: u64,
    /// `data.expire_time` as Unix seconds; `None` when null or absent (never expires).
    pub expire_time: Option<f64>,
    /// `data.renewable`; absent for a token without a lease (the initial root token) and on Vault 0.4.
    pub renewable: Option<bool>,
    /// `data.type`: `service` or `batch` (`service` when absent, as on Vault 0.4).
    pub token_type: String,
    pub display_name: String,
    /// `data.path`: where the token was made, e.g. `auth/approle/login`.
    pub path: String,
    /// `data.policies`, sorted.
    pub policies: Vec<String>,
    /// `data.period` in seconds, when periodic.
    pub period: Option<u64>,
    /// `data.issue_time` as Unix seconds; absent on the initial root token.
    pub issue_time: Option<f64>,
    /// `data.explicit_max_ttl` in seconds, when set (Vault writes 0 for none).
    pub explicit_max_ttl: Option<u64>,
    /// `data.num_uses`: 0 unlimited, the uses left, or -1 on the last permitted use.
    pub num_uses: i64,
}

impl Lookup {
    /// A token with no expiry at all: a root token (`ttl` 0, `expire_time` null).
    pub fn never_expires(&self) -> bool {
        self.ttl == 0 && self.expire_time.is_none()
    }
}

/// What renew-self granted (`auth.*`).
#[derive(Clone, Debug, PartialEq)]
pub struct Renewal {
    /// The new TTL in seconds (`auth.lease_duration`; the top-level one is always 0).
    pub lease_duration: u64,
    /// `auth.renewable`.
    pub renewable: bool,
    /// `warnings`, empty when null.
    pub warnings: Vec<String>,
}

impl Renewal {
    /// True when Vault says it cut the TTL to the token's max TTL. A periodic token's
    /// `period of ... capped` warning is not this: such a token renews forever.
    pub fn capped_by_max_ttl(&self) -> bool {
        self.warnings
            .iter()
            .any(|w| w.starts_with("TTL of ") && w.contains("exceeded the effective max_ttl"))
    }
}

fn bad(msg: impl Into<String>) -> VaultError {
    VaultError::BadResponse(msg.into())
}

fn parse_json(body: &[u8], what: &str) -> Result<Value, VaultError> {
    // serde_json's own message can quote the input, so report only where it broke.
    serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "{what} body is not valid JSON (line {} column {})",
            e.line(),
            e.column()
        ))
    })
}

fn object<'a>(v: &'a Value, name: &str) -> Result<&'a Map<String, Value>, VaultError> {
    match v.get(name) {
        Some(Value::Object(map)) => Ok(map),
        Some(Value::Null) | None => Err(bad(format!("{name} is missing"))),
        Some(_) => Err(bad(format!("{name} is not an object"))),
    }
}

fn seconds(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<u64>, VaultError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(format!("{path}.{key} is not a whole number of seconds"))),
    }
}

fn boolean(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<bool>, VaultError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(bad(format!("{path}.{key} is not a boolean"))),
    }
}

fn string(map: &Map<String, Value>, key: &str, path: &str) -> Result<Option<String>, VaultError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(format!("{path}.{key} is not a string"))),
    }
}

fn strings(map: &Map<String, Value>, key: &str, path: &str) -> Result<Vec<String>, VaultError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("{path}.{key} holds a non-string")))
            })
            .collect(),
        Some(_) => Err(bad(format!("{path}.{key} is not a list"))),
    }
}

/// Parses a lookup-self answer.
pub fn parse_lookup(body: &[u8]) -> Result<Lookup, VaultError> {
    let root = parse_json(body, "lookup-self")?;
    let data = object(&root, "data")?;
    let ttl = seconds(data, "ttl", "data")?.ok_or_else(|| bad("data.ttl is missing"))?;
    let expire_time = match string(data, "expire_time", "data")? {
        None => None,
        Some(text) => Some(
            parse_rfc3339(&text).ok_or_else(|| bad("data.expire_time is not an RFC 3339 time"))?,
        ),
    };
    let issue_time = match string(data, "issue_time", "data")? {
        None => None,
        Some(text) => Some(
            parse_rfc3339(&text).ok_or_else(|| bad("data.issue_time is not an RFC 3339 time"))?,
        ),
    };
    let num_uses = match data.get("num_uses") {
        None | Some(Value::Null) => 0,
        Some(v) => v
            .as_i64()
            .ok_or_else(|| bad("data.num_uses is not a whole number"))?,
    };
    let mut policies = strings(data, "policies", "data")?;
    policies.sort();
    Ok(Lookup {
        ttl,
        expire_time,
        renewable: boolean(data, "renewable", "data")?,
        token_type: string(data, "type", "data")?.unwrap_or_else(|| "service".into()),
        display_name: string(data, "display_name", "data")?.unwrap_or_default(),
        path: string(data, "path", "data")?.unwrap_or_default(),
        policies,
        period: seconds(data, "period", "data")?.filter(|p| *p > 0),
        issue_time,
        explicit_max_ttl: seconds(data, "explicit_max_ttl", "data")?.filter(|s| *s > 0),
        num_uses,
    })
}

/// Parses a renew-self answer.
pub fn parse_renewal(body: &[u8]) -> Result<Renewal, VaultError> {
    let root = parse_json(body, "renew-self")?;
    let auth = object(&root, "auth")?;
    let lease_duration = seconds(auth, "lease_duration", "auth")?
        .ok_or_else(|| bad("auth.lease_duration is missing"))?;
    let renewable =
        boolean(auth, "renewable", "auth")?.ok_or_else(|| bad("auth.renewable is missing"))?;
    let warnings = match root.get("warnings") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|w| {
                w.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("warnings holds a non-string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad("warnings is not a list")),
    };
    Ok(Renewal {
        lease_duration,
        renewable,
        warnings,
    })
}

/// The `errors` of an error body joined with `; `, or `None` when the body has none
/// (an HTML page from a proxy, an empty body).
pub fn parse_error_messages(body: &[u8]) -> Option<String> {
    let root: Value = serde_json::from_slice(body).ok()?;
    let errors = root.get("errors")?.as_array()?;
    let texts: Vec<&str> = errors.iter().filter_map(Value::as_str).collect();
    Some(texts.join("; "))
}

/// Parses an RFC 3339 time (any number of fractional digits, `Z` or an offset) to Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &text[19..];
    let mut fraction = 0.0;
    if let Some(after_dot) = rest.strip_prefix('.') {
        let digits = after_dot.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        fraction = format!("0.{}", &after_dot[..digits]).parse().ok()?;
        rest = &after_dot[digits..];
    }
    let offset = match rest.as_bytes() {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let digits = [*h1, *h2, *m1, *m2];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            let secs = hours * 3600 + minutes * 60;
            if *sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let unix = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    Some(unix as f64 + fraction)
}

/// Unix seconds as RFC 3339 in UTC, to the second (`2026-12-03T14:05:09Z`): the inverse
/// of [`parse_rfc3339`], for what the exporter prints.
pub fn format_rfc3339(unix: f64) -> String {
    let secs = unix.floor() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// Real answers of Vault (published by others) and of OpenBao 2.7.2 (captured from
    /// `bao server -dev`), kept in the repository so a fresh clone tests them.
    const FIXTURE_DIRS: [&str; 2] = [
        "../tests/fixtures/vault-responses",
        "../tests/fixtures/openbao-responses",
    ];

    fn fixture_dir(dir: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(dir)
    }

    fn captured(name: &str) -> Vec<u8> {
        FIXTURE_DIRS
            .iter()
            .map(|dir| fixture_dir(dir).join(name))
            .find(|path| path.exists())
            .map(|path| std::fs::read(&path).unwrap())
            .unwrap_or_else(|| panic!("{name}: no such fixture"))
    }

    /// Every fixture whose name starts with `prefix`, from both servers, sorted by name.
    fn captured_named(prefix: &str) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for dir in FIXTURE_DIRS {
            let dir = fixture_dir(dir);
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir:?}: {e}")) {
                let name = entry.unwrap().file_name().into_string().unwrap();
                if name.starts_with(prefix) && name.ends_with(".json") {
                    let body = std::fs::read(dir.join(&name)).unwrap();
                    files.push((name, body));
                }
            }
        }
        files.sort();
        files
    }

    /// An OpenBao capture names its HTTP status (`renew-self.batch.400.openbao-…`); the
    /// Vault ones are all 200s.
    fn is_error_status(name: &str) -> bool {
        [".400.", ".403.", ".404.", ".405.", ".500.", ".503."]
            .iter()
            .any(|status| name.contains(status))
    }

    #[test]
    fn every_captured_lookup_self_body_parses() {
        let bodies = captured_named("lookup-self.");
        assert!(bodies.len() >= 11 + 14, "found only {}", bodies.len());
        for (name, body) in bodies {
            let lookup = parse_lookup(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            let root = [
                ".root.",
                "root-non-renewable",
                ".dev-root.",
                "root-child-no-expiry",
            ]
            .iter()
            .any(|kind| name.contains(kind));
            assert_eq!(lookup.never_expires(), root, "{name}");
            assert!(!lookup.policies.is_empty(), "{name}");
            let mut sorted = lookup.policies.clone();
            sorted.sort();
            assert_eq!(lookup.policies, sorted, "{name}");
        }
    }

    #[test]
    fn every_captured_renew_self_body_parses() {
        let (errors, successes): (Vec<_>, Vec<_>) = captured_named("renew-self.")
            .into_iter()
            .partition(|(name, _)| is_error_status(name));
        assert_eq!(successes.len(), 3 + 9);
        for (name, body) in successes {
            let renewal = parse_renewal(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(renewal.lease_duration > 0, "{name}");
            assert_eq!(
                renewal.capped_by_max_ttl(),
                name.contains("capped"),
                "{name}"
            );
        }
        assert_eq!(errors.len(), 4);
        for (name, body) in errors {
            assert!(parse_renewal(&body).is_err(), "{name}");
            let messages = parse_error_messages(&body).unwrap_or_else(|| panic!("{name}"));
            assert!(!messages.is_empty(), "{name}");
        }
    }

    #[test]
    fn every_captured_error_body_yields_its_message() {
        for (name, body) in captured_named("error.") {
            let messages = parse_error_messages(&body).unwrap_or_else(|| panic!("{name}"));
            assert!(!messages.is_empty(), "{name}");
        }
    }

    #[test]
    fn use_limited_tokens_show_their_uses_and_others_none() {
        let limited = parse_lookup(&captured("lookup-self.use-limit.200.openbao-2.7.2.json"));
        assert_eq!(
            limited.unwrap().num_uses,
            4,
            "-use-limit=5, one spent by the lookup"
        );
        let last = captured("lookup-self.use-limit-last-use.200.openbao-2.7.2.json");
        assert_eq!(parse_lookup(&last).unwrap().num_uses, -1);
        let service = captured("lookup-self.service.200.openbao-2.7.2.json");
        assert_eq!(parse_lookup(&service).unwrap().num_uses, 0);
        let wrong = br#"{"data":{"ttl":5,"num_uses":"3"}}"#;
        assert!(parse_lookup(wrong).is_err());
    }

    #[test]
    fn root_token_without_renewable_key_never_expires() {
        let lookup = parse_lookup(&captured("lookup-self.root.vault-1.1.0.json")).unwrap();
        assert_eq!(lookup.renewable, None);
        assert_eq!((lookup.ttl, lookup.expire_time), (0, None));
        assert_eq!(lookup.path, "auth/token/root");
    }

    #[test]
    fn dev_root_token_is_not_renewable_and_never_expires() {
        let body =
            captured("lookup-self.dev-root-non-renewable.partial.vault-1.15-era.hashicorp-ui.json");
        let lookup = parse_lookup(&body).unwrap();
        assert_eq!(lookup.renewable, Some(false));
        assert!(lookup.never_expires());
    }

    #[test]
    fn batch_token_has_a_type_and_an_expiry() {
        let body =
            captured("lookup-self.batch.approle-login.cli-format.vault-1.5-1.6-era.spire.json");
        let lookup = parse_lookup(&body).unwrap();
        assert_eq!(lookup.token_type, "batch");
        assert_eq!(lookup.renewable, Some(false));
        assert!(lookup.expire_time.is_some() && lookup.ttl > 0);
    }

    #[test]
    fn max_ttl_and_use_limit_fields_are_read_from_real_bodies() {
        let capped = parse_lookup(&captured("lookup-self.capped.200.openbao-2.7.2.json")).unwrap();
        assert_eq!(capped.explicit_max_ttl, Some(12));
        // 2026-12-03T11:01:29.75592638Z
        let issued = parse_rfc3339("2026-12-03T11:01:29Z").unwrap() + 0.75592638;
        assert!((capped.issue_time.unwrap() - issued).abs() < 1e-6);
        assert_eq!(capped.num_uses, 0);
        let limited =
            parse_lookup(&captured("lookup-self.use-limit.200.openbao-2.7.2.json")).unwrap();
        assert_eq!((limited.num_uses, limited.explicit_max_ttl), (4, None));
        let last = parse_lookup(&captured(
            "lookup-self.use-limit-last-use.200.openbao-2.7.2.json",
        ))
        .unwrap();
        assert_eq!(last.num_uses, -1);
        let root = parse_lookup(&captured("lookup-self.root.vault-1.1.0.json")).unwrap();
        assert_eq!(root.issue_time, None, "the initial root token has no lease");
    }

    #[test]
    fn vault_0_4_body_without_type_or_renewable_is_a_service_token() {
        let lookup =
            parse_lookup(&captured("lookup-self.service.vault-0.4.issue-889.json")).unwrap();
        assert_eq!(lookup.token_type, "service");
        assert_eq!(lookup.renewable, None);
        assert_eq!(lookup.ttl, 60);
        assert_eq!(lookup.policies, ["default", "my-policy"]);
    }

    #[test]
    fn compact_body_with_mount_type_reads_data_ttl() {
        let body = captured(
            "lookup-self.service-renewable.approle-login.compact.mount_type.2024-11.centreon.json",
        );
        let lookup = parse_lookup(&body).unwrap();
        assert_eq!(lookup.renewable, Some(true));
        assert_eq!(lookup.ttl, 2_764_724);
    }

    #[test]
    fn renewal_reads_auth_lease_duration_not_the_top_level_zero() {
        let body = br#"{"lease_duration":0,"renewable":false,"data":null,"warnings":null,
            "auth":{"client_token":"hvs.x","lease_duration":3600,"renewable":true}}"#;
        let renewal = parse_renewal(body).unwrap();
        assert_eq!(renewal.lease_duration, 3600);
        assert!(renewal.renewable && renewal.warnings.is_empty());
    }

    #[test]
    fn period_capped_warning_is_not_a_max_ttl_cap() {
        let renewal = Renewal {
            lease_duration: 60,
            renewable: true,
            warnings: vec![
                "period of \"2h0m0s\" exceeded the effective max_ttl of \"1h0m0s\"; period value is capped accordingly".into(),
            ],
        };
        assert!(!renewal.capped_by_max_ttl());
    }

    #[test]
    fn errors_name_the_field_and_never_echo_values() {
        let cases: [(&[u8], &str); 6] = [
            (
                br#"{"data":{"id":"hvs.SECRET","ttl":"hvs.SECRET"}}"#,
                "data.ttl",
            ),
            (
                br#"{"data":{"id":"hvs.SECRET","ttl":5,"renewable":"hvs.SECRET"}}"#,
                "data.renewable",
            ),
            (br#"{"data":{"id":"hvs.SECRET","ttl":-1}}"#, "data.ttl"),
            (br#"{"data":null,"auth":null}"#, "data is missing"),
            (br#"<html>hvs.SECRET</html>"#, "not valid JSON"),
            (
                br#"{"data":{"id":"hvs.SECRET","ttl":5,"policies":"hvs.SECRET"}}"#,
                "data.policies",
            ),
        ];
        for (body, expected) in cases {
            let err = parse_lookup(body).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
            assert!(!err.contains("SECRET"), "{err}");
        }
        let err = parse_renewal(br#"{"auth":{"client_token":"hvs.SECRET","lease_duration":"x"}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("auth.lease_duration") && !err.contains("SECRET"),
            "{err}"
        );
        assert!(parse_renewal(br#"{"auth":null,"data":{}}"#).is_err());
        assert!(parse_renewal(br#"{"auth":{"lease_duration":5,"renewable":true}"#).is_err());
    }

    #[test]
    fn formatted_times_parse_back() {
        assert_eq!(format_rfc3339(0.0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(951_782_400.0), "2000-02-29T00:00:00Z");
        for t in [
            0.0,
            951_782_400.0,
            1_735_059_206.0,
            4_102_444_799.0,
            -86_400.0,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t + 0.9)), Some(t));
        }
    }

    #[test]
    fn rfc3339_with_any_fraction_and_offset() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(parse_rfc3339("2024-12-24T16:53:26Z"), Some(1_735_059_206.0));
        let t = parse_rfc3339("2024-12-24T16:53:26.932122122Z").unwrap();
        assert!((t - 1_735_059_206.932_122).abs() < 1e-6);
        assert_eq!(
            parse_rfc3339("2018-05-19T11:35:54-04:00"),
            parse_rfc3339("2018-05-19T15:35:54Z")
        );
        assert_eq!(
            parse_rfc3339("2023-11-06T10:30:23+05:30"),
            parse_rfc3339("2023-11-06T05:00:23Z")
        );
        for bad in [
            "",
            "2024-13-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.Z",
            "yesterday",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
