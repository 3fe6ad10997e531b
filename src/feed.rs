//! From a fetched body to articles: charset, parsing (feed-rs), and normalisation.
//!
//! Each item becomes an article with a stable identity (feed + guid, else the canonical
//! link, else a hash of title and date), a canonical URL (tracking parameters and the
//! fragment dropped), clean text for title, summary and content (HTML rendered to text,
//! so nothing from a feed is markup downstream), a language and a publication date.
//! Whether an article is new or changed is `crate::ingest`'s question.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use url::Url;

use crate::events::{ArticleBody, PollFailureKind};

/// Longest text kept per field, in characters: enough for a lead and a long article,
/// bounded so one odd feed cannot bloat the log.
const MAX_TITLE: usize = 1_000;
const MAX_SUMMARY: usize = 5_000;
const MAX_CONTENT: usize = 50_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    #[error("not a feed: {0}")]
    NotAFeed(String),
    #[error("cannot parse the feed: {0}")]
    Parse(String),
    #[error("cannot decode the feed's text: {0}")]
    Encoding(String),
}

impl FeedError {
    pub fn kind(&self) -> PollFailureKind {
        match self {
            FeedError::NotAFeed(_) => PollFailureKind::NotAFeed,
            FeedError::Parse(_) => PollFailureKind::Parse,
            FeedError::Encoding(_) => PollFailureKind::Encoding,
        }
    }
}

/// An item, normalised.
#[derive(Debug, Clone, PartialEq)]
pub struct Article {
    pub article_id: String,
    pub guid: Option<String>,
    pub body: ArticleBody,
    /// Hash of what a reader sees (title, summary, content): a change is a revision.
    pub content_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParsedFeed {
    pub title: Option<String>,
    /// RSS `<ttl>`, in minutes: the publisher's floor on the poll interval.
    pub ttl_minutes: Option<u32>,
    /// Items in the document, duplicates included.
    pub items: usize,
    /// Articles, each identity once (the first occurrence wins).
    pub articles: Vec<Article>,
}

/// What the parser needs to know about the feed besides its bytes.
#[derive(Debug, Clone, Copy)]
pub struct FeedContext<'a> {
    pub feed_id: &'a str,
    pub url: &'a Url,
    pub content_type: Option<&'a str>,
    pub lang_hint: Option<&'a str>,
    pub outlet: Option<&'a str>,
}

pub fn parse(bytes: &[u8], ctx: FeedContext<'_>) -> Result<ParsedFeed, FeedError> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(FeedError::NotAFeed("the body is empty".into()));
    }
    let bytes = to_utf8(bytes, ctx.content_type)?;
    let parser = feed_rs::parser::Builder::new()
        .base_uri(Some(ctx.url.as_str()))
        // An empty id tells us the item had none, so we can choose the identity ourselves.
        .id_generator(|_, _, _| String::new())
        .build();
    let feed = parser
        .parse(bytes.as_ref())
        .map_err(|e| describe_parse_error(e, ctx.content_type, &bytes))?;
    let title = feed
        .title
        .as_ref()
        .map(|t| clip(&text_of(&t.content), MAX_TITLE));
    let outlet = ctx
        .outlet
        .map(str::to_string)
        .or_else(|| title.clone().filter(|t| !t.is_empty()));
    // One detection per feed, from its first items, when neither the feed nor the
    // config says: feeds are nearly always in one language, and detection per item
    // was the largest cost of a cold cycle.
    let feed_lang = feed
        .language
        .as_deref()
        .map(normalise_lang)
        .or_else(|| ctx.lang_hint.map(normalise_lang))
        .or_else(|| {
            let sample: Vec<String> = feed
                .entries
                .iter()
                .take(5)
                .flat_map(|e| [e.title.as_ref(), e.summary.as_ref()])
                .flatten()
                .map(|t| text_of(&t.content))
                .collect();
            detect_lang(&sample.join(". "), "")
        });
    let mut seen = HashSet::new();
    let mut articles = Vec::with_capacity(feed.entries.len());
    let items = feed.entries.len();
    for entry in feed.entries {
        let article = normalise(entry, &ctx, feed_lang.as_deref(), outlet.as_deref());
        if seen.insert(article.article_id.clone()) {
            articles.push(article);
        }
    }
    Ok(ParsedFeed {
        title,
        ttl_minutes: feed.ttl,
        items,
        articles,
    })
}

fn describe_parse_error(
    err: feed_rs::parser::ParseFeedError,
    content_type: Option<&str>,
    bytes: &[u8],
) -> FeedError {
    use feed_rs::parser::{ParseErrorKind, ParseFeedError};
    let head = String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).to_ascii_lowercase();
    let looks_feed = head.contains("<rss")
        || head.contains("<feed")
        || head.contains("<rdf:rdf")
        || head.trim_start().starts_with('{');
    let looks_html = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("html")) || {
        let head = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).to_ascii_lowercase();
        head.contains("<!doctype html") || head.contains("<html")
    };
    match err {
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) if looks_html => {
            FeedError::NotAFeed("the server sent an HTML page, not a feed".into())
        }
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) if looks_feed => FeedError::Parse(
            "the feed's root element is malformed or the document is cut short".into(),
        ),
        ParseFeedError::ParseError(ParseErrorKind::NoFeedRoot) => {
            FeedError::NotAFeed("no RSS, Atom or JSON Feed root element".into())
        }
        ParseFeedError::ParseError(kind) => FeedError::Parse(kind.to_string()),
        ParseFeedError::IoError(e) => FeedError::Parse(e.to_string()),
        ParseFeedError::JsonSerde(e) => FeedError::Parse(format!("JSON Feed: {e}")),
        ParseFeedError::JsonUnsupportedVersion(v) => {
            FeedError::Parse(format!("unsupported JSON Feed version {v}"))
        }
        ParseFeedError::XmlReader(e) => {
            if looks_html {
                FeedError::NotAFeed(format!("the server sent HTML, not a feed ({e})"))
            } else {
                FeedError::Parse(format!("XML: {e}"))
            }
        }
    }
}

/// Re-encodes the body as UTF-8 when the HTTP Content-Type names another charset
/// (which, for XML, takes precedence over the document's own declaration, RFC 7303).
/// Without one, the XML declaration decides and the parser reads it.
fn to_utf8<'a>(
    bytes: &'a [u8],
    content_type: Option<&str>,
) -> Result<std::borrow::Cow<'a, [u8]>, FeedError> {
    let charset = content_type.and_then(|ct| {
        ct.split(';').skip(1).find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("charset")
                .then(|| v.trim().trim_matches('"').to_string())
        })
    });
    let Some(label) = charset else {
        return Ok(bytes.into());
    };
    let Some(encoding) = encoding_rs::Encoding::for_label(label.as_bytes()) else {
        return Err(FeedError::Encoding(format!(
            "unknown charset {label:?} in Content-Type"
        )));
    };
    if encoding == encoding_rs::UTF_8 {
        return Ok(bytes.into());
    }
    // A BOM overrides any label; encoding_rs honours it.
    let (text, _, _) = encoding.decode(bytes);
    Ok(rewrite_declaration(&text).into_bytes().into())
}

/// The document's XML declaration with its encoding set to UTF-8 (the bytes now are).
fn rewrite_declaration(text: &str) -> String {
    let trimmed = text.trim_start_matches('\u{feff}');
    if let Some(rest) = trimmed.strip_prefix("<?xml") {
        if let Some(end) = rest.find("?>") {
            let decl = &rest[..end];
            let cleaned: String = match decl.find("encoding") {
                Some(at) => {
                    let after = &decl[at..];
                    let quote_start = after.find(['"', '\'']);
                    match quote_start {
                        Some(q) => {
                            let quote = after.as_bytes()[q] as char;
                            match after[q + 1..].find(quote) {
                                Some(close) => format!(
                                    "{}encoding=\"UTF-8\"{}",
                                    &decl[..at],
                                    &after[q + 1 + close + 1..]
                                ),
                                None => decl.to_string(),
                            }
                        }
                        None => decl.to_string(),
                    }
                }
                None => decl.to_string(),
            };
            return format!("<?xml{cleaned}?>{}", &rest[end + 2..]);
        }
    }
    trimmed.to_string()
}

fn normalise(
    entry: feed_rs::model::Entry,
    ctx: &FeedContext<'_>,
    feed_lang: Option<&str>,
    outlet: Option<&str>,
) -> Article {
    let title = entry
        .title
        .as_ref()
        .map(|t| clip(&text_of(&t.content), MAX_TITLE))
        .unwrap_or_default();
    let summary = entry
        .summary
        .as_ref()
        .map(|t| clip(&text_of(&t.content), MAX_SUMMARY))
        .unwrap_or_default();
    let content = entry
        .content
        .as_ref()
        .and_then(|c| c.body.as_deref())
        .map(|b| clip(&text_of(b), MAX_CONTENT))
        .unwrap_or_default();
    let link = entry
        .links
        .iter()
        .find(|l| l.rel.as_deref().is_none_or(|r| r == "alternate"))
        .or(entry.links.first())
        .and_then(|l| ctx.url.join(l.href.trim()).ok())
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .map(|u| canonical_url(&u));
    let now = Utc::now();
    let plausible = |d: &DateTime<Utc>| *d <= now + chrono::Duration::days(1);
    let published = entry
        .published
        .filter(plausible)
        .or(entry.updated.filter(plausible))
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let lang = entry
        .language
        .as_deref()
        .map(normalise_lang)
        .or_else(|| feed_lang.map(str::to_string))
        .or_else(|| detect_lang(&title, &summary));
    let guid = Some(entry.id.trim().to_string()).filter(|g| !g.is_empty());
    let identity = match (&guid, &link) {
        (Some(g), _) => format!("guid:{g}"),
        (None, Some(l)) => format!("link:{l}"),
        (None, None) => format!("hash:{}\u{0}{}", title, published.as_deref().unwrap_or("")),
    };
    let article_id = short_hash(&[ctx.feed_id, &identity]);
    let content_hash = short_hash(&[&title, &summary, &content]);
    Article {
        article_id,
        guid,
        body: ArticleBody {
            title,
            summary,
            content,
            url: link,
            lang,
            published,
            outlet: outlet.map(str::to_string),
        },
        content_hash,
    }
}

fn short_hash(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for p in parts {
        hasher.update(p.as_bytes());
        hasher.update([0u8]);
    }
    hex::encode(&hasher.finalize()[..12])
}

/// Query parameters that only track the reader and never change the page.
fn is_tracking_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("utm_")
        || matches!(
            n.as_str(),
            "fbclid"
                | "gclid"
                | "dclid"
                | "gclsrc"
                | "msclkid"
                | "mc_cid"
                | "mc_eid"
                | "igshid"
                | "_hsenc"
                | "_hsmi"
                | "mkt_tok"
                | "yclid"
                | "twclid"
                | "ocid"
                | "cmpid"
                | "smid"
                | "sref"
        )
}

/// The URL without fragment and tracking parameters; the rest of the query kept in order.
pub fn canonical_url(url: &Url) -> String {
    let mut u = url.clone();
    u.set_fragment(None);
    if u.query().is_some() {
        let kept: Vec<(String, String)> = u
            .query_pairs()
            .filter(|(k, _)| !is_tracking_param(k))
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if kept.is_empty() {
            u.set_query(None);
        } else {
            u.query_pairs_mut().clear().extend_pairs(kept);
        }
    }
    u.to_string()
}

/// Clean text from a feed field that may hold HTML: tags rendered away, entities
/// decoded, whitespace collapsed.
pub fn text_of(raw: &str) -> String {
    if !raw.contains(['<', '&']) {
        return collapse_whitespace(raw);
    }
    let rendered = html2text::config::plain_no_decorate()
        .string_from_read(raw.as_bytes(), 100_000)
        .unwrap_or_else(|_| strip_tags(raw));
    collapse_whitespace(&rendered)
}

/// A last resort when the HTML renderer gives up: drop anything between < and >.
fn strip_tags(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut in_tag = false;
    for c in raw.chars() {
        match c {
            '<' => in_tag = true,
            '>' if in_tag => {
                in_tag = false;
                out.push(' ');
            }
            _ if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Characters that change how text around them is shown without being seen: bidi
/// overrides and isolates (which can make a headline read backwards, or a link
/// look like another) and zero-width characters (which can hide words from
/// matching). None belongs in a headline, so none is recorded.
pub fn is_invisible_format(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{2069}'
            | '\u{061C}'
            | '\u{180E}'
            | '\u{FEFF}'
    )
}

fn collapse_whitespace(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split(|c: char| c.is_whitespace() || c.is_control()) {
        if word.is_empty() {
            continue;
        }
        let start = out.len();
        if start > 0 {
            out.push(' ');
        }
        out.extend(word.chars().filter(|c| !is_invisible_format(*c)));
        // A word made only of invisible characters leaves no trace.
        if out.len() == start + usize::from(start > 0) {
            out.truncate(start);
        }
    }
    out
}

fn clip(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((at, _)) => s[..at].to_string(),
        None => s.to_string(),
    }
}

/// "en-US" → "en"; "es_MX" → "es".
fn normalise_lang(tag: &str) -> String {
    tag.trim()
        .split(['-', '_'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Languages told apart when a feed does not say: the watch topics' languages and
/// their neighbours. A short list keeps detection cheap (it was a third of a cold
/// cycle with every language) and accurate on headline-length text.
const DETECTABLE: [whatlang::Lang; 6] = [
    whatlang::Lang::Eng,
    whatlang::Lang::Spa,
    whatlang::Lang::Por,
    whatlang::Lang::Fra,
    whatlang::Lang::Deu,
    whatlang::Lang::Ita,
];

fn detect_lang(title: &str, summary: &str) -> Option<String> {
    static DETECTOR: std::sync::OnceLock<whatlang::Detector> = std::sync::OnceLock::new();
    let detector = DETECTOR.get_or_init(|| whatlang::Detector::with_allowlist(DETECTABLE.to_vec()));
    let sample = clip(&format!("{title}. {summary}"), 300);
    let info = detector.detect(&sample)?;
    if !info.is_reliable() {
        return None;
    }
    let code = match info.lang() {
        whatlang::Lang::Eng => "en",
        whatlang::Lang::Spa => "es",
        whatlang::Lang::Por => "pt",
        whatlang::Lang::Fra => "fr",
        whatlang::Lang::Deu => "de",
        whatlang::Lang::Ita => "it",
        other => other.code(),
    };
    Some(code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(url: &Url) -> FeedContext<'_> {
        FeedContext {
            feed_id: "t",
            url,
            content_type: None,
            lang_hint: None,
            outlet: None,
        }
    }

    #[test]
    fn tracking_parameters_and_fragments_are_dropped() {
        let u = Url::parse("https://Example.org/a/b?id=7&utm_source=x&fbclid=y#top").unwrap();
        assert_eq!(canonical_url(&u), "https://example.org/a/b?id=7");
        let u = Url::parse("https://example.org/a?utm_medium=rss").unwrap();
        assert_eq!(canonical_url(&u), "https://example.org/a");
    }

    #[test]
    fn bidi_controls_and_zero_width_characters_are_not_recorded() {
        assert_eq!(
            text_of("M\u{e9}xico \u{202E}rechaza\u{202C} la sobera\u{200B}n\u{ed}a \u{2066}x\u{2069} \u{200D}"),
            "M\u{e9}xico rechaza la soberan\u{ed}a x"
        );
        assert_eq!(
            text_of("<b>Trump</b>\u{200F} amenaza &amp; \u{FEFF}M\u{e9}xico"),
            "Trump amenaza & M\u{e9}xico"
        );
    }

    #[test]
    fn html_becomes_text_and_scripts_vanish() {
        let t = text_of("<p>Hola <b>mundo</b> &amp; <script>alert(1)</script>adi&oacute;s</p>");
        assert!(t.contains("Hola mundo & adiós"), "{t}");
        assert!(!t.contains("alert"), "{t}");
        assert!(!t.contains('<'));
    }

    #[test]
    fn identity_prefers_guid_then_link_then_title_and_date() {
        let url = Url::parse("http://127.0.0.1/f.xml").unwrap();
        let rss = |item: &str| {
            format!("<rss version=\"2.0\"><channel><title>T</title>{item}</channel></rss>")
        };
        let a = parse(
            rss("<item><guid>g1</guid><title>A</title><link>http://x.org/1</link></item>")
                .as_bytes(),
            ctx(&url),
        )
        .unwrap();
        let b = parse(
            rss("<item><guid>g1</guid><title>B</title><link>http://x.org/2</link></item>")
                .as_bytes(),
            ctx(&url),
        )
        .unwrap();
        assert_eq!(
            a.articles[0].article_id, b.articles[0].article_id,
            "same guid, same article"
        );
        assert_ne!(a.articles[0].content_hash, b.articles[0].content_hash);
        let c = parse(
            rss("<item><title>A</title><link>http://x.org/1?utm_source=a</link></item>").as_bytes(),
            ctx(&url),
        )
        .unwrap();
        let d = parse(
            rss("<item><title>A2</title><link>http://x.org/1</link></item>").as_bytes(),
            ctx(&url),
        )
        .unwrap();
        assert_eq!(
            c.articles[0].article_id, d.articles[0].article_id,
            "no guid: the canonical link"
        );
        let e = parse(
            rss("<item><title>Only a title</title></item><item><title>Only a title</title></item>")
                .as_bytes(),
            ctx(&url),
        )
        .unwrap();
        assert_eq!(
            (e.items, e.articles.len()),
            (2, 1),
            "true duplicates collapse"
        );
    }

    #[test]
    fn content_type_charset_is_honoured() {
        let url = Url::parse("http://127.0.0.1/f.xml").unwrap();
        let doc = "<?xml version=\"1.0\" encoding=\"utf-8\"?><rss version=\"2.0\"><channel><title>T</title><item><guid>1</guid><title>Intervenci\u{f3}n</title></item></channel></rss>";
        let (latin1, _, _) = encoding_rs::WINDOWS_1252.encode(doc);
        let mut c = ctx(&url);
        c.content_type = Some("application/rss+xml; charset=ISO-8859-1");
        let parsed = parse(&latin1, c).unwrap();
        assert_eq!(parsed.articles[0].body.title, "Intervención");
    }

    #[test]
    fn an_html_page_is_not_a_feed() {
        let url = Url::parse("http://127.0.0.1/f.xml").unwrap();
        let err = parse(
            b"<!doctype html><html><body><p>Moved</p></body></html>",
            ctx(&url),
        )
        .unwrap_err();
        assert_eq!(err.kind(), PollFailureKind::NotAFeed, "{err}");
    }
}
