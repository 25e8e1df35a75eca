//! Requests that cross to a plugin already parsed, and the responses that
//! come back (host-api 0.1.2's `handle_parsed`).
//!
//! [`to_parsed`] turns a `poem::Request` into a [`ParsedRequest`]: the
//! method as an enum, path and query split, every header validated once
//! here (visible text, names already lower case) and packed into one
//! block, the client (peer address, how it authenticated, the fingerprint
//! of its token). [`from_parsed`] turns the plugin's [`ParsedResponse`]
//! back into a poem response: invalid, hop-by-hop and framing headers are
//! dropped (the host frames every response), and the shared body goes to
//! hyper without a copy.
//!
//! With the `bench` feature, [`NativeParsedEndpoint`] runs a handler of the
//! same signature linked into the host, through exactly these conversions:
//! the benchmark's reference for the cost of the boundary alone.

use std::sync::Arc;

use abi_stable::std_types::{RArc, RString, RVec};
use host_api::{
    AuthMethod, ClientInfo, ErrorCode, Headers, HttpMethod, ParsedRequest, ParsedResponse, PeerAddr,
};
use poem::{
    Request, Response,
    http::{HeaderName, HeaderValue, StatusCode},
    web::RemoteAddr,
};

use crate::http::{
    auth,
    errors::{json_error, json_error_response},
};

/// The fingerprint of the host's API token, which the router attaches to
/// every request when the host has a token (see `app`): a request that
/// reaches a plugin presented that token, so this is its fingerprint.
#[derive(Clone, Debug)]
pub(crate) struct TokenFingerprint(pub(crate) Arc<str>);

/// Who sent `req`, as far as the host knows.
pub(crate) fn client_of(req: &Request) -> ClientInfo {
    let peer = match req.remote_addr() {
        RemoteAddr(poem::Addr::SocketAddr(addr)) => PeerAddr::from(*addr),
        _ => PeerAddr::default(),
    };
    match req.extensions().get::<TokenFingerprint>() {
        // The auth layer let it through: it presented the host's token.
        Some(fingerprint) => ClientInfo {
            peer,
            auth: auth::presented(req).map_or(AuthMethod::NONE, |(method, _)| method),
            token_fingerprint: RString::from(&*fingerprint.0),
        },
        None => ClientInfo {
            peer,
            ..ClientInfo::default()
        },
    }
}

/// `req` (whose body was read into `body`) as a [`ParsedRequest`]; a
/// header value that is not visible text is refused with 400.
pub(crate) fn to_parsed(
    req: &Request,
    body: Vec<u8>,
    client: ClientInfo,
) -> poem::Result<ParsedRequest> {
    let bytes = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len())
        .sum();
    let mut headers = Headers::with_capacity(req.headers().len(), bytes);
    for (name, value) in req.headers() {
        let value = value.to_str().map_err(|_| {
            json_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::BadHeader,
                &format!("header `{name}` is not valid text"),
            )
        })?;
        headers.push(name.as_str(), value);
    }
    let method = HttpMethod::from_name(req.method().as_str());
    Ok(ParsedRequest {
        method,
        method_name: match method {
            HttpMethod::Other => req.method().as_str().into(),
            _ => RString::new(),
        },
        path: req.uri().path().into(),
        query: req.uri().query().unwrap_or_default().into(),
        headers,
        body: RVec::from(body),
        client,
    })
}

/// A plugin's shared body, as the owner of a `Bytes` (no copy).
struct SharedBody(RArc<RVec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        self.0.as_slice()
    }
}

/// The plugin's response as a poem response (see the module notes).
pub(crate) fn from_parsed(response: ParsedResponse, plugin_id: &str) -> Response {
    let Ok(status) = StatusCode::from_u16(response.status) else {
        tracing::error!(
            plugin = plugin_id,
            status = response.status,
            "plugin returned an invalid status"
        );
        return json_error_response(
            StatusCode::BAD_GATEWAY,
            ErrorCode::BadPluginResponse,
            "the plugin returned an invalid response",
        );
    };
    let mut out = Response::builder().status(status);
    let headers = &*response.headers;
    let named_by_connection = || {
        headers
            .get_all("connection")
            .flat_map(|v| v.split(','))
            .map(str::trim)
    };
    for (name, value) in headers.iter() {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            (Ok(n), _)
                if super::bridge::is_hop_by_hop(&n)
                    || named_by_connection().any(|t| t.eq_ignore_ascii_case(n.as_str())) =>
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
    out.body(poem::Body::from_bytes(bytes::Bytes::from_owner(
        SharedBody(response.body),
    )))
}

/// A handler linked into the host, behind the very conversions the bridge
/// uses: the benchmark's native reference (see the module notes).
#[cfg(feature = "bench")]
pub struct NativeParsedEndpoint<F> {
    handler: F,
    body_limit: usize,
    body_timeout: std::time::Duration,
}

#[cfg(feature = "bench")]
impl<F, Fut> NativeParsedEndpoint<F>
where
    F: Fn(ParsedRequest) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ParsedResponse> + Send,
{
    /// `handler` behind the default body limit and deadline.
    pub fn new(handler: F) -> Self {
        Self {
            handler,
            body_limit: crate::DEFAULT_BODY_LIMIT,
            body_timeout: crate::DEFAULT_BODY_TIMEOUT,
        }
    }
}

#[cfg(feature = "bench")]
impl<F, Fut> poem::Endpoint for NativeParsedEndpoint<F>
where
    F: Fn(ParsedRequest) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ParsedResponse> + Send,
{
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let body =
            super::bridge::read_body_limited(&mut req, self.body_limit, self.body_timeout).await?;
        let request = to_parsed(&req, body, client_of(&req))?;
        Ok(from_parsed((self.handler)(request).await, "native"))
    }
}

#[cfg(test)]
mod tests {
    use abi_stable::std_types::{RArc, RVec};
    use host_api::{AuthMethod, Headers, HttpMethod, ParsedResponse};
    use poem::{
        Request,
        http::{HeaderValue, Method, StatusCode},
    };

    use super::*;

    #[test]
    fn a_request_crosses_parsed() {
        let req = Request::builder()
            .method(Method::PUT)
            .uri_str("/api/secrets?x=1&y=%40")
            .header("X-Custom", "v1")
            .header("if-match", "\"abc\"")
            .finish();
        let parsed = to_parsed(&req, b"{}".to_vec(), client_of(&req)).expect("parsed");
        assert_eq!(parsed.method, HttpMethod::Put);
        assert!(parsed.method_name.is_empty());
        assert_eq!(parsed.path.as_str(), "/api/secrets");
        assert_eq!(parsed.query.as_str(), "x=1&y=%40");
        assert_eq!(parsed.header("x-custom"), Some("v1"));
        assert_eq!(parsed.header("If-Match"), Some("\"abc\""));
        assert!(
            parsed
                .headers
                .iter()
                .all(|(n, _)| n == n.to_ascii_lowercase())
        );
        assert_eq!(parsed.body.as_slice(), b"{}");
        assert_eq!(parsed.client.auth, AuthMethod::NONE);
        assert!(parsed.client.token_fingerprint.is_empty());
    }

    #[test]
    fn an_unusual_method_keeps_its_name() {
        let req = Request::builder()
            .method(Method::from_bytes(b"PROPFIND").expect("method"))
            .uri_str("/x")
            .finish();
        let parsed = to_parsed(&req, Vec::new(), ClientInfo::default()).expect("parsed");
        assert_eq!(parsed.method, HttpMethod::Other);
        assert_eq!(parsed.method_str(), "PROPFIND");
    }

    #[test]
    fn a_header_that_is_not_text_is_refused() {
        let mut req = Request::builder().uri_str("/api/x").finish();
        req.headers_mut().insert(
            "x-binary",
            HeaderValue::from_bytes(b"\xff\xfe").expect("opaque bytes are a valid value"),
        );
        let err = to_parsed(&req, Vec::new(), ClientInfo::default()).expect_err("refused");
        assert_eq!(err.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn an_authenticated_client_carries_the_method_and_fingerprint_only() {
        let mut req = Request::builder()
            .uri_str("/api/x")
            .header("x-milady-token", "CANARY-TOKEN")
            .finish();
        req.extensions_mut()
            .insert(TokenFingerprint("hmac-sha256:0123456789abcdef".into()));
        let client = client_of(&req);
        assert_eq!(client.auth, AuthMethod::MILADY_TOKEN);
        assert_eq!(
            client.token_fingerprint.as_str(),
            "hmac-sha256:0123456789abcdef"
        );
        assert!(!format!("{client:?}").contains("CANARY"));
    }

    #[test]
    fn a_response_keeps_valid_headers_and_drops_framing_and_invalid_ones() {
        let headers = Headers::default()
            .with("x-ok", "yes")
            .with("content-length", "999")
            .with("connection", "x-private")
            .with("x-private", "1")
            .with("bad header", "x")
            .with("x-bad-value", "a\nb");
        let resp = from_parsed(
            ParsedResponse {
                status: 201,
                headers: RArc::new(headers),
                body: RArc::new(RVec::from(b"body".to_vec())),
            },
            "@t/p",
        );
        assert_eq!(resp.status(), StatusCode::CREATED);
        let names: Vec<&str> = resp.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-ok"]);
    }

    #[test]
    fn an_impossible_status_becomes_a_json_502() {
        let resp = from_parsed(ParsedResponse::json(42, b"{}".to_vec()), "@t/p");
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
    }
}
