//! Mounting one plugin file into a host being assembled: load it, check its
//! routes and OpenAPI document against what is already served, register it
//! and run its `init`. Any failure leaves the host as it was.

use std::{collections::BTreeMap, path::Path, sync::Arc};

use crate::{
    env::runtime::RuntimeEnv,
    http::{
        HOST_ROUTES,
        openapi::{self, MergeError},
    },
    plugins::{
        loader::{self, LoadError, LoadedPlugin},
        services::HostServices,
    },
    registry::{DuplicateId, Registry},
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

/// Loads, checks, registers and initialises one plugin file.
pub(crate) fn mount(
    path: &Path,
    registry: &Arc<Registry>,
    env: &Arc<RuntimeEnv>,
    enabled: &BTreeMap<String, bool>,
    served: Served<'_>,
) -> Result<LoadedPlugin, MountError> {
    let plugin = loader::load_plugin(path)?;
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
    let services = HostServices::new(Arc::clone(registry), Arc::clone(env), &id);
    if let Err(e) = loader::init_plugin(&plugin, services.into_box()) {
        registry.remove_loaded(&id);
        return Err(e.into());
    }
    *served.openapi = candidate;
    Ok(plugin)
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
