//! Mounting one loaded plugin into a host being assembled: check its routes
//! and OpenAPI document against what is already served, register it and run
//! its `init` (on a thread of its own, within the plugin timeout). Any
//! failure leaves the host as it was, and withdraws the services the plugin
//! was lent.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use crate::{
    env::{fingerprint::Fingerprinter, runtime::RuntimeEnv},
    http::{
        HOST_ROUTES,
        openapi::{self, MergeError},
    },
    plugins::{
        deadline::{Overrun, run_within},
        loader::{LoadError, LoadedPlugin},
        planned::PlannedUpdates,
        scope::{self, Scope},
        scoped::ScopedServices,
        services::HostServices,
    },
    registry::{DuplicateId, Registry},
    store::audit::AuditLog,
};

/// Why a plugin file was not mounted. The message names the plugin (or the
/// loader's reason) and never any file content.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The file is not a plugin this host can load, or an entry point failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A route prefix overlaps one the host or another plugin serves.
    #[error("plugin `{plugin}`: route prefix `{prefix}` collides with a route already served")]
    RouteTaken {
        /// The plugin id.
        plugin: String,
        /// The colliding prefix.
        prefix: String,
    },
    /// Its OpenAPI document collides with the merged document.
    #[error("plugin `{plugin}`: its OpenAPI document collides: {source}")]
    OpenApi {
        /// The plugin id.
        plugin: String,
        /// What collided.
        #[source]
        source: MergeError,
    },
    /// Another loaded plugin has the same id.
    #[error("plugin `{plugin}`: {source}")]
    Duplicate {
        /// The plugin id.
        plugin: String,
        /// The registry's refusal.
        #[source]
        source: DuplicateId,
    },
}

/// What is already served, which a new plugin must not collide with.
pub(crate) struct Served<'a> {
    /// Route prefixes of the plugins mounted so far.
    pub(crate) routes: Vec<&'a str>,
    /// The merged OpenAPI document so far; extended on success.
    pub(crate) openapi: &'a mut serde_json::Value,
}

/// Checks, registers and initialises one loaded plugin; its `init` may take
/// at most `init_timeout`.
pub(crate) fn mount(
    plugin: LoadedPlugin,
    registry: &Arc<Registry>,
    env: &Arc<RuntimeEnv>,
    enabled: &BTreeMap<String, bool>,
    served: Served<'_>,
    init_timeout: Duration,
) -> Result<LoadedPlugin, MountError> {
    let id = plugin.manifest.id.to_string();
    for prefix in &plugin.manifest.routes {
        let clash = HOST_ROUTES.iter().any(|h| overlaps(h, prefix))
            || served.routes.iter().any(|r| overlaps(r, prefix));
        if clash {
            return Err(MountError::RouteTaken {
                plugin: id,
                prefix: prefix.to_string(),
            });
        }
    }
    let mut candidate = served.openapi.clone();
    openapi::merge(&mut candidate, &plugin.openapi).map_err(|source| MountError::OpenApi {
        plugin: id.clone(),
        source,
    })?;
    registry
        .add_loaded(&plugin.manifest, enabled)
        .map_err(|source| MountError::Duplicate {
            plugin: id.clone(),
            source,
        })?;
    // Each plugin sees only what it declares, unless it is granted
    // `manage_secrets` (`plugins::scope`).
    let manage_secrets = scope::grants_manage_secrets(
        &id,
        plugin
            .manifest_ext
            .as_ref()
            .map(|ext| ext.asks_for(host_api::MANAGE_SECRETS)),
        registry.manage_secrets_grants(),
    );
    let Lent {
        services,
        scoped,
        planned,
    } = lend(&plugin.manifest, manage_secrets, registry, env);
    let withdrawal = services.withdrawal();
    let init = plugin.module.init();
    let init_services = plugin.module.init_services();
    let init_live = plugin.module.init_live();
    let outcome = run_within("init", init_timeout, move || {
        // The live-change services (since host-api 0.1.3), then the scoped
        // services (0.1.2), right before `init`, within the same deadline.
        if let Some(init_live) = init_live {
            init_live(planned.into_box()).into_result()?;
        }
        if let Some(init_services) = init_services {
            init_services(scoped.into_box()).into_result()?;
        }
        init(services.into_box()).into_result()
    });
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(error)) => Some(LoadError::Entry {
            plugin: id.clone(),
            entry: "init",
            error: error.to_string(),
        }),
        Err(Overrun::TimedOut) => Some(LoadError::TimedOut {
            plugin: id.clone(),
            entry: "init",
            seconds: init_timeout.as_secs_f64(),
        }),
        Err(other) => Some(LoadError::Entry {
            plugin: id.clone(),
            entry: "init",
            error: other.to_string(),
        }),
    };
    if let Some(e) = failure {
        withdrawal.withdraw();
        registry.remove_loaded(&id);
        return Err(e.into());
    }
    *served.openapi = candidate;
    Ok(plugin)
}

/// The services lent to one plugin, each scoped to what it may see.
pub(crate) struct Lent {
    /// `init`'s services (host-api 0.1.0).
    pub(crate) services: HostServices,
    /// `init_services`' (0.1.2).
    pub(crate) scoped: ScopedServices,
    /// `init_live`'s (0.1.3).
    pub(crate) planned: PlannedUpdates,
}

/// The services of the plugin `manifest` describes, over `registry` and
/// `env` (also lent to natively linked handlers by the benchmark).
pub(crate) fn lend(
    manifest: &host_api::PluginManifest,
    manage_secrets: bool,
    registry: &Arc<Registry>,
    env: &Arc<RuntimeEnv>,
) -> Lent {
    let scope = Arc::new(Scope::new(manifest, manage_secrets, Arc::clone(registry)));
    let services = HostServices::new(Arc::clone(registry), Arc::clone(env), manifest.id.as_str())
        .scoped(Arc::clone(&scope));
    let scoped = ScopedServices::new(
        services.clone(),
        scope,
        Arc::clone(env),
        AuditLog::shared_for(env.config_path()),
        Fingerprinter::process(),
    );
    let planned = PlannedUpdates::new(scoped.clone(), Arc::clone(env));
    Lent {
        services,
        scoped,
        planned,
    }
}

/// Whether two route prefixes would capture the same requests.
pub(crate) fn overlaps(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || x.starts_with(&format!("{y}/"));
    under(a, b) || under(b, a)
}

#[cfg(test)]
mod tests {
    use super::overlaps;

    #[test]
    fn prefixes_overlap_on_whole_segments_only() {
        assert!(overlaps("/api/secrets", "/api/secrets"));
        assert!(overlaps("/api/secrets", "/api/secrets/audit"));
        assert!(overlaps("/api", "/api/secrets"));
        assert!(!overlaps("/api/secrets", "/api/secretsx"));
        assert!(!overlaps("/api/a", "/api/b"));
    }
}
