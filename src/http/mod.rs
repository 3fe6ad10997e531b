//! Serving HTTP safely, for both listeners (the public pages and the operators'
//! endpoints): `listener` is the connection guard (timeouts, lifetimes, per-client and
//! total caps, served with hyper), `client` says who a request comes from (the peer,
//! or the address a trusted proxy forwarded), and every response gets the security
//! headers here. What is served is `crate::web`'s and `crate::ops`'s.

pub mod client;
pub mod listener;

use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::Router;

/// No script from anywhere, styles from our own sheet only, forms post only to us,
/// and no framing: text from feeds can never become active content.
const CSP: &str =
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Headers every response carries (the operators' endpoints' too). Links hold
/// tokens, so no Referer leaves the site.
pub fn add_security_headers(headers: &mut axum::http::HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // "same-origin" rather than "no-referrer": with no-referrer a browser sends
    // `Origin: null` on its own forms, and the cross-site check needs the real origin.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
}

pub async fn security_headers(mut response: Response) -> Response {
    add_security_headers(response.headers_mut());
    response
}

/// The security headers as a layer, for routers outside this module.
pub fn with_security_headers(router: Router) -> Router {
    router.layer(axum::middleware::map_response(security_headers))
}
