//! API-token authentication for every `/api/*` route, host and plugin alike.

use poem::{Endpoint, IntoResponse, Request, Response, http::StatusCode};
use subtle::ConstantTimeEq as _;

use host_api::{AuthMethod, ErrorCode};

use crate::http::errors::json_error_response;

/// Where a request may carry the token, besides `Authorization: Bearer`.
const TOKEN_HEADERS: [(&str, AuthMethod); 2] = [
    ("x-milady-token", AuthMethod::MILADY_TOKEN),
    ("x-api-key", AuthMethod::API_KEY),
];

/// Whether `path` is under `/api`.
pub(crate) fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The token a request presents, if any: `Authorization: Bearer <t>`,
/// `X-Milady-Token: <t>` or `X-Api-Key: <t>`.
pub(crate) fn presented_token(req: &Request) -> Option<&str> {
    presented(req).map(|(_, token)| token)
}

/// The token a request presents and how (see [`presented_token`]).
pub(crate) fn presented(req: &Request) -> Option<(AuthMethod, &str)> {
    let bearer = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer.map(|t| (AuthMethod::BEARER, t)).or_else(|| {
        TOKEN_HEADERS.iter().find_map(|(h, method)| {
            let token = req.headers().get(*h).and_then(|v| v.to_str().ok())?;
            Some((*method, token))
        })
    })
}

/// Compares in time independent of where the strings differ. (Only the
/// length can be told apart, and the token's length is not a secret worth
/// keeping: generated tokens all have the same one.)
pub(crate) fn token_matches(expected: &str, presented: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// Whether a `Host` header value names this machine's loopback interface:
/// `localhost`, `*.localhost`, `127.0.0.0/8` or `[::1]`, with any port. A
/// web page on another origin that rebinds its DNS name to 127.0.0.1 still
/// sends its own name, so `http::host_header` refuses it.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || port.starts_with(':') => ip,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Middleware: when a token is configured, `/api/*` requests without it get
/// 401 `{"error": "Unauthorized", "code": "unauthorized"}`. A refusal on a
/// secrets route is audited in the log of the config file `config`, at
/// most once a minute per client (`http::audit_lines`).
pub(crate) async fn require_token<E: Endpoint>(
    next: E,
    req: Request,
    token: Option<&str>,
    config: &std::path::Path,
) -> poem::Result<Response> {
    if let Some(expected) = token
        && is_api_path(req.uri().path())
        && !presented_token(&req).is_some_and(|t| token_matches(expected, t))
    {
        if crate::http::audit_lines::is_secrets_path(req.uri().path()) {
            crate::http::audit_lines::refusals()
                .refused(config, &req)
                .await;
        }
        return Ok(json_error_response(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "Unauthorized",
        ));
    }
    next.call(req).await.map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_sources() {
        let req = Request::builder()
            .header("Authorization", "Bearer abc")
            .finish();
        assert_eq!(presented_token(&req), Some("abc"));
        let req = Request::builder().header("X-Api-Key", "k").finish();
        assert_eq!(presented_token(&req), Some("k"));
        assert_eq!(presented(&req), Some((AuthMethod::API_KEY, "k")));
        let req = Request::builder()
            .header("X-Milady-Token", "m")
            .header("Authorization", "Bearer b")
            .finish();
        assert_eq!(presented(&req), Some((AuthMethod::BEARER, "b")));
        let req = Request::builder()
            .header("Authorization", "Basic abc")
            .finish();
        assert_eq!(presented_token(&req), None);
    }

    #[test]
    fn matching() {
        assert!(token_matches("secret", "secret"));
        assert!(!token_matches("secret", "secreT"));
        assert!(!token_matches("secret", "secre"));
        assert!(is_api_path("/api/secrets") && is_api_path("/api") && !is_api_path("/apix"));
    }

    #[test]
    fn loopback_hosts() {
        for ok in [
            "localhost",
            "localhost:2138",
            "LOCALHOST.",
            "app.localhost:1",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]",
            "[::1]:2138",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "evil.com",
            "evil.com:2138",
            "127.0.0.1.evil.com",
            "[::2]:1",
            "10.0.0.1",
            "localhost:x",
            "[::1]x",
            "",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }
}
