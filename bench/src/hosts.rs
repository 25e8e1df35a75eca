//! Building hosts in this process: config file, process environment, own
//! plugin copy, or the natively linked handler instead of the plugin.

use std::{
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, Result, bail};
use demo_host::{ConfigStore, Host, HostOptions, NativeParsedEndpoint, SecretsKey};

/// The file name of the plugin library on this platform.
pub(crate) fn lib_file_name() -> String {
    format!(
        "{}secrets_plugin{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    )
}

/// The process environment handed to every host: half of the secrets set,
/// with short, medium and long values (all redaction paths), plus a few
/// ordinary variables.
pub(crate) fn bench_env(keys: &[String]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("LANG".into(), "C.UTF-8".into()),
        ("TERM".into(), "xterm".into()),
    ];
    for (i, key) in keys.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let len = [10, 20, 48][i % 3];
        let value: String = format!("sk-bench-{i:06}-")
            .chars()
            .chain(std::iter::repeat('x'))
            .take(len)
            .collect();
        env.push((key.clone(), value));
    }
    env
}

/// A host with its config file in `dir` and, given `plugin`, its own copy
/// of that library; fails if the plugin does not load.
pub(crate) fn build_host(
    dir: &Path,
    plugin: Option<&Path>,
    catalog: &Path,
    env: &[(String, String)],
    copies: &AtomicUsize,
) -> Result<Host> {
    build_host_with(dir, plugin, catalog, env, copies, |_| {})
}

/// [`build_host`] with `adjust` applied to the options last (e.g. the
/// audit log off, to measure what it costs).
pub(crate) fn build_host_with(
    dir: &Path,
    plugin: Option<&Path>,
    catalog: &Path,
    env: &[(String, String)],
    copies: &AtomicUsize,
    adjust: impl FnOnce(&mut HostOptions),
) -> Result<Host> {
    std::fs::create_dir_all(dir)?;
    let config = dir.join("milady.toml");
    ConfigStore::new(&config).create_default_if_missing()?;
    let mut options = HostOptions::new(&config);
    options.catalogs = vec![catalog.to_owned()];
    // A key of the bench's own, beside (not in) the config's folder.
    let name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    options.secrets_key = SecretsKey::File(
        dir.parent()
            .unwrap_or(dir)
            .join("keys")
            .join(name)
            .join("secrets.key"),
    );
    if let Some(lib) = plugin {
        // Each host loads its own copy: the library keeps its endpoint in a
        // static, and a copy is a separate load with its own statics.
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins)?;
        copies.fetch_add(1, Ordering::Relaxed);
        std::fs::copy(lib, plugins.join(lib_file_name()))
            .with_context(|| format!("copying the plugin library {}", lib.display()))?;
        options.plugins_dir = Some(plugins);
    }
    adjust(&mut options);
    let host = Host::build(options, env.to_vec())?;
    if plugin.is_some() && host.plugins.is_empty() {
        let reasons: Vec<&str> = host.skipped.iter().map(|s| s.reason.as_str()).collect();
        bail!("the plugin did not load: {reasons:?}");
    }
    Ok(host)
}

/// The secrets handler linked natively, mounted where the plugin would be:
/// the reference the bridge is compared with. It is the plugin's own
/// handler ([`secrets_plugin::Secrets::handle_parsed`]) behind the very
/// request and response conversions the bridge uses
/// ([`demo_host::NativeParsedEndpoint`]), so the difference between the two
/// sides is the boundary alone: the call through the library's root
/// module, its panic shims and `FfiFuture`, and the hop to the plugin
/// runtime within the request deadline.
pub(crate) fn native_endpoint(host: &Host) -> Vec<(String, poem::endpoint::BoxEndpoint<'static>)> {
    // The services the plugin gets, scoped alike, so both sides render
    // the same body (key records: encrypted, fingerprints, ...).
    let (services, scoped, live) = host.native_services("native");
    // Leaked like the plugin's own static: one per benchmark host.
    let secrets: &'static secrets_plugin::Secrets = Box::leak(Box::new(
        secrets_plugin::Secrets::with_services(services, Some(scoped), Some(live)),
    ));
    let inner = NativeParsedEndpoint::new(move |request| secrets.handle_parsed(request));
    vec![(
        secrets_plugin::ROUTE.into(),
        poem::EndpointExt::boxed(inner),
    )]
}
