//! The stance pages: `/` (`home.rs`: watch topics, the current stance per issue and
//! actor with its evidence, timelines, the recent relevant stories each once) and
//! `/stances/{issue}/{actor}` (`stance.rs`: one stance's history, each change with its
//! evidence), from the rows (`rows.rs`) and SVG timelines (`timeline.rs`) they share.
//! Views are built from projections only; templates escape every field. This file
//! holds the handlers: each reads its view off the async workers and renders it.

// A page read returns the error page to answer, as `web::forms` does.
#![allow(clippy::result_large_err)]

mod home;
mod rows;
mod stance;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use rusqlite::Connection;

use super::{Notice, Web};
use crate::config::Config;

pub use home::{home_view, HomeView};
pub use stance::{stance_view, StanceView};

/// Reads a view off the async workers (SQLite is blocking).
async fn read_view<T: Send + 'static>(
    web: &Arc<Web>,
    f: impl FnOnce(&Connection, &Config) -> rusqlite::Result<T> + Send + 'static,
) -> Result<T, Response> {
    let (store, config) = (web.store.clone(), web.config());
    let joined = tokio::task::spawn_blocking(move || store.read(|conn| f(conn, &config))).await;
    match joined {
        Ok(Ok(view)) => Ok(view),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "a page could not read the database");
            Err(web.notice(
                StatusCode::SERVICE_UNAVAILABLE,
                Notice::new(
                    "bad",
                    "Try again shortly",
                    &["The database did not answer."],
                ),
            ))
        }
        Err(e) => {
            tracing::error!(error = %e, "a page's reader panicked");
            Err(web.notice(
                StatusCode::INTERNAL_SERVER_ERROR,
                Notice::new(
                    "bad",
                    "Something went wrong",
                    &["The daemon's log says what."],
                ),
            ))
        }
    }
}

pub(super) async fn home(State(web): State<Arc<Web>>) -> Response {
    match read_view(&web, |conn, config| home_view(conn, config, Utc::now())).await {
        Ok(view) => web.page(StatusCode::OK, "home.html", view),
        Err(page) => page,
    }
}

fn is_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

pub(super) async fn stance(
    State(web): State<Arc<Web>>,
    Path((issue, actor)): Path<(String, String)>,
) -> Response {
    let unknown = || {
        web.notice(
            StatusCode::NOT_FOUND,
            Notice::new(
                "bad",
                "No such stance",
                &["No watch topic has this issue and actor."],
            ),
        )
    };
    if !is_id(&issue) || !is_id(&actor) {
        return unknown();
    }
    match read_view(&web, move |conn, config| {
        stance_view(conn, config, &issue, &actor, Utc::now())
    })
    .await
    {
        Ok(Some(view)) => web.page(StatusCode::OK, "stance.html", view),
        Ok(None) => unknown(),
        Err(page) => page,
    }
}
