//! Detection: which watch topics an article is about, and who stands where on the
//! topics' issues, with the sentence that says so.
//!
//! Every term of every topic (group terms, actor aliases, issue terms, cues) is compiled
//! into one Aho-Corasick automaton over folded text, so the cost of matching does not
//! grow with the number of terms. Relevance is decided per topic from its term groups;
//! stances are read sentence by sentence (`cues`). The rules live in the config
//! (`rules::TopicRules`); nothing here knows about Mexico. A topic with labelled
//! examples (`examples`) is read by a learned reader (`learned`) that takes the rules'
//! findings as features; `topic_models` binds each topic to its model file.
//!
//! This file holds the detector's vocabulary and results; `compile` builds a detector
//! from the rules, `analyse` reads an article's sentences with it, `classify` decides.

mod analyse;
mod classify;
mod compile;
mod cues;
pub mod examples;
pub mod learned;
pub mod rules;
pub mod text;
pub mod topic_models;

pub use topic_models::{load, train_topic, LoadError, TopicModelStatus};

use aho_corasick::AhoCorasick;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use compile::CompiledTopic;

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

#[derive(Debug, thiserror::Error)]
#[error("cannot compile the topic rules: {0}")]
pub struct CompileError(String);

impl Detector {
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
}
