//! One poll of one feed, from request to events.
//!
//! Decides the URL and validators from the feed's health, fetches (`crate::fetch`),
//! parses (`crate::feed`), compares each article with what the log already holds, and
//! appends the poll's events in one atomic batch: the poll outcome plus a discovery for
//! each new article and a revision for each changed one. Unchanged articles append
//! nothing; idempotency keys make a repeated batch harmless.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use url::Url;

use crate::config::{FeedConfig, FetchLimits};
use crate::detect::Detector;
use crate::events::stream;
use crate::events::{
    ArticleDiscovered, ArticleRevised, Event, FeedPollFailed, FeedPolled, PollFailureKind,
};
use crate::feed::{self, FeedContext};
use crate::fetch::{FetchError, Fetcher, Validators};
use crate::observe;
use crate::projections::{Articles, FeedHealth};
use crate::schedule;
use crate::store::{NewEvent, SqliteStore, StoreError};

/// The first wait after a failure; it doubles with each failure in a row.
const BACKOFF_BASE: Duration = Duration::from_secs(60);

/// What one poll did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollOutcome {
    Polled {
        status: u16,
        new: u32,
        revised: u32,
    },
    Failed {
        kind: PollFailureKind,
        message: String,
    },
}

/// Polls one feed and records the outcome (and its metrics).
pub async fn poll(
    fetcher: &Fetcher,
    store: &SqliteStore,
    feed: &FeedConfig,
    limits: &FetchLimits,
    detector: &Arc<Detector>,
) -> Result<PollOutcome, StoreError> {
    let started = std::time::Instant::now();
    let outcome = poll_inner(fetcher, store, feed, limits, detector).await;
    metrics::histogram!("vigia_poll_duration_seconds").record(started.elapsed().as_secs_f64());
    match &outcome {
        Ok(PollOutcome::Polled {
            status,
            new,
            revised,
        }) => {
            let result = if *status == 304 { "not_modified" } else { "ok" };
            metrics::counter!("vigia_polls_total", "result" => result).increment(1);
            metrics::counter!("vigia_articles_total", "kind" => "discovered")
                .increment(u64::from(*new));
            metrics::counter!("vigia_articles_total", "kind" => "revised")
                .increment(u64::from(*revised));
            metrics::counter!("vigia_classifications_total").increment(u64::from(new + revised));
        }
        Ok(PollOutcome::Failed { kind, .. }) => {
            metrics::counter!("vigia_polls_total", "result" => "failed").increment(1);
            metrics::counter!("vigia_poll_failures_total", "kind" => kind.as_str()).increment(1);
        }
        Err(_) => metrics::counter!("vigia_polls_total", "result" => "unrecorded").increment(1),
    }
    outcome
}

/// Polls that may parse, read and record at once: parsing and detection are CPU
/// work, so more than a couple per core only holds more bodies in memory while they
/// wait; a fetched body waits here for its turn instead of piling up in the writer's
/// queue.
fn cpu_slots() -> Arc<tokio::sync::Semaphore> {
    static SLOTS: std::sync::OnceLock<Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
            Arc::new(tokio::sync::Semaphore::new(2 * cores))
        })
        .clone()
}

/// Runs store work (which blocks on SQLite and the writer) off the async workers.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| Err(StoreError::Panicked(join.to_string())))
}

async fn poll_inner(
    fetcher: &Fetcher,
    store: &SqliteStore,
    feed: &FeedConfig,
    limits: &FetchLimits,
    detector: &Arc<Detector>,
) -> Result<PollOutcome, StoreError> {
    let id = feed.id.clone();
    let health = store.read_async(move |c| FeedHealth::get(c, &id)).await?;
    let url = schedule::target_url(feed, health.as_ref());
    // Validators belong to the URL they were given for.
    let validators = health
        .as_ref()
        .filter(|h| h.url == url.as_str())
        .map(|h| Validators {
            etag: h.etag.clone(),
            last_modified: h.last_modified.clone(),
        })
        .unwrap_or_default();
    let streak = health.as_ref().map(|h| h.error_streak).unwrap_or(0);
    let fetched = match fetcher.fetch(&url, &validators).await {
        Ok(f) => f,
        Err(e) => return failure(store, feed, &url, e, streak, limits).await,
    };
    let polled = FeedPolled {
        feed: feed.id.clone(),
        url: url.to_string(),
        status: fetched.status,
        bytes: fetched.body.len() as u64,
        elapsed_ms: fetched.elapsed.as_millis() as u64,
        etag: fetched.validators.etag.clone(),
        last_modified: fetched.validators.last_modified.clone(),
        items: 0,
        new_articles: 0,
        revised_articles: 0,
        moved_to: fetched.moved_to.as_ref().map(Url::to_string),
        min_interval_s: fetched.max_age.map(|d| d.as_secs()),
    };
    if fetched.not_modified() {
        let event = NewEvent::new(stream::feed(&feed.id), Event::FeedPolled(polled));
        store.append_async(vec![event]).await?;
        return Ok(PollOutcome::Polled {
            status: 304,
            new: 0,
            revised: 0,
        });
    }
    let (status, elapsed) = (fetched.status, fetched.elapsed);
    let slot = cpu_slots()
        .acquire_owned()
        .await
        .map_err(|_| StoreError::Panicked("the CPU slots were closed".into()))?;
    let (store2, feed2, detector2) = (store.clone(), feed.clone(), detector.clone());
    let recorded = tokio::task::spawn_blocking(move || {
        record_fetched(&store2, &feed2, &detector2, fetched, polled, slot)
    })
    .await
    .unwrap_or_else(|join| {
        Ok(Err(feed::FeedError::Parse(format!(
            "the parser crashed: {join}"
        ))))
    })?;
    match recorded {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            let err = FetchError {
                kind: e.kind(),
                message: e.to_string(),
                status: Some(status),
                retry_after: None,
                elapsed,
            };
            failure(store, feed, &url, err, streak, limits).await
        }
    }
}

/// Parses a fetched body, reads each new or changed article, and appends the poll's
/// events in one batch (blocking: run on the blocking pool). A body that is not a
/// feed is the inner error, for the caller to record as a failed poll.
///
/// The CPU slot is given back before the append waits for the writer, so other polls
/// parse while this one is written; the fetch slot is kept until the append is done,
/// so batches waiting for the writer stay as few as fetches in flight.
fn record_fetched(
    store: &SqliteStore,
    feed: &FeedConfig,
    detector: &Arc<Detector>,
    mut fetched: crate::fetch::Fetched,
    mut polled: FeedPolled,
    cpu_slot: tokio::sync::OwnedSemaphorePermit,
) -> Result<Result<PollOutcome, feed::FeedError>, StoreError> {
    let _fetch_slot = fetched.slot.take();
    let parsed = match feed::parse(
        &fetched.body,
        FeedContext {
            feed_id: &feed.id,
            url: &fetched.final_url,
            content_type: fetched.content_type.as_deref(),
            lang_hint: feed.lang.as_deref(),
            outlet: feed.name.as_deref(),
        },
    ) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    // The body is parsed: its bytes need not wait for the write.
    drop(fetched);
    polled.items = parsed.items as u32;
    let ttl = parsed.ttl_minutes.map(|m| u64::from(m) * 60);
    polled.min_interval_s = match (polled.min_interval_s, ttl) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
    .map(|s| s.min(24 * 3600));

    let changes = article_changes(store, feed, detector, parsed.articles)?;
    polled.new_articles = changes.new;
    polled.revised_articles = changes.revised;
    let status = polled.status;
    let mut batch = vec![NewEvent::new(
        stream::feed(&feed.id),
        Event::FeedPolled(polled),
    )];
    batch.extend(changes.events);
    drop(cpu_slot);
    store.append(batch)?;
    Ok(Ok(PollOutcome::Polled {
        status,
        new: changes.new,
        revised: changes.revised,
    }))
}

/// What a poll's articles add to its batch.
struct ArticleChanges {
    /// A discovery or revision per new or changed article, each followed by its
    /// reading (the reading follows the text it read, in the same atomic batch).
    events: Vec<NewEvent>,
    new: u32,
    revised: u32,
}

/// Compares each parsed article with what the log holds (its content hash and
/// revision, from the articles projection) and reads the new and changed ones;
/// unchanged articles are not read again and add nothing.
fn article_changes(
    store: &SqliteStore,
    feed: &FeedConfig,
    detector: &Detector,
    articles: Vec<feed::Article>,
) -> Result<ArticleChanges, StoreError> {
    let fingerprints = store.read(|conn| {
        articles
            .iter()
            .map(|a| Articles::fingerprint(conn, &a.article_id))
            .collect::<rusqlite::Result<Vec<_>>>()
    })?;
    let mut changes = ArticleChanges {
        events: Vec::new(),
        new: 0,
        revised: 0,
    };
    for (article, known) in articles.into_iter().zip(fingerprints) {
        let revision = match known {
            None => 0,
            Some((hash, _)) if hash == article.content_hash => continue,
            Some((_, revision)) => revision + 1,
        };
        let reading = observe::classify(detector, &article.body);
        let readings = observe::events(
            detector,
            &reading,
            &article.article_id,
            &feed.id,
            &article.content_hash,
            &article.body,
            // A revision may undo a relevant reading of the earlier text.
            revision > 0,
        );
        if revision == 0 {
            changes.new += 1;
        } else {
            changes.revised += 1;
        }
        changes.events.push(article_event(feed, article, revision));
        changes.events.extend(readings);
    }
    Ok(changes)
}

/// The discovery (revision 0) or the revision of an article, keyed so that the same
/// text recorded twice is recorded once.
fn article_event(feed: &FeedConfig, article: feed::Article, revision: u32) -> NewEvent {
    let stream = stream::article(&article.article_id);
    if revision == 0 {
        let key = stream::key::discovered(&article.article_id);
        NewEvent::new(
            stream,
            Event::ArticleDiscovered(ArticleDiscovered {
                article_id: article.article_id,
                feed: feed.id.clone(),
                guid: article.guid,
                body: article.body,
                content_hash: article.content_hash,
            }),
        )
        .idempotent(key)
    } else {
        let key = stream::key::revised(&article.article_id, revision);
        NewEvent::new(
            stream,
            Event::ArticleRevised(ArticleRevised {
                article_id: article.article_id,
                feed: feed.id.clone(),
                revision,
                body: article.body,
                content_hash: article.content_hash,
            }),
        )
        .idempotent(key)
    }
}

/// Records a failed poll off the async workers.
async fn failure(
    store: &SqliteStore,
    feed: &FeedConfig,
    url: &Url,
    err: FetchError,
    previous_streak: u32,
    limits: &FetchLimits,
) -> Result<PollOutcome, StoreError> {
    let (store, feed, url, limits) = (store.clone(), feed.clone(), url.clone(), limits.clone());
    blocking(move || record_failure(&store, &feed, &url, err, previous_streak, &limits)).await
}

fn record_failure(
    store: &SqliteStore,
    feed: &FeedConfig,
    url: &Url,
    err: FetchError,
    previous_streak: u32,
    limits: &FetchLimits,
) -> Result<PollOutcome, StoreError> {
    let streak = previous_streak.saturating_add(1);
    let wait = backoff(streak, limits).max(err.retry_after.unwrap_or_default());
    let retry_not_before = (err.kind != PollFailureKind::Gone).then(|| {
        (Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default())
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    });
    tracing::warn!(feed = %feed.id, kind = err.kind.as_str(), streak, error = %err.message, "poll failed");
    let event = Event::FeedPollFailed(FeedPollFailed {
        feed: feed.id.clone(),
        url: url.to_string(),
        kind: err.kind,
        message: err.message.clone(),
        status: err.status,
        elapsed_ms: err.elapsed.as_millis() as u64,
        streak,
        retry_not_before,
    });
    store.append_one(NewEvent::new(stream::feed(&feed.id), event))?;
    Ok(PollOutcome::Failed {
        kind: err.kind,
        message: err.message,
    })
}

/// Exponential backoff with ±25% jitter, capped: a failing feed is tried less and
/// less often, but always again, so it recovers by itself when its server does.
pub fn backoff(streak: u32, limits: &FetchLimits) -> Duration {
    let exp = streak.saturating_sub(1).min(20);
    let base = BACKOFF_BASE.as_secs().saturating_mul(1u64 << exp);
    let capped = base.min(limits.max_backoff_s.max(1));
    let jitter = 0.75 + fastrand::f64() * 0.5;
    Duration::from_secs_f64(capped as f64 * jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let limits = FetchLimits::default();
        let first = backoff(1, &limits).as_secs_f64();
        assert!((45.0..=75.0).contains(&first), "{first}");
        let fifth = backoff(5, &limits).as_secs_f64();
        assert!(fifth >= 16.0 * 45.0, "{fifth}");
        let late = backoff(40, &limits).as_secs_f64();
        assert!(late <= limits.max_backoff_s as f64 * 1.25, "{late}");
    }
}
