//! The learned reader: a topic's relevance and each (issue, actor) stance, read by
//! logistic regression (linfa) trained on the topic's labelled examples.
//!
//! The rules are its knowledge: what the rule engine finds in a sentence (actors,
//! issue terms, cues attributed to a subject, negations, complete rule readings) is
//! turned into features beside the folded words, word pairs and word stems, so the
//! model learns how far to trust each rule and what real phrasing the rules miss.
//! Features are hashed (FNV-1a, stable across builds); training keeps the most
//! frequent ones, and the model file stores only their weights. Prediction is a
//! sparse dot product per sentence: the article's reading sums its sentences'
//! features, and the evidence is the sentence that carries most of the predicted
//! class's weight. Training is deterministic (fixed order, no sampling), so the same
//! examples and rules give the same model file byte for byte.

use std::collections::{BTreeMap, HashMap};

use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::cues::{Observation, Partial};
use super::examples::Example;
use super::text::Token;
use super::{Hit, Role, Stance};

/// Bumped whenever features or training change meaning: a model file from another
/// format is retrained, never misread.
pub const FORMAT: u32 = 3;

/// Training settings. They are part of the model's identity (hashed with it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    /// Features seen in fewer training articles are dropped.
    pub min_df: usize,
    /// At most this many features (the most frequent) are kept.
    pub max_features: usize,
    /// L2 penalty.
    pub alpha: f64,
    pub max_iterations: u64,
    /// A class with fewer examples than this for a pair is left to the rules.
    pub min_class_examples: usize,
    /// A pair's likeliest stance is read when its probability reaches this, even where
    /// "none" is likelier: most articles say nothing of most pairs, and a reader that
    /// waits for a majority misses most stances.
    pub stance_threshold: f64,
    /// An article is about the topic when its relevance probability reaches this.
    pub relevance_threshold: f64,
    /// How much a feature of the rules' knowledge weighs against a word: more makes the
    /// model lean on the rules where the examples are few (an acceptance that real
    /// news rarely reports) and on the words where they are many.
    pub knowledge_weight: f64,
    /// Rare stances are repeated in training by (none / class)^this, at most
    /// `max_repeat` times: 0 trains on the examples as they come, 0.5 halfway to
    /// balanced classes.
    pub balance: f64,
    pub max_repeat: usize,
}

impl Default for TrainOptions {
    fn default() -> Self {
        TrainOptions {
            min_df: 2,
            max_features: 3000,
            alpha: 0.3,
            max_iterations: 40,
            min_class_examples: 10,
            stance_threshold: 0.35,
            relevance_threshold: 0.55,
            knowledge_weight: 2.0,
            balance: 1.0,
            max_repeat: 10,
        }
    }
}

/// The classes of a stance head, in column order.
const PAIR_CLASSES: [Option<Stance>; 4] = [
    None,
    Some(Stance::Support),
    Some(Stance::Oppose),
    Some(Stance::Neutral),
];

/// One logistic-regression output: relevance (no/yes) or one (issue, actor) pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    /// None for the relevance head.
    pub issue: Option<String>,
    pub actor: Option<String>,
    /// Class names in column order: "no"/"yes", or "none"/"support"/"oppose"/"neutral".
    pub classes: Vec<String>,
    /// Stances with too few examples to learn: the rules read them.
    #[serde(default)]
    pub rules_only: Vec<Stance>,
    pub bias: Vec<f32>,
}

/// A trained reader for one topic, as `vigia train` writes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    pub format: u32,
    pub topic: String,
    /// SHA-256 of the examples file it was trained on.
    pub examples_hash: String,
    /// Hash of the topic's rules (features depend on them) and the training options.
    pub rules_hash: String,
    /// Operators' corrections taken from the database as extra examples.
    pub corrections: usize,
    pub corrections_hash: String,
    pub trained_on: usize,
    pub options: TrainOptions,
    /// Hashed features, in the order of the weight rows.
    pub features: Vec<u64>,
    pub heads: Vec<Head>,
    /// One row per feature, one column per head class (heads in order), row-major.
    pub weights: Vec<f32>,
    #[serde(skip)]
    index: HashMap<u64, u32, BuildFeatureHasher>,
}

/// Feature ids are already FNV hashes: the index only needs to spread them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BuildFeatureHasher;

#[derive(Default)]
pub struct FeatureHasher(u64);

impl std::hash::Hasher for FeatureHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        // A multiply spreads the high bits into the low ones that pick the bucket.
        self.0 = (n ^ (n >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    }
}

impl std::hash::BuildHasher for BuildFeatureHasher {
    type Hasher = FeatureHasher;
    fn build_hasher(&self) -> FeatureHasher {
        FeatureHasher::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("not a model file: {0}")]
    Json(#[source] serde_json::Error),
    #[error("model format {0} is not this build's ({FORMAT}); run `vigia train`")]
    Format(u32),
    #[error("the model's weights do not match its features and heads")]
    Shape,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("topic `{0}` has no examples to learn from")]
    NoExamples(String),
    #[error("topic `{topic}` needs relevant and irrelevant examples to learn relevance")]
    OneClass { topic: String },
    #[error("training failed: {0}")]
    Fit(String),
}

/// Hashes feature names: FNV-1a, so a feature's id is the same in every build.
#[derive(Clone, Copy)]
pub(super) struct FeatureHash(u64);

impl FeatureHash {
    pub fn new(kind: u8) -> Self {
        FeatureHash(0xcbf2_9ce4_8422_2325).byte(kind)
    }
    pub fn byte(self, b: u8) -> Self {
        FeatureHash((self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
    }
    pub fn str(self, s: &str) -> Self {
        s.bytes().fold(self.byte(0x1f), |h, b| h.byte(b))
    }
    pub fn num(self, n: usize) -> Self {
        (n as u64)
            .to_le_bytes()
            .iter()
            .fold(self.byte(0x1e), |h, b| h.byte(*b))
    }
    /// Joins an already hashed part (a word's own hash), without rereading its bytes.
    pub fn with(self, part: u64) -> Self {
        let mut z = (self.0 ^ part).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        FeatureHash(z ^ (z >> 31))
    }
    pub fn finish(self) -> u64 {
        self.0
    }
}

/// The top bit of a feature id tells the rules' knowledge (set) from the words (clear).
const KNOWLEDGE: u64 = 1 << 63;

fn is_knowledge(feature: u64) -> bool {
    feature & KNOWLEDGE != 0
}

fn word_hash(word: &str) -> u64 {
    FeatureHash::new(b'.').str(word).finish()
}

fn stance_code(s: Stance) -> usize {
    match s {
        Stance::Support => 1,
        Stance::Oppose => 2,
        Stance::Neutral => 3,
    }
}

/// Letters a word stem keeps: enough to join "rechaza", "rechazó", "rechazan".
const STEM_CHARS: usize = 5;

/// The features of one sentence: its words, word pairs and stems, and what the rules
/// found in it for topic `topic`.
pub(super) fn sentence_features(
    topic: usize,
    tokens: &[Token],
    hits: &[Hit<'_>],
    readings: &(Vec<Observation>, Vec<Partial>),
    is_title: bool,
    out: &mut Vec<u64>,
) {
    // The sentence's first actor, as its likely subject: words seen with it tell the
    // heads of that actor apart from the other's ("Mexico ... frena" vs "Washington ...").
    let subject = hits
        .iter()
        .filter(|h| h.meaning.topic == topic)
        .find_map(|h| match h.meaning.role {
            Role::Actor(a) => Some(a),
            _ => None,
        });
    let (w_kind, b_kind, p_kind, t_kind) = (
        FeatureHash::new(b'w'),
        FeatureHash::new(b'b'),
        FeatureHash::new(b'p'),
        FeatureHash::new(b't'),
    );
    let subject_kind = subject.map(|a| FeatureHash::new(b'W').num(a));
    let start = out.len();
    let mut previous: Option<u64> = None;
    for token in tokens {
        let word = token.folded.as_str();
        if token.is_mark() {
            previous = None;
            continue;
        }
        let this = word_hash(word);
        out.push(w_kind.with(this).finish());
        if let Some(p) = previous {
            out.push(b_kind.with(p).with(this).finish());
        }
        // The first STEM_CHARS letters, for words longer than one letter more.
        let stem = word
            .char_indices()
            .nth(STEM_CHARS)
            .filter(|_| word.char_indices().nth(STEM_CHARS + 1).is_some())
            .map(|(end, _)| &word[..end]);
        let root = match stem {
            Some(stem) => {
                let h = word_hash(stem);
                out.push(p_kind.with(h).finish());
                h
            }
            None => this,
        };
        if let Some(kind) = subject_kind {
            out.push(kind.with(root).finish());
        }
        // Headline words apart: the headline states the story's point.
        if is_title {
            out.push(t_kind.with(root).finish());
        }
        previous = Some(this);
    }
    for f in &mut out[start..] {
        *f &= !KNOWLEDGE;
    }
    let words_end = out.len();
    let mut first_actor: Option<usize> = None;
    for hit in hits.iter().filter(|h| h.meaning.topic == topic) {
        let f = match hit.meaning.role {
            Role::Group(g) => FeatureHash::new(b'G').num(g),
            Role::Actor(a) => {
                first_actor.get_or_insert(a);
                FeatureHash::new(b'A').num(a)
            }
            Role::NonActor => FeatureHash::new(b'N'),
            Role::AllActors => FeatureHash::new(b'J'),
            Role::Issue(i) => FeatureHash::new(b'I').num(i),
            Role::Cue(s, own) => FeatureHash::new(b'C')
                .num(stance_code(s))
                .num(own.map_or(0, |i| i + 1)),
            Role::Negation => FeatureHash::new(b'X'),
            Role::Reporting => FeatureHash::new(b'R'),
            Role::ClauseBreak | Role::Preposition | Role::Conjunction => continue,
        };
        out.push(f.finish());
    }
    if let Some(a) = first_actor {
        out.push(FeatureHash::new(b'S').num(a).finish());
    }
    // What a cue says of an actor, or of an issue, whatever the other: it carries over
    // to the other issue or actor.
    let of_actor = |a: usize, s: Stance| FeatureHash::new(b'a').num(a).num(stance_code(s)).finish();
    let of_issue = |i: usize, s: Stance| FeatureHash::new(b'i').num(i).num(stance_code(s)).finish();
    let (observations, partials) = readings;
    for o in observations {
        let f = FeatureHash::new(b'O')
            .num(o.issue)
            .num(o.actor)
            .num(stance_code(o.stance));
        out.push(f.finish());
        out.push(f.byte(u8::from(is_title)).finish());
        out.push(of_actor(o.actor, o.stance));
        out.push(of_issue(o.issue, o.stance));
    }
    for p in partials {
        out.push(
            FeatureHash::new(b'Q')
                .num(p.actor.map_or(0, |a| a + 1))
                .num(p.issue.map_or(0, |i| i + 1))
                .num(stance_code(p.stance))
                .byte(u8::from(p.blocked))
                .finish(),
        );
        out.extend(p.actor.map(|a| of_actor(a, p.stance)));
        out.extend(p.issue.map(|i| of_issue(i, p.stance)));
    }
    if is_title {
        out.push(FeatureHash::new(b'T').finish());
    }
    for f in &mut out[words_end..] {
        *f |= KNOWLEDGE;
    }
}

/// The article-level features: whether the rules found the topic relevant.
pub(super) fn article_features(rules_relevant: bool, rules_score: f64, out: &mut Vec<u64>) {
    out.push(
        FeatureHash::new(b'M')
            .byte(u8::from(rules_relevant))
            .finish()
            | KNOWLEDGE,
    );
    let bucket = (rules_score * 4.0).floor().clamp(0.0, 4.0) as usize;
    out.push(FeatureHash::new(b'm').num(bucket).finish() | KNOWLEDGE);
}

/// One (issue, actor) stance the model reads in an article.
#[derive(Debug, Clone, PartialEq)]
pub struct PairReading {
    /// Index into `Model::heads`.
    pub head: usize,
    pub stance: Stance,
    pub confidence: f64,
    /// The sentence that carries it.
    pub sentence: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Probability that the article is about the topic.
    pub relevance: f64,
    /// Whether that reaches the model's threshold.
    pub relevant: bool,
    pub stances: Vec<PairReading>,
}

fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

impl Model {
    fn build_index(&mut self) {
        self.index = self
            .features
            .iter()
            .enumerate()
            .map(|(i, f)| (*f, i as u32))
            .collect();
    }

    /// Reads a model file's text, refusing one whose shapes do not add up.
    pub fn from_json(text: &str) -> Result<Model, ModelError> {
        let mut model: Model = serde_json::from_str(text).map_err(ModelError::Json)?;
        if model.format != FORMAT {
            return Err(ModelError::Format(model.format));
        }
        let shapes_agree = model.heads.iter().all(|h| h.bias.len() == h.classes.len())
            && model.weights.len() == model.features.len() * model.width();
        if !shapes_agree {
            return Err(ModelError::Shape);
        }
        model.build_index();
        Ok(model)
    }

    /// The model file's text: deterministic, so the same model is the same bytes.
    pub fn to_json(&self) -> String {
        let mut text = serde_json::to_string(self).unwrap_or_default();
        text.push('\n');
        text
    }

    pub fn width(&self) -> usize {
        self.heads.iter().map(|h| h.classes.len()).sum()
    }

    /// Reads an article from its sentences' features (the first holds the article's
    /// own features too). Relevance is read first; an article off the topic costs
    /// nothing more.
    pub fn read(&self, sentences: &[Vec<u64>]) -> Reading {
        let width = self.width();
        let mut found: Vec<(u32, usize)> = Vec::with_capacity(sentences.iter().map(Vec::len).sum());
        for (s, feats) in sentences.iter().enumerate() {
            for f in feats {
                if let Some(&row) = self.index.get(f) {
                    found.push((row, s));
                }
            }
        }
        // The article counts a feature once, as training did.
        let mut distinct: Vec<u32> = found.iter().map(|(r, _)| *r).collect();
        distinct.sort_unstable();
        distinct.dedup();
        let norm = if distinct.is_empty() {
            0.0
        } else {
            1.0 / (distinct.len() as f64).sqrt()
        };
        let scale = |row: u32| -> f64 {
            if self
                .features
                .get(row as usize)
                .is_some_and(|f| is_knowledge(*f))
            {
                self.options.knowledge_weight
            } else {
                1.0
            }
        };
        let sum_columns = |columns: std::ops::Range<usize>| -> Vec<f64> {
            let mut sums = vec![0f64; columns.len()];
            for &row in &distinct {
                let w = self.weights_row(row);
                let x = scale(row);
                for (k, c) in columns.clone().enumerate() {
                    sums[k] += f64::from(w[c]) * x;
                }
            }
            sums
        };
        let mut reading = Reading {
            relevance: 0.0,
            relevant: false,
            stances: Vec::new(),
        };
        let mut column = 0;
        let mut heads = Vec::with_capacity(self.heads.len());
        for head in &self.heads {
            heads.push(column);
            column += head.classes.len();
        }
        // Relevance first.
        for (h, head) in self
            .heads
            .iter()
            .enumerate()
            .filter(|(_, h)| h.issue.is_none())
        {
            let sums = sum_columns(heads[h]..heads[h] + head.classes.len());
            let logits: Vec<f64> = sums
                .iter()
                .zip(&head.bias)
                .map(|(s, b)| f64::from(*b) + s * norm)
                .collect();
            reading.relevance = softmax(&logits).get(1).copied().unwrap_or(0.0);
        }
        reading.relevant = reading.relevance >= self.options.relevance_threshold;
        if !reading.relevant {
            return reading;
        }
        let article = sum_columns(0..width);
        for (h, head) in self
            .heads
            .iter()
            .enumerate()
            .filter(|(_, h)| h.issue.is_some())
        {
            let start = heads[h];
            let k = head.classes.len();
            let logits: Vec<f64> = (0..k)
                .map(|c| f64::from(head.bias[c]) + article[start + c] * norm)
                .collect();
            let probs = softmax(&logits);
            // The likeliest stance, read when it reaches the threshold.
            let (best, p) = probs
                .iter()
                .copied()
                .enumerate()
                .filter(|(i, _)| head.classes[*i] != "none")
                .fold(
                    (0, f64::MIN),
                    |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
                );
            if p < self.options.stance_threshold {
                continue;
            }
            let Some(stance) = parse_class(&head.classes[best]) else {
                continue;
            };
            // The evidence: the sentence whose features push hardest from "none"
            // towards the stance read.
            let none = head.classes.iter().position(|c| c == "none");
            let mut margins = vec![0f64; sentences.len().max(1)];
            for &(row, s) in &found {
                let w = self.weights_row(row);
                margins[s] += (f64::from(w[start + best])
                    - none.map_or(0.0, |n| f64::from(w[start + n])))
                    * scale(row);
            }
            let sentence = margins
                .iter()
                .enumerate()
                .fold(
                    (0, f64::MIN),
                    |acc, (i, m)| if *m > acc.1 { (i, *m) } else { acc },
                )
                .0;
            reading.stances.push(PairReading {
                head: h,
                stance,
                confidence: p,
                sentence,
            });
        }
        reading
    }

    fn weights_row(&self, row: u32) -> &[f32] {
        let width = self.width();
        let start = row as usize * width;
        self.weights.get(start..start + width).unwrap_or(&[])
    }
}

fn parse_class(name: &str) -> Option<Stance> {
    match name {
        "support" => Some(Stance::Support),
        "oppose" => Some(Stance::Oppose),
        "neutral" => Some(Stance::Neutral),
        _ => None,
    }
}

fn class_name(class: Option<Stance>) -> &'static str {
    class.map_or("none", Stance::as_str)
}

/// An example as training sees it: its features per sentence, and its labels.
pub struct Featurised<'e> {
    pub example: &'e Example,
    pub sentences: Vec<Vec<u64>>,
}

/// A fitted head as linfa gives it: its classes, weights (features × classes), biases.
type Fitted = (Vec<usize>, Array2<f32>, Array1<f32>);
/// A head and its weight columns, before they are interleaved into the model's rows.
type HeadWeights = (Head, Array2<f32>);

/// Trains a topic's reader. `issues` and `actors` are the topic's ids in rule order.
pub fn train(
    topic: &str,
    issues: &[String],
    actors: &[String],
    examples: &[&Featurised<'_>],
    options: &TrainOptions,
) -> Result<Model, TrainError> {
    if examples.is_empty() {
        return Err(TrainError::NoExamples(topic.to_string()));
    }
    let relevant = examples.iter().filter(|e| e.example.relevant).count();
    if relevant == 0 || relevant == examples.len() {
        return Err(TrainError::OneClass {
            topic: topic.to_string(),
        });
    }
    // Each article's distinct features.
    let docs: Vec<Vec<u64>> = examples
        .iter()
        .map(|e| {
            let mut d: Vec<u64> = e.sentences.iter().flatten().copied().collect();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect();
    let mut df: BTreeMap<u64, usize> = BTreeMap::new();
    for d in &docs {
        for f in d {
            *df.entry(*f).or_default() += 1;
        }
    }
    let mut kept: Vec<(u64, usize)> = df
        .into_iter()
        .filter(|(_, n)| *n >= options.min_df)
        .collect();
    // Most frequent first; the hash breaks ties, so the choice is the same every time.
    kept.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    kept.truncate(options.max_features);
    let mut features: Vec<u64> = kept.into_iter().map(|(f, _)| f).collect();
    features.sort_unstable();
    let index: HashMap<u64, usize> = features.iter().enumerate().map(|(i, f)| (*f, i)).collect();

    let matrix = |rows: &[usize]| -> Array2<f32> {
        let mut x = Array2::<f32>::zeros((rows.len(), features.len()));
        for (r, &doc) in rows.iter().enumerate() {
            let cols: Vec<usize> = docs[doc]
                .iter()
                .filter_map(|f| index.get(f).copied())
                .collect();
            if cols.is_empty() {
                continue;
            }
            let v = 1.0 / (cols.len() as f32).sqrt();
            for c in cols {
                x[[r, c]] = if is_knowledge(features[c]) {
                    v * options.knowledge_weight as f32
                } else {
                    v
                };
            }
        }
        x
    };
    let fit = |x: Array2<f32>, y: Vec<usize>| -> Result<Fitted, TrainError> {
        let dataset = Dataset::new(x, Array1::from(y));
        let fitted = MultiLogisticRegression::<f32>::default()
            .alpha(options.alpha as f32)
            .max_iterations(options.max_iterations)
            .fit(&dataset)
            .map_err(|e| TrainError::Fit(e.to_string()))?;
        Ok((
            fitted.classes().to_vec(),
            fitted.params().to_owned(),
            fitted.intercept().to_owned(),
        ))
    };

    // Each head is one job: its rows of the article matrix and its targets.
    struct Job<'a> {
        issue: Option<&'a String>,
        actor: Option<&'a String>,
        rows: Vec<usize>,
        y: Vec<usize>,
        names: Vec<&'static str>,
        rules_only: Vec<Stance>,
    }
    let all: Vec<usize> = (0..examples.len()).collect();
    let mut jobs = vec![Job {
        issue: None,
        actor: None,
        rows: all.clone(),
        y: examples
            .iter()
            .map(|e| usize::from(e.example.relevant))
            .collect(),
        names: vec!["no", "yes"],
        rules_only: Vec::new(),
    }];
    let relevant_rows: Vec<usize> = all
        .iter()
        .copied()
        .filter(|&i| examples[i].example.relevant)
        .collect();
    for issue in issues {
        for actor in actors {
            let labels: Vec<Option<Stance>> = relevant_rows
                .iter()
                .map(|&i| examples[i].example.label(issue, actor))
                .collect();
            let mut rules_only = Vec::new();
            for s in [Stance::Support, Stance::Oppose, Stance::Neutral] {
                let n = labels.iter().filter(|l| **l == Some(s)).count();
                if n < options.min_class_examples {
                    rules_only.push(s);
                }
            }
            // Rows of a class left to the rules are not taught as "none".
            let keep: Vec<usize> = (0..labels.len())
                .filter(|&r| !labels[r].is_some_and(|s| rules_only.contains(&s)))
                .collect();
            let class_of = |r: usize| {
                PAIR_CLASSES
                    .iter()
                    .position(|c| *c == labels[r])
                    .unwrap_or(0)
            };
            let mut counts = [0usize; 4];
            for &r in &keep {
                counts[class_of(r)] += 1;
            }
            let repeat = |c: usize| -> usize {
                if c == 0 || counts[c] == 0 || options.balance <= 0.0 {
                    return 1;
                }
                let ratio = counts[0] as f64 / counts[c] as f64;
                (ratio.powf(options.balance).round() as usize).clamp(1, options.max_repeat.max(1))
            };
            let rows: Vec<usize> = keep
                .iter()
                .flat_map(|&r| std::iter::repeat_n(r, repeat(class_of(r))))
                .collect();
            jobs.push(Job {
                issue: Some(issue),
                actor: Some(actor),
                y: rows.iter().map(|&r| class_of(r)).collect(),
                rows: rows.iter().map(|&r| relevant_rows[r]).collect(),
                names: PAIR_CLASSES.iter().map(|c| class_name(*c)).collect(),
                rules_only,
            });
        }
    }
    // Heads are independent: they train side by side on the cores there are, and each
    // is deterministic, so the model does not depend on the number of threads.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let fitted: Vec<(usize, Result<HeadWeights, TrainError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (jobs, next, matrix, fit, features) = (&jobs, &next, &matrix, &fit, &features);
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(job) = jobs.get(j) else { break };
                        let result = if job.y.iter().all(|c| *c == 0) {
                            // Nothing to learn: a head that always answers "none".
                            Ok(head(
                                job.issue,
                                job.actor,
                                &[0],
                                &job.names,
                                job.rules_only.clone(),
                                Array2::zeros((features.len(), 1)),
                                Array1::zeros(1),
                            ))
                        } else {
                            fit(matrix(&job.rows), job.y.clone()).map(|(classes, w, b)| {
                                head(
                                    job.issue,
                                    job.actor,
                                    &classes,
                                    &job.names,
                                    job.rules_only.clone(),
                                    w,
                                    b,
                                )
                            })
                        };
                        done.push((j, result));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let mut fitted = fitted;
    fitted.sort_by_key(|(j, _)| *j);
    if fitted.len() != jobs.len() {
        return Err(TrainError::Fit("a head's training thread failed".into()));
    }
    let heads_cols: Vec<(Head, Array2<f32>)> = fitted
        .into_iter()
        .map(|(_, r)| r)
        .collect::<Result<_, _>>()?;

    // Interleave the heads' columns row by row: one contiguous row per feature.
    let width: usize = heads_cols.iter().map(|(h, _)| h.classes.len()).sum();
    let mut flat = vec![0f32; features.len() * width];
    let mut column = 0;
    for (h, w) in &heads_cols {
        for r in 0..features.len() {
            for c in 0..h.classes.len() {
                flat[r * width + column + c] = round(f64::from(w[[r, c]]));
            }
        }
        column += h.classes.len();
    }
    let mut model = Model {
        format: FORMAT,
        topic: topic.to_string(),
        examples_hash: String::new(),
        rules_hash: String::new(),
        corrections: 0,
        corrections_hash: String::new(),
        trained_on: examples.len(),
        options: options.clone(),
        features,
        heads: heads_cols.into_iter().map(|(h, _)| h).collect(),
        weights: flat,
        index: HashMap::default(),
    };
    model.build_index();
    Ok(model)
}

/// Weights kept to 6 significant digits: the file stays small and its text stable.
fn round(x: f64) -> f32 {
    if x == 0.0 || !x.is_finite() {
        return 0.0;
    }
    let digits = 6 - (x.abs().log10().floor() as i32) - 1;
    let scale = 10f64.powi(digits);
    ((x * scale).round() / scale) as f32
}

fn head(
    issue: Option<&String>,
    actor: Option<&String>,
    classes: &[usize],
    names: &[&str],
    rules_only: Vec<Stance>,
    w: Array2<f32>,
    b: Array1<f32>,
) -> (Head, Array2<f32>) {
    (
        Head {
            issue: issue.cloned(),
            actor: actor.cloned(),
            classes: classes.iter().map(|&c| names[c].to_string()).collect(),
            rules_only,
            bias: b.iter().map(|v| round(f64::from(*v))).collect(),
        },
        w,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::examples::Example;

    fn example(id: usize, title: &str, relevant: bool, stance: Option<Stance>) -> Example {
        let mut issues = BTreeMap::new();
        issues.insert(
            "mil".to_string(),
            BTreeMap::from([("mx".to_string(), stance)]),
        );
        Example {
            id: id.to_string(),
            lang: Some("en".into()),
            title: title.into(),
            summary: String::new(),
            url: None,
            story: None,
            relevant,
            issues,
            note: None,
        }
    }

    /// Articles whose words alone decide: "rejects" oppose, "accepts" support.
    fn examples() -> Vec<Example> {
        let mut out = Vec::new();
        for i in 0..60 {
            let (title, relevant, stance) = match i % 4 {
                0 => ("mexico rejects troops", true, Some(Stance::Oppose)),
                1 => ("mexico accepts troops", true, Some(Stance::Support)),
                2 => ("mexico troops parade", true, None),
                _ => ("city park opens", false, None),
            };
            out.push(example(i, &format!("{title} {i}"), relevant, stance));
        }
        out
    }

    fn featurised(examples: &[Example]) -> Vec<Featurised<'_>> {
        examples
            .iter()
            .map(|e| {
                let mut f = Vec::new();
                let tokens = crate::detect::text::tokens(&e.title);
                sentence_features(0, &tokens, &[], &(Vec::new(), Vec::new()), true, &mut f);
                Featurised {
                    example: e,
                    sentences: vec![f],
                }
            })
            .collect()
    }

    fn train_small(examples: &[Example]) -> Model {
        let f = featurised(examples);
        let refs: Vec<&Featurised<'_>> = f.iter().collect();
        let options = TrainOptions {
            min_class_examples: 5,
            ..TrainOptions::default()
        };
        train("t", &["mil".into()], &["mx".into()], &refs, &options).unwrap()
    }

    fn read(model: &Model, title: &str) -> Reading {
        let mut f = Vec::new();
        let tokens = crate::detect::text::tokens(title);
        sentence_features(0, &tokens, &[], &(Vec::new(), Vec::new()), true, &mut f);
        model.read(&[f])
    }

    #[test]
    fn the_same_examples_give_the_same_model_byte_for_byte() {
        let examples = examples();
        let a = train_small(&examples).to_json();
        let b = train_small(&examples).to_json();
        assert_eq!(a, b);
        let back = Model::from_json(&a).unwrap();
        assert_eq!(back.to_json(), a, "a model file reads back unchanged");
    }

    #[test]
    fn learns_relevance_and_stances_from_words() {
        let model = train_small(&examples());
        let rejects = read(&model, "mexico rejects troops again");
        assert!(rejects.relevant, "{rejects:?}");
        assert_eq!(rejects.stances.len(), 1, "{rejects:?}");
        assert_eq!(rejects.stances[0].stance, Stance::Oppose);
        let accepts = read(&model, "mexico accepts troops again");
        assert_eq!(accepts.stances[0].stance, Stance::Support, "{accepts:?}");
        assert!(!read(&model, "city park opens again").relevant);
    }

    #[test]
    fn a_class_with_too_few_examples_is_left_to_the_rules() {
        let model = train_small(&examples());
        let head = &model.heads[1];
        assert!(head.rules_only.contains(&Stance::Neutral), "{head:?}");
        assert!(!head.classes.iter().any(|c| c == "neutral"));
    }

    #[test]
    fn a_damaged_model_file_is_refused() {
        let mut model = train_small(&examples());
        model.weights.pop();
        let err = Model::from_json(&model.to_json()).unwrap_err();
        assert!(matches!(err, ModelError::Shape), "{err}");
        model.format = FORMAT + 1;
        assert!(matches!(
            Model::from_json(&model.to_json()).unwrap_err(),
            ModelError::Format(_) | ModelError::Shape
        ));
    }
}
