//! The demo host: a Milady-like agent-runtime host that loads stable-ABI
//! plugins from a folder, mounts their routes, and owns the config file, the
//! runtime environment, the plugin registry and auth.
//!
//! `main.rs` is a thin CLI over [`Host`]; everything here can be driven
//! in-process by tests. The modules follow the jobs of the host
//! (`docs/architecture.md` maps each part of the contract to them):
//!
//! - `plugins`: finding, checking, loading and installing plugin libraries,
//!   the request bridge into them and the services lent to them;
//! - `store`: the config file (`toml_edit`, atomic replace);
//! - `env`: the runtime environment plugins read and the key policy;
//! - `http`: the host's own routes, auth, JSON errors and the merged
//!   OpenAPI document;
//! - `registry`: catalog and loaded plugins with their enabled state;
//! - `app`: assembling all of the above into a [`Host`].

mod app;
mod env;
mod http;
mod plugins;
mod registry;
mod store;

pub use app::{DEFAULT_BODY_LIMIT, Host, HostOptions, TOKEN_ENV};
pub use app::{MountedPlugin, SkippedPlugin, StartupError};
pub use env::{key_policy::KeyPolicy, runtime::RuntimeEnv};
pub use plugins::loader::{LoadError, LoadedPlugin, load_plugin};
pub use plugins::mount::MountError;
pub use plugins::services::HostServices;
pub use registry::Registry;
pub use store::config_file::ConfigStore;
pub use store::config_file::{ConfigError, ConfigSnapshot};

/// The `demo-host plugin ...` commands: probe a library in a child process,
/// list the plugin folder, install a library into it.
pub mod plugin_commands {
    pub use crate::plugins::{
        install::{InstallError, Installed, install},
        listing::{ListError, ListedPlugin, list, render_list},
        probe::{ProbeReport, probe_here},
    };
}
