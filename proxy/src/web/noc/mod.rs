//! The NOC status page: one HTML page, one script and one stylesheet, embedded in the binary
//! (no build toolchain, nothing fetched from elsewhere), served at `/` next to the JSON API
//! the page polls (`/api/rigs`, `/api/pools`, `/api/power`, `/api/power/history`) and posts
//! drains and resumes to (`/api/drain`, `/api/resume`, with the bearer token).
//!
//! Invariants: the page's script puts data in the DOM only as text (never as markup), and the
//! page is served with a Content-Security-Policy that allows only this origin's script, style
//! and API calls (no inline script, no eval, no framing), so even a hostile worker name cannot
//! run code in an operator's browser.

use axum::Router;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName};
use axum::response::IntoResponse;
use axum::routing::get;

/// The page.
pub const INDEX_HTML: &str = include_str!("index.html");
/// Its script.
pub const NOC_JS: &str = include_str!("noc.js");
/// Its stylesheet.
pub const NOC_CSS: &str = include_str!("noc.css");

/// The page's Content-Security-Policy: this origin only, no inline script or style
/// attributes, no plugins, no framing, no form posts elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The page's routes; they need no state, so they mount on any router (tests mount them over
/// a fake API).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/noc.js",
            get(|| async { asset("text/javascript; charset=utf-8", NOC_JS) }),
        )
        .route(
            "/noc.css",
            get(|| async { asset("text/css; charset=utf-8", NOC_CSS) }),
        )
}

/// Total size of the page's assets (bytes), as served (uncompressed).
pub fn page_bytes() -> usize {
    INDEX_HTML.len() + NOC_JS.len() + NOC_CSS.len()
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, content_type),
            (HeaderName::from_static("content-security-policy"), CSP),
            // The binary is the version: revalidate rather than run a stale script.
            (CACHE_CONTROL, "no-cache"),
            (HeaderName::from_static("referrer-policy"), "no-referrer"),
            (HeaderName::from_static("x-frame-options"), "DENY"),
        ],
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_assets_and_no_inline_script() {
        assert!(INDEX_HTML.contains(r#"<script src="noc.js" defer></script>"#));
        assert!(INDEX_HTML.contains(r#"<link rel="stylesheet" href="noc.css">"#));
        assert!(!INDEX_HTML.contains("http://") && !INDEX_HTML.contains("https://"));
        assert!(!INDEX_HTML.contains("style="));
        // One <script> element, the external one.
        assert_eq!(INDEX_HTML.matches("<script").count(), 1);
    }

    #[test]
    fn the_script_never_writes_markup() {
        for sink in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "eval(",
        ] {
            assert!(!NOC_JS.contains(sink), "noc.js uses {sink}");
        }
        assert!(CSP.contains("script-src 'self'") && !CSP.contains("unsafe"));
    }
}
