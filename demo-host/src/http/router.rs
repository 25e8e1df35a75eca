//! The host's router: its own routes, every plugin's routes through the
//! bridge, `/openapi.json` and `/docs` for the merged document, auth on
//! `/api/*`, JSON errors, `Allow` headers and the browser defences.
//!
//! Built from the plugins in service and their merged document
//! ([`RouterParts::build`]); `plugins::live` builds it again whenever a
//! plugin is added while the host runs and swaps it in.

use std::{sync::Arc, time::Duration};

use poem::{
    Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route,
    endpoint::{BoxEndpoint, make_sync},
    http::StatusCode,
    web::Html,
};
use poem_openapi::OpenApiService;

use crate::{
    env::fingerprint::Fingerprinter,
    http::{
        allow::AllowHeader,
        api::HostApi,
        auth,
        browser::{self, AllowedOrigins, BrowserDefences},
        errors::render_error,
        host_header,
        limits::BodyLimits,
        openapi as openapi_doc,
    },
    plugins::{
        bridge::{BridgeLimits, PluginEndpoint},
        live::ServedPlugin,
        parsed::TokenFingerprint,
    },
    registry::Registry,
    store::config_file::ConfigStore,
};

/// The host's own routes as a poem-openapi service.
pub(crate) fn host_service(
    registry: &Arc<Registry>,
    config: &Arc<ConfigStore>,
) -> OpenApiService<HostApi, ()> {
    OpenApiService::new(
        HostApi {
            registry: Arc::clone(registry),
            config: Arc::clone(config),
        },
        "Milady demo host",
        env!("CARGO_PKG_VERSION"),
    )
    .description("An agent-runtime host with dynamically loaded plugins. Routes under `/api` require the API token when one is configured.")
}

/// An endpoint several routers share (one linked natively into the host,
/// for the benchmark).
#[derive(Clone)]
pub(crate) struct SharedEndpoint(pub(crate) Arc<BoxEndpoint<'static, Response>>);

impl Endpoint for SharedEndpoint {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        self.0.call(req).await
    }
}

/// Everything a router is built from besides the plugins in service.
pub(crate) struct RouterParts {
    /// The registry the host's routes read and toggle.
    pub(crate) registry: Arc<Registry>,
    /// Where toggles are persisted.
    pub(crate) config: Arc<ConfigStore>,
    /// Request-body limit in bytes.
    pub(crate) body_limit: usize,
    /// Bound on receiving a whole body.
    pub(crate) body_timeout: Duration,
    /// Bound on a plugin's answer.
    pub(crate) request_timeout: Duration,
    /// The API token, if any.
    pub(crate) token: Option<Arc<str>>,
    /// Requests must name a loopback host.
    pub(crate) loopback_only: bool,
    /// Where plugin futures run.
    pub(crate) plugin_runtime: tokio::runtime::Handle,
    /// Browser origins allowed to call the API.
    pub(crate) origins: AllowedOrigins,
    /// Endpoints linked natively, mounted at their prefixes.
    pub(crate) native: Vec<(String, SharedEndpoint)>,
}

impl RouterParts {
    /// The router over `plugins`, whose merged document (host and plugin
    /// routes, without the security section) is `openapi`.
    pub(crate) fn build(
        &self,
        plugins: &[ServedPlugin],
        openapi: &serde_json::Value,
    ) -> BoxEndpoint<'static, Response> {
        let mut openapi = openapi.clone();
        openapi_doc::add_security(&mut openapi);
        let service = host_service(&self.registry, &self.config);
        let host_spec = service.spec();
        let page = render_swagger_page(&service);
        let docs_html =
            openapi_doc::swagger_html(&page, &host_spec, &openapi).unwrap_or_else(|e| {
                tracing::error!(error = %e, "Swagger UI unavailable");
                String::from("<!doctype html><title>docs unavailable</title>")
            });
        let docs_policy = browser::docs_policy(&docs_html);
        let merged = openapi.to_string();

        let mut route = Route::new()
            .at(
                "/openapi.json",
                make_sync(move |_| {
                    Response::builder()
                        .content_type("application/json; charset=utf-8")
                        .body(merged.clone())
                }),
            )
            .at(
                "/docs",
                make_sync(move |_| {
                    // Swagger UI's own inline scripts and styles, nothing else.
                    Html(docs_html.clone()).with_header(
                        poem::http::header::CONTENT_SECURITY_POLICY,
                        docs_policy.clone(),
                    )
                }),
            );
        let limits = BridgeLimits {
            body_limit: self.body_limit,
            body_timeout: self.body_timeout,
            request_timeout: self.request_timeout,
        };
        for p in plugins {
            let runtime = self.plugin_runtime.clone();
            let ep = PluginEndpoint::new(p.module, &p.id, limits, runtime);
            for prefix in &p.routes {
                route = route.nest_no_strip(prefix.as_str(), ep.clone());
            }
        }
        for (prefix, ep) in &self.native {
            route = route.nest_no_strip(prefix.as_str(), ep.clone());
        }
        // Inside the host and token checks: nobody unauthenticated makes
        // the host buffer a body.
        let route = route
            .nest("/", service)
            .with(BodyLimits::new(self.body_limit, self.body_timeout));
        let token = self.token.clone();
        let token_fingerprint = token
            .as_deref()
            .map(|t| TokenFingerprint(Fingerprinter::process().of(t).into()));
        let loopback_only = self.loopback_only;
        // Refused tokens on secrets routes are audited (`http::audit_lines`).
        let config_path: Arc<std::path::Path> = Arc::from(self.config.path());
        route
            .around(move |next, req: Request| {
                let token = token.clone();
                let token_fingerprint = token_fingerprint.clone();
                let config_path = Arc::clone(&config_path);
                async move {
                    if let Some(refused) = host_header::refuse(&req, loopback_only) {
                        return Ok(refused);
                    }
                    let mut req = req;
                    if let Some(fingerprint) = token_fingerprint {
                        // What a plugin learns of the token (`plugins::parsed`).
                        req.extensions_mut().insert(fingerprint);
                    }
                    auth::require_token(next, req, token.as_deref(), &config_path).await
                }
            })
            .catch_all_error(render_error)
            // Outside the renderer, so poem's own 405s are responses by now.
            .with(AllowHeader::new(&openapi))
            // Outermost: every response, errors and refusals included.
            .with(BrowserDefences::new(self.origins.clone()))
            .map_to_response()
            .into_endpoint()
            .boxed()
    }
}

fn render_swagger_page(service: &OpenApiService<HostApi, ()>) -> String {
    let ui = service.swagger_ui();
    let fut = ui.call(Request::builder().uri_str("/").finish());
    // The Swagger UI endpoint is synchronous work behind an async signature.
    let resp = futures_util::FutureExt::now_or_never(fut);
    match resp {
        Some(Ok(resp)) => {
            let resp = resp.into_response();
            if resp.status() != StatusCode::OK {
                return String::new();
            }
            futures_util::FutureExt::now_or_never(resp.into_body().into_string())
                .and_then(Result::ok)
                .unwrap_or_default()
        }
        _ => String::new(),
    }
}
