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
//!
//! `features` turns a sentence into feature ids, `training` fits the heads, `model`
//! is the model file, and `read` reads an article with it.

mod features;
mod model;
mod read;
mod training;

#[cfg(test)]
mod tests;

pub(super) use features::{article_features, sentence_features};
pub use model::{BuildFeatureHasher, FeatureHasher, Head, Model, ModelError};
pub use read::{PairReading, Reading};
pub use training::{train, Featurised, TrainError, TrainOptions};

/// Bumped whenever features or training change meaning: a model file from another
/// format is retrained, never misread.
pub const FORMAT: u32 = 3;
