//! Detection: which watch topics an article is about, and who stands where on the
//! topics' issues, with the sentence that says so.
//!
//! Every term of every topic (group terms, actor aliases, issue terms, cues) is compiled
//! into one Aho-Corasick automaton over folded text, so the cost of matching does not
//! grow with the number of terms. Relevance is decided per topic from its term groups;
//! stances are read sentence by sentence (`stance`). The rules live in the config
//! (`rules::TopicRules`); nothing here knows about Mexico. A topic with labelled
//! examples (`examples`) is read by a learned reader (`learned`) that takes the rules'
//! findings as features; `topic_models` binds each topic to its model file.

mod cues;
pub mod examples;
pub mod learned;
pub mod rules;
pub mod text;
pub mod topic_models;

pub use topic_models::{load, train_topic, LoadError, TopicModelStatus};

use std::collections::{BTreeMap, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use rules::{split_lang, TopicRules};
use text::Token;

/// Stance of an actor on an issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stance {
    Support,
    Oppose,
    Neutral,
}

impl Stance {
    pub fn as_str(self) -> &'static str {
        match self {
            Stance::Support => "support",
            Stance::Oppose => "oppose",
            Stance::Neutral => "neutral",
        }
    }
}

/// What a term means to the detector.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Role {
    Group(usize),
    Actor(usize),
    NonActor,
    AllActors,
    Issue(usize),
    Cue(Stance, Option<usize>),
    Negation,
    Reporting,
    ClauseBreak,
    Preposition,
    Conjunction,
}

#[derive(Debug, Clone)]
struct Meaning {
    topic: usize,
    role: Role,
    lang: Option<String>,
    /// Written in capitals in the config ("US", "EU"): matches only capitals.
    capitals: bool,
    term: String,
}

/// A hit of one term in a sentence, in token positions [start, end].
#[derive(Debug, Clone, Copy)]
struct Hit<'m> {
    start: usize,
    end: usize,
    meaning: &'m Meaning,
}

#[derive(Debug)]
struct CompiledTopic {
    rules: TopicRules,
    group_names: Vec<String>,
    group_weights: Vec<f64>,
    required: Vec<usize>,
    any_of: Vec<usize>,
    excluded: Vec<usize>,
}

/// A topic that an article matched.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TopicMatch {
    pub id: String,
    pub score: f64,
    pub matched: Vec<String>,
}

/// One stance read from one sentence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StanceObservation {
    pub topic: String,
    pub issue: String,
    pub actor: String,
    pub stance: Stance,
    pub confidence: f64,
    pub evidence: String,
    pub cues: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Classification {
    pub topics: Vec<TopicMatch>,
    pub stances: Vec<StanceObservation>,
}

/// The text of an article, as detection reads it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ArticleText<'a> {
    pub title: &'a str,
    pub summary: &'a str,
    pub content: &'a str,
    pub lang: Option<&'a str>,
}

/// All topics' rules, compiled, and the learned readers of the topics that have one.
pub struct Detector {
    topics: Vec<CompiledTopic>,
    automaton: AhoCorasick,
    /// Per automaton pattern, every meaning of that folded term.
    meanings: Vec<Vec<Meaning>>,
    /// Per topic, its learned reader (None: the rules read it alone).
    models: Vec<Option<AttachedModel>>,
    /// Hash of the rules and models: classification events name it.
    pub rules_hash: String,
}

/// A model bound to its topic: each head's issue and actor as rule indices.
struct AttachedModel {
    model: learned::Model,
    /// Per head: (issue, actor) indices; None for the relevance head.
    pairs: Vec<Option<(usize, usize)>>,
}

/// A sentence as the detector reads it.
struct Sentence<'a, 'd> {
    text: &'a str,
    tokens: Vec<Token>,
    hits: Vec<Hit<'d>>,
}

/// What the rules make of an article for one topic.
struct RulesView {
    relevant: bool,
    score: f64,
    matched: BTreeMap<String, String>,
    /// Per sentence: complete readings and cues left incomplete.
    readings: Vec<(Vec<cues::Observation>, Vec<cues::Partial>)>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot compile the topic rules: {0}")]
pub struct CompileError(String);

impl Detector {
    pub fn new(topics: &[TopicRules]) -> Result<Detector, CompileError> {
        let mut patterns: Vec<String> = Vec::new();
        let mut meanings: Vec<Vec<Meaning>> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut add = |pattern_term: &str, topic: usize, role: Role| {
            let (lang, body) = split_lang(pattern_term);
            let prefix = body.ends_with('*');
            let body = body.trim_end_matches('*');
            let toks: Vec<String> = text::tokens(body).into_iter().map(|t| t.folded).collect();
            if toks.is_empty() {
                return;
            }
            let letters: Vec<char> = body.chars().filter(|c| c.is_alphabetic()).collect();
            let capitals = letters.len() >= 2 && letters.iter().all(|c| c.is_uppercase());
            let key = format!(" {}{}", toks.join(" "), if prefix { "" } else { " " });
            let slot = *index.entry(key.clone()).or_insert_with(|| {
                patterns.push(key);
                meanings.push(Vec::new());
                patterns.len() - 1
            });
            meanings[slot].push(Meaning {
                topic,
                role,
                lang: lang.map(str::to_string),
                capitals,
                term: body.to_string(),
            });
        };
        let mut compiled = Vec::new();
        for (t, rules) in topics.iter().enumerate() {
            let problems = rules.problems();
            if !problems.is_empty() {
                return Err(CompileError(problems.join("; ")));
            }
            let group_names: Vec<String> = rules.groups.keys().cloned().collect();
            for (g, name) in group_names.iter().enumerate() {
                for term in &rules.groups[name].terms {
                    add(term, t, Role::Group(g));
                }
            }
            for (a, actor) in rules.actors.iter().enumerate() {
                for alias in &actor.aliases {
                    add(alias, t, Role::Actor(a));
                }
            }
            for term in &rules.non_actors {
                add(term, t, Role::NonActor);
            }
            for term in &rules.joint_actors {
                add(term, t, Role::AllActors);
            }
            for (i, issue) in rules.issues.iter().enumerate() {
                for term in &issue.terms {
                    add(term, t, Role::Issue(i));
                }
                for (list, stance) in [
                    (&issue.support, Stance::Support),
                    (&issue.oppose, Stance::Oppose),
                    (&issue.neutral, Stance::Neutral),
                ] {
                    for term in list {
                        add(term, t, Role::Cue(stance, Some(i)));
                    }
                }
            }
            let cues = &rules.cues;
            for (list, stance) in [
                (&cues.support, Stance::Support),
                (&cues.oppose, Stance::Oppose),
                (&cues.neutral, Stance::Neutral),
            ] {
                for term in list {
                    add(term, t, Role::Cue(stance, None));
                }
            }
            for term in &cues.negation {
                add(term, t, Role::Negation);
            }
            for term in &cues.reporting {
                add(term, t, Role::Reporting);
            }
            for term in &cues.clause_breaks {
                add(term, t, Role::ClauseBreak);
            }
            for term in &cues.prepositions {
                add(term, t, Role::Preposition);
            }
            for term in &cues.conjunctions {
                add(term, t, Role::Conjunction);
            }
            let position = |names: &[String]| -> Vec<usize> {
                names
                    .iter()
                    .filter_map(|n| group_names.iter().position(|g| g == n))
                    .collect()
            };
            compiled.push(CompiledTopic {
                required: position(&rules.require),
                any_of: position(&rules.require_any),
                excluded: position(&rules.exclude),
                group_weights: group_names.iter().map(|n| rules.groups[n].weight).collect(),
                group_names,
                rules: rules.clone(),
            });
        }
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&patterns)
            .map_err(|e| CompileError(e.to_string()))?;
        let rules_json = serde_json::to_string(topics).map_err(|e| CompileError(e.to_string()))?;
        Ok(Detector {
            models: (0..compiled.len()).map(|_| None).collect(),
            topics: compiled,
            automaton,
            meanings,
            rules_hash: hex::encode(&Sha256::digest(rules_json.as_bytes())[..12]),
        })
    }

    /// Gives a topic its learned reader; the hash that names readings changes with it.
    pub fn attach(&mut self, model: learned::Model) -> Result<(), CompileError> {
        let Some(t) = self.topics.iter().position(|t| t.rules.id == model.topic) else {
            return Err(CompileError(format!(
                "no topic `{}` for its model",
                model.topic
            )));
        };
        let rules = &self.topics[t].rules;
        let mut pairs = Vec::new();
        for head in &model.heads {
            match (&head.issue, &head.actor) {
                (Some(issue), Some(actor)) => {
                    let i = rules.issues.iter().position(|x| &x.id == issue);
                    let a = rules.actors.iter().position(|x| &x.id == actor);
                    match (i, a) {
                        (Some(i), Some(a)) => pairs.push(Some((i, a))),
                        _ => {
                            return Err(CompileError(format!(
                                "the model of topic `{}` reads {issue}.{actor}, which its rules do not define; run `vigia train`",
                                model.topic
                            )))
                        }
                    }
                }
                _ => pairs.push(None),
            }
        }
        let mut hasher = Sha256::new();
        hasher.update(self.rules_hash.as_bytes());
        hasher.update(model.to_json().as_bytes());
        self.rules_hash = hex::encode(&hasher.finalize()[..12]);
        self.models[t] = Some(AttachedModel { model, pairs });
        Ok(())
    }

    /// Whether a topic is read by a learned model.
    pub fn has_model(&self, topic: &str) -> bool {
        self.topics
            .iter()
            .zip(&self.models)
            .any(|(t, m)| t.rules.id == topic && m.is_some())
    }

    pub fn topic_ids(&self) -> Vec<&str> {
        self.topics.iter().map(|t| t.rules.id.as_str()).collect()
    }

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
    fn analyse<'a>(&self, article: &ArticleText<'a>) -> Vec<Sentence<'a, '_>> {
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
            sentences.extend(text::sentences(article.content).into_iter().take(3));
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
    fn rules_view(
        &self,
        t: usize,
        sentences: &[Sentence<'_, '_>],
        has_title: bool,
        every_article: bool,
    ) -> RulesView {
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
        let readings = if !relevant && !every_article {
            Vec::new()
        } else {
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
        };
        RulesView {
            relevant,
            score,
            matched,
            readings,
        }
    }

    /// The learned reader's features of each sentence (the first also carries the
    /// article's own).
    fn features(
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

    pub fn classify(&self, article: &ArticleText<'_>) -> Classification {
        let has_title = !article.title.trim().is_empty();
        let sentences = self.analyse(article);
        let mut result = Classification::default();
        for (t, topic) in self.topics.iter().enumerate() {
            let view = self.rules_view(t, &sentences, has_title, self.models[t].is_some());
            let observation = |n: usize, obs: &cues::Observation| StanceObservation {
                topic: topic.rules.id.clone(),
                issue: topic.rules.issues[obs.issue].id.clone(),
                actor: topic.rules.actors[obs.actor].id.clone(),
                stance: obs.stance,
                confidence: obs.confidence,
                evidence: sentences[n].text.to_string(),
                cues: obs.cues.clone(),
            };
            let Some(attached) = &self.models[t] else {
                if !view.relevant {
                    continue;
                }
                result.topics.push(TopicMatch {
                    id: topic.rules.id.clone(),
                    score: (view.score * 1000.0).round() / 1000.0,
                    matched: view.matched.into_values().collect(),
                });
                for (n, (observations, _)) in view.readings.iter().enumerate() {
                    result
                        .stances
                        .extend(observations.iter().map(|o| observation(n, o)));
                }
                continue;
            };
            let features = self.features(t, &sentences, &view, has_title);
            let reading = attached.model.read(&features);
            if !reading.relevant {
                continue;
            }
            result.topics.push(TopicMatch {
                id: topic.rules.id.clone(),
                score: (reading.relevance * 1000.0).round() / 1000.0,
                matched: view.matched.values().cloned().collect(),
            });
            // A headline whose rules read a clear support where the model reads none or
            // oppose: the model's prior ("Mexico always refuses") is what a turn looks
            // like to it, and a turn is what a subscriber must not miss.
            let turns: Vec<&cues::Observation> = match view.readings.first() {
                Some((obs, _)) if has_title => obs
                    .iter()
                    .filter(|o| o.stance == Stance::Support && o.confidence >= TURN_CONFIDENCE)
                    .filter(|o| {
                        !reading.stances.iter().any(|p| {
                            p.stance == Stance::Support
                                && attached.pairs.get(p.head) == Some(&Some((o.issue, o.actor)))
                        })
                    })
                    .collect(),
                _ => Vec::new(),
            };
            let mut read_pairs = Vec::new();
            for o in turns {
                if !read_pairs.contains(&(o.issue, o.actor)) {
                    read_pairs.push((o.issue, o.actor));
                    result.stances.push(observation(0, o));
                }
            }
            for pair in &reading.stances {
                let Some(Some((issue, actor))) = attached.pairs.get(pair.head) else {
                    continue;
                };
                if read_pairs.contains(&(*issue, *actor)) {
                    continue;
                }
                read_pairs.push((*issue, *actor));
                // The rules' cues for the same reading in that sentence, when they agree.
                let cues = view
                    .readings
                    .get(pair.sentence)
                    .and_then(|(obs, _)| {
                        obs.iter().find(|o| {
                            o.issue == *issue && o.actor == *actor && o.stance == pair.stance
                        })
                    })
                    .map(|o| o.cues.clone())
                    .unwrap_or_default();
                result.stances.push(StanceObservation {
                    topic: topic.rules.id.clone(),
                    issue: topic.rules.issues[*issue].id.clone(),
                    actor: topic.rules.actors[*actor].id.clone(),
                    stance: pair.stance,
                    confidence: (pair.confidence * 100.0).round() / 100.0,
                    evidence: sentences
                        .get(pair.sentence)
                        .map(|s| s.text.to_string())
                        .unwrap_or_default(),
                    cues,
                });
            }
            // Stances the model has too few examples to learn are the rules' to read,
            // where the model read nothing for that pair.
            for (n, (observations, _)) in view.readings.iter().enumerate() {
                for o in observations {
                    let head = attached
                        .pairs
                        .iter()
                        .position(|p| *p == Some((o.issue, o.actor)));
                    let rules_only =
                        head.is_none_or(|h| attached.model.heads[h].rules_only.contains(&o.stance));
                    if rules_only && !read_pairs.contains(&(o.issue, o.actor)) {
                        result.stances.push(observation(n, o));
                    }
                }
            }
        }
        dedupe(&mut result.stances);
        result
    }
}

/// How sure the rules must be of a headline's support to stand over the learned
/// reader: subject, cue and issue in one clause of the headline.
const TURN_CONFIDENCE: f64 = 0.95;

/// One observation per (topic, issue, actor, stance): the most confident.
fn dedupe(stances: &mut Vec<StanceObservation>) {
    stances.sort_by(|a, b| {
        (&a.topic, &a.issue, &a.actor, a.stance)
            .cmp(&(&b.topic, &b.issue, &b.actor, b.stance))
            .then(b.confidence.total_cmp(&a.confidence))
    });
    stances.dedup_by(|b, a| {
        a.topic == b.topic && a.issue == b.issue && a.actor == b.actor && a.stance == b.stance
    });
    stances.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
}
