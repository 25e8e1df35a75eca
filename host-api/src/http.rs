//! ABI-stable HTTP request and response types carried across the boundary.

use abi_stable::{
    StableAbi,
    std_types::{RArc, RString, RVec, Tuple2},
};

/// One HTTP header: name (lowercase) and value.
///
/// Header values that are not valid UTF-8 never reach a plugin: the host
/// rejects such requests before forwarding them.
pub type Header = Tuple2<RString, RString>;

/// An HTTP request as the host forwards it to a plugin.
///
/// The body has already been read in full, within the host's size limit.
#[repr(C)]
#[derive(StableAbi, Clone, Default)]
pub struct FfiRequest {
    /// Method in upper case, e.g. `GET`.
    pub method: RString,
    /// Path and query as the client sent them, e.g. `/api/secrets?x=1`.
    pub uri: RString,
    /// Request headers, names in lower case, in arrival order.
    pub headers: RVec<Header>,
    /// The complete request body.
    pub body: RVec<u8>,
}

/// An HTTP response produced by a plugin.
#[repr(C)]
#[derive(StableAbi, Clone, Default)]
pub struct FfiResponse {
    /// Status code, e.g. `200`.
    pub status: u16,
    /// Response headers.
    pub headers: RVec<Header>,
    /// The complete response body.
    pub body: RVec<u8>,
}

impl FfiRequest {
    /// The first header with this name (case-insensitive), if any.
    ///
    /// ```
    /// # use host_api::FfiRequest;
    /// # use abi_stable::std_types::{RString, Tuple2};
    /// let mut req = FfiRequest::default();
    /// req.headers.push(Tuple2(RString::from("if-match"), RString::from("\"v1\"")));
    /// assert_eq!(req.header("If-Match"), Some("\"v1\""));
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.0.as_str().eq_ignore_ascii_case(name))
            .map(|h| h.1.as_str())
    }
}

/// A response whose body is shared instead of copied (since 0.1.1).
///
/// A plugin that keeps a body around (a cache) hands out a reference-counted
/// pointer to it; the host sends those bytes without copying them and drops
/// its reference when the response is written. The host prefers
/// [`crate::PluginMod::handle_shared`] when a plugin has it.
#[repr(C)]
#[derive(StableAbi, Clone)]
pub struct FfiSharedResponse {
    /// Status code, e.g. `200`.
    pub status: u16,
    /// Response headers.
    pub headers: RVec<Header>,
    /// The complete response body, shared.
    pub body: RArc<RVec<u8>>,
}

impl From<FfiResponse> for FfiSharedResponse {
    /// Moves the body behind a shared pointer (no copy).
    fn from(response: FfiResponse) -> Self {
        Self {
            status: response.status,
            headers: response.headers,
            body: RArc::new(response.body),
        }
    }
}

impl std::fmt::Debug for FfiSharedResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfiSharedResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

// Request bodies may carry secrets: never print them.
impl std::fmt::Debug for FfiRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfiRequest")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl std::fmt::Debug for FfiResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FfiResponse")
            .field("status", &self.status)
            .field("headers", &self.headers.len())
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl FfiResponse {
    /// A JSON response with the given status and already-serialised body.
    ///
    /// ```
    /// let r = host_api::FfiResponse::json(200, r#"{"ok":true}"#);
    /// assert_eq!(r.status, 200);
    /// assert_eq!(r.headers[0].1.as_str(), "application/json; charset=utf-8");
    /// ```
    pub fn json(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            headers: RVec::from(vec![Tuple2(
                RString::from("content-type"),
                RString::from("application/json; charset=utf-8"),
            )]),
            body: RVec::from(body.into()),
        }
    }

    /// The JSON error shape every host and plugin error uses:
    /// `{"error": message, "code": code}` (see [`crate::ErrorCode`]).
    ///
    /// `message` and `code` are escaped as JSON strings.
    ///
    /// ```
    /// let r = host_api::FfiResponse::error(404, "not_found", "no such route");
    /// assert_eq!(r.status, 404);
    /// let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    /// assert_eq!(body, serde_json::json!({"error": "no such route", "code": "not_found"}));
    /// ```
    pub fn error(status: u16, code: impl AsRef<str>, message: &str) -> Self {
        Self::json(status, crate::codes::error_body(code, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_escapes_json() {
        let r = FfiResponse::error(500, "x", "a\"b\\c\n\u{1}");
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["error"], "a\"b\\c\n\u{1}");
        assert_eq!(body["code"], "x");
    }

    #[test]
    fn shared_response_moves_the_body_and_hides_it() {
        let owned = FfiResponse::json(201, b"SECRET-CANARY".to_vec());
        let ptr = owned.body.as_ptr();
        let shared = FfiSharedResponse::from(owned);
        assert_eq!(shared.status, 201);
        assert_eq!(shared.body.as_slice(), b"SECRET-CANARY");
        assert_eq!(shared.body.as_ptr(), ptr, "moved, not copied");
        assert!(!format!("{shared:?}").contains("CANARY"));
    }

    #[test]
    fn debug_hides_body() {
        let req = FfiRequest {
            body: RVec::from(b"SECRET-CANARY".to_vec()),
            ..FfiRequest::default()
        };
        assert!(!format!("{req:?}").contains("CANARY"));
    }
}
