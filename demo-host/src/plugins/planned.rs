//! The host's implementation of [`host_api::LiveServices`] (host-api
//! 0.1.3): one plugin's environment updates that answer their restart
//! plan.
//!
//! A thin layer over the plugin's scoped services (`plugins::scoped`): the
//! update itself goes through them (same scope, same withdrawal, same
//! shield against panics, same any-thread future); then the plan comes
//! from the runtime environment's change listener (`plugins::changes`),
//! which waits, bounded by the plugin timeout, for the plugins told of
//! the change.

use std::{panic::AssertUnwindSafe, sync::Arc};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{ROption, RResult, RVec},
};
use async_ffi::{FfiFuture, FutureExt as _};
use futures_util::FutureExt as _;
use host_api::{
    ClientInfo, EnvChange, EnvUpdateV2, HostError, LiveServices, LiveServices_TO, LiveServicesBox,
    PluginServices,
};

use crate::{env::runtime::RuntimeEnv, plugins::scoped::ScopedServices};

/// One plugin's live-change services. Cheap to clone.
#[derive(Clone)]
pub(crate) struct PlannedUpdates {
    scoped: ScopedServices,
    env: Arc<RuntimeEnv>,
}

impl PlannedUpdates {
    /// Updates through `scoped`, plans from `env`.
    pub(crate) fn new(scoped: ScopedServices, env: Arc<RuntimeEnv>) -> Self {
        Self { scoped, env }
    }

    /// Boxes the services as the ABI-stable object plugins receive.
    pub(crate) fn into_box(self) -> LiveServicesBox {
        LiveServices_TO::from_value(self, TD_Opaque)
    }
}

impl LiveServices for PlannedUpdates {
    fn value_warnings_v1(
        &self,
        changes: RVec<EnvChange>,
    ) -> RVec<
        abi_stable::std_types::Tuple2<
            abi_stable::std_types::RString,
            abi_stable::std_types::RString,
        >,
    > {
        self.scoped.value_warnings(&changes)
    }

    fn update_env_v2(
        &self,
        changes: RVec<EnvChange>,
        expected_version: ROption<u64>,
        client: ClientInfo,
    ) -> FfiFuture<RResult<EnvUpdateV2, HostError>> {
        // Only the keys are kept; the changes (and their values) move on.
        let keys = changes.iter().map(|c| c.key().to_owned()).collect();
        let update = PluginServices::update_env(&self.scoped, changes, expected_version, client);
        let env = Arc::clone(&self.env);
        let planned = async move {
            let update = update.await.into_result()?;
            let plan = env.restart_plan(update.version, keys).await;
            Ok(EnvUpdateV2 {
                version: update.version,
                plan: plan.into(),
            })
        };
        // A panic while planning must not reach abi_stable's shims: the
        // update may be applied by then, so the error says only that the
        // host failed, not that nothing changed.
        async move {
            AssertUnwindSafe(planned)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| {
                    tracing::error!(
                        service = "update_env_v2",
                        "a host service failed (panicked)"
                    );
                    Err(HostError::new(
                        HostError::INTERNAL,
                        "the host failed while answering the restart plan",
                    ))
                })
                .into()
        }
        .into_ffi()
    }
}
