//! What can go wrong talking to Vault, and the `reason` label each failure is counted under.
//!
//! Every error text here is short, lowercase and free of response values: a Vault body
//! can hold the token (lookup-self echoes it in `data.id`), so parse errors name the
//! field that was wrong, never what it contained.

use thiserror::Error;

/// Why a renewal attempt failed: the `reason` label of `vault_token_renewal_failures_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Network,
    Timeout,
    Tls,
    ServerError,
    Sealed,
    RateLimited,
    PermissionDenied,
    BadRequest,
    BadResponse,
    TokenSource,
}

impl Reason {
    /// Every reason, in the order the counters are exported.
    pub const ALL: [Reason; 10] = [
        Reason::Network,
        Reason::Timeout,
        Reason::Tls,
        Reason::ServerError,
        Reason::Sealed,
        Reason::RateLimited,
        Reason::PermissionDenied,
        Reason::BadRequest,
        Reason::BadResponse,
        Reason::TokenSource,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Network => "network",
            Reason::Timeout => "timeout",
            Reason::Tls => "tls",
            Reason::ServerError => "server_error",
            Reason::Sealed => "sealed",
            Reason::RateLimited => "rate_limited",
            Reason::PermissionDenied => "permission_denied",
            Reason::BadRequest => "bad_request",
            Reason::BadResponse => "bad_response",
            Reason::TokenSource => "token_source",
        }
    }

    /// Position in [`Reason::ALL`], for array-indexed counters.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A failed call to Vault.
#[derive(Debug, Error)]
pub enum VaultError {
    /// The connection could not be made or broke (refused, reset, DNS).
    #[error("network error: {0}")]
    Network(String),
    /// No complete answer within the configured timeout.
    #[error("request timed out")]
    Timeout,
    /// The TLS handshake failed (unknown CA, wrong name, bad client certificate).
    #[error("tls error: {0}")]
    Tls(String),
    /// Vault answered 503 `Vault is sealed`.
    #[error("vault is sealed")]
    Sealed,
    /// Vault answered 429 (rate-limit quota); `retry_after` is its `Retry-After` in seconds.
    #[error("rate limited (429)")]
    RateLimited { retry_after: Option<u64> },
    /// Vault answered 403: the token is expired, revoked, or lacks the policy.
    #[error("permission denied (403): {message}")]
    PermissionDenied { message: String },
    /// Vault answered 400 because the token cannot be renewed (non-renewable, batch, root).
    #[error("token is not renewable (400): {message}")]
    NotRenewable { message: String },
    /// Vault answered 400 `token not found`: the token's uses are spent, it is gone.
    #[error("token not found (400)")]
    TokenNotFound,
    /// Vault answered another 4xx (other than 403, 412 and 429).
    #[error("bad request ({status}): {message}")]
    BadRequest { status: u16, message: String },
    /// Vault answered 5xx (other than sealed), 412, or a redirect we do not follow.
    #[error("server error ({status}): {message}")]
    ServerError { status: u16, message: String },
    /// The answer was not the JSON we expect: unparseable, wrong types, missing fields, over 1 MiB.
    #[error("bad response: {0}")]
    BadResponse(String),
}

impl VaultError {
    /// The failure counter this error is counted under.
    pub fn reason(&self) -> Reason {
        match self {
            VaultError::Network(_) => Reason::Network,
            VaultError::Timeout => Reason::Timeout,
            VaultError::Tls(_) => Reason::Tls,
            VaultError::Sealed => Reason::Sealed,
            VaultError::RateLimited { .. } => Reason::RateLimited,
            VaultError::PermissionDenied { .. } => Reason::PermissionDenied,
            VaultError::NotRenewable { .. } | VaultError::TokenNotFound => Reason::BadRequest,
            VaultError::BadRequest { .. } => Reason::BadRequest,
            VaultError::ServerError { .. } => Reason::ServerError,
            VaultError::BadResponse(_) => Reason::BadResponse,
        }
    }

    /// True for a 403 whose body says the token is valid but its policy denies the path:
    /// Vault and OpenBao answer that with the multierror form `1 error occurred: permission
    /// denied`, and a dead token with plain `permission denied` (or, from Vault 1.17, with
    /// `invalid token` added).
    pub fn denied_by_policy(&self) -> bool {
        match self {
            VaultError::PermissionDenied { message } => {
                message.contains("1 error occurred")
                    && message.contains("permission denied")
                    && !message.contains("invalid token")
            }
            _ => false,
        }
    }

    /// True when only a new token can help: retrying the same one would just hammer Vault.
    pub fn is_fatal_for_token(&self) -> bool {
        matches!(
            self,
            VaultError::PermissionDenied { .. } | VaultError::TokenNotFound
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_the_ten_labels_of_the_contract_in_index_order() {
        let labels: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "network",
                "timeout",
                "tls",
                "server_error",
                "sealed",
                "rate_limited",
                "permission_denied",
                "bad_request",
                "bad_response",
                "token_source"
            ]
        );
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn a_policy_denial_is_told_apart_from_a_dead_token_by_the_403_body() {
        let denied = |message: &str| VaultError::PermissionDenied {
            message: message.into(),
        };
        // The bodies as the client sanitises them (whitespace folded to one space).
        assert!(denied("1 error occurred: * permission denied").denied_by_policy());
        assert!(!denied("permission denied").denied_by_policy());
        assert!(
            !denied("2 errors occurred: * permission denied * invalid token").denied_by_policy()
        );
        assert!(!VaultError::TokenNotFound.denied_by_policy());
    }
}
