//! Assembling the host: config, registry, runtime environment, plugins, and
//! the router that serves them.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};

#[cfg(feature = "bench")]
use poem::endpoint::BoxEndpoint;
use poem::{Endpoint, Response};

use crate::{
    boundary::BoundaryOptions,
    env::at_rest::open_config_env,
    env::{
        key_policy::{DEFAULT_MAX_VALUE_BYTES, KeyPolicy},
        runtime::RuntimeEnv,
    },
    http::{
        browser::{AllowedOrigins, OriginError},
        openapi as openapi_doc,
        router::{RouterParts, SharedEndpoint, host_service},
    },
    plugins::folder::{self, FolderError, Library},
    plugins::{
        changes::ChangeNotifier,
        live::{LivePlugins, ServedPlugin},
        loader::LoadedPlugin,
        runtime::{RuntimeError, plugin_runtime},
        startup::Startup,
        watch::{self, FolderWatch, Watcher},
    },
    registry::{self, Registry},
    store::config_file::ConfigStore,
    store::file_safety::{FilePolicy, UnsafeFile},
    store::{
        lock::{self, HostLock},
        secrets_key::{KeyError, Keyring, SECRETS_KEY_ENV, SecretsKey},
    },
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
    /// Deadlines, child-process probing and browser origins (SPEC §5).
    pub boundary: BoundaryOptions,
    /// The file rules for the config file, the plugin folder and its
    /// libraries (strict unless `--no-strict-modes`).
    pub file_policy: FilePolicy,
    /// The longest value the API may write to the runtime environment, in
    /// bytes (longer: refused with its own reason).
    pub max_value_bytes: usize,
    /// Where the key that encrypts `[env]` values at rest comes from
    /// (SPEC §7); by default `$XDG_DATA_HOME/milady/secrets.key`.
    pub secrets_key: SecretsKey,
    /// The audit log (SPEC §8); `None`: `audit.jsonl` beside the config.
    pub audit_log: Option<PathBuf>,
    /// Whether changes are audited: always, except for a benchmark that
    /// measures what the audit log costs (no flag turns it off).
    pub audit: bool,
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
            .field("boundary", &self.boundary)
            .field("file_policy", &self.file_policy)
            .field("max_value_bytes", &self.max_value_bytes)
            .field("secrets_key", &self.secrets_key)
            .field("audit_log", &self.audit_log)
            .field("audit", &self.audit)
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
            boundary: BoundaryOptions::default(),
            file_policy: FilePolicy::strict(),
            max_value_bytes: DEFAULT_MAX_VALUE_BYTES,
            secrets_key: SecretsKey::File(SecretsKey::default_file(
                std::env::var_os("XDG_DATA_HOME"),
                std::env::var_os("HOME"),
            )),
            audit_log: None,
            audit: true,
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
    /// Plugins serving routes since start-up (those added while the host
    /// runs are served too: see [`Host::watch_plugin_folder`]).
    pub plugins: Vec<MountedPlugin>,
    /// Files that were not loaded.
    pub skipped: Vec<SkippedPlugin>,
    /// The merged OpenAPI document at start-up.
    pub openapi: serde_json::Value,
    options: HostOptions,
    /// Where plugin futures run (`plugins::runtime`).
    plugin_runtime: tokio::runtime::Handle,
    /// Browser origins allowed to call the API.
    origins: AllowedOrigins,
    /// Held while the host lives: no key rotation runs meanwhile.
    _host_lock: Option<HostLock>,
    /// The plugins in service, those added while running included, and
    /// the routers over them (`plugins::live`).
    live: Arc<LivePlugins>,
    /// Enabled states from the config file at start-up.
    enabled_at_start: BTreeMap<String, bool>,
    /// The libraries start-up dealt with (for the folder watcher).
    started_with: Vec<PathBuf>,
    /// The folder watcher, once started.
    watch: Mutex<Option<FolderWatch>>,
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
    /// The plugin folder is not safe to trust (StrictModes).
    #[error(transparent)]
    UnsafePluginsDir(UnsafeFile),
    /// The plugin folder cannot be listed.
    #[error("cannot list the plugin folder {path}: {source}")]
    PluginsDir {
        /// The folder.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The runtime plugin code runs on could not be started.
    #[error(transparent)]
    PluginRuntime(#[from] RuntimeError),
    /// An allowed browser origin is not an origin.
    #[error(transparent)]
    Origins(#[from] OriginError),
    /// The secrets key is configured in a way the host refuses.
    #[error(transparent)]
    SecretsKey(#[from] KeyError),
    /// The audit log cannot be written: the host does not start, as it
    /// could apply no change (SPEC §8, fail closed).
    #[error("the audit log {path} cannot be written: {source}")]
    AuditLog {
        /// The audit file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `[store]` names a secret store the host cannot use (SPEC §9); the
    /// reason never carries the token.
    #[error("{0}")]
    Store(String),
}

/// The libraries of the plugin folder that pass the file rules, and those
/// that do not as skipped plugins (logged here).
fn trusted_libraries(
    dir: &std::path::Path,
    policy: FilePolicy,
) -> Result<(Vec<PathBuf>, Vec<SkippedPlugin>), StartupError> {
    let listed = folder::libraries(dir, policy).map_err(|e| match e {
        FolderError::Unsafe(e) => StartupError::UnsafePluginsDir(e),
        FolderError::Io { path, source } => StartupError::PluginsDir { path, source },
    })?;
    let mut trusted = Vec::new();
    let mut refused = Vec::new();
    for library in listed {
        match library {
            Library::Trusted(path) => trusted.push(path),
            Library::Refused(path, reason) => {
                tracing::warn!(file = %path.display(), %reason, "plugin skipped");
                refused.push(SkippedPlugin { path, reason });
            }
        }
    }
    Ok((trusted, refused))
}

impl Host {
    /// Loads the config, catalogs and plugins. Bad plugin files are skipped
    /// (and logged); a bad config or catalog stops start-up.
    pub fn build(
        options: HostOptions,
        process_env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, StartupError> {
        // The file rules (StrictModes) first: nothing may read the config,
        // or put a lock file beside it, before its folder is known safe.
        ConfigStore::new(&options.config_path)
            .with_policy(options.file_policy)
            .check_files()?;
        options.secrets_key.check_apart_from(&options.config_path)?;
        // Fingerprints under the stable key kept with the secrets key, and
        // the audit log checked writable (`knowing`).
        crate::knowing::install_fingerprint_key(&options.secrets_key);
        crate::provider_shapes::install_for(&options.config_path);
        let audit = crate::knowing::open_audit_log(&options)?;
        // Before the key is read: a rotation in progress ends first.
        let host_lock = match lock::hold_host_lock(&options.config_path) {
            Ok(held) => Some(held),
            Err(err) => {
                tracing::warn!(
                    config = %options.config_path.display(),
                    error = %err,
                    "cannot take the host lock beside the config; `secrets rotate-key` \
                     will not see this host"
                );
                None
            }
        };
        let keyring = Arc::new(Keyring::new(options.secrets_key.clone()));
        let config = Arc::new(
            ConfigStore::new(&options.config_path)
                .with_policy(options.file_policy)
                .with_keyring(Arc::clone(&keyring)),
        );
        let snapshot = config.load()?;
        // Every encrypted value opened once, here; never per request.
        let mut opened = open_config_env(&snapshot, config.keyring());
        let process_env: Vec<(String, String)> = process_env.into_iter().collect();
        // `[store] backend = "openbao"`: the secrets are the fleet's store's,
        // not `[env]`'s (SPEC §9, `env::runtime::fleet`).
        let fleet = crate::env::runtime::start_fleet(&options.config_path, &process_env, &keyring)
            .map_err(|e| StartupError::Store(e.to_string()))?;
        // One fingerprint key per fleet, kept in its store (SPEC §8, §9).
        if let Some(key) = fleet.as_ref().and_then(|f| f.fingerprint_key()) {
            crate::env::fingerprint::Fingerprinter::with_key(key).install();
        }
        let stored_env = match &fleet {
            Some(fleet) => fleet.data(),
            None => std::mem::take(&mut opened.values),
        };

        let mut catalogs = vec![registry::parse_catalog(
            registry::DEFAULT_CATALOG,
            "built-in catalog",
        )?];
        for path in &options.catalogs {
            catalogs.push(registry::load_catalog_file(path)?);
        }
        let registry = Arc::new(
            Registry::new(catalogs, &snapshot.plugin_enabled)
                .with_manage_secrets_grants(&snapshot.plugin_manage_secrets),
        );
        let env = Arc::new(
            RuntimeEnv::new(
                process_env,
                &stored_env,
                &[TOKEN_ENV, SECRETS_KEY_ENV, "BAO_TOKEN", "VAULT_TOKEN"],
                Arc::clone(&config),
                KeyPolicy::new(&snapshot.blocked_env_keys)
                    .with_max_value_bytes(options.max_value_bytes),
            )
            .with_at_rest(std::mem::take(&mut opened.at_rest))
            .with_fleet(fleet)
            .with_audit_if(audit),
        );
        drop(opened);
        drop(stored_env);
        env.follow_store();

        // The folder and each library under the file rules first: nothing
        // of a library another user could have planted runs, not even in a
        // probe child.
        let (files, refused) = match &options.plugins_dir {
            Some(dir) => trusted_libraries(dir, options.file_policy)?,
            None => (Vec::new(), Vec::new()),
        };

        let host_doc = host_service(&registry, &config).spec();
        let mut openapi: serde_json::Value =
            serde_json::from_str(&host_doc).unwrap_or_else(|_| serde_json::json!({}));
        let origins = AllowedOrigins::parse(&options.boundary.allowed_origins)?;
        // Before any plugin: `init` may already use host services.
        let plugin_runtime = plugin_runtime()?;
        // Probed in child processes, loaded from private copies, each step
        // within the plugin timeout (`plugins::startup`).
        let (plugins, mut skipped) = Startup {
            registry: &registry,
            env: &env,
            enabled: &snapshot.plugin_enabled,
            boundary: &options.boundary,
        }
        .mount_all(files, &mut openapi);
        let started_with = plugins
            .iter()
            .map(|m| m.plugin.path.clone())
            .chain(skipped.iter().map(|s| s.path.clone()))
            .chain(refused.iter().map(|s| s.path.clone()))
            .collect();
        skipped.extend(refused);
        let live = Arc::new(LivePlugins::new(
            plugins
                .iter()
                .map(|m| ServedPlugin::of(&m.plugin))
                .collect(),
            openapi.clone(),
        ));
        // Every applied change is told to the plugins that use its keys.
        env.listen(Arc::new(ChangeNotifier::new(
            Arc::clone(&live),
            Arc::clone(&registry),
            options.boundary.plugin_timeout,
        )));
        openapi_doc::add_security(&mut openapi);

        Ok(Self {
            config,
            registry,
            env,
            plugins,
            skipped,
            openapi,
            options,
            plugin_runtime,
            origins,
            _host_lock: host_lock,
            live,
            enabled_at_start: snapshot.plugin_enabled.clone(),
            started_with,
            watch: Mutex::new(None),
        })
    }

    /// Starts watching the plugin folder: a library dropped into it is
    /// probed, loaded and mounted while the host runs (`plugins::watch`).
    /// Once only; stopped by [`Host::shutdown_plugins`]. A host without a
    /// plugin folder, or without a probe program, does not watch.
    pub fn watch_plugin_folder(&self) {
        let Some(dir) = &self.options.plugins_dir else {
            return;
        };
        if self.options.boundary.probe_program.is_none() {
            tracing::info!("no child-process probe: the plugin folder is not watched");
            return;
        }
        let mut watch = self.watch.lock().unwrap_or_else(|e| e.into_inner());
        if watch.is_some() {
            return;
        }
        let watcher = Watcher {
            dir: dir.clone(),
            policy: self.options.file_policy,
            boundary: self.options.boundary.clone(),
            registry: Arc::clone(&self.registry),
            env: Arc::clone(&self.env),
            config: Arc::clone(&self.config),
            enabled: self.enabled_at_start.clone(),
            live: Arc::clone(&self.live),
            baseline: watch::baseline(&self.started_with),
        };
        match watcher.start() {
            Ok(started) => *watch = Some(started),
            Err(e) => tracing::warn!(error = %e, "cannot watch the plugin folder"),
        }
    }

    /// Stops watching the plugin folder, then tells every mounted plugin
    /// (those added while running too) that the host is stopping. Plugins
    /// built against host-api 0.1.0 have no `shutdown` entry point and are
    /// skipped.
    pub fn shutdown_plugins(&self) {
        drop(self.watch.lock().unwrap_or_else(|e| e.into_inner()).take());
        for served in self.live.plugins().iter() {
            let id = served.id.as_str();
            match served.module.shutdown() {
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

    /// The services a plugin granted `manage_secrets` would be lent, for a
    /// handler linked natively into the host under `id` (`init`'s, then
    /// those of host-api 0.1.2 and 0.1.3), so that a benchmark's native
    /// side sees what the plugin sees (only with the `bench` feature).
    #[cfg(feature = "bench")]
    pub fn native_services(
        &self,
        id: &str,
    ) -> (
        host_api::HostContextBox,
        host_api::PluginServicesBox,
        host_api::LiveServicesBox,
    ) {
        let manifest = host_api::PluginManifest::new(id, id, "0.0.0");
        let lent = crate::plugins::mount::lend(&manifest, true, &self.registry, &self.env);
        (
            lent.services.into_box(),
            lent.scoped.into_box(),
            lent.planned.into_box(),
        )
    }

    /// One endpoint over the router of the plugins in service, rebuilt
    /// and swapped in when a plugin is added (`plugins::live`,
    /// `http::router`).
    fn router(
        &self,
        native: Vec<(String, poem::endpoint::BoxEndpoint<'static, Response>)>,
    ) -> impl Endpoint<Output = Response> + use<> {
        let parts = RouterParts {
            registry: Arc::clone(&self.registry),
            config: Arc::clone(&self.config),
            body_limit: self.options.body_limit,
            body_timeout: self.options.boundary.body_timeout,
            request_timeout: self.options.boundary.request_timeout,
            token: self.options.token.as_deref().map(Arc::from),
            loopback_only: self.options.loopback_only,
            plugin_runtime: self.plugin_runtime.clone(),
            origins: self.origins.clone(),
            native: native
                .into_iter()
                .map(|(prefix, ep)| (prefix, SharedEndpoint(Arc::new(ep))))
                .collect(),
        };
        let router = self.live.router(Box::new(move |plugins, openapi| {
            parts.build(plugins, openapi)
        }));
        crate::http::stale::mark_stale(Arc::clone(&self.env), router)
    }
}
