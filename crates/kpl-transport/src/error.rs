//! Request-level errors, classified for the retrier.

use std::fmt;

/// What a failed request means for the records in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The service asked to slow down (`ProvisionedThroughputExceededException`,
    /// `ThrottlingException`, `LimitExceededException`, `KMSThrottlingException`,
    /// HTTP 429): retry later, slower.
    Throttled,
    /// A passing fault: HTTP 5xx, `InternalFailure`, `ServiceUnavailable`, a timeout,
    /// a broken connection, a credential provider that failed (instance metadata,
    /// STS, SSO or a credential process not answering: code `CredentialsError`,
    /// nothing was sent): retry with backoff.
    Transient,
    /// The stream does not exist (`ResourceNotFoundException`): retrying cannot help.
    NotFound,
    /// The credentials may not do this, or have expired (`AccessDeniedException`,
    /// `ExpiredTokenException`, `UnrecognizedClientException`, signature errors,
    /// `KMSAccessDeniedException`, …): retrying cannot help until they are fixed.
    AccessDenied,
    /// The service refused the request as malformed (`ValidationException`,
    /// `InvalidArgumentException`): retrying the same request cannot help.
    InvalidRequest,
    /// The endpoint does not speak Kinesis: an answer that is not the service's
    /// (an HTML page, a malformed response, a 200 without the results, which
    /// [may have stored](TransportError::may_have_been_stored) the records), an
    /// answer that is not HTTP: retrying cannot help until the endpoint URL is fixed.
    Endpoint,
    /// TLS failed: the server's certificate was refused (the message names the
    /// problem: signed by a CA not trusted, a CA certificate used as the server's
    /// own, not valid for the host name, expired, a bad signature, …) or the
    /// endpoint does not speak TLS (`https://` against a plain port). Nothing was
    /// sent; retrying cannot help until the certificate, the trusted CAs or the
    /// endpoint's scheme are fixed.
    Tls,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The kind of a service error code (`None` when the code says nothing), with
    /// the HTTP status as a fallback.
    pub fn classify(code: Option<&str>, status: Option<u16>) -> Self {
        let by_code = code.and_then(|code| {
            Some(match code {
                "ProvisionedThroughputExceededException"
                | "ThrottlingException"
                | "Throttling"
                | "LimitExceededException"
                | "KMSThrottlingException"
                | "RequestLimitExceeded"
                | "TooManyRequestsException" => Self::Throttled,
                "InternalFailure"
                | "InternalFailureException"
                | "InternalServerError"
                | "ServiceUnavailable"
                | "ServiceUnavailableException"
                | "RequestTimeout"
                | "RequestTimeoutException" => Self::Transient,
                "ResourceNotFoundException" => Self::NotFound,
                "AccessDeniedException"
                | "AccessDenied"
                | "ExpiredTokenException"
                | "ExpiredToken"
                | "UnrecognizedClientException"
                | "InvalidSignatureException"
                | "IncompleteSignature"
                | "MissingAuthenticationToken"
                | "InvalidClientTokenId"
                | "SignatureDoesNotMatch"
                | "KMSAccessDeniedException"
                | "KMSDisabledException"
                | "KMSInvalidStateException"
                | "KMSNotFoundException"
                | "KMSOptInRequired" => Self::AccessDenied,
                "ValidationException"
                | "InvalidArgumentException"
                | "SerializationException"
                // Our own: a request that could not be made (nothing was sent).
                | "ConstructionFailure" => Self::InvalidRequest,
                // Our own codes for answers that are not the service's.
                "NotKinesis" | "EndpointError" => Self::Endpoint,
                "TlsError" => Self::Tls,
                "CredentialsError" => Self::Transient,
                _ => return None,
            })
        });
        by_code.unwrap_or(match status {
            Some(429) => Self::Throttled,
            Some(s) if s >= 500 => Self::Transient,
            Some(403) | Some(401) => Self::AccessDenied,
            Some(404) => Self::NotFound,
            _ => Self::Other,
        })
    }

    /// Whether retrying the same records later can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient | Self::Other)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Throttled => "throttled",
            Self::Transient => "transient error",
            Self::NotFound => "stream not found",
            Self::AccessDenied => "access denied",
            Self::InvalidRequest => "invalid request",
            Self::Endpoint => "not a Kinesis endpoint",
            Self::Tls => "TLS error",
            Self::Other => "error",
        })
    }
}

/// A request that failed as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportError {
    kind: ErrorKind,
    code: Option<String>,
    message: String,
    status: Option<u16>,
    maybe_stored: bool,
}

/// The code of a request that outlasted its timeout.
pub const TIMEOUT_CODE: &str = "Timeout";

impl TransportError {
    /// An error of a kind, with a message.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: None,
            message: message.into(),
            status: None,
            maybe_stored: false,
        }
    }

    /// A request that outlasted its timeout: transient, code [`TIMEOUT_CODE`], and
    /// it [may have been stored](Self::may_have_been_stored).
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
            .with_code(TIMEOUT_CODE)
            .stored_unknown()
    }

    /// The same error, marked as one after which the request may have been stored
    /// (it was sent, and no answer came: a timeout, a connection broken mid-way).
    pub fn stored_unknown(mut self) -> Self {
        self.maybe_stored = true;
        self
    }

    /// Whether the request may have been stored although it failed: the service
    /// may have taken it before the answer was lost. Resending it may store its
    /// records twice.
    pub fn may_have_been_stored(&self) -> bool {
        self.maybe_stored
    }

    /// Whether the request outlasted its timeout.
    pub fn is_timeout(&self) -> bool {
        self.code.as_deref() == Some(TIMEOUT_CODE)
    }

    /// Whether TLS failed (the server's certificate was refused, or the endpoint
    /// does not speak TLS): the [message](Self::message) names the problem.
    pub fn is_tls(&self) -> bool {
        self.kind == ErrorKind::Tls
    }

    /// An error from a service code, classified by [`ErrorKind::classify`].
    pub fn from_code(
        code: impl Into<String>,
        message: impl Into<String>,
        status: Option<u16>,
    ) -> Self {
        let code = code.into();
        Self {
            kind: ErrorKind::classify(Some(&code), status),
            code: Some(code),
            message: message.into(),
            status,
            maybe_stored: false,
        }
    }

    /// The same error with the service's code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }

    /// The same error with an HTTP status.
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// What it means for the records.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The service's error code, if it answered with one.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }

    /// The service's (or the client's) message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status, if a response came back.
    pub fn status(&self) -> Option<u16> {
        self.status
    }

    /// The code to record in a record's attempt: the service's code, or a name for
    /// the kind (`Timeout`, `ConnectionError`, …) when there is none.
    pub fn code_or_kind(&self) -> &str {
        self.code.as_deref().unwrap_or(match self.kind {
            ErrorKind::Throttled => "Throttled",
            ErrorKind::Transient => "TransientError",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::AccessDenied => "AccessDenied",
            ErrorKind::InvalidRequest => "InvalidRequest",
            ErrorKind::Endpoint => "EndpointError",
            ErrorKind::Tls => "TlsError",
            ErrorKind::Other => "Error",
        })
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(code) = &self.code {
            write!(f, " ({code})")?;
        }
        if let Some(status) = self.status {
            write!(f, " [HTTP {status}]")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for TransportError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_classify() {
        for (code, status, kind) in [
            (
                Some("ProvisionedThroughputExceededException"),
                Some(400),
                ErrorKind::Throttled,
            ),
            (
                Some("KMSThrottlingException"),
                Some(400),
                ErrorKind::Throttled,
            ),
            (Some("InternalFailure"), Some(500), ErrorKind::Transient),
            (
                Some("ResourceNotFoundException"),
                Some(400),
                ErrorKind::NotFound,
            ),
            (
                Some("AccessDeniedException"),
                Some(400),
                ErrorKind::AccessDenied,
            ),
            (
                Some("ExpiredTokenException"),
                Some(400),
                ErrorKind::AccessDenied,
            ),
            (
                Some("ValidationException"),
                Some(400),
                ErrorKind::InvalidRequest,
            ),
            (
                Some("InvalidArgumentException"),
                Some(400),
                ErrorKind::InvalidRequest,
            ),
            (Some("ConstructionFailure"), None, ErrorKind::InvalidRequest),
            (Some("TlsError"), None, ErrorKind::Tls),
            (Some("NotKinesis"), Some(200), ErrorKind::Endpoint),
            (Some("SomethingNew"), Some(503), ErrorKind::Transient),
            (None, Some(502), ErrorKind::Transient),
            (None, Some(429), ErrorKind::Throttled),
            (Some("SomethingNew"), Some(400), ErrorKind::Other),
            (None, None, ErrorKind::Other),
        ] {
            assert_eq!(
                ErrorKind::classify(code, status),
                kind,
                "{code:?} {status:?}"
            );
        }
        assert!(!ErrorKind::NotFound.is_retryable());
        assert!(!ErrorKind::AccessDenied.is_retryable());
        assert!(!ErrorKind::InvalidRequest.is_retryable());
        assert!(!ErrorKind::Tls.is_retryable());
        assert!(ErrorKind::Throttled.is_retryable());
    }

    #[test]
    fn display_keeps_code_and_message() {
        let e =
            TransportError::from_code("ResourceNotFoundException", "Stream s not found", Some(400));
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(
            e.to_string(),
            "stream not found (ResourceNotFoundException) [HTTP 400]: Stream s not found"
        );
    }
}
