//! `key=value` fields inside log lines, logfmt style: operators grep for `vault=prod`,
//! and `--log.format=json` lifts the fields out of the message. A value is quoted (with
//! `"` and `\` escaped) when it would otherwise not read back as one field: empty, or
//! holding whitespace, `=`, `"`, `\`, the punctuation that ends a field in our messages
//! (`;`, `:`, `,`), or a control character.

use std::fmt;

/// A field value, quoted when it needs it.
pub struct Value<'a>(pub &'a str);

impl Value<'_> {
    fn needs_quotes(&self) -> bool {
        self.0.is_empty()
            || self.0.chars().any(|c| {
                c.is_whitespace()
                    || c.is_control()
                    || matches!(c, '=' | '"' | '\\' | ';' | ':' | ',')
            })
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.needs_quotes() {
            return f.write_str(self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\n' => f.write_str("\\n")?,
                c if c.is_control() => write!(f, "\\u{{{:x}}}", u32::from(c))?,
                c => fmt::Write::write_char(f, c)?,
            }
        }
        f.write_str("\"")
    }
}

/// The value of the first field `key=` in `line` (at the start or after a space), as
/// [`Value`] wrote it.
pub fn field(line: &str, key: &str) -> Option<String> {
    let needle = format!("{key}=");
    let mut from = 0;
    while let Some(at) = line[from..].find(&needle) {
        let start = from + at;
        from = start + needle.len();
        if start > 0 && !line[..start].ends_with(' ') {
            continue;
        }
        let rest = &line[from..];
        if let Some(quoted) = rest.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(value),
                    '\\' => match chars.next()? {
                        'n' => value.push('\n'),
                        'u' => {
                            let hex: String =
                                chars.by_ref().skip(1).take_while(|c| *c != '}').collect();
                            value.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        other => value.push(other),
                    },
                    c => value.push(c),
                }
            }
            return None;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, ';' | ':' | ','))
            .unwrap_or(rest.len());
        return Some(rest[..end].to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_back_as_written() {
        for name in [
            "prod",
            "team a",
            "",
            "a=b",
            "x\"y\\z",
            "semi;colon",
            "new\nline",
            "tab\tbell\u{7}",
            "ünï",
        ] {
            let line = format!(
                "vault token renewal failed vault={} reason=network: refused",
                Value(name)
            );
            assert_eq!(field(&line, "vault").as_deref(), Some(name), "{line}");
            assert_eq!(field(&line, "reason").as_deref(), Some("network"), "{line}");
        }
        assert_eq!(Value("prod").to_string(), "prod");
        assert_eq!(Value("team a").to_string(), "\"team a\"");
        assert_eq!(
            field("vault token expired vault=prod; rotate", "vault").as_deref(),
            Some("prod")
        );
        assert_eq!(field("no fields here", "vault"), None);
        assert_eq!(field("myvault=x", "vault"), None);
    }
}
