//! The services the host lends to a plugin.

// `#[sabi_trait]` expands to unsafe vtable code; none is written by hand here.
#![allow(unsafe_code)]

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RArc, RBox, ROption, RResult, RStr, RString, RVec},
};
use async_ffi::FfiFuture;

use crate::{HostError, ParamSpec};

/// One plugin known to the host's registry: a catalog entry or a loaded library.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PluginEntry {
    /// Plugin id (a catalog plugin's npm package name, e.g. `@elizaos/plugin-openai`).
    pub id: RString,
    /// Display name.
    pub name: RString,
    /// Whether the plugin is enabled right now.
    pub enabled: bool,
    /// `true` for a dynamically loaded library, `false` for a catalog entry.
    pub loaded: bool,
    /// Parameters the plugin declares.
    pub parameters: RVec<ParamSpec>,
}

/// An immutable view of the registry. The host builds a new one on every
/// change and bumps `version`, so a plugin may cache whatever it derives from
/// a snapshot until the version moves.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct RegistrySnapshot {
    /// Bumped on every change (a toggle, a plugin loaded).
    pub version: u64,
    /// Every plugin, in a stable order (catalog order, then loaded plugins).
    pub plugins: RVec<PluginEntry>,
}

/// Where the current value of a runtime variable came from.
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnvSource {
    /// The process environment when the host started.
    Process,
    /// The `[env]` table of the config file.
    ConfigFile,
    /// Written through a host service (e.g. `PUT /api/secrets`) since start-up.
    Api,
}

/// One variable of the runtime environment.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct EnvVar {
    /// Variable name.
    pub key: RString,
    /// Current value (never empty: a cleared variable is absent).
    pub value: RString,
    /// Where the value came from.
    pub source: EnvSource,
}

// Values are secrets: Debug shows the key and source only.
impl std::fmt::Debug for EnvVar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvVar")
            .field("key", &self.key)
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Snapshot versions at or above this come from a store shared by a fleet
/// of hosts (SPEC §9): the same version names the same state on every host
/// and across restarts, so a plugin's `ETag` built from it needs no
/// per-process part.
pub const SHARED_VERSION_BASE: u64 = 1 << 48;

/// An immutable view of the runtime environment, sorted by key.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct EnvSnapshot {
    /// Bumped on every applied update; the host's compare-and-set token.
    pub version: u64,
    /// Variables sorted by key, no duplicates.
    pub vars: RVec<EnvVar>,
}

impl EnvSnapshot {
    /// Looks a variable up by name.
    ///
    /// ```
    /// use host_api::{EnvSnapshot, EnvSource, EnvVar};
    /// let snap = EnvSnapshot {
    ///     version: 1,
    ///     vars: vec![EnvVar { key: "A".into(), value: "1".into(), source: EnvSource::Api }].into(),
    /// };
    /// assert_eq!(snap.get("A").map(|v| v.value.as_str()), Some("1"));
    /// assert!(snap.get("B").is_none());
    /// ```
    pub fn get(&self, key: &str) -> Option<&EnvVar> {
        self.vars
            .binary_search_by(|v| v.key.as_str().cmp(key))
            .ok()
            .map(|i| &self.vars[i])
    }
}

/// One change of an environment update: `Some(value)` sets, `None` clears.
#[repr(C)]
#[derive(StableAbi, Clone, PartialEq, Eq)]
pub struct EnvChange {
    /// Variable name.
    pub key: RString,
    /// New value, or `None` to remove the variable.
    pub value: ROption<RString>,
}

impl EnvChange {
    /// A change that sets `key` to `value`.
    ///
    /// ```
    /// let c = host_api::EnvChange::set("A", "1");
    /// assert_eq!((c.key(), c.value()), ("A", Some("1")));
    /// assert_eq!(host_api::EnvChange::clear("A").value(), None);
    /// ```
    pub fn set(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: RString::from(key.into()),
            value: ROption::RSome(RString::from(value.into())),
        }
    }

    /// A change that removes `key`.
    pub fn clear(key: impl Into<String>) -> Self {
        Self {
            key: RString::from(key.into()),
            value: ROption::RNone,
        }
    }

    /// The variable name.
    pub fn key(&self) -> &str {
        self.key.as_str()
    }

    /// The new value, or `None` when the change clears the key.
    pub fn value(&self) -> Option<&str> {
        self.value.as_ref().map(RString::as_str).into_option()
    }
}

impl std::fmt::Debug for EnvChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnvChange")
            .field("key", &self.key)
            .field("clears", &self.value.is_none())
            .finish_non_exhaustive()
    }
}

/// The outcome of a successful environment update.
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct EnvUpdate {
    /// The environment version after the update.
    pub version: u64,
}

/// Severity of a log line sent through [`HostContext::log`].
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something looks wrong.
    Warn,
    /// Normal operation.
    Info,
    /// Detail for developers.
    Debug,
    /// Very verbose detail.
    Trace,
}

/// The services the host lends to a plugin.
///
/// A plugin must not keep its own copy of configuration or environment: the
/// host owns both, and this trait is the only way to read or change them
/// (each library links its own `std`, so `std::env` in a plugin would be a
/// different, unsynchronised copy).
///
/// A plugin receives it as a [`HostContextBox`] in [`crate::Plugin::init`]
/// and calls these methods on the box:
///
/// ```no_run
/// use host_api::{EnvChange, HostContextBox, HostError, LogLevel};
/// use host_api::abi_stable::std_types::{RNone, RSome};
///
/// async fn rotate(host: &HostContextBox) -> Result<u64, HostError> {
///     let env = host.env();
///     if let Some(reason) = host.check_env_key("WEATHER_API_KEY".into()).into_option() {
///         return Err(HostError::new(HostError::REJECTED, reason.as_str()));
///     }
///     let changes = vec![
///         EnvChange { key: "WEATHER_API_KEY".into(), value: RSome("new-key".into()) },
///         EnvChange { key: "OLD_WEATHER_KEY".into(), value: RNone },
///     ];
///     // All or nothing, and only if nobody changed the environment since `env`.
///     let update = host.update_env(changes.into(), RSome(env.version)).await.into_result()?;
///     host.log(LogLevel::Info, "weather key rotated".into()); // never the value
///     Ok(update.version)
/// }
/// ```
#[sabi_trait]
pub trait HostContext: Clone + Send + Sync + 'static {
    /// The current registry snapshot (cheap: a reference-counted pointer):
    /// every catalog and loaded plugin, its enabled state and parameters.
    fn registry(&self) -> RArc<RegistrySnapshot>;

    /// The current runtime environment (cheap: a reference-counted pointer).
    /// Look a variable up with [`EnvSnapshot::get`]; its `version` is the
    /// token to pass to [`HostContext::update_env`].
    fn env(&self) -> RArc<EnvSnapshot>;

    /// `Some(reason)` when the host refuses to let the API write `key`
    /// (not a valid variable name, or on the host's block list).
    fn check_env_key(&self, key: RStr<'_>) -> ROption<RString>;

    /// Applies all `changes` or none of them: persists them to the config
    /// file (durably) and then to the runtime environment, before the future
    /// resolves. With `expected_version`, fails with [`HostError::CONFLICT`]
    /// unless the environment is still at that version (checked under the
    /// host's write lock). Keys refused by [`HostContext::check_env_key`]
    /// fail the whole update with [`HostError::REJECTED`].
    fn update_env(
        &self,
        changes: RVec<EnvChange>,
        expected_version: ROption<u64>,
    ) -> FfiFuture<RResult<EnvUpdate, HostError>>;

    /// Writes one line to the host's log. Never pass a secret value.
    #[sabi(last_prefix_field)]
    fn log(&self, level: LogLevel, message: RStr<'_>);
}

/// The owned, type-erased host context a plugin receives in `init`.
///
/// It is `Clone + Send + Sync`: keep it in a `static OnceLock` and use it
/// from every request. A host (or a test) makes one from any type that
/// implements [`HostContext`]:
///
/// ```
/// use host_api::{HostContext_TO, HostContextBox};
/// use host_api::abi_stable::sabi_trait::TD_Opaque;
/// # use host_api::*;
/// # use host_api::abi_stable::std_types::*;
/// # #[derive(Clone)] struct MyServices;
/// # impl HostContext for MyServices {
/// #     fn registry(&self) -> RArc<RegistrySnapshot> { RArc::new(RegistrySnapshot { version: 0, plugins: RVec::new() }) }
/// #     fn env(&self) -> RArc<EnvSnapshot> { RArc::new(EnvSnapshot { version: 0, vars: RVec::new() }) }
/// #     fn check_env_key(&self, _: RStr<'_>) -> ROption<RString> { RNone }
/// #     fn update_env(&self, _: RVec<EnvChange>, _: ROption<u64>) -> FfiFuture<RResult<EnvUpdate, HostError>> {
/// #         use host_api::async_ffi::FutureExt as _;
/// #         async { ROk(EnvUpdate { version: 1 }) }.into_ffi()
/// #     }
/// #     fn log(&self, _: LogLevel, _: RStr<'_>) {}
/// # }
/// let host: HostContextBox = HostContext_TO::from_value(MyServices, TD_Opaque);
/// assert_eq!(host.env().version, 0);
/// ```
pub type HostContextBox = HostContext_TO<RBox<()>>;
