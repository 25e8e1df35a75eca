//! The stable interface between the demo host and its plugins.
//!
//! This crate holds types and traits only: no I/O, no async runtime, no HTTP
//! server. Everything here is `#[repr(C)]` and derives [`StableAbi`], so a
//! plugin compiled separately (even by another compiler version) can be loaded
//! by the host after `abi_stable` has checked that both sides agree on every
//! layout.
//!
//! A plugin is a `cdylib` that exports a [`PluginModRef`] root module, most
//! easily with [`export_plugin!`] over a type that implements [`Plugin`]. The
//! host calls [`PluginMod::init`] once with a [`HostContextBox`], the services
//! it lends (registry, runtime environment, durable updates, logging), and
//! then forwards every HTTP request under the plugin's route prefixes to
//! [`PluginMod::handle`] as an [`FfiRequest`].
//!
//! Since 0.1.2 the host prefers [`PluginMod::handle_parsed`], whose
//! [`ParsedRequest`] crosses already parsed and validated (method enum,
//! path and query, a block of checked headers, the [`ClientInfo`]), and
//! calls [`PluginMod::init_services`] before `init` with the plugin's
//! scoped [`PluginServicesBox`]: only the keys the plugin declares (plus
//! non-sensitive settings), per-key [`KeyRecord`]s, the audit log. See
//! [`request`] and [`services`].
//!
//! # A complete plugin
//!
//! A `cdylib` crate depending on `host-api` (`docs/writing-a-plugin.md`
//! walks through it; `examples/hello-plugin` is the same plugin, built and
//! loaded by the end-to-end tests):
//!
//! ```
//! use std::sync::OnceLock;
//!
//! use host_api::{FfiRequest, FfiResponse, HostContextBox, HostError, ParamSpec, Plugin, PluginManifest};
//!
//! static HOST: OnceLock<HostContextBox> = OnceLock::new();
//!
//! struct Weather;
//!
//! impl Plugin for Weather {
//!     fn manifest() -> PluginManifest {
//!         PluginManifest::new("@acme/plugin-weather", "Weather", "1.0.0")
//!             .with_route("/api/weather")
//!             .with_param(ParamSpec::secret("WEATHER_API_KEY", "Key of the weather service", true))
//!     }
//!
//!     fn openapi_json() -> String {
//!         r#"{"openapi":"3.0.0","info":{"title":"Weather","version":"1.0.0"},
//!             "paths":{"/api/weather":{"get":{"responses":{"200":{"description":"The forecast"}}}}}}"#
//!             .into()
//!     }
//!
//!     fn init(host: HostContextBox) -> Result<(), HostError> {
//!         HOST.set(host).map_err(|_| HostError::new(HostError::INIT, "initialised twice"))
//!     }
//!
//!     async fn handle(_request: FfiRequest) -> FfiResponse {
//!         let Some(host) = HOST.get() else {
//!             return FfiResponse::error(503, "not_initialised", "not initialised");
//!         };
//!         // Read the secret through the host; answer only whether it is set.
//!         let configured = host.env().get("WEATHER_API_KEY").is_some();
//!         FfiResponse::json(200, format!(r#"{{"configured":{configured}}}"#))
//!     }
//! }
//!
//! host_api::export_plugin!(Weather);
//! # fn main() {}
//! ```
//!
//! # What crosses the boundary
//!
//! Only the `#[repr(C)]`, [`StableAbi`] types of this crate, `abi_stable`'s
//! `R*` types (`RString`, `RVec`, `ROption`, `RResult`, `RArc`, ...),
//! [`FfiFuture`], `#[sabi_trait]` objects such as [`HostContextBox`], and
//! `extern "C"` functions. Never `String`, `Box<dyn Trait>`, `Result`,
//! `serde_json::Value`, or any `poem`/`tokio` type: their layout is not
//! stable between separately compiled libraries. Structured data crosses as
//! typed structs; only opaque payloads (the OpenAPI document, HTTP bodies)
//! cross as text or bytes.
//!
//! # Evolving the interface
//!
//! `abi_stable` compares this crate's package version as part of the layout
//! check, so any change of the 0.x minor version rejects every plugin built
//! before it. Additive changes go after the `last_prefix_field` of a prefix
//! type and bump the patch version only. `abi_stable` accepts a root module
//! with more fields than the host expects but not one with fewer, so each
//! release that grows [`PluginMod`] keeps the previous layout in [`legacy`],
//! which the host falls back to: 0.1.1 added `shutdown` and
//! `handle_shared`, 0.1.2 the entry points above and `on_env_change`,
//! 0.1.3 [`PluginMod::init_live`] (restart plans, [`live`]), and plugins
//! built against 0.1.0, 0.1.1 and 0.1.2 still load. Released types never
//! change: new capabilities arrive as new types and versioned service
//! objects (`docs/writing-a-plugin.md`, "How versions evolve").

#![allow(non_local_definitions)] // emitted by abi_stable_derive 0.11 on current compilers

pub mod codes;
pub mod context;
pub mod error;
pub mod export;
pub mod http;
pub mod json;
pub mod legacy;
pub mod live;
pub mod manifest;
pub mod module;
pub mod request;
pub mod services;

pub use abi_stable;
pub use abi_stable::StableAbi;
pub use async_ffi;
pub use async_ffi::FfiFuture;

pub use codes::{ErrorCode, error_body};
pub use context::{
    EnvChange, EnvSnapshot, EnvSource, EnvUpdate, EnvVar, HostContext, HostContext_TO,
    HostContextBox, LogLevel, PluginEntry, RegistrySnapshot, SHARED_VERSION_BASE,
};
pub use error::HostError;
pub use export::Plugin;
pub use http::{FfiRequest, FfiResponse, FfiSharedResponse, Header};
pub use live::{ApplyMode, EnvUpdateV2, LiveServices, LiveServices_TO, LiveServicesBox, PlanEntry};
pub use manifest::{ParamSpec, PluginManifest};
pub use module::{PluginMod, PluginModRef};
pub use request::{
    AuthMethod, ClientInfo, HeaderSpan, Headers, HttpMethod, ParsedRequest, ParsedResponse,
    PeerAddr,
};
pub use services::{
    AuditEntry, AuditKey, AuditQuery, ChangeAck, EnvChangeNotice, KeyRecord, KeySource,
    MANAGE_SECRETS, ManifestExt, PluginServices, PluginServices_TO, PluginServicesBox,
};

/// The interface version a plugin was built against, as the host reports it
/// in error messages (`abi_stable` checks the real layout independently).
///
/// ```
/// // This crate's package version: the one compared by the layout check.
/// assert_eq!(host_api::INTERFACE_VERSION.split('.').count(), 3);
/// ```
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");
