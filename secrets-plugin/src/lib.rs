//! The secrets plugin: `GET`/`PUT /api/secrets` for a Milady-style agent
//! host, built as a `cdylib` the demo host loads at start-up.
//!
//! It owns no state of its own: the registry (which plugins declare which
//! sensitive parameters, and whether they are enabled), the runtime
//! environment and the durable config file all belong to the host and are
//! reached through [`host_api::HostContext`]. The same API can be linked
//! natively through [`endpoint`] (used by tests and benchmarks).

#![forbid(unsafe_code)]

// Data flows one way: `api` (the handlers) uses `render`, `validate`,
// `etag` and `index`; those use `model`, the types that cross the wire.
mod api;
mod etag;
mod index;
mod model;
mod redact;
mod render;
mod validate;

use std::sync::OnceLock;

use abi_stable::std_types::{RVec, Tuple2};
use host_api::{
    ErrorCode, FfiRequest, FfiResponse, FfiSharedResponse, Header, HostContextBox, HostError,
    LogLevel, ParamSpec, Plugin, PluginManifest,
};
use poem::{Endpoint, EndpointExt, IntoEndpoint, Response, endpoint::BoxEndpoint};
use poem_openapi::OpenApiService;

pub use api::SecretsApi;
pub use redact::redact;

/// The plugin id.
pub const PLUGIN_ID: &str = "@milady/plugin-secrets";
/// The route prefix the plugin serves.
pub const ROUTE: &str = "/api/secrets";

/// The poem-openapi service of this plugin.
pub fn service(host: Option<HostContextBox>) -> OpenApiService<SecretsApi, ()> {
    OpenApiService::new(SecretsApi::new(host), "Secrets", env!("CARGO_PKG_VERSION"))
}

/// The complete endpoint: the API plus JSON rendering of every error the
/// framework raises (bad content type, unknown method, ...).
pub fn endpoint(host: HostContextBox) -> BoxEndpoint<'static, Response> {
    // No `Route::nest` here: the host may mount this endpoint natively with
    // `nest_no_strip`, and poem 3.1 panics on a nested `nest` there.
    service(Some(host))
        .into_endpoint()
        .before(without_trailing_slash)
        .catch_all_error(render_error)
        .map_to_response()
        .into_endpoint()
        .boxed()
}

/// `/api/secrets/` is the same resource as `/api/secrets`.
async fn without_trailing_slash(mut req: poem::Request) -> poem::Result<poem::Request> {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let target = match req.uri().query() {
            Some(query) => format!("{trimmed}?{query}"),
            None => trimmed.to_owned(),
        };
        if let Ok(uri) = target.parse() {
            *req.uri_mut() = uri;
        }
    }
    Ok(req)
}

/// Errors the framework raised itself, as JSON. Only the status is kept:
/// poem's messages can quote request content.
async fn render_error(err: poem::Error) -> Response {
    let status = err.status();
    let code = ErrorCode::for_status(status.as_u16());
    let message = match code {
        ErrorCode::NotFound => "no such route",
        ErrorCode::MethodNotAllowed => "method not allowed on this route",
        ErrorCode::UnsupportedMediaType => "send the body as application/json",
        ErrorCode::BadRequest => "the request is malformed",
        ErrorCode::InternalError => "internal error",
        _ => status
            .canonical_reason()
            .unwrap_or("the request was refused"),
    };
    Response::builder()
        .status(status)
        .content_type("application/json; charset=utf-8")
        .header("cache-control", "no-store")
        .body(host_api::error_body(code, message))
}

static ENDPOINT: OnceLock<BoxEndpoint<'static, Response>> = OnceLock::new();
/// The host's services, kept for `shutdown`.
static HOST: OnceLock<HostContextBox> = OnceLock::new();

/// The plugin as the host sees it.
struct SecretsPlugin;

impl Plugin for SecretsPlugin {
    fn manifest() -> PluginManifest {
        PluginManifest::new(PLUGIN_ID, "Secrets", env!("CARGO_PKG_VERSION"))
            .with_description(
                "Lists and updates the API keys and other secrets the host's plugins declare.",
            )
            .with_route(ROUTE)
            .with_param(ParamSpec::setting(
                "SECRETS_PLUGIN_LOG_LEVEL",
                "string",
                "Reserved; the plugin logs through the host.",
            ))
    }

    fn openapi_json() -> String {
        service(None).spec()
    }

    fn init(host: HostContextBox) -> Result<(), HostError> {
        host.log(LogLevel::Info, "secrets plugin ready".into());
        let twice = || HostError::new(HostError::INIT, "the secrets plugin was initialised twice");
        HOST.set(host.clone()).map_err(|_| twice())?;
        ENDPOINT.set(endpoint(host)).map_err(|_| twice())
    }

    fn shutdown() {
        if let Some(host) = HOST.get() {
            host.log(LogLevel::Info, "secrets plugin stopped".into());
        }
    }

    async fn handle(request: FfiRequest) -> FfiResponse {
        match respond(request).await {
            Ok(resp) => from_poem(resp).await,
            Err(error) => error,
        }
    }

    async fn handle_shared(request: FfiRequest) -> FfiSharedResponse {
        let resp = match respond(request).await {
            Ok(resp) => resp,
            Err(error) => return error.into(),
        };
        // A cached GET body travels as the shared buffer it already is.
        match resp.extensions().get::<model::SharedBody>().cloned() {
            Some(shared) => FfiSharedResponse {
                status: resp.status().as_u16(),
                headers: headers_of(&resp),
                body: shared.0,
            },
            None => from_poem(resp).await.into(),
        }
    }
}

/// Runs a request through the API; `Err` is a response already made.
async fn respond(request: FfiRequest) -> Result<Response, FfiResponse> {
    let Some(endpoint) = ENDPOINT.get() else {
        return Err(FfiResponse::error(
            503,
            ErrorCode::NotInitialised,
            "the secrets plugin is not initialised",
        ));
    };
    let req = to_poem(request)
        .map_err(|message| FfiResponse::error(400, ErrorCode::BadRequest, message))?;
    Ok(endpoint.get_response(req).await)
}

host_api::export_plugin!(SecretsPlugin);

fn to_poem(request: FfiRequest) -> Result<poem::Request, &'static str> {
    let method =
        poem::http::Method::from_bytes(request.method.as_bytes()).map_err(|_| "invalid method")?;
    let uri: poem::http::Uri = request.uri.parse().map_err(|_| "invalid request target")?;
    let mut builder = poem::Request::builder().method(method).uri(uri);
    for header in request.headers.iter() {
        builder = builder.header(header.0.as_str(), header.1.as_str());
    }
    Ok(builder.body(request.body.into_vec()))
}

fn headers_of(resp: &Response) -> RVec<Header> {
    resp.headers()
        .iter()
        .filter_map(|(name, value)| Some(Tuple2(name.as_str().into(), value.to_str().ok()?.into())))
        .collect()
}

async fn from_poem(resp: Response) -> FfiResponse {
    let status = resp.status().as_u16();
    let headers = headers_of(&resp);
    // `into_bytes` then `Vec::from` takes the buffer over without copying
    // when the body holds the only reference (as the rendered GET body does).
    match resp.into_body().into_bytes().await.map(Vec::from) {
        Ok(body) => FfiResponse {
            status,
            headers,
            body: body.into(),
        },
        Err(_) => FfiResponse::error(
            500,
            ErrorCode::InternalError,
            "the response could not be produced",
        ),
    }
}
