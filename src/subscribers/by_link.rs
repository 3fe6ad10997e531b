//! Following a signed link: checking a confirmation or unsubscribe link without using
//! it (what the link's page shows), and using it (the page's button, or a one-click
//! POST). Each step is one write job, so a link works once however often it is
//! clicked; a link that does nothing says why (`LinkRefused`).

use chrono::{DateTime, Utc};
use rusqlite::Connection;

use crate::events::stream;
use crate::events::{Event, SubscriberUnsubscribed, Subscription, SubscriptionChannel};
use crate::links::{KeyError, LinkSigner, Purpose, Token, TokenError};
use crate::projections::{self, SubscriberRow, SubscriberStatus, Subscribers};
use crate::store::{append_in, stream_events, NewEvent, SqliteStore, StoreError};

/// Why a signed link did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkRefused {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("this link has already been used")]
    Used,
    /// Confirm: no request waits; unsubscribe: the address is not subscribed, or the
    /// link belongs to an earlier subscription.
    #[error("this link no longer applies")]
    Stale,
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error(transparent)]
    Refused(#[from] LinkRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the subscription task stopped: {0}")]
    Panicked(String),
}

impl From<rusqlite::Error> for LinkError {
    fn from(e: rusqlite::Error) -> LinkError {
        LinkError::Store(StoreError::Sqlite(e))
    }
}

impl From<TokenError> for LinkError {
    fn from(e: TokenError) -> LinkError {
        LinkError::Refused(LinkRefused::Token(e))
    }
}

fn unix(t: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(t).ok().map(|t| t.timestamp())
}

/// The subscriber a verified link names, refusing a replayed link. Reads the
/// projections as they are on `conn`.
fn follow(conn: &Connection, token: &Token) -> Result<Option<SubscriberRow>, LinkError> {
    if Subscribers::token_used(conn, &token.id)? {
        return Err(LinkRefused::Used.into());
    }
    Ok(Subscribers::get(conn, &token.subject)?)
}

/// The request a confirmation link was sent for: the one that recorded the link's id.
/// A link from before requests recorded it (no request names any id) confirms the
/// latest request, as links did then.
fn requested_by(
    conn: &Connection,
    token: &Token,
    row: Option<SubscriberRow>,
) -> Result<(SubscriberRow, Subscription), LinkError> {
    let Some(row) = row else {
        return Err(LinkRefused::Stale.into());
    };
    let mut requests = Vec::new();
    for stored in stream_events(conn, &stream::subscriber(&row.email))? {
        if let Event::SubscriberRequested(r) = stored.decode()? {
            requests.push(r);
        }
    }
    if let Some(own) = requests
        .iter()
        .find(|r| r.token.as_deref() == Some(token.id.as_str()))
    {
        return Ok((row, own.clone()));
    }
    let legacy = requests.last().is_some_and(|r| r.token.is_none());
    let waiting = match (&row.pending, row.status) {
        (Some(p), _) if legacy => p.clone(),
        (None, SubscriberStatus::Pending) if legacy => Subscription {
            email: row.address.clone(),
            name: row.name.clone(),
            topics: row.topics.clone(),
            digest: row.digest.clone(),
            via: SubscriptionChannel::Web,
            token: None,
        },
        _ => return Err(LinkRefused::Stale.into()),
    };
    Ok((row, waiting))
}

/// Runs a link's step as one write job: the projections caught up, the checks made
/// and the outcome appended with no other write between them, so two clicks of one
/// link cannot both pass the one-use check.
fn link_step<T: Send + 'static>(
    store: &SqliteStore,
    step: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, LinkError> + Send + 'static,
) -> Result<T, LinkError> {
    store.write(move |tx| {
        projections::catch_up_in(tx)?;
        Ok(step(tx))
    })?
}

/// Checks a confirmation link without using it: the address it would confirm.
pub fn check_confirm(
    store: &SqliteStore,
    signer: &LinkSigner,
    token: &str,
    now: DateTime<Utc>,
) -> Result<String, LinkError> {
    let token = signer
        .key()
        .verify(token, Purpose::Confirm, now.timestamp())?;
    link_step(store, move |tx| {
        let row = follow(tx, &token)?;
        let (row, _) = requested_by(tx, &token, row)?;
        Ok(row.address)
    })
}

/// Follows a confirmation link: the request it was sent for becomes the subscription.
pub fn confirm(
    store: &SqliteStore,
    signer: &LinkSigner,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Subscription, LinkError> {
    let token = signer
        .key()
        .verify(token, Purpose::Confirm, now.timestamp())?;
    link_step(store, move |tx| {
        let row = follow(tx, &token)?;
        let (row, wanted) = requested_by(tx, &token, row)?;
        let confirmed = Subscription {
            email: row.address.clone(),
            via: SubscriptionChannel::Link,
            token: Some(token.id.clone()),
            ..wanted
        };
        append_in(
            tx,
            vec![NewEvent::new(
                stream::subscriber(&row.email),
                Event::SubscriberConfirmed(confirmed.clone()),
            )],
        )?;
        Ok(confirmed)
    })
}

/// Checks an unsubscribe link without using it: the address it would unsubscribe.
pub fn check_unsubscribe(
    store: &SqliteStore,
    signer: &LinkSigner,
    token: &str,
    now: DateTime<Utc>,
) -> Result<String, LinkError> {
    let token = signer
        .key()
        .verify(token, Purpose::Unsubscribe, now.timestamp())?;
    link_step(store, move |tx| {
        let row = follow(tx, &token)?;
        Ok(current_subscription(&token, row)?.address)
    })
}

/// The subscription an unsubscribe link applies to: confirmed, and begun no later
/// than the link was made (a link from an earlier subscription does not end a new one).
fn current_subscription(
    token: &Token,
    row: Option<SubscriberRow>,
) -> Result<SubscriberRow, LinkError> {
    match row {
        Some(r)
            if r.status == SubscriberStatus::Confirmed
                && r.subscribed_since
                    .as_deref()
                    .and_then(unix)
                    .is_none_or(|since| since <= token.issued) =>
        {
            Ok(r)
        }
        _ => Err(LinkRefused::Stale.into()),
    }
}

/// Follows an unsubscribe link (the page's button, or a one-click POST).
pub fn unsubscribe(
    store: &SqliteStore,
    signer: &LinkSigner,
    token: &str,
    via: SubscriptionChannel,
    now: DateTime<Utc>,
) -> Result<String, LinkError> {
    let token = signer
        .key()
        .verify(token, Purpose::Unsubscribe, now.timestamp())?;
    link_step(store, move |tx| {
        let row = current_subscription(&token, follow(tx, &token)?)?;
        append_in(
            tx,
            vec![NewEvent::new(
                stream::subscriber(&row.email),
                Event::SubscriberUnsubscribed(SubscriberUnsubscribed {
                    email: row.address.clone(),
                    via,
                    token: Some(token.id.clone()),
                }),
            )],
        )?;
        Ok(row.address)
    })
}
