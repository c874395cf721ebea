//! Text in, [`Analysis`] out: the NLP the simulator actually performs.
//!
//! The point of the simulator is to let the pipeline be tested against
//! answers that depend on the text (so analysts' views and moderation
//! thresholds show plausible numbers), while staying cheap enough to answer
//! ~10,000 requests a second on a shared 2-core machine. Everything here is a
//! pure function of the text, the optional language hint and the [`Lexicon`]:
//!
//! - **Sentiment** follows the VADER recipe (rule-based, lexicon-driven):
//!   word valences; a negator within three tokens of the same clause flips
//!   and damps ("not good"); degree modifiers push a word away from or
//!   towards zero ("very", "slightly"); "but" halves what came before it and
//!   boosts what follows by half; ALL-CAPS words among mixed-case ones and
//!   `!` add emphasis. The sum `x` is squashed to -1..1 by `x / sqrt(x² + 15)`
//!   and labelled positive at >= 0.05, negative at <= -0.05.
//! - **Toxicity** combines the weights `w` of matched insults, profanity and
//!   threats as `1 - Π(1 - w)`, scaled by how dense the hits are, so one curse
//!   in a long friendly message scores below the same curse on its own.
//! - **Keywords** are the five most frequent content words (not stopwords),
//!   ties broken by first appearance.
//! - **Language** comes from `whatlang` (mapped to ISO 639-1) together with
//!   a stopword vote over seven common languages, which settles most chat
//!   without whatlang's cost; see [`detect_language`] for the full policy and
//!   for when the hint or `und` is used instead.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serialize;

use super::lexicon::Lexicon;

mod language;

pub use language::detect_language;
use language::language_of;

/// The code for "undetermined" language, as ISO 639-2 reserves it.
pub const UNDETERMINED: &str = "und";
/// At most this many keywords are returned (the contract's "top 5").
pub const MAX_KEYWORDS: usize = 5;

/// VADER's normalisation constant: `x / sqrt(x² + ALPHA)`.
const ALPHA: f64 = 15.0;
/// Scores at or beyond ±this are positive / negative, otherwise neutral.
const LABEL_THRESHOLD: f64 = 0.05;
/// A negated valence is multiplied by this: flipped and weakened, since
/// "not good" is milder than "bad".
const NEGATION_SCALAR: f64 = -0.74;
/// Extra valence for an ALL-CAPS sentiment word in mixed-case text.
const CAPS_EMPHASIS: f64 = 0.733;
/// How far back (in tokens) negators and modifiers reach.
const LOOKBACK: usize = 3;
/// Modifier strength by distance: the adjacent word counts fully.
const DISTANCE_DAMPING: [f64; LOOKBACK] = [1.0, 0.95, 0.9];
/// Weight of the clauses around "but".
const BEFORE_BUT: f64 = 0.5;
const AFTER_BUT: f64 = 1.5;
/// Emphasis per `!`, counted up to four.
const EXCLAMATION_EMPHASIS: f64 = 0.292;
const MAX_EXCLAMATIONS: usize = 4;
/// Emphasis per `?` when there are two or three, and the cap for more.
const QUESTION_EMPHASIS: f64 = 0.18;
const MAX_QUESTION_EMPHASIS: f64 = 0.96;
/// A shouted toxic word weighs this much more (capped at 1).
const TOXIC_CAPS_FACTOR: f64 = 1.2;
/// Toxicity is scaled by `FLOOR + (1 - FLOOR) * min(1, GAIN * toxic / words)`,
/// where `toxic` counts the tokens inside matched terms: a four-word threat
/// weighs more in a sentence than a one-word insult does.
const TOXIC_DENSITY_FLOOR: f64 = 0.6;
const TOXIC_DENSITY_GAIN: f64 = 4.0;
/// Keywords shorter than this (in chars) say little; longer than the max
/// they are URLs, hashes or keyboard mashing.
const MIN_KEYWORD_CHARS: usize = 2;
const MAX_KEYWORD_CHARS: usize = 40;

/// The answer to `POST /v1/analyze`, serialised exactly as the contract says.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Analysis {
    /// Overall polarity of the text.
    pub sentiment: Sentiment,
    /// 0.0 (clean) ..= 1.0 (abusive).
    pub toxicity: f64,
    /// ISO 639-1 code, or [`UNDETERMINED`].
    pub language: String,
    /// Up to [`MAX_KEYWORDS`] lowercased content words, most frequent first.
    pub keywords: Vec<String>,
}

/// Sentiment as a label and a compound score.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sentiment {
    /// Bucketed from `score` at ±0.05.
    pub label: SentimentLabel,
    /// -1.0 (very negative) ..= 1.0 (very positive).
    pub score: f64,
}

/// The three sentiment buckets of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SentimentLabel {
    /// Score at or above +0.05.
    Positive,
    /// Score strictly between -0.05 and +0.05.
    Neutral,
    /// Score at or below -0.05.
    Negative,
}

impl SentimentLabel {
    /// Buckets a compound score.
    pub fn from_score(score: f64) -> Self {
        if score >= LABEL_THRESHOLD {
            Self::Positive
        } else if score <= -LABEL_THRESHOLD {
            Self::Negative
        } else {
            Self::Neutral
        }
    }
}

/// Analyses one message.
///
/// `lang_hint` is the caller's guess (any case, "en" or "en-US"); it is used
/// only when the text itself is too short or too ambiguous to identify.
pub fn analyze(lexicon: &Lexicon, text: &str, lang_hint: Option<&str>) -> Analysis {
    let tokens = tokenize(lexicon, text);
    let score = sentiment_score(lexicon, &tokens, text);
    let language = language_of(lexicon, &tokens, text, lang_hint);
    let keywords = keywords(lexicon, &tokens, &language);
    Analysis {
        sentiment: Sentiment {
            label: SentimentLabel::from_score(score),
            score: round4(score),
        },
        toxicity: round4(toxicity(lexicon, &tokens)),
        language,
        keywords,
    }
}

/// Four decimals are plenty for a simulator and keep the JSON short.
fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

/// One word of the message, as the scorers see it.
#[derive(Debug, Clone, PartialEq)]
struct Token<'a> {
    /// Lowercased, edge punctuation removed, curly apostrophes straightened.
    lower: Cow<'a, str>,
    /// Written in capitals (two or more letters, none lowercase).
    shouted: bool,
    /// Followed by clause punctuation (`,;:.!?`): negation and modifiers
    /// do not reach across it.
    ends_clause: bool,
    /// Contains at least one letter.
    has_letter: bool,
}

/// Splits on whitespace and trims punctuation from each word's edges.
///
/// Inner apostrophes and hyphens stay ("don't", "rip-off"). A word that is
/// entirely punctuation is dropped unless it is an emoticon in the lexicon.
fn tokenize<'a>(lexicon: &Lexicon, text: &'a str) -> Vec<Token<'a>> {
    let mut tokens = Vec::with_capacity(text.len() / 5 + 1);
    for raw in text.split_whitespace() {
        if let Some(emoticon) = emoticon(lexicon, raw) {
            tokens.push(emoticon);
            continue;
        }
        let word = raw.trim_matches(|c: char| !c.is_alphanumeric());
        if word.is_empty() {
            if let Some(last) = tokens.last_mut() {
                last.ends_clause |= raw.contains(is_clause_punctuation);
            }
            continue;
        }
        let trailing = &raw[raw.trim_end_matches(|c: char| !c.is_alphanumeric()).len()..];
        let (letters, uppercase) = word
            .chars()
            .filter(|c| c.is_alphabetic())
            .fold((0usize, 0usize), |(letters, upper), c| {
                (letters + 1, upper + usize::from(c.is_uppercase()))
            });
        tokens.push(Token {
            lower: normalize_word(word),
            shouted: letters >= 2 && uppercase == letters,
            ends_clause: trailing.contains(is_clause_punctuation),
            has_letter: letters > 0,
        });
    }
    tokens
}

/// Punctuation that closes a clause.
fn is_clause_punctuation(c: char) -> bool {
    matches!(c, ',' | ';' | ':' | '.' | '!' | '?')
}

/// Recognises emoticons such as ":)" or ":D", which trimming would destroy.
fn emoticon<'a>(lexicon: &Lexicon, raw: &'a str) -> Option<Token<'a>> {
    if raw.len() > 4 || raw.chars().all(char::is_alphanumeric) {
        return None;
    }
    let lower = raw.to_lowercase();
    lexicon.valence(&lower)?;
    Some(Token {
        lower: Cow::Owned(lower),
        shouted: false,
        ends_clause: false,
        has_letter: false,
    })
}

/// Lowercases and straightens apostrophes, borrowing when nothing changes.
fn normalize_word(word: &str) -> Cow<'_, str> {
    let needs_work = word.chars().any(|c| c.is_uppercase() || c == '\u{2019}');
    if needs_work {
        Cow::Owned(word.replace('\u{2019}', "'").to_lowercase())
    } else {
        Cow::Borrowed(word)
    }
}

/// Whether capitals can mean emphasis: some words are shouted and some are
/// not. In all-caps text, capitals carry no information.
fn caps_differential(tokens: &[Token<'_>]) -> bool {
    let mut shouted = false;
    let mut quiet = false;
    for token in tokens.iter().filter(|t| t.has_letter) {
        shouted |= token.shouted;
        quiet |= !token.shouted;
    }
    shouted && quiet
}

/// VADER-style compound score in -1..=1.
fn sentiment_score(lexicon: &Lexicon, tokens: &[Token<'_>], text: &str) -> f64 {
    let caps = caps_differential(tokens);
    let but = tokens.iter().position(|t| t.lower == "but");
    let mut sum = 0.0;
    for (index, token) in tokens.iter().enumerate() {
        let Some(mut valence) = word_valence(lexicon, token) else {
            continue;
        };
        if token.shouted && caps {
            valence += CAPS_EMPHASIS * valence.signum();
        }
        valence = apply_context(lexicon, tokens, index, valence, caps);
        if let Some(but) = but {
            if index < but {
                valence *= BEFORE_BUT;
            } else if index > but {
                valence *= AFTER_BUT;
            }
        }
        sum += valence;
    }
    if sum != 0.0 {
        sum += punctuation_emphasis(text) * sum.signum();
    }
    normalize(sum)
}

/// A token's own valence; modifiers and negators carry none even when they
/// look like sentiment words ("pretty", "no").
fn word_valence(lexicon: &Lexicon, token: &Token<'_>) -> Option<f64> {
    if lexicon.modifier(&token.lower).is_some() || lexicon.is_negator(&token.lower) {
        return None;
    }
    lexicon.valence(&token.lower)
}

/// Applies the modifiers and negation found up to [`LOOKBACK`] tokens before
/// `index`, stopping at a clause boundary.
fn apply_context(
    lexicon: &Lexicon,
    tokens: &[Token<'_>],
    index: usize,
    valence: f64,
    caps: bool,
) -> f64 {
    let direction = valence.signum();
    let mut adjusted = valence;
    let mut negated = false;
    for distance in 0..LOOKBACK.min(index) {
        let previous = &tokens[index - 1 - distance];
        if previous.ends_clause {
            break;
        }
        if let Some(delta) = lexicon.modifier(&previous.lower) {
            let mut scalar = delta;
            if previous.shouted && caps {
                scalar += CAPS_EMPHASIS * delta.signum();
            }
            adjusted += scalar * DISTANCE_DAMPING[distance] * direction;
        }
        negated |= lexicon.is_negator(&previous.lower);
    }
    if negated {
        adjusted *= NEGATION_SCALAR;
    }
    adjusted
}

/// `!` (up to four) and repeated `?` strengthen whatever the text says.
fn punctuation_emphasis(text: &str) -> f64 {
    let exclamations = text.matches('!').count().min(MAX_EXCLAMATIONS);
    let questions = text.matches('?').count();
    let question_emphasis = match questions {
        0 | 1 => 0.0,
        2 | 3 => questions as f64 * QUESTION_EMPHASIS,
        _ => MAX_QUESTION_EMPHASIS,
    };
    exclamations as f64 * EXCLAMATION_EMPHASIS + question_emphasis
}

/// Squashes an unbounded valence sum into -1..=1.
fn normalize(sum: f64) -> f64 {
    (sum / (sum * sum + ALPHA).sqrt()).clamp(-1.0, 1.0)
}

/// Noisy-OR of the matched toxic terms, scaled by their density.
fn toxicity(lexicon: &Lexicon, tokens: &[Token<'_>]) -> f64 {
    let caps = caps_differential(tokens);
    let mut clean = 1.0;
    let mut toxic_tokens = 0usize;
    let mut index = 0;
    while index < tokens.len() {
        match toxic_match(lexicon, &tokens[index..]) {
            Some((weight, length)) => {
                let shouted = tokens[index..index + length].iter().any(|t| t.shouted);
                let weight = if shouted && caps {
                    (weight * TOXIC_CAPS_FACTOR).min(1.0)
                } else {
                    weight
                };
                clean *= 1.0 - weight;
                toxic_tokens += length;
                index += length;
            }
            None => index += 1,
        }
    }
    if toxic_tokens == 0 {
        return 0.0;
    }
    let words = tokens.iter().filter(|t| t.has_letter).count().max(1);
    let density = (TOXIC_DENSITY_GAIN * toxic_tokens as f64 / words as f64).min(1.0);
    let scale = TOXIC_DENSITY_FLOOR + (1.0 - TOXIC_DENSITY_FLOOR) * density;
    ((1.0 - clean) * scale).clamp(0.0, 1.0)
}

/// The longest toxic term starting at `tokens[0]`: its weight and length.
fn toxic_match(lexicon: &Lexicon, tokens: &[Token<'_>]) -> Option<(f64, usize)> {
    let first = tokens.first()?;
    for phrase in lexicon.toxic_phrases(&first.lower) {
        let rest = &tokens[1..];
        let matches = rest.len() >= phrase.rest.len()
            && phrase
                .rest
                .iter()
                .zip(rest)
                .all(|(want, token)| **want == *token.lower);
        if matches {
            return Some((phrase.weight, phrase.rest.len() + 1));
        }
    }
    lexicon.toxic_word(&first.lower).map(|weight| (weight, 1))
}

/// The most frequent content words, ties broken by first appearance.
/// Degree modifiers and negators ("extremely", "never") are left out with
/// the stopwords: they say how, not what.
fn keywords(lexicon: &Lexicon, tokens: &[Token<'_>], language: &str) -> Vec<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut positions: HashMap<&str, usize> = HashMap::new();
    for token in tokens {
        let word: &str = &token.lower;
        if !is_content_word(word)
            || lexicon.is_stopword(language, word)
            || lexicon.modifier(word).is_some()
            || lexicon.is_negator(word)
        {
            continue;
        }
        match positions.get(word) {
            Some(&at) => counts[at].1 += 1,
            None => {
                positions.insert(word, counts.len());
                counts.push((word, 1));
            }
        }
    }
    // A stable sort keeps first-appearance order among equal counts.
    counts.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
    counts
        .into_iter()
        .take(MAX_KEYWORDS)
        .map(|(word, _)| word.to_owned())
        .collect()
}

/// A word worth reporting: has a letter, is made of word characters only,
/// and is neither a fragment nor a run-on blob.
fn is_content_word(word: &str) -> bool {
    let chars = word.chars().count();
    (MIN_KEYWORD_CHARS..=MAX_KEYWORD_CHARS).contains(&chars)
        && word.chars().any(char::is_alphabetic)
        && word
            .chars()
            .all(|c| c.is_alphanumeric() || c == '\'' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicon() -> Lexicon {
        Lexicon::embedded().expect("embedded lexicon")
    }

    fn score(text: &str) -> f64 {
        analyze(&lexicon(), text, None).sentiment.score
    }

    fn label(text: &str) -> SentimentLabel {
        analyze(&lexicon(), text, None).sentiment.label
    }

    #[test]
    fn clearly_positive_negative_and_neutral_sentences_are_labelled_so() {
        assert_eq!(
            label("The support team was great and the new dashboard is really helpful."),
            SentimentLabel::Positive
        );
        assert_eq!(
            label("This update is terrible, the app crashes every time I open it."),
            SentimentLabel::Negative
        );
        assert_eq!(
            label("The meeting is scheduled for Tuesday at the main office."),
            SentimentLabel::Neutral
        );
    }

    #[test]
    fn scores_stay_within_minus_one_and_one() {
        let gushing = "great ".repeat(500);
        let furious = "horrible!!! ".repeat(500);
        assert!(score(&gushing) <= 1.0 && score(&gushing) > 0.99);
        assert!(score(&furious) >= -1.0 && score(&furious) < -0.99);
        assert_eq!(score(""), 0.0);
    }

    #[test]
    fn negation_flips_and_damps_the_following_word() {
        let good = score("The food was good.");
        let not_good = score("The food was not good.");
        assert!(not_good < 0.0, "not good is negative: {not_good}");
        assert!(not_good.abs() < good, "and milder than good is positive");
        assert!(score("The food was not bad.") > 0.0);
        assert!(score("I don't like it") < 0.0, "n't contractions negate");
        assert!(
            score("I dont like it") < 0.0,
            "so do their apostrophe-less forms"
        );
    }

    #[test]
    fn negation_does_not_reach_across_a_clause_boundary() {
        assert!(score("No, the food was good") > 0.0);
    }

    #[test]
    fn intensifiers_strengthen_and_dampeners_soften() {
        let good = score("The food was good");
        assert!(score("The food was very good") > good);
        assert!(score("The food was extremely good") > good);
        assert!(score("The food was slightly good") < good);
        let bad = score("The food was bad");
        assert!(
            score("The food was really bad") < bad,
            "intensifies towards negative"
        );
    }

    #[test]
    fn but_shifts_weight_to_the_second_clause() {
        assert!(score("The food was good but the service was terrible") < 0.0);
        assert!(score("The service was terrible but the food was good") > 0.0);
    }

    #[test]
    fn exclamation_marks_and_shouting_add_emphasis() {
        let plain = score("The food was good");
        assert!(score("The food was good!!!") > plain);
        assert!(score("The food was GOOD") > plain);
        assert_eq!(
            score("THE FOOD WAS GOOD"),
            plain,
            "all-caps text carries no emphasis"
        );
    }

    #[test]
    fn labels_follow_the_vader_thresholds() {
        assert_eq!(SentimentLabel::from_score(0.05), SentimentLabel::Positive);
        assert_eq!(SentimentLabel::from_score(0.049), SentimentLabel::Neutral);
        assert_eq!(SentimentLabel::from_score(-0.05), SentimentLabel::Negative);
    }

    #[test]
    fn emoticons_count_as_sentiment() {
        assert!(score("see you tomorrow :)") > 0.0);
        assert!(score("see you tomorrow :(") < 0.0);
    }

    #[test]
    fn toxicity_orders_clean_below_mild_below_strong() {
        let lexicon = lexicon();
        let toxicity = |text: &str| analyze(&lexicon, text, None).toxicity;
        let clean = toxicity("You are a wonderful person, thanks for the help");
        let mild = toxicity("That was a stupid idea");
        let strong = toxicity("Shut up you fucking idiot, I will kill you");
        assert_eq!(clean, 0.0);
        assert!(clean < mild && mild < strong, "{clean} < {mild} < {strong}");
        assert!(strong > 0.9 && strong <= 1.0);
    }

    #[test]
    fn one_insult_in_a_long_friendly_message_scores_lower_than_alone() {
        let lexicon = lexicon();
        let alone = analyze(&lexicon, "you idiot", None).toxicity;
        let diluted = analyze(
            &lexicon,
            "thanks for the update on the release plan, the idiot in me forgot the date \
             of the demo so I am glad you wrote it down for the whole team again",
            None,
        )
        .toxicity;
        assert!(diluted > 0.0 && diluted < alone, "{diluted} < {alone}");
    }

    #[test]
    fn threats_are_matched_as_phrases() {
        let lexicon = lexicon();
        let threat = analyze(&lexicon, "I know where you are and I will kill you", None).toxicity;
        let harmless = analyze(&lexicon, "this bug will kill the release", None).toxicity;
        assert!(threat > 0.8, "{threat}");
        assert_eq!(harmless, 0.0);
    }

    #[test]
    fn keywords_are_frequent_content_words_in_first_appearance_order() {
        let analysis = analyze(
            &lexicon(),
            "The invoice is wrong. I paid the invoice twice, and the refund for the \
             invoice never came; the refund form is broken.",
            None,
        );
        assert_eq!(
            analysis.keywords,
            ["invoice", "refund", "wrong", "paid", "twice"]
        );
    }

    #[test]
    fn keywords_are_lowercased_capped_at_five_and_skip_stopwords() {
        let analysis = analyze(
            &lexicon(),
            "Kafka Kafka Postgres the the the and and of Rust Tokio Hyper Serde",
            None,
        );
        assert_eq!(
            analysis.keywords,
            ["kafka", "postgres", "rust", "tokio", "hyper"]
        );
        assert!(analyze(&lexicon(), "the and of it", None)
            .keywords
            .is_empty());
    }

    #[test]
    fn keywords_use_the_stopwords_of_the_detected_language() {
        let analysis = analyze(
            &lexicon(),
            "Ich möchte heute Abend einen Tisch für zwei Personen reservieren.",
            None,
        );
        assert_eq!(analysis.language, "de");
        assert!(!analysis.keywords.iter().any(|k| k == "ich" || k == "für"));
        assert_eq!(analysis.keywords[0], "möchte");
    }

    #[test]
    fn tokens_keep_inner_apostrophes_and_drop_edge_punctuation() {
        let lexicon = lexicon();
        let tokens = tokenize(&lexicon, "Don’t stop, (please)... ok?! :-)");
        let words: Vec<&str> = tokens.iter().map(|t| &*t.lower).collect();
        assert_eq!(words, ["don't", "stop", "please", "ok", ":-)"]);
        let ends: Vec<bool> = tokens.iter().map(|t| t.ends_clause).collect();
        assert_eq!(ends, [false, true, true, true, false]);
    }

    #[test]
    fn large_texts_are_handled_without_panicking() {
        let text = "é".repeat(5_000) + " good";
        let analysis = analyze(&lexicon(), &text, Some("xx-YY"));
        assert_eq!(analysis.sentiment.label, SentimentLabel::Positive);
    }
}
