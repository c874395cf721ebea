//! Which language a text is in: a stopword vote over seven common languages settles most
//! chat without `whatlang`'s cost, `whatlang` (mapped to ISO 639-1) the rest, and the
//! caller's hint or `und` what neither can tell; [`detect_language`] has the policy.

use super::{tokenize, Token, UNDETERMINED};
use crate::lexicon::Lexicon;

/// Below this many letters, language identification is guesswork.
const MIN_LETTERS_FOR_DETECTION: usize = 12;
/// whatlang confidence (0..1) needed to trust a detection without a hint
/// to fall back on. whatlang's own "reliable" mark is stricter (0.9) and
/// rejects many correct answers on chat-length text.
const MIN_CONFIDENCE: f64 = 0.5;

/// Only this much of a text goes to whatlang (see [`detection_sample`]).
const MAX_DETECTION_BYTES: usize = 2_048;
/// A stopword vote needs at least this many hits, forming at least
/// 1 / `STOPWORD_SHARE_DIVISOR` of the words, to settle a text whatlang is
/// unsure of ...
const MIN_STOPWORD_VOTES: usize = 2;
const STOPWORD_SHARE_DIVISOR: usize = 4;
/// ... and these, to answer without asking whatlang at all.
const DECISIVE_STOPWORDS: usize = 3;
const DECISIVE_SHARE_DIVISOR: usize = 3;

/// The language of `text` as an ISO 639-1 code.
///
/// whatlang is accurate on sentences but unsure on chat-length text (it
/// gives "You are a wonderful person" to Romanian at 8% confidence), and it
/// is the costliest step of the analysis (~60 µs a call, against a few µs
/// for everything else). Function words are the strongest signal a short
/// text has and cheap to count, so stopword lists (English, French, German,
/// Spanish, Portuguese, Italian, Dutch) vote alongside it. In order:
/// 1. Fewer than 12 letters: identification is guesswork, so the hint is
///    used if it is a valid code, else [`UNDETERMINED`].
/// 2. One language's stopwords are at least three, a third of the words
///    and twice any other language's: that language, without whatlang.
///    This answers most chat in those languages at a fraction of the cost.
/// 3. whatlang is at least 50% confident: its language.
/// 4. One language's stopwords are at least two and a quarter of the
///    words: that language; if several tie, the one whatlang leans to.
/// 5. The hint names the language whatlang leaned to: that language.
/// 6. Otherwise the hint, else [`UNDETERMINED`].
///
/// A hint is accepted as a two-letter code, in any case, optionally with a
/// region ("en-US", "pt_BR"); anything else is ignored rather than rejected,
/// because a bad hint should not cost the caller the analysis.
pub fn detect_language(lexicon: &Lexicon, text: &str, lang_hint: Option<&str>) -> String {
    let tokens = tokenize(lexicon, text);
    language_of(lexicon, &tokens, text, lang_hint)
}

pub(super) fn language_of(
    lexicon: &Lexicon,
    tokens: &[Token<'_>],
    text: &str,
    lang_hint: Option<&str>,
) -> String {
    let hint = lang_hint.and_then(normalize_hint);
    let fallback = || hint.clone().unwrap_or_else(|| UNDETERMINED.to_owned());
    let letters = text.chars().filter(|c| c.is_alphabetic()).count();
    if letters < MIN_LETTERS_FOR_DETECTION {
        return fallback();
    }
    let votes = StopwordVotes::count(lexicon, tokens);
    if let Some(language) = votes.decisive() {
        return language.to_owned();
    }
    let detected = DETECTOR.detect(detection_sample(text));
    let leaning = detected.as_ref().map(|info| iso_639_1(info.lang()));
    if let (Some(info), Some(language)) = (&detected, leaning) {
        if info.confidence() >= MIN_CONFIDENCE {
            return language.to_owned();
        }
    }
    if let Some(language) = votes.dominant(leaning) {
        return language.to_owned();
    }
    match leaning {
        Some(leaning) if hint.as_deref() == Some(leaning) => leaning.to_owned(),
        _ => fallback(),
    }
}

/// whatlang scores a text against every language of its script; restricted to
/// these 29 (every language with a stopword list here, and the most used
/// ones on the web) it costs about half as much per message, which matters
/// when nlp-sim shares two cores with the pipeline it serves. Anything else
/// falls back to the stopword vote, the caller's hint, or `und`.
static DETECTOR: std::sync::LazyLock<whatlang::Detector> = std::sync::LazyLock::new(|| {
    use whatlang::Lang;
    whatlang::Detector::with_allowlist(vec![
        Lang::Eng,
        Lang::Spa,
        Lang::Por,
        Lang::Fra,
        Lang::Deu,
        Lang::Ita,
        Lang::Nld,
        Lang::Swe,
        Lang::Dan,
        Lang::Nob,
        Lang::Fin,
        Lang::Pol,
        Lang::Ces,
        Lang::Ron,
        Lang::Hun,
        Lang::Tur,
        Lang::Ind,
        Lang::Vie,
        Lang::Rus,
        Lang::Ukr,
        Lang::Ara,
        Lang::Heb,
        Lang::Ell,
        Lang::Hin,
        Lang::Ben,
        Lang::Cmn,
        Lang::Jpn,
        Lang::Kor,
        Lang::Tha,
    ])
});

/// The start of `text`, cut at a char boundary: whatlang's answer settles
/// long before the end of a large message, and its cost grows with length.
fn detection_sample(text: &str) -> &str {
    if text.len() <= MAX_DETECTION_BYTES {
        return text;
    }
    let mut end = MAX_DETECTION_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How many of a text's words are stopwords of each listed language.
#[derive(Debug, Clone)]
struct StopwordVotes {
    /// Hits per language, most first (list order among equals).
    hits: Vec<(&'static str, usize)>,
    words: usize,
}

impl StopwordVotes {
    fn count(lexicon: &Lexicon, tokens: &[Token<'_>]) -> Self {
        let mut hits: Vec<(&'static str, usize)> =
            lexicon.stopword_languages().map(|l| (l, 0)).collect();
        for token in tokens {
            for language in lexicon.stopword_languages_of(&token.lower).iter() {
                if let Some(hit) = hits.iter_mut().find(|(l, _)| *l == language) {
                    hit.1 += 1;
                }
            }
        }
        // Stable: equal counts keep list order.
        hits.sort_by_key(|&(_, count)| std::cmp::Reverse(count));
        let words = tokens.iter().filter(|t| t.has_letter).count();
        Self { hits, words }
    }

    fn top(&self) -> usize {
        self.hits.first().map_or(0, |&(_, count)| count)
    }

    fn runner_up(&self) -> usize {
        self.hits.get(1).map_or(0, |&(_, count)| count)
    }

    /// So clear that whatlang need not be asked: at least three hits, a
    /// third of the words, and twice any other language's.
    fn decisive(&self) -> Option<&'static str> {
        let top = self.top();
        let clear = top >= DECISIVE_STOPWORDS
            && top * DECISIVE_SHARE_DIVISOR >= self.words
            && top >= 2 * self.runner_up();
        self.hits
            .first()
            .map(|&(language, _)| language)
            .filter(|_| clear)
    }

    /// Enough to settle a text whatlang is unsure of: at least two hits and
    /// a quarter of the words, for a sole leader or, among tied leaders
    /// (Spanish and Portuguese share many), the one whatlang leans to.
    fn dominant(&self, leaning: Option<&str>) -> Option<&'static str> {
        let top = self.top();
        if top < MIN_STOPWORD_VOTES || top * STOPWORD_SHARE_DIVISOR < self.words {
            return None;
        }
        let mut leaders = self.hits.iter().take_while(|&&(_, count)| count == top);
        if self.runner_up() < top {
            return leaders.next().map(|&(language, _)| language);
        }
        leaders
            .find(|&&(language, _)| Some(language) == leaning)
            .map(|&(language, _)| language)
    }
}

/// "EN", "en-US", "pt_BR" → "en", "en", "pt"; anything else → None.
fn normalize_hint(hint: &str) -> Option<String> {
    let primary = hint.trim().split(['-', '_']).next()?;
    (primary.len() == 2 && primary.chars().all(|c| c.is_ascii_alphabetic()))
        .then(|| primary.to_ascii_lowercase())
}

/// Maps whatlang's ISO 639-3 languages to ISO 639-1. The match is
/// exhaustive on purpose: a whatlang upgrade that adds a language fails to
/// compile here instead of silently answering `und`.
fn iso_639_1(lang: whatlang::Lang) -> &'static str {
    use whatlang::Lang;
    match lang {
        Lang::Epo => "eo",
        Lang::Eng => "en",
        Lang::Rus => "ru",
        Lang::Cmn => "zh",
        Lang::Spa => "es",
        Lang::Por => "pt",
        Lang::Ita => "it",
        Lang::Ben => "bn",
        Lang::Fra => "fr",
        Lang::Deu => "de",
        Lang::Ukr => "uk",
        Lang::Kat => "ka",
        Lang::Ara => "ar",
        Lang::Hin => "hi",
        Lang::Jpn => "ja",
        Lang::Heb => "he",
        Lang::Yid => "yi",
        Lang::Pol => "pl",
        Lang::Amh => "am",
        Lang::Jav => "jv",
        Lang::Kor => "ko",
        Lang::Nob => "nb",
        Lang::Dan => "da",
        Lang::Swe => "sv",
        Lang::Fin => "fi",
        Lang::Tur => "tr",
        Lang::Nld => "nl",
        Lang::Hun => "hu",
        Lang::Ces => "cs",
        Lang::Ell => "el",
        Lang::Bul => "bg",
        Lang::Bel => "be",
        Lang::Mar => "mr",
        Lang::Kan => "kn",
        Lang::Ron => "ro",
        Lang::Slv => "sl",
        Lang::Hrv => "hr",
        Lang::Srp => "sr",
        Lang::Mkd => "mk",
        Lang::Lit => "lt",
        Lang::Lav => "lv",
        Lang::Est => "et",
        Lang::Tam => "ta",
        Lang::Vie => "vi",
        Lang::Urd => "ur",
        Lang::Tha => "th",
        Lang::Guj => "gu",
        Lang::Uzb => "uz",
        Lang::Pan => "pa",
        Lang::Aze => "az",
        Lang::Ind => "id",
        Lang::Tel => "te",
        Lang::Pes => "fa",
        Lang::Mal => "ml",
        Lang::Ori => "or",
        Lang::Mya => "my",
        Lang::Nep => "ne",
        Lang::Sin => "si",
        Lang::Khm => "km",
        Lang::Tuk => "tk",
        Lang::Aka => "ak",
        Lang::Zul => "zu",
        Lang::Sna => "sn",
        Lang::Afr => "af",
        Lang::Lat => "la",
        Lang::Slk => "sk",
        Lang::Cat => "ca",
        Lang::Tgl => "tl",
        Lang::Hye => "hy",
        Lang::Cym => "cy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lexicon() -> Lexicon {
        Lexicon::embedded().expect("embedded lexicon")
    }

    #[test]
    fn english_french_german_and_spanish_are_detected() {
        let lexicon = lexicon();
        let cases = [
            (
                "The weather is lovely today and we are going to the beach.",
                "en",
            ),
            (
                "Il fait très beau aujourd'hui et nous allons à la plage.",
                "fr",
            ),
            (
                "Das Wetter ist heute sehr schön und wir gehen an den Strand.",
                "de",
            ),
            (
                "Quisiera reservar una mesa para dos personas esta noche, por favor.",
                "es",
            ),
            ("You are a wonderful person", "en"),
        ];
        for (text, expected) in cases {
            assert_eq!(detect_language(&lexicon, text, None), expected, "{text}");
        }
    }

    #[test]
    fn related_languages_are_not_mistaken_for_each_other() {
        let lexicon = lexicon();
        let cases = [
            (
                "O tempo está muito bom hoje e vamos para a praia com os amigos",
                "pt",
            ),
            (
                "Eu gostaria de reservar uma mesa para duas pessoas esta noite",
                "pt",
            ),
            (
                "Il tempo è molto bello oggi e andiamo al mare con gli amici",
                "it",
            ),
            (
                "Het weer is vandaag heel mooi en we gaan naar het strand",
                "nl",
            ),
            (
                "Jag skulle vilja boka ett bord för två personer i kväll",
                "sv",
            ),
            (
                "Chciałbym zarezerwować stolik dla dwóch osób na dziś wieczór",
                "pl",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(detect_language(&lexicon, text, None), expected, "{text}");
        }
    }

    #[test]
    fn short_or_gibberish_text_is_undetermined_without_a_hint() {
        let lexicon = lexicon();
        for text in ["xqzt blorp", "ok", "zxcvbnm qwerty asdfgh", "", "12345 678"] {
            assert_eq!(
                detect_language(&lexicon, text, None),
                UNDETERMINED,
                "{text:?}"
            );
        }
    }

    #[test]
    fn the_hint_is_used_only_when_the_text_cannot_tell() {
        let lexicon = lexicon();
        assert_eq!(detect_language(&lexicon, "ok", Some("en")), "en");
        assert_eq!(detect_language(&lexicon, "ok", Some("PT-br")), "pt");
        assert_eq!(
            detect_language(&lexicon, "ok", Some("english")),
            UNDETERMINED
        );
        assert_eq!(
            detect_language(
                &lexicon,
                "Das Wetter ist heute sehr schön und wir gehen an den Strand.",
                Some("en")
            ),
            "de",
            "clear text outweighs a wrong hint"
        );
    }

    #[test]
    fn every_whatlang_language_maps_to_a_two_letter_code() {
        for lang in whatlang::Lang::all() {
            let code = iso_639_1(*lang);
            assert_eq!(code.len(), 2, "{lang:?}");
            assert!(code.chars().all(|c| c.is_ascii_lowercase()));
        }
    }
}
