//! A Vault token that cannot leak by accident.
//!
//! The token is the one secret this exporter holds. Everything that prints (logs, errors,
//! panics, `{:?}` in a test failure) goes through `Debug`/`Display`, so both print
//! `<redacted>`; the only way to the text is [`Token::expose`], used where the token is
//! put into the `X-Vault-Token` header.

use std::fmt;

use zeroize::Zeroize;

/// A Vault token; `Debug` and `Display` print `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// Wraps a token, trimming surrounding whitespace as the Vault CLI does; `None` when empty.
    pub fn new(raw: &str) -> Option<Token> {
        let trimmed = raw.trim();
        (!trimmed.is_empty()).then(|| Token(trimmed.to_owned()))
    }

    /// The token text, for the request header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Drop for Token {
    /// Overwrites the bytes so a freed buffer does not keep the token around in memory
    /// (copies made on the way to the socket, by ureq and the kernel, are out of reach).
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_token() {
        let token = Token::new("  hvs.SECRETSECRET\n").unwrap();
        assert_eq!(token.expose(), "hvs.SECRETSECRET");
        for printed in [
            format!("{token}"),
            format!("{token:?}"),
            format!("{token:#?}"),
            format!("{:?}", Some(&token)),
        ] {
            assert!(!printed.contains("SECRET"), "leaked in {printed}");
            assert!(printed.contains("<redacted>"));
        }
    }

    #[test]
    fn empty_or_blank_is_no_token() {
        assert!(Token::new("").is_none());
        assert!(Token::new(" \n\t").is_none());
    }
}
