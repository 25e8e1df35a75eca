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
//! # Evolving the interface
//!
//! `abi_stable` compares this crate's package version as part of the layout
//! check, so any change of the 0.x minor version rejects every plugin built
//! before it. Additive changes go after the `last_prefix_field` of a prefix
//! type and bump the patch version only.

#![allow(non_local_definitions)] // emitted by abi_stable_derive 0.11 on current compilers

pub mod context;
pub mod error;
pub mod export;
pub mod http;
pub mod manifest;
pub mod module;

pub use abi_stable;
pub use abi_stable::StableAbi;
pub use async_ffi;
pub use async_ffi::FfiFuture;

pub use context::{
    EnvChange, EnvSnapshot, EnvSource, EnvUpdate, EnvVar, HostContext, HostContext_TO,
    HostContextBox, LogLevel, PluginEntry, RegistrySnapshot,
};
pub use error::HostError;
pub use export::Plugin;
pub use http::{FfiRequest, FfiResponse, Header};
pub use manifest::{ParamSpec, PluginManifest};
pub use module::{PluginMod, PluginModRef};

/// The interface version a plugin was built against, as the host reports it
/// in error messages (`abi_stable` checks the real layout independently).
pub const INTERFACE_VERSION: &str = env!("CARGO_PKG_VERSION");
