//! Request bodies on every route, host and plugin alike: the body limit
//! (413), the stall and whole-body deadlines (408), and strict JSON (a JSON
//! body that names a key twice in one object is refused, 400
//! `duplicate_key`, naming the key).
//!
//! The router applies [`BodyLimits`] to everything it serves, after the
//! host and token checks (so an unauthenticated client never makes the host
//! buffer anything). The body is read whole with the bridge's
//! `read_body_limited`, the one implementation of the limit and both
//! deadlines, and handed on from memory: a plugin route's bridge then reads
//! it again at memory speed, and a host route such as
//! `PUT /api/plugins/{id}` can no longer be sent 300 MB or a body that
//! never ends.

use std::time::Duration;

use host_api::{ErrorCode, json::duplicate_key};
use poem::{
    Endpoint, IntoResponse, Middleware, Request, Response,
    http::{StatusCode, header},
};

use crate::{http::errors::json_error_response, plugins::bridge::read_body_limited};

/// Middleware: the body limit, the body deadlines and strict JSON.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BodyLimits {
    /// The largest body accepted, in bytes.
    limit: usize,
    /// How long the whole body may take to arrive.
    deadline: Duration,
}

impl BodyLimits {
    /// Bodies of at most `limit` bytes, arriving within `deadline`.
    pub(crate) fn new(limit: usize, deadline: Duration) -> Self {
        Self { limit, deadline }
    }
}

impl<E: Endpoint> Middleware<E> for BodyLimits {
    type Output = BodyLimitsEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        BodyLimitsEndpoint {
            inner,
            limits: *self,
        }
    }
}

/// The endpoint [`BodyLimits`] wraps around the router.
pub(crate) struct BodyLimitsEndpoint<E> {
    inner: E,
    limits: BodyLimits,
}

impl<E: Endpoint> Endpoint for BodyLimitsEndpoint<E> {
    type Output = Response;

    async fn call(&self, mut req: Request) -> poem::Result<Response> {
        let body = req.take_body();
        let empty = body.is_empty();
        req.set_body(body);
        if !empty {
            let body = read_body_limited(&mut req, self.limits.limit, self.limits.deadline).await?;
            if is_json(&req)
                && let Some(duplicate) = duplicate_key(&body)
            {
                return Ok(json_error_response(
                    StatusCode::BAD_REQUEST,
                    ErrorCode::DuplicateKey,
                    &format!("{duplicate}; send each key once"),
                ));
            }
            req.set_body(body);
        }
        self.inner.call(req).await.map(IntoResponse::into_response)
    }
}

/// Whether the request says its body is JSON (`application/json` or a
/// `+json` type).
fn is_json(req: &Request) -> bool {
    let Some(value) = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use poem::{EndpointExt as _, handler, http::Method, test::TestClient};

    use super::*;

    #[handler]
    async fn echo_len(body: Vec<u8>) -> String {
        body.len().to_string()
    }

    fn app() -> impl Endpoint {
        echo_len.with(BodyLimits::new(16, Duration::from_secs(5)))
    }

    #[tokio::test]
    async fn bodies_within_the_limit_reach_the_route_and_larger_ones_get_413() {
        let cli = TestClient::new(app());
        let resp = cli.put("/").body(vec![b'x'; 16]).send().await;
        resp.assert_status_is_ok();
        resp.assert_text("16").await;
        let resp = cli.put("/").body(vec![b'x'; 17]).send().await;
        resp.assert_status(StatusCode::PAYLOAD_TOO_LARGE);
        resp.assert_json(serde_json::json!({
            "error": "the request body exceeds the limit of 16 bytes",
            "code": "payload_too_large",
        }))
        .await;
        let resp = cli.request(Method::GET, "/").send().await;
        resp.assert_text("0").await;
    }

    #[tokio::test]
    async fn json_with_a_repeated_key_is_refused_naming_it() {
        let cli = TestClient::new(app());
        let resp = cli
            .put("/")
            .content_type("application/json")
            .body(r#"{"a":1,"a":2}"#)
            .send()
            .await;
        resp.assert_status(StatusCode::BAD_REQUEST);
        let body = resp.0.into_body().into_string().await.unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        assert_eq!(v["code"], "duplicate_key", "{body}");
        assert!(v["error"].as_str().unwrap_or("").contains("`a`"), "{body}");
        // Not JSON by its content type: left to the route.
        let resp = cli
            .put("/")
            .content_type("text/plain")
            .body(r#"{"a":1,"a":2}"#)
            .send()
            .await;
        resp.assert_status_is_ok();
    }

    #[test]
    fn json_content_types() {
        let with = |ct: &str| Request::builder().header("content-type", ct).finish();
        assert!(is_json(&with("application/json")));
        assert!(is_json(&with("Application/JSON; charset=utf-8")));
        assert!(is_json(&with("application/merge-patch+json")));
        assert!(!is_json(&with("text/json-ish")));
        assert!(!is_json(&Request::builder().finish()));
    }
}
