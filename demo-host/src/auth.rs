//! API-token authentication for every `/api/*` route, host and plugin alike.

use poem::{Endpoint, IntoResponse, Request, Response, http::StatusCode};
use subtle::ConstantTimeEq as _;

use crate::errors::json_error_response;

/// Where a request may carry the token.
const TOKEN_HEADERS: [&str; 2] = ["x-milady-token", "x-api-key"];

/// Whether `path` is under `/api`.
pub fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The token a request presents, if any: `Authorization: Bearer <t>`,
/// `X-Milady-Token: <t>` or `X-Api-Key: <t>`.
pub fn presented_token(req: &Request) -> Option<&str> {
    let bearer = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    bearer.or_else(|| {
        TOKEN_HEADERS
            .iter()
            .find_map(|h| req.headers().get(*h).and_then(|v| v.to_str().ok()))
    })
}

/// Compares in time independent of where the strings differ. (Only the
/// length can be told apart, and the token's length is not a secret worth
/// keeping: generated tokens all have the same one.)
pub fn token_matches(expected: &str, presented: &str) -> bool {
    bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

/// Middleware: when a token is configured, `/api/*` requests without it get
/// 401 `{"error": "Unauthorized", "code": "unauthorized"}`.
pub async fn require_token<E: Endpoint>(
    next: E,
    req: Request,
    token: Option<&str>,
) -> poem::Result<Response> {
    if let Some(expected) = token
        && is_api_path(req.uri().path())
        && !presented_token(&req).is_some_and(|t| token_matches(expected, t))
    {
        return Ok(json_error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
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
}
