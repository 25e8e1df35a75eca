//! The boundary the host can trust (SPEC §5), against the real binary: no
//! library in the plugin folder, and nothing done to a file in it after
//! start-up, stops the host from serving the rest.
//!
//! Fixtures: C libraries whose constructor aborts, segfaults, exits or
//! hangs, and one without a root module whose destructor aborts
//! (`tests/fixtures/c/`); a plugin exported without layout information; the
//! boundary plugin (lying framing headers, a future that never completes,
//! a `poll` that blocks its thread, host services from `init` and from its
//! own thread; `tests/fixtures/boundary-plugin`).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use e2e_tests::{HostProcess, HostSpec, artifacts, c_libraries, client, library_file_name};
use serde_json::{Value, json};

use crate::{get, put};

/// The file name the harness gives the secrets plugin.
fn secrets_file() -> String {
    library_file_name("libsecrets_plugin")
}

/// The one `plugin skipped` line naming `file` (the test fails unless
/// there is exactly one).
fn skip_line(log: &str, file: &str) -> String {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("plugin skipped") && l.contains(file))
        .collect();
    assert_eq!(lines.len(), 1, "{file}: expected one skip line in\n{log}");
    lines[0].to_owned()
}

/// A spec with extra command-line arguments.
fn with_args(mut spec: HostSpec, args: &[&str]) -> HostSpec {
    spec.args.extend(args.iter().map(|a| (*a).to_owned()));
    spec
}

#[tokio::test]
async fn libraries_that_crash_exit_or_hang_when_loaded_are_skipped_by_name_and_the_host_serves()
-> Result<()> {
    let a = artifacts()?;
    let c = c_libraries()?;
    let fixtures = [
        (&c.ctor_abort, "libctor_abort.so", "SIGABRT"),
        (&c.ctor_segfault, "libctor_segfault.so", "SIGSEGV"),
        (&c.ctor_exit, "libctor_exit.so", "exit status 3"),
        (&c.ctor_hang, "libctor_hang.so", "did not finish within 2 s"),
        (
            &c.dtor_abort_no_root,
            "libdtor_abort_no_root.so",
            "exports no abi_stable root module",
        ),
        (
            &a.no_layout,
            "libno_layout.so",
            "without layout information",
        ),
    ];
    let mut spec = with_args(HostSpec::with_secrets()?, &["--plugin-timeout", "2"]);
    for (source, name, _) in &fixtures {
        spec = spec.plugin(source, name);
    }
    let h = HostProcess::start(spec)?;
    let (status, body) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 200, "{body}");
    let (status, _) = get(&h, "/api/no-layout").await?;
    assert_eq!(status, 404, "the plugin without layout serves nothing");
    let log = h.log();
    for (_, file, reason) in &fixtures {
        let line = skip_line(&log, file);
        assert!(line.contains(reason), "{file}: {line}");
        assert!(line.contains("probe=\"run\""), "{file}: {line}");
    }
    // The destructor fixture was refused for what it is, not for a crash:
    // the probe kept it open instead of unloading it.
    assert!(!skip_line(&log, "libdtor_abort_no_root.so").contains("crashed"));

    // A warm start takes every refusal, the hang included, from the cache.
    let h = h.restart()?;
    let (status, _) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 200);
    let log = h.log();
    for (_, file, reason) in &fixtures {
        let line = skip_line(&log, file);
        assert!(line.contains(reason), "{file}: {line}");
        assert!(line.contains("probe=\"cached\""), "{file}: {line}");
    }
    let loaded = log
        .lines()
        .find(|l| l.contains("plugin loaded") && l.contains(&secrets_file()))
        .unwrap_or_default();
    assert!(loaded.contains("probe=\"cached\""), "{loaded}");
    Ok(())
}

#[test]
fn the_probe_keeps_a_refused_library_open_and_reports_instead_of_crashing() -> Result<()> {
    let a = artifacts()?;
    let c = c_libraries()?;
    let out = Command::new(&a.host)
        .args(["plugin", "probe"])
        .arg(&c.dtor_abort_no_root)
        .env("RUST_LOG", "off")
        .output()?;
    // Unloading the refused library would run its destructor: SIGABRT.
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .with_context(|| format!("no report in {stdout:?}"))?;
    assert_eq!(report["ok"], false);
    let reason = report["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("no abi_stable root module"), "{reason}");
    Ok(())
}

#[tokio::test]
async fn overwriting_a_loaded_library_in_place_never_reaches_the_running_host() -> Result<()> {
    let a = artifacts()?;
    let mut h = HostProcess::start(HostSpec::with_secrets()?)?;
    let library = h.dir.path().join("plugins").join(secrets_file());
    let hello = std::fs::read(&a.hello)?;
    let original = std::fs::read(&library)?;
    // What people do to the file: `cp other.so plugins/x.so` (truncate,
    // then write in place), a truncation, junk, half a library, removal.
    let overwrites: [(&str, FileChange<'_>); 5] = [
        (
            "truncated to nothing",
            Box::new(|| overwrite(&library, b"")),
        ),
        (
            "another plugin copied over it",
            Box::new(|| overwrite(&library, &hello)),
        ),
        (
            "junk",
            Box::new(|| overwrite(&library, b"not a library any more")),
        ),
        (
            "half of itself",
            Box::new(|| overwrite(&library, &original[..original.len() / 2])),
        ),
        ("removed", Box::new(|| std::fs::remove_file(&library))),
    ];
    // Traffic from other clients all along, while the file changes.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic: Vec<_> = (0..2)
        .map(|n| {
            let (stop, url) = (stop.clone(), h.url("/api/secrets"));
            tokio::spawn(async move {
                let (mut served, mut failed) = (0u32, Vec::new());
                let c = client();
                let mut i = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let resp = if i.is_multiple_of(4) {
                        let value = format!("sk-traffic-{n}-{i}-0123456789abcdef");
                        let body = json!({"secrets": {"OPENAI_API_KEY": value}});
                        c.put(&url).json(&body).send().await
                    } else {
                        c.get(&url).send().await
                    };
                    match resp {
                        Ok(r) if r.status() == 200 => served += 1,
                        Ok(r) => failed.push(r.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (served, failed)
            })
        })
        .collect();
    for (i, (what, change)) in overwrites.iter().enumerate() {
        change()?;
        for _ in 0..5 {
            let (status, body) = get(&h, "/api/secrets").await?;
            assert_eq!(status, 200, "after {what}: {body}");
            assert!(
                body["secrets"]["OPENAI_API_KEY"].is_object(),
                "after {what}"
            );
        }
        let value = format!("sk-overwrite-{i}-0123456789abcdef");
        let (status, body) = put(
            &h,
            "/api/secrets",
            &json!({"secrets": {"OPENAI_API_KEY": value}}),
        )
        .await?;
        assert_eq!(status, 200, "PUT after {what}: {body}");
        assert!(h.is_running(), "after {what}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in traffic {
        let (served, failed) = task.await?;
        assert!(served > 0, "the other clients were served");
        assert!(failed.is_empty(), "requests failed meanwhile: {failed:?}");
    }
    let (status, body) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 200);
    assert_eq!(body["secrets"]["OPENAI_API_KEY"]["set"], true);
    Ok(())
}

/// Something done to a file of the plugin folder.
type FileChange<'a> = Box<dyn Fn() -> std::io::Result<()> + 'a>;

/// Rewrites `path` in place, as `cp` does: same inode, truncated, written.
fn overwrite(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// One HTTP/1.1 response read off a connection: its head and body, framed
/// by its own `Content-Length`.
#[derive(Debug)]
struct Framed {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Framed {
    fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Reads the next response from `buf` (filled from `stream` as needed).
fn next_response(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Framed> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if Instant::now() > deadline {
            bail!(
                "no complete response head in {:?}",
                String::from_utf8_lossy(buf)
            );
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!(
                "connection closed mid-head: {:?}",
                String::from_utf8_lossy(buf)
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let framed = Framed {
        status,
        headers,
        body: Vec::new(),
    };
    let lengths = framed.all("content-length");
    assert!(
        lengths.len() <= 1 && framed.all("transfer-encoding").is_empty(),
        "the host frames with one Content-Length: {framed:?}"
    );
    let length: usize = lengths.first().and_then(|l| l.parse().ok()).unwrap_or(0);
    while buf.len() < head_end + length {
        if Instant::now() > deadline {
            bail!("body shorter than its Content-Length");
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("connection closed mid-body");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[head_end..head_end + length].to_vec();
    buf.drain(..head_end + length);
    Ok(Framed { body, ..framed })
}

#[tokio::test]
async fn a_plugin_cannot_frame_its_own_response_even_on_a_pipelined_connection() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(HostSpec::with_secrets()?.plugin(&a.boundary, "libboundary.so"))?;
    let addr = h.base.trim_start_matches("http://").to_owned();
    let mut stream = TcpStream::connect(&addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(20)))?;
    // Three requests in one write: the plugin's lying headers must not
    // change where the host's responses begin and end.
    let requests = format!(
        "GET /api/boundary/bad-headers HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /api/boundary/bad-headers HTTP/1.1\r\nHost: {addr}\r\n\r\n\
         GET /api/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(requests.as_bytes())?;
    let mut buf = Vec::new();
    for _ in 0..2 {
        let r = next_response(&mut stream, &mut buf)?;
        assert_eq!(r.status, 200, "{r:?}");
        assert_eq!(r.body, b"hello", "{r:?}");
        assert_eq!(r.all("content-length"), ["5"], "{r:?}");
        assert_eq!(r.all("x-kept"), ["yes"], "{r:?}");
        for dropped in [
            "transfer-encoding",
            "connection",
            "keep-alive",
            "upgrade",
            "te",
            "trailer",
            "proxy-authenticate",
        ] {
            assert!(r.all(dropped).is_empty(), "{dropped} forwarded: {r:?}");
        }
    }
    let health = next_response(&mut stream, &mut buf)?;
    assert_eq!(health.status, 200, "{health:?}");
    let body: Value = serde_json::from_slice(&health.body)?;
    assert_eq!(body["status"], "ok");
    Ok(())
}

#[tokio::test]
async fn manifest_openapi_and_init_are_bounded_by_the_plugin_timeout() -> Result<()> {
    let a = artifacts()?;
    for (variable, value, entry) in [
        ("BOUNDARY_HANG_IN", "manifest", "did not finish within 1 s"),
        (
            "BOUNDARY_HANG_IN",
            "openapi_json",
            "did not finish within 1 s",
        ),
        ("BOUNDARY_INIT", "hang", "`init` did not finish within 1 s"),
    ] {
        let spec = with_args(
            HostSpec::with_secrets()?
                .plugin(&a.boundary, "libboundary.so")
                .env(variable, value),
            &["--plugin-timeout", "1"],
        );
        let h = HostProcess::start(spec)?;
        let (status, _) = get(&h, "/api/secrets").await?;
        assert_eq!(status, 200, "{value}");
        let (status, _) = get(&h, "/api/boundary/anything").await?;
        assert_eq!(status, 404, "{value}: the plugin serves nothing");
        let line = skip_line(&h.log(), "libboundary.so");
        assert!(line.contains(entry), "{value}: {line}");
        let (_, plugins) = get(&h, "/api/plugins").await?;
        let listed = plugins["plugins"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["id"] == "@fixtures/boundary"));
        assert!(!listed, "{value}: an unmounted plugin is not registered");
    }
    Ok(())
}

#[tokio::test]
async fn a_plugin_past_the_request_timeout_answers_504_json() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(with_args(
        HostSpec::with_secrets()?.plugin(&a.boundary, "libboundary.so"),
        &["--request-timeout", "1"],
    ))?;
    for path in ["/api/boundary/hang", "/api/boundary/block?ms=3000"] {
        let (status, body) = get(&h, path).await?;
        assert_eq!(status, 504, "{path}: {body}");
        assert_eq!(body["code"], "plugin_timeout", "{path}");
        assert!(
            body["error"].as_str().is_some_and(|e| e.contains("1 s")),
            "{body}"
        );
    }
    let (status, _) = get(&h, "/api/boundary/fine").await?;
    assert_eq!(status, 200);
    let (status, _) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn plugins_blocking_their_threads_do_not_stall_the_host() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(HostSpec::with_secrets()?.plugin(&a.boundary, "libboundary.so"))?;
    // More blocking requests than a 2-core host has workers: had plugin
    // futures run on the host's workers, every one would be blocked.
    let blockers: Vec<_> = (0..4)
        .map(|_| {
            let url = h.url("/api/boundary/block?ms=20000");
            tokio::spawn(async move { client().get(url).send().await })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while h.log().matches("blocking its thread inside poll").count() < 2 {
        assert!(Instant::now() < deadline, "the blockers never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for path in ["/api/health", "/api/plugins"] {
        let (status, _) = get(&h, path).await?;
        assert_eq!(status, 200, "{path}");
    }
    let docs = client().get(h.url("/docs")).send().await?;
    assert_eq!(docs.status(), 200);
    assert!(
        blockers.iter().all(|b| !b.is_finished()),
        "the host answered while the plugin's threads were still blocked"
    );
    for b in blockers {
        b.abort();
    }
    Ok(())
}

#[tokio::test]
async fn a_body_trickled_past_the_body_timeout_is_a_408_json() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(with_args(
        HostSpec::with_secrets()?.plugin(&a.boundary, "libboundary.so"),
        &["--body-timeout", "2"],
    ))?;
    let addr = h.base.trim_start_matches("http://").to_owned();
    let answer = tokio::task::spawn_blocking(move || -> Result<String> {
        let mut s = TcpStream::connect(&addr)?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        s.write_all(
            format!(
                "PUT /api/boundary/echo HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
                 Content-Length: 200\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )?;
        // A byte every 250 ms: never idle for long, never complete; stop
        // once the host answers (bounded: 200 bytes would take 50 s).
        let mut out = Vec::new();
        let mut chunk = [0u8; 4096];
        for _ in 0..200 {
            if s.write_all(b" ").is_err() {
                break;
            }
            match s.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&chunk[..n]);
                    break;
                }
                Err(_) => {}
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        let _ = s.read_to_end(&mut out);
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
    .await??;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json: Value = serde_json::from_str(body).with_context(|| answer.clone())?;
    assert_eq!(json["code"], "body_timeout", "{answer}");
    let (status, _) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn the_largest_body_limit_does_not_overflow() -> Result<()> {
    let h = HostProcess::start(with_args(
        HostSpec::with_secrets()?,
        &["--body-limit", "18446744073709551615"],
    ))?;
    let (status, body) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OPENAI_API_KEY": "sk-max-limit-0123456789abcdef"}}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let (_, body) = get(&h, "/api/secrets").await?;
    assert_eq!(body["secrets"]["OPENAI_API_KEY"]["set"], true);
    Ok(())
}

#[tokio::test]
async fn init_may_block_on_update_env_outside_any_runtime() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(
        HostSpec::with_secrets()?
            .plugin(&a.boundary, "libboundary.so")
            .env("BOUNDARY_INIT", "update-env"),
    )?;
    let (status, body) = get(&h, "/api/boundary/fine").await?;
    assert_eq!(status, 200, "the plugin is mounted: {body}\n{}", h.log());
    let (_, secrets) = get(&h, "/api/secrets").await?;
    assert_eq!(
        secrets["secrets"]["BOUNDARY_INIT_KEY"]["set"], true,
        "{secrets}"
    );
    let config = std::fs::read_to_string(h.config_path())?;
    assert!(config.contains("BOUNDARY_INIT_KEY"), "{config}");
    Ok(())
}

#[tokio::test]
async fn a_plugin_thread_may_call_update_env() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(
        HostSpec::with_secrets()?
            .plugin(&a.boundary, "libboundary.so")
            .env("BOUNDARY_INIT", "thread-update-env"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let outcome = loop {
        let (status, body) = get(&h, "/api/boundary/thread").await?;
        assert_eq!(status, 200, "{body}");
        if body["done"] == true {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the plugin's thread never finished"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(outcome["ok"], true, "{outcome}\n{}", h.log());
    let (_, secrets) = get(&h, "/api/secrets").await?;
    assert_eq!(
        secrets["secrets"]["BOUNDARY_THREAD_KEY"]["set"], true,
        "{secrets}"
    );
    let config = std::fs::read_to_string(h.config_path())?;
    assert!(config.contains("BOUNDARY_THREAD_KEY"), "{config}");
    Ok(())
}

#[tokio::test]
async fn a_host_service_that_panics_is_an_error_for_the_plugin_not_an_abort() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let fault = dir.path().join("fault");
    std::fs::write(&fault, "")?;
    let mut h = HostProcess::start(
        HostSpec::with_secrets()?.env("DEMO_HOST_FAULT_FILE", &fault.display().to_string()),
    )?;
    // From now on the config writer panics (a host bug).
    std::fs::write(&fault, "panic")?;
    let (status, body) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OPENAI_API_KEY": "sk-during-panic-0123456789"}}),
    )
    .await?;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], "internal_error", "{body}");
    assert!(h.is_running(), "the panic stayed inside the host service");
    let (status, _) = get(&h, "/api/secrets").await?;
    assert_eq!(status, 200);
    std::fs::write(&fault, "")?;
    let (status, body) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OPENAI_API_KEY": "sk-after-panic-0123456789"}}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

/// Checks the four security headers of a response; returns its policy.
fn assert_secured(resp: &reqwest::Response, what: &str) -> String {
    let h = resp.headers();
    let one = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(one("x-content-type-options"), "nosniff", "{what}");
    assert_eq!(one("x-frame-options"), "DENY", "{what}");
    assert_eq!(one("referrer-policy"), "no-referrer", "{what}");
    let policy = one("content-security-policy");
    assert!(policy.contains("frame-ancestors"), "{what}: {policy:?}");
    policy
}

#[tokio::test]
async fn every_response_carries_the_security_headers() -> Result<()> {
    let a = artifacts()?;
    let h = HostProcess::start(
        HostSpec::with_secrets()?
            .plugin(&a.boundary, "libboundary.so")
            .env("MILADY_API_TOKEN", "t0ken-for-headers"),
    )?;
    let c = client();
    let auth = ("authorization", "Bearer t0ken-for-headers");
    let cases = [
        ("GET", "/docs", None, 200),
        ("GET", "/openapi.json", None, 200),
        ("GET", "/api/health", Some(auth), 200),
        ("GET", "/api/secrets", Some(auth), 200),
        ("GET", "/api/secrets", None, 401),
        ("GET", "/api/nowhere", Some(auth), 404),
        ("GET", "/nowhere", None, 404),
        ("DELETE", "/api/plugins", Some(auth), 405),
        ("PUT", "/api/secrets", Some(auth), 400),
        ("GET", "/api/boundary/bad-headers", Some(auth), 200),
    ];
    for (method, path, header, want) in cases {
        let mut req = c.request(method.parse()?, h.url(path));
        if let Some((name, value)) = header {
            req = req.header(name, value);
        }
        if method == "PUT" {
            req = req
                .header("content-type", "application/json")
                .body("{not json");
        }
        let resp = req.send().await?;
        let what = format!("{method} {path}");
        assert_eq!(resp.status().as_u16(), want, "{what}");
        let policy = assert_secured(&resp, &what);
        if path == "/docs" {
            // Swagger UI's own inline scripts by hash; no eval, no framing.
            assert!(policy.contains("script-src 'sha256-"), "{policy}");
            assert!(!policy.contains("unsafe-eval"), "{policy}");
            assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        } else {
            assert!(
                policy.contains("frame-ancestors 'none'"),
                "{what}: {policy}"
            );
        }
    }
    // A plugin's own policy is kept; the host adds only what it lacks.
    let page = c
        .get(h.url("/api/boundary/page"))
        .header(auth.0, auth.1)
        .send()
        .await?;
    let policy = assert_secured(&page, "plugin page");
    assert_eq!(policy, "default-src 'self'; frame-ancestors 'none'");
    let framed = c
        .get(h.url("/api/boundary/framed-page"))
        .header(auth.0, auth.1)
        .send()
        .await?;
    let policy = assert_secured(&framed, "plugin page with frame-ancestors");
    assert_eq!(policy, "default-src 'self'; frame-ancestors 'self'");
    Ok(())
}

#[tokio::test]
async fn listed_origins_get_cors_and_foreign_origins_cannot_change_state() -> Result<()> {
    const UI: &str = "http://localhost:5173";
    const TOKEN: &str = "t0ken-for-cors";
    let h = HostProcess::start(
        HostSpec::with_secrets()?
            .env(
                "MILADY_ALLOWED_ORIGINS",
                &format!("{UI}, https://app.example"),
            )
            .env("MILADY_API_TOKEN", TOKEN),
    )?;
    let c = client();
    let bearer = format!("Bearer {TOKEN}");
    let own = h.base.clone();

    // A preflight carries no token: answered before auth.
    let pre = c
        .request(reqwest::Method::OPTIONS, h.url("/api/secrets"))
        .header("origin", UI)
        .header("access-control-request-method", "PUT")
        .header(
            "access-control-request-headers",
            "authorization, content-type",
        )
        .send()
        .await?;
    assert_eq!(pre.status(), 204);
    let header = |r: &reqwest::Response, n: &str| {
        r.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header(&pre, "access-control-allow-origin"), UI);
    assert!(header(&pre, "access-control-allow-methods").contains("PUT"));
    let allowed_headers = header(&pre, "access-control-allow-headers");
    assert!(allowed_headers.contains("authorization") && allowed_headers.contains("content-type"));
    assert_secured(&pre, "preflight");

    let foreign_pre = c
        .request(reqwest::Method::OPTIONS, h.url("/api/secrets"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "PUT")
        .send()
        .await?;
    assert_eq!(foreign_pre.status(), 403);
    assert_eq!(header(&foreign_pre, "access-control-allow-origin"), "");

    // Reads from the listed origin carry CORS headers.
    let read = c
        .get(h.url("/api/secrets"))
        .header("origin", UI)
        .header("authorization", &bearer)
        .send()
        .await?;
    assert_eq!(read.status(), 200);
    assert_eq!(header(&read, "access-control-allow-origin"), UI);
    assert!(header(&read, "vary").contains("Origin"));

    let before = std::fs::read(h.config_path()).unwrap_or_default();
    for origin in ["https://evil.example", "null", "http://localhost:5174"] {
        let resp = c
            .put(h.url("/api/secrets"))
            .header("origin", origin)
            .header("authorization", &bearer)
            .json(&json!({"secrets": {"OPENAI_API_KEY": "sk-from-a-foreign-page-0123"}}))
            .send()
            .await?;
        assert_eq!(resp.status(), 403, "{origin}");
        assert_eq!(header(&resp, "access-control-allow-origin"), "", "{origin}");
        let body: Value = resp.json().await?;
        assert_eq!(body["code"], "forbidden_origin", "{origin}: {body}");
    }
    assert_eq!(
        std::fs::read(h.config_path()).unwrap_or_default(),
        before,
        "nothing written for a foreign origin"
    );
    // Without a token a foreign write is still refused for its origin first.
    let anon = c
        .put(h.url("/api/secrets"))
        .header("origin", "https://evil.example")
        .json(&json!({"secrets": {"OPENAI_API_KEY": "sk-x-0123456789abcdef"}}))
        .send()
        .await?;
    assert_eq!(anon.status(), 403);

    for (origin, value) in [
        (Some(UI), "sk-from-the-ui-0123456789"),
        (Some(own.as_str()), "sk-from-the-docs-0123456789"),
        (None, "sk-from-curl-0123456789abc"),
    ] {
        let mut req = c
            .put(h.url("/api/secrets"))
            .header("authorization", &bearer)
            .json(&json!({"secrets": {"OPENAI_API_KEY": value}}));
        if let Some(origin) = origin {
            req = req.header("origin", origin);
        }
        let resp = req.send().await?;
        assert_eq!(resp.status(), 200, "{origin:?}");
    }
    Ok(())
}

#[tokio::test]
async fn an_invalid_allowed_origin_stops_start_up_naming_it() -> Result<()> {
    let result = HostProcess::start(HostSpec::with_secrets()?.env(
        "MILADY_ALLOWED_ORIGINS",
        "http://ok.example, localhost:3000",
    ));
    let Err(error) = result else {
        bail!("the host started with an invalid origin");
    };
    let text = format!("{error:#}");
    assert!(
        text.contains("`localhost:3000`") && text.contains("MILADY_ALLOWED_ORIGINS"),
        "{text}"
    );
    Ok(())
}
