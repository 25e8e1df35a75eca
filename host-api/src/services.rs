//! The services the host lends to one plugin, scoped to what that plugin
//! declares (since 0.1.2), and the records they carry.
//!
//! [`PluginServices`] is a new, versioned service object rather than new
//! methods on [`crate::HostContext`]: a method added to a trait object
//! changes its layout, and every plugin built against the old layout
//! would be refused. Released types never change. A later release that
//! needs more adds new types beside these (a `KeyRecordV2` returned by a
//! `key_records_v2` of a `PluginServicesV2`, say), delivered through a new
//! root-module entry point, and freezes the previous root module in
//! [`crate::legacy`]. Open-ended values are numbers with named constants
//! ([`KeySource`], [`crate::AuthMethod`]), so a newer host may report a
//! value an older plugin does not know without breaking it.
//!
//! # Scope
//!
//! A plugin's services see the keys it declares in its manifest and the
//! non-sensitive settings any plugin declares; nothing else of the runtime
//! environment. Reading another key through [`PluginServices::env_get`] is
//! an error ([`HostError::UNDECLARED_KEY`]) that the host also logs
//! (never with a value). Managing every secret is a capability: a plugin
//! asks for it in [`ManifestExt::capabilities`] ([`MANAGE_SECRETS`]) and
//! the host grants it only when its config says so
//! (`[plugins.entries."<id>"] manage_secrets = true`; by default only
//! `@milady/plugin-secrets` holds it).

// `#[sabi_trait]` expands to unsafe vtable code; none is written by hand here.
#![allow(unsafe_code)]

use std::fmt;

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RArc, RBox, ROption, RResult, RStr, RString, RVec, Tuple2},
};
use async_ffi::FfiFuture;

use crate::RegistrySnapshot;
use crate::{ClientInfo, EnvChange, EnvSnapshot, EnvSource, EnvUpdate, HostError, LogLevel};

/// The capability to list and change every secret, not only the keys the
/// plugin declares. Asked for in [`ManifestExt::capabilities`], granted by
/// the host's config.
pub const MANAGE_SECRETS: &str = "manage_secrets";

/// What a plugin declares beyond its [`crate::PluginManifest`] (which
/// cannot grow): the capabilities it asks for and the parameters it
/// applies live.
///
/// ```
/// let ext = host_api::ManifestExt::default()
///     .with_capability(host_api::MANAGE_SECRETS)
///     .with_live_key("WEATHER_API_KEY");
/// assert!(ext.asks_for(host_api::MANAGE_SECRETS));
/// assert!(ext.applies_live("WEATHER_API_KEY"));
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Debug, Default, PartialEq, Eq)]
pub struct ManifestExt {
    /// Capabilities asked for, e.g. [`MANAGE_SECRETS`]. The host grants
    /// each only when its config allows it; unknown ones are ignored.
    pub capabilities: RVec<RString>,
    /// Declared parameters whose new value the plugin applies without a
    /// restart (it is told through [`crate::PluginMod::on_env_change`]).
    pub live_keys: RVec<RString>,
}

impl ManifestExt {
    /// Asks for a capability.
    pub fn with_capability(mut self, capability: &str) -> Self {
        self.capabilities.push(capability.into());
        self
    }

    /// Declares that the plugin applies changes of `key` live.
    pub fn with_live_key(mut self, key: &str) -> Self {
        self.live_keys.push(key.into());
        self
    }

    /// Whether the plugin asks for `capability`.
    pub fn asks_for(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c.as_str() == capability)
    }

    /// Whether the plugin applies changes of `key` live.
    pub fn applies_live(&self, key: &str) -> bool {
        self.live_keys.iter().any(|k| k.as_str() == key)
    }
}

/// Where the current value of a key came from.
///
/// Open-ended (room for a secret store and whatever follows): a number
/// with named constants, so a value this crate does not name yet is
/// carried, not refused; [`KeySource::name`] says `"other"` for it.
///
/// ```
/// use host_api::{EnvSource, KeySource};
/// assert_eq!(KeySource::from(EnvSource::ConfigFile), KeySource::CONFIG_FILE);
/// assert_eq!(KeySource::STORE.name(), "store");
/// assert_eq!(KeySource(77).name(), "other");
/// ```
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KeySource(pub u8);

impl KeySource {
    /// The process environment when the host started.
    pub const PROCESS: Self = Self(0);
    /// The `[env]` table of the config file.
    pub const CONFIG_FILE: Self = Self(1);
    /// Written through the API since start-up.
    pub const API: Self = Self(2);
    /// A shared secret store (OpenBao / Vault).
    pub const STORE: Self = Self(3);

    /// A stable lower-case name, as `GET /api/secrets` reports it.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "process",
            1 => "config_file",
            2 => "api",
            3 => "store",
            _ => "other",
        }
    }
}

impl From<EnvSource> for KeySource {
    fn from(source: EnvSource) -> Self {
        match source {
            EnvSource::Process => Self::PROCESS,
            EnvSource::ConfigFile => Self::CONFIG_FILE,
            EnvSource::Api => Self::API,
        }
    }
}

/// What the host knows about one key, without its value (version 1 of the
/// record, from [`PluginServices::key_records_v1`]).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    /// The key.
    pub key: RString,
    /// Where its current value came from.
    pub source: KeySource,
    /// Whether the value is stored encrypted.
    pub encrypted: bool,
    /// Whether the host can read the value; see `unreadable_reason`.
    pub readable: bool,
    /// Why the value cannot be read (e.g. the key file is missing); empty
    /// when it can.
    pub unreadable_reason: RString,
    /// `"hmac-sha256:"` and 16 hex digits of an HMAC of the value under a
    /// key no client sees: equal values, equal fingerprints. Empty when the
    /// value cannot be read.
    pub fingerprint: RString,
    /// When the value last changed (RFC 3339), empty when not known.
    pub updated_at: RString,
    /// The process environment sets the key, over a stored value that it
    /// hides (and will hide again after a restart).
    pub overridden_by_process: bool,
    /// The value comes from a snapshot the host could not refresh from its
    /// store.
    pub stale: bool,
}

/// One key of an audit entry: what happened to it, and the fingerprint of
/// the value written (never the value).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Default)]
pub struct AuditKey {
    /// The key.
    pub key: RString,
    /// `set` or `clear`.
    pub operation: RString,
    /// The fingerprint of the value set; empty for `clear`.
    pub fingerprint: RString,
}

/// One line of the host's audit log (version 1 of the record).
///
/// A plugin fills in what happened; the host adds what it knows better:
/// `time` when empty, and `plugin` always (the caller's id, whatever the
/// plugin wrote).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Default)]
pub struct AuditEntry {
    /// When (RFC 3339, UTC); the host sets it when empty.
    pub time: RString,
    /// The plugin that recorded the entry (set by the host).
    pub plugin: RString,
    /// What was attempted, e.g. `secrets.update`.
    pub action: RString,
    /// `applied`, `rejected` or `failed`.
    pub outcome: RString,
    /// Who asked.
    pub client: ClientInfo,
    /// The keys concerned.
    pub keys: RVec<AuditKey>,
    /// `(item, reason)` pairs, e.g. each refused key and why.
    pub reasons: RVec<Tuple2<RString, RString>>,
    /// Anything else, as a JSON object's text; empty for none.
    pub details_json: RString,
}

/// Which audit entries to return, newest first (version 1 of the query).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Default)]
pub struct AuditQuery {
    /// At most this many entries; 0 means the host's default (100).
    pub limit: u32,
    /// Only entries that concern this key; empty for all.
    pub key: RString,
}

/// What the host tells a plugin after a change of the runtime environment
/// was applied (through [`crate::PluginMod::on_env_change`]).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Default)]
pub struct EnvChangeNotice {
    /// The environment version after the change.
    pub version: u64,
    /// The keys that changed, among those the plugin can see.
    pub keys: RVec<RString>,
    /// Where the change came from, e.g. `api` or `store`.
    pub origin: RString,
}

/// A plugin's answer to an [`EnvChangeNotice`].
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq, Default)]
pub struct ChangeAck {
    /// The changed keys the plugin has applied live; the others take
    /// effect at its next start.
    pub applied_live: RVec<RString>,
}

/// The services the host lends to one plugin (since 0.1.2), scoped to the
/// keys it declares; see the [module notes](self).
///
/// A plugin receives it as a [`PluginServicesBox`] through
/// [`crate::Plugin::init_services`], right before `init`. Every method
/// may be called from any thread; the futures may be polled anywhere.
///
/// ```no_run
/// use host_api::{HostError, PluginServicesBox};
///
/// fn weather_key(services: &PluginServicesBox) -> Result<Option<String>, HostError> {
///     // A declared key: Ok. Any other secret: Err(undeclared_key).
///     let value = services.env_get("WEATHER_API_KEY".into()).into_result()?;
///     Ok(value.into_option().map(|v| v.into_string()))
/// }
/// ```
#[sabi_trait]
pub trait PluginServices: Clone + Send + Sync + 'static {
    /// The id of the plugin these services belong to.
    fn plugin_id(&self) -> RString;

    /// Whether the host granted `capability` (e.g. [`MANAGE_SECRETS`]).
    fn has_capability(&self, capability: RStr<'_>) -> bool;

    /// The current registry snapshot (cheap: a reference-counted pointer).
    fn registry(&self) -> RArc<RegistrySnapshot>;

    /// The runtime environment as this plugin may see it: its declared
    /// keys and every non-sensitive setting (everything, with
    /// [`MANAGE_SECRETS`]). `version` is the whole environment's, the token
    /// for [`PluginServices::update_env`].
    fn env(&self) -> RArc<EnvSnapshot>;

    /// The value of `key`: `Ok(None)` when unset, an error
    /// ([`HostError::UNDECLARED_KEY`]) when the key is outside this
    /// plugin's scope. The host logs a refused read, without any value.
    fn env_get(&self, key: RStr<'_>) -> RResult<ROption<RString>, HostError>;

    /// A record (source, encryption, fingerprint, ...) of every key in
    /// scope that some plugin declares and that has a value; with
    /// [`MANAGE_SECRETS`], of every declared key.
    fn key_records_v1(&self) -> RVec<KeyRecord>;

    /// `Some(reason)` when the host refuses to let this plugin write `key`:
    /// not a valid name, on the host's block list, or outside its scope.
    fn check_env_key(&self, key: RStr<'_>) -> ROption<RString>;

    /// Like [`crate::HostContext::update_env`] (all or nothing, durable,
    /// compare-and-set on `expected_version`), for keys in scope only,
    /// on behalf of `client` (for the audit log).
    fn update_env(
        &self,
        changes: RVec<EnvChange>,
        expected_version: ROption<u64>,
        client: ClientInfo,
    ) -> FfiFuture<RResult<EnvUpdate, HostError>>;

    /// Appends an entry to the host's audit log; resolves once it is on
    /// disk.
    fn audit_append(&self, entry: AuditEntry) -> FfiFuture<RResult<(), HostError>>;

    /// The audit entries matching `query`, newest first.
    fn audit_query(&self, query: AuditQuery) -> FfiFuture<RResult<RVec<AuditEntry>, HostError>>;

    /// Writes one line to the host's log. Never pass a secret value.
    #[sabi(last_prefix_field)]
    fn log(&self, level: LogLevel, message: RStr<'_>);
}

/// The owned, type-erased [`PluginServices`] a plugin receives. It is
/// `Clone + Send + Sync`: keep it in a `static OnceLock`.
pub type PluginServicesBox = PluginServices_TO<RBox<()>>;

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
