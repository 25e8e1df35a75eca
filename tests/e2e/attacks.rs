//! Hostile input at the transport level (raw TCP, so nothing normalises the
//! request first), DNS rebinding, CORS, and leak canaries in the `Debug`
//! output of public types. Every abuse gets a clean 4xx, the host stays up,
//! and nothing is written.

use std::{
    io::{Read as _, Write as _},
    net::{Shutdown, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use e2e_tests::{HostProcess, HostSpec, artifacts, client};
use serde_json::Value;

use crate::get;

/// What the host answered on a raw connection.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: String,
}

impl Raw {
    /// The JSON error body (the first complete object in the body).
    fn json(&self) -> Value {
        let start = self.body.find('{').unwrap_or(0);
        let end = self.body.rfind('}').map_or(self.body.len(), |e| e + 1);
        serde_json::from_str(self.body.get(start..end).unwrap_or("")).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

fn addr(h: &HostProcess) -> String {
    h.base.trim_start_matches("http://").to_owned()
}

/// Sends `bytes` on a fresh connection (in `pieces` with `gap` between them),
/// half-closes if `close_write`, and reads until the host closes or
/// `timeout` passes. `None` if the host closed without answering.
fn raw_pieces(
    h: &HostProcess,
    pieces: &[&[u8]],
    gap: Duration,
    close_write: bool,
    timeout: Duration,
) -> Result<Option<Raw>> {
    raw_to(&h.base, pieces, gap, close_write, timeout)
}

/// [`raw_pieces`] to the host at `base` (`http://127.0.0.1:<port>`).
fn raw_to(
    base: &str,
    pieces: &[&[u8]],
    gap: Duration,
    close_write: bool,
    timeout: Duration,
) -> Result<Option<Raw>> {
    let mut s = TcpStream::connect(base.trim_start_matches("http://"))?;
    s.set_read_timeout(Some(timeout))?;
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(gap);
        }
        // The host may answer (and close) before everything is sent.
        if s.write_all(piece).is_err() {
            break;
        }
    }
    if close_write {
        let _ = s.shutdown(Shutdown::Write);
    }
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    if out.is_empty() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status line")?;
    let raw = Raw {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    };
    assert_ne!(
        raw.header("access-control-allow-origin"),
        Some("*"),
        "wildcard CORS"
    );
    Ok(Some(raw))
}

fn raw(h: &HostProcess, bytes: &[u8]) -> Result<Raw> {
    raw_pieces(h, &[bytes], Duration::ZERO, false, Duration::from_secs(10))?
        .context("the host closed the connection without answering")
}

/// A request with `Connection: close` and the given extra header lines.
fn request(method: &str, target: &str, host: &str, extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("{method} {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n").into_bytes();
    r.extend_from_slice(extra);
    if !body.is_empty() {
        r.extend_from_slice(
            format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            )
            .as_bytes(),
        );
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

/// The host answers, the secrets are as before, the file is as before.
async fn assert_unharmed(h: &HostProcess, secrets: &Value, file: &[u8]) -> Result<()> {
    let (status, body) = get(h, "/api/secrets").await?;
    assert_eq!(status, 200);
    assert_eq!(&body, secrets, "runtime secrets changed");
    assert_eq!(std::fs::read(h.config_path())?, file, "config file changed");
    Ok(())
}

fn assert_json_4xx(r: &Raw, what: &str) {
    assert!((400..500).contains(&r.status), "{what}: {r:?}");
    // The host's own 4xx are JSON; hyper's transport-level refusals (431,
    // malformed request line) carry no body.
    if !r.body.is_empty() {
        let j = r.json();
        assert!(
            j["error"].is_string() && j["code"].is_string(),
            "{what}: {r:?}"
        );
    }
}

const CONFIG: &str = "[env]\nOPENAI_API_KEY = \"sk-original-0123456789abcdefwxyz\"\n";

#[tokio::test]
async fn oversized_headers_are_refused_and_the_host_stays_up() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?.config(CONFIG))?;
    let host = addr(&h);
    let (_, secrets) = get(&h, "/api/secrets").await?;
    let file = std::fs::read(h.config_path())?;

    let big = format!("X-Big: {}\r\n", "a".repeat(512 * 1024));
    let r = raw(
        &h,
        &request("GET", "/api/secrets", &host, big.as_bytes(), b""),
    )?;
    assert_json_4xx(&r, "512 KiB header");
    assert_eq!(r.status, 431, "{r:?}");

    let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let r = raw(
        &h,
        &request("GET", "/api/secrets", &host, many.as_bytes(), b""),
    )?;
    assert_json_4xx(&r, "500 headers");

    let long_target = format!("/api/plugins/{}", "a".repeat(256 * 1024));
    let r = raw(
        &h,
        &request("PUT", &long_target, &host, b"", br#"{"enabled":true}"#),
    )?;
    assert_json_4xx(&r, "256 KiB request target");
    assert_unharmed(&h, &secrets, &file).await
}

#[tokio::test]
async fn content_length_lies_are_refused_and_write_nothing() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?.config(CONFIG))?;
    let host = addr(&h);
    let (_, secrets) = get(&h, "/api/secrets").await?;
    let file = std::fs::read(h.config_path())?;
    let body = br#"{"secrets":{"OPENAI_API_KEY":"sk-lie-0123456789abcdefghijklmn"}}"#;
    let head = |len: &str| {
        format!(
            "PUT /api/secrets HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
        )
        .into_bytes()
    };

    // Claims more than is sent, then the client stops sending.
    let mut more = head(&(body.len() + 100).to_string());
    more.extend_from_slice(body);
    let r = raw_pieces(&h, &[&more], Duration::ZERO, true, Duration::from_secs(10))?
        .context("no answer to a short body")?;
    assert_json_4xx(&r, "Content-Length larger than the body");
    assert_eq!(r.json()["code"], "bad_body", "{r:?}");

    // Claims less: the host reads a truncated, invalid body; the rest is
    // not a request.
    let mut less = head("10");
    less.extend_from_slice(body);
    let r = raw(&h, &less)?;
    assert_json_4xx(&r, "Content-Length smaller than the body");
    assert_eq!(r.json()["code"], "invalid_json", "{r:?}");

    // Not a number, two different values, and with chunked encoding.
    for extra in [
        "Content-Length: ten\r\n".to_owned(),
        format!("Content-Length: {}\r\nContent-Length: 5\r\n", body.len()),
        format!(
            "Content-Length: {}\r\nTransfer-Encoding: chunked\r\n",
            body.len()
        ),
    ] {
        let mut req = format!(
            "PUT /api/secrets HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
             Content-Type: application/json\r\n{extra}\r\n"
        )
        .into_bytes();
        req.extend_from_slice(body);
        // A smuggling-shaped request must not be accepted as a write.
        let r = raw_pieces(&h, &[&req], Duration::ZERO, true, Duration::from_secs(10))?
            .context("no answer")?;
        assert_eq!(r.status, 400, "{extra:?}: {r:?}");
        assert_json_4xx(&r, &extra);
    }
    assert_unharmed(&h, &secrets, &file).await
}

#[tokio::test]
async fn a_slow_body_is_bounded_and_does_not_block_others() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?.config(CONFIG))?;
    let host = addr(&h);
    let value = "sk-slowly-sent-0123456789abcdefwxyz";
    let body = format!(r#"{{"secrets":{{"OPENAI_API_KEY":"{value}"}}}}"#);
    let req = request("PUT", "/api/secrets", &host, b"", body.as_bytes());

    // Trickled in 10 pieces over about a second, while others are served.
    let addr_owned = h.base.clone();
    let slow = tokio::task::spawn_blocking(move || {
        let pieces: Vec<&[u8]> = req.chunks(req.len().div_ceil(10)).collect();
        raw_to(
            &addr_owned,
            &pieces,
            Duration::from_millis(100),
            false,
            Duration::from_secs(10),
        )
    });
    for _ in 0..5 {
        let t = Instant::now();
        let (status, _) = get(&h, "/api/health").await?;
        assert_eq!(status, 200);
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "blocked by the slow body"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let slow = slow.await??.context("no answer to the slow body")?;
    assert_eq!(slow.status, 200, "{slow:?}");
    let (_, secrets) = get(&h, "/api/secrets").await?;
    assert_eq!(
        secrets["secrets"]["OPENAI_API_KEY"]["value"],
        "sk-****...wxyz"
    );
    let file = std::fs::read(h.config_path())?;

    // Stalls after half the body: refused with 408 once the host's idle
    // limit passes, nothing written (bounded wait).
    let stalled_value = "sk-never-finished-0123456789abcdef";
    let body = format!(r#"{{"secrets":{{"OPENAI_API_KEY":"{stalled_value}"}}}}"#);
    let req = request("PUT", "/api/secrets", &host, b"", body.as_bytes());
    let t = Instant::now();
    let r = raw_pieces(
        &h,
        &[&req[..req.len() - 10]],
        Duration::ZERO,
        false,
        Duration::from_secs(20),
    )?
    .context("no answer to the stalled body")?;
    assert_eq!(r.status, 408, "{r:?}");
    assert_eq!(r.json()["code"], "body_timeout");
    assert!(t.elapsed() < Duration::from_secs(15));
    assert_unharmed(&h, &secrets, &file).await?;
    assert!(!h.log().contains(stalled_value));
    Ok(())
}

#[tokio::test]
async fn non_utf8_header_values_are_refused_cleanly() -> Result<()> {
    let h = HostProcess::start(
        HostSpec::with_secrets()?
            .config(CONFIG)
            .env("MILADY_API_TOKEN", "token-0123456789"),
    )?;
    let host = addr(&h);
    let (_, secrets) = {
        let resp = client()
            .get(h.url("/api/secrets"))
            .bearer_auth("token-0123456789")
            .send()
            .await?;
        (resp.status(), resp.json::<Value>().await?)
    };
    let file = std::fs::read(h.config_path())?;

    // Latin-1 bytes in an unrelated header, on a plugin route.
    let r = raw(
        &h,
        &request(
            "GET",
            "/api/secrets",
            &host,
            b"Authorization: Bearer token-0123456789\r\nX-Note: caf\xe9 \xff\xfe\r\n",
            b"",
        ),
    )?;
    assert_json_4xx(&r, "non-UTF-8 header");
    assert_eq!(r.json()["code"], "bad_header", "{r:?}");

    // Non-UTF-8 bytes in the token itself: refused, never matched.
    for token_line in [
        &b"Authorization: Bearer token-0123456789\xff\r\n"[..],
        &b"X-Api-Key: \xfftoken-0123456789\r\n"[..],
        &b"X-Milady-Token: token-\xc3\x28\r\n"[..],
    ] {
        let r = raw(&h, &request("GET", "/api/plugins", &host, token_line, b""))?;
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.json()["code"], "unauthorized");
    }

    // Non-UTF-8 Host: not a loopback name.
    let r = raw(
        &h,
        b"GET /api/health HTTP/1.1\r\nHost: loc\xe9lhost\r\nConnection: close\r\n\r\n",
    )?;
    assert_eq!(r.status, 403, "{r:?}");

    let resp = client()
        .get(h.url("/api/secrets"))
        .bearer_auth("token-0123456789")
        .send()
        .await?;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await?, secrets);
    assert_eq!(std::fs::read(h.config_path())?, file);
    Ok(())
}

#[tokio::test]
async fn path_traversal_in_plugin_ids_finds_nothing_and_writes_nothing() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?.config(CONFIG))?;
    let host = addr(&h);
    let (_, secrets) = get(&h, "/api/secrets").await?;
    let (_, plugins) = get(&h, "/api/plugins").await?;
    let file = std::fs::read(h.config_path())?;
    let enable = br#"{"enabled":true}"#;
    for target in [
        "/api/plugins/..%2F..%2Fetc%2Fpasswd",
        "/api/plugins/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/plugins/..%252F..%252Fetc",
        "/api/plugins/../../etc/passwd",
        "/api/plugins/..",
        "/api/plugins/%00",
        "/api/plugins/x%22%5D%0A%5Benv%5D%0APATH%3D%22%2Ftmp",
        "/api/plugins/%40elizaos%2Fplugin-openai%2F..%2F..%2Fevil",
        "/api/plugins/%ff%fe",
    ] {
        let r = raw(&h, &request("PUT", target, &host, b"", enable))?;
        assert_json_4xx(&r, target);
        assert!(!r.body.contains("root:"), "{target}: {r:?}");
    }
    for target in [
        "/../../etc/passwd",
        "/docs/..%2F..%2Fetc%2Fpasswd",
        "/openapi.json/../../../etc/passwd",
    ] {
        let r = raw(&h, &request("GET", target, &host, b"", b""))?;
        assert!(r.status == 404 || r.status == 400, "{target}: {r:?}");
        assert!(!r.body.contains("root:"), "{target}: {r:?}");
    }
    let (_, after) = get(&h, "/api/plugins").await?;
    assert_eq!(after, plugins, "no plugin appeared or changed");
    assert!(!h.dir.path().join("etc").exists());
    assert_unharmed(&h, &secrets, &file).await
}

#[tokio::test]
async fn foreign_host_names_get_403_and_loopback_names_pass() -> Result<()> {
    let h =
        HostProcess::start(HostSpec::with_secrets()?.env("MILADY_API_TOKEN", "token-0123456789"))?;
    let port = addr(&h)
        .rsplit_once(':')
        .map(|(_, p)| p.to_owned())
        .context("port")?;
    let auth = b"Authorization: Bearer token-0123456789\r\n";
    for foreign in [
        "evil.example".to_owned(),
        format!("evil.example:{port}"),
        format!("127.0.0.1.evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        "10.0.0.1".to_owned(),
        "[::2]".to_owned(),
        String::new(),
    ] {
        for path in ["/api/secrets", "/api/plugins", "/openapi.json", "/docs"] {
            // A rebinding page has the token only if it was leaked; refuse anyway.
            let r = raw(&h, &request("GET", path, &foreign, auth, b""))?;
            assert_eq!(r.status, 403, "{foreign} {path}: {r:?}");
            assert_eq!(r.json()["code"], "forbidden_host");
        }
    }
    for local in [
        format!("localhost:{port}"),
        format!("LOCALHOST:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        format!("app.localhost:{port}"),
        "localhost".to_owned(),
    ] {
        let r = raw(&h, &request("GET", "/api/secrets", &local, auth, b""))?;
        assert_eq!(r.status, 200, "{local}: {r:?}");
    }
    Ok(())
}

#[tokio::test]
async fn no_response_carries_wildcard_cors_not_even_a_preflight() -> Result<()> {
    let h = HostProcess::start(HostSpec::with_secrets()?)?;
    let host = addr(&h);
    for (method, path) in [
        ("OPTIONS", "/api/secrets"),
        ("OPTIONS", "/api/plugins/%40elizaos%2Fplugin-openai"),
        ("OPTIONS", "/openapi.json"),
        ("GET", "/api/secrets"),
        ("GET", "/api/plugins"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/nowhere"),
    ] {
        let r = raw(
            &h,
            &request(
                method,
                path,
                &host,
                b"Origin: https://evil.example\r\nAccess-Control-Request-Method: PUT\r\n\
                  Access-Control-Request-Headers: content-type\r\n",
                b"",
            ),
        )?;
        for header in [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-allow-methods",
            "access-control-allow-headers",
        ] {
            assert_eq!(r.header(header), None, "{method} {path}: {r:?}");
        }
        // Without these headers a browser refuses the cross-origin call,
        // whatever the status of the preflight.
        assert!(r.status < 500, "{method} {path}: {r:?}");
    }
    Ok(())
}

#[tokio::test]
async fn debug_output_of_public_types_never_shows_a_secret() -> Result<()> {
    use host_api::abi_stable::std_types::{RNone, RSome, RVec, Tuple2};
    use host_api::{EnvChange, EnvSnapshot, EnvSource, EnvVar, FfiRequest, FfiResponse, HostError};

    const CANARY: &str = "sk-debug-canary-7f3a9c1e5b";
    let leaks = |what: &str, text: String| {
        assert!(!text.contains(CANARY), "{what} leaks the secret: {text}");
    };

    let var = EnvVar {
        key: "OPENAI_API_KEY".into(),
        value: CANARY.into(),
        source: EnvSource::Api,
    };
    leaks("EnvVar", format!("{var:?} {var:#?}"));
    let snapshot = EnvSnapshot {
        version: 3,
        vars: RVec::from(vec![var]),
    };
    leaks("EnvSnapshot", format!("{snapshot:?} {snapshot:#?}"));
    let set = EnvChange {
        key: "OPENAI_API_KEY".into(),
        value: RSome(CANARY.into()),
    };
    let clear = EnvChange {
        key: "OPENAI_API_KEY".into(),
        value: RNone,
    };
    leaks("EnvChange", format!("{set:?} {clear:#?}"));
    let body = format!(r#"{{"secrets":{{"OPENAI_API_KEY":"{CANARY}"}}}}"#);
    let req = FfiRequest {
        method: "PUT".into(),
        uri: "/api/secrets".into(),
        headers: RVec::from(vec![Tuple2(
            "authorization".into(),
            format!("Bearer {CANARY}").as_str().into(),
        )]),
        body: body.as_bytes().to_vec().into(),
    };
    leaks("FfiRequest", format!("{req:?} {req:#?}"));
    let resp = FfiResponse::json(200, body.clone());
    leaks("FfiResponse", format!("{resp:?} {resp:#?}"));
    let err = HostError::new(HostError::REJECTED, "1 key refused")
        .with_detail("OPENAI_API_KEY", "value is empty or contains NUL");
    leaks("HostError", format!("{err:?}"));

    // The host's own types, built from a config and process environment
    // that hold the canary.
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("milady.toml");
    std::fs::write(
        &config,
        format!("[env]\nOPENAI_API_KEY = \"{CANARY}\"\n[security]\nblocked_env_keys = []\n"),
    )?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins)?;
    let a = artifacts()?;
    std::fs::copy(&a.secrets, plugins.join("libsecrets_plugin.so"))?;
    std::fs::write(plugins.join("junk.so"), CANARY)?;
    let store = demo_host::ConfigStore::new(&config);
    leaks("ConfigStore", format!("{store:?}"));
    let loaded = store.load()?;
    leaks("ConfigSnapshot", format!("{loaded:?} {loaded:#?}"));

    let mut options = demo_host::HostOptions::new(&config);
    options.plugins_dir = Some(plugins.clone());
    options.token = Some(CANARY.to_owned());
    options.secrets_key = demo_host::SecretsKey::choose(None, Some(CANARY.to_owned()), None, None)?;
    leaks("HostOptions", format!("{options:?} {options:#?}"));
    let host = demo_host::Host::build(
        options,
        vec![("ANTHROPIC_API_KEY".to_owned(), CANARY.to_owned())],
    )?;
    leaks("runtime EnvSnapshot", format!("{:?}", host.env.snapshot()));
    leaks("KeyPolicy", format!("{:?}", host.env.policy()));
    leaks("SkippedPlugin", format!("{:?}", host.skipped));
    for m in &host.plugins {
        leaks("LoadedPlugin", format!("{:?} {:#?}", m.plugin, m.plugin));
    }
    assert_eq!(host.plugins.len(), 1, "the secrets plugin loaded");

    // Errors about a file that holds the canary quote no content.
    std::fs::write(&config, format!("[env]\nBROKEN = = \"{CANARY}\"\n"))?;
    let err = store.load().expect_err("invalid TOML");
    leaks("ConfigError", format!("{err:?} {err}"));
    std::fs::write(&config, format!("env = \"{CANARY}\"\n"))?;
    let err = store.load().expect_err("wrong shape");
    leaks("ConfigError (shape)", format!("{err:?} {err}"));
    let err = demo_host::load_plugin(&plugins.join("junk.so")).expect_err("not a library");
    leaks("LoadError", format!("{err:?} {err}"));
    Ok(())
}
