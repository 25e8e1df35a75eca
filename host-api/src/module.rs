//! The root module every plugin library exports.

// The derive expands the accessors of fields after the prefix
// to unsafe code of abi_stable's; none is written by hand here.
#![allow(unsafe_code)]

use abi_stable::{
    StableAbi, declare_root_module_statics,
    library::RootModule,
    package_version_strings,
    sabi_types::VersionStrings,
    std_types::{RResult, RString},
};
use async_ffi::FfiFuture;

use crate::{
    ChangeAck, EnvChangeNotice, FfiRequest, FfiResponse, FfiSharedResponse, HostContextBox,
    HostError, LiveServicesBox, ManifestExt, ParsedRequest, ParsedResponse, PluginManifest,
    PluginServicesBox,
};

/// The plugin's entry points, exported as its root module.
///
/// It is a prefix type: a host built against a newer interface can still load
/// a plugin built against an older one, as long as fields are only ever
/// added after the last prefix field. Use [`crate::export_plugin!`] rather
/// than filling it by hand: its shims catch panics at every entry point.
///
/// The host reaches it through [`PluginModRef`], which `abi_stable` hands
/// out only after checking that the library's layout of every type here
/// matches the host's.
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
#[sabi(missing_field(panic))]
pub struct PluginMod {
    /// Who the plugin is, the routes it serves and the parameters it reads.
    pub manifest: extern "C" fn() -> RResult<PluginManifest, HostError>,
    /// The plugin's OpenAPI 3 document (JSON text) for the routes it serves.
    pub openapi_json: extern "C" fn() -> RResult<RString, HostError>,
    /// Called once, before any request, with the services the host lends.
    pub init: extern "C" fn(HostContextBox) -> RResult<(), HostError>,
    /// Handles one request under one of the plugin's route prefixes. The
    /// host polls the future on its own runtime.
    #[sabi(last_prefix_field)]
    pub handle: extern "C" fn(FfiRequest) -> FfiFuture<FfiResponse>,
    /// Called once when the host shuts down gracefully, after the last
    /// request. Added in 0.1.1, after the prefix: a plugin built against
    /// 0.1.0 lacks it, its accessor returns `None`, and the host skips it.
    #[sabi(missing_field(option))]
    pub shutdown: extern "C" fn(),
    /// Like `handle`, but the response body is shared rather than copied
    /// (added in 0.1.1; the host prefers it and falls back to `handle`).
    #[sabi(missing_field(option))]
    pub handle_shared: extern "C" fn(FfiRequest) -> FfiFuture<FfiSharedResponse>,
    /// What the plugin declares beyond its manifest: capabilities it asks
    /// for, parameters it applies live (added in 0.1.2, as are the fields
    /// below; older plugins lack them and the host does without).
    #[sabi(missing_field(option))]
    pub manifest_ext: extern "C" fn() -> RResult<ManifestExt, HostError>,
    /// Called once, right before `init`, with the plugin's scoped services.
    #[sabi(missing_field(option))]
    pub init_services: extern "C" fn(PluginServicesBox) -> RResult<(), HostError>,
    /// Handles one request that crosses already parsed, answering with a
    /// shared response; the host prefers it to `handle_shared` and `handle`.
    #[sabi(missing_field(option))]
    pub handle_parsed: extern "C" fn(ParsedRequest) -> FfiFuture<ParsedResponse>,
    /// Told after every applied change of the runtime environment that
    /// concerns keys the plugin can see; answers which it applied live.
    #[sabi(missing_field(option))]
    pub on_env_change: extern "C" fn(EnvChangeNotice) -> FfiFuture<ChangeAck>,
    /// Called once, before `init_services` and `init`, with the plugin's
    /// live-change services: updates that answer their restart plan
    /// (added in 0.1.3; the 0.1.2 root module is frozen in
    /// [`crate::legacy::v0_1_2`]).
    #[sabi(missing_field(option))]
    pub init_live: extern "C" fn(LiveServicesBox) -> RResult<(), HostError>,
}

/// The root module's identity: `abi_stable` finds it in a library by
/// `BASE_NAME` and compares `VERSION_STRINGS` (this crate's version) and the
/// full layout before the host may call anything.
impl RootModule for PluginModRef {
    declare_root_module_statics! {PluginModRef}
    const BASE_NAME: &'static str = "demo_host_plugin";
    const NAME: &'static str = "demo_host_plugin";
    const VERSION_STRINGS: VersionStrings = package_version_strings!();
}
