//! `GET /secrets`: the page people use to manage their keys (SPEC §10),
//! served through the same plugin boundary as the API it calls.
//!
//! One HTML document with its script and style as two more routes of the
//! plugin (`/secrets/app.js`, `/secrets/app.css`), all embedded in the
//! library: no CDN, no build chain, works offline. Keeping the script and
//! style out of the HTML lets the page's policy forbid every inline script
//! and style (no `unsafe-inline`, no hashes to keep in step). The page only
//! ever sees what `GET /api/secrets` shows (redacted values, fingerprints,
//! sources); what the user types goes out in a `PUT` and is never read
//! back.

use poem_openapi::{
    ApiResponse, OpenApi, Tags,
    payload::{Html, PlainText},
};

/// The page's route prefix (outside `/api`: the page holds no secret, so
/// it loads without the API token and asks for it when the API does).
pub const PAGE_ROUTE: &str = "/secrets";

const PAGE: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/app.js");
const STYLE: &str = include_str!("page/app.css");

/// The page's `Content-Security-Policy`: its own script and style files,
/// requests to this host only, no inline code, no framing, no form posts.
pub(crate) const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// Static files may be kept by the browser only until they are used again.
const REVALIDATE: &str = "no-cache";

/// The page and its two files.
pub struct PageApi;

#[derive(Tags)]
enum PageTags {
    /// The secrets page: manage every key in a browser, without reading
    /// this document.
    Page,
}

#[derive(ApiResponse)]
enum PageResponse {
    /// The page (HTML); its script and style are `/secrets/app.js` and
    /// `/secrets/app.css`.
    #[oai(status = 200)]
    Ok(
        Html<&'static str>,
        /// The page's policy: its own files, requests to this host, nothing
        /// inline.
        #[oai(header = "Content-Security-Policy")]
        String,
        /// `no-cache`.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

#[derive(ApiResponse)]
enum ScriptResponse {
    /// The page's script.
    #[oai(status = 200, content_type = "text/javascript; charset=utf-8")]
    Ok(
        PlainText<&'static str>,
        /// `no-cache`.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

#[derive(ApiResponse)]
enum StyleResponse {
    /// The page's style sheet.
    #[oai(status = 200, content_type = "text/css; charset=utf-8")]
    Ok(
        PlainText<&'static str>,
        /// `no-cache`.
        #[oai(header = "Cache-Control")]
        String,
    ),
}

#[OpenApi]
impl PageApi {
    /// The secrets page
    ///
    /// A page for managing every key: keys grouped by plugin (enabled
    /// plugins first) with search; per key its state, redacted value,
    /// source, fingerprint, update time, encryption, precedence, the
    /// plugins that use it and its audit trail; several keys saved in one
    /// `PUT` with `If-Match`, the restart plan and provider warnings shown
    /// after a save. It asks for the API token when the host needs one and
    /// keeps it in session storage only.
    #[oai(path = "/secrets", method = "get", tag = "PageTags::Page")]
    async fn page(&self) -> PageResponse {
        PageResponse::Ok(Html(PAGE), PAGE_POLICY.into(), REVALIDATE.into())
    }

    /// The secrets page's script
    #[oai(path = "/secrets/app.js", method = "get", tag = "PageTags::Page")]
    async fn script(&self) -> ScriptResponse {
        ScriptResponse::Ok(PlainText(SCRIPT), REVALIDATE.into())
    }

    /// The secrets page's style sheet
    #[oai(path = "/secrets/app.css", method = "get", tag = "PageTags::Page")]
    async fn style(&self) -> StyleResponse {
        StyleResponse::Ok(PlainText(STYLE), REVALIDATE.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_has_no_inline_code_and_names_its_files() {
        let page = PAGE.to_ascii_lowercase();
        assert!(page.contains(r#"<script src="/secrets/app.js" defer></script>"#));
        assert!(page.contains(r#"<link rel="stylesheet" href="/secrets/app.css">"#));
        // Inline scripts, styles and handlers would be refused by the policy.
        assert_eq!(page.matches("<script").count(), 1, "one script, external");
        assert!(!page.contains("<style"), "no inline style element");
        assert!(!page.contains(" style="), "no style attribute");
        // No inline event handler (`onclick=`, ...).
        let handler = page.split(['<', ' ', '\n']).any(|word| {
            word.strip_prefix("on").is_some_and(|rest| {
                let name: String = rest.chars().take_while(char::is_ascii_lowercase).collect();
                !name.is_empty() && rest[name.len()..].starts_with('=')
            })
        });
        assert!(!handler, "no inline event handler attribute");
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn the_policy_allows_nothing_inline_or_foreign() {
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(PAGE_POLICY.contains(directive), "{directive}");
        }
        assert!(!PAGE_POLICY.contains("unsafe"), "{PAGE_POLICY}");
    }

    #[test]
    fn the_script_never_writes_html_from_data_or_puts_values_in_urls() {
        // Every text the page shows goes through `textContent`.
        for forbidden in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
        ] {
            assert!(!SCRIPT.contains(forbidden), "{forbidden}");
        }
        // Storage: the token, in session storage only.
        assert!(!SCRIPT.contains("localStorage"));
        assert!(!SCRIPT.contains("history.pushState") && !SCRIPT.contains("location.hash ="));
    }
}
