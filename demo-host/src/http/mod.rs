//! The host's HTTP surface: its own routes, auth and host checks, JSON
//! errors, and the merged OpenAPI document with Swagger UI.

pub(crate) mod api;
pub(crate) mod auth;
pub(crate) mod errors;
pub(crate) mod openapi;
