//! The word lists behind the analysis, compiled into the binary.
//!
//! The lists live as plain text under `data/` so that they can be read and
//! reviewed like prose, and are embedded with `include_str!` so that the
//! simulator needs no files at run time and cannot start with a half-installed
//! data directory. They are parsed once, at server start-up, into hash maps;
//! a malformed line is reported as a [`LexiconError`] naming the file and line
//! instead of being skipped, so a typo cannot silently weaken the analysis.

use std::collections::{HashMap, HashSet};

/// Word valences for sentiment, -4.0..=4.0.
const SENTIMENT: (&str, &str) = ("sentiment.txt", include_str!("data/sentiment.txt"));
/// Intensifiers and dampeners ("very", "slightly") with their deltas.
const MODIFIERS: (&str, &str) = ("modifiers.txt", include_str!("data/modifiers.txt"));
/// Words that flip the valence of what follows ("not", "never").
const NEGATORS: (&str, &str) = ("negators.txt", include_str!("data/negators.txt"));
/// Insults, profanity and threats with weights in (0, 1].
const TOXICITY: (&str, &str) = ("toxicity.txt", include_str!("data/toxicity.txt"));
/// Stopwords per ISO 639-1 language, excluded from keywords.
/// Related languages (es/pt/it, de/nl) are all listed so that the
/// language vote in `analysis` can tell them apart.
const STOPWORDS: [(&str, &str, &str); 7] = [
    (
        "en",
        "stopwords-en.txt",
        include_str!("data/stopwords-en.txt"),
    ),
    (
        "fr",
        "stopwords-fr.txt",
        include_str!("data/stopwords-fr.txt"),
    ),
    (
        "de",
        "stopwords-de.txt",
        include_str!("data/stopwords-de.txt"),
    ),
    (
        "es",
        "stopwords-es.txt",
        include_str!("data/stopwords-es.txt"),
    ),
    (
        "pt",
        "stopwords-pt.txt",
        include_str!("data/stopwords-pt.txt"),
    ),
    (
        "it",
        "stopwords-it.txt",
        include_str!("data/stopwords-it.txt"),
    ),
    (
        "nl",
        "stopwords-nl.txt",
        include_str!("data/stopwords-nl.txt"),
    ),
];

/// Largest magnitude a sentiment valence may have, as on VADER's scale.
const MAX_VALENCE: f64 = 4.0;
/// Largest magnitude a degree modifier may have; more would let one adverb
/// outweigh the word it modifies.
const MAX_MODIFIER: f64 = 1.0;

/// An embedded word list could not be parsed.
///
/// Only a build with an edited data file can produce this; the unit tests
/// parse every list, so it is caught before release rather than in production.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("embedded word list {file}, line {line}: {reason}")]
pub struct LexiconError {
    /// File under `crates/nlp-sim/src/data/`.
    pub file: &'static str,
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub reason: String,
}

/// A multi-token toxic phrase, stored under its first token.
#[derive(Debug, Clone)]
pub struct ToxicPhrase {
    /// The tokens after the first, in order.
    pub rest: Box<[Box<str>]>,
    /// Weight in (0, 1].
    pub weight: f64,
}

/// All word lists the analysis consults, parsed and indexed.
///
/// Built once per server and shared read-only between connections, so the
/// hot path does lookups only and never allocates for the lists.
#[derive(Debug, Clone)]
pub struct Lexicon {
    sentiment: HashMap<Box<str>, f64>,
    modifiers: HashMap<Box<str>, f64>,
    negators: HashSet<Box<str>>,
    toxic_words: HashMap<Box<str>, f64>,
    /// Keyed by first token; each list is sorted longest phrase first so the
    /// most specific match wins.
    toxic_phrases: HashMap<Box<str>, Vec<ToxicPhrase>>,
    /// Each stopword with the languages listing it, so one lookup per token
    /// answers for every language.
    stopwords: HashMap<Box<str>, Languages>,
}

/// A set of the languages with a stopword list, as bits in list order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Languages(u8);

impl Languages {
    fn contains(self, language: &str) -> bool {
        stopword_index(language).is_some_and(|index| self.0 & (1 << index) != 0)
    }

    /// The languages in the set, in list order.
    pub fn iter(self) -> impl Iterator<Item = &'static str> {
        STOPWORDS
            .iter()
            .enumerate()
            .filter(move |(index, _)| self.0 & (1 << index) != 0)
            .map(|(_, (lang, _, _))| *lang)
    }
}

fn stopword_index(language: &str) -> Option<usize> {
    STOPWORDS.iter().position(|(lang, _, _)| *lang == language)
}

impl Lexicon {
    /// Parses the lists compiled into the binary.
    pub fn embedded() -> Result<Self, LexiconError> {
        let sentiment = parse_scored(SENTIMENT, -MAX_VALENCE..=MAX_VALENCE)?;
        let modifiers = parse_scored(MODIFIERS, -MAX_MODIFIER..=MAX_MODIFIER)?;
        let negators = parse_words(NEGATORS)?;
        let (toxic_words, toxic_phrases) = parse_toxicity(TOXICITY)?;
        let mut stopwords: HashMap<Box<str>, Languages> = HashMap::new();
        for (index, (_, file, text)) in STOPWORDS.into_iter().enumerate() {
            for word in parse_words((file, text))? {
                stopwords.entry(word).or_default().0 |= 1 << index;
            }
        }
        Ok(Self {
            sentiment,
            modifiers,
            negators,
            toxic_words,
            toxic_phrases,
            stopwords,
        })
    }

    /// Valence of a lowercased token, if it carries sentiment.
    pub fn valence(&self, token: &str) -> Option<f64> {
        self.sentiment.get(token).copied()
    }

    /// Delta of a degree modifier ("very" +, "slightly" -), if `token` is one.
    pub fn modifier(&self, token: &str) -> Option<f64> {
        self.modifiers.get(token).copied()
    }

    /// Whether a lowercased token negates what follows: a listed negator or
    /// any contraction ending in "n't".
    pub fn is_negator(&self, token: &str) -> bool {
        token.ends_with("n't") || self.negators.contains(token)
    }

    /// Weight of a single toxic token.
    pub fn toxic_word(&self, token: &str) -> Option<f64> {
        self.toxic_words.get(token).copied()
    }

    /// Toxic phrases starting with `first`, longest first.
    pub fn toxic_phrases(&self, first: &str) -> &[ToxicPhrase] {
        self.toxic_phrases.get(first).map_or(&[], Vec::as_slice)
    }

    /// Whether a lowercased token is a stopword in English (always checked:
    /// chat in any language borrows English fillers) or in `language`.
    pub fn is_stopword(&self, language: &str, token: &str) -> bool {
        let languages = self.stopword_languages_of(token);
        languages.contains("en") || languages.contains(language)
    }

    /// The languages whose stopword list has this lowercased token; used to
    /// vote on the language of short texts.
    pub fn stopword_languages_of(&self, token: &str) -> Languages {
        self.stopwords.get(token).copied().unwrap_or_default()
    }

    /// The ISO 639-1 codes that have a stopword list.
    pub fn stopword_languages(&self) -> impl Iterator<Item = &'static str> + '_ {
        STOPWORDS.iter().map(|(lang, _, _)| *lang)
    }

    /// Number of sentiment entries; lets tests and logs show what was loaded.
    pub fn sentiment_len(&self) -> usize {
        self.sentiment.len()
    }
}

/// Non-blank, non-comment lines with their 1-based numbers.
fn entries(text: &'static str) -> impl Iterator<Item = (usize, &'static str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// Splits "<term> <number>", the term possibly containing spaces.
fn split_scored(
    file: &'static str,
    line: usize,
    text: &str,
) -> Result<(String, f64), LexiconError> {
    let error = |reason: String| LexiconError { file, line, reason };
    let (term, number) = text
        .rsplit_once(char::is_whitespace)
        .ok_or_else(|| error(format!("expected \"<term> <number>\", got {text:?}")))?;
    let value: f64 = number
        .parse()
        .map_err(|_| error(format!("{number:?} is not a number")))?;
    let term = term.split_whitespace().collect::<Vec<_>>().join(" ");
    check_lowercase(file, line, &term)?;
    Ok((term, value))
}

fn check_lowercase(file: &'static str, line: usize, term: &str) -> Result<(), LexiconError> {
    if term.to_lowercase() != term {
        return Err(LexiconError {
            file,
            line,
            reason: format!("{term:?} must be lowercase: tokens are lowercased before lookup"),
        });
    }
    Ok(())
}

fn duplicate(file: &'static str, line: usize, term: &str) -> LexiconError {
    LexiconError {
        file,
        line,
        reason: format!("{term:?} is listed twice"),
    }
}

fn parse_scored(
    (file, text): (&'static str, &'static str),
    range: std::ops::RangeInclusive<f64>,
) -> Result<HashMap<Box<str>, f64>, LexiconError> {
    let mut map = HashMap::new();
    for (line, entry) in entries(text) {
        let (term, value) = split_scored(file, line, entry)?;
        if term.contains(' ') {
            return Err(LexiconError {
                file,
                line,
                reason: format!("{term:?}: only single tokens are allowed here"),
            });
        }
        if !range.contains(&value) {
            return Err(LexiconError {
                file,
                line,
                reason: format!("{value} is outside {range:?}"),
            });
        }
        if map.insert(term.clone().into_boxed_str(), value).is_some() {
            return Err(duplicate(file, line, &term));
        }
    }
    Ok(map)
}

fn parse_words(
    (file, text): (&'static str, &'static str),
) -> Result<HashSet<Box<str>>, LexiconError> {
    let mut set = HashSet::new();
    for (line, word) in entries(text) {
        check_lowercase(file, line, word)?;
        if word.contains(char::is_whitespace) {
            return Err(LexiconError {
                file,
                line,
                reason: format!("{word:?}: one token a line"),
            });
        }
        if !set.insert(Box::from(word)) {
            return Err(duplicate(file, line, word));
        }
    }
    Ok(set)
}

type ToxicityLists = (HashMap<Box<str>, f64>, HashMap<Box<str>, Vec<ToxicPhrase>>);

fn parse_toxicity(
    (file, text): (&'static str, &'static str),
) -> Result<ToxicityLists, LexiconError> {
    let mut words = HashMap::new();
    let mut phrases: HashMap<Box<str>, Vec<ToxicPhrase>> = HashMap::new();
    let mut seen = HashSet::new();
    for (line, entry) in entries(text) {
        let (term, weight) = split_scored(file, line, entry)?;
        if !(weight > 0.0 && weight <= 1.0) {
            return Err(LexiconError {
                file,
                line,
                reason: format!("weight {weight} is outside (0, 1]"),
            });
        }
        if !seen.insert(term.clone()) {
            return Err(duplicate(file, line, &term));
        }
        let mut tokens = term.split(' ');
        let first = tokens.next().unwrap_or_default();
        let rest: Box<[Box<str>]> = tokens.map(Box::from).collect();
        if rest.is_empty() {
            words.insert(Box::from(first), weight);
        } else {
            phrases
                .entry(Box::from(first))
                .or_default()
                .push(ToxicPhrase { rest, weight });
        }
    }
    for list in phrases.values_mut() {
        list.sort_by_key(|phrase| std::cmp::Reverse(phrase.rest.len()));
    }
    Ok((words, phrases))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_embedded_list_parses() {
        let lexicon = Lexicon::embedded().expect("embedded lists are valid");
        assert!(
            lexicon.sentiment_len() > 300,
            "a few hundred sentiment words"
        );
        assert_eq!(lexicon.valence("great"), Some(3.1));
        assert_eq!(lexicon.valence(":)"), Some(2.0));
        assert!(lexicon.modifier("very").is_some_and(|d| d > 0.0));
        assert!(lexicon.modifier("slightly").is_some_and(|d| d < 0.0));
        assert!(lexicon.is_negator("not"));
        assert!(lexicon.is_negator("doesn't"));
        assert!(lexicon.is_negator("dont"));
        assert!(lexicon.toxic_word("idiot").is_some());
        assert_eq!(lexicon.toxic_phrases("kill").len(), 2);
        assert!(lexicon.is_stopword("en", "the"));
        assert!(lexicon.is_stopword("de", "und"));
        assert!(
            lexicon.is_stopword("fr", "the"),
            "English fillers count everywhere"
        );
        assert!(!lexicon.is_stopword("en", "und"));
        let de = lexicon.stopword_languages_of("und");
        assert!(de.contains("de") && !de.contains("en"));
        assert_eq!(lexicon.stopword_languages_of("zzyzx"), Languages::default());
        let shared: Vec<_> = lexicon.stopword_languages_of("de").iter().collect();
        assert!(shared.len() >= 2 && shared.contains(&"es"), "{shared:?}");
    }

    #[test]
    fn phrases_are_tried_longest_first() {
        let lexicon = Lexicon::embedded().expect("embedded lists are valid");
        let go = lexicon.toxic_phrases("go");
        assert!(go.windows(2).all(|w| w[0].rest.len() >= w[1].rest.len()));
    }

    #[test]
    fn a_malformed_line_is_reported_with_its_place() {
        let error = parse_scored(("t.txt", "# c\ngood 1.0\nbad x\n"), -4.0..=4.0)
            .expect_err("x is not a number");
        assert_eq!((error.file, error.line), ("t.txt", 3));
    }

    #[test]
    fn duplicates_and_out_of_range_values_are_rejected() {
        assert!(parse_scored(("t.txt", "good 1\ngood 2\n"), -4.0..=4.0).is_err());
        assert!(parse_scored(("t.txt", "good 5\n"), -4.0..=4.0).is_err());
        assert!(parse_toxicity(("t.txt", "meanie 1.5\n")).is_err());
        assert!(parse_words(("t.txt", "Upper\n")).is_err());
    }
}
