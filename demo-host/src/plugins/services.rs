//! The host's implementation of [`host_api::HostContext`]: the services lent
//! to each plugin.
//!
//! Two rules hold for every service, because a plugin calls them through
//! `abi_stable`'s generated shims, which abort the process on a panic:
//!
//! - Nothing unwinds across the boundary: each call runs under
//!   `catch_unwind`; a host bug becomes a [`HostError`] (or, for a service
//!   without an error in its signature, an empty answer or a refusal) and an
//!   error line in the host's log.
//! - Each works from any thread: `update_env`'s blocking work (the durable
//!   config write) is spawned on the plugin runtime (`plugins::runtime`),
//!   and its future only waits for the outcome on a channel, so a plugin may
//!   poll it from the bridge, block on it in `init` (before the host's
//!   server runtime exists) or from a thread of its own.
//!
//! A plugin whose `init` failed or ran out of time is not mounted, but may
//! keep its [`HostContextBox`]: its services are then withdrawn (empty
//! snapshots, refused updates).

use std::{
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use abi_stable::{
    sabi_trait::TD_Opaque,
    std_types::{RArc, ROption, RResult, RStr, RString, RVec},
};
use async_ffi::{FfiFuture, FutureExt as _};
use host_api::{
    ClientInfo, EnvChange, EnvSnapshot, EnvUpdate, HostContext, HostContext_TO, HostContextBox,
    HostError, LogLevel, RegistrySnapshot,
};

use crate::{
    env::{audited::Actor, runtime::RuntimeEnv},
    plugins::{runtime::plugin_runtime, scope::Scope},
    registry::Registry,
};

/// The services one plugin receives. Cheap to clone.
#[derive(Clone)]
pub struct HostServices {
    registry: Arc<Registry>,
    env: Arc<RuntimeEnv>,
    plugin_id: Arc<str>,
    withdrawn: Arc<AtomicBool>,
    /// What the plugin may see and change (`plugins::scope`); `None`: all.
    scope: Option<Arc<Scope>>,
}

/// Withdraws a plugin's services (see the module notes).
#[derive(Clone, Debug)]
pub(crate) struct Withdrawal(Arc<AtomicBool>);

impl Withdrawal {
    /// From now on, the services answer as to an unmounted plugin.
    pub(crate) fn withdraw(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl HostServices {
    /// Services for the plugin `plugin_id` (used to label its log lines).
    pub fn new(registry: Arc<Registry>, env: Arc<RuntimeEnv>, plugin_id: &str) -> Self {
        Self {
            registry,
            env,
            plugin_id: plugin_id.into(),
            withdrawn: Arc::new(AtomicBool::new(false)),
            scope: None,
        }
    }

    /// The same services, limited to what `scope` lets the plugin see and
    /// change.
    pub(crate) fn scoped(mut self, scope: Arc<Scope>) -> Self {
        self.scope = Some(scope);
        self
    }

    /// Whether the services were withdrawn (the plugin is not mounted).
    pub(crate) fn is_withdrawn(&self) -> bool {
        self.withdrawn()
    }

    /// The switch that withdraws these services (and every clone's).
    pub(crate) fn withdrawal(&self) -> Withdrawal {
        Withdrawal(Arc::clone(&self.withdrawn))
    }

    /// Boxes the services as the ABI-stable trait object plugins receive.
    pub fn into_box(self) -> HostContextBox {
        HostContext_TO::from_value(self, TD_Opaque)
    }

    fn withdrawn(&self) -> bool {
        self.withdrawn.load(Ordering::Acquire)
    }

    /// `update_env` on behalf of `client`, who the update's audit line
    /// names with this plugin (`env::audited`). A key outside the scope
    /// refuses the whole update, and the refusal is audited too.
    pub(crate) fn update_env_for(
        &self,
        changes: RVec<EnvChange>,
        expected_version: ROption<u64>,
        client: ClientInfo,
    ) -> UpdateFuture {
        if self.withdrawn() {
            return ready_update(Err(withdrawn_error()));
        }
        let refused = self.scope.as_ref().and_then(|scope| {
            changes
                .iter()
                .filter_map(|c| Some((c.key(), scope.write_refusal(c.key())?)))
                .fold(None, |error: Option<HostError>, (key, reason)| {
                    let error = error.unwrap_or_else(|| {
                        HostError::new(HostError::REJECTED, "keys outside the plugin's scope")
                    });
                    Some(error.with_detail(key, &reason))
                })
        });
        self.shielded(
            "update_env",
            || ready_update(Err(service_failed("update_env"))),
            || {
                let runtime = match plugin_runtime() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        tracing::error!(error = %e, "no runtime for an environment update");
                        return ready_update(Err(service_failed("update_env")));
                    }
                };
                let env = Arc::clone(&self.env);
                let actor = Actor::plugin(&self.plugin_id, client);
                let (tx, rx) = tokio::sync::oneshot::channel();
                // The fsyncs (audit line, config) run on the plugin runtime's
                // blocking pool, never on the thread that polls the future
                // (which may be a runtime worker, or a plugin's own thread
                // with no runtime at all).
                runtime.spawn_blocking(move || {
                    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| match refused {
                        Some(error) => {
                            env.audit_rejected(&actor, &changes, &error)?;
                            Err(error)
                        }
                        None => env.update_as(&changes, expected_version.into_option(), &actor),
                    }))
                    .unwrap_or_else(|_| {
                        tracing::error!(
                            service = "update_env",
                            "a host service failed (panicked); the plugin gets an error"
                        );
                        Err(service_failed("update_env"))
                    });
                    let _ = tx.send(outcome);
                });
                async move {
                    rx.await
                        .unwrap_or_else(|_| Err(service_failed("update_env")))
                        .into()
                }
                .into_ffi()
            },
        )
    }

    /// Runs `service`'s body; a panic is logged and answered by `fallback`.
    fn shielded<T>(
        &self,
        service: &'static str,
        fallback: impl FnOnce() -> T,
        body: impl FnOnce() -> T,
    ) -> T {
        match std::panic::catch_unwind(AssertUnwindSafe(body)) {
            Ok(answer) => answer,
            Err(_) => {
                tracing::error!(
                    plugin = &*self.plugin_id,
                    service,
                    "a host service failed (panicked); the plugin gets an error"
                );
                fallback()
            }
        }
    }
}

fn empty_registry() -> RArc<RegistrySnapshot> {
    RArc::new(RegistrySnapshot {
        version: 0,
        plugins: RVec::new(),
    })
}

fn empty_env() -> RArc<EnvSnapshot> {
    RArc::new(EnvSnapshot {
        version: 0,
        vars: RVec::new(),
    })
}

/// The error of a service that panicked.
fn service_failed(service: &str) -> HostError {
    HostError::new(
        HostError::INTERNAL,
        format!("the host failed in `{service}`; nothing was changed"),
    )
}

/// The error of a service withdrawn from an unmounted plugin.
fn withdrawn_error() -> HostError {
    HostError::new(
        HostError::INTERNAL,
        "the plugin is not mounted: the host withdrew its services",
    )
}

type UpdateFuture = FfiFuture<RResult<EnvUpdate, HostError>>;

fn ready_update(outcome: Result<EnvUpdate, HostError>) -> UpdateFuture {
    let outcome: RResult<EnvUpdate, HostError> = outcome.into();
    async move { outcome }.into_ffi()
}

impl HostContext for HostServices {
    fn registry(&self) -> RArc<RegistrySnapshot> {
        if self.withdrawn() {
            return empty_registry();
        }
        self.shielded("registry", empty_registry, || self.registry.snapshot())
    }

    fn env(&self) -> RArc<EnvSnapshot> {
        if self.withdrawn() {
            return empty_env();
        }
        self.shielded("env", empty_env, || match &self.scope {
            Some(scope) => scope.filter(self.env.snapshot()),
            None => self.env.snapshot(),
        })
    }

    fn check_env_key(&self, key: RStr<'_>) -> ROption<RString> {
        if self.withdrawn() {
            return ROption::RSome(withdrawn_error().message);
        }
        self.shielded(
            "check_env_key",
            || ROption::RSome(RString::from("the host could not check this key")),
            || {
                let key = key.as_str();
                self.env
                    .policy()
                    .check(key)
                    .map(str::to_owned)
                    .or_else(|| self.scope.as_ref()?.write_refusal(key))
                    .map(RString::from)
                    .into()
            },
        )
    }

    fn update_env(
        &self,
        changes: RVec<EnvChange>,
        expected_version: ROption<u64>,
    ) -> FfiFuture<RResult<EnvUpdate, HostError>> {
        self.update_env_for(changes, expected_version, ClientInfo::default())
    }

    fn log(&self, level: LogLevel, message: RStr<'_>) {
        self.shielded(
            "log",
            || (),
            || {
                let plugin = &*self.plugin_id;
                let message = message.as_str();
                match level {
                    LogLevel::Error => tracing::error!(plugin, "{message}"),
                    LogLevel::Warn => tracing::warn!(plugin, "{message}"),
                    LogLevel::Info => tracing::info!(plugin, "{message}"),
                    LogLevel::Debug => tracing::debug!(plugin, "{message}"),
                    LogLevel::Trace => tracing::trace!(plugin, "{message}"),
                }
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use std::{
        future::Future,
        sync::Arc,
        task::{Context, Poll, Wake, Waker},
        time::Duration,
    };

    use abi_stable::std_types::{ROption, RVec};
    use host_api::{EnvChange, HostError};

    use super::*;
    use crate::{env::key_policy::KeyPolicy, store::config_file::ConfigStore};

    /// A plain-thread executor, as a plugin without a runtime has.
    fn block_on<F: Future>(future: F) -> F::Output {
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(future);
        loop {
            if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }

    fn services(dir: &tempfile::TempDir) -> HostServices {
        let config = Arc::new(ConfigStore::new(dir.path().join("milady.toml")));
        let env = Arc::new(RuntimeEnv::new(
            Vec::<(String, String)>::new(),
            &std::collections::BTreeMap::new(),
            &[],
            Arc::clone(&config),
            KeyPolicy::new(Vec::<String>::new()),
        ));
        let registry = Arc::new(Registry::new(
            Vec::new(),
            &std::collections::BTreeMap::new(),
        ));
        HostServices::new(registry, env, "@t/p")
    }

    #[test]
    fn update_env_works_from_a_thread_without_any_runtime() {
        let dir = tempfile::tempdir().expect("tempdir");
        let host = services(&dir).into_box();
        let reader = host.clone();
        let outcome = std::thread::spawn(move || {
            block_on(host.update_env(
                RVec::from(vec![EnvChange::set("FROM_A_THREAD", "yes")]),
                ROption::RNone,
            ))
        })
        .join()
        .expect("thread");
        assert!(outcome.is_ok(), "{outcome:?}");
        let env = reader.env();
        assert_eq!(
            env.get("FROM_A_THREAD").map(|v| v.value.as_str()),
            Some("yes")
        );
        let text = std::fs::read_to_string(dir.path().join("milady.toml")).expect("written");
        assert!(text.contains("FROM_A_THREAD"));
    }

    #[test]
    fn a_panicking_service_body_becomes_its_fallback() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = services(&dir);
        let answer = s.shielded(
            "test",
            || "fallback",
            || -> &str { std::panic::resume_unwind(Box::new("host bug")) },
        );
        assert_eq!(answer, "fallback");
    }

    #[test]
    fn withdrawn_services_answer_as_to_an_unmounted_plugin() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = services(&dir);
        let withdrawal = s.withdrawal();
        let host = s.into_box();
        assert!(host.env().version > 0);
        withdrawal.withdraw();
        assert_eq!(host.env().version, 0);
        assert!(host.env().vars.is_empty());
        assert!(host.registry().plugins.is_empty());
        assert!(host.check_env_key("ANY_KEY".into()).is_some());
        let outcome = block_on(host.update_env(
            RVec::from(vec![EnvChange::set("AFTER", "x")]),
            ROption::RNone,
        ));
        let err: HostError = outcome.into_result().expect_err("refused");
        assert!(err.message.contains("not mounted"), "{err}");
        assert!(!dir.path().join("milady.toml").exists(), "nothing written");
    }
}
