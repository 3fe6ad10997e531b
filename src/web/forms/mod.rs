//! The subscription pages: the subscribe form and its answer (`subscribe.rs`), and the
//! pages that mailed links open: confirm, unsubscribe and RFC 8058 one-click
//! (`links.rs`). This file holds what they share: reading a posted form, and the
//! pages that say a request was refused or could not be served. What a subscription
//! is, and what a request or a link may do, is `crate::subscribers`'s; these files
//! keep to HTTP.

// Handlers return the page to answer as the error of their steps; a Response is
// large, but these are one-shot early returns, not a hot path.
#![allow(clippy::result_large_err)]

pub(super) mod links;
pub(super) mod subscribe;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;

use super::{Notice, Web};
use crate::links::LinkSigner;

fn bad(web: &Web, status: StatusCode, heading: &str, paragraphs: &[&str]) -> Response {
    web.notice(status, Notice::new("bad", heading, paragraphs))
}

fn not_found(web: &Web) -> Response {
    bad(
        web,
        StatusCode::NOT_FOUND,
        "Not found",
        &["There is no page at this address."],
    )
}

fn unavailable(web: &Web, what: &dyn std::fmt::Display) -> Response {
    tracing::error!(error = %what, "a subscription page failed");
    bad(
        web,
        StatusCode::SERVICE_UNAVAILABLE,
        "Try again shortly",
        &["vigia could not record this just now. Nothing was changed."],
    )
}

/// The signer the daemon loaded, or the page to answer where there is none.
fn signer(web: &Web) -> Result<LinkSigner, Response> {
    web.signer().ok_or_else(|| not_found(web))
}

/// The form's fields, or the page that says what is wrong with the body.
fn form_fields(
    web: &Web,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Vec<(String, String)>, Response> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            bad(
                web,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                &["The form sent more than this page accepts."],
            )
        } else {
            bad(
                web,
                StatusCode::BAD_REQUEST,
                "Unreadable request",
                &["The request's body could not be read."],
            )
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !body.is_empty() && !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(bad(
            web,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Unexpected content",
            &["This address takes an HTML form (application/x-www-form-urlencoded)."],
        ));
    }
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body).map_err(|_| {
        bad(
            web,
            StatusCode::BAD_REQUEST,
            "Malformed form",
            &["The form's fields could not be read."],
        )
    })
}

/// The first value of a form's field.
fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
