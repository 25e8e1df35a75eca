//! Browser defences (SPEC §5), one middleware outside everything else:
//!
//! - Every response carries `X-Content-Type-Options: nosniff`,
//!   `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer` and a
//!   `Content-Security-Policy` with `frame-ancestors 'none'`: a response
//!   that has its own policy (a plugin's page, `/docs`) keeps it, and gets
//!   that directive added when it lacks one; any other gets a policy that
//!   allows nothing.
//! - Origins listed in `MILADY_ALLOWED_ORIGINS` get CORS headers, and
//!   their preflight requests are answered here, before auth (a preflight
//!   carries no token) and before routing.
//! - A `PUT`, `PATCH`, `POST` or `DELETE` whose `Origin` is neither listed
//!   nor the host's own (`Origin: null` included) is refused with 403 JSON
//!   before auth and before any plugin sees it. A request without `Origin`
//!   (curl, scripts) is not a browser's cross-origin request and passes.

use std::sync::Arc;

use base64::Engine as _;
use host_api::ErrorCode;
use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response,
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
};
use sha2::{Digest as _, Sha256};

use crate::{boundary::ALLOWED_ORIGINS_ENV, http::errors::json_error_response};

/// The policy of a response that brings none: nothing may load, nothing
/// may frame it.
const DEFAULT_POLICY: &str =
    "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Methods a listed origin may use.
const ALLOWED_METHODS: &str = "GET, PUT, PATCH, POST, DELETE";

/// Request headers a listed origin may send: the token headers, JSON, and
/// the conditional-request headers of the secrets API.
const ALLOWED_HEADERS: &str =
    "authorization, content-type, if-match, if-none-match, x-milady-token, x-api-key";

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE: &str = "600";

/// An entry of `MILADY_ALLOWED_ORIGINS` that is not an origin.
#[derive(Debug, thiserror::Error)]
#[error(
    "{ALLOWED_ORIGINS_ENV}: `{entry}` is not an origin; give scheme://host[:port], e.g. http://localhost:5173"
)]
pub struct OriginError {
    /// The entry as given.
    pub entry: String,
}

/// The browser origins allowed to call the API, normalised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AllowedOrigins(Vec<String>);

impl AllowedOrigins {
    /// Checks and normalises every entry; one that is not an origin
    /// (`http` or `https`, a host, an optional port, nothing else) refuses
    /// the whole list.
    pub(crate) fn parse(entries: &[String]) -> Result<Self, OriginError> {
        entries
            .iter()
            .map(|e| {
                normalise_origin(e).ok_or_else(|| OriginError {
                    entry: e.to_owned(),
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    fn contains(&self, origin: &str) -> bool {
        self.0.iter().any(|o| o == origin)
    }
}

/// `scheme://host[:port]`, lower-case, without a default port or a final
/// `/`; `None` for anything else (`null`, a path, credentials, a query).
fn normalise_origin(text: &str) -> Option<String> {
    let text = text.trim();
    let text = text.strip_suffix('/').unwrap_or(text);
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    let authority: poem::http::uri::Authority = rest.parse().ok()?;
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some(match authority.port_u16() {
        Some(port) if port.to_string() != default_port => format!("{scheme}://{host}:{port}"),
        _ => format!("{scheme}://{host}"),
    })
}

/// How a request's `Origin` relates to the host.
#[derive(Debug, PartialEq, Eq)]
enum Caller {
    /// No `Origin`: not a browser's cross-origin request.
    NoOrigin,
    /// The host's own origin (the page came from this host).
    Own,
    /// An origin of `MILADY_ALLOWED_ORIGINS` (normalised).
    Listed(String),
    /// Any other origin, `null` included.
    Foreign,
}

fn caller(req: &Request, allowed: &AllowedOrigins) -> Caller {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return Caller::NoOrigin;
    };
    let Some(origin) = origin.to_str().ok().and_then(normalise_origin) else {
        return Caller::Foreign;
    };
    if allowed.contains(&origin) {
        return Caller::Listed(origin);
    }
    // The host's own origin: the authority the request was sent to, over
    // plain HTTP or through a TLS-terminating proxy.
    let own = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|host| {
            ["http", "https"]
                .iter()
                .filter_map(|scheme| normalise_origin(&format!("{scheme}://{host}")))
                .any(|own| own == origin)
        });
    if own { Caller::Own } else { Caller::Foreign }
}

fn is_state_changing(method: &Method) -> bool {
    matches!(
        *method,
        Method::PUT | Method::PATCH | Method::POST | Method::DELETE
    )
}

fn is_preflight(req: &Request) -> bool {
    req.method() == Method::OPTIONS
        && req.headers().contains_key(header::ORIGIN)
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

fn forbidden_origin() -> Response {
    json_error_response(
        StatusCode::FORBIDDEN,
        ErrorCode::ForbiddenOrigin,
        &format!(
            "requests that change state are not accepted from this browser origin; the host allows its own origin and those of {ALLOWED_ORIGINS_ENV}"
        ),
    )
}

/// Adds the CORS headers a listed origin's response carries.
fn allow_origin(headers: &mut HeaderMap, origin: &str) {
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
}

/// Adds the security headers every response carries (see the module notes).
fn add_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    let policies: Vec<&HeaderValue> = headers
        .get_all(header::CONTENT_SECURITY_POLICY)
        .iter()
        .collect();
    if policies.is_empty() {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(DEFAULT_POLICY),
        );
        return;
    }
    let has_frame_ancestors = policies.iter().any(|p| {
        p.to_str().is_ok_and(|p| {
            p.split(';').any(|d| {
                d.split_whitespace()
                    .next()
                    .is_some_and(|name| name.eq_ignore_ascii_case("frame-ancestors"))
            })
        })
    });
    if has_frame_ancestors {
        return;
    }
    // One policy: extend it; several (all enforced together): add one more.
    if let [only] = policies.as_slice() {
        let extended = only
            .to_str()
            .ok()
            .map(|p| format!("{}; frame-ancestors 'none'", p.trim().trim_end_matches(';')))
            .and_then(|p| HeaderValue::from_str(&p).ok());
        if let Some(extended) = extended {
            headers.insert(header::CONTENT_SECURITY_POLICY, extended);
            return;
        }
    }
    headers.append(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("frame-ancestors 'none'"),
    );
}

/// The policy of the Swagger UI page: its own inline scripts (by hash) and
/// styles, requests to this host, no framing. Nothing is fetched from
/// elsewhere, so it works offline.
pub(crate) fn docs_policy(page: &str) -> String {
    let mut hashes = String::new();
    let mut rest = page;
    while let Some(start) = rest.find("<script") {
        let after = &rest[start..];
        let (Some(open_end), Some(close)) = (after.find('>'), after.find("</script>")) else {
            break;
        };
        if open_end < close {
            let body = &after[open_end + 1..close];
            let digest = Sha256::digest(body.as_bytes());
            let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
            hashes.push_str(&format!(" 'sha256-{b64}'"));
        }
        rest = &after[close + "</script>".len()..];
    }
    format!(
        "default-src 'none'; script-src{hashes}; style-src 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// The middleware (see the module notes).
#[derive(Debug, Clone)]
pub(crate) struct BrowserDefences(Arc<AllowedOrigins>);

impl BrowserDefences {
    /// Defences allowing `origins` (already checked).
    pub(crate) fn new(origins: AllowedOrigins) -> Self {
        Self(Arc::new(origins))
    }
}

impl<E: Endpoint> Middleware<E> for BrowserDefences {
    type Output = BrowserDefencesEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BrowserDefencesEndpoint {
            inner,
            origins: Arc::clone(&self.0),
        }
    }
}

/// The endpoint [`BrowserDefences`] wraps around another.
pub(crate) struct BrowserDefencesEndpoint<E> {
    inner: E,
    origins: Arc<AllowedOrigins>,
}

impl<E: Endpoint> Endpoint for BrowserDefencesEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let caller = caller(&req, &self.origins);
        let mut resp = if is_preflight(&req) {
            match &caller {
                Caller::Listed(_) | Caller::Own => {
                    let mut resp = Response::builder().status(StatusCode::NO_CONTENT).finish();
                    let h = resp.headers_mut();
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_METHODS,
                        HeaderValue::from_static(ALLOWED_METHODS),
                    );
                    h.insert(
                        header::ACCESS_CONTROL_ALLOW_HEADERS,
                        HeaderValue::from_static(ALLOWED_HEADERS),
                    );
                    h.insert(
                        header::ACCESS_CONTROL_MAX_AGE,
                        HeaderValue::from_static(PREFLIGHT_MAX_AGE),
                    );
                    resp
                }
                _ => forbidden_origin(),
            }
        } else if is_state_changing(req.method()) && caller == Caller::Foreign {
            tracing::debug!(method = %req.method(), "refused a state-changing request from a foreign origin");
            forbidden_origin()
        } else {
            match self.inner.call(req).await {
                Ok(resp) => resp.into_response(),
                Err(err) => err.into_response(),
            }
        };
        if let Caller::Listed(origin) = &caller {
            allow_origin(resp.headers_mut(), origin);
            resp.headers_mut().insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("etag"),
            );
        }
        add_security_headers(resp.headers_mut());
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use poem::{EndpointExt as _, Route, get, handler};

    use super::*;

    #[test]
    fn origins_are_normalised_and_junk_is_refused() {
        for (given, want) in [
            ("http://localhost:5173", "http://localhost:5173"),
            ("HTTP://LocalHost:5173/", "http://localhost:5173"),
            ("http://app.example:80", "http://app.example"),
            ("https://app.example:443", "https://app.example"),
            ("https://[::1]:8443", "https://[::1]:8443"),
        ] {
            assert_eq!(normalise_origin(given).as_deref(), Some(want), "{given}");
        }
        for bad in [
            "null",
            "localhost:5173",
            "ftp://x",
            "http://",
            "http://a/b",
            "http://u@a",
            "http://a?x",
            "*",
        ] {
            assert_eq!(normalise_origin(bad), None, "{bad}");
        }
        let err = AllowedOrigins::parse(&["http://ok".into(), "bad".into()]).expect_err("bad");
        assert!(err.to_string().contains("`bad`"), "{err}");
    }

    #[test]
    fn a_plugin_policy_is_kept_and_gets_frame_ancestors() {
        let mut h = HeaderMap::new();
        add_security_headers(&mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], DEFAULT_POLICY);

        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'self';"),
        );
        add_security_headers(&mut h);
        assert_eq!(
            h[header::CONTENT_SECURITY_POLICY],
            "default-src 'self'; frame-ancestors 'none'"
        );

        let mut h = HeaderMap::new();
        let own = "default-src 'self'; Frame-Ancestors 'self'";
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(own),
        );
        add_security_headers(&mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], own);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    }

    #[test]
    fn the_docs_policy_names_each_inline_script_by_hash() {
        let page = "<html><script>let a = 1;</script><style>x{}</style><script type=\"module\">go()</script></html>";
        let policy = docs_policy(page);
        let hash = |s: &str| {
            base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s.as_bytes()))
        };
        assert!(
            policy.contains(&format!("'sha256-{}'", hash("let a = 1;"))),
            "{policy}"
        );
        assert!(
            policy.contains(&format!("'sha256-{}'", hash("go()"))),
            "{policy}"
        );
        assert!(!policy.contains("unsafe-eval") && policy.contains("frame-ancestors 'none'"));
        assert!(!policy.contains("script-src 'unsafe-inline'"));
    }

    #[tokio::test]
    async fn preflights_listed_origins_and_foreign_writes() {
        #[handler]
        fn ok() -> &'static str {
            "ok"
        }
        let origins = AllowedOrigins::parse(&["http://localhost:5173".into()]).expect("origins");
        let app = Route::new()
            .at("/api/x", get(ok).put(ok))
            .with(BrowserDefences::new(origins));
        let call = |method: Method, origin: Option<&str>, preflight: bool| {
            let mut req = Request::builder()
                .method(method)
                .uri_str("/api/x")
                .header(header::HOST, "127.0.0.1:2138");
            if let Some(origin) = origin {
                req = req.header(header::ORIGIN, origin);
            }
            if preflight {
                req = req.header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT");
            }
            let req = req.finish();
            let app = &app;
            async move {
                app.call(req)
                    .await
                    .map(IntoResponse::into_response)
                    .unwrap_or_else(|e| e.into_response())
            }
        };
        let listed = Some("http://localhost:5173");
        let r = call(Method::OPTIONS, listed, true).await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:5173"
        );
        assert!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
                .to_str()
                .is_ok_and(|m| m.contains("PUT"))
        );

        let r = call(Method::OPTIONS, Some("https://evil.example"), true).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(
            !r.headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );

        for foreign in ["https://evil.example", "null", "http://localhost:5174"] {
            let r = call(Method::PUT, Some(foreign), false).await;
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{foreign}");
            assert_eq!(r.headers()[header::X_FRAME_OPTIONS], "DENY");
        }
        for fine in [listed, Some("http://127.0.0.1:2138"), None] {
            let r = call(Method::PUT, fine, false).await;
            assert_eq!(r.status(), StatusCode::OK, "{fine:?}");
        }
        let r = call(Method::GET, Some("https://evil.example"), false).await;
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "reads are the browser's to refuse"
        );
        assert!(
            !r.headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        let r = call(Method::GET, listed, false).await;
        assert_eq!(
            r.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "http://localhost:5173"
        );
        assert_eq!(r.headers()[header::VARY], "Origin");
    }
}
