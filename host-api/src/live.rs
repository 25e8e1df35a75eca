//! Live changes (since 0.1.3): environment updates that answer their
//! restart plan.
//!
//! After every applied change the host tells each enabled plugin that
//! uses a changed key, through [`crate::PluginMod::on_env_change`]; a
//! plugin that declares a key live ([`crate::ManifestExt::live_keys`])
//! applies the new value and acknowledges it ([`crate::ChangeAck`]). A
//! plugin that writes the environment for someone (the secrets API) wants
//! to know the outcome: which enabled plugins took the change live, which
//! need a restart. [`LiveServices::update_env_v2`] answers it.
//!
//! [`LiveServices`] is a new service object, handed over by a new
//! root-module entry point, [`crate::PluginMod::init_live`], rather than a
//! method added to [`crate::PluginServices`]: a trait object's layout is
//! part of every root module that names it, and a plugin built against
//! 0.1.2 would be refused. The 0.1.2 root module is frozen in
//! [`crate::legacy`].

// `#[sabi_trait]` expands to unsafe vtable code; none is written by hand here.
#![allow(unsafe_code)]

use std::fmt;

use abi_stable::{
    StableAbi, sabi_trait,
    std_types::{RBox, ROption, RResult, RString, RVec, Tuple2},
};
use async_ffi::FfiFuture;

use crate::{ClientInfo, EnvChange, HostError};

/// How an enabled plugin takes an applied change of keys it uses: live
/// (it applied the change and acknowledged it in time) or at its next
/// start.
///
/// Open-ended like [`crate::KeySource`]: a number with named constants, so
/// a newer host may report a mode an older plugin does not name.
///
/// ```
/// use host_api::ApplyMode;
/// assert_eq!(ApplyMode::LIVE.name(), "live");
/// assert_eq!(ApplyMode::RESTART.name(), "restart");
/// assert_eq!(ApplyMode(9).name(), "other");
/// ```
#[repr(transparent)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApplyMode(pub u8);

impl ApplyMode {
    /// The plugin applied every changed key it uses without a restart.
    pub const LIVE: Self = Self(0);
    /// The plugin needs a restart to use the new values.
    pub const RESTART: Self = Self(1);

    /// A stable lower-case name, as `restartPlan` reports it.
    pub const fn name(self) -> &'static str {
        match self.0 {
            0 => "live",
            1 => "restart",
            _ => "other",
        }
    }
}

impl fmt::Display for ApplyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One entry of a restart plan: an enabled plugin that uses a changed key,
/// and how it takes the change.
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct PlanEntry {
    /// The plugin id.
    pub plugin: RString,
    /// Live, or at its next start.
    pub mode: ApplyMode,
}

/// The outcome of [`LiveServices::update_env_v2`]: the new version and the
/// restart plan of the change.
///
/// ```
/// use host_api::{ApplyMode, EnvUpdateV2, PlanEntry};
/// let update = EnvUpdateV2 {
///     version: 7,
///     plan: vec![PlanEntry { plugin: "@acme/weather".into(), mode: ApplyMode::LIVE }].into(),
/// };
/// assert!(!update.restart_required());
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct EnvUpdateV2 {
    /// The environment version after the update.
    pub version: u64,
    /// Every enabled plugin that uses a changed key, sorted by id, with how
    /// it takes the change.
    pub plan: RVec<PlanEntry>,
}

impl EnvUpdateV2 {
    /// Whether some enabled plugin that uses a changed key did not take it
    /// live.
    pub fn restart_required(&self) -> bool {
        self.plan.iter().any(|e| e.mode != ApplyMode::LIVE)
    }
}

/// The live-change services the host lends to one plugin (since 0.1.3),
/// scoped like its [`crate::PluginServices`].
///
/// A plugin receives it as a [`LiveServicesBox`] through
/// [`crate::Plugin::init_live`], before `init_services` and `init`. Every
/// method may be called from any thread; the futures may be polled
/// anywhere.
#[sabi_trait]
pub trait LiveServices: Clone + Send + Sync + 'static {
    /// Warnings about `changes` before they are written (SPEC §8):
    /// `(key, message)` for a value with the shape of another provider's
    /// key or without the shape declared for its key (the host's shape
    /// table, which the config file may extend), and for a key the process
    /// environment sets, which wins again after a restart. Warnings never
    /// refuse anything and never quote a value; keys outside the plugin's
    /// scope get none.
    fn value_warnings_v1(&self, changes: RVec<EnvChange>) -> RVec<Tuple2<RString, RString>>;

    /// [`crate::PluginServices::update_env`] (all or nothing, durable,
    /// compare-and-set on `expected_version`, keys in scope only, on
    /// behalf of `client`), then the change's restart plan: the host tells
    /// every enabled plugin that uses a changed key and waits, at most its
    /// plugin timeout, for those that declare a changed key live to
    /// acknowledge it. One that does not answer in time counts as
    /// [`ApplyMode::RESTART`].
    #[sabi(last_prefix_field)]
    fn update_env_v2(
        &self,
        changes: RVec<EnvChange>,
        expected_version: ROption<u64>,
        client: ClientInfo,
    ) -> FfiFuture<RResult<EnvUpdateV2, HostError>>;
}

/// The owned, type-erased [`LiveServices`] a plugin receives. It is
/// `Clone + Send + Sync`: keep it in a `static OnceLock`.
pub type LiveServicesBox = LiveServices_TO<RBox<()>>;
