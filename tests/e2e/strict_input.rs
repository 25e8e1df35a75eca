//! Strict input on every route (issue 11, SPEC §11): the body limit and the
//! body deadlines on host routes too, JSON with a repeated key, values made
//! of invisible characters, deceptive characters in the config file, the
//! longest value, a bounded list of rejected keys, and the `Host` header.
//! Each against the real host on loopback; waits are upper bounds.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use e2e_tests::{HostProcess, HostSpec, client};
use serde_json::{Value, json};

use crate::{get, put};

const TOGGLE: &str = "/api/plugins/%40elizaos%2Fplugin-openai";
const CONFIG: &str = "[env]\nOPENAI_API_KEY = \"sk-original-0123456789abcdefwxyz\"\n";

fn addr(h: &HostProcess) -> String {
    h.base.trim_start_matches("http://").to_owned()
}

fn host(args: &[&str]) -> Result<HostProcess> {
    let mut spec = HostSpec::with_secrets()?.config(CONFIG);
    spec.args = args.iter().map(|a| (*a).to_owned()).collect();
    HostProcess::start(spec)
}

/// Sends raw bytes (in `pieces`, `gap` apart) and reads the answer until
/// the host closes or `timeout` passes: (status, body).
fn raw(addr: &str, pieces: &[&[u8]], gap: Duration, timeout: Duration) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_millis(50)))?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + timeout;
    let mut read_some = |s: &mut TcpStream, out: &mut Vec<u8>| -> bool {
        match s.read(&mut buf) {
            Ok(0) => true,
            Ok(n) => {
                out.extend_from_slice(&buf[..n]);
                false
            }
            Err(e) => !matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
        }
    };
    let mut closed = false;
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            let until = Instant::now() + gap;
            while Instant::now() < until && !closed {
                closed = read_some(&mut s, &mut out);
            }
        }
        if closed || !out.is_empty() || s.write_all(piece).is_err() {
            break;
        }
    }
    while !closed && Instant::now() < deadline {
        closed = read_some(&mut s, &mut out);
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status line in {text:?}"))?;
    Ok((status, body.to_owned()))
}

fn json_of(body: &str) -> Value {
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |e| e + 1);
    serde_json::from_str(body.get(start..end).unwrap_or("")).unwrap_or(Value::Null)
}

/// PUT raw JSON text (no re-serialisation, so duplicates survive).
async fn put_text(h: &HostProcess, path: &str, text: &str) -> Result<(u16, Value)> {
    let resp = client()
        .put(h.url(path))
        .header("content-type", "application/json")
        .body(text.to_owned())
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

#[tokio::test]
async fn host_routes_have_the_body_limit_and_the_body_deadlines() -> Result<()> {
    let h = host(&["--body-limit", "4096", "--body-timeout", "3"])?;
    let addr = addr(&h);
    let (_, plugins) = get(&h, "/api/plugins").await?;
    let file = std::fs::read(h.config_path())?;

    // Declared too large: refused before a byte of it is read.
    let padded = format!(r#"{{"enabled":false,"pad":"{}"}}"#, "x".repeat(8192));
    let (status, body) = put_text(&h, TOGGLE, &padded).await?;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["code"], "payload_too_large");

    // Chunked, with no length: refused once past the limit.
    let mut chunked = format!(
        "PUT {TOGGLE} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for _ in 0..4 {
        chunked.extend_from_slice(format!("800\r\n{}\r\n", "x".repeat(0x800)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (status, body) = raw(&addr, &[&chunked], Duration::ZERO, Duration::from_secs(10))?;
    assert_eq!(status, 413, "{body}");
    assert_eq!(json_of(&body)["code"], "payload_too_large");

    // A body that stalls: 408 once the stall limit (5 s) passes.
    let head = format!(
        "PUT {TOGGLE} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: 64\r\nConnection: close\r\n\r\n{{\"enab"
    );
    let (status, body) = raw(
        &addr,
        &[head.as_bytes()],
        Duration::ZERO,
        Duration::from_secs(20),
    )?;
    assert_eq!(status, 408, "{body}");
    assert_eq!(json_of(&body)["code"], "body_timeout");

    // A body that trickles a byte every 500 ms never stalls for 5 s, but
    // does not arrive in full within the 3 s body timeout: 408.
    let body_text = r#"{"enabled":false,"pad":"................"}"#;
    let head = format!(
        "PUT {TOGGLE} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body_text.len()
    );
    let mut pieces: Vec<&[u8]> = vec![head.as_bytes()];
    pieces.extend(body_text.as_bytes().chunks(1));
    let (status, body) = raw(
        &addr,
        &pieces,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )?;
    assert_eq!(status, 408, "{body}");
    assert_eq!(json_of(&body)["code"], "body_timeout");

    // Nothing changed; a body within the limits still works.
    let (_, after) = get(&h, "/api/plugins").await?;
    assert_eq!(after, plugins);
    assert_eq!(std::fs::read(h.config_path())?, file);
    let (status, body) = put(&h, TOGGLE, &json!({"enabled": false})).await?;
    assert_eq!(status, 200, "{body}");
    Ok(())
}

#[tokio::test]
async fn json_that_repeats_a_key_is_refused_naming_the_key() -> Result<()> {
    let h = host(&[])?;
    let (_, before) = get(&h, "/api/secrets").await?;
    let file = std::fs::read(h.config_path())?;

    // The last value would win: a clear hidden behind a set.
    let (status, body) = put_text(
        &h,
        "/api/secrets",
        r#"{"secrets":{"OPENAI_API_KEY":123,"OPENAI_API_KEY":""}}"#,
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "duplicate_key");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("`OPENAI_API_KEY`") && message.contains("`secrets`"),
        "{message}"
    );

    let (status, body) = put_text(
        &h,
        "/api/secrets",
        r#"{"secrets":{},"secrets":{"OPENAI_API_KEY":""}}"#,
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "duplicate_key");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`secrets`"),
        "{body}"
    );

    // The host's own routes too.
    let (status, body) = put_text(&h, TOGGLE, r#"{"enabled":false,"enabled":true}"#).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "duplicate_key");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("`enabled`"),
        "{body}"
    );

    let (_, after) = get(&h, "/api/secrets").await?;
    assert_eq!(after, before);
    assert_eq!(std::fs::read(h.config_path())?, file);
    Ok(())
}

#[tokio::test]
async fn invisible_values_are_refused_and_deceptive_characters_are_escaped_on_disk() -> Result<()> {
    // Plaintext at rest (SPEC §7's opt-out), so the escaping is visible.
    let spec =
        HostSpec::with_secrets()?.config(&format!("{CONFIG}[security]\nencrypt_env = false\n"));
    let h = HostProcess::start(spec)?;
    for invisible in [
        "\u{200b}\u{200b}",
        "\u{feff}",
        "\u{202e}",
        "\u{2060} \u{200d}",
    ] {
        let (status, body) = put(
            &h,
            "/api/secrets",
            &json!({"secrets": {"OPENAI_API_KEY": invisible}}),
        )
        .await?;
        assert_eq!(status, 400, "{invisible:?}: {body}");
        assert_eq!(body["code"], "invalid_secrets");
        assert_eq!(
            body["rejected"]["OPENAI_API_KEY"],
            "value is only invisible characters"
        );
    }
    let (_, s) = get(&h, "/api/secrets").await?;
    assert_eq!(s["secrets"]["OPENAI_API_KEY"]["value"], "sk-****...wxyz");

    // Visible, with a right-to-left override and a line separator inside:
    // stored as sent, but escaped in the file.
    let value = "sk-live-\u{202e}txt.exe\u{2028}[plugins]\u{2029}0123456789";
    let (status, body) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OPENAI_API_KEY": value}}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let text = std::fs::read_to_string(h.config_path())?;
    for raw in ['\u{202e}', '\u{2028}', '\u{2029}'] {
        assert!(!text.contains(raw), "{raw:?} written raw: {text:?}");
    }
    assert!(
        text.contains(r"\u202E") && text.contains(r"\u2028"),
        "{text}"
    );
    let doc: toml_edit::DocumentMut = text.parse()?;
    assert_eq!(doc["env"]["OPENAI_API_KEY"].as_str(), Some(value));
    Ok(())
}

#[tokio::test]
async fn values_longer_than_the_maximum_are_refused_with_their_own_reason() -> Result<()> {
    let h = host(&[])?;
    let file = std::fs::read(h.config_path())?;
    let at_limit = format!("sk-{}", "a".repeat(64 * 1024 - 3));
    let over = format!("{at_limit}b");
    let (status, body) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OPENAI_API_KEY": over}}),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_secrets");
    assert_eq!(
        body["rejected"]["OPENAI_API_KEY"],
        "value is longer than the host's maximum of 65536 bytes"
    );
    assert_eq!(std::fs::read(h.config_path())?, file);
    let (status, body) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OPENAI_API_KEY": at_limit}}),
    )
    .await?;
    assert_eq!(status, 200, "{body}");

    // Configurable.
    let h = host(&["--max-value-bytes", "32"])?;
    let (status, body) = put(
        &h,
        "/api/secrets",
        &json!({"secrets": {"OPENAI_API_KEY": "sk-0123456789abcdefghijklmnopqrstu"}}),
    )
    .await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body["rejected"]["OPENAI_API_KEY"],
        "value is longer than the host's maximum of 32 bytes"
    );
    Ok(())
}

#[tokio::test]
async fn thousands_of_bad_keys_get_a_short_error_listing_the_first_hundred() -> Result<()> {
    let h = host(&[])?;
    let file = std::fs::read(h.config_path())?;
    let secrets: serde_json::Map<String, Value> = (0..35_000)
        .map(|i| (format!("UNKNOWN_KEY_{i:05}"), json!("v")))
        .collect();
    let body = serde_json::to_string(&json!({ "secrets": secrets }))?;
    assert!(body.len() < 1024 * 1024, "within the body limit");
    let resp = client()
        .put(h.url("/api/secrets"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    assert_eq!(resp.status(), 400);
    let bytes = resp.bytes().await?;
    assert!(bytes.len() < 16 * 1024, "{} bytes of error", bytes.len());
    let err: Value = serde_json::from_slice(&bytes)?;
    assert_eq!(err["code"], "invalid_secrets");
    assert_eq!(err["rejected"].as_object().map(|m| m.len()), Some(100));
    assert!(
        err["rejected"]["UNKNOWN_KEY_00000"].is_string(),
        "the first keys are listed: {err}"
    );
    assert_eq!(err["unlisted"], 34_900);
    assert!(
        err["error"]
            .as_str()
            .unwrap_or_default()
            .contains("34900 more entries"),
        "{err}"
    );
    assert_eq!(std::fs::read(h.config_path())?, file);
    Ok(())
}

#[tokio::test]
async fn host_headers_are_strict_and_absolute_targets_are_checked() -> Result<()> {
    let h = host(&[])?;
    let addr = addr(&h);
    let send = |req: String| {
        raw(
            &addr,
            &[req.as_bytes()],
            Duration::ZERO,
            Duration::from_secs(10),
        )
    };

    // HTTP/1.1 without Host.
    let (status, body) = send("GET /api/secrets HTTP/1.1\r\nConnection: close\r\n\r\n".into())?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(json_of(&body)["code"], "bad_host");
    // Two Host headers, loopback both, or one foreign.
    for (first, second) in [
        (addr.as_str(), addr.as_str()),
        (addr.as_str(), "evil.example"),
    ] {
        let (status, body) = send(format!(
            "GET /api/secrets HTTP/1.1\r\nHost: {first}\r\nHost: {second}\r\nConnection: close\r\n\r\n"
        ))?;
        assert_eq!(status, 400, "{body}");
        assert_eq!(json_of(&body)["code"], "bad_host");
    }
    // An absolute-form target naming a foreign host, beside a loopback Host.
    let (status, body) = send(format!(
        "GET http://evil.example/api/secrets HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ))?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(json_of(&body)["code"], "forbidden_host");
    // A loopback authority is served; so is HTTP/1.0, which has no Host rule.
    let (status, body) = send(format!(
        "GET http://{addr}/api/secrets HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    ))?;
    assert_eq!(status, 200, "{body}");
    assert!(json_of(&body)["secrets"].is_object(), "{body}");
    let (status, _) = send("GET /api/health HTTP/1.0\r\n\r\n".into())?;
    assert_eq!(status, 200);
    // hyper refuses a malformed request line itself, before any route,
    // without a body (see docs/reliability.md).
    let (status, body) = send("GET /api/health HTTP/1.1 junk\r\nHost: x\r\n\r\n".into())?;
    assert_eq!(status, 400, "{body}");
    Ok(())
}
