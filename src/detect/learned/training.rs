//! Training a topic's reader: the options, which features are kept, one dense matrix
//! over the examples (rows L2-normalised, the rules' knowledge weighted), and one
//! logistic regression (linfa) per head, the heads fitted side by side. Deterministic:
//! the same examples, rules and options give the same model, whatever the cores.

use std::collections::{BTreeMap, HashMap};

use linfa::prelude::*;
use linfa_logistic::MultiLogisticRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use super::features::is_knowledge;
use super::model::{Head, Model};
use super::FORMAT;
use crate::detect::examples::Example;
use crate::detect::Stance;

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

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("topic `{0}` has no examples to learn from")]
    NoExamples(String),
    #[error("topic `{topic}` needs relevant and irrelevant examples to learn relevance")]
    OneClass { topic: String },
    #[error("training failed: {0}")]
    Fit(String),
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
    let docs = distinct_features(examples);
    let features = kept_features(&docs, options);
    let matrix = Matrix {
        docs: &docs,
        features: &features,
        index: features.iter().enumerate().map(|(i, f)| (*f, i)).collect(),
        knowledge_weight: options.knowledge_weight,
    };
    let mut jobs = vec![relevance_job(examples)];
    let relevant_rows: Vec<usize> = (0..examples.len())
        .filter(|&i| examples[i].example.relevant)
        .collect();
    for issue in issues {
        for actor in actors {
            jobs.push(pair_job(issue, actor, examples, &relevant_rows, options));
        }
    }
    let heads_cols = fit_heads(&jobs, &matrix, options)?;
    let weights = interleave(&heads_cols, features.len());
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
        weights,
        index: HashMap::default(),
    };
    model.build_index();
    Ok(model)
}

/// Each article's distinct features.
fn distinct_features(examples: &[&Featurised<'_>]) -> Vec<Vec<u64>> {
    examples
        .iter()
        .map(|e| {
            let mut d: Vec<u64> = e.sentences.iter().flatten().copied().collect();
            d.sort_unstable();
            d.dedup();
            d
        })
        .collect()
}

/// The features the model keeps: seen in at least `min_df` articles, at most
/// `max_features` of the most frequent, in id order.
fn kept_features(docs: &[Vec<u64>], options: &TrainOptions) -> Vec<u64> {
    let mut df: BTreeMap<u64, usize> = BTreeMap::new();
    for d in docs {
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
    features
}

/// The articles as the regression sees them: one row per article over the kept
/// features, L2-normalised, the rules' knowledge weighted against the words.
struct Matrix<'a> {
    docs: &'a [Vec<u64>],
    features: &'a [u64],
    /// Each kept feature's column.
    index: HashMap<u64, usize>,
    knowledge_weight: f64,
}

impl Matrix<'_> {
    /// The rows of the given articles (an article may be repeated).
    fn rows(&self, rows: &[usize]) -> Array2<f32> {
        let mut x = Array2::<f32>::zeros((rows.len(), self.features.len()));
        for (r, &doc) in rows.iter().enumerate() {
            let cols: Vec<usize> = self.docs[doc]
                .iter()
                .filter_map(|f| self.index.get(f).copied())
                .collect();
            if cols.is_empty() {
                continue;
            }
            let v = 1.0 / (cols.len() as f32).sqrt();
            for c in cols {
                x[[r, c]] = if is_knowledge(self.features[c]) {
                    v * self.knowledge_weight as f32
                } else {
                    v
                };
            }
        }
        x
    }
}

/// One head to fit: its rows of the article matrix and their targets.
struct Job<'a> {
    issue: Option<&'a String>,
    actor: Option<&'a String>,
    rows: Vec<usize>,
    y: Vec<usize>,
    names: Vec<&'static str>,
    rules_only: Vec<Stance>,
}

/// The relevance head: every article, "no" or "yes".
fn relevance_job(examples: &[&Featurised<'_>]) -> Job<'static> {
    Job {
        issue: None,
        actor: None,
        rows: (0..examples.len()).collect(),
        y: examples
            .iter()
            .map(|e| usize::from(e.example.relevant))
            .collect(),
        names: vec!["no", "yes"],
        rules_only: Vec::new(),
    }
}

/// An (issue, actor) head: the relevant articles, labelled none, support, oppose or
/// neutral; a stance with too few examples left to the rules, rare ones repeated
/// towards balance.
fn pair_job<'a>(
    issue: &'a String,
    actor: &'a String,
    examples: &[&Featurised<'_>],
    relevant_rows: &[usize],
    options: &TrainOptions,
) -> Job<'a> {
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
    let rows: Vec<usize> = keep
        .iter()
        .flat_map(|&r| std::iter::repeat_n(r, repeat(&counts, class_of(r), options)))
        .collect();
    Job {
        issue: Some(issue),
        actor: Some(actor),
        y: rows.iter().map(|&r| class_of(r)).collect(),
        rows: rows.iter().map(|&r| relevant_rows[r]).collect(),
        names: PAIR_CLASSES.iter().map(|c| class_name(*c)).collect(),
        rules_only,
    }
}

/// How many times a row of class `c` is taught: (none / c)^balance, within
/// 1..=max_repeat; "none" once.
fn repeat(counts: &[usize; 4], c: usize, options: &TrainOptions) -> usize {
    if c == 0 || counts[c] == 0 || options.balance <= 0.0 {
        return 1;
    }
    let ratio = counts[0] as f64 / counts[c] as f64;
    (ratio.powf(options.balance).round() as usize).clamp(1, options.max_repeat.max(1))
}

/// Fits every head. Heads are independent: they train side by side on the cores there
/// are, and each is deterministic, so the model does not depend on the number of threads.
fn fit_heads(
    jobs: &[Job<'_>],
    matrix: &Matrix<'_>,
    options: &TrainOptions,
) -> Result<Vec<HeadWeights>, TrainError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(jobs.len())
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut fitted: Vec<(usize, Result<HeadWeights, TrainError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let next = &next;
                scope.spawn(move || {
                    let mut done = Vec::new();
                    loop {
                        let j = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(job) = jobs.get(j) else { break };
                        done.push((j, fit_head(job, matrix, options)));
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
    fitted.sort_by_key(|(j, _)| *j);
    if fitted.len() != jobs.len() {
        return Err(TrainError::Fit("a head's training thread failed".into()));
    }
    fitted.into_iter().map(|(_, r)| r).collect()
}

/// One head, fitted; a head with nothing to learn always answers "none".
fn fit_head(
    job: &Job<'_>,
    matrix: &Matrix<'_>,
    options: &TrainOptions,
) -> Result<HeadWeights, TrainError> {
    if job.y.iter().all(|c| *c == 0) {
        let (w, b) = (Array2::zeros((matrix.features.len(), 1)), Array1::zeros(1));
        return Ok(head(job, &[0], w, b));
    }
    let dataset = Dataset::new(matrix.rows(&job.rows), Array1::from(job.y.clone()));
    let fitted = MultiLogisticRegression::<f32>::default()
        .alpha(options.alpha as f32)
        .max_iterations(options.max_iterations)
        .fit(&dataset)
        .map_err(|e| TrainError::Fit(e.to_string()))?;
    let (classes, w, b): Fitted = (
        fitted.classes().to_vec(),
        fitted.params().to_owned(),
        fitted.intercept().to_owned(),
    );
    Ok(head(job, &classes, w, b))
}

/// The model's weights: the heads' columns interleaved row by row, one contiguous row
/// per feature.
fn interleave(heads_cols: &[HeadWeights], features: usize) -> Vec<f32> {
    let width: usize = heads_cols.iter().map(|(h, _)| h.classes.len()).sum();
    let mut flat = vec![0f32; features * width];
    let mut column = 0;
    for (h, w) in heads_cols {
        for r in 0..features {
            for c in 0..h.classes.len() {
                flat[r * width + column + c] = round(f64::from(w[[r, c]]));
            }
        }
        column += h.classes.len();
    }
    flat
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

/// A job's head, with its classes named and its biases rounded like the weights.
fn head(job: &Job<'_>, classes: &[usize], w: Array2<f32>, b: Array1<f32>) -> HeadWeights {
    (
        Head {
            issue: job.issue.cloned(),
            actor: job.actor.cloned(),
            classes: classes.iter().map(|&c| job.names[c].to_string()).collect(),
            rules_only: job.rules_only.clone(),
            bias: b.iter().map(|v| round(f64::from(*v))).collect(),
        },
        w,
    )
}
