//! The JSON error shape every host response uses:
//! `{"error": "human-readable message", "code": "machine_code"}`, with the
//! codes and the body builder that host-api shares with plugins.

use host_api::ErrorCode;
use poem::{
    Response,
    http::{StatusCode, header},
};

/// A JSON error response.
pub(crate) fn json_error_response(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(host_api::error_body(code, message))
}

/// A poem error that renders as a JSON error response.
pub(crate) fn json_error(status: StatusCode, code: ErrorCode, message: &str) -> poem::Error {
    poem::Error::from_response(json_error_response(status, code, message))
}

/// Converts any error that reached the top of the router into the JSON
/// shape. Errors that already carry a JSON response keep it; for the rest
/// only the status is kept: poem's messages can quote request content.
pub(crate) async fn render_error(err: poem::Error) -> Response {
    let status = err.status();
    let resp = err.into_response();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let message = match status {
        StatusCode::NOT_FOUND => "no such route",
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed on this route",
        StatusCode::BAD_REQUEST => "the request is malformed",
        StatusCode::PAYLOAD_TOO_LARGE => "the request body is too large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported content type; send application/json",
        s if s.is_server_error() => "internal error",
        _ => status.canonical_reason().unwrap_or("error"),
    };
    json_error_response(status, ErrorCode::for_status(status.as_u16()), message)
}
