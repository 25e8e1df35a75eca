//! The plugins a running host serves, and the routers that serve them
//! (SPEC §6: a library dropped into the folder of a running host is
//! mounted without a restart).
//!
//! [`LivePlugins`] holds the plugins in service (those mounted at start-up,
//! then those the folder watcher, `plugins::watch`, mounts while the host
//! runs) with the merged OpenAPI document they make. Each router the host
//! hands out ([`LivePlugins::router`]) is one endpoint over a router built
//! from that state: when a plugin is added, a new router (its routes,
//! `/openapi.json`, `/docs`, `Allow`) is built beside the old one and
//! swapped in atomically. A request runs to its end on the router it
//! started on; the next one sees the new router. Libraries are never
//! unloaded, so nothing is ever removed.

use std::{
    collections::BTreeSet,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use arc_swap::ArcSwap;
use poem::{Endpoint, Request, Response, endpoint::BoxEndpoint};

use crate::plugins::{
    loader::{LoadedPlugin, PluginModule},
    probe::ProbeReport,
};

/// One plugin in service, as the router, the change notifier and shutdown
/// need it. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ServedPlugin {
    /// Its root module.
    pub(crate) module: PluginModule,
    /// Its id.
    pub(crate) id: String,
    /// The file it was loaded from (a copy of it, in fact).
    pub(crate) file: PathBuf,
    /// Its route prefixes.
    pub(crate) routes: Vec<String>,
    /// Every parameter its manifest declares.
    pub(crate) keys: BTreeSet<String>,
    /// The declared parameters it applies live (`ManifestExt::live_keys`).
    pub(crate) live_keys: BTreeSet<String>,
    /// What a probe of it would report: its id, version, routes and
    /// documented paths, for the collision checks of later libraries.
    pub(crate) report: ProbeReport,
}

impl ServedPlugin {
    /// The served view of a mounted plugin.
    pub(crate) fn of(plugin: &LoadedPlugin) -> Self {
        let keys: BTreeSet<String> = plugin
            .manifest
            .parameters
            .iter()
            .map(|p| p.key.to_string())
            .collect();
        // Only declared keys count: a live key the manifest does not
        // declare is nothing the plugin is ever told about.
        let live_keys = plugin
            .manifest_ext
            .iter()
            .flat_map(|ext| ext.live_keys.iter())
            .map(|k| k.to_string())
            .filter(|k| keys.contains(k))
            .collect();
        let routes: Vec<String> = plugin
            .manifest
            .routes
            .iter()
            .map(|r| r.to_string())
            .collect();
        let paths = plugin
            .openapi
            .get("paths")
            .and_then(serde_json::Value::as_object)
            .map(|paths| paths.keys().cloned().collect())
            .unwrap_or_default();
        Self {
            module: plugin.module,
            id: plugin.manifest.id.to_string(),
            file: plugin.path.clone(),
            routes: routes.clone(),
            keys,
            live_keys,
            report: ProbeReport {
                ok: true,
                id: Some(plugin.manifest.id.to_string()),
                name: Some(plugin.manifest.name.to_string()),
                version: Some(plugin.manifest.version.to_string()),
                interface: Some(plugin.interface_version.clone()),
                compatible: Some(true),
                routes,
                paths,
                reason: None,
            },
        }
    }
}

/// Builds a router from the plugins in service and the merged document.
pub(crate) type BuildRouter =
    dyn Fn(&[ServedPlugin], &serde_json::Value) -> BoxEndpoint<'static, Response> + Send + Sync;

/// The plugins in service, their merged OpenAPI document, and the routers
/// over them.
pub(crate) struct LivePlugins {
    state: Mutex<State>,
    /// Every router handed out, rebuilt on each change.
    routers: Mutex<Vec<Slot>>,
}

struct State {
    plugins: Arc<Vec<ServedPlugin>>,
    /// The host's routes and every plugin's, merged; without the security
    /// section, which each router adds (`http::router`).
    openapi: Arc<serde_json::Value>,
}

struct Slot {
    current: Arc<ArcSwap<BoxEndpoint<'static, Response>>>,
    build: Box<BuildRouter>,
}

impl LivePlugins {
    /// The plugins mounted at start-up and their merged document.
    pub(crate) fn new(plugins: Vec<ServedPlugin>, openapi: serde_json::Value) -> Self {
        Self {
            state: Mutex::new(State {
                plugins: Arc::new(plugins),
                openapi: Arc::new(openapi),
            }),
            routers: Mutex::new(Vec::new()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while it is held; ignore poisoning.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The plugins in service now, in the order they were mounted.
    pub(crate) fn plugins(&self) -> Arc<Vec<ServedPlugin>> {
        Arc::clone(&self.state().plugins)
    }

    /// The merged document now (without its security section).
    pub(crate) fn openapi(&self) -> Arc<serde_json::Value> {
        Arc::clone(&self.state().openapi)
    }

    /// A router over the plugins in service, built by `build` now and
    /// again after every change.
    pub(crate) fn router(&self, build: Box<BuildRouter>) -> LiveRouter {
        let state = self.state();
        let first = build(&state.plugins, &state.openapi);
        let current = Arc::new(ArcSwap::from_pointee(first));
        self.routers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Slot {
                current: Arc::clone(&current),
                build,
            });
        LiveRouter(current)
    }

    /// Adds a plugin mounted while the host runs, with the merged document
    /// that now includes it, and swaps a rebuilt router into every slot.
    pub(crate) fn add(&self, plugin: ServedPlugin, openapi: serde_json::Value) {
        let mut state = self.state();
        let mut plugins = state.plugins.as_ref().clone();
        plugins.push(plugin);
        state.plugins = Arc::new(plugins);
        state.openapi = Arc::new(openapi);
        // Under the state lock: two changes never swap in out of order.
        for slot in self
            .routers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            slot.current
                .store(Arc::new((slot.build)(&state.plugins, &state.openapi)));
        }
    }
}

/// One endpoint over the router currently in service.
#[derive(Clone)]
pub(crate) struct LiveRouter(Arc<ArcSwap<BoxEndpoint<'static, Response>>>);

impl Endpoint for LiveRouter {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        // The router this request started on, kept until it is answered.
        let router = self.0.load_full();
        router.call(req).await
    }
}

#[cfg(test)]
mod tests {
    use poem::{EndpointExt as _, IntoEndpoint as _, endpoint::make_sync, test::TestClient};

    use super::*;

    /// A plugin linked into the test, exported as a library would be.
    struct Nothing;

    impl host_api::Plugin for Nothing {
        fn manifest() -> host_api::PluginManifest {
            host_api::PluginManifest::new("@t/p", "P", "0.1.0")
        }
        fn openapi_json() -> String {
            "{}".into()
        }
        fn init(_host: host_api::HostContextBox) -> Result<(), host_api::HostError> {
            Ok(())
        }
        async fn handle(_request: host_api::FfiRequest) -> host_api::FfiResponse {
            host_api::FfiResponse::json(200, "{}")
        }
    }

    fn counting_router(
        plugins: &[ServedPlugin],
        doc: &serde_json::Value,
    ) -> BoxEndpoint<'static, Response> {
        let body = format!("{} {}", plugins.len(), doc["n"]);
        make_sync(move |_| body.clone())
            .map_to_response()
            .into_endpoint()
            .boxed()
    }

    #[tokio::test]
    async fn every_router_handed_out_serves_the_latest_state() {
        let live = LivePlugins::new(Vec::new(), serde_json::json!({"n": 1}));
        let a = TestClient::new(live.router(Box::new(counting_router)));
        let b = TestClient::new(live.router(Box::new(counting_router)));
        a.get("/").send().await.assert_text("0 1").await;
        // A plugin with nothing but a name: what a router sees of it.
        let plugin = ServedPlugin {
            module: PluginModule::Current(host_api::export::root_module::<Nothing>()),
            id: "@t/p".into(),
            file: PathBuf::from("/p/libp.so"),
            routes: vec!["/api/p".into()],
            keys: BTreeSet::new(),
            live_keys: BTreeSet::new(),
            report: ProbeReport::default(),
        };
        live.add(plugin, serde_json::json!({"n": 2}));
        a.get("/").send().await.assert_text("1 2").await;
        b.get("/").send().await.assert_text("1 2").await;
        assert_eq!(live.plugins().len(), 1);
        assert_eq!(live.openapi()["n"], 2);
    }
}
