//! Compiling the topics' rules into a detector: every term of every topic (group terms,
//! actor aliases, issue terms, cues) into one Aho-Corasick automaton over folded text,
//! each pattern with every meaning it has; each topic's term groups as the indices that
//! decide relevance. Reading articles with it is `analyse`'s and `classify`'s.

use std::collections::HashMap;

use aho_corasick::{AhoCorasickBuilder, MatchKind};
use sha2::{Digest, Sha256};

use super::rules::{split_lang, TopicRules};
use super::{text, CompileError, Detector, Meaning, Role, Stance};

/// A topic's rules, with its term groups as indices.
#[derive(Debug)]
pub(super) struct CompiledTopic {
    pub rules: TopicRules,
    pub group_names: Vec<String>,
    pub group_weights: Vec<f64>,
    pub required: Vec<usize>,
    pub any_of: Vec<usize>,
    pub excluded: Vec<usize>,
}

impl Detector {
    pub fn new(topics: &[TopicRules]) -> Result<Detector, CompileError> {
        let mut terms = Terms::default();
        let mut compiled = Vec::new();
        for (t, rules) in topics.iter().enumerate() {
            let problems = rules.problems();
            if !problems.is_empty() {
                return Err(CompileError(problems.join("; ")));
            }
            let group_names: Vec<String> = rules.groups.keys().cloned().collect();
            terms.add_topic(t, rules, &group_names);
            compiled.push(CompiledTopic::new(rules, group_names));
        }
        let automaton = AhoCorasickBuilder::new()
            .match_kind(MatchKind::Standard)
            .build(&terms.patterns)
            .map_err(|e| CompileError(e.to_string()))?;
        let rules_json = serde_json::to_string(topics).map_err(|e| CompileError(e.to_string()))?;
        Ok(Detector {
            models: (0..compiled.len()).map(|_| None).collect(),
            topics: compiled,
            automaton,
            meanings: terms.meanings,
            rules_hash: hex::encode(&Sha256::digest(rules_json.as_bytes())[..12]),
        })
    }
}

impl CompiledTopic {
    fn new(rules: &TopicRules, group_names: Vec<String>) -> CompiledTopic {
        let position = |names: &[String]| -> Vec<usize> {
            names
                .iter()
                .filter_map(|n| group_names.iter().position(|g| g == n))
                .collect()
        };
        CompiledTopic {
            required: position(&rules.require),
            any_of: position(&rules.require_any),
            excluded: position(&rules.exclude),
            group_weights: group_names.iter().map(|n| rules.groups[n].weight).collect(),
            group_names,
            rules: rules.clone(),
        }
    }
}

/// The automaton's patterns as they are gathered: each folded term once, with every
/// meaning it has in every topic. The order terms are added in is the order of their
/// meanings, and so of the hits and features they give: it must not change.
#[derive(Default)]
struct Terms {
    patterns: Vec<String>,
    /// Per pattern, its meanings.
    meanings: Vec<Vec<Meaning>>,
    /// Pattern → its index.
    index: HashMap<String, usize>,
}

impl Terms {
    /// One term as the config writes it (`es:EU` in one language only, `cartel*` as a
    /// prefix, `US` in capitals only).
    fn add(&mut self, pattern_term: &str, topic: usize, role: Role) {
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
        let (patterns, meanings) = (&mut self.patterns, &mut self.meanings);
        let slot = *self.index.entry(key.clone()).or_insert_with(|| {
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
    }

    /// Every term of topic `t`: the parties and issues, then the cues.
    fn add_topic(&mut self, t: usize, rules: &TopicRules, group_names: &[String]) {
        for (g, name) in group_names.iter().enumerate() {
            for term in &rules.groups[name].terms {
                self.add(term, t, Role::Group(g));
            }
        }
        for (a, actor) in rules.actors.iter().enumerate() {
            for alias in &actor.aliases {
                self.add(alias, t, Role::Actor(a));
            }
        }
        for term in &rules.non_actors {
            self.add(term, t, Role::NonActor);
        }
        for term in &rules.joint_actors {
            self.add(term, t, Role::AllActors);
        }
        for (i, issue) in rules.issues.iter().enumerate() {
            for term in &issue.terms {
                self.add(term, t, Role::Issue(i));
            }
            for (list, stance) in [
                (&issue.support, Stance::Support),
                (&issue.oppose, Stance::Oppose),
                (&issue.neutral, Stance::Neutral),
            ] {
                for term in list {
                    self.add(term, t, Role::Cue(stance, Some(i)));
                }
            }
        }
        self.add_cues(t, rules);
    }

    /// The topic's general cues, and the words that shape how they are read.
    fn add_cues(&mut self, t: usize, rules: &TopicRules) {
        let cues = &rules.cues;
        for (list, stance) in [
            (&cues.support, Stance::Support),
            (&cues.oppose, Stance::Oppose),
            (&cues.neutral, Stance::Neutral),
        ] {
            for term in list {
                self.add(term, t, Role::Cue(stance, None));
            }
        }
        for (list, role) in [
            (&cues.negation, Role::Negation),
            (&cues.reporting, Role::Reporting),
            (&cues.clause_breaks, Role::ClauseBreak),
            (&cues.prepositions, Role::Preposition),
            (&cues.conjunctions, Role::Conjunction),
        ] {
            for term in list {
                self.add(term, t, role);
            }
        }
    }
}
