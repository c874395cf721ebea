//! Keyword moderation: flags messages that contain listed terms, however they
//! are disguised.
//!
//! # Why
//!
//! Every stored message carries `flagged` and `flagged_terms` so analysts can
//! measure and find abuse per bot without calling anything external. The NLP
//! API's toxicity score is a second opinion that may be missing (circuit
//! open, timeouts); this stage is pure, fast and always available, so it runs
//! on every message in the worker's hot path.
//!
//! # What
//!
//! - [`normalise()`] undoes the usual disguises: Unicode compatibility forms
//!   (`ｆｕｃｋ`), accents (`fück`), invisible characters, case, look-alike
//!   letters, leetspeak (`sh1t`, `a$$`), masks (`f*ck`), repeated letters
//!   (`fuuuck`) and spelled-out words (`f.u.c.k`, `s p a m`).
//! - [`Moderator`] compiles the word lists into one Aho-Corasick automaton at
//!   start-up and matches normalised text against it on word boundaries, so
//!   `class`, `Scunthorpe` and `cocktail` stay clean. Terms can opt into
//!   matching inside words, and exceptions (`!moby dick`) override terms.
//! - Word lists are `*.txt` files (default: `config/moderation/`), read by the
//!   `wordlist` module; the format is described there and at the top of
//!   `config/moderation/profanity.txt`.
//!
//! A keyword list cannot read intent: it misses abuse written without listed
//! words and words split into ordinary-looking pieces (`sh it`), and it
//! flags quoted or reclaimed use. The evaluation test measures recall and
//! false positives on a labelled set of evasions.
//!
//! # Layout
//!
//! - `normalise.rs`: text → matching form ([`normalise()`], `MatchKey`);
//! - `wordlist.rs`: list files → normalised, de-duplicated entries;
//!   [`ModerationError`];
//! - `matcher.rs`: entries → automaton; [`Moderator`], [`Verdict`].

mod matcher;
mod normalise;
mod wordlist;

#[cfg(test)]
mod evaluation_tests;

pub use matcher::{Moderator, Verdict};
pub use normalise::normalise;
pub use wordlist::ModerationError;
