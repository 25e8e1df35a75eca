//! The bridge between poem and a plugin's `handle_shared` (or, for plugins
//! built against host-api 0.1.0, `handle`) entry point: converts a
//! `poem::Request` into an [`FfiRequest`] (the body read whole, within the
//! body limit and the body deadline), runs the plugin's future on the
//! plugin runtime (`plugins::runtime`) within the request deadline, and
//! hands the response body to hyper without a copy. The plugin's
//! hop-by-hop and framing headers are dropped: the host frames every
//! response itself.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use abi_stable::std_types::{RArc, RString, RVec, Tuple2};
use futures_util::FutureExt as _;
use host_api::{ErrorCode, FfiRequest, Header};
use poem::{
    Endpoint, Request, Response,
    http::{HeaderName, HeaderValue, StatusCode},
};
use tokio::io::AsyncReadExt as _;

use crate::http::errors::{json_error, json_error_response};
use crate::plugins::{loader::PluginModule, parsed};

/// The bounds the bridge applies to each request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BridgeLimits {
    /// The largest body accepted, in bytes (larger: 413).
    pub(crate) body_limit: usize,
    /// How long the whole body may take to arrive (then 408).
    pub(crate) body_timeout: Duration,
    /// How long the plugin may take to answer (then 504).
    pub(crate) request_timeout: Duration,
}

/// A poem endpoint that forwards every request to one plugin.
#[derive(Clone)]
pub(crate) struct PluginEndpoint {
    module: PluginModule,
    plugin_id: Arc<str>,
    limits: BridgeLimits,
    runtime: tokio::runtime::Handle,
}

impl PluginEndpoint {
    /// Forwards to `module`, whose futures run on `runtime`, within `limits`.
    pub(crate) fn new(
        module: PluginModule,
        plugin_id: &str,
        limits: BridgeLimits,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        Self {
            module,
            plugin_id: plugin_id.into(),
            limits,
            runtime,
        }
    }
}

/// How long a request body may stall between two reads before the request
/// is refused with 408.
pub(crate) const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads a body, refusing with 413 as soon as it exceeds `limit` bytes
/// (whatever `Content-Length` claims), and with 408 when it stalls for
/// [`BODY_IDLE_TIMEOUT`] or has not arrived in full within `deadline` (a
/// body trickled a byte at a time would otherwise hold its buffer and
/// connection for ever).
pub(crate) async fn read_body_limited(
    req: &mut Request,
    limit: usize,
    deadline: Duration,
) -> poem::Result<Vec<u8>> {
    match tokio::time::timeout(deadline, read_body_idle_limited(req, limit)).await {
        Ok(read) => read,
        Err(_) => Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            ErrorCode::BodyTimeout,
            &format!(
                "the request body did not arrive in full within {} s",
                deadline.as_secs_f64()
            ),
        )),
    }
}

async fn read_body_idle_limited(req: &mut Request, limit: usize) -> poem::Result<Vec<u8>> {
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
    // One byte past the limit tells "too large" from "exactly the limit";
    // saturating, so a limit of `usize::MAX` does not wrap to zero.
    let mut reader = req
        .take_body()
        .into_async_read()
        .take((limit as u64).saturating_add(1));
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
    let named_by_connection = connection_tokens(headers);
    for Tuple2(name, value) in headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value.as_str()),
        ) {
            (Ok(n), _)
                if is_hop_by_hop(&n) || named_by_connection.iter().any(|t| t == n.as_str()) =>
            {
                tracing::debug!(
                    plugin = plugin_id,
                    header = n.as_str(),
                    "plugin set a hop-by-hop or framing header; dropped"
                );
            }
            (Ok(n), Ok(v)) => out = out.header(n, v),
            _ => tracing::warn!(
                plugin = plugin_id,
                "plugin returned an invalid header; dropped"
            ),
        }
    }
    out.body(poem::Body::from_bytes(body))
}

/// Whether a response header is hop-by-hop or framing (RFC 9110 §7.6.1,
/// RFC 9112 §6): the host frames every response itself, so a plugin's
/// `Content-Length` or `Transfer-Encoding` could desynchronise a keep-alive
/// connection, and its `Connection` or `Upgrade` could take it over.
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "upgrade"
            | "te"
            | "trailer"
    ) || name.as_str().starts_with("proxy-")
}

/// The header names a plugin's `Connection` header lists: hop-by-hop too.
fn connection_tokens(headers: &RVec<Header>) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.0.as_str().eq_ignore_ascii_case("connection"))
        .flat_map(|h| h.1.as_str().split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Calls an entry point and awaits its future on this runtime. The plugin's
/// shims catch panics themselves; these guards catch a plugin that skipped
/// them (async-ffi re-raises a panic from `poll`). `None`: it panicked.
async fn call_guarded<R, T>(
    entry: extern "C" fn(R) -> async_ffi::FfiFuture<T>,
    request: R,
) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| entry(request))) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await.ok(),
        Err(_) => None,
    }
}

/// Aborts a plugin task when the request that awaits it goes away (the
/// deadline passed, or the client disconnected). A task blocked inside
/// `poll` stops at its next return from `poll`; nothing in-process can stop
/// it sooner.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs an entry point's future on the plugin runtime and awaits it from
/// the host's side for at most `deadline`. `None`: the deadline passed;
/// `Some(None)`: the plugin panicked.
pub(crate) async fn run_on<R: Send + 'static, T: Send + 'static>(
    runtime: &tokio::runtime::Handle,
    entry: extern "C" fn(R) -> async_ffi::FfiFuture<T>,
    request: R,
    deadline: Duration,
) -> Option<Option<T>> {
    let mut task = AbortOnDrop(runtime.spawn(call_guarded(entry, request)));
    match tokio::time::timeout(deadline, &mut task.0).await {
        Ok(Ok(answer)) => Some(answer),
        Ok(Err(_)) => Some(None),
        Err(_) => None,
    }
}

impl Endpoint for PluginEndpoint {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let limits = self.limits;
        let body = read_body_limited(&mut req, limits.body_limit, limits.body_timeout).await?;
        let deadline = limits.request_timeout;
        // Since host-api 0.1.2 the request crosses already parsed
        // (`plugins::parsed`); older plugins get the strings of `FfiRequest`.
        if let Some(entry) = self.module.handle_parsed() {
            let parsed = parsed::to_parsed(&req, body, parsed::client_of(&req))?;
            let response = run_on(&self.runtime, entry, parsed, deadline)
                .await
                .map(|r| r.map(|r| parsed::from_parsed(r, &self.plugin_id)));
            return Ok(self.answer(response, deadline));
        }
        let ffi_req = to_ffi(&req, body)?;
        // Both conversions hand the plugin's buffer to hyper without a copy:
        // an `RVec` (allocated by the plugin) or a shared `RArc` of one, each
        // freed through its own vtable when the response is written.
        let response = match self.module.handle_shared() {
            Some(entry) => run_on(&self.runtime, entry, ffi_req, deadline)
                .await
                .map(|r| {
                    r.map(|r| {
                        let body = bytes::Bytes::from_owner(SharedBody(r.body));
                        from_ffi(r.status, &r.headers, body, &self.plugin_id)
                    })
                }),
            None => run_on(&self.runtime, self.module.handle(), ffi_req, deadline)
                .await
                .map(|r| {
                    r.map(|r| {
                        let body = bytes::Bytes::from_owner(r.body);
                        from_ffi(r.status, &r.headers, body, &self.plugin_id)
                    })
                }),
        };
        Ok(self.answer(response, deadline))
    }
}

impl PluginEndpoint {
    /// The response to send: the plugin's, a 504 when it ran past
    /// `deadline` (`None`), or a 500 when it panicked (`Some(None)`).
    fn answer(&self, response: Option<Option<Response>>, deadline: Duration) -> Response {
        match response {
            Some(Some(resp)) => resp,
            None => {
                tracing::warn!(
                    plugin = &*self.plugin_id,
                    timeout_s = deadline.as_secs_f64(),
                    "plugin did not answer within the request timeout"
                );
                json_error_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    ErrorCode::PluginTimeout,
                    &format!(
                        "the plugin did not answer within {} s",
                        deadline.as_secs_f64()
                    ),
                )
            }
            Some(None) => {
                tracing::error!(
                    plugin = &*self.plugin_id,
                    "plugin panicked while handling a request"
                );
                // The same response the plugin's own shims give a panic.
                let r = host_api::export::panic_response();
                let body = bytes::Bytes::from_owner(r.body);
                from_ffi(r.status, &r.headers, body, &self.plugin_id)
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

    use std::time::Duration;

    use async_ffi::FutureExt as _;
    use host_api::FfiRequest;

    use super::{from_ffi, read_body_limited, run_on, to_ffi};
    use crate::plugins::runtime::plugin_runtime;

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

    const NO_DEADLINE: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn bodies_over_the_limit_are_refused_whatever_the_length_claims() {
        let mut claimed = Request::builder()
            .header("content-length", "11")
            .body(vec![0u8; 11]);
        let err = read_body_limited(&mut claimed, 10, NO_DEADLINE)
            .await
            .expect_err("413");
        assert_eq!(
            code_of(err),
            (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large".into())
        );

        let mut unclaimed = Request::builder().body(poem::Body::from_vec(vec![1u8; 11]));
        unclaimed.headers_mut().remove("content-length");
        let err = read_body_limited(&mut unclaimed, 10, NO_DEADLINE)
            .await
            .expect_err("413");
        assert_eq!(code_of(err).0, StatusCode::PAYLOAD_TOO_LARGE);

        let mut exact = Request::builder().body(vec![2u8; 10]);
        assert_eq!(
            read_body_limited(&mut exact, 10, NO_DEADLINE)
                .await
                .expect("fits")
                .len(),
            10
        );
    }

    #[tokio::test]
    async fn the_largest_limit_does_not_overflow() {
        let mut req = Request::builder().body(vec![3u8; 1000]);
        let body = read_body_limited(&mut req, usize::MAX, NO_DEADLINE)
            .await
            .expect("read");
        assert_eq!(body.len(), 1000, "`limit + 1` must not wrap to zero");
    }

    #[tokio::test]
    async fn a_body_trickling_past_the_deadline_is_a_json_408() {
        // One byte every 10 ms: never idle long, never complete in time.
        let trickle = futures_util::stream::unfold(0u32, |n| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Some((
                Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")),
                n + 1,
            ))
        });
        let mut req = Request::builder().body(poem::Body::from_bytes_stream(trickle));
        let err = read_body_limited(&mut req, 1 << 20, Duration::from_millis(200))
            .await
            .expect_err("408");
        assert_eq!(
            code_of(err),
            (StatusCode::REQUEST_TIMEOUT, "body_timeout".into())
        );
    }

    #[test]
    fn framing_and_hop_by_hop_headers_of_a_plugin_are_dropped() {
        let h = |n: &str, v: &str| Tuple2(RString::from(n), RString::from(v));
        let headers = RVec::from(vec![
            h("content-length", "1000"),
            h("Transfer-Encoding", "chunked"),
            h("connection", "close, x-private"),
            h("keep-alive", "timeout=5"),
            h("upgrade", "websocket"),
            h("te", "trailers"),
            h("trailer", "x-checksum"),
            h("proxy-authenticate", "Basic"),
            h("Proxy-Connection", "keep-alive"),
            h("x-private", "named by connection"),
            h("content-type", "text/plain"),
            h("x-kept", "yes"),
        ]);
        let resp = from_ffi(200, &headers, bytes::Bytes::from_static(b"hello"), "@t/p");
        let names: Vec<&str> = resp.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-kept"], "{names:?}");
    }

    extern "C" fn never_answers(_: FfiRequest) -> async_ffi::FfiFuture<u8> {
        std::future::pending().into_ffi()
    }

    extern "C" fn blocks_its_thread(_: FfiRequest) -> async_ffi::FfiFuture<u8> {
        async {
            std::thread::sleep(Duration::from_millis(500));
            1
        }
        .into_ffi()
    }

    extern "C" fn answers(_: FfiRequest) -> async_ffi::FfiFuture<u8> {
        async { 7 }.into_ffi()
    }

    fn request() -> FfiRequest {
        to_ffi(&Request::builder().finish(), Vec::new()).expect("request")
    }

    // A current-thread runtime, as the host's worker is: had the plugin's
    // future been polled on it, a blocked `poll` would hold the timer too.
    #[tokio::test(flavor = "current_thread")]
    async fn plugin_futures_run_on_their_own_runtime_within_the_deadline() {
        let runtime = plugin_runtime().expect("runtime");
        let short = Duration::from_millis(100);
        assert_eq!(
            run_on(&runtime, answers, request(), NO_DEADLINE).await,
            Some(Some(7))
        );
        assert_eq!(
            run_on(&runtime, never_answers, request(), short).await,
            None
        );
        assert_eq!(
            run_on(&runtime, blocks_its_thread, request(), short).await,
            None
        );
    }
}
