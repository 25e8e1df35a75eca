//! The host's HTTP surface: its own routes, auth and host checks, JSON
//! errors, and the merged OpenAPI document with Swagger UI.

pub(crate) mod allow;
pub(crate) mod api;
pub(crate) mod audit_lines;
pub(crate) mod auth;
pub(crate) mod browser;
pub(crate) mod errors;
pub(crate) mod host_header;
pub(crate) mod limits;
pub(crate) mod openapi;
pub(crate) mod router;
pub(crate) mod stale;

/// Routes the host serves itself; no plugin may claim them (or anything
/// below them).
pub(crate) const HOST_ROUTES: [&str; 4] = ["/api/plugins", "/api/health", "/openapi.json", "/docs"];
