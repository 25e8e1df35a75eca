//! The error type that crosses the boundary.

use abi_stable::{
    StableAbi,
    std_types::{RString, RVec, Tuple2},
};

/// An error returned by a host service or a plugin entry point.
///
/// `code` is a stable machine-readable string (see the associated constants);
/// `message` is safe to show to a client: it never contains a secret value.
/// `details` carries per-item reasons, e.g. every rejected key of an update.
///
/// ```
/// use host_api::HostError;
/// let e = HostError::new(HostError::REJECTED, "some keys were refused")
///     .with_detail("LD_PRELOAD", "blocked by the host");
/// assert_eq!(e.code.as_str(), HostError::REJECTED);
/// assert_eq!(e.to_string(), "some keys were refused (rejected)");
/// assert_eq!(e.details[0].0.as_str(), "LD_PRELOAD");
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct HostError {
    /// Machine-readable code, e.g. [`HostError::CONFLICT`].
    pub code: RString,
    /// Human-readable message without secret values.
    pub message: RString,
    /// `(item, reason)` pairs, e.g. `("LD_PRELOAD", "blocked by the host")`.
    pub details: RVec<Tuple2<RString, RString>>,
}

impl HostError {
    /// An environment update was based on a stale version.
    pub const CONFLICT: &'static str = "conflict";
    /// Some items of a request were refused; see `details`.
    pub const REJECTED: &'static str = "rejected";
    /// The config file could not be read or written.
    pub const STORAGE: &'static str = crate::ErrorCode::StorageError.as_str();
    /// A plugin failed to initialise.
    pub const INIT: &'static str = "init_failed";
    /// A plugin asked for a key outside its scope: one it does not declare
    /// (since 0.1.2; see [`crate::PluginServices::env_get`]).
    pub const UNDECLARED_KEY: &'static str = "undeclared_key";
    /// Anything else, including a caught panic.
    pub const INTERNAL: &'static str = crate::ErrorCode::InternalError.as_str();

    /// A new error without details. `code` is usually one of the associated
    /// constants; `message` must not contain a secret value.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: RString::from(message.into()),
            details: RVec::new(),
        }
    }

    /// Adds an `(item, reason)` detail, e.g. a refused key and why.
    pub fn with_detail(mut self, item: &str, reason: &str) -> Self {
        self.details.push(Tuple2(item.into(), reason.into()));
        self
    }
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for HostError {}
