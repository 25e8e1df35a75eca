//! The notifier with plugins linked into the test, exported as libraries
//! export them: one applies its key live, one never answers, one applies
//! nothing live; beside catalog plugins enabled and disabled.

use std::{
    collections::BTreeMap,
    sync::atomic::{AtomicU64, Ordering},
    time::Instant,
};

use host_api::{
    ChangeAck, FfiRequest, FfiResponse, HostContextBox, HostError, ManifestExt, ParamSpec, Plugin,
    PluginManifest,
};

use super::*;
use crate::{plugins::loader::PluginModule, registry::CatalogEntry};

/// Notices the live plugin received, and the last version it was told.
static LIVE_TOLD: AtomicU64 = AtomicU64::new(0);
static LIVE_VERSION: AtomicU64 = AtomicU64::new(0);
/// Notices the plain plugin received.
static PLAIN_TOLD: AtomicU64 = AtomicU64::new(0);

fn manifest(id: &str, key: &str) -> PluginManifest {
    PluginManifest::new(id, id, "0.1.0").with_param(ParamSpec::secret(key, "a key", false))
}

/// Applies `LIVE_KEY` live and says so.
struct Live;
/// Declares `SILENT_KEY` live but never answers.
struct Silent;
/// Uses `LIVE_KEY` too, applies nothing live.
struct Plain;

macro_rules! plain_entry_points {
    () => {
        fn openapi_json() -> String {
            "{}".into()
        }
        fn init(_host: HostContextBox) -> Result<(), HostError> {
            Ok(())
        }
        async fn handle(_request: FfiRequest) -> FfiResponse {
            FfiResponse::json(200, "{}")
        }
    };
}

impl Plugin for Live {
    fn manifest() -> PluginManifest {
        manifest("@t/live", "LIVE_KEY")
    }
    fn manifest_ext() -> ManifestExt {
        ManifestExt::default().with_live_key("LIVE_KEY")
    }
    async fn on_env_change(notice: EnvChangeNotice) -> ChangeAck {
        LIVE_TOLD.fetch_add(1, Ordering::SeqCst);
        LIVE_VERSION.store(notice.version, Ordering::SeqCst);
        ChangeAck {
            applied_live: notice.keys,
        }
    }
    plain_entry_points!();
}

impl Plugin for Silent {
    fn manifest() -> PluginManifest {
        manifest("@t/silent", "SILENT_KEY")
    }
    fn manifest_ext() -> ManifestExt {
        ManifestExt::default().with_live_key("SILENT_KEY")
    }
    async fn on_env_change(_notice: EnvChangeNotice) -> ChangeAck {
        std::future::pending().await
    }
    plain_entry_points!();
}

impl Plugin for Plain {
    fn manifest() -> PluginManifest {
        manifest("@t/plain", "LIVE_KEY")
    }
    async fn on_env_change(notice: EnvChangeNotice) -> ChangeAck {
        PLAIN_TOLD.fetch_add(1, Ordering::SeqCst);
        // Claims more than it declares live: it does not count.
        ChangeAck {
            applied_live: notice.keys,
        }
    }
    plain_entry_points!();
}

fn served<P: Plugin>(module: PluginModule) -> (ServedPlugin, PluginManifest) {
    let manifest = P::manifest();
    let loaded = crate::plugins::loader::LoadedPlugin {
        path: format!("/p/{}.so", manifest.id).into(),
        module,
        manifest: manifest.clone(),
        openapi: serde_json::json!({}),
        interface_version: host_api::INTERFACE_VERSION.into(),
        manifest_ext: Some(P::manifest_ext()),
    };
    (ServedPlugin::of(&loaded), manifest)
}

fn setup(timeout: Duration) -> ChangeNotifier {
    let catalog = vec![
        CatalogEntry {
            id: "@t/catalog-on".into(),
            name: "on".into(),
            parameters: vec![ParamSpec::secret("LIVE_KEY", "k", false)],
        },
        CatalogEntry {
            id: "@t/catalog-off".into(),
            name: "off".into(),
            parameters: vec![ParamSpec::secret("LIVE_KEY", "k", false)],
        },
    ];
    let enabled = BTreeMap::from([("@t/catalog-on".to_owned(), true)]);
    let registry = Arc::new(Registry::new(vec![catalog], &enabled));
    let mut plugins = Vec::new();
    for (plugin, manifest) in [
        served::<Live>(PluginModule::Current(
            host_api::export::root_module::<Live>(),
        )),
        served::<Silent>(PluginModule::Current(
            host_api::export::root_module::<Silent>(),
        )),
        served::<Plain>(PluginModule::Current(
            host_api::export::root_module::<Plain>(),
        )),
    ] {
        registry
            .add_loaded(&manifest, &BTreeMap::new())
            .expect("added");
        plugins.push(plugin);
    }
    let live = Arc::new(LivePlugins::new(plugins, serde_json::json!({})));
    ChangeNotifier::new(live, registry, timeout)
}

fn keys(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|k| (*k).to_owned()).collect()
}

fn modes(plan: &[PlanEntry]) -> Vec<(String, &'static str)> {
    plan.iter()
        .map(|e| (e.plugin.to_string(), e.mode.name()))
        .collect()
}

#[tokio::test]
async fn live_plugins_are_waited_for_and_the_plan_says_who_took_it_live() {
    let notifier = setup(Duration::from_millis(300));
    let told_before = LIVE_TOLD.load(Ordering::SeqCst);
    notifier.applied(AppliedChange {
        first_version: 5,
        version: 6,
        keys: keys(&["LIVE_KEY", "SILENT_KEY", "NOBODY_KEY"]),
        origin: crate::env::notify::ChangeOrigin::Api,
    });
    // The update of version 5 changed LIVE_KEY: the live plugin took it,
    // the plain one and the enabled catalog plugin need a restart, the
    // disabled catalog plugin is not affected.
    let plan = notifier.plan(5, keys(&["LIVE_KEY"])).await;
    assert_eq!(
        modes(&plan),
        [
            ("@t/catalog-on".to_owned(), "restart"),
            ("@t/live".to_owned(), "live"),
            ("@t/plain".to_owned(), "restart"),
        ]
    );
    assert!(LIVE_TOLD.load(Ordering::SeqCst) > told_before);
    assert_eq!(LIVE_VERSION.load(Ordering::SeqCst), 6);
    // The plain plugin is told too, without being waited for.
    let start = Instant::now();
    while PLAIN_TOLD.load(Ordering::SeqCst) == 0 && start.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(PLAIN_TOLD.load(Ordering::SeqCst) > 0);
}

#[tokio::test]
async fn a_live_plugin_that_never_answers_counts_as_restart_within_the_timeout() {
    let timeout = Duration::from_millis(300);
    let notifier = setup(timeout);
    notifier.applied(AppliedChange {
        first_version: 9,
        version: 9,
        keys: keys(&["SILENT_KEY"]),
        origin: crate::env::notify::ChangeOrigin::Api,
    });
    let plan = tokio::time::timeout(
        Duration::from_secs(30),
        notifier.plan(9, keys(&["SILENT_KEY"])),
    )
    .await
    .expect("the plan is bounded by the plugin timeout");
    assert_eq!(modes(&plan), [("@t/silent".to_owned(), "restart")]);
}

#[tokio::test]
async fn without_a_round_every_user_of_a_key_needs_a_restart() {
    let notifier = setup(Duration::from_millis(100));
    let plan = notifier.plan(42, keys(&["LIVE_KEY"])).await;
    assert!(
        plan.iter().all(|e| e.mode == ApplyMode::RESTART),
        "{plan:?}"
    );
    assert_eq!(plan.len(), 3);
}
