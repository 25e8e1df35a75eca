//! The hot path: `GET /api/secrets` answered straight from the caches the
//! API keeps, without building a `poem::Request` or routing.
//!
//! The host hands the request over already parsed (host-api 0.1.2), so a
//! `GET` of the route is recognised by comparing the method and the path,
//! and the answer is the cached body and a cached header block, both
//! shared: two reference-count increments. Everything else goes through
//! the poem-openapi endpoint, which shares these caches and tags, so both
//! answer the same bytes and the same `ETag` (a test holds them side by
//! side).

use std::sync::{Arc, Mutex};

use abi_stable::std_types::RArc;
use host_api::{Headers, HostContextBox, ParsedResponse, PluginServicesBox};

use crate::{api::NO_STORE, etag::ETags, index::IndexCache, model::JSON, render::BodyCache};

/// The fast `GET` of one API instance.
pub(crate) struct FastGet {
    host: HostContextBox,
    /// The scoped services, for the key records (absent in an older host).
    services: Option<PluginServicesBox>,
    index: Arc<IndexCache>,
    bodies: Arc<BodyCache>,
    etags: Arc<ETags>,
    headers: Mutex<Option<CachedHeaders>>,
}

/// The headers of the answer for one (environment, registry) version pair.
struct CachedHeaders {
    env_version: u64,
    registry_version: u64,
    headers: RArc<Headers>,
}

impl FastGet {
    /// Over the caches and tags of an API instance.
    pub(crate) fn new(
        host: HostContextBox,
        services: Option<PluginServicesBox>,
        index: Arc<IndexCache>,
        bodies: Arc<BodyCache>,
        etags: Arc<ETags>,
    ) -> Self {
        Self {
            host,
            services,
            index,
            bodies,
            etags,
            headers: Mutex::new(None),
        }
    }

    /// The answer to `GET /api/secrets`.
    pub(crate) fn respond(&self) -> ParsedResponse {
        let registry = self.host.registry();
        let env = self.host.env();
        // Rendered once per (registry, environment) version pair.
        let body = self.bodies.get(
            &registry,
            &env,
            || self.index.get(&registry),
            || crate::stored_keys(self.services.as_ref()),
        );
        let mut cached = self.headers.lock().unwrap_or_else(|e| e.into_inner());
        let headers = match &*cached {
            Some(c) if c.env_version == env.version && c.registry_version == registry.version => {
                c.headers.clone()
            }
            _ => {
                let etag = self.etags.tag(env.version, registry.version);
                let headers = RArc::new(
                    Headers::with_capacity(3, 64 + etag.len())
                        .with("content-type", JSON)
                        .with("cache-control", NO_STORE)
                        .with("etag", &etag),
                );
                *cached = Some(CachedHeaders {
                    env_version: env.version,
                    registry_version: registry.version,
                    headers: headers.clone(),
                });
                headers
            }
        };
        drop(cached);
        ParsedResponse {
            status: 200,
            headers,
            body: body.into_shared(),
        }
    }
}
