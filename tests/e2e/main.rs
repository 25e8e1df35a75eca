//! End-to-end tests: the real `demo-host` binary, real plugin libraries in a
//! temporary plugin folder, HTTP over loopback. One test binary, so the
//! artifacts are built once.

mod at_rest;
mod attacks;
mod boundary;
mod browser;
mod connections;
mod docs;
mod faults;
mod fleet;
mod fleet_cluster;
mod host;
mod knowing;
mod live;
mod loading;
mod openapi;
mod plugin_cli;
mod scoped;
mod secrets;
mod secrets_page;
mod shared_machine;
mod strict_input;

use anyhow::Result;
use serde_json::Value;

/// GET `path` and return (status, JSON body).
pub async fn get(h: &e2e_tests::HostProcess, path: &str) -> Result<(u16, Value)> {
    let resp = e2e_tests::client().get(h.url(path)).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

/// PUT JSON to `path` and return (status, JSON body).
pub async fn put(h: &e2e_tests::HostProcess, path: &str, body: &Value) -> Result<(u16, Value)> {
    let resp = e2e_tests::client()
        .put(h.url(path))
        .json(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}
