//! The machine-readable error codes of every JSON error the host and its
//! plugins produce, and the one builder of the error body.
//!
//! Every error response is `{"error": "<message>", "code": "<code>"}` (a
//! plugin may add fields, such as the secrets plugin's `rejected` map). One
//! condition has one code, whoever detects it: a plugin that refuses a body
//! with the wrong content type says `unsupported_media_type`, as the host
//! does. Plugin authors use the same table, so clients can match on codes
//! without knowing which side answered.

/// A machine-readable error code.
///
/// ```
/// use host_api::ErrorCode;
/// assert_eq!(ErrorCode::NotFound.as_str(), "not_found");
/// assert_eq!(ErrorCode::from_code("not_found"), Some(ErrorCode::NotFound));
/// // Every code is distinct.
/// let mut all: Vec<_> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
/// all.sort();
/// all.dedup();
/// assert_eq!(all.len(), ErrorCode::ALL.len());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request is malformed (an unparseable target, a bad header, a
    /// shape the route cannot read). Usually 400.
    BadRequest,
    /// The request body could not be read (the connection failed mid-body).
    /// 400.
    BadBody,
    /// A request header value is not valid UTF-8. 400.
    BadHeader,
    /// The body is not valid JSON. 400.
    InvalidJson,
    /// The JSON body repeats a key in one object (the message names it). 400.
    DuplicateKey,
    /// An HTTP/1.1 request without a `Host` header, or with more than one.
    /// 400.
    BadHost,
    /// The body is JSON but not an object. 400.
    InvalidBody,
    /// The body lacks the required `secrets` member. 400.
    MissingSecrets,
    /// `secrets` is not an object. 400.
    InvalidSecretsType,
    /// `secrets` names no key. 400.
    EmptySecrets,
    /// Some entries of an all-or-nothing write were refused; the body names
    /// each with its reason. 400.
    InvalidSecrets,
    /// The body is not `application/json` where JSON is required (400 from
    /// a plugin's extractor, 415 from the host).
    UnsupportedMediaType,
    /// The API token is missing or wrong. 401.
    Unauthorized,
    /// The request names a host this server does not answer for (DNS
    /// rebinding defence). 403.
    ForbiddenHost,
    /// Refused for another reason. 403.
    Forbidden,
    /// A state-changing request (`PUT`, `PATCH`, `POST`, `DELETE`) from a
    /// browser origin that is neither the host's own nor allowed
    /// (`MILADY_ALLOWED_ORIGINS`). 403.
    ForbiddenOrigin,
    /// No such route. 404.
    NotFound,
    /// No plugin with this id is registered. 404.
    PluginNotFound,
    /// The method is not served on this route. 405.
    MethodNotAllowed,
    /// The body did not arrive in full in time. 408.
    BodyTimeout,
    /// `If-Match` names a state that is no longer current. 412.
    PreconditionFailed,
    /// The body is larger than the host's limit. 413.
    PayloadTooLarge,
    /// Another client error. 4xx.
    ClientError,
    /// The config file could not be read or written. 500.
    StorageError,
    /// A plugin panicked while handling the request. 500.
    PluginPanicked,
    /// A plugin answered with something the host cannot send. 502.
    BadPluginResponse,
    /// Anything else. 500.
    InternalError,
    /// The plugin has not been initialised by the host. 503.
    NotInitialised,
    /// A plugin did not answer within the host's request timeout. 504.
    PluginTimeout,
    /// The secret store (OpenBao / Vault) is unreachable, sealed or refuses
    /// the host's token; nothing was changed. 503.
    StoreUnavailable,
}

impl ErrorCode {
    /// Every code, in declaration order.
    pub const ALL: &'static [ErrorCode] = &[
        Self::BadRequest,
        Self::BadBody,
        Self::BadHeader,
        Self::InvalidJson,
        Self::DuplicateKey,
        Self::BadHost,
        Self::InvalidBody,
        Self::MissingSecrets,
        Self::InvalidSecretsType,
        Self::EmptySecrets,
        Self::InvalidSecrets,
        Self::UnsupportedMediaType,
        Self::Unauthorized,
        Self::ForbiddenHost,
        Self::Forbidden,
        Self::ForbiddenOrigin,
        Self::NotFound,
        Self::PluginNotFound,
        Self::MethodNotAllowed,
        Self::BodyTimeout,
        Self::PreconditionFailed,
        Self::PayloadTooLarge,
        Self::ClientError,
        Self::StorageError,
        Self::PluginPanicked,
        Self::BadPluginResponse,
        Self::InternalError,
        Self::NotInitialised,
        Self::PluginTimeout,
        Self::StoreUnavailable,
    ];

    /// The code as it appears in a JSON error body.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::BadBody => "bad_body",
            Self::BadHeader => "bad_header",
            Self::InvalidJson => "invalid_json",
            Self::DuplicateKey => "duplicate_key",
            Self::BadHost => "bad_host",
            Self::InvalidBody => "invalid_body",
            Self::MissingSecrets => "missing_secrets",
            Self::InvalidSecretsType => "invalid_secrets_type",
            Self::EmptySecrets => "empty_secrets",
            Self::InvalidSecrets => "invalid_secrets",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenHost => "forbidden_host",
            Self::Forbidden => "forbidden",
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::NotFound => "not_found",
            Self::PluginNotFound => "plugin_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::BodyTimeout => "body_timeout",
            Self::PreconditionFailed => "precondition_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::ClientError => "client_error",
            Self::StorageError => "storage_error",
            Self::PluginPanicked => "plugin_panicked",
            Self::BadPluginResponse => "bad_plugin_response",
            Self::InternalError => "internal_error",
            Self::NotInitialised => "not_initialised",
            Self::PluginTimeout => "plugin_timeout",
            Self::StoreUnavailable => "store_unavailable",
        }
    }

    /// The code for a string, if it is one of this table's.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.as_str() == code)
    }

    /// The code for an HTTP status, for errors a framework raised itself
    /// (a 404 from the router, a 405, a 413 from a body limit...).
    ///
    /// ```
    /// assert_eq!(host_api::ErrorCode::for_status(405).as_str(), "method_not_allowed");
    /// assert_eq!(host_api::ErrorCode::for_status(599).as_str(), "internal_error");
    /// ```
    pub const fn for_status(status: u16) -> Self {
        match status {
            400 => Self::BadRequest,
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            404 => Self::NotFound,
            405 => Self::MethodNotAllowed,
            408 => Self::BodyTimeout,
            412 => Self::PreconditionFailed,
            413 => Self::PayloadTooLarge,
            415 => Self::UnsupportedMediaType,
            504 => Self::PluginTimeout,
            s if s >= 400 && s < 500 => Self::ClientError,
            _ => Self::InternalError,
        }
    }
}

impl AsRef<str> for ErrorCode {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON error body `{"error": message, "code": code}`, as text: the one
/// builder the host and plugins share. `message` must not contain a secret
/// value; both strings are escaped.
///
/// ```
/// let body = host_api::error_body(host_api::ErrorCode::NotFound, "no such route");
/// let v: serde_json::Value = serde_json::from_str(&body).unwrap();
/// assert_eq!(v, serde_json::json!({"error": "no such route", "code": "not_found"}));
/// ```
pub fn error_body(code: impl AsRef<str>, message: &str) -> String {
    serde_json::json!({ "error": message, "code": code.as_ref() }).to_string()
}
