//! The demo's news: each topic's labelled examples turned into dated articles of
//! demo feeds, and those feeds served as RSS on a loopback port as they stood at the
//! log's clock.
//!
//! Examples carry no date and no outlet, so both are derived, deterministically:
//!
//! * **When.** A story id starts with its year and month (`2025-02-despliegue-…`).
//!   The story breaks on a day of that month chosen by a hash of the story id (at an
//!   hour chosen the same way), and each of its articles comes out within the 48 hours
//!   after that, at a minute chosen by a hash of the article's id, never past the
//!   month's end. A story id with a year but no month (`2019-am…`) spreads over its
//!   year the same way, but no later than the newest article dated by its month (a
//!   story of this year must not land in the future, where the parser would take its
//!   date for a mistake); one with no year at all cannot be placed and is left out. One
//!   story's coverage comes out together, as real coverage does, so several outlets'
//!   articles fall within tracking's evidence window.
//! * **Who.** The outlet is the host of the example's `url`, without a leading
//!   `www.`, `amp.` or `m.` (`www.infobae.com` and `infobae.com` are one outlet).
//! * **Which feed.** One demo feed per outlet and language (`demo-{outlet}-{lang}`,
//!   the outlet as its name, the language as its `<language>`), so the feed tells
//!   the parser the language, as real feeds do, and tracking counts outlets as it
//!   would for real ones.
//!
//! A feed shows its newest `FEED_WINDOW` items published by the clock's time, as a
//! real feed shows its latest items: earlier ones are polled again and, unchanged,
//! add nothing.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Duration, NaiveDate, Utc};

use crate::config::Config;
use crate::store::Clock;

/// Items a demo feed shows at once (its newest).
const FEED_WINDOW: usize = 50;
/// How long a story's coverage lasts after it breaks.
const STORY_SPAN_MINUTES: u64 = 48 * 60;

/// One example as a demo feed publishes it.
#[derive(Debug, Clone)]
pub struct DemoArticle {
    /// The feed item's guid: the topic and the example's id.
    pub guid: String,
    pub feed: usize,
    pub title: String,
    pub summary: String,
    pub url: Option<String>,
    pub published: DateTime<Utc>,
}

/// A demo feed: one outlet in one language.
#[derive(Debug, Clone)]
pub struct DemoFeed {
    pub id: String,
    pub outlet: String,
    pub lang: String,
}

/// Every demo feed and its articles, oldest first.
#[derive(Debug, Default)]
pub struct Catalog {
    pub feeds: Vec<DemoFeed>,
    pub articles: Vec<DemoArticle>,
    /// Examples left out: their story id names no year.
    pub undated: usize,
}

impl Catalog {
    /// The config's topics' examples, dated and given to feeds; with `limit`, only the
    /// `limit` most recently published.
    pub fn from_examples(config: &Config, limit: Option<usize>) -> Catalog {
        let mut catalog = Catalog::default();
        let mut feed_index: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut dated = Vec::new();
        for (topic, set) in &config.examples {
            for example in &set.items {
                let Some(placed) = placed(example.story_key(), &example.id) else {
                    catalog.undated += 1;
                    continue;
                };
                dated.push((placed, topic, example));
            }
        }
        let newest_by_month = dated
            .iter()
            .filter(|(p, _, _)| p.by_month)
            .map(|(p, _, _)| p.at)
            .max();
        let mut dated: Vec<_> = dated
            .into_iter()
            .map(|(p, topic, example)| {
                let at = match newest_by_month {
                    Some(newest) if !p.by_month => p.at.min(newest),
                    _ => p.at,
                };
                (at, topic, example)
            })
            .collect();
        // Oldest first; ties in a fixed order, so every run feeds the same sequence.
        dated.sort_by(|a, b| (a.0, a.1, &a.2.id).cmp(&(b.0, b.1, &b.2.id)));
        if let Some(limit) = limit {
            dated.drain(..dated.len().saturating_sub(limit));
        }
        for (published, topic, example) in dated {
            let outlet = outlet(example.url.as_deref());
            let lang = example.lang.clone().unwrap_or_else(|| "und".into());
            let next = catalog.feeds.len();
            let feed = *feed_index
                .entry((outlet.clone(), lang.clone()))
                .or_insert(next);
            if feed == next {
                catalog.feeds.push(DemoFeed {
                    id: format!("demo-{outlet}-{lang}"),
                    outlet,
                    lang,
                });
            }
            catalog.articles.push(DemoArticle {
                guid: format!("{topic}/{}", example.id),
                feed,
                title: example.title.clone(),
                summary: example.summary.clone(),
                url: example.url.clone(),
                published,
            });
        }
        catalog
    }

    /// The feed's RSS as it stood at `now`: its newest items published by then.
    fn rss(&self, feed: usize, now: DateTime<Utc>) -> String {
        let f = &self.feeds[feed];
        let mut items: Vec<&DemoArticle> = self
            .articles
            .iter()
            .filter(|a| a.feed == feed && a.published <= now)
            .collect();
        items.reverse();
        items.truncate(FEED_WINDOW);
        let mut out = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<rss version=\"2.0\"><channel>\
             <title>{outlet}</title><link>https://{outlet}/</link>\
             <description>vigia demo: the labelled examples that report {outlet}'s articles</description>\
             <language>{lang}</language>\n",
            outlet = xml(&f.outlet),
            lang = xml(&f.lang),
        );
        for a in items {
            out.push_str(&format!(
                "<item><title>{}</title>{}<guid isPermaLink=\"false\">{}</guid><pubDate>{}</pubDate><description>{}</description></item>\n",
                xml(&a.title),
                a.url
                    .as_deref()
                    .map(|u| format!("<link>{}</link>", xml(u)))
                    .unwrap_or_default(),
                xml(&a.guid),
                a.published.to_rfc2822(),
                xml(&a.summary),
            ));
        }
        out.push_str("</channel></rss>\n");
        out
    }
}

/// When an example was published, by the rule in the module's doc (before a
/// story dated by its year alone is kept from passing the newest dated by month);
/// None when its story id names no year.
pub fn published_at(story: &str, id: &str) -> Option<DateTime<Utc>> {
    placed(story, id).map(|p| p.at)
}

/// A publication time, and whether the story id named its month.
struct Placed {
    at: DateTime<Utc>,
    by_month: bool,
}

fn placed(story: &str, id: &str) -> Option<Placed> {
    let (start, end, by_month) = period(story)?;
    let h = fnv1a(story);
    let days = (end - start).num_days().max(1) as u64;
    let breaks =
        start + Duration::days((h % days) as i64) + Duration::hours(((h >> 32) % 24) as i64);
    let at = breaks + Duration::minutes((fnv1a(id) % STORY_SPAN_MINUTES) as i64);
    Some(Placed {
        at: at.min(end - Duration::minutes(1)),
        by_month,
    })
}

/// The month (`YYYY-MM…`) or year (`YYYY-…`) a story id begins with, and whether it
/// was a month.
fn period(story: &str) -> Option<(DateTime<Utc>, DateTime<Utc>, bool)> {
    let bytes = story.as_bytes();
    let digits = |r: std::ops::Range<usize>| {
        bytes
            .get(r.clone())
            .filter(|b| b.iter().all(u8::is_ascii_digit))
            .and_then(|_| story.get(r)?.parse::<u32>().ok())
    };
    let year = i32::try_from(digits(0..4)?).ok()?;
    if bytes.get(4) != Some(&b'-') || !(1900..=2100).contains(&year) {
        return None;
    }
    let month = digits(5..7)
        .filter(|m| (1..=12).contains(m))
        .filter(|_| bytes.get(7).is_none_or(|b| !b.is_ascii_digit()));
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    let (start, end) = match month {
        Some(m) => {
            let start = NaiveDate::from_ymd_opt(year, m, 1)?;
            let end = match m {
                12 => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
                _ => NaiveDate::from_ymd_opt(year, m + 1, 1)?,
            };
            (start, end)
        }
        None => (
            NaiveDate::from_ymd_opt(year, 1, 1)?,
            NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
        ),
    };
    Some((midnight(start)?, midnight(end)?, month.is_some()))
}

/// FNV-1a, 64 bits: a stable hash (the standard library's may change between
/// releases, and the demo's dates must not).
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

/// The outlet named by an article's URL: its host, without `www.`, `amp.` or `m.`.
fn outlet(url: Option<&str>) -> String {
    let host = url
        .and_then(|u| url::Url::parse(u.trim()).ok())
        .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
    match host {
        Some(host) => ["www.", "amp.", "m."]
            .iter()
            .find_map(|p| host.strip_prefix(p))
            .unwrap_or(&host)
            .to_string(),
        None => "unattributed".into(),
    }
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            // XML 1.0 allows no other control characters.
            c if c.is_control() && !matches!(c, '\n' | '\t') => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// What the feed server answers from.
#[derive(Clone)]
struct Served {
    catalog: Arc<Catalog>,
    by_id: Arc<BTreeMap<String, usize>>,
    clock: Clock,
}

/// The demo feeds as an HTTP service: `/{feed id}.xml`, each as it stood at the
/// clock's time.
pub fn routes(catalog: Arc<Catalog>, clock: Clock) -> Router {
    let by_id = catalog
        .feeds
        .iter()
        .enumerate()
        .map(|(i, f)| (format!("{}.xml", f.id), i))
        .collect();
    Router::new()
        .route("/{feed}", axum::routing::get(feed))
        .with_state(Served {
            catalog,
            by_id: Arc::new(by_id),
            clock,
        })
}

async fn feed(State(served): State<Served>, Path(name): Path<String>) -> Response {
    match served.by_id.get(&name) {
        Some(&i) => (
            [(header::CONTENT_TYPE, "application/rss+xml; charset=utf-8")],
            served.catalog.rss(i, served.clock.now()),
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_story_is_placed_in_its_month_and_its_articles_within_two_days() {
        let a = published_at("2025-02-despliegue-10mil-gn", "border-en-0001").unwrap();
        let b = published_at("2025-02-despliegue-10mil-gn", "border-es-0002").unwrap();
        assert_eq!(
            a,
            published_at("2025-02-despliegue-10mil-gn", "border-en-0001").unwrap()
        );
        for x in [a, b] {
            assert!(
                x >= t("2025-02-01T00:00:00Z") && x < t("2025-03-01T00:00:00Z"),
                "{x}"
            );
        }
        assert!((a - b).num_minutes().abs() < 48 * 60);
        let dec = published_at("2024-12-x", "y").unwrap();
        assert!(dec >= t("2024-12-01T00:00:00Z") && dec < t("2025-01-01T00:00:00Z"));
    }

    #[test]
    fn a_year_alone_spreads_over_the_year_and_no_year_is_left_out() {
        let x = published_at("2019-amlo-speech", "a").unwrap();
        assert!(x >= t("2019-01-01T00:00:00Z") && x < t("2020-01-01T00:00:00Z"));
        assert!(published_at("2019-13-bad-month", "a").is_some_and(|x| x.month() >= 1));
        assert_eq!(published_at("cjng-puerto", "a"), None);
        assert_eq!(published_at("explainer", "a"), None);
    }

    #[test]
    fn the_outlet_is_the_host_without_its_usual_prefixes() {
        assert_eq!(outlet(Some("https://www.infobae.com/a")), "infobae.com");
        assert_eq!(outlet(Some("https://amp.milenio.com/x")), "milenio.com");
        assert_eq!(
            outlet(Some("https://politica.expansion.mx/x")),
            "politica.expansion.mx"
        );
        assert_eq!(outlet(None), "unattributed");
        assert_eq!(outlet(Some("not a url")), "unattributed");
    }

    #[test]
    fn feed_text_is_escaped() {
        assert_eq!(xml("a < b & \"c\"\u{1}"), "a &lt; b &amp; &quot;c&quot; ");
    }
}
