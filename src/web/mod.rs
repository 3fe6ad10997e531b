//! The daemon's public web face: the stance pages (`/`, `/stances/{issue}/{actor}`)
//! and self-service subscriptions (`/subscribe`, `/subscribe/confirm`, `/unsubscribe`).
//!
//! Pages are minijinja templates (built in, or an operator's own from `[web]
//! templates`) that escape everything they are given; every response carries a
//! Content-Security-Policy that allows no script at all, so nothing from a feed can
//! run, and every page works without JavaScript. Handlers read projections and append
//! events through the daemon's `SqliteStore`; the subscription rules themselves live in
//! `crate::subscribers`, which knows nothing of HTTP. `crate::http` serves them: it bounds
//! what any one client can hold and says who a request comes from.

mod forms;
mod limits;
mod pages;

use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::DefaultBodyLimit;
use axum::http::{header, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use minijinja::Environment;
use serde::Serialize;
use tokio::sync::{watch, Notify};

use crate::config::Config;
use crate::digest::{template_environment, RenderError};
use crate::links::LinkSigner;
use crate::store::SqliteStore;

pub use pages::{home_view, stance_view, HomeView, StanceView};

/// Largest request body a form may send; more is answered 413.
pub const MAX_FORM_BYTES: usize = 8 * 1024;

const TEMPLATES: &[(&str, &str)] = &[
    ("base.html", include_str!("../../templates/web/base.html")),
    (
        "macros.html",
        include_str!("../../templates/web/macros.html"),
    ),
    ("home.html", include_str!("../../templates/web/home.html")),
    (
        "stance.html",
        include_str!("../../templates/web/stance.html"),
    ),
    (
        "subscribe.html",
        include_str!("../../templates/web/subscribe.html"),
    ),
    (
        "notice.html",
        include_str!("../../templates/web/notice.html"),
    ),
    ("style.css", include_str!("../../templates/web/style.css")),
];

/// The page templates, each replaceable by a file of the same name in `[web] templates`.
pub struct PageTemplates {
    env: Environment<'static>,
}

impl PageTemplates {
    pub fn load(dir: Option<&Path>) -> Result<PageTemplates, RenderError> {
        Ok(PageTemplates {
            env: template_environment(dir, TEMPLATES)?,
        })
    }

    pub fn render(&self, name: &str, context: impl Serialize) -> Result<String, RenderError> {
        Ok(self.env.get_template(name)?.render(context)?)
    }

    fn stylesheet(&self) -> String {
        self.render("style.css", ()).unwrap_or_default()
    }
}

/// What every handler shares.
pub struct Web {
    pub store: SqliteStore,
    config: watch::Receiver<Arc<Config>>,
    /// The link signer the daemon loaded (at start, and at each accepted SIGHUP).
    links: watch::Receiver<Option<LinkSigner>>,
    used_forms: Mutex<limits::UsedForms>,
    pages: PageTemplates,
    mail_templates: crate::digest::Templates,
    limiter: Mutex<limits::RateLimiter>,
    /// Told when a confirmation mail is queued, so the daemon delivers it at once.
    outbox_nudge: Arc<Notify>,
}

impl Web {
    pub fn new(
        store: SqliteStore,
        config: watch::Receiver<Arc<Config>>,
        links: watch::Receiver<Option<LinkSigner>>,
        outbox_nudge: Arc<Notify>,
    ) -> Result<Web, RenderError> {
        let current = config.borrow().clone();
        let dir = current.web.as_ref().and_then(|w| w.templates.as_deref());
        Ok(Web {
            pages: PageTemplates::load(dir)?,
            mail_templates: crate::digest::Templates::load(current.mail.templates.as_deref())?,
            store,
            config,
            links,
            used_forms: Mutex::new(limits::UsedForms::default()),
            limiter: Mutex::new(limits::RateLimiter::new(
                limits::SUBSCRIBE_BURST,
                limits::SUBSCRIBE_WINDOW,
            )),
            outbox_nudge,
        })
    }

    fn config(&self) -> Arc<Config> {
        self.config.borrow().clone()
    }

    fn signer(&self) -> Option<LinkSigner> {
        self.links.borrow().clone()
    }

    fn trusted_proxies(&self) -> crate::http::client::TrustedProxies {
        crate::http::client::TrustedProxies::from_config(&self.config())
    }

    fn self_service(&self) -> bool {
        self.config().web.as_ref().is_some_and(|w| w.self_service)
    }

    /// A page, or a plain 500 that names no internals when a template fails.
    fn page(&self, status: StatusCode, name: &str, context: impl Serialize) -> Response {
        let mut value = serde_json::to_value(&context).unwrap_or_default();
        if let (serde_json::Value::Object(map), Ok(serde_json::Value::Object(base))) = (
            &mut value,
            serde_json::to_value(Base::now(self.self_service())),
        ) {
            map.extend(base);
        }
        match self.pages.render(name, value) {
            Ok(html) => (status, Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, template = name, "a page could not be rendered");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the page could not be rendered; the daemon's log says why\n",
                )
                    .into_response()
            }
        }
    }

    /// A short page that says what happened (and, for links, offers one button).
    fn notice(&self, status: StatusCode, notice: Notice) -> Response {
        self.page(status, "notice.html", notice)
    }
}

/// What the base template shows on every page.
#[derive(Serialize)]
struct Base {
    version: &'static str,
    generated_at: String,
    self_service: bool,
}

impl Base {
    fn now(self_service: bool) -> Base {
        Base {
            version: env!("CARGO_PKG_VERSION"),
            generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            self_service,
        }
    }
}

/// A notice page's content.
#[derive(Serialize, Default)]
pub(crate) struct Notice {
    heading: String,
    paragraphs: Vec<String>,
    /// "good", "bad" or "" (neutral).
    tone: &'static str,
    action: Option<NoticeAction>,
}

/// One button that posts a token back to where it came from.
#[derive(Serialize)]
pub(crate) struct NoticeAction {
    path: &'static str,
    token: String,
    label: &'static str,
}

impl Notice {
    fn new(tone: &'static str, heading: &str, paragraphs: &[&str]) -> Notice {
        Notice {
            heading: heading.into(),
            paragraphs: paragraphs.iter().map(|p| p.to_string()).collect(),
            tone,
            action: None,
        }
    }
}

async fn stylesheet(axum::extract::State(web): axum::extract::State<Arc<Web>>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        web.pages.stylesheet(),
    )
        .into_response()
}

async fn not_found(axum::extract::State(web): axum::extract::State<Arc<Web>>) -> Response {
    web.notice(
        StatusCode::NOT_FOUND,
        Notice::new("bad", "Not found", &["There is no page at this address."]),
    )
}

async fn method_not_allowed(axum::extract::State(web): axum::extract::State<Arc<Web>>) -> Response {
    web.notice(
        StatusCode::METHOD_NOT_ALLOWED,
        Notice::new(
            "bad",
            "Method not allowed",
            &["This address does not take that kind of request."],
        ),
    )
}

/// The web pages as a router (the public listener serves nothing else).
pub fn routes(web: Arc<Web>) -> Router {
    Router::new()
        .route("/", get(pages::home))
        .route("/stances/{issue}/{actor}", get(pages::stance))
        .route("/style.css", get(stylesheet))
        .route(
            "/subscribe",
            get(forms::subscribe::page).post(forms::subscribe::post),
        )
        .route(
            "/subscribe/confirm",
            get(forms::links::confirm_page).post(forms::links::confirm),
        )
        .route(
            "/unsubscribe",
            get(forms::links::unsubscribe_page).post(forms::links::unsubscribe),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(
            crate::http::security_headers,
        ))
        .with_state(web)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operator_template_replaces_the_built_in_one_and_still_escapes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("notice.html"),
            "<h1 class=\"mine\">{{ heading }}</h1>",
        )
        .unwrap();
        let pages = PageTemplates::load(Some(dir.path())).unwrap();
        let html = pages
            .render(
                "notice.html",
                serde_json::json!({"heading": "<script>x</script>"}),
            )
            .unwrap();
        assert_eq!(
            html,
            "<h1 class=\"mine\">&lt;script&gt;x&lt;&#x2f;script&gt;</h1>"
        );
        // The others stay built in.
        assert!(pages
            .render("subscribe.html", serde_json::json!({}))
            .unwrap()
            .contains("<form"));
    }
}
