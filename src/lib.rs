//! vigia: a news-monitoring daemon. It polls feeds, reads what articles say about the
//! topics it watches, records every outcome as an event in an append-only log, and
//! tells subscribers when a stance changes. See docs/ARCHITECTURE.md.
//!
//! The modules, in the order the pipeline needs them: each uses only modules listed
//! above it, so none import each other (`tests/layout.rs` holds the code to this; the
//! `pub mod` lines below are in rustfmt's order):
//!
//! * `detect`: topics and stances read from text: the config's rules and a learned
//!   reader per topic.
//! * `events`: the event types, their schema versions and upcasting; `events::stream`
//!   names every stream and idempotency key.
//! * `eval`: the detector scored against labelled articles, as the SPEC defines it.
//! * `config`: the TOML file, read and checked (`file:line:col` for every problem);
//!   cron expressions, secrets' sources and the key-strength rule live here.
//! * `store`: the append-only log behind the `EventStore` trait; `store::sqlite` is
//!   the backend and the one place that opens the database.
//! * `projections`: tables rebuilt from the log (feed health, articles, detections,
//!   stances, subscribers, outbox), each owning its tables and checkpoint, written
//!   through one interface (`projections::sql`) on SQLite or PostgreSQL.
//! * `schedule`: where and when each feed is polled (moved URLs, cron slot, spread,
//!   server floors, backoff, gone feeds).
//! * `fetch`: one polite, defensive HTTP GET.
//! * `feed`: bytes to articles (charset, feed-rs, identity, clean text, language).
//! * `observe`: a reading as events (`ArticleClassified`, `StanceObserved`);
//!   reclassification of stored articles.
//! * `ingest`: one poll of one feed as one atomic batch of events.
//! * `readings`: stored readings listed, and operators' corrections recorded.
//! * `story`: syndicated copies and near-duplicates grouped into stories.
//! * `tracking`: the current stance per actor and issue, and when it changes.
//! * `links`: signed confirm and unsubscribe links, and the key that signs them.
//! * `digest`: what each subscriber is told, rendered and queued; `digest::mail`
//!   delivers the outbox.
//! * `subscribers`: subscriptions as events (the config's, the operator's, and
//!   self-service requests, confirmations and unsubscriptions).
//! * `http`: serving HTTP safely (connection guard, client addresses, headers).
//! * `web`: the public pages and the subscription forms.
//! * `ops`: `/healthz` and `/metrics` for operators.
//! * `daemon`: the cycle (`run_once`) and the long-running service (`run`).
//! * `demo`: `vigia demo`, the topics' examples served as feeds on loopback and
//!   replayed through the daemon's pipeline on a clock that follows their dates, into
//!   a throwaway database, with a digest preview and the pages served.
//! * `cli`: the command line over all of it; `main.rs` maps outcomes to exit codes.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod detect;
pub mod digest;
pub mod eval;
pub mod events;
pub mod feed;
pub mod fetch;
pub mod http;
pub mod ingest;
pub mod links;
pub mod observe;
pub mod ops;
pub mod projections;
pub mod readings;
pub mod schedule;
pub mod store;
pub mod story;
pub mod subscribers;
pub mod tracking;
pub mod web;
