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
//! - `secrets_cli`: the `secrets encrypt`, `rotate-key` and `import`
//!   commands (values at rest, SPEC §7; the encoding and the key live in
//!   `store`);
//! - `app`: assembling all of the above into a [`Host`].

mod app;
mod beside;
mod boundary;
mod env;
mod http;
mod knowing;
mod logging;
mod plugins;
mod provider_shapes;
mod registry;
mod secrets_cli;
mod server;
mod store;
mod text;

pub use app::{DEFAULT_BODY_LIMIT, Host, HostOptions, TOKEN_ENV};
pub use app::{MountedPlugin, SkippedPlugin, StartupError};
pub use boundary::{
    ALLOWED_ORIGINS_ENV, BoundaryOptions, DEFAULT_BODY_TIMEOUT, DEFAULT_PLUGIN_TIMEOUT,
    DEFAULT_REQUEST_TIMEOUT, default_cache_dir, split_origins,
};
pub use env::at_rest::{AtRest, AtRestTable};
pub use env::{
    key_policy::{DEFAULT_MAX_VALUE_BYTES, KeyPolicy},
    runtime::RuntimeEnv,
};
pub use http::browser::OriginError;
pub use logging::log_fields;
pub use plugins::loader::{LoadError, LoadedPlugin, load_plugin};
pub use plugins::mount::MountError;
#[cfg(feature = "bench")]
pub use plugins::parsed::NativeParsedEndpoint;
pub use plugins::services::HostServices;
pub use registry::Registry;
pub use server::{
    ConnectionLimits, DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_MAX_CONNECTIONS,
    listen, serve,
};
pub use store::config_file::ConfigStore;
pub use store::config_file::{ConfigError, ConfigSnapshot};
pub use store::file_safety::{FilePolicy, UnsafeFile};
pub use store::sealed::SealError;
pub use store::secrets_key::{
    KeyError, Keyring, SECRETS_KEY_ENV, SECRETS_KEY_FILE_ENV, SecretsKey,
};
pub use text::escape_controls;

/// The `demo-host plugin ...` commands: probe a library in a child process,
/// list the plugin folder, install a library into it (and hear whether a
/// running host picked it up).
pub mod plugin_commands {
    pub use crate::plugins::{
        install::{InstallError, Installed, install},
        listing::{ListError, ListedPlugin, list, render_list},
        pickup::{PICKUP_WAIT, Pickup, PickupWait, await_pickup},
        probe::{ProbeReport, probe_and_exit, probe_here},
    };
}

/// The `demo-host secrets ...` commands: encrypt the plaintext values of
/// `[env]`, rotate the secrets key, import a `.env` file; and turning core
/// dumps off.
pub mod secrets_commands {
    pub use crate::knowing::{export_fingerprint_key, import_fingerprint_key};
    pub use crate::secrets_cli::{
        DotEnvError, EncryptReport, ImportReport, MigrateError, MigrateReport, RotateReport,
        SecretsCommandError, disable_core_dumps, encrypt, import, migrate_to_openbao, rotate_key,
    };
    pub use crate::store::fingerprint_key::FingerprintKeyError;
}
