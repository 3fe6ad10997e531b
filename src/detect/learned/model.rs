//! The model file: a trained reader's heads, its kept features and their weights, read
//! back only when its shapes add up, and written as the same bytes for the same model.
//! Reading an article with it is `read`'s; fitting it is `training`'s.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{TrainOptions, FORMAT};
use crate::detect::Stance;

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
    pub(super) index: HashMap<u64, u32, BuildFeatureHasher>,
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

impl Model {
    pub(super) fn build_index(&mut self) {
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

    pub(super) fn weights_row(&self, row: u32) -> &[f32] {
        let width = self.width();
        let start = row as usize * width;
        self.weights.get(start..start + width).unwrap_or(&[])
    }
}
