//! Turning message text into the form word lists are matched against.
//!
//! People who want to get a word past a filter change how it looks, not what
//! it says: `FÜCK`, `ｆｕｃｋ`, `f\u{200B}uck`, `fuuuck`, `f.u.c.k`, `sh1t`,
//! `a$$`, `f*ck`. Normalisation undoes those changes so that one plain entry
//! in a word list covers every spelling. Word lists go through the very same
//! function, so the two sides always agree.
//!
//! The steps, in order:
//!
//! 1. **Fold characters.** Unicode NFKD (fullwidth, circled, mathematical and
//!    superscript letters become plain ones; accents split off), then combining
//!    marks, zero-width and other invisible characters and apostrophes are
//!    dropped, letters are lowercased, and a few look-alikes are mapped to the
//!    Latin letter they imitate (`ß`→`ss`, `ø`→`o`, Cyrillic `с`→`c`, Greek
//!    `ι`→`i`, small capitals).
//! 2. **Split into words.** Letters, digits and the symbols used as letters
//!    (`@ $ ! | + €`, masks `* # %`) make words; everything else separates.
//!    Punctuation-like symbols at the edges of a word are separators
//!    (`"shit!"` is `shit`).
//! 3. **Read leetspeak.** In a word that contains a letter, `0 1 3 4 5 7 8 9`
//!    and `@ $ ! | + €` become `o i e a s t b g` and `a s i i t e`; `2` and `6`
//!    have no single reading and split the word. Numbers stay numbers: a word
//!    without letters is left alone, two or more digits at the start of a
//!    word (`24h`) are a number, and so are digits after a word when there are
//!    three or more or one has no letter reading (`user123`, `fuck69`); `fr33`
//!    and `a55` are leetspeak.
//!    Mask symbols inside a word become `*`, so `f#ck` reads as `f*ck`.
//! 4. **Join spelled-out letters.** Three or more single characters separated
//!    by short gaps (`s p a m`, `f.u.c.k`, `f-u-c-k`) become one word. That
//!    word has no known inner boundaries (`f u c k y o u`), so the matcher may
//!    match inside it; ordinary words are never merged.
//! 5. **Squeeze repeated letters.** A run of the same ASCII letter is written
//!    once. Internally a run of two or more is written as the uppercase letter,
//!    so the matcher can still tell `ass` from `as`: a single letter in a term
//!    matches a run of any length in the text, a doubled one needs two or more.
//!
//! [`normalise`] returns the readable form of the result (lowercase, a run
//! written as two letters). The matcher works on [`MatchKey`], which keeps the
//! run marks and the spans of joined spelled-out words.

use std::mem;
use std::ops::Range;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// Room for a typical word, so the word buffer is allocated once per text.
const WORD_CAPACITY: usize = 32;

/// Fewest spelled-out single characters joined into a word: two (`e.g`) is
/// too common in clean text, three (`s p a m`) rarely is.
const MIN_SPELLED_RUN: usize = 3;

/// Most separator characters between two spelled-out characters that still
/// joins them (`f . u . c . k` has three).
const MAX_SPELLED_GAP: usize = 3;

/// Fewest digits at the start of a word that are read as a number rather
/// than as leetspeak (`24h`, `100percent`, but `5hit`).
const MIN_LEADING_NUMBER_DIGITS: usize = 2;

/// Fewest digits at the end of a word that are read as a number even when
/// each has a letter reading (`user007`, but `fr33`, `a55`).
const MIN_TRAILING_NUMBER_DIGITS: usize = 3;

/// Fewest letters before trailing digits for the digits to be a number:
/// `covid2019` is a word and a number, `a555` is leetspeak for one word.
const MIN_LETTERS_BEFORE_NUMBER: usize = 2;

/// Normalises `text` the way the moderation matcher sees it, in readable form.
///
/// Use it to see why a message was or was not flagged, or to test a word-list
/// entry: a term matches when its normalised form appears in the normalised
/// text. The result is lowercase, words are separated by single spaces, runs
/// of a repeated letter are written as two letters (`fuuuck` → `fuuck`, which
/// matches the term `fuck`) and leetspeak is decoded (`sh1t` → `shit`).
pub fn normalise(text: &str) -> String {
    MatchKey::new(text).readable()
}

/// The normalised text as the matcher needs it.
///
/// `text` is lowercase except that a run of two or more of the same ASCII
/// letter is written once, in uppercase. Words are separated by one ASCII
/// space. `spelled` holds the byte ranges of words joined from spelled-out
/// characters, whose inner positions count as word boundaries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MatchKey {
    text: String,
    spelled: Vec<Range<usize>>,
}

impl MatchKey {
    /// Normalises `text`; one `String` is allocated for the result.
    pub(crate) fn new(text: &str) -> Self {
        let mut builder = KeyBuilder::with_capacity(text.len());
        fold(text, |c| builder.push(c));
        builder.finish()
    }

    /// The normalised text, with runs marked in uppercase.
    pub(crate) fn as_str(&self) -> &str {
        &self.text
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    /// Whether a word may start at byte `pos`.
    pub(crate) fn starts_word(&self, pos: usize) -> bool {
        pos == 0 || self.text.as_bytes().get(pos - 1) == Some(&b' ') || self.inside_spelled(pos)
    }

    /// Whether a word may end at byte `pos`.
    pub(crate) fn ends_word(&self, pos: usize) -> bool {
        pos >= self.text.len()
            || self.text.as_bytes().get(pos) == Some(&b' ')
            || self.inside_spelled(pos)
    }

    fn inside_spelled(&self, pos: usize) -> bool {
        // Spans are written in order and never overlap.
        let next = self.spelled.partition_point(|r| r.end <= pos);
        self.spelled
            .get(next)
            .is_some_and(|r| r.start < pos && pos < r.end)
    }

    /// The lowercase form: each run mark written as two letters.
    pub(crate) fn readable(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + 8);
        for c in self.text.chars() {
            if c.is_ascii_uppercase() {
                let lower = c.to_ascii_lowercase();
                out.push(lower);
                out.push(lower);
            } else {
                out.push(c);
            }
        }
        out
    }
}

/// Feeds the folded characters of `text` to `emit` (step 1).
fn fold(text: &str, mut emit: impl FnMut(char)) {
    if text.is_ascii() {
        // Fast path for the common case: NFKD and case mapping are trivial.
        for c in text.chars() {
            if !is_apostrophe(c) {
                emit(c.to_ascii_lowercase());
            }
        }
    } else {
        for c in text.nfkd() {
            fold_char(c, &mut emit);
        }
    }
}

fn fold_char(c: char, emit: &mut impl FnMut(char)) {
    if is_ignorable(c) {
        return;
    }
    if c.is_ascii() {
        emit(c.to_ascii_lowercase());
        return;
    }
    if let Some(latin) = enclosed_letter(c).or_else(|| uppercase_lookalike(c)) {
        emit(latin);
        return;
    }
    for lower in c.to_lowercase() {
        // Lowercasing can produce combining marks ('İ' → "i\u{307}").
        if is_ignorable(lower) {
            continue;
        }
        match lowercase_lookalike(lower) {
            Some(Folded::One(a)) => emit(a),
            Some(Folded::Two(a, b)) => {
                emit(a);
                emit(b);
            }
            None => emit(lower),
        }
    }
}

fn is_ignorable(c: char) -> bool {
    is_invisible(c) || is_combining_mark(c) || is_apostrophe(c)
}

/// Characters that render as nothing and are used to split a word invisibly.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}'                  // soft hyphen
        | '\u{034F}'                // combining grapheme joiner
        | '\u{061C}'                // Arabic letter mark
        | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // Hangul fillers
        | '\u{17B4}' | '\u{17B5}'   // Khmer inherent vowels
        | '\u{180B}'..='\u{180F}'   // Mongolian selectors and vowel separator
        | '\u{200B}'..='\u{200F}'   // zero-width space/joiners, direction marks
        | '\u{202A}'..='\u{202E}'   // bidirectional embeddings
        | '\u{2060}'..='\u{2064}'   // word joiner, invisible operators
        | '\u{2066}'..='\u{206F}'   // bidirectional isolates, deprecated formats
        | '\u{FE00}'..='\u{FE0F}'   // variation selectors
        | '\u{FEFF}'                // zero-width no-break space / BOM
        | '\u{E0000}'..='\u{E007F}' // tag characters
        | '\u{E0100}'..='\u{E01EF}' // variation selectors supplement
    )
}

/// Apostrophes are dropped rather than split on: `don't` is one word and
/// `f'u'c'k` is `fuck`.
fn is_apostrophe(c: char) -> bool {
    matches!(c, '\'' | '`' | '\u{2018}' | '\u{2019}' | '\u{02BC}')
}

enum Folded {
    One(char),
    Two(char, char),
}

/// Enclosed letters that NFKD leaves alone ("fancy text" generators use
/// them): negative circled `🅐`, negative squared `🅵`, regional indicators `🇫`.
fn enclosed_letter(c: char) -> Option<char> {
    let code = u32::from(c);
    let first = match code {
        0x1F150..=0x1F169 => 0x1F150,
        0x1F170..=0x1F189 => 0x1F170,
        0x1F1E6..=0x1F1FF => 0x1F1E6,
        _ => return None,
    };
    char::from_u32(u32::from('a') + (code - first))
}

/// Uppercase Greek letters that look like a different Latin letter than their
/// lowercase form does (`Η` looks like H, `η` like n).
fn uppercase_lookalike(c: char) -> Option<char> {
    Some(match c {
        'Η' => 'h',
        'Μ' => 'm',
        'Ν' => 'n',
        'Υ' => 'y',
        'Ζ' => 'z',
        _ => return None,
    })
}

/// Lowercase letters that NFKD leaves alone but that read as Latin letters.
fn lowercase_lookalike(c: char) -> Option<Folded> {
    use Folded::{One, Two};
    Some(match c {
        // Full case folding and Latin letters without a decomposition.
        'ß' => Two('s', 's'),
        'æ' => Two('a', 'e'),
        'œ' => Two('o', 'e'),
        'ø' => One('o'),
        'đ' | 'ð' => One('d'),
        'ł' => One('l'),
        'ħ' => One('h'),
        'ı' | 'ɨ' => One('i'),
        'ȷ' => One('j'),
        'ŧ' => One('t'),
        'ƀ' => One('b'),
        'ʉ' => One('u'),
        'ƒ' => One('f'),
        'ɑ' => One('a'),
        'ɡ' => One('g'),
        'ŋ' => One('n'),
        // Small capitals.
        'ᴀ' => One('a'),
        'ʙ' => One('b'),
        'ᴄ' => One('c'),
        'ᴅ' => One('d'),
        'ᴇ' => One('e'),
        'ꜰ' => One('f'),
        'ɢ' => One('g'),
        'ʜ' => One('h'),
        'ɪ' => One('i'),
        'ᴊ' => One('j'),
        'ᴋ' => One('k'),
        'ʟ' => One('l'),
        'ᴍ' => One('m'),
        'ɴ' => One('n'),
        'ᴏ' => One('o'),
        'ᴘ' => One('p'),
        'ʀ' => One('r'),
        'ꜱ' => One('s'),
        'ᴛ' => One('t'),
        'ᴜ' => One('u'),
        'ᴠ' => One('v'),
        'ᴡ' => One('w'),
        'ʏ' => One('y'),
        'ᴢ' => One('z'),
        // Cyrillic look-alikes.
        'а' => One('a'),
        'в' => One('b'),
        'е' => One('e'),
        'к' => One('k'),
        'м' => One('m'),
        'н' | 'һ' => One('h'),
        'о' => One('o'),
        'р' => One('p'),
        'с' => One('c'),
        'т' => One('t'),
        'у' | 'ү' => One('y'),
        'х' => One('x'),
        'ѕ' => One('s'),
        'і' => One('i'),
        'ј' => One('j'),
        'ԁ' => One('d'),
        'ԛ' => One('q'),
        'ԝ' => One('w'),
        // Greek look-alikes.
        'α' => One('a'),
        'β' => One('b'),
        'γ' => One('y'),
        'ε' => One('e'),
        'η' => One('n'),
        'ι' => One('i'),
        'κ' => One('k'),
        'μ' | 'υ' => One('u'),
        'ν' => One('v'),
        'ο' => One('o'),
        'ρ' => One('p'),
        'ς' | 'ϲ' => One('c'),
        'τ' => One('t'),
        'χ' => One('x'),
        'ω' => One('w'),
        // Armenian look-alikes.
        'ս' => One('u'),
        'օ' => One('o'),
        'հ' => One('h'),
        'ո' => One('n'),
        'ց' => One('g'),
        'զ' => One('q'),
        _ => return None,
    })
}

/// Whether `c` belongs to a word (step 2).
fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || leet_symbol(c).is_some() || is_mask(c)
}

/// Symbols that are punctuation when they stand at the edge of a word:
/// `shit!`, `c++`, `*shrug*`, `#topic`, `50%`, `Acme®`.
fn is_edge_punctuation(c: char) -> bool {
    matches!(c, '!' | '|' | '+' | '¡' | '©' | '®') || is_mask(c)
}

/// Symbols that hide a letter the reader is meant to fill in.
fn is_mask(c: char) -> bool {
    matches!(c, '*' | '#' | '%')
}

/// The letter a digit stands for in leetspeak. `2` and `6` have no single
/// reading (to/z, b/g) and are left alone.
fn leet_digit(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' => 'i',
        '3' => 'e',
        '4' => 'a',
        '5' => 's',
        '7' => 't',
        '8' => 'b',
        '9' => 'g',
        _ => return None,
    })
}

/// The letter a symbol stands for in leetspeak.
fn leet_symbol(c: char) -> Option<char> {
    Some(match c {
        '@' => 'a',
        '$' => 's',
        '!' | '|' | '¡' => 'i',
        '+' => 't',
        '€' => 'e',
        '¢' | '©' => 'c',
        '®' => 'r',
        _ => return None,
    })
}

/// Whether a one-character word may be part of a spelled-out run.
fn can_spell(c: char) -> bool {
    c.is_alphabetic() || c.is_ascii_digit() || matches!(c, '@' | '$' | '€' | '¢')
}

/// How a character of a word that contains letters is written.
enum Reading {
    Letter(char),
    Mask,
    /// A digit with no letter reading; it splits the word.
    Number(char),
}

fn read(c: char) -> Reading {
    if c.is_alphabetic() {
        Reading::Letter(c)
    } else if let Some(letter) = leet_digit(c).or_else(|| leet_symbol(c)) {
        Reading::Letter(letter)
    } else if is_mask(c) {
        Reading::Mask
    } else {
        Reading::Number(c)
    }
}

/// Steps 2 to 5: collects folded characters into words and writes the key.
struct KeyBuilder {
    out: Writer,
    spelled: Vec<Range<usize>>,
    /// Characters of the word being read.
    word: Vec<char>,
    /// Pending one-character words that may be joined.
    run: Vec<char>,
    /// Separator characters since the last word.
    gap: usize,
    gap_has_newline: bool,
}

impl KeyBuilder {
    fn with_capacity(len: usize) -> Self {
        KeyBuilder {
            out: Writer::with_capacity(len),
            spelled: Vec::new(),
            word: Vec::with_capacity(WORD_CAPACITY),
            run: Vec::new(),
            gap: 0,
            gap_has_newline: false,
        }
    }

    fn push(&mut self, c: char) {
        if is_word_char(c) {
            self.word.push(c);
        } else {
            self.end_word();
            self.gap += 1;
            if c == '\n' || c == '\r' {
                self.gap_has_newline = true;
            }
        }
    }

    fn finish(mut self) -> MatchKey {
        self.end_word();
        self.flush_run();
        MatchKey {
            text: self.out.into_string(),
            spelled: self.spelled,
        }
    }

    fn end_word(&mut self) {
        if self.word.is_empty() {
            return;
        }
        let word = mem::take(&mut self.word);
        let start = word
            .iter()
            .position(|&c| !is_edge_punctuation(c))
            .unwrap_or(word.len());
        let end = word
            .iter()
            .rposition(|&c| !is_edge_punctuation(c))
            .map_or(start, |i| i + 1);
        if start == end {
            // Only punctuation-like symbols ("!!!"): all of it is a gap.
            self.gap += word.len();
            self.word = word;
            self.word.clear();
            return;
        }
        self.gap += start;
        if let [single] = word[start..end] {
            if can_spell(single) {
                if !self.run.is_empty() && (self.gap > MAX_SPELLED_GAP || self.gap_has_newline) {
                    self.flush_run();
                }
                self.run.push(single);
            } else {
                self.flush_run();
                self.emit_word(&[single]);
            }
        } else {
            self.flush_run();
            self.emit_word(&word[start..end]);
        }
        self.gap = word.len() - end;
        self.gap_has_newline = false;
        self.word = word;
        self.word.clear();
    }

    /// Writes the pending one-character words, joined if there are enough.
    fn flush_run(&mut self) {
        if self.run.is_empty() {
            return;
        }
        let run = mem::take(&mut self.run);
        if run.len() >= MIN_SPELLED_RUN && run.iter().any(|c| c.is_alphabetic()) {
            self.out.start_word();
            for &c in &run {
                match read(c) {
                    Reading::Letter(letter) => self.out.letter(letter),
                    Reading::Mask => self.out.mask(),
                    Reading::Number(digit) => self.out.literal(digit),
                }
            }
            if let Some(span) = self.out.end_word() {
                self.spelled.push(span);
            }
        } else {
            for &c in &run {
                self.emit_word(&[c]);
            }
        }
        self.run = run;
        self.run.clear();
    }

    /// Writes one word (steps 3 and 5).
    fn emit_word(&mut self, word: &[char]) {
        if !word.iter().any(|c| c.is_alphabetic()) {
            if word.iter().any(|c| c.is_numeric()) {
                self.emit_literal(word);
            } else {
                // Symbols only, such as "@$$": nothing else to read them as.
                self.emit_read(word);
            }
            return;
        }
        let mut body = word;
        let lead = body.iter().take_while(|c| c.is_ascii_digit()).count();
        if lead >= MIN_LEADING_NUMBER_DIGITS {
            self.emit_literal(&body[..lead]);
            body = &body[lead..];
        }
        let trail = body.iter().rev().take_while(|c| c.is_ascii_digit()).count();
        let head = &body[..body.len() - trail];
        let letters_before = head.iter().filter(|c| c.is_alphabetic()).count();
        let tail = &body[head.len()..];
        let is_number =
            trail >= MIN_TRAILING_NUMBER_DIGITS || tail.iter().any(|&c| leet_digit(c).is_none());
        if trail > 0 && is_number && letters_before >= MIN_LETTERS_BEFORE_NUMBER {
            self.emit_read(head);
            self.emit_literal(tail);
        } else {
            self.emit_read(body);
        }
    }

    /// Writes characters as they are: a number such as `1.5`, `$50` or `24`.
    fn emit_literal(&mut self, chars: &[char]) {
        self.out.start_word();
        for &c in chars {
            self.out.literal(c);
        }
        self.out.end_word();
    }

    /// Writes characters with leetspeak and masks read; a digit with no
    /// letter reading becomes a separate number word.
    fn emit_read(&mut self, chars: &[char]) {
        let mut in_number = false;
        self.out.start_word();
        for &c in chars {
            match read(c) {
                Reading::Letter(letter) => {
                    if in_number {
                        self.out.end_word();
                        self.out.start_word();
                        in_number = false;
                    }
                    self.out.letter(letter);
                }
                Reading::Mask => self.out.mask(),
                Reading::Number(digit) => {
                    if !in_number {
                        self.out.end_word();
                        self.out.start_word();
                        in_number = true;
                    }
                    self.out.literal(digit);
                }
            }
        }
        self.out.end_word();
    }
}

/// Appends words to the key, squeezing runs and trimming edge masks.
struct Writer {
    out: String,
    /// Byte offset where the current word starts, once something is written.
    word_start: Option<usize>,
    /// Last character written to the current word (lowercase).
    last: Option<char>,
}

impl Writer {
    fn with_capacity(len: usize) -> Self {
        Writer {
            out: String::with_capacity(len),
            word_start: None,
            last: None,
        }
    }

    fn start_word(&mut self) {
        self.word_start = None;
        self.last = None;
    }

    /// Ends the current word; returns its span if anything was written.
    fn end_word(&mut self) -> Option<Range<usize>> {
        let start = self.word_start.take()?;
        while self.out.len() > start && self.out.ends_with('*') {
            self.out.pop();
        }
        self.last = None;
        Some(start..self.out.len())
    }

    fn open(&mut self) {
        if self.word_start.is_none() {
            if !self.out.is_empty() {
                self.out.push(' ');
            }
            self.word_start = Some(self.out.len());
        }
    }

    fn letter(&mut self, c: char) {
        if c.is_ascii_lowercase() && self.last == Some(c) {
            // Second letter of a run: mark the first; later ones add nothing.
            if self.out.ends_with(c) {
                self.out.pop();
                self.out.push(c.to_ascii_uppercase());
            }
            return;
        }
        self.open();
        self.out.push(c);
        self.last = Some(c);
    }

    fn mask(&mut self) {
        // A mask cannot start a word; trailing ones are trimmed by `end_word`.
        if self.word_start.is_some() {
            self.out.push('*');
            self.last = Some('*');
        }
    }

    fn literal(&mut self, c: char) {
        self.open();
        self.out.push(c);
        self.last = Some(c);
    }

    fn into_string(mut self) -> String {
        self.end_word();
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> String {
        MatchKey::new(text).as_str().to_owned()
    }

    #[test]
    fn lowercases_and_separates_words_with_single_spaces() {
        assert_eq!(normalise("  Hello,   World!  "), "hello world");
        assert_eq!(normalise("buy-now...please"), "buy now please");
    }

    #[test]
    fn folds_fullwidth_and_styled_letters() {
        assert_eq!(normalise("ｆｕｃｋ ｙｏｕ"), "fuck you");
        assert_eq!(normalise("\u{1d41f}\u{1d42e}\u{1d41c}\u{1d424}"), "fuck");
        assert_eq!(normalise("ⓕⓤⓒⓚ"), "fuck");
        assert_eq!(normalise("ᶠᵘᶜᵏ"), "fuck");
    }

    #[test]
    fn strips_diacritics() {
        assert_eq!(normalise("FÜCK"), "fuck");
        assert_eq!(normalise("naïve résumé"), "naive resume");
        assert_eq!(normalise("f\u{336}u\u{336}c\u{336}k\u{336}"), "fuck");
    }

    #[test]
    fn removes_invisible_characters() {
        assert_eq!(normalise("f\u{200b}u\u{200c}c\u{200d}k"), "fuck");
        assert_eq!(normalise("sh\u{ad}i\u{2060}t\u{feff}"), "shit");
        assert_eq!(normalise("fu\u{fe0f}ck"), "fuck");
        assert_eq!(normalise("\u{202e}abc\u{e0041}"), "abc");
    }

    #[test]
    fn maps_lookalike_letters() {
        assert_eq!(normalise("fu\u{441}k"), "fuck"); // Cyrillic es
        assert_eq!(normalise("sh\u{3b9}t"), "shit"); // Greek iota
        assert_eq!(normalise("ſhit"), "shit"); // long s, via NFKD
        assert_eq!(normalise("ƒuck"), "fuck");
        assert_eq!(normalise("Straße"), "strasse");
        assert_eq!(normalise("ꜰᴜᴄᴋ"), "fuck");
        assert_eq!(normalise("f\u{57d}ck"), "fuck"); // Armenian seh
        assert_eq!(normalise("\u{1f175}\u{1f184}\u{1f172}\u{1f17a}"), "fuck");
        assert_eq!(normalise("\u{1f155}\u{1f164}\u{1f152}\u{1f15a}"), "fuck");
        assert_eq!(normalise("\u{1f1eb}\u{1f1fa}\u{1f1e8}\u{1f1f0}"), "fuck");
    }

    #[test]
    fn reads_leetspeak_inside_words() {
        assert_eq!(normalise("sh1t"), "shit");
        assert_eq!(normalise("a$$hole"), "asshole");
        assert_eq!(normalise("b!tch"), "bitch");
        assert_eq!(normalise("5hit"), "shit");
        assert_eq!(normalise("a55"), "ass");
        assert_eq!(normalise("fr€€"), "free");
        assert_eq!(normalise("bi+ch"), "bitch");
        assert_eq!(normalise("@$$"), "ass");
    }

    #[test]
    fn keeps_numbers_as_numbers() {
        assert_eq!(normalise("call 555-0134"), "call 555 0134");
        assert_eq!(normalise("version 1.3.5"), "version 1 3 5");
        assert_eq!(normalise("price $50"), "price $50");
        assert_eq!(normalise("covid2019"), "covid 2019");
        assert_eq!(normalise("fuck69"), "fuck 69");
        assert_eq!(normalise("user007"), "user 007");
        assert_eq!(normalise("fr33 m0ney"), "free money");
        assert_eq!(normalise("24h"), "24 h");
        assert_eq!(normalise("100% free"), "100 free");
    }

    #[test]
    fn digits_without_a_letter_reading_split_words() {
        assert_eq!(normalise("shit2"), "shit 2");
        assert_eq!(normalise("b2b"), "b 2 b");
    }

    #[test]
    fn trailing_punctuation_is_not_leetspeak() {
        assert_eq!(normalise("shit!!!"), "shit");
        assert_eq!(normalise("Thanks, that fixed it!"), "thanks that fixed it");
        assert_eq!(normalise("c++ and c#"), "c and c");
        assert_eq!(normalise("*shrug*"), "shrug");
    }

    #[test]
    fn masks_inside_words_are_kept() {
        assert_eq!(normalise("f*ck"), "f*ck");
        assert_eq!(normalise("f**k"), "f**k");
        assert_eq!(normalise("f#ck"), "f*ck");
        assert_eq!(normalise("f***"), "f");
    }

    #[test]
    fn joins_spelled_out_letters() {
        assert_eq!(normalise("s p a m"), "spam");
        assert_eq!(normalise("f.u.c.k off"), "fuck off");
        assert_eq!(normalise("f-u-c-k"), "fuck");
        assert_eq!(normalise("f_u_c_k"), "fuck");
        assert_eq!(normalise("F . U . C . K"), "fuck");
        assert_eq!(normalise("5 h 1 t"), "shit");
    }

    #[test]
    fn does_not_join_ordinary_words_or_short_runs() {
        assert_eq!(normalise("I am a cat"), "i am a cat");
        assert_eq!(normalise("e.g. this"), "e g this");
        assert_eq!(normalise("1 2 3"), "1 2 3");
        assert_eq!(normalise("a\nb\nc"), "a b c");
        assert_eq!(normalise("a     b     c"), "a b c");
    }

    #[test]
    fn spelled_out_words_have_soft_inner_boundaries() {
        let k = MatchKey::new("f u c k y o u");
        assert_eq!(k.as_str(), "fuckyou");
        assert!(k.ends_word(4) && k.starts_word(4));
        let plain = MatchKey::new("fuckyou");
        assert!(!plain.ends_word(4));
    }

    #[test]
    fn marks_runs_of_repeated_letters() {
        assert_eq!(key("fuuuuck"), "fUck");
        assert_eq!(key("ass"), "aS");
        assert_eq!(key("as"), "as");
        assert_eq!(key("class"), "claS");
        assert_eq!(normalise("fuuuuck"), "fuuck");
        assert_eq!(normalise("shhhhiiiiittttt"), "shhiitt");
    }

    #[test]
    fn apostrophes_do_not_split_words() {
        assert_eq!(normalise("don't you're"), "dont youre");
        assert_eq!(normalise("f'u'c'k"), "fuck");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for text in [
            "FÜCK y0u",
            "s p a m",
            "a$$hole!!",
            "covid19",
            "fr33",
            "fuuuuck",
            "f**k",
            "ｈｅｌｌｏ",
            "Straße",
            "1.3.5",
            "t h a n k s",
            "naïve",
        ] {
            let once = normalise(text);
            assert_eq!(normalise(&once), once, "input {text:?}");
        }
    }

    #[test]
    fn empty_and_symbol_only_text_normalise_to_nothing() {
        assert_eq!(normalise(""), "");
        assert_eq!(normalise("  \u{200b} ... !!! 🎉"), "");
    }

    #[test]
    fn arbitrary_text_never_panics_and_stays_idempotent_on_plain_words() {
        // A fixed pseudo-random walk over characters that exercise every
        // branch: separators, leet symbols, masks, digits, marks, invisibles,
        // look-alikes, wide characters.
        const ALPHABET: &[char] = &[
            'a',
            's',
            'f',
            'u',
            'c',
            'k',
            'l',
            ' ',
            '.',
            '-',
            '\n',
            '0',
            '1',
            '2',
            '5',
            '9',
            '@',
            '$',
            '!',
            '|',
            '+',
            '*',
            '#',
            '%',
            '€',
            '\'',
            '\u{301}',
            '\u{200b}',
            '\u{feff}',
            'ß',
            'İ',
            'с',
            'ｆ',
            '🎉',
            '\u{1f175}',
            '日',
            'Η',
            '\u{e0100}',
        ];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..2_000 {
            let mut text = String::new();
            for _ in 0..(state % 24) {
                state = state
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1);
                text.push(ALPHABET[(state >> 33) as usize % ALPHABET.len()]);
            }
            let key = MatchKey::new(&text);
            assert!(!key.as_str().starts_with(' ') && !key.as_str().ends_with(' '));
            assert!(!key.as_str().contains("  "), "{text:?} -> {key:?}");
            for span in &key.spelled {
                assert!(key.as_str().is_char_boundary(span.start));
                assert!(key.as_str().is_char_boundary(span.end));
            }
            let _ = normalise(&text);
        }
    }

    #[test]
    fn other_scripts_pass_through() {
        assert_eq!(normalise("日本語のテキスト"), "日本語のテキスト");
        assert_eq!(normalise("Привет"), "пpиbet");
    }
}
