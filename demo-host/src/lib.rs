//! The demo host: a Milady-like agent-runtime host that loads stable-ABI
//! plugins from a folder, mounts their routes, and owns the config file, the
//! runtime environment, the plugin registry and auth.
//!
//! `main.rs` is a thin CLI over [`app::Host`]; everything here can be driven
//! in-process by tests.

pub mod api;
pub mod app;
pub mod auth;
pub mod bridge;
pub mod config_store;
pub mod errors;
pub mod host_context;
pub mod key_policy;
pub mod loader;
pub mod openapi_doc;
pub mod plugin_cli;
pub mod registry;
pub mod runtime_env;
