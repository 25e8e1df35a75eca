//! Building hosts in this process: config file, process environment, own
//! plugin copy, or the natively linked handler instead of the plugin.

use std::{
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, Result, bail};
use demo_host::{ConfigStore, Host, HostOptions, HostServices};

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
    std::fs::create_dir_all(dir)?;
    let config = dir.join("milady.toml");
    ConfigStore::new(&config).create_default_if_missing()?;
    let mut options = HostOptions::new(&config);
    options.catalogs = vec![catalog.to_owned()];
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
    let host = Host::build(options, env.to_vec())?;
    if plugin.is_some() && host.plugins.is_empty() {
        let reasons: Vec<&str> = host.skipped.iter().map(|s| s.reason.as_str()).collect();
        bail!("the plugin did not load: {reasons:?}");
    }
    Ok(host)
}

/// The secrets handler linked natively, mounted where the plugin would be:
/// the reference the bridge is compared with.
pub(crate) fn native_endpoint(host: &Host) -> Vec<(String, poem::endpoint::BoxEndpoint<'static>)> {
    let services = HostServices::new(host.registry.clone(), host.env.clone(), "native");
    let inner = secrets_plugin::endpoint(services.into_box());
    vec![(secrets_plugin::ROUTE.into(), inner)]
}
