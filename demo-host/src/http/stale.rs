//! Says so when `GET /api/secrets` answers from a snapshot the fleet's
//! store has not confirmed lately (SPEC §9): the store is unreachable,
//! sealed or refuses the token.
//!
//! The answer is still the host's snapshot (GET never waits on the store);
//! it gains the `Milady-Stale-Seconds` header (whole seconds since the
//! store last answered) and a `stale` field: `{"since": RFC 3339,
//! "seconds": n, "reason": "..."}`. A host on the file store, or on a store
//! that answers, adds nothing.

use std::sync::Arc;

use poem::{Endpoint, EndpointExt, Request, Response, http::Method};

use crate::env::{fingerprint::rfc3339, runtime::RuntimeEnv};

/// The header a stale answer carries.
pub(crate) const STALE_HEADER: &str = "Milady-Stale-Seconds";

/// `endpoint` with stale answers of `GET /api/secrets` marked.
pub(crate) fn mark_stale<E>(env: Arc<RuntimeEnv>, endpoint: E) -> impl Endpoint<Output = Response>
where
    E: Endpoint<Output = Response> + 'static,
{
    endpoint.around(move |next, req: Request| {
        let env = Arc::clone(&env);
        async move {
            let asks = req.method() == Method::GET
                && req.uri().path().trim_end_matches('/') == "/api/secrets";
            let response = next.call(req).await?;
            if !asks || !response.status().is_success() {
                return Ok(response);
            }
            let Some(stale) = env.staleness() else {
                return Ok(response);
            };
            let seconds = stale.since.elapsed().map(|d| d.as_secs()).unwrap_or(0);
            let (mut parts, body) = response.into_parts();
            let bytes = body.into_bytes().await?;
            let body = match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(serde_json::Value::Object(mut object)) => {
                    object.insert(
                        "stale".into(),
                        serde_json::json!({
                            "since": rfc3339(stale.since),
                            "seconds": seconds,
                            "reason": stale.reason,
                        }),
                    );
                    parts.headers.remove(poem::http::header::CONTENT_LENGTH);
                    serde_json::Value::Object(object).to_string().into_bytes()
                }
                _ => bytes.to_vec(),
            };
            if let Ok(value) = poem::http::HeaderValue::from_str(&seconds.to_string()) {
                parts.headers.insert(STALE_HEADER, value);
            }
            Ok(Response::from_parts(parts, body.into()))
        }
    })
}
