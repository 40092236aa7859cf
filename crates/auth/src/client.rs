//! The client side: attach a bearer token to every call.

use std::path::Path;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// A tonic interceptor adding `authorization: Bearer <token>` to each call
/// (or nothing, for a server running with `--insecure-no-auth`).
#[derive(Clone, Debug, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

#[derive(Debug, thiserror::Error)]
#[error("the token is not a valid bearer token (printable ASCII without spaces expected)")]
pub struct InvalidToken;

impl Bearer {
    pub fn new(token: &str) -> Result<Self, InvalidToken> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(InvalidToken);
        }
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| InvalidToken)?;
        Ok(Self(Some(value)))
    }

    /// Sends no credential.
    pub fn none() -> Self {
        Self(None)
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

/// Reads a token from a file holding just the token (surrounding
/// whitespace ignored).
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}
