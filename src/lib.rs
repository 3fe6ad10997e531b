//! vigia: a news-monitoring daemon.
//!
//! The pipeline, one module per stage: `config` (the TOML file) → `schedule` (cron) →
//! `fetch` (polite HTTP) → `feed` (parse and normalise with feed-rs) → `ingest` (turn a
//! poll into events) → `detect` (topics and stances: the config's rules and, where a
//! topic has labelled examples, a learned reader; `eval` scores it; `readings` lists
//! what was read and records operators' corrections) → `store` (the append-only SQLite
//! event log) → `projections`
//! (tables rebuilt from the log) → `daemon` (the cycle and the long-running service).
//! `cli` is the command line over all of it. Every outcome is an event (`events`); every
//! table the CLI reads is a projection of them. See docs/ARCHITECTURE.md.

pub mod cli;
pub mod config;
pub mod daemon;
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
