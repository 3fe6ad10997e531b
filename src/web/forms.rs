//! The subscription pages: the subscribe form and its answer, the confirmation link's
//! page and button, and the unsubscribe link's page, button and RFC 8058 one-click POST.
//!
//! The form is protected against cross-site posting twice over: a browser that says
//! the request comes from another site (Origin, Sec-Fetch-Site) is refused, and the
//! form carries a signed token bound to a SameSite=Strict cookie that another site's
//! page cannot send. A form token is short-lived and works once. Every post counts
//! towards its client's rate before anything in it is checked. Every answer to a
//! well-formed request is the same page, whether or not the address is known and
//! whether or not a mail went out.

// Handlers return the page to answer as the error of their steps; a Response is
// large, but these are one-shot early returns, not a hot path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::{Notice, NoticeAction, Web};
use crate::events::SubscriptionChannel;
use crate::http::client::ClientAddr;
use crate::links::{LinkSigner, Purpose, TokenError};
use crate::subscribers::{self, LinkError, LinkRefused, Request, RequestOutcome};

/// How long a served form may be submitted (once).
const FORM_TTL_S: i64 = 20 * 60;
const FORM_COOKIE: &str = "vigia_form";
/// The least time a valid subscribe request takes to answer: well above the work it
/// does (a read and at most one append), so the work's length does not show.
const ANSWER_FLOOR: std::time::Duration = std::time::Duration::from_millis(250);

/// The digest modes the form offers: (value, label, schedule recorded).
const DIGESTS: &[(&str, &str, &str)] = &[
    ("on-change", "When a stance changes", "on-change"),
    ("daily", "Daily, at 07:00 UTC", "0 7 * * *"),
    ("weekly", "Weekly, Mondays at 07:00 UTC", "0 7 * * 1"),
];

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

#[derive(Deserialize)]
pub(super) struct TokenQuery {
    token: Option<String>,
}

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
fn cross_site(headers: &HeaderMap, web: &Web) -> bool {
    let fetch_site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
    if fetch_site.is_some_and(|s| !matches!(s, "same-origin" | "none")) {
        return true;
    }
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let public = web
        .config()
        .web
        .as_ref()
        .map(|w| w.public_url.origin().ascii_serialization());
    let same = host
        .is_some_and(|h| origin == format!("http://{h}") || origin == format!("https://{h}"))
        || public.is_some_and(|p| p == origin);
    !same
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

fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

pub(super) async fn subscribe_form(State(web): State<Arc<Web>>) -> Response {
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
        digests: DIGESTS
            .iter()
            .map(|(value, label, _)| DigestChoice { value, label })
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

pub(super) async fn subscribe(
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
    let client = web.trusted_proxies().client(peer, &headers);
    let allowed = web
        .limiter
        .lock()
        .map(|mut l| l.allow(crate::http::client::bucket(client), Instant::now()))
        .unwrap_or(false);
    if !allowed {
        metrics::counter!("vigia_subscription_requests_total", "outcome" => "client_rate")
            .increment(1);
        return bad(
            &web,
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests",
            &["This computer has sent the form several times in the last minutes. Try again later."],
        );
    }
    let refused_form = |web: &Web| {
        bad(
            web,
            StatusCode::FORBIDDEN,
            "Form refused",
            &["This form was sent from another site, is too old, or was sent before. Open the subscribe page again and send it from there."],
        )
    };
    if cross_site(&headers, &web) {
        tracing::info!("subscribe form refused: posted from another site");
        return refused_form(&web);
    }
    let fields = match form_fields(&web, &headers, body) {
        Ok(f) => f,
        Err(page) => return page,
    };
    let now = Utc::now();
    let form = match (field(&fields, "form_token"), cookie(&headers, FORM_COOKIE)) {
        (Some(token), Some(nonce)) => signer
            .key()
            .verify(token, Purpose::Form, now.timestamp())
            .ok()
            .filter(|t| t.subject == nonce.to_lowercase()),
        _ => None,
    };
    let Some(form) = form else {
        tracing::info!("subscribe form refused: no valid form token for its cookie");
        return refused_form(&web);
    };

    let config = web.config();
    let email = field(&fields, "email").unwrap_or("").trim().to_string();
    if email.len() > 254 || !crate::config::valid_address(&email) {
        return bad(
            &web,
            StatusCode::BAD_REQUEST,
            "Not an email address",
            &["Enter one address, such as name@example.org."],
        );
    }
    let topics: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "topic")
        .map(|(_, v)| v.clone())
        .collect();
    if topics.is_empty() {
        return bad(
            &web,
            StatusCode::BAD_REQUEST,
            "No topic chosen",
            &["Choose at least one topic."],
        );
    }
    if topics.len() > config.topics.len()
        || !topics
            .iter()
            .all(|t| config.topics.iter().any(|c| &c.id == t))
    {
        return bad(
            &web,
            StatusCode::BAD_REQUEST,
            "Unknown topic",
            &["Choose topics from the list on the form."],
        );
    }
    let Some(&(_, _, digest)) = DIGESTS
        .iter()
        .find(|(value, _, _)| Some(*value) == field(&fields, "digest").or(Some("on-change")))
    else {
        return bad(
            &web,
            StatusCode::BAD_REQUEST,
            "Unknown digest mode",
            &["Choose how often from the list on the form."],
        );
    };
    let mut topics_unique = Vec::new();
    for t in topics {
        if !topics_unique.contains(&t) {
            topics_unique.push(t);
        }
    }
    let request = Request {
        email,
        topics: topics_unique,
        digest: digest.to_string(),
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
    match outcome {
        Ok(Ok(outcome)) => {
            tracing::info!(outcome = ?outcome, "subscription request");
            // Whether a mail went to this address is what the answer hides; the
            // counter hides it too (the hourly cap is one state for everyone).
            let label = match outcome {
                RequestOutcome::MailQueued | RequestOutcome::TooSoonForAddress => "accepted",
                RequestOutcome::TooManyOverall => "hourly_cap",
            };
            metrics::counter!("vigia_subscription_requests_total", "outcome" => label).increment(1);
            if outcome == RequestOutcome::MailQueued {
                web.outbox_nudge.notify_one();
            }
        }
        Ok(Err(e)) => return unavailable(&web, &e),
        Err(e) => return unavailable(&web, &e),
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

/// The page for a link that did nothing, saying why.
fn refused(web: &Web, error: LinkError, purpose: Purpose) -> Response {
    let refusal = match error {
        LinkError::Refused(r) => r,
        LinkError::Store(e) => return unavailable(web, &e),
        LinkError::Key(e) => return unavailable(web, &e),
        LinkError::Panicked(e) => return unavailable(web, &e),
    };
    let again = match purpose {
        Purpose::Unsubscribe => {
            "Use the link in a more recent digest, or reply to a digest with the word unsubscribe."
        }
        _ => "To subscribe, fill in the subscribe form again.",
    };
    match refusal {
        LinkRefused::Token(TokenError::Malformed | TokenError::Forged) => bad(
            web,
            StatusCode::BAD_REQUEST,
            "This link is not valid",
            &["It may have been cut short or changed on the way. Open it exactly as it came in the mail.", again],
        ),
        LinkRefused::Token(TokenError::WrongPurpose) => bad(
            web,
            StatusCode::BAD_REQUEST,
            "This link is for something else",
            &["The link was made for another page.", again],
        ),
        LinkRefused::Token(TokenError::Expired) => bad(web, StatusCode::GONE, "This link has expired", &[again]),
        LinkRefused::Used => bad(
            web,
            StatusCode::GONE,
            "This link has already been used",
            &["Each link works once, and this one has done its job.", again],
        ),
        LinkRefused::Stale => match purpose {
            Purpose::Unsubscribe => bad(
                web,
                StatusCode::GONE,
                "Not subscribed",
                &["This address does not receive digests now (or the link belongs to an earlier subscription). Nothing was changed."],
            ),
            _ => bad(
                web,
                StatusCode::GONE,
                "Nothing to confirm",
                &["No subscription request waits for this address.", again],
            ),
        },
    }
}

fn missing_token(web: &Web) -> Response {
    bad(
        web,
        StatusCode::BAD_REQUEST,
        "This link is not valid",
        &["It has no token. Open it exactly as it came in the mail."],
    )
}

/// Runs a subscription step off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, LinkError> + Send + 'static,
) -> Result<T, LinkError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(LinkError::Panicked(e.to_string())))
}

pub(super) async fn confirm_page(
    State(web): State<Arc<Web>>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let signer = match signer(&web) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let Some(token) = q.token else {
        return missing_token(&web);
    };
    let (store, t) = (web.store.clone(), token.clone());
    match blocking(move || subscribers::check_confirm(&store, &signer, &t, Utc::now())).await {
        Ok(address) => {
            let mut notice = Notice::new(
                "",
                "Confirm your subscription",
                &[&format!("Press the button to start digests to {address}.")],
            );
            notice.action = Some(NoticeAction {
                path: "/subscribe/confirm",
                token,
                label: "Confirm subscription",
            });
            web.notice(StatusCode::OK, notice)
        }
        Err(e) => refused(&web, e, Purpose::Confirm),
    }
}

/// What a POST to a link's address carries.
struct PostedLink {
    signer: LinkSigner,
    token: String,
    /// Whether the token came in the address itself: a POST straight to a mailed
    /// link (RFC 8058 one-click), rather than from a page's button.
    from_link: bool,
}

/// The token of a POST: from the query string, as in a mailed link (then the body is
/// not read: RFC 8058 lets mail providers send it as multipart/form-data or
/// urlencoded, and all it may say is `List-Unsubscribe=One-Click`), else from the
/// page's button form.
fn posted_link(
    web: &Web,
    query: TokenQuery,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<PostedLink, Response> {
    let signer = signer(web)?;
    if let Some(token) = query.token {
        if let Err(rejection) = body {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                return Err(bad(
                    web,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Too large",
                    &["The request sent more than this page accepts."],
                ));
            }
        }
        return Ok(PostedLink {
            signer,
            token,
            from_link: true,
        });
    }
    let fields = form_fields(web, headers, body)?;
    let token = field(&fields, "token")
        .map(str::to_string)
        .ok_or_else(|| missing_token(web))?;
    Ok(PostedLink {
        signer,
        token,
        from_link: false,
    })
}

pub(super) async fn confirm(
    State(web): State<Arc<Web>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let PostedLink { signer, token, .. } = match posted_link(&web, q, &headers, body) {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let store = web.store.clone();
    // Two clicks of one link cannot both pass the one-use check: the step is one write
    // job on the store's writer (`subscribers::confirm`).
    match blocking(move || subscribers::confirm(&store, &signer, &token, Utc::now())).await {
        Ok(sub) => web.notice(
            StatusCode::OK,
            Notice::new(
                "good",
                "Subscribed",
                &[&format!(
                    "{} will receive digests ({}). Every digest has a link to unsubscribe.",
                    sub.email,
                    if sub.digest == "on-change" {
                        "when a stance changes".to_string()
                    } else {
                        format!("on the schedule \"{}\"", sub.digest)
                    }
                )],
            ),
        ),
        Err(e) => refused(&web, e, Purpose::Confirm),
    }
}

pub(super) async fn unsubscribe_page(
    State(web): State<Arc<Web>>,
    Query(q): Query<TokenQuery>,
) -> Response {
    let Some(token) = q.token else {
        return web.notice(
            StatusCode::OK,
            Notice::new(
                "",
                "Unsubscribe",
                &["Every digest ends with a link to unsubscribe: open it, or reply to a digest with the word unsubscribe."],
            ),
        );
    };
    let signer = match signer(&web) {
        Ok(s) => s,
        Err(page) => return page,
    };
    let (store, t) = (web.store.clone(), token.clone());
    match blocking(move || subscribers::check_unsubscribe(&store, &signer, &t, Utc::now())).await {
        Ok(address) => {
            let mut notice = Notice::new(
                "",
                "Unsubscribe",
                &[&format!(
                    "Press the button to stop all digests to {address}."
                )],
            );
            notice.action = Some(NoticeAction {
                path: "/unsubscribe",
                token,
                label: "Unsubscribe",
            });
            web.notice(StatusCode::OK, notice)
        }
        Err(e) => refused(&web, e, Purpose::Unsubscribe),
    }
}

/// RFC 8058: a POST to the link unsubscribes at once, with no login and no page to
/// visit first; mail providers send `List-Unsubscribe=One-Click` as the body.
pub(super) async fn unsubscribe(
    State(web): State<Arc<Web>>,
    Query(q): Query<TokenQuery>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let PostedLink {
        signer,
        token,
        from_link,
    } = match posted_link(&web, q, &headers, body) {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let via = if from_link {
        SubscriptionChannel::OneClick
    } else {
        SubscriptionChannel::Link
    };
    let store = web.store.clone();
    match blocking(move || subscribers::unsubscribe(&store, &signer, &token, via, Utc::now())).await
    {
        Ok(address) => web.notice(
            StatusCode::OK,
            Notice::new(
                "good",
                "Unsubscribed",
                &[&format!(
                    "No more digests go to {address}. To come back, use the subscribe form."
                )],
            ),
        ),
        Err(e) => refused(&web, e, Purpose::Unsubscribe),
    }
}
