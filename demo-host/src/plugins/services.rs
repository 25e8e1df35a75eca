//! The host's implementation of [`host_api::HostContext`]: the services lent
//! to each plugin.

use std::sync::Arc;

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RResult, RStr, RString, RVec},
};
use async_ffi::{FfiFuture, FutureExt as _};
use host_api::{
    EnvChange, EnvSnapshot, EnvUpdate, HostContext, HostContext_TO, HostContextBox, HostError,
    LogLevel, RegistrySnapshot,
};

use crate::{env::runtime::RuntimeEnv, registry::Registry};

/// The services one plugin receives. Cheap to clone.
#[derive(Clone)]
pub struct HostServices {
    registry: Arc<Registry>,
    env: Arc<RuntimeEnv>,
    plugin_id: Arc<str>,
}

impl HostServices {
    /// Services for the plugin `plugin_id` (used to label its log lines).
    pub fn new(registry: Arc<Registry>, env: Arc<RuntimeEnv>, plugin_id: &str) -> Self {
        Self {
            registry,
            env,
            plugin_id: plugin_id.into(),
        }
    }

    /// Boxes the services as the ABI-stable trait object plugins receive.
    pub fn into_box(self) -> HostContextBox {
        HostContext_TO::from_value(self, TD_Opaque)
    }
}

impl HostContext for HostServices {
    fn registry(&self) -> RArc<RegistrySnapshot> {
        self.registry.snapshot()
    }

    fn env(&self) -> RArc<EnvSnapshot> {
        self.env.snapshot()
    }

    fn check_env_key(&self, key: RStr<'_>) -> ROption<RString> {
        self.env
            .policy()
            .check(key.as_str())
            .map(RString::from)
            .into()
    }

    fn update_env(
        &self,
        changes: RVec<EnvChange>,
        expected_version: ROption<u64>,
    ) -> FfiFuture<RResult<EnvUpdate, HostError>> {
        let env = Arc::clone(&self.env);
        // The future is polled by the host's runtime (inside the bridge), so
        // the fsync runs on the host's blocking pool, not in the plugin.
        async move {
            tokio::task::spawn_blocking(move || {
                env.update_blocking(&changes, expected_version.into_option())
            })
            .await
            .unwrap_or_else(|_| {
                Err(HostError::new(
                    HostError::INTERNAL,
                    "the environment update task failed",
                ))
            })
            .into()
        }
        .into_ffi()
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        let plugin = &*self.plugin_id;
        let message = message.as_str();
        match level {
            LogLevel::Error => tracing::error!(plugin, "{message}"),
            LogLevel::Warn => tracing::warn!(plugin, "{message}"),
            LogLevel::Info => tracing::info!(plugin, "{message}"),
            LogLevel::Debug => tracing::debug!(plugin, "{message}"),
            LogLevel::Trace => tracing::trace!(plugin, "{message}"),
        }
    }
}
