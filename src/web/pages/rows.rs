//! What both stance pages show of a stance: a row per (issue, actor) with its current
//! stance, since when, how confident and on what evidence; times as readers read them.
//! Only http(s) links from feeds are kept (`digest::safe_url`).

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::TopicConfig;
use crate::detect::Stance;
use crate::digest::safe_url;
use crate::events::Evidence;
use crate::projections::CurrentStance;

#[derive(Debug, Serialize)]
pub struct StanceRow {
    pub issue: String,
    pub issue_label: String,
    pub actor: String,
    pub actor_label: String,
    pub page: String,
    pub stance: Option<Stance>,
    pub phrase: Option<&'static str>,
    pub since: Option<String>,
    pub confidence: Option<String>,
    pub evidence: Vec<EvidenceRow>,
    pub timeline: Option<crate::digest::timeline::Timeline>,
}

#[derive(Debug, Serialize)]
pub struct EvidenceRow {
    pub sentence: String,
    pub title: String,
    pub outlet: Option<String>,
    pub published: Option<String>,
    pub url: Option<String>,
}

/// How a page names a stance ("Mexico's government opposes").
pub(super) fn phrase(stance: Stance) -> &'static str {
    match stance {
        Stance::Support => "supports",
        Stance::Oppose => "opposes",
        Stance::Neutral => "neutral",
    }
}

pub(super) fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    crate::digest::words::parse_time(s)
}

/// "27 Nov 2026, 14:05 UTC" from a stored RFC 3339 time, as digests write it (left
/// as it is if unreadable).
pub(super) fn when(s: &str) -> String {
    crate::digest::words::full_time_of(s, None)
}

pub(super) fn evidence_rows(evidence: &[Evidence], limit: usize) -> Vec<EvidenceRow> {
    evidence
        .iter()
        .take(limit)
        .map(|e| EvidenceRow {
            sentence: e.sentence.clone(),
            title: e.title.clone(),
            outlet: e.outlet.clone(),
            published: e.published.as_deref().map(when),
            url: safe_url(e.url.as_deref()),
        })
        .collect()
}

fn confidence(evidence: &[Evidence]) -> Option<String> {
    if evidence.is_empty() {
        return None;
    }
    let mean = evidence.iter().map(|e| e.confidence).sum::<f64>() / evidence.len() as f64;
    Some(format!(
        "{:.0}% ({} {})",
        mean * 100.0,
        evidence.len(),
        if evidence.len() == 1 {
            "story"
        } else {
            "stories"
        }
    ))
}

pub(super) fn stance_row(
    topic: &TopicConfig,
    issue: &str,
    actor: &str,
    current: Option<&CurrentStance>,
    evidence_limit: usize,
) -> StanceRow {
    StanceRow {
        issue: issue.to_string(),
        issue_label: topic.issue_label(issue),
        actor: actor.to_string(),
        actor_label: topic.actor_label(actor),
        page: format!("/stances/{issue}/{actor}"),
        stance: current.map(|c| c.stance),
        phrase: current.map(|c| phrase(c.stance)),
        since: current.map(|c| when(&c.since)),
        confidence: current.and_then(|c| confidence(&c.evidence)),
        evidence: current
            .map(|c| evidence_rows(&c.evidence, evidence_limit))
            .unwrap_or_default(),
        timeline: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_other_than_http_are_dropped() {
        assert_eq!(safe_url(Some("javascript:alert(1)")), None);
        assert_eq!(safe_url(Some("https://a.example/x y")), None);
        assert_eq!(
            safe_url(Some("https://a.example/x")).as_deref(),
            Some("https://a.example/x")
        );
    }
}
