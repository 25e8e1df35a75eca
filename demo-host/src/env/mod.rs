//! The runtime environment plugins read, and the rules for its keys.

pub(crate) mod at_rest;
pub(crate) mod audited;
pub(crate) mod fingerprint;
pub(crate) mod key_policy;
pub(crate) mod notify;
pub(crate) mod runtime;
