//! Assembling the host: config, registry, runtime environment, plugins, and
//! the router that serves them.

use std::{path::PathBuf, sync::Arc};

use poem::{
    Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route,
    endpoint::{BoxEndpoint, make_sync},
    http::StatusCode,
    web::Html,
};
use poem_openapi::OpenApiService;

use crate::{
    env::{key_policy::KeyPolicy, runtime::RuntimeEnv},
    http::{allow::AllowHeader, api::HostApi, auth, errors::render_error, openapi as openapi_doc},
    plugins::{
        bridge::PluginEndpoint,
        loader::{self, LoadedPlugin},
        mount::{Served, mount},
    },
    registry::{self, Registry},
    store::config_file::ConfigStore,
};

/// The environment variable holding the host's API token.
pub const TOKEN_ENV: &str = "MILADY_API_TOKEN";

/// The default request-body limit: 1 MiB.
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// Everything needed to assemble a host.
#[derive(Clone)]
pub struct HostOptions {
    /// The TOML config file.
    pub config_path: PathBuf,
    /// The folder plugins are loaded from (none: no plugins).
    pub plugins_dir: Option<PathBuf>,
    /// Extra catalogs in Milady's `plugins.json` format.
    pub catalogs: Vec<PathBuf>,
    /// The API token, if any.
    pub token: Option<String>,
    /// Request-body limit in bytes.
    pub body_limit: usize,
    /// The host listens on loopback only: requests must name a loopback
    /// host in `Host` (defence against DNS rebinding).
    pub loopback_only: bool,
}

// The token is a secret: Debug says only whether there is one.
impl std::fmt::Debug for HostOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostOptions")
            .field("config_path", &self.config_path)
            .field("plugins_dir", &self.plugins_dir)
            .field("catalogs", &self.catalogs)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("body_limit", &self.body_limit)
            .field("loopback_only", &self.loopback_only)
            .finish()
    }
}

impl HostOptions {
    /// Options with defaults: no plugins, no extra catalog, no token, the
    /// default body limit, loopback only.
    pub fn new(config_path: impl Into<PathBuf>) -> Self {
        Self {
            config_path: config_path.into(),
            plugins_dir: None,
            catalogs: Vec::new(),
            token: None,
            body_limit: DEFAULT_BODY_LIMIT,
            loopback_only: true,
        }
    }
}

/// A plugin that passed every check and serves routes.
pub struct MountedPlugin {
    /// The plugin as loaded.
    pub plugin: LoadedPlugin,
}

/// A plugin file that was skipped, and why.
#[derive(Debug)]
pub struct SkippedPlugin {
    /// The file.
    pub path: PathBuf,
    /// One line: why it was skipped.
    pub reason: String,
}

/// The assembled host state.
pub struct Host {
    /// The config file.
    pub config: Arc<ConfigStore>,
    /// The plugin registry.
    pub registry: Arc<Registry>,
    /// The runtime environment.
    pub env: Arc<RuntimeEnv>,
    /// Plugins serving routes.
    pub plugins: Vec<MountedPlugin>,
    /// Files that were not loaded.
    pub skipped: Vec<SkippedPlugin>,
    /// The merged OpenAPI document.
    pub openapi: serde_json::Value,
    options: HostOptions,
}

/// A start-up failure: the host does not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] crate::store::config_file::ConfigError),
    /// A catalog is unreadable or invalid.
    #[error(transparent)]
    Catalog(#[from] registry::CatalogError),
    /// The plugin folder cannot be listed.
    #[error("cannot list the plugin folder {path}: {source}")]
    PluginsDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn host_service(
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

impl Host {
    /// Loads the config, catalogs and plugins. Bad plugin files are skipped
    /// (and logged); a bad config or catalog stops start-up.
    pub fn build(
        options: HostOptions,
        process_env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StartupError> {
        let config = Arc::new(ConfigStore::new(&options.config_path));
        let snapshot = config.load()?;

        let mut catalogs = vec![registry::parse_catalog(
            registry::DEFAULT_CATALOG,
            "built-in catalog",
        )?];
        for path in &options.catalogs {
            catalogs.push(registry::load_catalog_file(path)?);
        }
        let registry = Arc::new(Registry::new(catalogs, &snapshot.plugin_enabled));
        let env = Arc::new(RuntimeEnv::new(
            process_env,
            &snapshot.env,
            &[TOKEN_ENV],
            Arc::clone(&config),
            KeyPolicy::new(&snapshot.blocked_env_keys),
        ));

        let files = match &options.plugins_dir {
            Some(dir) => loader::library_files(dir).map_err(|source| StartupError::PluginsDir {
                path: dir.clone(),
                source,
            })?,
            None => Vec::new(),
        };

        let host_doc = host_service(&registry, &config).spec();
        let mut openapi: serde_json::Value =
            serde_json::from_str(&host_doc).unwrap_or_else(|_| serde_json::json!({}));
        let mut plugins: Vec<MountedPlugin> = Vec::new();
        let mut skipped = Vec::new();
        for path in files {
            let started = std::time::Instant::now();
            let served = Served {
                routes: plugins
                    .iter()
                    .flat_map(|m| m.plugin.manifest.routes.iter().map(|r| r.as_str()))
                    .collect(),
                openapi: &mut openapi,
            };
            match mount(&path, &registry, &env, &snapshot.plugin_enabled, served) {
                Ok(plugin) => {
                    tracing::info!(
                        file = %path.display(),
                        plugin = %plugin.manifest.id,
                        version = %plugin.manifest.version,
                        interface = %plugin.interface_version,
                        elapsed_us = started.elapsed().as_micros() as u64,
                        "plugin loaded"
                    );
                    plugins.push(MountedPlugin { plugin });
                }
                Err(error) => {
                    let reason = error.to_string();
                    tracing::warn!(file = %path.display(), %reason, "plugin skipped");
                    skipped.push(SkippedPlugin { path, reason });
                }
            }
        }
        openapi_doc::add_security(&mut openapi);

        Ok(Self {
            config,
            registry,
            env,
            plugins,
            skipped,
            openapi,
            options,
        })
    }

    /// Tells every mounted plugin that the host is stopping. Plugins built
    /// against host-api 0.1.0 have no `shutdown` entry point and are skipped.
    pub fn shutdown_plugins(&self) {
        for mounted in &self.plugins {
            let id = mounted.plugin.manifest.id.as_str();
            match mounted.plugin.module.shutdown() {
                Some(shutdown) => {
                    shutdown();
                    tracing::debug!(plugin = id, "plugin shut down");
                }
                None => tracing::debug!(plugin = id, "plugin predates the shutdown entry point"),
            }
        }
    }

    /// The router: host routes, plugin routes through the bridge, docs,
    /// auth on `/api/*`, and JSON errors everywhere.
    pub fn endpoint(&self) -> impl Endpoint<Output = Response> + use<> {
        self.router(Vec::new())
    }

    /// [`Host::endpoint`] plus endpoints linked natively into the host, each
    /// mounted (without stripping) at its prefix behind the same middleware.
    /// Benchmarks use it to compare a plugin with the same code linked in
    /// (only with the `bench` feature).
    #[cfg(feature = "bench")]
    pub fn endpoint_with_native(
        &self,
        native: Vec<(String, BoxEndpoint<'static, Response>)>,
    ) -> impl Endpoint<Output = Response> + use<> {
        self.router(native)
    }

    fn router(
        &self,
        native: Vec<(String, BoxEndpoint<'static, Response>)>,
    ) -> impl Endpoint<Output = Response> + use<> {
        let service = host_service(&self.registry, &self.config);
        let host_spec = service.spec();
        let page = render_swagger_page(&service);
        let docs_html =
            openapi_doc::swagger_html(&page, &host_spec, &self.openapi).unwrap_or_else(|e| {
                tracing::error!(error = %e, "Swagger UI unavailable");
                String::from("<!doctype html><title>docs unavailable</title>")
            });
        let merged = self.openapi.to_string();

        let mut route = Route::new()
            .at(
                "/openapi.json",
                make_sync(move |_| {
                    Response::builder()
                        .content_type("application/json; charset=utf-8")
                        .body(merged.clone())
                }),
            )
            .at("/docs", make_sync(move |_| Html(docs_html.clone())));
        for mounted in &self.plugins {
            let p = &mounted.plugin;
            let ep = PluginEndpoint::new(p.module, p.manifest.id.as_str(), self.options.body_limit);
            for prefix in &p.manifest.routes {
                route = route.nest_no_strip(prefix.as_str(), ep.clone());
            }
        }
        for (prefix, ep) in native {
            route = route.nest_no_strip(prefix, ep);
        }
        let route = route.nest("/", service);
        let token: Option<Arc<str>> = self.options.token.as_deref().map(Arc::from);
        let loopback_only = self.options.loopback_only;
        route
            .around(move |next, req: Request| {
                let token = token.clone();
                async move {
                    if loopback_only && let Some(refused) = auth::refuse_foreign_host(&req) {
                        return Ok(refused);
                    }
                    auth::require_token(next, req, token.as_deref()).await
                }
            })
            .catch_all_error(render_error)
            // Outside the renderer, so poem's own 405s are responses by now.
            .with(AllowHeader::new(&self.openapi))
            .map_to_response()
            .into_endpoint()
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
