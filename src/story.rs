//! Stories: syndicated copies and near-duplicates of one story across feeds, grouped
//! so that a story counts once as evidence and appears once in a digest.
//!
//! Two articles are one story when they share a canonical URL, or when their texts are
//! alike: word 3-gram shingles of the folded title and lead with a Jaccard similarity
//! of at least `SIMILAR`, or titles alike enough on their own (a lightly edited
//! headline over a rewritten lead). Candidates are found through an index of shingles,
//! so the cost grows with the number of articles, not its square.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::detect::text;

/// Shingle overlap above which two texts are one story.
const SIMILAR: f64 = 0.5;
/// Headline overlap (words) above which two headlines are one story...
const SIMILAR_TITLE: f64 = 0.7;
/// ... when both have at least this many words (short headlines share words by chance).
const MIN_TITLE_WORDS: usize = 5;

/// What clustering needs of an article.
#[derive(Debug, Clone)]
pub struct StoryInput<'a> {
    pub id: &'a str,
    pub url: Option<&'a str>,
    pub title: &'a str,
    pub summary: &'a str,
}

/// A text's shingles as a sorted set: Jaccard similarity is then one merge, with no
/// hashing (clustering compares many pairs; the front page clusters on every request).
fn shingles(words: &[String], n: usize) -> Vec<u64> {
    let mut out: Vec<u64> = if words.len() < n {
        words.iter().map(|w| hash(w)).collect()
    } else {
        words.windows(n).map(|w| hash(&w.join(" "))).collect()
    };
    out.sort_unstable();
    out.dedup();
    out
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn words(s: &str) -> Vec<String> {
    text::tokens(s)
        .into_iter()
        .filter(|t| !t.is_mark())
        .map(|t| t.folded)
        .collect()
}

/// Groups articles into stories. Returns, for each article id, its story's id: the id
/// of the story's first article in the input order (give them oldest first).
pub fn cluster(articles: &[StoryInput<'_>]) -> HashMap<String, String> {
    let n = articles.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn find(parent: &mut [usize], i: usize) -> usize {
        let mut root = i;
        while parent[root] != root {
            root = parent[root];
        }
        let mut i = i;
        while parent[i] != root {
            let next = parent[i];
            parent[i] = root;
            i = next;
        }
        root
    }
    let union = |parent: &mut Vec<usize>, a: usize, b: usize| {
        let (ra, rb) = (find(parent, a), find(parent, b));
        if ra != rb {
            // The earlier article stays the root, so the story id is stable.
            let (keep, join) = if ra < rb { (ra, rb) } else { (rb, ra) };
            parent[join] = keep;
        }
    };
    let mut by_url: HashMap<&str, usize> = HashMap::new();
    let texts: Vec<Vec<u64>> = articles
        .iter()
        .map(|a| shingles(&words(&format!("{} {}", a.title, a.summary)), 3))
        .collect();
    let titles: Vec<Vec<u64>> = articles
        .iter()
        .map(|a| {
            let w = words(a.title);
            if w.len() >= MIN_TITLE_WORDS {
                shingles(&w, 1)
            } else {
                Vec::new()
            }
        })
        .collect();
    // Shingles are hashes already: the index needs no second hash of its keys.
    let mut index: HashMap<u64, Vec<usize>, BuildHasherDefault<PreHashed>> = HashMap::default();
    // The last article for which each one was made a candidate.
    let mut seen_for: Vec<usize> = vec![usize::MAX; n];
    let mut candidates: Vec<usize> = Vec::new();
    for (i, a) in articles.iter().enumerate() {
        if let Some(url) = a.url {
            match by_url.get(url) {
                Some(&j) => union(&mut parent, i, j),
                None => {
                    by_url.insert(url, i);
                }
            }
        }
        candidates.clear();
        for s in titles[i].iter().chain(texts[i].iter()) {
            for &j in index.get(s).map(Vec::as_slice).unwrap_or_default() {
                if seen_for[j] != i {
                    seen_for[j] = i;
                    candidates.push(j);
                }
            }
        }
        for &j in &candidates {
            if find(&mut parent, i) == find(&mut parent, j) {
                continue;
            }
            if similarity(&texts[i], &texts[j]) >= SIMILAR
                || similarity(&titles[i], &titles[j]) >= SIMILAR_TITLE
            {
                union(&mut parent, i, j);
            }
        }
        for s in titles[i].iter().chain(texts[i].iter()) {
            index.entry(*s).or_default().push(i);
        }
    }
    (0..n)
        .map(|i| {
            let root = find(&mut parent, i);
            (articles[i].id.to_string(), articles[root].id.to_string())
        })
        .collect()
}

/// The stories the articles tell, each once, in order of first appearance: for each,
/// the index of its first article kept and how many kept articles tell it. `skip`
/// leaves an article out, given its index and its story's id (digests leave out what
/// they already showed as evidence).
pub fn once_each(
    articles: &[StoryInput<'_>],
    skip: impl Fn(usize, &str) -> bool,
) -> Vec<(usize, usize)> {
    let clusters = cluster(articles);
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (i, a) in articles.iter().enumerate() {
        let Some(story) = clusters.get(a.id).map(String::as_str) else {
            continue;
        };
        if skip(i, story) {
            continue;
        }
        match index.get(story) {
            Some(&k) => out[k].1 += 1,
            None => {
                index.insert(story, out.len());
                out.push((i, 1));
            }
        }
    }
    out
}

/// Jaccard similarity of two sorted sets.
fn similarity(a: &[u64], b: &[u64]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (mut i, mut j, mut inter) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                inter += 1;
                i += 1;
                j += 1;
            }
        }
    }
    inter as f64 / (a.len() + b.len() - inter) as f64
}

/// A hasher for keys that are hashes already.
#[derive(Default)]
struct PreHashed(u64);

impl std::hash::Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(id: &'a str, url: &'a str, title: &'a str, summary: &'a str) -> StoryInput<'a> {
        StoryInput {
            id,
            url: Some(url),
            title,
            summary,
        }
    }

    #[test]
    fn syndicated_copies_and_edited_headlines_are_one_story() {
        let lead = "The agreement covers intelligence sharing and joint inspections at four border crossings, officials said on Thursday.";
        let stories = cluster(&[
            input(
                "a",
                "http://a.example/1",
                "Mexico and US agree on border inspections",
                lead,
            ),
            input(
                "b",
                "http://b.example/9",
                "Mexico and US agree on border inspections, officials say",
                lead,
            ),
            input(
                "c",
                "http://c.example/2",
                "Mexico, US agree on joint border inspections",
                "A different lead written by this outlet about the same agreement on inspections.",
            ),
            input(
                "d",
                "http://d.example/3",
                "Council approves new park in Monterrey",
                "The park will open next year.",
            ),
            input(
                "e",
                "http://a.example/1",
                "Updated: Mexico and US agree on inspections",
                "Changed text.",
            ),
        ]);
        assert_eq!(stories["b"], "a");
        assert_eq!(stories["c"], "a", "a lightly edited headline");
        assert_eq!(stories["e"], "a", "same canonical URL");
        assert_eq!(stories["d"], "d");
    }

    #[test]
    fn different_stories_with_shared_words_stay_apart() {
        let stories = cluster(&[
            input(
                "a",
                "http://a.example/1",
                "Mexico rejects US military action against cartels",
                "The president said sovereignty is not negotiable.",
            ),
            input(
                "b",
                "http://b.example/2",
                "Mexico agrees to joint raids with US forces against cartels",
                "In a turn, the government accepted US special forces in raids on labs.",
            ),
        ]);
        assert_ne!(stories["a"], stories["b"]);
    }

    #[test]
    fn similarity_is_jaccard_over_sorted_sets() {
        let s = [1, 2, 3];
        assert!((similarity(&s, &s) - 1.0).abs() < 1e-9);
        assert!((similarity(&[1, 2, 3, 4], &[3, 4, 5]) - 0.4).abs() < 1e-9);
        assert_eq!(similarity(&[], &s), 0.0);
    }
}
