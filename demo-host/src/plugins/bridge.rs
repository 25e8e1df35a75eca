//! The bridge between poem and a plugin's `handle_shared` (or, for plugins
//! built against host-api 0.1.0, `handle`) entry point: converts a
//! `poem::Request` into an [`FfiRequest`], awaits the plugin's future on the
//! host's runtime, and hands the response body to hyper without a copy.

use std::{panic::AssertUnwindSafe, sync::Arc};

use abi_stable::std_types::{RArc, RString, RVec, Tuple2};
use futures_util::FutureExt as _;
use host_api::{ErrorCode, FfiRequest, Header};
use poem::{
    Endpoint, Request, Response,
    http::{HeaderName, HeaderValue, StatusCode},
};
use tokio::io::AsyncReadExt as _;

use crate::http::errors::{json_error, json_error_response};
use crate::plugins::loader::PluginModule;

/// A poem endpoint that forwards every request to one plugin.
#[derive(Clone)]
pub(crate) struct PluginEndpoint {
    module: PluginModule,
    plugin_id: Arc<str>,
    body_limit: usize,
}

impl PluginEndpoint {
    /// Forwards to `module`, refusing bodies over `body_limit` bytes.
    pub(crate) fn new(module: PluginModule, plugin_id: &str, body_limit: usize) -> Self {
        Self {
            module,
            plugin_id: plugin_id.into(),
            body_limit,
        }
    }
}

/// How long a request body may stall between two reads before the request
/// is refused with 408.
pub(crate) const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a body, refusing with 413 as soon as it exceeds `limit` bytes
/// (whatever `Content-Length` claims), and with 408 when it stalls for
/// [`BODY_IDLE_TIMEOUT`].
pub(crate) async fn read_body_limited(req: &mut Request, limit: usize) -> poem::Result<Vec<u8>> {
    if let Some(len) = req
        .headers()
        .get(poem::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large(limit));
    }
    let mut body = Vec::new();
    let mut reader = req.take_body().into_async_read().take(limit as u64 + 1);
    loop {
        // A client that stalls mid-body would otherwise hold the request
        // (and its connection) open for ever. Reads go straight into
        // `body` (no zeroed scratch buffer per request: most have no body).
        let read = tokio::time::timeout(BODY_IDLE_TIMEOUT, reader.read_buf(&mut body))
            .await
            .map_err(|_| {
                json_error(
                    StatusCode::REQUEST_TIMEOUT,
                    ErrorCode::BodyTimeout,
                    &format!(
                        "the request body stalled for more than {} s",
                        BODY_IDLE_TIMEOUT.as_secs()
                    ),
                )
            })?;
        match read {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {
                return Err(json_error(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::BadBody,
                    "the request body could not be read",
                ));
            }
        }
        if body.len() > limit {
            return Err(too_large(limit));
        }
    }
    Ok(body)
}

fn too_large(limit: usize) -> poem::Error {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::PayloadTooLarge,
        &format!("the request body exceeds the limit of {limit} bytes"),
    )
}

fn to_ffi(req: &Request, body: Vec<u8>) -> poem::Result<FfiRequest> {
    let mut headers = RVec::with_capacity(req.headers().len());
    for (name, value) in req.headers() {
        let value = value.to_str().map_err(|_| {
            json_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadHeader,
                &format!("header `{name}` is not valid text"),
            )
        })?;
        headers.push(Tuple2(RString::from(name.as_str()), RString::from(value)));
    }
    let uri = req
        .uri()
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/");
    Ok(FfiRequest {
        method: req.method().as_str().into(),
        uri: uri.into(),
        headers,
        body: body.into(),
    })
}

/// A plugin's shared body, as the owner of a `Bytes` (no copy).
struct SharedBody(RArc<RVec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

fn from_ffi(status: u16, headers: &RVec<Header>, body: bytes::Bytes, plugin_id: &str) -> Response {
    let Ok(status) = StatusCode::from_u16(status) else {
        tracing::error!(
            plugin = plugin_id,
            status,
            "plugin returned an invalid status"
        );
        return json_error_response(
            StatusCode::BAD_GATEWAY,
            ErrorCode::BadPluginResponse,
            "the plugin returned an invalid response",
        );
    };
    let mut out = Response::builder().status(status);
    for Tuple2(name, value) in headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_str()),
        ) {
            (Ok(n), Ok(v)) => out = out.header(n, v),
            _ => tracing::warn!(
                plugin = plugin_id,
                "plugin returned an invalid header; dropped"
            ),
        }
    }
    out.body(poem::Body::from_bytes(body))
}

/// Calls an entry point and awaits its future on this runtime. The plugin's
/// shims catch panics themselves; these guards catch a plugin that skipped
/// them (async-ffi re-raises a panic from `poll`). `None`: it panicked.
async fn call_guarded<T>(
    entry: extern "C" fn(FfiRequest) -> async_ffi::FfiFuture<T>,
    request: FfiRequest,
) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| entry(request))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await.ok(),
        Err(_) => None,
    }
}

impl Endpoint for PluginEndpoint {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let body = read_body_limited(&mut req, self.body_limit).await?;
        let ffi_req = to_ffi(&req, body)?;
        // Both conversions hand the plugin's buffer to hyper without a copy:
        // an `RVec` (allocated by the plugin) or a shared `RArc` of one, each
        // freed through its own vtable when the response is written.
        let response = match self.module.handle_shared() {
            Some(entry) => call_guarded(entry, ffi_req).await.map(|r| {
                let body = bytes::Bytes::from_owner(SharedBody(r.body));
                from_ffi(r.status, &r.headers, body, &self.plugin_id)
            }),
            None => call_guarded(self.module.handle(), ffi_req).await.map(|r| {
                let body = bytes::Bytes::from_owner(r.body);
                from_ffi(r.status, &r.headers, body, &self.plugin_id)
            }),
        };
        match response {
            Some(resp) => Ok(resp),
            None => {
                tracing::error!(
                    plugin = &*self.plugin_id,
                    "plugin panicked while handling a request"
                );
                // The same response the plugin's own shims give a panic.
                let r = host_api::export::panic_response();
                let body = bytes::Bytes::from_owner(r.body);
                Ok(from_ffi(r.status, &r.headers, body, &self.plugin_id))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RString, RVec, Tuple2};
    use poem::{
        Request,
        http::{HeaderValue, Method, StatusCode},
    };

    use super::{from_ffi, read_body_limited, to_ffi};

    fn code_of(err: poem::Error) -> (StatusCode, String) {
        let resp = err.into_response();
        let status = resp.status();
        let body = futures_util::FutureExt::now_or_never(resp.into_body().into_string())
            .and_then(Result::ok)
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        (status, v["code"].as_str().unwrap_or_default().to_owned())
    }

    #[test]
    fn a_request_crosses_with_method_target_headers_and_body() {
        let req = Request::builder()
            .method(Method::PUT)
            .uri_str("/api/secrets?x=1&y=%40")
            .header("X-Custom", "v1")
            .header("if-match", "\"abc\"")
            .finish();
        let ffi = to_ffi(&req, b"{}".to_vec()).expect("converted");
        assert_eq!(ffi.method.as_str(), "PUT");
        assert_eq!(ffi.uri.as_str(), "/api/secrets?x=1&y=%40");
        assert_eq!(ffi.header("x-custom"), Some("v1"));
        assert!(
            ffi.headers
                .iter()
                .all(|h| h.0.as_str() == h.0.to_ascii_lowercase())
        );
        assert_eq!(ffi.header("If-Match"), Some("\"abc\""));
        assert_eq!(ffi.body.as_slice(), b"{}");
    }

    #[test]
    fn a_header_that_is_not_text_is_refused_by_name() {
        let mut req = Request::builder().uri_str("/api/x").finish();
        req.headers_mut().insert(
            "x-binary",
            HeaderValue::from_bytes(b"\xff\xfe").expect("opaque bytes are a valid value"),
        );
        let err = to_ffi(&req, Vec::new()).expect_err("refused");
        assert_eq!(code_of(err), (StatusCode::BAD_REQUEST, "bad_header".into()));
    }

    #[test]
    fn a_response_keeps_status_and_valid_headers_and_drops_invalid_ones() {
        let headers = RVec::from(vec![
            Tuple2(RString::from("x-ok"), RString::from("yes")),
            Tuple2(RString::from("bad header"), RString::from("x")),
            Tuple2(RString::from("x-bad-value"), RString::from("a\nb")),
        ]);
        let resp = from_ffi(201, &headers, bytes::Bytes::from_static(b"body"), "@t/p");
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(
            resp.headers().get("x-ok").and_then(|v| v.to_str().ok()),
            Some("yes")
        );
        assert_eq!(resp.headers().len(), 1, "{:?}", resp.headers());
    }

    #[test]
    fn an_impossible_status_becomes_a_json_502() {
        let resp = from_ffi(42, &RVec::new(), bytes::Bytes::new(), "@t/p");
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let body = futures_util::FutureExt::now_or_never(resp.into_body().into_string())
            .and_then(Result::ok)
            .unwrap_or_default();
        assert!(body.contains("bad_plugin_response"), "{body}");
    }

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_whatever_the_length_claims() {
        let mut claimed = Request::builder()
            .header("content-length", "11")
            .body(vec![0u8; 11]);
        let err = read_body_limited(&mut claimed, 10).await.expect_err("413");
        assert_eq!(
            code_of(err),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
        );

        let mut unclaimed = Request::builder().body(poem::Body::from_vec(vec![1u8; 11]));
        unclaimed.headers_mut().remove("content-length");
        let err = read_body_limited(&mut unclaimed, 10)
            .await
            .expect_err("413");
        assert_eq!(code_of(err).0, StatusCode::PAYLOAD_TOO_LARGE);

        let mut exact = Request::builder().body(vec![2u8; 10]);
        assert_eq!(
            read_body_limited(&mut exact, 10).await.expect("fits").len(),
            10
        );
    }
}
