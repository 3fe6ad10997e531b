//! Text as the detector reads it: sentences, and tokens folded for matching (lower
//! case, accents removed, punctuation dropped except the marks that bound clauses),
//! each token keeping whether it was written in capitals ("US" is a country, "us" a
//! pronoun).

use unicode_normalization::UnicodeNormalization;

/// One word (or clause mark: `,` `;` `:`) of a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub folded: String,
    /// Written all in capitals (two letters or more), as acronyms are.
    pub upper: bool,
}

impl Token {
    pub fn is_mark(&self) -> bool {
        matches!(self.folded.as_str(), "," | ";" | ":")
    }
}

/// Lower case without accents: "Intervención" → "intervencion".
pub fn fold(s: &str) -> String {
    if s.is_ascii() {
        // Most words: nothing to decompose.
        return s.to_ascii_lowercase();
    }
    s.nfd()
        .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// Splits text into words and clause marks.
pub fn tokens(text: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            let mut letters = 0usize;
            let mut all_upper = true;
            for c in word.chars().filter(|c| c.is_alphabetic()) {
                letters += 1;
                all_upper &= c.is_uppercase();
            }
            let upper = letters >= 2 && all_upper;
            out.push(Token {
                folded: fold(word),
                upper,
            });
            word.clear();
        }
    };
    for c in text.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            if matches!(c, ',' | ';' | ':' | '—' | '–') {
                let mark = if c == ':' {
                    ":"
                } else if c == ';' {
                    ";"
                } else {
                    ","
                };
                out.push(Token {
                    folded: mark.to_string(),
                    upper: false,
                });
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Words that end with a period without ending a sentence.
const ABBREVIATIONS: &[&str] = &[
    "u.s", "ee.uu", "e.u", "mr", "mrs", "ms", "dr", "gen", "sen", "rep", "gov", "st", "lt", "col",
    "sr", "sra", "lic", "jr", "u.n", "a.m", "p.m", "vs", "etc",
];

/// Splits a lead into sentences at . ! ? followed by a space and a capital, a digit or
/// an opening quote, except after abbreviations and initials.
pub fn sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    for i in 0..chars.len() {
        let (at, c) = chars[i];
        if !matches!(c, '.' | '!' | '?') {
            continue;
        }
        let next = chars.get(i + 1).map(|x| x.1);
        let after = chars.get(i + 2).map(|x| x.1);
        if next.is_some_and(|n| n.is_whitespace())
            && after.is_some_and(|a| {
                a.is_uppercase()
                    || a.is_ascii_digit()
                    || matches!(a, '"' | '\'' | '“' | '‘' | '¿' | '¡')
            })
        {
            if c == '.' {
                let word_start = text[..at]
                    .rfind(|ch: char| ch.is_whitespace())
                    .map(|p| p + 1)
                    .unwrap_or(0);
                let word = text[word_start..at].to_lowercase();
                let word = word.trim_start_matches(['(', '"', '\'']);
                if word.chars().count() == 1 || ABBREVIATIONS.contains(&word) {
                    continue;
                }
            }
            let end = at + c.len_utf8();
            let s = text[start..end].trim();
            if !s.is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    let rest = text[start..].trim();
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_drops_case_and_accents() {
        assert_eq!(
            fold("Intervención SOBERANÍA México"),
            "intervencion soberania mexico"
        );
    }

    #[test]
    fn tokens_keep_clause_marks_and_capitals() {
        let t = tokens("Sheinbaum: the U.S. won't send troops, US says");
        let words: Vec<&str> = t.iter().map(|t| t.folded.as_str()).collect();
        assert_eq!(
            words,
            [
                "sheinbaum",
                ":",
                "the",
                "u",
                "s",
                "won",
                "t",
                "send",
                "troops",
                ",",
                "us",
                "says"
            ]
        );
        assert!(t[10].upper);
        assert!(!t[2].upper);
    }

    #[test]
    fn sentences_split_on_full_stops_but_not_abbreviations() {
        let s = sentences("U.S. officials met on Monday. Mexico said no. Sen. Smith disagreed. ¿Habrá acuerdo? Nadie sabe.");
        assert_eq!(
            s,
            [
                "U.S. officials met on Monday.",
                "Mexico said no.",
                "Sen. Smith disagreed.",
                "¿Habrá acuerdo?",
                "Nadie sabe."
            ]
        );
    }
}
