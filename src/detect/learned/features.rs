//! What the learned reader sees: a sentence's folded words, word pairs and stems, and
//! what the rules found in it (hits, complete readings, cues left incomplete), hashed
//! into stable 64-bit feature ids whose top bit tells the rules' knowledge from the
//! words. Which features are kept and what they weigh is `training`'s.

use crate::detect::cues::{Observation, Partial};
use crate::detect::text::Token;
use crate::detect::{Hit, Role, Stance};

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

pub(super) fn is_knowledge(feature: u64) -> bool {
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

/// The rules' relevance score is read in quarters (0 to 4, 4 only for a full score):
/// coarse enough that each bucket is seen in many examples, where the exact score would
/// be a feature of its own for almost every article.
const SCORE_BUCKETS: f64 = 4.0;

/// The features of one sentence: its words, word pairs and stems, and what the rules
/// found in it for topic `topic`.
pub(in crate::detect) fn sentence_features(
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
    let start = out.len();
    word_features(tokens, subject, is_title, out);
    for f in &mut out[start..] {
        *f &= !KNOWLEDGE;
    }
    let words_end = out.len();
    hit_features(topic, hits, subject, out);
    reading_features(readings, is_title, out);
    if is_title {
        out.push(FeatureHash::new(b'T').finish());
    }
    for f in &mut out[words_end..] {
        *f |= KNOWLEDGE;
    }
}

/// Each word, each pair of neighbouring words in a clause, each long word's stem, and
/// the stems again with the subject and, in a headline, as headline words.
fn word_features(tokens: &[Token], subject: Option<usize>, is_title: bool, out: &mut Vec<u64>) {
    let (w_kind, b_kind, p_kind, t_kind) = (
        FeatureHash::new(b'w'),
        FeatureHash::new(b'b'),
        FeatureHash::new(b'p'),
        FeatureHash::new(b't'),
    );
    let subject_kind = subject.map(|a| FeatureHash::new(b'W').num(a));
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
        let root = match stem(word) {
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
}

/// The first STEM_CHARS letters, for words longer than one letter more.
fn stem(word: &str) -> Option<&str> {
    word.char_indices()
        .nth(STEM_CHARS)
        .filter(|_| word.char_indices().nth(STEM_CHARS + 1).is_some())
        .map(|(end, _)| &word[..end])
}

/// The topic's terms found in the sentence, by role, and its first actor as subject.
fn hit_features(topic: usize, hits: &[Hit<'_>], subject: Option<usize>, out: &mut Vec<u64>) {
    for hit in hits.iter().filter(|h| h.meaning.topic == topic) {
        let f = match hit.meaning.role {
            Role::Group(g) => FeatureHash::new(b'G').num(g),
            Role::Actor(a) => FeatureHash::new(b'A').num(a),
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
    if let Some(a) = subject {
        out.push(FeatureHash::new(b'S').num(a).finish());
    }
}

/// The rules' complete readings and incomplete cues in the sentence.
fn reading_features(
    readings: &(Vec<Observation>, Vec<Partial>),
    is_title: bool,
    out: &mut Vec<u64>,
) {
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
}

/// The article-level features: whether the rules found the topic relevant.
pub(in crate::detect) fn article_features(
    rules_relevant: bool,
    rules_score: f64,
    out: &mut Vec<u64>,
) {
    out.push(
        FeatureHash::new(b'M')
            .byte(u8::from(rules_relevant))
            .finish()
            | KNOWLEDGE,
    );
    let bucket = (rules_score * SCORE_BUCKETS)
        .floor()
        .clamp(0.0, SCORE_BUCKETS) as usize;
    out.push(FeatureHash::new(b'm').num(bucket).finish() | KNOWLEDGE);
}
