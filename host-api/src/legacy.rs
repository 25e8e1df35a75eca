//! Root modules of earlier interface versions, so the host can still load
//! plugins built against them.
//!
//! `abi_stable` accepts a library whose root module has *more* fields than
//! the loader expects (a newer plugin in an older host), but refuses one with
//! *fewer* (an older plugin in a newer host). So whenever a release adds a
//! field after the prefix, the previous layout is frozen here under its own
//! version, and the host falls back to it when the current layout does not
//! match. Every frozen layout is a prefix of the current one; the host fills
//! in what an older plugin lacks (e.g. no `shutdown` call).
//!
//! A frozen module names only types that never change (see
//! `docs/writing-a-plugin.md`, "Evolving the interface"): a type it names
//! must keep its exact layout for as long as the module is here.

// The derive expands to unsafe code of abi_stable's; none is written here.
#![allow(unsafe_code)]

/// The root module of host-api 0.1.0: [`crate::PluginMod`] without
/// `shutdown`.
pub mod v0_1_0 {
    use abi_stable::{
        StableAbi, declare_root_module_statics,
        library::RootModule,
        package_version_strings,
        sabi_types::VersionStrings,
        std_types::{RResult, RString},
    };
    use async_ffi::FfiFuture;

    use crate::{FfiRequest, FfiResponse, HostContextBox, HostError, PluginManifest};

    /// The 0.1.0 root module (same name, fields and order as then).
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
    #[sabi(missing_field(panic))]
    pub struct PluginMod {
        /// See [`crate::PluginMod::manifest`].
        pub manifest: extern "C" fn() -> RResult<PluginManifest, HostError>,
        /// See [`crate::PluginMod::openapi_json`].
        pub openapi_json: extern "C" fn() -> RResult<RString, HostError>,
        /// See [`crate::PluginMod::init`].
        pub init: extern "C" fn(HostContextBox) -> RResult<(), HostError>,
        /// See [`crate::PluginMod::handle`].
        #[sabi(last_prefix_field)]
        pub handle: extern "C" fn(FfiRequest) -> FfiFuture<FfiResponse>,
    }

    impl RootModule for PluginModRef {
        declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "demo_host_plugin";
        const NAME: &'static str = "demo_host_plugin";
        const VERSION_STRINGS: VersionStrings = package_version_strings!();
    }
}

/// The root module of host-api 0.1.1: [`crate::PluginMod`] up to
/// `handle_shared`, without the entry points 0.1.2 added.
pub mod v0_1_1 {
    use abi_stable::{
        StableAbi, declare_root_module_statics,
        library::RootModule,
        package_version_strings,
        sabi_types::VersionStrings,
        std_types::{RResult, RString},
    };
    use async_ffi::FfiFuture;

    use crate::{
        FfiRequest, FfiResponse, FfiSharedResponse, HostContextBox, HostError, PluginManifest,
    };

    /// The 0.1.1 root module (same name, fields and order as then).
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
    #[sabi(missing_field(panic))]
    pub struct PluginMod {
        /// See [`crate::PluginMod::manifest`].
        pub manifest: extern "C" fn() -> RResult<PluginManifest, HostError>,
        /// See [`crate::PluginMod::openapi_json`].
        pub openapi_json: extern "C" fn() -> RResult<RString, HostError>,
        /// See [`crate::PluginMod::init`].
        pub init: extern "C" fn(HostContextBox) -> RResult<(), HostError>,
        /// See [`crate::PluginMod::handle`].
        #[sabi(last_prefix_field)]
        pub handle: extern "C" fn(FfiRequest) -> FfiFuture<FfiResponse>,
        /// See [`crate::PluginMod::shutdown`].
        #[sabi(missing_field(option))]
        pub shutdown: extern "C" fn(),
        /// See [`crate::PluginMod::handle_shared`].
        #[sabi(missing_field(option))]
        pub handle_shared: extern "C" fn(FfiRequest) -> FfiFuture<FfiSharedResponse>,
    }

    impl RootModule for PluginModRef {
        declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "demo_host_plugin";
        const NAME: &'static str = "demo_host_plugin";
        const VERSION_STRINGS: VersionStrings = package_version_strings!();
    }
}

/// The root module of host-api 0.1.2: [`crate::PluginMod`] up to
/// `on_env_change`, without `init_live` (0.1.3).
pub mod v0_1_2 {
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
        HostError, ManifestExt, ParsedRequest, ParsedResponse, PluginManifest, PluginServicesBox,
    };

    /// The 0.1.2 root module (same name, fields and order as then).
    #[repr(C)]
    #[derive(StableAbi)]
    #[sabi(kind(Prefix(prefix_ref = PluginModRef)))]
    #[sabi(missing_field(panic))]
    pub struct PluginMod {
        /// See [`crate::PluginMod::manifest`].
        pub manifest: extern "C" fn() -> RResult<PluginManifest, HostError>,
        /// See [`crate::PluginMod::openapi_json`].
        pub openapi_json: extern "C" fn() -> RResult<RString, HostError>,
        /// See [`crate::PluginMod::init`].
        pub init: extern "C" fn(HostContextBox) -> RResult<(), HostError>,
        /// See [`crate::PluginMod::handle`].
        #[sabi(last_prefix_field)]
        pub handle: extern "C" fn(FfiRequest) -> FfiFuture<FfiResponse>,
        /// See [`crate::PluginMod::shutdown`].
        #[sabi(missing_field(option))]
        pub shutdown: extern "C" fn(),
        /// See [`crate::PluginMod::handle_shared`].
        #[sabi(missing_field(option))]
        pub handle_shared: extern "C" fn(FfiRequest) -> FfiFuture<FfiSharedResponse>,
        /// See [`crate::PluginMod::manifest_ext`].
        #[sabi(missing_field(option))]
        pub manifest_ext: extern "C" fn() -> RResult<ManifestExt, HostError>,
        /// See [`crate::PluginMod::init_services`].
        #[sabi(missing_field(option))]
        pub init_services: extern "C" fn(PluginServicesBox) -> RResult<(), HostError>,
        /// See [`crate::PluginMod::handle_parsed`].
        #[sabi(missing_field(option))]
        pub handle_parsed: extern "C" fn(ParsedRequest) -> FfiFuture<ParsedResponse>,
        /// See [`crate::PluginMod::on_env_change`].
        #[sabi(missing_field(option))]
        pub on_env_change: extern "C" fn(EnvChangeNotice) -> FfiFuture<ChangeAck>,
    }

    impl RootModule for PluginModRef {
        declare_root_module_statics! {PluginModRef}
        const BASE_NAME: &'static str = "demo_host_plugin";
        const NAME: &'static str = "demo_host_plugin";
        const VERSION_STRINGS: VersionStrings = package_version_strings!();
    }
}
