//! Plugin libraries: the loader (the one module allowed `unsafe`), mounting
//! a plugin into the host, the bridge that forwards requests into it, the
//! services lent to it, and the `plugin` commands (child-process probe,
//! list, install).

pub(crate) mod bridge;
pub(crate) mod changes;
pub(crate) mod deadline;
pub(crate) mod folder;
pub(crate) mod install;
pub(crate) mod listing;
pub(crate) mod live;
pub(crate) mod loader;
pub(crate) mod mount;
pub(crate) mod parsed;
pub(crate) mod pickup;
pub(crate) mod planned;
pub(crate) mod private_copy;
pub(crate) mod probe;
pub(crate) mod probe_cache;
pub(crate) mod runtime;
pub(crate) mod scope;
pub(crate) mod scoped;
pub(crate) mod services;
pub(crate) mod startup;
pub(crate) mod watch;
