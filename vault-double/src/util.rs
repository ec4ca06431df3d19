//! Small helpers: time formatting the way Go prints it, Go duration parsing and printing,
//! and a non-cryptographic random source for token ids, accessors and request ids.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS: i128 = 1_000_000_000;

/// Nanoseconds since the Unix epoch (negative before it).
pub(crate) fn unix_nanos(t: SystemTime) -> i128 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// The inverse of [`unix_nanos`].
pub(crate) fn from_unix_nanos(n: i128) -> SystemTime {
    if n >= 0 {
        UNIX_EPOCH + Duration::from_nanos(n.min(u64::MAX as i128) as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos((-n).min(u64::MAX as i128) as u64)
    }
}

/// Go's `t.Truncate(time.Second).Unix()`.
pub(crate) fn floor_secs(t: SystemTime) -> i64 {
    unix_nanos(t).div_euclid(NANOS) as i64
}

/// Go's `int64(expire.Sub(now.Round(time.Second)).Seconds())`: the `ttl` lookup reports.
pub(crate) fn vault_ttl(expire: SystemTime, now: SystemTime) -> i64 {
    let now_rounded = (unix_nanos(now) + NANOS / 2).div_euclid(NANOS) * NANOS;
    // Integer division truncates toward zero, like Go's float-to-int conversion.
    ((unix_nanos(expire) - now_rounded) / NANOS) as i64
}

/// `t + secs` seconds (secs may be negative).
pub(crate) fn add_secs(t: SystemTime, secs: i64) -> SystemTime {
    from_unix_nanos(unix_nanos(t) + secs as i128 * NANOS)
}

/// A whole-second instant.
pub(crate) fn at_secs(secs: i64) -> SystemTime {
    from_unix_nanos(secs as i128 * NANOS)
}

/// Howard Hinnant's days-to-civil algorithm: (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Go's `time.Time` JSON form in UTC: RFC 3339, fractional seconds without trailing zeros, `Z`.
pub(crate) fn rfc3339_nano(t: SystemTime) -> String {
    let n = unix_nanos(t);
    let secs = n.div_euclid(NANOS) as i64;
    let frac = n.rem_euclid(NANOS) as u32;
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    let mut s = format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    );
    if frac != 0 {
        let digits = format!("{frac:09}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// An HTTP `Date` header value (IMF-fixdate).
pub(crate) fn http_date(t: SystemTime) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = floor_secs(t);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{}, {d:02} {} {y:04} {:02}:{:02}:{:02} GMT",
        DAYS[(days + 4).rem_euclid(7) as usize],
        MONTHS[(mo - 1) as usize],
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

/// Go's `time.Duration.String()` for a whole number of seconds, e.g. `1h0m0s`, `45m0s`, `4s`.
pub(crate) fn go_duration(secs: i64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let sign = if secs < 0 { "-" } else { "" };
    let s = secs.unsigned_abs();
    let (h, m, sec) = (s / 3600, s % 3600 / 60, s % 60);
    if h > 0 {
        format!("{sign}{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{sign}{m}m{sec}s")
    } else {
        format!("{sign}{sec}s")
    }
}

/// Vault's `humanDuration` (sdk/framework/lease.go): Go's duration string with zero units
/// dropped: `1h0m0s` -> `1h`, `45m0s` -> `45m`, `1h0m5s` -> `1h5s`, `10m5s` unchanged.
pub(crate) fn human_duration(secs: i64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let mut s = go_duration(secs);
    if s.ends_with("m0s") {
        s.truncate(s.len() - 2);
    }
    if let Some(idx) = s.find("h0m") {
        if idx > 0 {
            s = format!("{}{}", &s[..idx + 1], &s[idx + 3..]);
        }
    }
    s
}

/// Go's `time.ParseDuration`, in nanoseconds. The error text matches Go's.
pub(crate) fn go_parse_duration(orig: &str) -> Result<i128, String> {
    let invalid = || format!("time: invalid duration {orig:?}");
    let mut s = orig;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        neg = true;
        s = rest;
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let int_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
        let int_part: i128 = if int_len == 0 {
            0
        } else {
            s[..int_len].parse::<i128>().map_err(|_| invalid())?
        };
        s = &s[int_len..];
        let mut frac_num: i128 = 0;
        let mut frac_scale: i128 = 1;
        let mut frac_len = 0;
        if let Some(rest) = s.strip_prefix('.') {
            s = rest;
            frac_len = s.bytes().take_while(|c| c.is_ascii_digit()).count();
            for c in s[..frac_len].bytes().take(18) {
                frac_num = frac_num * 10 + (c - b'0') as i128;
                frac_scale *= 10;
            }
            s = &s[frac_len..];
        }
        if int_len == 0 && frac_len == 0 {
            return Err(invalid());
        }
        let unit_len = s
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map(|(i, _)| i)
            .unwrap_or(s.len());
        let unit = &s[..unit_len];
        s = &s[unit_len..];
        let mult: i128 = match unit {
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => NANOS,
            "m" => 60 * NANOS,
            "h" => 3600 * NANOS,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        total += int_part.checked_mul(mult).ok_or_else(invalid)? + frac_num * mult / frac_scale;
        if total > i64::MAX as i128 {
            return Err(invalid());
        }
    }
    Ok(if neg { -total } else { total })
}

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let mut h = RandomState::new().build_hasher();
        h.write_u128(unix_nanos(SystemTime::now()) as u128);
        h.write_u32(std::process::id());
        h.finish()
    })
}

/// A pseudo-random u64 (splitmix64 over a per-process random seed). Not cryptographic.
pub(crate) fn rand_u64() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut z = seed().wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `n` random base62 characters (Vault's token and accessor alphabet).
pub(crate) fn base62(n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    (0..n)
        .map(|_| ALPHABET[(rand_u64() % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

/// A random UUID-shaped string, like Vault's `request_id`.
pub(crate) fn uuid() -> String {
    let a = rand_u64();
    let b = rand_u64();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_times_like_go() {
        assert_eq!(rfc3339_nano(at_secs(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(at_secs(1_605_506_361)), "2020-11-16T05:59:21Z");
        let t = from_unix_nanos(1_732_294_406 * NANOS + 932_122_122);
        assert_eq!(rfc3339_nano(t), "2024-11-22T16:53:26.932122122Z");
        let t = from_unix_nanos(1_554_651_882 * NANOS + 101_399_300);
        assert_eq!(rfc3339_nano(t), "2019-04-07T15:44:42.1013993Z");
        assert_eq!(
            http_date(at_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(
            http_date(at_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn ttl_rounds_now_and_truncates() {
        let expire = at_secs(1000);
        assert_eq!(vault_ttl(expire, from_unix_nanos(990 * NANOS)), 10);
        // now rounds up to 991 -> 9
        assert_eq!(
            vault_ttl(expire, from_unix_nanos(990 * NANOS + 600_000_000)),
            9
        );
        // now rounds down to 990; 10.0 s
        assert_eq!(
            vault_ttl(expire, from_unix_nanos(990 * NANOS + 400_000_000)),
            10
        );
        let expire = from_unix_nanos(1000 * NANOS + 700_000_000);
        assert_eq!(vault_ttl(expire, at_secs(990)), 10);
        assert_eq!(vault_ttl(expire, at_secs(1000)), 0);
    }

    #[test]
    fn durations_print_like_go_and_vault() {
        assert_eq!(go_duration(3600), "1h0m0s");
        assert_eq!(go_duration(2700), "45m0s");
        assert_eq!(go_duration(4), "4s");
        assert_eq!(go_duration(2_764_800), "768h0m0s");
        assert_eq!(human_duration(3600), "1h");
        assert_eq!(human_duration(2700), "45m");
        assert_eq!(human_duration(5400), "1h30m");
        assert_eq!(human_duration(605), "10m5s");
        assert_eq!(human_duration(3605), "1h5s");
        assert_eq!(human_duration(2_764_800), "768h");
        assert_eq!(human_duration(2_764_779), "767h59m39s");
        assert_eq!(human_duration(4), "4s");
        assert_eq!(human_duration(0), "0s");
    }

    #[test]
    fn parses_go_durations() {
        assert_eq!(go_parse_duration("1h").unwrap(), 3600 * NANOS);
        assert_eq!(go_parse_duration("1h30m").unwrap(), 5400 * NANOS);
        assert_eq!(go_parse_duration("1.5h").unwrap(), 5400 * NANOS);
        assert_eq!(go_parse_duration("-2s").unwrap(), -2 * NANOS);
        assert_eq!(go_parse_duration("300ms").unwrap(), 300_000_000);
        assert_eq!(go_parse_duration("0").unwrap(), 0);
        assert!(go_parse_duration("1.5")
            .unwrap_err()
            .contains("missing unit"));
        assert!(go_parse_duration("abc")
            .unwrap_err()
            .contains("invalid duration"));
        assert!(go_parse_duration("3x")
            .unwrap_err()
            .contains("unknown unit"));
        assert!(go_parse_duration("").is_err());
    }

    #[test]
    fn random_ids_have_the_right_shape() {
        let a = base62(24);
        assert_eq!(a.len(), 24);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, base62(24));
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(u.matches('-').count(), 4);
    }
}
