//! Subscriptions as events: the config's subscribers applied when the config is, and
//! the operator's `vigia subscribers add/remove`. Someone who unsubscribed by link is
//! not put back by a config that still names them (their choice wins; the log says so).

use crate::config::{Config, DigestMode, SubscriberConfig};
use crate::events::{Event, SubscriberUnsubscribed, Subscription, SubscriptionChannel};
use crate::projections::{self, SubscriberRow, Subscribers};
use crate::store::{EventStore, NewEvent, StoreError};

pub fn subscriber_stream(email: &str) -> String {
    format!("subscriber:{}", email.to_lowercase())
}

fn digest_text(mode: &DigestMode) -> String {
    match mode {
        DigestMode::OnChange => "on-change".into(),
        DigestMode::Every(s) => s.source().to_string(),
    }
}

/// Records the changes between the config's subscribers and the recorded ones.
/// Returns how many events it appended.
pub fn apply_config(store: &EventStore, config: &Config) -> Result<usize, StoreError> {
    projections::catch_up(store)?;
    let known: Vec<SubscriberRow> = store.read(Subscribers::all)?;
    let mut batch = Vec::new();
    for sub in &config.subscribers {
        let digest = digest_text(&sub.digest);
        let row = known.iter().find(|k| k.email == sub.email.to_lowercase());
        let left_by_choice = row.is_some_and(|r| {
            r.status == "unsubscribed" && !matches!(r.via.as_str(), "config" | "command")
        });
        if left_by_choice {
            tracing::warn!(email = %sub.email, "still in the config but unsubscribed by link: not subscribed again");
            continue;
        }
        let same = row.is_some_and(|r| {
            r.status == "confirmed"
                && r.topics == sub.topics
                && r.digest == digest
                && r.name == sub.name
        });
        if !same {
            batch.push(confirm(sub, &digest, SubscriptionChannel::Config));
        }
    }
    for row in &known {
        let in_config = config
            .subscribers
            .iter()
            .any(|s| s.email.to_lowercase() == row.email);
        if !in_config && row.status == "confirmed" && row.via == "config" {
            batch.push(NewEvent::new(
                subscriber_stream(&row.email),
                Event::SubscriberUnsubscribed(SubscriberUnsubscribed {
                    email: row.address.clone(),
                    via: SubscriptionChannel::Config,
                }),
            ));
        }
    }
    let n = batch.len();
    store.append(batch)?;
    Ok(n)
}

fn confirm(sub: &SubscriberConfig, digest: &str, via: SubscriptionChannel) -> NewEvent {
    NewEvent::new(
        subscriber_stream(&sub.email),
        Event::SubscriberConfirmed(Subscription {
            email: sub.email.clone(),
            name: sub.name.clone(),
            topics: sub.topics.clone(),
            digest: digest.to_string(),
            via,
        }),
    )
}

/// `vigia subscribers add`: confirmed at once (the operator vouches for the address).
pub fn add(store: &EventStore, sub: &SubscriberConfig) -> Result<(), StoreError> {
    store.append_one(confirm(
        sub,
        &digest_text(&sub.digest),
        SubscriptionChannel::Command,
    ))?;
    Ok(())
}

/// `vigia subscribers remove`. Returns false when the address was not subscribed.
pub fn remove(store: &EventStore, email: &str) -> Result<bool, StoreError> {
    projections::catch_up(store)?;
    let known = store.read(Subscribers::all)?;
    let Some(row) = known
        .iter()
        .find(|k| k.email == email.to_lowercase() && k.status != "unsubscribed")
    else {
        return Ok(false);
    };
    store.append_one(NewEvent::new(
        subscriber_stream(&row.email),
        Event::SubscriberUnsubscribed(SubscriberUnsubscribed {
            email: row.address.clone(),
            via: SubscriptionChannel::Command,
        }),
    ))?;
    Ok(true)
}
