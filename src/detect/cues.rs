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
    let breaks = clause_breaks(tokens, hits);
    let clause_of = |pos: usize| breaks.partition_point(|&b| b <= pos);
    let all_parties: Vec<(Hit<'_>, Party)> = longest(
        hits.iter()
            .filter_map(|h| party(h).map(|p| (*h, p)))
            .collect(),
    );
    // A name right after a preposition is an object ("strikes in Mexico"), not a subject.
    let parties: Vec<(Hit<'_>, Party)> = all_parties
        .iter()
        .copied()
        .filter(|(p, _)| {
            !hits.iter().any(|h| {
                h.meaning.role == Role::Preposition && h.end < p.start && p.start - h.end <= 2
            })
        })
        .collect();
    let speaker = speaker(tokens, hits, &parties);

    let cues: Vec<Hit<'_>> = longest_hits(
        hits.iter()
            .filter(|h| matches!(h.meaning.role, Role::Cue(..)))
            .copied()
            .collect(),
    );
    let mut out = Vec::new();
    let mut last_cue_end: Option<usize> = None;
    for cue in &cues {
        let Role::Cue(mut stance, own_issue) = cue.meaning.role else {
            continue;
        };
        // A cue inside a party's name ("Defense" in "Defense Secretary") is not a cue.
        if all_parties
            .iter()
            .any(|(p, _)| p.start <= cue.start && cue.end <= p.end)
        {
            continue;
        }
        let governed = last_cue_end.is_some_and(|end| {
            end < cue.start
                && cue.start - end <= GOVERNED_REACH
                && clause_of(end) == clause_of(cue.start)
        });
        last_cue_end = Some(cue.end);
        if governed {
            continue;
        }
        let mut cue_words = vec![cue.meaning.term.clone()];
        let negation = hits.iter().find(|h| {
            h.meaning.role == Role::Negation
                && h.end < cue.start
                && cue.start - h.end <= NEGATION_REACH
                && clause_of(h.end) == clause_of(cue.start)
        });
        if let Some(n) = negation {
            cue_words.insert(0, n.meaning.term.clone());
            stance = match stance {
                Stance::Support => Stance::Oppose,
                // "did not reject", "no descarta": not taking a side.
                Stance::Oppose | Stance::Neutral => Stance::Neutral,
            };
        }

        // The actor: subject in the clause, else the speaker, else nearest before.
        let in_clause = parties
            .iter()
            .enumerate()
            .rev()
            .find(|(_, (p, _))| p.end < cue.start && clause_of(p.end) == clause_of(cue.start));
        let (mut who, closeness) = match (in_clause, speaker) {
            (Some((_, (_, p))), _) => (vec![*p], 0.25),
            (None, Some(p)) => (vec![p], 0.2),
            (None, None) => match parties.iter().rev().find(|(p, _)| p.end < cue.start) {
                Some((_, p)) => (vec![*p], 0.05),
                None => (Vec::new(), 0.0),
            },
        };
        // "Mexico and the US agree": both are the subject.
        if let Some((i, (subject, _))) = in_clause {
            if let Some((other, p)) = i.checked_sub(1).and_then(|j| parties.get(j)) {
                let joined = hits.iter().any(|h| {
                    h.meaning.role == Role::Conjunction
                        && h.start > other.end
                        && h.end < subject.start
                        && subject.start - other.end <= 3
                });
                if joined {
                    who.push(*p);
                }
            }
        }
        if who.contains(&Party::Nobody) {
            partials.push(Partial {
                actor: None,
                issue: own_issue,
                stance,
                blocked: true,
            });
            continue;
        }
        let actors: Vec<usize> = if who.contains(&Party::All) {
            (0..actor_count).collect()
        } else {
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
        };

        let (issue, nearness) = match own_issue {
            Some(i) => (i, 0.2),
            None => {
                let after = hits
                    .iter()
                    .filter(|h| {
                        matches!(h.meaning.role, Role::Issue(_))
                            && h.start > cue.end
                            && h.start - cue.end <= ISSUE_REACH_AFTER
                    })
                    .min_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
                let before = || {
                    hits.iter()
                        .filter(|h| {
                            matches!(h.meaning.role, Role::Issue(_))
                                && h.end < cue.start
                                && clause_of(h.end) == clause_of(cue.start)
                        })
                        .max_by_key(|h| (h.end, h.end - h.start))
                };
                match after.or_else(before) {
                    Some(h) => {
                        let Role::Issue(i) = h.meaning.role else {
                            continue;
                        };
                        cue_words.push(h.meaning.term.clone());
                        let gap = if h.start > cue.end {
                            h.start - cue.end
                        } else {
                            cue.start - h.end
                        };
                        (i, if gap <= 4 { 0.15 } else { 0.05 })
                    }
                    None => {
                        for actor in &actors {
                            partials.push(Partial {
                                actor: Some(*actor),
                                issue: None,
                                stance,
                                blocked: false,
                            });
                        }
                        if actors.is_empty() {
                            partials.push(Partial {
                                actor: None,
                                issue: None,
                                stance,
                                blocked: false,
                            });
                        }
                        continue;
                    }
                }
            }
        };
        if actors.is_empty() {
            partials.push(Partial {
                actor: None,
                issue: Some(issue),
                stance,
                blocked: false,
            });
            continue;
        }
        let base: f64 = if stance == Stance::Neutral { 0.45 } else { 0.5 };
        // The headline states the story's main point; a lead's sentence often a side one.
        let headline = if is_title { 0.05 } else { 0.0 };
        let confidence =
            ((base + closeness + nearness + headline).min(0.95) * 100.0).round() / 100.0;
        for actor in actors {
            out.push(Observation {
                issue,
                actor,
                stance,
                confidence,
                cues: cue_words.clone(),
            });
        }
    }
    (out, partials)
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
    if let Some(colon) = tokens.iter().take(8).position(|t| t.folded == ":") {
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
