//! [`v1::ErrorInfo`] in a gRPC status: attached where a service makes its
//! error status, read where a caller handles one. The details are the
//! standard rich-error encoding (a `google.rpc.Status` whose `details` hold
//! an `Any`), so any gRPC client can decode them.

use std::time::Duration;

use prost::Message as _;
use tonic::{Code, Status};

use crate::v1;

/// The `Any` type URL of [`v1::ErrorInfo`].
pub const ERROR_INFO_TYPE_URL: &str = "type.googleapis.com/keel.v1.ErrorInfo";
/// The `Any` type URL of the standard `google.rpc.RetryInfo`.
pub const RETRY_INFO_TYPE_URL: &str = "type.googleapis.com/google.rpc.RetryInfo";

/// The wait a status's standard `google.rpc.RetryInfo` asks for, if any.
pub fn retry_info(status: &Status) -> Option<Duration> {
    let details = tonic_types::pb::Status::decode(status.details()).ok()?;
    details
        .details
        .iter()
        .find(|any| any.type_url == RETRY_INFO_TYPE_URL)
        .and_then(|any| tonic_types::pb::RetryInfo::decode(any.value.as_slice()).ok())
        .and_then(|info| info.retry_delay)
        .and_then(|wait| Duration::try_from(wait).ok())
}

impl v1::ErrorInfo {
    /// A failure of class `class`.
    pub fn new(class: impl Into<String>, retryable: bool) -> Self {
        Self {
            class: class.into(),
            retryable,
            ..Self::default()
        }
    }

    /// With the wait the service asks for before a retry.
    pub fn with_retry_after(mut self, wait: Option<Duration>) -> Self {
        self.retry_after = wait.and_then(|wait| prost_types::Duration::try_from(wait).ok());
        self
    }

    /// With a further fact.
    pub fn with_detail(mut self, name: &str, value: impl Into<String>) -> Self {
        self.details.insert(name.to_string(), value.into());
        self
    }

    /// The wait before a retry, when the service named one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
            .and_then(|wait| Duration::try_from(wait).ok())
    }

    /// A status with `code` and `message` carrying this info, and, when it
    /// names a wait, the standard `google.rpc.RetryInfo` as well (which
    /// generic gRPC clients and proxies understand).
    pub fn into_status(self, code: Code, message: impl Into<String>) -> Status {
        let message = message.into();
        let mut details = vec![prost_types::Any {
            type_url: ERROR_INFO_TYPE_URL.to_string(),
            value: self.encode_to_vec(),
        }];
        if let Some(wait) = self.retry_after {
            details.push(prost_types::Any {
                type_url: RETRY_INFO_TYPE_URL.to_string(),
                value: tonic_types::pb::RetryInfo {
                    retry_delay: Some(wait),
                }
                .encode_to_vec(),
            });
        }
        let details = tonic_types::pb::Status {
            code: code as i32,
            message: message.clone(),
            details,
        };
        Status::with_details(code, message, details.encode_to_vec().into())
    }

    /// The info a status carries, if it carries one.
    pub fn from_status(status: &Status) -> Option<Self> {
        let details = tonic_types::pb::Status::decode(status.details()).ok()?;
        details
            .details
            .iter()
            .find(|any| any.type_url == ERROR_INFO_TYPE_URL)
            .and_then(|any| Self::decode(any.value.as_slice()).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_info_rides_in_the_status_details() {
        let info = v1::ErrorInfo::new("capacity", true)
            .with_retry_after(Some(Duration::from_millis(1500)))
            .with_detail("provider", "openai");
        let status = info
            .clone()
            .into_status(Code::ResourceExhausted, "at capacity");
        assert_eq!(status.code(), Code::ResourceExhausted);
        assert_eq!(status.message(), "at capacity");
        let read = v1::ErrorInfo::from_status(&status).unwrap();
        assert_eq!(read, info);
        assert_eq!(read.retry_after(), Some(Duration::from_millis(1500)));
        // Through the trailers, as a client receives it.
        let mut trailers = tonic::codegen::http::HeaderMap::new();
        status.add_header(&mut trailers).unwrap();
        let received = Status::from_header_map(&trailers).unwrap();
        assert_eq!(v1::ErrorInfo::from_status(&received), Some(info));
        // The standard RetryInfo rides along for generic clients.
        assert_eq!(retry_info(&received), Some(Duration::from_millis(1500)));
        let plain = Status::new(Code::Unavailable, "no details");
        assert_eq!(v1::ErrorInfo::from_status(&plain), None);
        assert_eq!(retry_info(&plain), None);
        let no_wait = v1::ErrorInfo::new("x", false).into_status(Code::Internal, "x");
        assert_eq!(retry_info(&no_wait), None);
    }
}
