//! The built-in web page at `/ui`: one HTML file, one script and one style sheet, embedded in the binary
//! (no build step, no files at run time). The page holds no data of its own: every number comes from the
//! query API (`/v1/showback`, `/v1/latency`, `/v1/budgets`, `/v1/sql`) with the query key the user types
//! in, so it shows what the API answers and nothing else. Charts are plain SVG drawn by the script.

use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use http::header;

const INDEX: &str = include_str!("../assets/index.html");
const SCRIPT: &str = include_str!("../assets/app.js");
const STYLE: &str = include_str!("../assets/app.css");

/// The page's own rules: only its own script and style, requests only to this origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

/// `/ui` (and `/ui/`), `/ui/app.js`, `/ui/app.css`, and `/` redirecting to `/ui`. The assets are
/// public; the data behind them needs a virtual key with `query = true`.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { axum::response::Redirect::to("/ui") }))
        .route("/ui", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/ui/app.js", get(|| async { asset("text/javascript; charset=utf-8", SCRIPT) }))
        .route("/ui/app.css", get(|| async { asset("text/css; charset=utf-8", STYLE) }))
}

#[cfg(test)]
mod tests {
    #[test]
    fn page_refers_only_to_its_embedded_assets() {
        assert!(super::INDEX.contains("src=\"/ui/app.js\"") && super::INDEX.contains("href=\"/ui/app.css\""));
        assert!(!super::INDEX.contains("http://") && !super::INDEX.contains("https://"));
        // The SVG namespace is the script's only URL: it loads nothing from elsewhere.
        assert_eq!(super::SCRIPT.matches("http").count(), 1);
        assert!(super::SCRIPT.contains("'http://www.w3.org/2000/svg'"));
    }
}
