//! Plugin libraries: the loader (the one module allowed `unsafe`), the
//! bridge that forwards requests into a plugin, the services lent to it, and
//! the `plugin` commands (child-process probe, list, install).

pub(crate) mod bridge;
pub(crate) mod cli;
pub(crate) mod loader;
pub(crate) mod services;
