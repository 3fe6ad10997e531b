//! The pages that mailed links open: `/subscribe/confirm` and `/unsubscribe`. A GET
//! checks the link and shows one button (mail scanners that follow links change
//! nothing); the button's POST, or a mail provider's RFC 8058 one-click POST to the
//! link itself, does the step (`subscribers::confirm`, `subscribers::unsubscribe`).
//! A link that does nothing gets a page that says why.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use chrono::Utc;
use serde::Deserialize;

use super::{bad, field, form_fields, signer, unavailable};
use crate::events::SubscriptionChannel;
use crate::links::{LinkSigner, Purpose, TokenError};
use crate::subscribers::{self, LinkError, LinkRefused};
use crate::web::{Notice, NoticeAction, Web};

#[derive(Deserialize)]
pub(in crate::web) struct TokenQuery {
    token: Option<String>,
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

pub(in crate::web) async fn confirm_page(
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

pub(in crate::web) async fn confirm(
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

pub(in crate::web) async fn unsubscribe_page(
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
pub(in crate::web) async fn unsubscribe(
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
