//! The `Allow` header that RFC 9110 requires on a 405, from the paths of
//! the merged OpenAPI document.

use poem::{
    Response,
    http::{StatusCode, header},
};

/// The methods each documented path accepts, for the `Allow` header that
/// RFC 9110 requires on a 405.
#[derive(Debug, Default, Clone)]
pub(crate) struct AllowIndex {
    /// Path template split into segments (`None`: a `{parameter}`), and the
    /// `Allow` value.
    routes: Vec<(Vec<Option<String>>, String)>,
}

impl AllowIndex {
    /// Builds the index from the paths of an OpenAPI document.
    pub(crate) fn from_openapi(doc: &serde_json::Value) -> Self {
        const METHODS: [&str; 8] = [
            "get", "put", "post", "delete", "options", "head", "patch", "trace",
        ];
        let routes = doc
            .get("paths")
            .and_then(serde_json::Value::as_object)
            .map(|paths| {
                paths
                    .iter()
                    .filter_map(|(template, item)| {
                        let methods: Vec<String> = METHODS
                            .iter()
                            .filter(|m| item.get(**m).is_some())
                            .map(|m| m.to_ascii_uppercase())
                            .collect();
                        (!methods.is_empty()).then(|| (segments(template), methods.join(", ")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { routes }
    }

    /// The `Allow` value for a request path, if a documented path matches.
    pub(crate) fn allow_for(&self, path: &str) -> Option<&str> {
        let parts: Vec<&str> = split_path(path).collect();
        self.routes
            .iter()
            .find(|(template, _)| {
                template.len() == parts.len()
                    && template.iter().zip(&parts).all(|(t, p)| match t {
                        Some(literal) => literal == p,
                        None => !p.is_empty(),
                    })
            })
            .map(|(_, allow)| allow.as_str())
    }
}

fn split_path(path: &str) -> impl Iterator<Item = &str> {
    path.trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
}

fn segments(template: &str) -> Vec<Option<String>> {
    split_path(template)
        .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
        .collect()
}

/// Middleware: adds `Allow` (from an [`AllowIndex`]) to every 405 response.
/// Apply it outside the error renderer, so poem's own 405s have become
/// responses by then.
#[derive(Debug, Clone)]
pub(crate) struct AllowHeader(std::sync::Arc<AllowIndex>);

impl AllowHeader {
    /// The middleware for the paths of an OpenAPI document.
    pub(crate) fn new(doc: &serde_json::Value) -> Self {
        Self(std::sync::Arc::new(AllowIndex::from_openapi(doc)))
    }
}

impl<E: poem::Endpoint> poem::Middleware<E> for AllowHeader {
    type Output = AllowHeaderEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AllowHeaderEndpoint {
            inner,
            index: std::sync::Arc::clone(&self.0),
        }
    }
}

/// The endpoint [`AllowHeader`] wraps around another.
pub(crate) struct AllowHeaderEndpoint<E> {
    inner: E,
    index: std::sync::Arc<AllowIndex>,
}

impl<E: poem::Endpoint> poem::Endpoint for AllowHeaderEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: poem::Request) -> poem::Result<Response> {
        let path = req.uri().path().to_owned();
        let mut resp = poem::IntoResponse::into_response(self.inner.call(req).await?);
        if resp.status() == StatusCode::METHOD_NOT_ALLOWED
            && !resp.headers().contains_key(header::ALLOW)
            && let Some(allow) = self.index.allow_for(&path)
            && let Ok(value) = poem::http::HeaderValue::from_str(allow)
        {
            resp.headers_mut().insert(header::ALLOW, value);
        }
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::errors::render_error;

    #[test]
    fn allow_lists_the_documented_methods_of_the_matching_path() {
        let doc = serde_json::json!({"paths": {
            "/api/secrets": {"get": {}, "put": {}},
            "/api/plugins/{id}": {"put": {}, "parameters": []},
            "/api/plugins": {"get": {}},
        }});
        let index = AllowIndex::from_openapi(&doc);
        assert_eq!(index.allow_for("/api/secrets"), Some("GET, PUT"));
        assert_eq!(index.allow_for("/api/secrets/"), Some("GET, PUT"));
        assert_eq!(index.allow_for("/api/plugins"), Some("GET"));
        assert_eq!(
            index.allow_for("/api/plugins/%40elizaos%2Fplugin-openai"),
            Some("PUT")
        );
        assert_eq!(index.allow_for("/api/plugins/a/b"), None);
        assert_eq!(index.allow_for("/nowhere"), None);
    }

    #[tokio::test]
    async fn a_405_gets_allow_and_other_statuses_do_not() {
        use poem::{Endpoint as _, EndpointExt as _, Route, get, handler};
        #[handler]
        fn ok() -> &'static str {
            "ok"
        }
        let doc = serde_json::json!({"paths": {"/a": {"get": {}}}});
        let app = Route::new()
            .at("/a", get(ok))
            .catch_all_error(render_error)
            .with(AllowHeader::new(&doc));
        let resp = app
            .call(
                poem::Request::builder()
                    .method(poem::http::Method::TRACE)
                    .uri_str("/a")
                    .finish(),
            )
            .await
            .map(poem::IntoResponse::into_response);
        let resp = resp.expect("rendered");
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(
            resp.headers()
                .get(header::ALLOW)
                .and_then(|v| v.to_str().ok()),
            Some("GET")
        );
        let resp = app
            .call(poem::Request::builder().uri_str("/a").finish())
            .await
            .map(poem::IntoResponse::into_response)
            .expect("ok");
        assert!(!resp.headers().contains_key(header::ALLOW));
    }
}
