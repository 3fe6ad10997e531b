//! `/subscribe`: the form, and what a post of it gets. This file keeps the HTTP side:
//! the client's rate, the cross-site checks, the form's one-use token, and an answer
//! that tells nothing; what a subscriber may ask for and what a request records are
//! `crate::subscribers`'s (`Request::validate`, `subscribers::request`).
//!
//! The form is protected against cross-site posting twice over: a browser that says
//! the request comes from another site (Origin, Sec-Fetch-Site) is refused, and the
//! form carries a signed token bound to a SameSite=Strict cookie that another site's
//! page cannot send. A form token is short-lived and works once. Every post counts
//! towards its client's rate before anything in it is checked. Every answer to a
//! well-formed request is the same page, whether or not the address is known and
//! whether or not a mail went out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{bad, field, form_fields, not_found, signer, unavailable};
use crate::config::Config;
use crate::http::client::ClientAddr;
use crate::links::{LinkSigner, Purpose, Token};
use crate::subscribers::{self, InvalidRequest, Request, RequestOutcome, DIGEST_OFFERS};
use crate::web::{Notice, Web};

/// How long a served form may be submitted (once).
const FORM_TTL_S: i64 = 20 * 60;
const FORM_COOKIE: &str = "vigia_form";
/// The least time a valid subscribe request takes to answer: well above the work it
/// does (a read and at most one append), so the work's length does not show.
const ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);

#[derive(Serialize)]
struct FormView {
    form_token: String,
    topics: Vec<TopicChoice>,
    digests: Vec<DigestChoice>,
}

#[derive(Serialize)]
struct TopicChoice {
    id: String,
    name: String,
}

#[derive(Serialize)]
struct DigestChoice {
    value: &'static str,
    label: &'static str,
}

/// GET: the form, with a fresh form token and the cookie it is bound to.
pub(in crate::web) async fn page(State(web): State<Arc<Web>>) -> Response {
    if !web.self_service() {
        return not_found(&web);
    }
    let signer = match signer(&web) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let nonce = match crate::links::random_hex(16) {
        Ok(n) => n,
        Err(e) => return unavailable(&web, &e),
    };
    let form_token =
        match signer
            .key()
            .sign(Purpose::Form, &nonce, Utc::now().timestamp(), FORM_TTL_S)
        {
            Ok(t) => t,
            Err(e) => return unavailable(&web, &e),
        };
    let config = web.config();
    let view = FormView {
        form_token,
        topics: config
            .topics
            .iter()
            .map(|t| TopicChoice {
                id: t.id.clone(),
                name: t.name.clone().unwrap_or_else(|| t.id.clone()),
            })
            .collect(),
        digests: DIGEST_OFFERS
            .iter()
            .map(|o| DigestChoice {
                value: o.value,
                label: o.label,
            })
            .collect(),
    };
    let secure = config
        .web
        .as_ref()
        .is_some_and(|w| w.public_url.scheme() == "https");
    let cookie = format!(
        "{FORM_COOKIE}={nonce}; Path=/subscribe; Max-Age={FORM_TTL_S}; HttpOnly; SameSite=Strict{}",
        if secure { "; Secure" } else { "" }
    );
    let mut response = web.page(StatusCode::OK, "subscribe.html", view);
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// POST: a subscription request. Each step answers a page of its own when the request
/// goes no further; one that passes them all gets the same answer whatever happened.
pub(in crate::web) async fn post(
    State(web): State<Arc<Web>>,
    ConnectInfo(ClientAddr(peer)): ConnectInfo<ClientAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !web.self_service() {
        return not_found(&web);
    }
    let signer = match signer(&web) {
        Ok(s) => s,
        Err(page) => return page,
    };
    // Counted before anything in the post is checked: invalid posts use up the
    // client's budget as valid ones do.
    if let Err(page) = within_rate(&web, peer, &headers) {
        return page;
    }
    let now = Utc::now();
    let (fields, form) = match posted_form(&web, &signer, &headers, body, now) {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let config = web.config();
    let topics: Vec<&str> = fields
        .iter()
        .filter(|(k, _)| k == "topic")
        .map(|(_, v)| v.as_str())
        .collect();
    let asked = Request::validate(
        &config,
        field(&fields, "email").unwrap_or(""),
        &topics,
        field(&fields, "digest"),
    );
    let request = match asked {
        Ok(request) => request,
        Err(invalid) => return invalid_page(&web, invalid),
    };
    // Used up only by a request that is made: a visitor who mistyped the address can
    // correct it and send the same form again.
    let first_use = web
        .used_forms
        .lock()
        .map(|mut used| used.first_use(&form.id, form.expires, now.timestamp()))
        .unwrap_or(false);
    if !first_use {
        tracing::info!("subscribe form refused: its token was used before");
        return refused_form(&web);
    }
    // Answered no sooner than this, so that how long the answer takes does not tell
    // whether anything was recorded (a throttled request records nothing).
    let answer_at = tokio::time::Instant::now() + ANSWER_FLOOR;
    if let Err(page) = record(&web, config, signer, request, now).await {
        return page;
    }
    // The same answer whatever happened, so that it tells nothing about the address.
    tokio::time::sleep_until(answer_at).await;
    web.notice(
        StatusCode::OK,
        Notice::new(
            "good",
            "Check your inbox",
            &[
                "If this address can receive mail, a message with a confirmation link is on its way.",
                "Nothing else is sent until the link is followed. The link expires in 48 hours.",
            ],
        ),
    )
}

/// Counts the post against its client's rate (the peer, or behind a trusted proxy
/// the hop it names), or the page that says to wait.
fn within_rate(web: &Web, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Response> {
    let client = web.trusted_proxies().client(peer, headers);
    let allowed = web
        .limiter
        .lock()
        .map(|mut l| l.allow(crate::http::client::bucket(client), Instant::now()))
        .unwrap_or(false);
    if allowed {
        return Ok(());
    }
    metrics::counter!("vigia_subscription_requests_total", "outcome" => "client_rate").increment(1);
    Err(bad(
        web,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        &["This computer has sent the form several times in the last minutes. Try again later."],
    ))
}

fn refused_form(web: &Web) -> Response {
    bad(
        web,
        StatusCode::FORBIDDEN,
        "Form refused",
        &["This form was sent from another site, is too old, or was sent before. Open the subscribe page again and send it from there."],
    )
}

/// The post's fields and its verified form token: sent from this site, a readable
/// form, carrying a token we signed for the cookie that came with it. Not yet used up.
fn posted_form(
    web: &Web,
    signer: &LinkSigner,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    now: DateTime<Utc>,
) -> Result<(Vec<(String, String)>, Token), Response> {
    if cross_site(headers, &web.config()) {
        tracing::info!("subscribe form refused: posted from another site");
        return Err(refused_form(web));
    }
    let fields = form_fields(web, headers, body)?;
    let form = match (field(&fields, "form_token"), cookie(headers, FORM_COOKIE)) {
        (Some(token), Some(nonce)) => signer
            .key()
            .verify(token, Purpose::Form, now.timestamp())
            .ok()
            .filter(|t| t.subject == nonce.to_lowercase()),
        _ => None,
    };
    match form {
        Some(form) => Ok((fields, form)),
        None => {
            tracing::info!("subscribe form refused: no valid form token for its cookie");
            Err(refused_form(web))
        }
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Whether a browser tells us the request was made by another site's page.
fn cross_site(headers: &HeaderMap, config: &Config) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| !matches!(s, "same-origin" | "none")) {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let public = config
        .web
        .as_ref()
        .map(|w| w.public_url.origin().ascii_serialization());
    let same = host
        .is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"))
        || public.is_some_and(|p| p == origin);
    !same
}

/// The page that says what to put right in the form.
fn invalid_page(web: &Web, invalid: InvalidRequest) -> Response {
    let (heading, advice) = match invalid {
        InvalidRequest::Address => (
            "Not an email address",
            "Enter one address, such as name@example.org.",
        ),
        InvalidRequest::NoTopic => ("No topic chosen", "Choose at least one topic."),
        InvalidRequest::UnknownTopic => {
            ("Unknown topic", "Choose topics from the list on the form.")
        }
        InvalidRequest::UnknownDigest => (
            "Unknown digest mode",
            "Choose how often from the list on the form.",
        ),
    };
    bad(web, StatusCode::BAD_REQUEST, heading, &[advice])
}

/// Records the request off the async workers (`subscribers::request`: the checks on
/// confirmation mails and the append are one write job), and nudges delivery when a
/// mail was queued. Err is the page to answer when nothing could be recorded.
async fn record(
    web: &Arc<Web>,
    config: Arc<Config>,
    signer: LinkSigner,
    request: Request,
    now: DateTime<Utc>,
) -> Result<(), Response> {
    let outcome = {
        let (store, templates_web) = (web.store.clone(), web.clone());
        tokio::task::spawn_blocking(move || {
            subscribers::request(
                &store,
                &config,
                Some(&signer),
                &templates_web.mail_templates,
                &request,
                now,
            )
        })
        .await
    };
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => return Err(unavailable(web, &e)),
        Err(e) => return Err(unavailable(web, &e)),
    };
    tracing::info!(outcome = ?outcome, "subscription request");
    // Whether a mail went to this address is what the answer hides; the counter hides
    // it too (the hourly cap is one state for everyone).
    let label = match outcome {
        RequestOutcome::MailQueued | RequestOutcome::TooSoonForAddress => "accepted",
        RequestOutcome::TooManyOverall => "hourly_cap",
    };
    metrics::counter!("vigia_subscription_requests_total", "outcome" => label).increment(1);
    if outcome == RequestOutcome::MailQueued {
        web.outbox_nudge.notify_one();
    }
    Ok(())
}
