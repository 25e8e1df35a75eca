//! The safe way for a plugin to export its root module.

use std::{future::Future, panic::AssertUnwindSafe};

use abi_stable::{
    prefix_type::PrefixTypeTrait,
    std_types::{RResult, RString},
};
use async_ffi::{FfiFuture, FutureExt as _};
use futures_util::FutureExt as _;

use crate::{
    ChangeAck, EnvChangeNotice, FfiRequest, FfiResponse, FfiSharedResponse, HostContextBox,
    HostError, LiveServicesBox, ManifestExt, ParsedRequest, ParsedResponse, PluginManifest,
    PluginMod, PluginModRef, PluginServicesBox,
};

/// What a plugin implements; [`crate::export_plugin!`] turns it into the
/// exported root module.
///
/// Implementations run inside the plugin's library, which cannot see the
/// host's async runtime: `handle` may await host services and do pure
/// computation, but must not use `tokio::fs`, `tokio::time` or
/// `spawn_blocking` (they would panic with "no reactor running").
///
/// A panic in any of these functions does not reach the host: the shims of
/// [`crate::export_plugin!`] catch it and turn it into an error (a 500 JSON
/// response for `handle`).
///
/// See the [crate-level example](crate#a-complete-plugin) for a complete
/// implementation.
pub trait Plugin: 'static {
    /// The plugin's manifest: id, name, version, route prefixes and the
    /// parameters it reads. Called when the host loads the library, before
    /// `init`; keep it cheap and free of side effects.
    fn manifest() -> PluginManifest;
    /// The OpenAPI 3 document of the plugin's routes, as JSON text. The host
    /// merges it into `/openapi.json` (and `/docs`) and refuses the plugin
    /// if a path or a differing schema of the same name is already there.
    fn openapi_json() -> String;
    /// Called once, after the manifest was accepted and before any request:
    /// keep `host` (e.g. in a `OnceLock`) for later requests. An error
    /// refuses the plugin; the host keeps running without it.
    fn init(host: HostContextBox) -> Result<(), HostError>;
    /// Handles one request under one of the plugin's route prefixes (the
    /// full path is in [`FfiRequest::uri`]). The host polls the future on
    /// its own runtime; every error should be a JSON [`FfiResponse::error`].
    fn handle(request: FfiRequest) -> impl Future<Output = FfiResponse> + Send + 'static;

    /// Called once at graceful shutdown, after the last request (since
    /// 0.1.1). The default does nothing.
    fn shutdown() {}

    /// Handles one request with a shared body (since 0.1.1; the host
    /// prefers it). The default moves `handle`'s body behind a shared
    /// pointer; a plugin that caches bodies returns its cached buffer here
    /// so the host sends it without a copy.
    fn handle_shared(
        request: FfiRequest,
    ) -> impl Future<Output = FfiSharedResponse> + Send + 'static {
        let response = Self::handle(request);
        async move { FfiSharedResponse::from(response.await) }
    }

    /// What the plugin declares beyond its manifest (since 0.1.2): the
    /// capabilities it asks for (e.g. [`crate::MANAGE_SECRETS`]) and the
    /// parameters it applies live. The default asks for nothing.
    fn manifest_ext() -> ManifestExt {
        ManifestExt::default()
    }

    /// Called once, right before `init`, with the plugin's scoped services
    /// (since 0.1.2; a host of 0.1.1 or older never calls it). Keep them
    /// (e.g. in a `OnceLock`) to read declared keys, write the audit log
    /// or act on behalf of a request's client. The default drops them.
    fn init_services(services: PluginServicesBox) -> Result<(), HostError> {
        drop(services);
        Ok(())
    }

    /// Handles one request that arrives already parsed (since 0.1.2; the
    /// host prefers it). The default converts it into an [`FfiRequest`] for
    /// [`Plugin::handle_shared`]; a plugin with a hot path overrides it and
    /// answers from [`ParsedRequest::method`] and [`ParsedRequest::path`]
    /// without parsing anything again.
    fn handle_parsed(
        request: ParsedRequest,
    ) -> impl Future<Output = ParsedResponse> + Send + 'static {
        let response = Self::handle_shared(request.into_ffi_request());
        async move { ParsedResponse::from(response.await) }
    }

    /// Told after a change of the runtime environment was applied, with
    /// the changed keys this plugin can see (since 0.1.2). Answer which of
    /// them it applied live; the default applies none (they take effect at
    /// the next start).
    fn on_env_change(notice: EnvChangeNotice) -> impl Future<Output = ChangeAck> + Send + 'static {
        drop(notice);
        async { ChangeAck::default() }
    }

    /// Called once, before `init_services` and `init`, with the plugin's
    /// live-change services (since 0.1.3; an older host never calls it):
    /// environment updates that answer their restart plan. Keep them when
    /// you write the environment for someone who wants to know which
    /// plugins took the change live. The default drops them.
    fn init_live(services: LiveServicesBox) -> Result<(), HostError> {
        drop(services);
        Ok(())
    }
}

/// Exports `$plugin` (a type implementing [`Plugin`]) as the library's root
/// module. Use it once, in the `cdylib` crate root.
///
/// ```
/// use host_api::{FfiRequest, FfiResponse, HostContextBox, HostError, Plugin, PluginManifest};
///
/// struct Ping;
///
/// impl Plugin for Ping {
///     fn manifest() -> PluginManifest {
///         PluginManifest::new("@acme/plugin-ping", "Ping", "0.1.0").with_route("/api/ping")
///     }
///     fn openapi_json() -> String {
///         r#"{"openapi":"3.0.0","info":{"title":"Ping","version":"0.1.0"},"paths":{}}"#.into()
///     }
///     fn init(_host: HostContextBox) -> Result<(), HostError> {
///         Ok(())
///     }
///     async fn handle(_request: FfiRequest) -> FfiResponse {
///         FfiResponse::json(200, r#"{"pong":true}"#)
///     }
/// }
///
/// host_api::export_plugin!(Ping);
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        #[allow(missing_docs)]
        pub mod host_api_export {
            #[allow(unused_imports)]
            use super::*;

            /// The root module the host loads.
            #[$crate::abi_stable::export_root_module]
            pub fn host_api_root_module() -> $crate::PluginModRef {
                $crate::export::root_module::<$plugin>()
            }
        }
    };
}

/// Builds the root module for `P` with panic-catching shims. Called by
/// [`crate::export_plugin!`]; a plugin does not call it itself.
pub fn root_module<P: Plugin>() -> PluginModRef {
    PluginMod {
        manifest: manifest_shim::<P>,
        openapi_json: openapi_shim::<P>,
        init: init_shim::<P>,
        handle: handle_shim::<P>,
        shutdown: shutdown_shim::<P>,
        handle_shared: handle_shared_shim::<P>,
        manifest_ext: manifest_ext_shim::<P>,
        init_services: init_services_shim::<P>,
        handle_parsed: handle_parsed_shim::<P>,
        on_env_change: on_env_change_shim::<P>,
        init_live: init_live_shim::<P>,
    }
    .leak_into_prefix()
}

/// The response a caught panic becomes: a 500 with
/// `{"error": ..., "code": "plugin_panicked"}`, naming nothing of the panic
/// (its message could hold data the plugin was handling).
///
/// ```
/// let r = host_api::export::panic_response();
/// assert_eq!(r.status, 500);
/// assert!(String::from_utf8_lossy(&r.body).contains("plugin_panicked"));
/// ```
pub fn panic_response() -> FfiResponse {
    FfiResponse::error(
        500,
        crate::ErrorCode::PluginPanicked,
        "the plugin failed while handling the request",
    )
}

fn panicked(entry: &str) -> HostError {
    HostError::new(
        HostError::INTERNAL,
        format!("the plugin panicked in `{entry}`"),
    )
}

extern "C" fn manifest_shim<P: Plugin>() -> RResult<PluginManifest, HostError> {
    std::panic::catch_unwind(P::manifest)
        .map_err(|_| panicked("manifest"))
        .into()
}

extern "C" fn openapi_shim<P: Plugin>() -> RResult<RString, HostError> {
    std::panic::catch_unwind(P::openapi_json)
        .map(RString::from)
        .map_err(|_| panicked("openapi_json"))
        .into()
}

extern "C" fn init_shim<P: Plugin>(host: HostContextBox) -> RResult<(), HostError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| P::init(host)))
        .unwrap_or_else(|_| Err(panicked("init")))
        .into()
}

extern "C" fn manifest_ext_shim<P: Plugin>() -> RResult<ManifestExt, HostError> {
    std::panic::catch_unwind(P::manifest_ext)
        .map_err(|_| panicked("manifest_ext"))
        .into()
}

extern "C" fn init_services_shim<P: Plugin>(services: PluginServicesBox) -> RResult<(), HostError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| P::init_services(services)))
        .unwrap_or_else(|_| Err(panicked("init_services")))
        .into()
}

extern "C" fn init_live_shim<P: Plugin>(services: LiveServicesBox) -> RResult<(), HostError> {
    std::panic::catch_unwind(AssertUnwindSafe(|| P::init_live(services)))
        .unwrap_or_else(|_| Err(panicked("init_live")))
        .into()
}

extern "C" fn handle_parsed_shim<P: Plugin>(request: ParsedRequest) -> FfiFuture<ParsedResponse> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| P::handle_parsed(request))) {
        Ok(fut) => async move {
            AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| panic_response().into())
        }
        .into_ffi(),
        Err(_) => async { ParsedResponse::from(panic_response()) }.into_ffi(),
    }
}

extern "C" fn on_env_change_shim<P: Plugin>(notice: EnvChangeNotice) -> FfiFuture<ChangeAck> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| P::on_env_change(notice))) {
        // A plugin that failed to apply a change applied nothing live.
        Ok(fut) => async move {
            AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .unwrap_or_default()
        }
        .into_ffi(),
        Err(_) => async { ChangeAck::default() }.into_ffi(),
    }
}

extern "C" fn shutdown_shim<P: Plugin>() {
    // Nothing to report to: the host is going away. Just never unwind.
    let _ = std::panic::catch_unwind(P::shutdown);
}

extern "C" fn handle_shared_shim<P: Plugin>(request: FfiRequest) -> FfiFuture<FfiSharedResponse> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| P::handle_shared(request))) {
        Ok(fut) => async move {
            AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| panic_response().into())
        }
        .into_ffi(),
        Err(_) => async { FfiSharedResponse::from(panic_response()) }.into_ffi(),
    }
}

extern "C" fn handle_shim<P: Plugin>(request: FfiRequest) -> FfiFuture<FfiResponse> {
    match std::panic::catch_unwind(AssertUnwindSafe(|| P::handle(request))) {
        Ok(fut) => async move {
            AssertUnwindSafe(fut)
                .catch_unwind()
                .await
                .unwrap_or_else(|_| panic_response())
        }
        .into_ffi(),
        Err(_) => async { panic_response() }.into_ffi(),
    }
}
