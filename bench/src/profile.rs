//! `bench profile`: in-process requests only, no network, a steady
//! workload for `valgrind --tool=callgrind`.

use std::{sync::atomic::AtomicUsize, time::Instant};

use anyhow::{Result, ensure};

use crate::{
    Args, ProfileMode,
    catalog::{main_catalog, sensitive_keys},
    context::{plugin_lib, work_dir},
    hosts::{bench_env, build_host, native_endpoint},
    in_process::{boxed, one_get},
};

/// Makes `requests` calls of `mode` on one in-process host.
pub(crate) fn profile(
    args: &Args,
    mode: ProfileMode,
    requests: u64,
    keys: Option<usize>,
) -> Result<()> {
    let work = work_dir(args)?;
    let catalog = match keys {
        Some(n) => {
            let path = work.path().join("catalog.json");
            e2e_tests::write_catalog(&path, n.div_ceil(10), 10.min(n))?;
            path
        }
        None => main_catalog(work.path())?.path,
    };
    let keys = sensitive_keys(&catalog)?;
    let plugin_lib = plugin_lib(args)?;
    let copies = AtomicUsize::new(0);
    let host = build_host(
        &work.path().join("host"),
        (mode != ProfileMode::Native).then_some(plugin_lib.as_path()),
        &catalog,
        &bench_env(&keys),
        &copies,
    )?;
    let ep = match mode {
        ProfileMode::Native => boxed(host.endpoint_with_native(native_endpoint(&host))),
        _ => boxed(host.endpoint()),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    for i in 0..requests {
        match mode {
            ProfileMode::Put => {
                let body = format!(
                    r#"{{"secrets":{{"{}":"profile-value-{i:08}-abcdefghijklmnop"}}}}"#,
                    keys[0]
                );
                let req = poem::Request::builder()
                    .method(poem::http::Method::PUT)
                    .uri_str("/api/secrets")
                    .header("host", "127.0.0.1:2138")
                    .header("content-type", "application/json")
                    .body(body);
                let resp = rt.block_on(ep(req));
                ensure!(resp.status() == 200, "PUT answered {}", resp.status());
            }
            ProfileMode::Changed => {
                host.env
                    .update_blocking(
                        &[host_api::EnvChange {
                            key: keys[0].as_str().into(),
                            value: abi_stable::std_types::RSome(
                                format!("profile-{i:08}-abcdefghijklmnop").into(),
                            ),
                        }],
                        None,
                    )
                    .map_err(|e| anyhow::anyhow!("env update failed: {}", e.message))?;
                rt.block_on(one_get(&ep))?;
            }
            _ => {
                rt.block_on(one_get(&ep))?;
            }
        }
    }
    eprintln!(
        "{requests} requests in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
