//! Reading stances from one sentence: which actor a cue belongs to, which issue it is
//! about, and whether negation or modality turns it around.
//!
//! The actor is the subject of the cue: the nearest actor before it in its clause
//! ("Mexico rejects US troops": Mexico, not the US), else the sentence's speaker
//! ("..., the foreign minister said", "dijo la presidenta", "Sheinbaum: no habrá..."),
//! else the nearest actor before it in the sentence. Someone who is not an actor
//! (a senator, a governor, a cartel) in that place blocks the cue. The issue is the
//! cue's own, or the nearest issue term after it, else before it in the clause.

use super::text::Token;
use super::{Hit, Role, Stance};

/// How far (in tokens) a negation may stand before its cue: "will not allow",
/// "would never accept", "no permitirá".
const NEGATION_REACH: usize = 3;
/// How far after a cue its issue may be named.
const ISSUE_REACH_AFTER: usize = 12;
/// How close a verb of saying must be to its speaker.
const SPEAKER_REACH: usize = 3;

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Observation {
    pub issue: usize,
    pub actor: usize,
    pub stance: Stance,
    pub confidence: f64,
    pub cues: Vec<String>,
}

/// A cue whose actor or issue could not be found: no stance by the rules, but a hint
/// for the learned reader ("rejects" with Mexico as subject and no issue named).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Partial {
    pub actor: Option<usize>,
    pub issue: Option<usize>,
    pub stance: Stance,
    /// A non-actor (a senator, a cartel) is the cue's subject.
    pub blocked: bool,
}

/// Who a hit names.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Party {
    Actor(usize),
    /// "Both governments": every actor.
    All,
    /// Someone who is not an actor: their cue gives no stance.
    Nobody,
}

fn party(hit: &Hit<'_>) -> Option<Party> {
    match hit.meaning.role {
        Role::Actor(a) => Some(Party::Actor(a)),
        Role::AllActors => Some(Party::All),
        Role::NonActor => Some(Party::Nobody),
        _ => None,
    }
}

/// How close after one cue another must be to be its object ("weighs sending troops",
/// "suspends the transfer"): the first cue governs, the second is not read alone.
const GOVERNED_REACH: usize = 3;
/// How close after a preposition a name is its object, not a subject ("strikes in
/// Mexico", "in northern Mexico").
const OBJECT_REACH: usize = 2;
/// How far apart two actors joined by a conjunction may stand to be one subject
/// together ("Mexico and the US agree", "México y Estados Unidos acuerdan").
const JOINED_REACH: usize = 3;
/// How early in a sentence a colon marks its speaker ("Sheinbaum: no habrá tropas"):
/// later, a colon opens a list or a quote inside the sentence.
const SPEAKER_COLON_REACH: usize = 8;

// Confidence: a base, plus how directly the actor was found, plus how directly the
// issue was, plus a little for the headline, capped. The values rank readings more than
// they measure anything: `eval`, tracking and `dedupe` keep the most confident reading
// of a pair, so they decide which of two readings stands; and a headline's support that
// reaches the cap overrules the learned reader (`TURN_CONFIDENCE`).

/// A support or oppose reading with an actor and an issue, however far apart.
const BASE_CONFIDENCE: f64 = 0.5;
/// A neutral reading starts lower: neutral cues ("weighs", "does not rule out") say
/// less than a yes or a no, so where a pair is read both ways as directly, the yes or
/// the no stands.
const NEUTRAL_BASE_CONFIDENCE: f64 = 0.45;
/// The actor is the cue's subject in its clause: the most direct attribution.
const SUBJECT_CLOSENESS: f64 = 0.25;
/// The actor is the sentence's speaker: they said it, but the cue may be about what
/// someone else does, so a subject in the clause ranks above.
const SPEAKER_CLOSENESS: f64 = 0.2;
/// The actor is only the nearest one earlier in the sentence, in another clause: a
/// guess, kept for recall, that any better attribution outranks.
const NEAREST_CLOSENESS: f64 = 0.05;
/// The cue names its issue itself ("US troops", "tropas estadounidenses"): no doubt
/// which issue it is about.
const OWN_ISSUE_NEARNESS: f64 = 0.2;
/// An issue term within `NEAR_ISSUE_GAP` tokens of the cue: almost always its object.
const NEAR_ISSUE_NEARNESS: f64 = 0.15;
/// An issue term further away (up to `ISSUE_REACH_AFTER` after, or earlier in the
/// clause): often right, but the sentence may have moved on to another issue.
const FAR_ISSUE_NEARNESS: f64 = 0.05;
/// How close (in tokens) an issue term must be to its cue to count as near.
const NEAR_ISSUE_GAP: usize = 4;
/// The headline states the story's main point; a lead's sentence often a side one.
const HEADLINE_CONFIDENCE: f64 = 0.05;
/// The most the rules claim: a cue read right may still be quoted, conditional or
/// ironic, so no reading by the rules is certain. A support or oppose cue with its
/// subject in its clause and an issue of its own reaches it.
const MAX_CONFIDENCE: f64 = 0.95;

/// The rules' readings of a sentence, and the cues they could not complete.
pub(super) fn read_all(
    actor_count: usize,
    tokens: &[Token],
    hits: &[Hit<'_>],
    is_title: bool,
) -> (Vec<Observation>, Vec<Partial>) {
    let mut partials = Vec::new();
    if !hits.iter().any(|h| matches!(h.meaning.role, Role::Cue(..))) {
        return (Vec::new(), partials);
    }
    let scene = Scene::new(actor_count, tokens, hits, is_title);
    let cues: Vec<Hit<'_>> = longest_hits(
        hits.iter()
            .filter(|h| matches!(h.meaning.role, Role::Cue(..)))
            .copied()
            .collect(),
    );
    let mut out = Vec::new();
    let mut last_cue_end: Option<usize> = None;
    for cue in &cues {
        let Role::Cue(stance, own_issue) = cue.meaning.role else {
            continue;
        };
        // A cue inside a party's name ("Defense" in "Defense Secretary") is not a cue.
        if scene
            .named
            .iter()
            .any(|(p, _)| p.start <= cue.start && cue.end <= p.end)
        {
            continue;
        }
        let governed = last_cue_end.is_some_and(|end| {
            end < cue.start
                && cue.start - end <= GOVERNED_REACH
                && scene.clause_of(end) == scene.clause_of(cue.start)
        });
        last_cue_end = Some(cue.end);
        if governed {
            continue;
        }
        match scene.read_cue(cue, stance, own_issue) {
            Ok(observations) => out.extend(observations),
            Err(incomplete) => partials.extend(incomplete),
        }
    }
    (out, partials)
}

/// A sentence as its cues are read: its clauses, and the parties it names.
struct Scene<'h, 'm> {
    hits: &'h [Hit<'m>],
    /// Token positions that start a new clause.
    breaks: Vec<usize>,
    /// Every party named (the longest name where names overlap).
    named: Vec<(Hit<'m>, Party)>,
    /// The parties that can be a subject: not a name right after a preposition.
    parties: Vec<(Hit<'m>, Party)>,
    speaker: Option<Party>,
    actor_count: usize,
    is_title: bool,
}

impl<'h, 'm> Scene<'h, 'm> {
    fn new(actor_count: usize, tokens: &[Token], hits: &'h [Hit<'m>], is_title: bool) -> Self {
        let named: Vec<(Hit<'m>, Party)> = longest(
            hits.iter()
                .filter_map(|h| party(h).map(|p| (*h, p)))
                .collect(),
        );
        // A name right after a preposition is an object ("strikes in Mexico"), not a subject.
        let parties: Vec<(Hit<'m>, Party)> = named
            .iter()
            .copied()
            .filter(|(p, _)| {
                !hits.iter().any(|h| {
                    h.meaning.role == Role::Preposition
                        && h.end < p.start
                        && p.start - h.end <= OBJECT_REACH
                })
            })
            .collect();
        Scene {
            hits,
            breaks: clause_breaks(tokens, hits),
            speaker: speaker(tokens, hits, &parties),
            named,
            parties,
            actor_count,
            is_title,
        }
    }

    /// The clause a token position is in.
    fn clause_of(&self, pos: usize) -> usize {
        self.breaks.partition_point(|&b| b <= pos)
    }

    /// One cue's readings, one per actor; or, when its actor or issue is missing or
    /// its subject is not an actor, what it leaves for the learned reader.
    fn read_cue(
        &self,
        cue: &Hit<'_>,
        stance: Stance,
        own_issue: Option<usize>,
    ) -> Result<Vec<Observation>, Vec<Partial>> {
        let (stance, mut cue_words) = self.negated(cue, stance);
        let (who, closeness) = self.subject(cue);
        if who.contains(&Party::Nobody) {
            return Err(vec![Partial {
                actor: None,
                issue: own_issue,
                stance,
                blocked: true,
            }]);
        }
        let actors = self.actors(&who);
        let (issue, nearness) = match own_issue {
            Some(i) => (i, OWN_ISSUE_NEARNESS),
            None => match self.issue_near(cue) {
                Some((i, term, nearness)) => {
                    cue_words.push(term);
                    (i, nearness)
                }
                None => return Err(without_issue(&actors, stance)),
            },
        };
        if actors.is_empty() {
            return Err(vec![Partial {
                actor: None,
                issue: Some(issue),
                stance,
                blocked: false,
            }]);
        }
        let confidence = confidence(stance, closeness, nearness, self.is_title);
        Ok(actors
            .into_iter()
            .map(|actor| Observation {
                issue,
                actor,
                stance,
                confidence,
                cues: cue_words.clone(),
            })
            .collect())
    }

    /// The cue's stance after a negation just before it in its clause, and the words
    /// that carry it.
    fn negated(&self, cue: &Hit<'_>, stance: Stance) -> (Stance, Vec<String>) {
        let mut cue_words = vec![cue.meaning.term.clone()];
        let negation = self.hits.iter().find(|h| {
            h.meaning.role == Role::Negation
                && h.end < cue.start
                && cue.start - h.end <= NEGATION_REACH
                && self.clause_of(h.end) == self.clause_of(cue.start)
        });
        let Some(n) = negation else {
            return (stance, cue_words);
        };
        cue_words.insert(0, n.meaning.term.clone());
        let stance = match stance {
            Stance::Support => Stance::Oppose,
            // "did not reject", "no descarta": not taking a side.
            Stance::Oppose | Stance::Neutral => Stance::Neutral,
        };
        (stance, cue_words)
    }

    /// Who the cue belongs to, and how directly: the subject in its clause, else the
    /// speaker, else the nearest party before it.
    fn subject(&self, cue: &Hit<'_>) -> (Vec<Party>, f64) {
        let in_clause = self.parties.iter().enumerate().rev().find(|(_, (p, _))| {
            p.end < cue.start && self.clause_of(p.end) == self.clause_of(cue.start)
        });
        let (mut who, closeness) = match (in_clause, self.speaker) {
            (Some((_, (_, p))), _) => (vec![*p], SUBJECT_CLOSENESS),
            (None, Some(p)) => (vec![p], SPEAKER_CLOSENESS),
            (None, None) => match self.parties.iter().rev().find(|(p, _)| p.end < cue.start) {
                Some((_, p)) => (vec![*p], NEAREST_CLOSENESS),
                None => (Vec::new(), 0.0),
            },
        };
        // "Mexico and the US agree": both are the subject.
        if let Some((i, (subject, _))) = in_clause {
            if let Some((other, p)) = i.checked_sub(1).and_then(|j| self.parties.get(j)) {
                let joined = self.hits.iter().any(|h| {
                    h.meaning.role == Role::Conjunction
                        && h.start > other.end
                        && h.end < subject.start
                        && subject.start - other.end <= JOINED_REACH
                });
                if joined {
                    who.push(*p);
                }
            }
        }
        (who, closeness)
    }

    /// The actors among the cue's parties ("both governments": every actor).
    fn actors(&self, who: &[Party]) -> Vec<usize> {
        if who.contains(&Party::All) {
            return (0..self.actor_count).collect();
        }
        let mut a: Vec<usize> = who
            .iter()
            .filter_map(|p| {
                if let Party::Actor(a) = p {
                    Some(*a)
                } else {
                    None
                }
            })
            .collect();
        a.dedup();
        a
    }

    /// For a cue without an issue of its own: the nearest issue term after it, else
    /// before it in its clause; its term, and how near it is.
    fn issue_near(&self, cue: &Hit<'_>) -> Option<(usize, String, f64)> {
        let issues = || {
            self.hits.iter().filter_map(|h| match h.meaning.role {
                Role::Issue(i) => Some((h, i)),
                _ => None,
            })
        };
        let after = issues()
            .filter(|(h, _)| h.start > cue.end && h.start - cue.end <= ISSUE_REACH_AFTER)
            .min_by_key(|(h, _)| (h.start, std::cmp::Reverse(h.end)));
        let before = || {
            issues()
                .filter(|(h, _)| {
                    h.end < cue.start && self.clause_of(h.end) == self.clause_of(cue.start)
                })
                .max_by_key(|(h, _)| (h.end, h.end - h.start))
        };
        let (h, i) = after.or_else(before)?;
        let gap = if h.start > cue.end {
            h.start - cue.end
        } else {
            cue.start - h.end
        };
        let nearness = if gap <= NEAR_ISSUE_GAP {
            NEAR_ISSUE_NEARNESS
        } else {
            FAR_ISSUE_NEARNESS
        };
        Some((i, h.meaning.term.clone(), nearness))
    }
}

/// What a cue whose issue was not found leaves: a hint for each of its actors, or
/// one with neither.
fn without_issue(actors: &[usize], stance: Stance) -> Vec<Partial> {
    if actors.is_empty() {
        return vec![Partial {
            actor: None,
            issue: None,
            stance,
            blocked: false,
        }];
    }
    actors
        .iter()
        .map(|actor| Partial {
            actor: Some(*actor),
            issue: None,
            stance,
            blocked: false,
        })
        .collect()
}

/// A complete reading's confidence, to two decimals.
fn confidence(stance: Stance, closeness: f64, nearness: f64, is_title: bool) -> f64 {
    let base: f64 = if stance == Stance::Neutral {
        NEUTRAL_BASE_CONFIDENCE
    } else {
        BASE_CONFIDENCE
    };
    let headline = if is_title { HEADLINE_CONFIDENCE } else { 0.0 };
    ((base + closeness + nearness + headline).min(MAX_CONFIDENCE) * 100.0).round() / 100.0
}

/// Token positions that start a new clause: , ; : and words such as "but".
fn clause_breaks(tokens: &[Token], hits: &[Hit<'_>]) -> Vec<usize> {
    let mut breaks: Vec<usize> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| t.is_mark())
        .map(|(i, _)| i)
        .chain(
            hits.iter()
                .filter(|h| h.meaning.role == Role::ClauseBreak)
                .map(|h| h.start),
        )
        .collect();
    breaks.sort_unstable();
    breaks.dedup();
    breaks
}

/// The sentence's speaker: "X: ..." in a headline, "X said", "said X".
fn speaker(tokens: &[Token], hits: &[Hit<'_>], parties: &[(Hit<'_>, Party)]) -> Option<Party> {
    if let Some(colon) = tokens
        .iter()
        .take(SPEAKER_COLON_REACH)
        .position(|t| t.folded == ":")
    {
        if let Some((_, p)) = parties.iter().rev().find(|(h, _)| h.end < colon) {
            return Some(*p);
        }
    }
    for said in hits.iter().filter(|h| h.meaning.role == Role::Reporting) {
        let before = parties
            .iter()
            .rev()
            .find(|(h, _)| h.end < said.start && said.start - h.end <= SPEAKER_REACH);
        let after = parties
            .iter()
            .find(|(h, _)| h.start > said.end && h.start - said.end <= SPEAKER_REACH);
        if let Some((_, p)) = before.or(after) {
            return Some(*p);
        }
    }
    None
}

/// Drops hits contained in a longer hit of the same kind ("mexican government" over
/// "mexican", "not rule out" over "rule out").
fn longest_hits<'m>(hits: Vec<Hit<'m>>) -> Vec<Hit<'m>> {
    let keep: Vec<bool> = hits
        .iter()
        .map(|h| {
            !hits.iter().any(|o| {
                (o.start <= h.start && h.end <= o.end) && (o.end - o.start > h.end - h.start)
            })
        })
        .collect();
    hits.into_iter()
        .zip(keep)
        .filter(|(_, k)| *k)
        .map(|(h, _)| h)
        .collect()
}

fn longest<'m>(parties: Vec<(Hit<'m>, Party)>) -> Vec<(Hit<'m>, Party)> {
    let hits: Vec<Hit<'m>> = parties.iter().map(|(h, _)| *h).collect();
    let kept = longest_hits(hits);
    parties
        .into_iter()
        .filter(|(h, _)| {
            kept.iter()
                .any(|k| k.start == h.start && k.end == h.end && std::ptr::eq(k.meaning, h.meaning))
        })
        .collect()
}
