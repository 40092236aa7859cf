//! Who is calling Keel.
//!
//! session-api answers only callers that present a bearer credential
//! (`authorization: Bearer <token>`), checked by one of two verifiers:
//!
//! - a **token file** ([`TokenStore`]): opaque tokens, stored only as SHA-256
//!   digests, each naming a principal and a tenant; re-read when it changes;
//! - **JWTs** ([`JwtVerifier`]): signed by a key in a JWKS (a file, or a URL
//!   fetched, cached and refreshed), with the issuer and audience required,
//!   and the tenant and principal taken from claims.
//!
//! Either way the tenant and principal come from the credential, never from
//! a request field. [`RequireAuth`] wraps a tonic service so that a call
//! without a valid credential never reaches it: it answers UNAUTHENTICATED,
//! and a call that passes carries its [`Caller`] in the request extensions.

mod args;
mod client;
mod jwt;
mod layer;
mod tokens;

pub use args::{AuthArgs, AuthSetupError};
pub use client::{Bearer, InvalidToken, read_token};
pub use jwt::{JwksSource, JwtConfig, JwtError, JwtVerifier};
pub use layer::{Authenticator, RequireAuth, caller};
pub use tokens::{
    TokenEntry, TokenFileError, TokenStore, append_token, generate_token, hash_token,
};

/// The tenant of callers that name none: `--insecure-no-auth`, and the
/// tenant whose sessions keep Keel's original workflow ids
/// (`keel-session-<id>`).
pub const DEFAULT_TENANT: &str = "default";
/// The principal of every caller under `--insecure-no-auth`.
pub const ANONYMOUS: &str = "anonymous";
pub const MAX_TENANT_LEN: usize = 40;
pub const MAX_PRINCIPAL_LEN: usize = 256;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Caller {
    /// Whose sessions the caller sees: `[a-z0-9][a-z0-9_-]*`, at most
    /// [`MAX_TENANT_LEN`] characters.
    pub tenant: String,
    /// Who the caller is (a user or a service account), recorded on what it
    /// does (the sessions it creates, the requests it answers).
    pub principal: String,
}

/// Checks a tenant name: lowercase letters, digits, `-` and `_`, starting
/// with a letter or digit, at most [`MAX_TENANT_LEN`] characters.
pub fn validate_tenant(tenant: &str) -> Result<(), String> {
    let ok = !tenant.is_empty()
        && tenant.len() <= MAX_TENANT_LEN
        && tenant
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant {tenant:?} is invalid: use 1 to {MAX_TENANT_LEN} lowercase letters, digits, '-' or '_', starting with a letter or digit"
        ))
    }
}

/// Checks a principal: 1 to [`MAX_PRINCIPAL_LEN`] bytes, no control
/// characters.
pub fn validate_principal(principal: &str) -> Result<(), String> {
    if principal.is_empty()
        || principal.len() > MAX_PRINCIPAL_LEN
        || principal.chars().any(char::is_control)
    {
        return Err(format!(
            "principal {principal:?} is invalid: use 1 to {MAX_PRINCIPAL_LEN} bytes without control characters"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names() {
        for ok in ["default", "acme", "a", "team-7_x", "0day"] {
            assert!(validate_tenant(ok).is_ok(), "{ok}");
        }
        let long = "a".repeat(MAX_TENANT_LEN + 1);
        for bad in [
            "",
            "Acme",
            "-x",
            "_x",
            "a.b",
            "a/b",
            "a b",
            "é",
            long.as_str(),
        ] {
            assert!(validate_tenant(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn principals() {
        assert!(validate_principal("alice@example.com").is_ok());
        assert!(validate_principal("system:serviceaccount:keel:ci").is_ok());
        assert!(validate_principal("").is_err());
        assert!(validate_principal("a\nb").is_err());
        assert!(validate_principal(&"a".repeat(MAX_PRINCIPAL_LEN + 1)).is_err());
    }
}
