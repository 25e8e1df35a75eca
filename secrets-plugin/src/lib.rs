//! The secrets plugin: `GET`/`PUT /api/secrets` for a Milady-style agent
//! host, built as a `cdylib` the demo host loads at start-up.
//!
//! It owns no state of its own: the registry (which plugins declare which
//! sensitive parameters, and whether they are enabled), the runtime
//! environment and the durable config file all belong to the host and are
//! reached through [`host_api::HostContext`], which the host lends it
//! unscoped because it holds `manage_secrets`. Requests arrive already
//! parsed ([`Secrets::handle_parsed`]): `GET /api/secrets` is answered
//! straight from the caches (`fast`), everything else by the poem-openapi
//! endpoint over the same caches, and so is the page people use instead
//! of the API (`GET /secrets`, module `page`). The same API can be linked natively
//! through [`Secrets`] or [`endpoint`] (used by tests and benchmarks).

#![forbid(unsafe_code)]

// Data flows one way: `api` (the handlers) uses `render`, `validate`,
// `etag` and `index`; those use `model`, the types that cross the wire.
mod api;
mod audit_route;
mod etag;
mod fast;
mod index;
mod model;
mod page;
mod redact;
mod render;
mod validate;

use std::{future::Future, sync::OnceLock};

use abi_stable::std_types::{RArc, RVec};
use futures_util::future::{Either, ready};
use host_api::{
    ErrorCode, FfiRequest, FfiResponse, FfiSharedResponse, Headers, HostContextBox, HostError,
    HttpMethod, LiveServicesBox, LogLevel, MANAGE_SECRETS, ManifestExt, ParamSpec, ParsedRequest,
    ParsedResponse, Plugin, PluginManifest, PluginServicesBox,
};
use poem::{Endpoint, EndpointExt, IntoEndpoint, Response, endpoint::BoxEndpoint};
use poem_openapi::OpenApiService;

pub use api::SecretsApi;
use fast::FastGet;
pub use page::{PAGE_ROUTE, PageApi};
pub use redact::redact;

/// The plugin id.
pub const PLUGIN_ID: &str = "@milady/plugin-secrets";
/// The route prefix the plugin serves.
pub const ROUTE: &str = "/api/secrets";

/// The poem-openapi service of this plugin: the API and the page.
pub fn service(host: Option<HostContextBox>) -> OpenApiService<(SecretsApi, PageApi), ()> {
    service_of(SecretsApi::new(host))
}

fn service_of(api: SecretsApi) -> OpenApiService<(SecretsApi, PageApi), ()> {
    OpenApiService::new((api, PageApi), "Secrets", env!("CARGO_PKG_VERSION"))
}

/// The complete endpoint: the API plus JSON rendering of every error the
/// framework raises (bad content type, unknown method, ...).
pub fn endpoint(host: HostContextBox) -> BoxEndpoint<'static, Response> {
    endpoint_of(SecretsApi::new(Some(host)))
}

fn endpoint_of(api: SecretsApi) -> BoxEndpoint<'static, Response> {
    // No `Route::nest` here: the host may mount this endpoint natively with
    // `nest_no_strip`, and poem 3.1 panics on a nested `nest` there.
    service_of(api)
        .into_endpoint()
        .before(without_trailing_slash)
        .catch_all_error(render_error)
        .map_to_response()
        .into_endpoint()
        .boxed()
}

/// The secrets API over the host's services, as the plugin serves it: the
/// fast `GET` (answered from the caches, see `fast`) and the poem-openapi
/// endpoint for everything else, over the same caches and tags.
///
/// The exported plugin runs one; the benchmark links another into the
/// host and calls [`Secrets::handle_parsed`] natively, so both sides of
/// the comparison run this very handler.
pub struct Secrets {
    fast: Option<FastGet>,
    services: Option<PluginServicesBox>,
    endpoint: BoxEndpoint<'static, Response>,
}

impl Secrets {
    /// The API over `host`.
    pub fn new(host: HostContextBox) -> Self {
        Self::with_services(host, None, None)
    }

    /// The API over `host` and the later services the host lends a plugin:
    /// the scoped services of host-api 0.1.2 (key records, the audit log)
    /// and the live-change services of 0.1.3 (restart plans, warnings).
    pub fn with_services(
        host: HostContextBox,
        services: Option<PluginServicesBox>,
        live: Option<LiveServicesBox>,
    ) -> Self {
        let api = SecretsApi::with_services(Some(host), services.clone(), live);
        Self {
            fast: api.fast_get(),
            services,
            endpoint: endpoint_of(api),
        }
    }

    /// Answers one request that arrived already parsed.
    pub fn handle_parsed(
        &self,
        request: ParsedRequest,
    ) -> impl Future<Output = ParsedResponse> + Send + '_ {
        if request.method == HttpMethod::Get
            && (request.path == ROUTE || request.path.strip_suffix('/') == Some(ROUTE))
            && let Some(fast) = &self.fast
        {
            return Either::Left(ready(fast.respond()));
        }
        // Boxed: the hot path's future stays a few words long.
        Either::Right(Box::pin(self.through_endpoint(request)))
    }

    async fn through_endpoint(&self, request: ParsedRequest) -> ParsedResponse {
        // A `PUT` refused before its body was read as JSON is audited here
        // (`audit_route`); the handler audits what it refuses itself.
        let put = request.method == HttpMethod::Put
            && (request.path == ROUTE || request.path.strip_suffix('/') == Some(ROUTE));
        let client = request.client.clone();
        let response = match to_poem(request) {
            Ok(req) => from_poem(self.endpoint.get_response(req).await).await,
            Err(message) => ParsedResponse::error(400, ErrorCode::BadRequest, message),
        };
        match &self.services {
            Some(services) if put => audit_route::unread_body(services, client, response).await,
            _ => response,
        }
    }
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

static SECRETS: OnceLock<Secrets> = OnceLock::new();
/// The host's services, kept for `shutdown`.
static HOST: OnceLock<HostContextBox> = OnceLock::new();
/// The scoped services of host-api 0.1.2 (absent in an older host).
static SERVICES: OnceLock<PluginServicesBox> = OnceLock::new();

/// How the host stores each key, from its key records (host-api 0.1.2):
/// encrypted or not, unreadable and why. Empty with an older host.
fn stored_keys(services: Option<&PluginServicesBox>) -> render::StoredKeys {
    services
        .map(|services| render::stored_keys(&services.key_records_v1()))
        .unwrap_or_default()
}

/// The live-change services of host-api 0.1.3 (absent in an older host).
static LIVE: OnceLock<LiveServicesBox> = OnceLock::new();

/// The plugin as the host sees it.
struct SecretsPlugin;

impl Plugin for SecretsPlugin {
    fn manifest() -> PluginManifest {
        PluginManifest::new(PLUGIN_ID, "Secrets", env!("CARGO_PKG_VERSION"))
            .with_description(
                "Lists and updates the API keys and other secrets the host's plugins declare.",
            )
            .with_route(ROUTE)
            .with_route(PAGE_ROUTE)
            .with_param(ParamSpec::setting(
                "SECRETS_PLUGIN_LOG_LEVEL",
                "string",
                "Reserved; the plugin logs through the host.",
            ))
    }

    fn manifest_ext() -> ManifestExt {
        // Listing and changing every plugin's secrets is this plugin's job.
        ManifestExt::default().with_capability(MANAGE_SECRETS)
    }

    fn openapi_json() -> String {
        service(None).spec()
    }

    fn init_live(services: LiveServicesBox) -> Result<(), HostError> {
        LIVE.set(services).map_err(|_| {
            HostError::new(HostError::INIT, "the secrets plugin was initialised twice")
        })
    }

    fn init_services(services: PluginServicesBox) -> Result<(), HostError> {
        if !services.has_capability(MANAGE_SECRETS.into()) {
            services.log(
                LogLevel::Warn,
                "not granted `manage_secrets`: the secrets API sees no other plugin's secrets"
                    .into(),
            );
        }
        SERVICES.set(services).map_err(|_| {
            HostError::new(HostError::INIT, "the secrets plugin was initialised twice")
        })
    }

    fn init(host: HostContextBox) -> Result<(), HostError> {
        host.log(LogLevel::Info, "secrets plugin ready".into());
        let twice = || HostError::new(HostError::INIT, "the secrets plugin was initialised twice");
        HOST.set(host.clone()).map_err(|_| twice())?;
        // The later services were lent right before `init` (if at all).
        let secrets = Secrets::with_services(host, SERVICES.get().cloned(), LIVE.get().cloned());
        SECRETS.set(secrets).map_err(|_| twice())
    }

    fn shutdown() {
        if let Some(host) = HOST.get() {
            host.log(LogLevel::Info, "secrets plugin stopped".into());
        }
    }

    async fn handle(request: FfiRequest) -> FfiResponse {
        let shared = Self::handle_shared(request).await;
        FfiResponse {
            status: shared.status,
            headers: shared.headers,
            body: RVec::from(shared.body.as_slice()),
        }
    }

    fn handle_shared(
        request: FfiRequest,
    ) -> impl Future<Output = FfiSharedResponse> + Send + 'static {
        // A host older than 0.1.2: parse what it sent, answer the same way.
        let response = Self::handle_parsed(ParsedRequest::from_ffi_request(request));
        async move { FfiSharedResponse::from(response.await) }
    }

    fn handle_parsed(
        request: ParsedRequest,
    ) -> impl Future<Output = ParsedResponse> + Send + 'static {
        match SECRETS.get() {
            Some(secrets) => Either::Left(secrets.handle_parsed(request)),
            None => Either::Right(ready(ParsedResponse::error(
                503,
                ErrorCode::NotInitialised,
                "the secrets plugin is not initialised",
            ))),
        }
    }
}

host_api::export_plugin!(SecretsPlugin);

fn to_poem(request: ParsedRequest) -> Result<poem::Request, &'static str> {
    let method = poem::http::Method::from_bytes(request.method_str().as_bytes())
        .map_err(|_| "invalid method")?;
    let uri: poem::http::Uri = request
        .target()
        .parse()
        .map_err(|_| "invalid request target")?;
    // Who asked, for the host's log and audit of a write.
    let mut builder = poem::Request::builder()
        .method(method)
        .uri(uri)
        .extension(request.client.clone());
    for (name, value) in request.headers.iter() {
        builder = builder.header(name, value);
    }
    Ok(builder.body(request.body.into_vec()))
}

async fn from_poem(resp: Response) -> ParsedResponse {
    let status = resp.status().as_u16();
    let mut headers = Headers::with_capacity(resp.headers().len(), 128);
    for (name, value) in resp.headers() {
        if let Ok(value) = value.to_str() {
            headers.push(name.as_str(), value);
        }
    }
    let headers = RArc::new(headers);
    // A cached GET body travels as the shared buffer it already is.
    if let Some(shared) = resp.extensions().get::<model::SharedBody>() {
        return ParsedResponse {
            status,
            headers,
            body: shared.0.clone(),
        };
    }
    // `into_bytes` then `Vec::from` takes the buffer over without copying
    // when the body holds the only reference.
    match resp.into_body().into_bytes().await.map(Vec::from) {
        Ok(body) => ParsedResponse {
            status,
            headers,
            body: RArc::new(body.into()),
        },
        Err(_) => ParsedResponse::error(
            500,
            ErrorCode::InternalError,
            "the response could not be produced",
        ),
    }
}
