//! The `Host` header, strictly (RFC 9112 §3.2): an HTTP/1.1 request without
//! one, or any request with two, is refused with 400 `bad_host`; and a host
//! bound to loopback answers only requests addressed to a loopback name,
//! whether the name comes in `Host` or in the authority of an absolute-form
//! target (`GET http://evil.example/api/secrets HTTP/1.1`, which a server
//! must prefer to `Host`) or of an HTTP/2 request.
//!
//! Two `Host` headers are how request-smuggling and cache-poisoning attacks
//! make two parties disagree on the target; a DNS-rebinding page cannot
//! choose its `Host`, but a client that sends an absolute-form target can
//! name any authority beside a loopback `Host`.

use host_api::ErrorCode;
use poem::{
    Request, Response,
    http::{StatusCode, Version, header},
};

use crate::http::{auth::is_loopback_host, errors::json_error_response};

/// The refusal for `req`, if its `Host` header or target authority is not
/// acceptable; `loopback_only` adds the DNS-rebinding check.
pub(crate) fn refuse(req: &Request, loopback_only: bool) -> Option<Response> {
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Some(bad_host("the request has more than one `Host` header"));
    }
    if host.is_none() && req.version() == Version::HTTP_11 {
        return Some(bad_host("an HTTP/1.1 request must carry a `Host` header"));
    }
    if !loopback_only {
        return None;
    }
    let names = host
        .map(|v| v.to_str().unwrap_or(""))
        .into_iter()
        .chain(req.uri().authority().map(|a| a.as_str()));
    for name in names {
        if !is_loopback_host(name) {
            return Some(json_error_response(
                StatusCode::FORBIDDEN,
                ErrorCode::ForbiddenHost,
                "this host only answers requests addressed to a loopback name",
            ));
        }
    }
    None
}

fn bad_host(message: &str) -> Response {
    json_error_response(StatusCode::BAD_REQUEST, ErrorCode::BadHost, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(resp: Option<Response>) -> Option<(u16, String)> {
        let resp = resp?;
        let status = resp.status().as_u16();
        let body = futures_util::FutureExt::now_or_never(resp.into_body().into_string())
            .and_then(Result::ok)
            .unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        Some((status, v["code"].as_str().unwrap_or_default().to_owned()))
    }

    fn request(version: Version, target: &str, hosts: &[&str]) -> Request {
        let mut req = Request::builder().version(version).uri_str(target).finish();
        for h in hosts {
            req.headers_mut().append(
                header::HOST,
                poem::http::HeaderValue::from_str(h).expect("valid value"),
            );
        }
        req
    }

    #[test]
    fn http_1_1_needs_exactly_one_host() {
        let bad = Some((400, "bad_host".to_owned()));
        assert_eq!(
            code(refuse(&request(Version::HTTP_11, "/", &[]), false)),
            bad
        );
        assert_eq!(
            code(refuse(
                &request(Version::HTTP_11, "/", &["localhost", "localhost"]),
                false
            )),
            bad
        );
        assert_eq!(
            code(refuse(&request(Version::HTTP_10, "/", &["a", "b"]), false)),
            bad
        );
        assert_eq!(
            code(refuse(&request(Version::HTTP_10, "/", &[]), true)),
            None
        );
        assert_eq!(
            code(refuse(
                &request(Version::HTTP_11, "/", &["localhost"]),
                true
            )),
            None
        );
    }

    #[test]
    fn an_absolute_target_must_name_a_loopback_authority_too() {
        let forbidden = Some((403, "forbidden_host".to_owned()));
        let abs = request(
            Version::HTTP_11,
            "http://evil.example/api/secrets",
            &["localhost"],
        );
        assert_eq!(code(refuse(&abs, true)), forbidden);
        assert_eq!(
            code(refuse(&abs, false)),
            None,
            "only when bound to loopback"
        );
        let abs = request(
            Version::HTTP_11,
            "http://127.0.0.1:2138/api/secrets",
            &["localhost:2138"],
        );
        assert_eq!(code(refuse(&abs, true)), None);
        // HTTP/2 carries the authority in the target, often without `Host`.
        let h2 = request(Version::HTTP_2, "http://evil.example/", &[]);
        assert_eq!(code(refuse(&h2, true)), forbidden);
        let h2 = request(Version::HTTP_2, "http://localhost:1/", &[]);
        assert_eq!(code(refuse(&h2, true)), None);
    }
}
