//! Plugin libraries: the loader (the one module allowed `unsafe`), mounting
//! a plugin into the host, the bridge that forwards requests into it, the
//! services lent to it, and the `plugin` commands (child-process probe,
//! list, install).

pub(crate) mod bridge;
pub(crate) mod install;
pub(crate) mod listing;
pub(crate) mod loader;
pub(crate) mod mount;
pub(crate) mod probe;
pub(crate) mod services;
