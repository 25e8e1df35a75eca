//! The example plugin (to come).
