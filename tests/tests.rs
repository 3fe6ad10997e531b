//! vigia's integration tests: one binary, a module per area. Tests run the real
//! `vigia` binary or the library against real SQLite files and loopback servers.

mod util;

mod attacks;
#[cfg(feature = "browser")]
mod browser;
mod config_check;
mod conformance;
mod demo;
mod detect;
mod digest;
mod event_store;
mod ingest;
mod layout;
mod learned;
#[cfg(feature = "postgres")]
mod pg;
#[cfg(feature = "postgres")]
mod pg_projections;
mod regression;
mod service;
mod web;
