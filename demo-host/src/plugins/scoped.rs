//! The host's implementation of [`host_api::PluginServices`] (host-api
//! 0.1.2): one plugin's services, scoped to the keys it declares (see
//! `plugins::scope`), with per-key records, the audit log and reads that
//! fail loudly.
//!
//! It is a thin layer over the plugin's [`HostServices`] (the
//! `HostContext` of older interfaces, scoped the same way), so both keep
//! one behaviour: the same scope, the same withdrawal when the plugin is
//! not mounted, the same shield against panics (a panic must never reach
//! `abi_stable`'s shims, which would abort the process), the same
//! any-thread futures.

use std::{
    collections::HashSet,
    panic::AssertUnwindSafe,
    sync::{Arc, Mutex, PoisonError},
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RResult, RStr, RString, RVec},
};
use async_ffi::{FfiFuture, FutureExt as _};
use host_api::{
    AuditEntry, AuditQuery, ClientInfo, EnvChange, EnvSnapshot, EnvUpdate, HostContext, HostError,
    KeyRecord, KeySource, LogLevel, MANAGE_SECRETS, PluginServices, PluginServices_TO,
    PluginServicesBox, RegistrySnapshot,
};

use crate::{
    env::{
        at_rest::AtRest,
        fingerprint::{self, Fingerprinter},
        runtime::{KeyProvenance, RuntimeEnv},
    },
    plugins::{runtime::plugin_runtime, scope::Scope, services::HostServices},
    store::audit::AuditLog,
};

/// One plugin's scoped services. Cheap to clone.
#[derive(Clone)]
pub(crate) struct ScopedServices {
    inner: HostServices,
    scope: Arc<Scope>,
    env: Arc<RuntimeEnv>,
    audit: Arc<AuditLog>,
    fingerprints: Arc<Fingerprinter>,
    /// Every key the registry declares, by registry version: gathered once
    /// per version, not once per key-record listing.
    registry_keys: Arc<Mutex<Option<RegistryKeys>>>,
}

/// The keys of one registry version.
type RegistryKeys = (u64, Arc<HashSet<String>>);

impl ScopedServices {
    /// The services of the plugin `inner` serves (already scoped with
    /// `scope`).
    pub(crate) fn new(
        inner: HostServices,
        scope: Arc<Scope>,
        env: Arc<RuntimeEnv>,
        audit: Arc<AuditLog>,
        fingerprints: Arc<Fingerprinter>,
    ) -> Self {
        Self {
            inner,
            scope,
            env,
            audit,
            fingerprints,
            registry_keys: Arc::default(),
        }
    }

    /// Every key `registry` declares (cached per registry version).
    fn registry_keys(&self, registry: &host_api::RegistrySnapshot) -> Arc<HashSet<String>> {
        let mut cached = self
            .registry_keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((version, keys)) = &*cached
            && *version == registry.version
        {
            return Arc::clone(keys);
        }
        let keys: Arc<HashSet<String>> = Arc::new(
            registry
                .plugins
                .iter()
                .flat_map(|p| p.parameters.iter().map(|q| q.key.to_string()))
                .collect(),
        );
        *cached = Some((registry.version, Arc::clone(&keys)));
        keys
    }

    /// The warnings about writing `changes` (SPEC §8; served through the
    /// live services, `plugins::planned`): only for keys this plugin may
    /// write.
    pub(crate) fn value_warnings(
        &self,
        changes: &[EnvChange],
    ) -> RVec<abi_stable::std_types::Tuple2<RString, RString>> {
        self.shielded("value_warnings_v1", RVec::new, || {
            let in_scope: Vec<EnvChange> = changes
                .iter()
                .filter(|c| self.scope.write_refusal(c.key()).is_none())
                .cloned()
                .collect();
            crate::knowing::value_warnings(&self.env, &in_scope)
                .into_iter()
                .map(|(key, message)| abi_stable::std_types::Tuple2(key.into(), message.into()))
                .collect()
        })
    }

    /// Boxes the services as the ABI-stable object plugins receive.
    pub(crate) fn into_box(self) -> PluginServicesBox {
        PluginServices_TO::from_value(self, TD_Opaque)
    }

    /// Runs `body`; a panic is logged and answered by `fallback`.
    fn shielded<T>(
        &self,
        service: &'static str,
        fallback: impl FnOnce() -> T,
        body: impl FnOnce() -> T,
    ) -> T {
        std::panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or_else(|_| {
            tracing::error!(
                plugin = self.scope.plugin_id(),
                service,
                "a host service failed (panicked); the plugin gets an error"
            );
            fallback()
        })
    }

    /// Runs blocking `work` on the plugin runtime's blocking pool; the
    /// future only waits for its outcome, so it may be polled anywhere.
    fn blocking<T: Send + 'static>(
        &self,
        service: &'static str,
        work: impl FnOnce() -> Result<T, HostError> + Send + 'static,
    ) -> FfiFuture<RResult<T, HostError>> {
        if self.inner.is_withdrawn() {
            return ready(Err(withdrawn()));
        }
        let runtime = match plugin_runtime() {
            Ok(runtime) => runtime,
            Err(e) => {
                tracing::error!(error = %e, service, "no runtime for a host service");
                return ready(Err(failed(service)));
            }
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        runtime.spawn_blocking(move || {
            let outcome = std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
                tracing::error!(service, "a host service failed (panicked)");
                Err(failed(service))
            });
            let _ = tx.send(outcome);
        });
        async move { rx.await.unwrap_or_else(|_| Err(failed(service))).into() }.into_ffi()
    }

    fn record(
        var: &host_api::EnvVar,
        at_rest: Option<&AtRest>,
        provenance: KeyProvenance,
        fingerprint: String,
    ) -> KeyRecord {
        KeyRecord {
            key: var.key.clone(),
            source: KeySource::from(var.source),
            // How the config file stores the key (the value itself may
            // come from the process environment over it).
            encrypted: at_rest.is_some_and(|a| a.encrypted),
            readable: true,
            unreadable_reason: RString::new(),
            fingerprint: fingerprint.into(),
            updated_at: provenance
                .updated_at
                .map(fingerprint::rfc3339)
                .unwrap_or_default()
                .into(),
            overridden_by_process: provenance.overridden_by_process,
            stale: false,
        }
    }
}

fn ready<T: Send + 'static>(outcome: Result<T, HostError>) -> FfiFuture<RResult<T, HostError>> {
    let outcome: RResult<T, HostError> = outcome.into();
    async move { outcome }.into_ffi()
}

fn failed(service: &str) -> HostError {
    HostError::new(
        HostError::INTERNAL,
        format!("the host failed in `{service}`; nothing was changed"),
    )
}

fn withdrawn() -> HostError {
    HostError::new(
        HostError::INTERNAL,
        "the plugin is not mounted: the host withdrew its services",
    )
}

fn audit_failed(e: &crate::store::audit::AuditError) -> HostError {
    // The path is for the log, not for the plugin's client.
    tracing::error!(error = %e, "audit log");
    HostError::new(HostError::STORAGE, e.client_message())
}

impl PluginServices for ScopedServices {
    fn plugin_id(&self) -> RString {
        self.scope.plugin_id().into()
    }

    fn has_capability(&self, capability: RStr<'_>) -> bool {
        capability.as_str() == MANAGE_SECRETS && self.scope.manages_secrets()
    }

    fn registry(&self) -> RArc<RegistrySnapshot> {
        HostContext::registry(&self.inner)
    }

    fn env(&self) -> RArc<EnvSnapshot> {
        HostContext::env(&self.inner)
    }

    fn env_get(&self, key: RStr<'_>) -> RResult<ROption<RString>, HostError> {
        self.shielded(
            "env_get",
            || RResult::RErr(failed("env_get")),
            || {
                let key = key.as_str();
                if !self.scope.allows(key) {
                    tracing::warn!(
                        plugin = self.scope.plugin_id(),
                        key = %crate::text::escape_controls(key),
                        "refused a plugin's read of a key it does not declare"
                    );
                    return RResult::RErr(
                        HostError::new(
                            HostError::UNDECLARED_KEY,
                            format!(
                                "plugin `{}` does not declare this key, so it may not read it",
                                self.scope.plugin_id()
                            ),
                        )
                        .with_detail(key, "not declared by this plugin"),
                    );
                }
                let env = HostContext::env(&self.inner);
                RResult::ROk(env.get(key).map(|v| v.value.clone()).into())
            },
        )
    }

    fn key_records_v1(&self) -> RVec<KeyRecord> {
        self.shielded("key_records_v1", RVec::new, || {
            let env = HostContext::env(&self.inner);
            let registry = HostContext::registry(&self.inner);
            // Every key of the registry, gathered once per registry
            // version: a lookup per key stays linear in the registry's
            // size, not quadratic.
            let every_key = self
                .scope
                .manages_secrets()
                .then(|| self.registry_keys(&registry));
            let declared = |key: &str| match &every_key {
                Some(keys) => keys.contains(key),
                None => self.scope.declares(key),
            };
            let at_rest = self.env.at_rest().all();
            // One lock each for every key's provenance and fingerprint.
            let mut records: RVec<KeyRecord> = self.env.with_provenance(|provenance| {
                self.fingerprints.with_memo(|fingerprint| {
                    env.vars
                        .iter()
                        .filter(|v| declared(v.key.as_str()))
                        .map(|v| {
                            let key = v.key.as_str();
                            Self::record(
                                v,
                                at_rest.get(key),
                                provenance(key),
                                fingerprint(key, v.value.as_str()),
                            )
                        })
                        .collect()
                })
            });
            // Stored values that could not be read are in no snapshot:
            // they are recorded with the reason, without a value.
            for (key, stored) in at_rest.iter() {
                if let Some(reason) = &stored.unreadable
                    && env.get(key).is_none()
                    && declared(key)
                {
                    records.push(KeyRecord {
                        key: key.as_str().into(),
                        source: KeySource::CONFIG_FILE,
                        encrypted: stored.encrypted,
                        readable: false,
                        unreadable_reason: reason.as_str().into(),
                        fingerprint: RString::new(),
                        updated_at: RString::new(),
                        overridden_by_process: false,
                        stale: false,
                    });
                }
            }
            records
        })
    }

    fn check_env_key(&self, key: RStr<'_>) -> ROption<RString> {
        HostContext::check_env_key(&self.inner, key)
    }

    fn update_env(
        &self,
        changes: RVec<EnvChange>,
        expected_version: ROption<u64>,
        client: ClientInfo,
    ) -> FfiFuture<RResult<EnvUpdate, HostError>> {
        self.shielded(
            "update_env",
            || ready(Err(failed("update_env"))),
            || {
                tracing::info!(
                    plugin = self.scope.plugin_id(),
                    peer = %client.peer,
                    auth = client.auth.name(),
                    keys = changes.len(),
                    "environment update requested"
                );
                // The host audits the update with this client
                // (`env::audited`).
                self.inner.update_env_for(changes, expected_version, client)
            },
        )
    }

    fn audit_append(&self, entry: AuditEntry) -> FfiFuture<RResult<(), HostError>> {
        self.shielded(
            "audit_append",
            || ready(Err(failed("audit_append"))),
            || {
                let mut entry = entry;
                // The host knows better who is writing, and when.
                entry.plugin = self.scope.plugin_id().into();
                if entry.time.is_empty() {
                    entry.time = fingerprint::rfc3339(std::time::SystemTime::now()).into();
                }
                let audit = Arc::clone(&self.audit);
                self.blocking("audit_append", move || {
                    audit.append(&entry).map_err(|e| audit_failed(&e))
                })
            },
        )
    }

    fn audit_query(&self, query: AuditQuery) -> FfiFuture<RResult<RVec<AuditEntry>, HostError>> {
        self.shielded(
            "audit_query",
            || ready(Err(failed("audit_query"))),
            || {
                let audit = Arc::clone(&self.audit);
                self.blocking("audit_query", move || {
                    audit
                        .query(&query)
                        .map(RVec::from)
                        .map_err(|e| audit_failed(&e))
                })
            },
        )
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        HostContext::log(&self.inner, level, message)
    }
}
