//! The matcher: one Aho-Corasick automaton over every word-list term.
//!
//! All terms, their spelling variants and the exceptions are compiled into a
//! single automaton once at start-up, so checking a message costs one
//! normalisation plus one pass over it, however long the lists are.
//!
//! Aho-Corasick finds byte strings; the rules it cannot express are checked
//! on each candidate match instead:
//!
//! - **word boundaries**: a term matches whole words unless its markers say
//!   otherwise, so `ass` does not flag `class` (the Scunthorpe problem);
//! - **repeated letters**: the normalised text writes a run of a letter as one
//!   uppercase letter. The automaton ignores ASCII case, so `fuck` finds
//!   `fUck` (from `fuuuck`); a term with a doubled letter (`ass`, key `aS`)
//!   additionally needs the run mark in the text, so it does not flag `as`;
//! - **exceptions**: `!moby dick` is a pattern like any other. Matching is
//!   leftmost-longest, so the exception wins over `dick` inside it and the
//!   text it covers is skipped.
//!
//! When the longest match at a position fails these checks, shorter ones
//! starting at the same position are tried with anchored searches, so a
//! failing `fucking` in `fuckingidiot` does not hide `*fuck`.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use aho_corasick::{AhoCorasick, Anchored, Input, Match, MatchKind, StartKind};

use super::normalise::MatchKey;
use super::wordlist::{self, Action, Anchors, Entry, ModerationError};

/// Most occurrences of `l` in a term for which `1`/`|` spellings are added
/// (each occurrence doubles the variants).
const MAX_L_VARIANTS: usize = 3;

/// Shortest term (in characters) that gets masked variants (`f*ck`): shorter
/// ones masked (`f*g`) are too ambiguous to flag.
const MIN_MASKED_TERM_CHARS: usize = 4;

/// Keyword moderation: decides whether a message contains a listed term.
///
/// Built once from the word lists and shared by every worker task (it is
/// `Send + Sync` and immutable, so an `Arc<Moderator>` needs no lock).
/// [`Moderator::check`] allocates only the normalised text, plus the list of
/// terms when something is found.
pub struct Moderator {
    automaton: AhoCorasick,
    /// Indexed by the automaton's pattern id.
    patterns: Vec<Pattern>,
    /// Readable names of the flagging terms, indexed by term id.
    terms: Vec<String>,
}

/// The outcome of checking one message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Whether any listed term was found; stored as `messages.flagged`.
    pub flagged: bool,
    /// The distinct terms found, in normalised form, in order of first
    /// appearance; stored as `messages.flagged_terms` for analysts.
    pub terms: Vec<String>,
}

/// One automaton pattern: all entries whose keys are equal ignoring ASCII
/// case (`fuck` and `fUck`); the first that accepts a match decides.
struct Pattern {
    alternatives: Vec<Alternative>,
}

struct Alternative {
    /// The key with run marks; an uppercase byte needs a run in the text.
    key: Box<str>,
    rule: Rule,
    anchors: Anchors,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rule {
    Flag(usize),
    Allow,
}

impl Moderator {
    /// Loads the word lists in `dir` (every `*.txt` file; the project ships
    /// `config/moderation/`) and builds the matcher.
    ///
    /// Fails with an error naming the directory, file and line when a list is
    /// missing, unreadable or has a term that normalises to nothing.
    pub fn from_dir(dir: &Path) -> Result<Moderator, ModerationError> {
        Self::build(wordlist::load_dir(dir)?)
    }

    /// Builds the matcher from terms given in code, each in word-list syntax
    /// (`*term`, `term*`, `!exception`; no comments). Useful in tests and for
    /// lists that come from somewhere other than files.
    pub fn from_terms<I, S>(terms: I) -> Result<Moderator, ModerationError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::build(wordlist::parse_terms(terms)?)
    }

    /// The number of distinct flagging terms loaded (exceptions not counted),
    /// for the start-up log line.
    pub fn term_count(&self) -> usize {
        self.terms.len()
    }

    /// Checks one message.
    pub fn check(&self, text: &str) -> Verdict {
        let key = MatchKey::new(text);
        let hay = key.as_str().as_bytes();
        let mut found: Vec<usize> = Vec::new();
        let mut at = 0;
        while at < hay.len() {
            let Some(found_match) = self.automaton.find(Input::new(hay).span(at..hay.len())) else {
                break;
            };
            match self.resolve(&key, found_match) {
                Some((rule, end)) => {
                    if let Rule::Flag(term) = rule {
                        if !found.contains(&term) {
                            found.push(term);
                        }
                    }
                    at = end;
                }
                None => at = found_match.start() + 1,
            }
        }
        Verdict {
            flagged: !found.is_empty(),
            terms: found.iter().map(|&t| self.terms[t].clone()).collect(),
        }
    }

    /// The rule that applies at `first.start()` and where its match ends:
    /// the longest accepted match starting there, or `None`.
    fn resolve(&self, key: &MatchKey, first: Match) -> Option<(Rule, usize)> {
        let hay = key.as_str().as_bytes();
        let start = first.start();
        let mut candidate = first;
        loop {
            if let Some(rule) = self.accept(key, candidate) {
                return Some((rule, candidate.end()));
            }
            // Shorter patterns at the same start: the longest of them next.
            let shorter_end = candidate.end().checked_sub(1)?;
            if shorter_end <= start {
                return None;
            }
            let input = Input::new(hay)
                .span(start..shorter_end)
                .anchored(Anchored::Yes);
            candidate = self.automaton.find(input)?;
        }
    }

    fn accept(&self, key: &MatchKey, found: Match) -> Option<Rule> {
        let pattern = self.patterns.get(found.pattern().as_usize())?;
        pattern
            .alternatives
            .iter()
            .find(|alt| alt.accepts(key, found.start(), found.end()))
            .map(|alt| alt.rule)
    }

    fn build(entries: Vec<Entry>) -> Result<Moderator, ModerationError> {
        let mut set = PatternSet::default();
        let mut terms = Vec::new();
        let mut flagging = Vec::new();
        // Every listed key first, so a variant never shadows a real term.
        for entry in &entries {
            let rule = match entry.action {
                Action::Flag => {
                    terms.push(entry.name.clone());
                    flagging.push((terms.len() - 1, entry));
                    Rule::Flag(terms.len() - 1)
                }
                Action::Allow => Rule::Allow,
            };
            set.add(&entry.key, rule, entry.anchors);
        }
        for (term, entry) in flagging {
            for variant in variants(&entry.name, entry.anchors) {
                let key = MatchKey::new(&variant);
                if !key.is_empty() {
                    set.add(key.as_str(), Rule::Flag(term), entry.anchors);
                }
            }
        }
        let automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .ascii_case_insensitive(true)
            .start_kind(StartKind::Both)
            .build(&set.keys)?;
        Ok(Moderator {
            automaton,
            patterns: set.patterns,
            terms,
        })
    }
}

impl fmt::Debug for Moderator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Moderator")
            .field("terms", &self.terms.len())
            .field("patterns", &self.patterns.len())
            .finish_non_exhaustive()
    }
}

impl Alternative {
    fn accepts(&self, key: &MatchKey, start: usize, end: usize) -> bool {
        let hay = key.as_str().as_bytes();
        let Some(text) = hay.get(start..end) else {
            return false;
        };
        let runs_ok = self
            .key
            .bytes()
            .zip(text)
            .all(|(want, got)| !want.is_ascii_uppercase() || got.is_ascii_uppercase());
        runs_ok
            && (self.anchors.inside_left || key.starts_word(start))
            && (self.anchors.inside_right || key.ends_word(end))
    }
}

/// Patterns keyed by their ASCII-lowercase form, in insertion order.
#[derive(Default)]
struct PatternSet {
    keys: Vec<String>,
    patterns: Vec<Pattern>,
    index: HashMap<String, usize>,
}

impl PatternSet {
    fn add(&mut self, key: &str, rule: Rule, anchors: Anchors) {
        let alternative = Alternative {
            key: key.into(),
            rule,
            anchors,
        };
        let folded = key.to_ascii_lowercase();
        if let Some(&id) = self.index.get(&folded) {
            let alternatives = &mut self.patterns[id].alternatives;
            let duplicate = alternatives
                .iter()
                .any(|a| *a.key == *key && a.rule == rule && a.anchors == anchors);
            if !duplicate {
                alternatives.push(alternative);
            }
            return;
        }
        self.index.insert(folded.clone(), self.patterns.len());
        self.keys.push(folded);
        self.patterns.push(Pattern {
            alternatives: vec![alternative],
        });
    }
}

/// Other spellings of a flagging term that normalisation cannot undo:
///
/// - a phrase without its spaces, as joined spelled-out words produce it
///   (`c l i c k h e r e`) and as people write it (`clickhere`);
/// - `i` for `l`, because `1` and `|` are read as `i` (`s1ut`, `k1ll`);
/// - masked forms with the inner letters starred (`f*ck`, `f**k`, `n****r`),
///   for terms of at least four letters;
/// - for a term marked to match anywhere (`*fuck`), the term split in two
///   (`fu ck`, `f uck`): the list says no innocent text contains the stem,
///   so a break inside it is an evasion too.
fn variants(name: &str, anchors: Anchors) -> Vec<String> {
    let mut out = Vec::new();
    if name.contains(' ') {
        out.push(name.replace(' ', ""));
    } else if anchors.inside_left && anchors.inside_right {
        for (at, _) in name.char_indices().skip(1) {
            out.push(format!("{} {}", &name[..at], &name[at..]));
        }
    }
    let l_positions: Vec<usize> = name.match_indices('l').map(|(i, _)| i).collect();
    if !l_positions.is_empty() && l_positions.len() <= MAX_L_VARIANTS {
        for mask in 1u32..(1 << l_positions.len()) {
            let mut bytes = name.as_bytes().to_vec();
            for (bit, &pos) in l_positions.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    bytes[pos] = b'i';
                }
            }
            if let Ok(variant) = String::from_utf8(bytes) {
                out.push(variant);
            }
        }
    }
    let chars: Vec<char> = name.chars().collect();
    if chars.len() >= MIN_MASKED_TERM_CHARS && chars.iter().all(char::is_ascii_lowercase) {
        let last = chars.len() - 1;
        for from in 1..last {
            for to in from + 1..=last {
                let mut masked = String::with_capacity(chars.len());
                masked.extend(&chars[..from]);
                masked.extend(std::iter::repeat_n('*', to - from));
                masked.extend(&chars[to..]);
                out.push(masked);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moderator(terms: &[&str]) -> Moderator {
        Moderator::from_terms(terms).expect("terms are valid")
    }

    fn flags(m: &Moderator, text: &str) -> bool {
        m.check(text).flagged
    }

    #[test]
    fn moderator_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Moderator>();
    }

    #[test]
    fn plain_terms_match_whole_words_only() {
        let m = moderator(&["ass", "cunt", "cock", "rapist", "sex"]);
        for clean in [
            "class",
            "assessment",
            "Scunthorpe",
            "cocktail",
            "therapist",
            "Sussex",
            "as soon as",
            "bass",
        ] {
            assert!(!flags(&m, clean), "{clean:?} should be clean");
        }
        for abusive in ["ass", "kiss my ass", "ASS!", "you cunt.", "a$$", "a s s"] {
            assert!(flags(&m, abusive), "{abusive:?} should be flagged");
        }
    }

    #[test]
    fn a_doubled_letter_in_a_term_needs_a_run_in_the_text() {
        let m = moderator(&["ass", "free money"]);
        assert!(!flags(&m, "as"));
        assert!(flags(&m, "asssss"));
        assert!(!flags(&m, "fre money"));
        assert!(flags(&m, "FREEEE MONEY"));
    }

    #[test]
    fn a_single_letter_in_a_term_matches_a_run() {
        let m = moderator(&["fuck"]);
        assert!(flags(&m, "fuuuuuck"));
        assert!(flags(&m, "ffffuuuucccckkkk"));
    }

    #[test]
    fn inside_marker_matches_within_words_and_across_breaks() {
        let m = moderator(&["*fuck"]);
        assert!(flags(&m, "motherfucking"));
        assert!(flags(&m, "clusterfuck"));
        assert!(flags(&m, "fu ck you"));
        assert!(flags(&m, "f uck off"));
        assert!(flags(&m, "mother fu-cker"));
        let plain = moderator(&["fuck"]);
        assert!(!flags(&plain, "motherfucking"));
        assert!(!flags(&plain, "fu ck"));
    }

    #[test]
    fn prefix_marker_matches_word_starts() {
        let m = moderator(&["bitch*"]);
        assert!(flags(&m, "bitchy"));
        assert!(flags(&m, "b1tches"));
        assert!(!flags(&m, "sonofabitch"));
    }

    #[test]
    fn exceptions_win_over_terms_inside_them() {
        let m = moderator(&["dick", "!moby dick"]);
        assert!(!flags(&m, "Moby Dick is a classic"));
        assert!(!flags(&m, "MOBY-DICK"));
        assert!(flags(&m, "moby is a dick"));
        assert!(flags(&m, "Moby Dick, you dick"));
    }

    #[test]
    fn a_failed_long_match_does_not_hide_a_shorter_one() {
        let m = moderator(&["*fuck", "fucking"]);
        let verdict = m.check("fuckingidiot");
        assert_eq!(verdict.terms, ["fuck"]);
        assert_eq!(m.check("fucking idiot").terms, ["fucking"]);
    }

    #[test]
    fn phrases_match_across_any_separators() {
        let m = moderator(&["click here", "buy now"]);
        assert!(flags(&m, "CLICK---HERE"));
        assert!(flags(&m, "c l i c k h e r e"));
        assert!(flags(&m, "clickhere"));
        assert!(flags(&m, "b-u-y n-o-w"));
        assert!(!flags(&m, "click the button here"));
    }

    #[test]
    fn spelled_out_words_may_hide_word_boundaries() {
        let m = moderator(&["fuck", "you"]);
        assert_eq!(m.check("f u c k y o u").terms, ["fuck", "you"]);
    }

    #[test]
    fn masked_spellings_match_longer_terms() {
        let m = moderator(&["fuck", "nigger", "fag"]);
        assert!(flags(&m, "f*ck"));
        assert!(flags(&m, "f**k off"));
        assert!(flags(&m, "n****r"));
        assert!(!flags(&m, "f*g"));
        assert!(!flags(&m, "*fuck*") || flags(&m, "fuck"));
    }

    #[test]
    fn masked_inflections_match_listed_inflections() {
        let m = moderator(&["*fuck", "fucking"]);
        assert_eq!(m.check("f***ing service").terms, ["fucking"]);
        assert_eq!(m.check("f#ck").terms, ["fuck"]);
    }

    #[test]
    fn one_stands_for_l_as_well_as_i() {
        let m = moderator(&["slut", "kill yourself"]);
        assert!(flags(&m, "s1ut"));
        assert!(flags(&m, "k1ll y0urself"));
        assert!(!flags(&m, "salut"));
    }

    #[test]
    fn verdict_lists_distinct_terms_in_order_of_appearance() {
        let m = moderator(&["spam", "shit", "fuck"]);
        let verdict = m.check("shit, spam, SHIT and more sp4m");
        assert_eq!(
            verdict,
            Verdict {
                flagged: true,
                terms: vec!["shit".to_owned(), "spam".to_owned()],
            }
        );
        assert_eq!(m.check("all good here"), Verdict::default());
    }

    #[test]
    fn term_count_counts_distinct_flagging_terms() {
        let m = moderator(&["fuck", "FUCK", "f.u.c.k", "shit", "!shiitake"]);
        assert_eq!(m.term_count(), 2);
    }

    #[test]
    fn an_empty_list_never_flags() {
        let m = Moderator::from_terms(Vec::<String>::new()).unwrap();
        assert_eq!(m.term_count(), 0);
        assert!(!flags(&m, "anything at all"));
    }

    #[test]
    fn an_empty_term_is_rejected() {
        let err = Moderator::from_terms(["spam", "!!!"]).unwrap_err();
        assert!(matches!(err, ModerationError::EmptyTerm { index: 1, .. }));
    }

    #[test]
    fn checking_empty_or_odd_text_is_safe() {
        let m = moderator(&["spam"]);
        for text in ["", " ", "\u{200b}", "🎉🎉", "\0\u{7f}", "***", "@", "$"] {
            assert!(!flags(&m, text), "{text:?}");
        }
    }
}
