//! An article as the detector reads it: its sentences (the title, the lead, else the
//! opening), each with every term hit; per topic, the rules' view (relevance by the
//! term groups, the cues' readings of each sentence); and the learned reader's features.
//! What is made of them for the article is `classify`'s.

use std::collections::BTreeMap;

use super::text::Token;
use super::{cues, learned, text, ArticleText, Detector, Hit, Role};

/// How many of the content's sentences stand in for a missing lead: about as many as a
/// lead holds, so that an article without one is read as far as one with one.
const OPENING_SENTENCES: usize = 3;

/// A sentence as the detector reads it.
pub(super) struct Sentence<'a, 'd> {
    pub text: &'a str,
    pub tokens: Vec<Token>,
    pub hits: Vec<Hit<'d>>,
}

/// What the rules make of an article for one topic.
pub(super) struct RulesView {
    pub relevant: bool,
    pub score: f64,
    pub matched: BTreeMap<String, String>,
    /// Per sentence: complete readings and cues left incomplete.
    pub readings: Vec<(Vec<cues::Observation>, Vec<cues::Partial>)>,
}

/// Relevance by a topic's term groups: whether, the matched groups' weight share, and
/// the group terms matched (by folded spelling).
struct Relevance {
    relevant: bool,
    score: f64,
    matched: BTreeMap<String, String>,
}

impl Detector {
    /// Every term hit in a run of tokens.
    fn hits<'d>(&'d self, tokens: &[Token], lang: Option<&str>) -> Vec<Hit<'d>> {
        let mut haystack = String::with_capacity(tokens.len() * 8 + 2);
        let mut starts = Vec::with_capacity(tokens.len());
        haystack.push(' ');
        for t in tokens {
            starts.push(haystack.len());
            haystack.push_str(&t.folded);
            haystack.push(' ');
        }
        let token_at = |offset: usize| starts.partition_point(|&s| s <= offset).saturating_sub(1);
        let mut out = Vec::new();
        for m in self.automaton.find_overlapping_iter(&haystack) {
            let start = token_at(m.start() + 1);
            let end = token_at(m.end().saturating_sub(2).max(m.start() + 1));
            for meaning in &self.meanings[m.pattern().as_usize()] {
                if let (Some(want), Some(have)) = (meaning.lang.as_deref(), lang) {
                    if want != have {
                        continue;
                    }
                }
                if meaning.capitals
                    && !tokens[start..=end]
                        .iter()
                        .all(|t| t.upper || t.folded.chars().all(|c| !c.is_alphabetic()))
                {
                    continue;
                }
                out.push(Hit {
                    start,
                    end,
                    meaning,
                });
            }
        }
        out.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
        out
    }

    /// Splits an article into the sentences that are read (the title is one) and finds
    /// every term in each.
    pub(super) fn analyse<'a>(&self, article: &ArticleText<'a>) -> Vec<Sentence<'a, '_>> {
        let lang = article
            .lang
            .map(|l| l.trim().to_ascii_lowercase())
            .filter(|l| !l.is_empty());
        let lang = lang.as_deref();
        let mut sentences: Vec<&str> = Vec::new();
        if !article.title.trim().is_empty() {
            sentences.push(article.title.trim());
        }
        sentences.extend(text::sentences(article.summary));
        if article.summary.trim().is_empty() {
            // Without a lead, the article's opening stands in for it.
            sentences.extend(
                text::sentences(article.content)
                    .into_iter()
                    .take(OPENING_SENTENCES),
            );
        }
        sentences
            .into_iter()
            .map(|s| {
                let tokens = text::tokens(s);
                let hits = self.hits(&tokens, lang);
                Sentence {
                    text: s,
                    tokens,
                    hits,
                }
            })
            .collect()
    }

    /// Relevance by the topic's term groups, and the rules' readings of each sentence:
    /// always when `every_article` (the learned reader's features), else only for an
    /// article the rules find relevant (the rules read stances in nothing else).
    pub(super) fn rules_view(
        &self,
        t: usize,
        sentences: &[Sentence<'_, '_>],
        has_title: bool,
        every_article: bool,
    ) -> RulesView {
        let Relevance {
            relevant,
            score,
            matched,
        } = self.relevance(t, sentences);
        let readings = if !relevant && !every_article {
            Vec::new()
        } else {
            self.rule_readings(t, sentences, has_title)
        };
        RulesView {
            relevant,
            score,
            matched,
            readings,
        }
    }

    /// All `require` groups matched, no `exclude` group, and the matched groups' weight
    /// share at least the topic's threshold.
    fn relevance(&self, t: usize, sentences: &[Sentence<'_, '_>]) -> Relevance {
        let topic = &self.topics[t];
        let mut matched_groups = vec![false; topic.group_names.len()];
        // Spellings that fold alike ("Mexico", "México") are one matched term.
        let mut matched: BTreeMap<String, String> = BTreeMap::new();
        for hit in sentences
            .iter()
            .flat_map(|s| &s.hits)
            .filter(|h| h.meaning.topic == t)
        {
            if let Role::Group(g) = hit.meaning.role {
                matched_groups[g] = true;
                if !topic.excluded.contains(&g) {
                    matched
                        .entry(text::fold(&hit.meaning.term))
                        .or_insert_with(|| hit.meaning.term.clone());
                }
            }
        }
        let required = topic.required.iter().all(|&g| matched_groups[g])
            && (topic.any_of.is_empty() || topic.any_of.iter().any(|&g| matched_groups[g]));
        let excluded = topic.excluded.iter().any(|&g| matched_groups[g]);
        let weight = |only_matched: bool| -> f64 {
            topic
                .group_weights
                .iter()
                .enumerate()
                .filter(|(g, _)| {
                    !topic.excluded.contains(g) && (!only_matched || matched_groups[*g])
                })
                .map(|(_, w)| w)
                .sum()
        };
        let total = weight(false);
        let score = if total > 0.0 {
            weight(true) / total
        } else {
            0.0
        };
        let relevant =
            required && !excluded && score >= topic.rules.threshold && !matched.is_empty();
        Relevance {
            relevant,
            score,
            matched,
        }
    }

    /// The cues' readings of each sentence, by the topic's own hits.
    fn rule_readings(
        &self,
        t: usize,
        sentences: &[Sentence<'_, '_>],
        has_title: bool,
    ) -> Vec<(Vec<cues::Observation>, Vec<cues::Partial>)> {
        let topic = &self.topics[t];
        sentences
            .iter()
            .enumerate()
            .map(|(n, s)| {
                let topic_hits: Vec<Hit<'_>> = s
                    .hits
                    .iter()
                    .copied()
                    .filter(|h| h.meaning.topic == t)
                    .collect();
                cues::read_all(
                    topic.rules.actors.len(),
                    &s.tokens,
                    &topic_hits,
                    n == 0 && has_title,
                )
            })
            .collect()
    }

    /// The learned reader's features of each sentence (the first also carries the
    /// article's own).
    pub(super) fn features(
        &self,
        t: usize,
        sentences: &[Sentence<'_, '_>],
        view: &RulesView,
        has_title: bool,
    ) -> Vec<Vec<u64>> {
        let mut out: Vec<Vec<u64>> = sentences
            .iter()
            .zip(&view.readings)
            .enumerate()
            .map(|(n, (s, readings))| {
                let mut f = Vec::with_capacity(s.tokens.len() * 3 + 16);
                learned::sentence_features(
                    t,
                    &s.tokens,
                    &s.hits,
                    readings,
                    n == 0 && has_title,
                    &mut f,
                );
                f
            })
            .collect();
        if out.is_empty() {
            out.push(Vec::new());
        }
        learned::article_features(view.relevant, view.score, &mut out[0]);
        out
    }

    /// Features of an article for a topic, as training sees them.
    pub(crate) fn features_of(&self, topic: &str, article: &ArticleText<'_>) -> Vec<Vec<u64>> {
        let Some(t) = self.topics.iter().position(|x| x.rules.id == topic) else {
            return Vec::new();
        };
        let has_title = !article.title.trim().is_empty();
        let sentences = self.analyse(article);
        let view = self.rules_view(t, &sentences, has_title, true);
        self.features(t, &sentences, &view, has_title)
    }
}
