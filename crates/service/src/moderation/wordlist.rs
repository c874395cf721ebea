//! Word lists: the terms to flag and the exceptions, loaded from `*.txt` files.
//!
//! Lists are plain text so that moderators can change them without a
//! release: one term per line, `#` starts a comment line, blank lines are
//! ignored. Each term is normalised with the same function as message text,
//! so `FUCK`, `fück` and `f.u.c.k` in a list are one term, and duplicates
//! across files collapse into one entry.
//!
//! Markers on a term:
//!
//! - `*term`: match inside words too (`*fuck` flags `motherfucking`);
//! - `term*`: match at the start of a word (`bitch*` flags `bitchy`);
//! - `!phrase`: an exception; text matching it is never flagged (`!moby dick`).
//!
//! Without a marker a term only matches whole words, which is what keeps
//! `ass` from flagging `class` and `cunt` from flagging `Scunthorpe`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::normalise::MatchKey;

/// Why the moderation word lists could not be loaded or compiled.
///
/// Every variant names the input at fault (directory, file and line, or the
/// position of the term), so a bad deployment fails at start-up with a
/// message that says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ModerationError {
    /// The word-list directory could not be listed.
    #[error("cannot list moderation word lists in {}: {source}", dir.display())]
    ListDir {
        /// The directory given (`worker.moderation_dir`).
        dir: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The directory has no `*.txt` file: almost certainly a wrong path, and
    /// starting with moderation silently off would hide it.
    #[error("no moderation word lists (*.txt) in {}", dir.display())]
    NoWordLists {
        /// The directory searched.
        dir: PathBuf,
    },
    /// A word-list file could not be read.
    #[error("cannot read moderation word list {}: {source}", path.display())]
    ReadFile {
        /// The file that could not be read.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A line of a word-list file is not UTF-8.
    #[error("{}:{line}: moderation word list line is not valid UTF-8", path.display())]
    NotUtf8 {
        /// The word-list file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },
    /// A term in a file normalises to nothing (only punctuation, emoji or
    /// markers), so it could never match or would match everything.
    #[error("{}:{line}: moderation term {term:?} normalises to nothing", path.display())]
    EmptyTermInFile {
        /// The word-list file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The term as written, markers included.
        term: String,
    },
    /// A term given to `Moderator::from_terms` normalises to nothing.
    #[error("moderation term #{index} ({term:?}) normalises to nothing")]
    EmptyTerm {
        /// Its position among the terms given, from 0.
        index: usize,
        /// The term as given.
        term: String,
    },
    /// The Aho-Corasick automaton could not be built (for example, the lists
    /// are too large for its limits).
    #[error("cannot build the moderation automaton: {0}")]
    Automaton(#[from] aho_corasick::BuildError),
}

/// What a match of an entry does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Flag the message and report the term.
    Flag,
    /// Exception: the matched text is not flagged.
    Allow,
}

/// Which sides of a match may touch the inside of a word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Anchors {
    /// The match may start inside a word.
    pub(crate) inside_left: bool,
    /// The match may end inside a word.
    pub(crate) inside_right: bool,
}

/// One normalised entry of the word lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    /// The term as the matcher sees it (see [`MatchKey`]).
    pub(crate) key: String,
    /// The readable normalised term, reported in verdicts.
    pub(crate) name: String,
    pub(crate) action: Action,
    pub(crate) anchors: Anchors,
}

/// Parses one term with its markers; `None` if it normalises to nothing.
pub(crate) fn parse_term(raw: &str) -> Option<Entry> {
    let mut body = raw.trim();
    let action = match body.strip_prefix('!') {
        Some(rest) => {
            body = rest.trim_start();
            Action::Allow
        }
        None => Action::Flag,
    };
    let mut anchors = Anchors::default();
    if let Some(rest) = body.strip_prefix('*') {
        anchors.inside_left = true;
        anchors.inside_right = true;
        body = rest;
    }
    if let Some(rest) = body.strip_suffix('*') {
        anchors.inside_right = true;
        body = rest;
    }
    let key = MatchKey::new(body);
    if key.is_empty() {
        return None;
    }
    Some(Entry {
        name: key.readable(),
        key: key.as_str().to_owned(),
        action,
        anchors,
    })
}

/// Parses terms given in code; each item uses the line syntax without comments.
pub(crate) fn parse_terms<I, S>(terms: I) -> Result<Vec<Entry>, ModerationError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut list = EntryList::default();
    for (index, term) in terms.into_iter().enumerate() {
        let raw = term.as_ref();
        let entry = parse_term(raw).ok_or_else(|| ModerationError::EmptyTerm {
            index,
            term: raw.to_owned(),
        })?;
        list.add(entry);
    }
    Ok(list.entries)
}

/// Loads every `*.txt` file in `dir`, in file-name order.
pub(crate) fn load_dir(dir: &Path) -> Result<Vec<Entry>, ModerationError> {
    let list_dir = |source| ModerationError::ListDir {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for dir_entry in fs::read_dir(dir).map_err(list_dir)? {
        let path = dir_entry.map_err(list_dir)?.path();
        let is_txt = path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("txt"));
        if is_txt && path.is_file() {
            files.push(path);
        }
    }
    if files.is_empty() {
        return Err(ModerationError::NoWordLists {
            dir: dir.to_owned(),
        });
    }
    files.sort();
    let mut list = EntryList::default();
    for path in files {
        let bytes = fs::read(&path).map_err(|source| ModerationError::ReadFile {
            path: path.clone(),
            source,
        })?;
        for entry in parse_file(&path, &bytes)? {
            list.add(entry);
        }
    }
    Ok(list.entries)
}

/// Parses the contents of one word-list file; `path` is used in errors.
pub(crate) fn parse_file(path: &Path, bytes: &[u8]) -> Result<Vec<Entry>, ModerationError> {
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let mut entries = Vec::new();
    for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let line_no = index + 1;
        let line = std::str::from_utf8(line).map_err(|_| ModerationError::NotUtf8 {
            path: path.to_owned(),
            line: line_no,
        })?;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let entry = parse_term(trimmed).ok_or_else(|| ModerationError::EmptyTermInFile {
            path: path.to_owned(),
            line: line_no,
            term: trimmed.to_owned(),
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

/// Entries without duplicates, in order of first appearance.
#[derive(Default)]
struct EntryList {
    entries: Vec<Entry>,
}

impl EntryList {
    /// Adds `entry` unless the same term with the same action is there; then
    /// the existing entry takes the looser anchoring of the two.
    fn add(&mut self, entry: Entry) {
        let existing = self
            .entries
            .iter_mut()
            .find(|e| e.action == entry.action && e.key == entry.key);
        match existing {
            Some(e) => {
                e.anchors.inside_left |= entry.anchors.inside_left;
                e.anchors.inside_right |= entry.anchors.inside_right;
            }
            None => self.entries.push(entry),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Entry>, ModerationError> {
        parse_file(Path::new("lists/test.txt"), text.as_bytes())
    }

    #[test]
    fn skips_comments_and_blank_lines() {
        let entries = parse("# a comment\n\n   \nfuck\n  # indented comment\r\nspam\r\n").unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["fuck", "spam"]);
    }

    #[test]
    fn normalises_terms_like_text() {
        let entries = parse("FÜCK\nSh1t\nbuy   now\n").unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["fuck", "shit", "buy now"]);
        assert_eq!(entries[0].key, "fuck");
        assert_eq!(parse("ass").unwrap()[0].key, "aS");
    }

    #[test]
    fn reads_markers() {
        let entries = parse("*fuck\nbitch*\n!moby dick\nplain\n").unwrap();
        assert_eq!(
            entries[0].anchors,
            Anchors {
                inside_left: true,
                inside_right: true
            }
        );
        assert_eq!(
            entries[1].anchors,
            Anchors {
                inside_left: false,
                inside_right: true
            }
        );
        assert_eq!(entries[2].action, Action::Allow);
        assert_eq!(entries[2].name, "moby dick");
        assert_eq!(entries[3].anchors, Anchors::default());
        assert_eq!(entries[3].action, Action::Flag);
    }

    #[test]
    fn a_term_that_normalises_to_nothing_names_file_and_line() {
        let err = parse("fuck\n# fine\n***\n").unwrap_err();
        match &err {
            ModerationError::EmptyTermInFile { path, line, term } => {
                assert_eq!(path, Path::new("lists/test.txt"));
                assert_eq!(*line, 3);
                assert_eq!(term, "***");
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert_eq!(
            err.to_string(),
            "lists/test.txt:3: moderation term \"***\" normalises to nothing"
        );
        assert!(matches!(
            parse("ok\n!\n"),
            Err(ModerationError::EmptyTermInFile { line: 2, .. })
        ));
        assert!(matches!(
            parse("🎉🎉\n"),
            Err(ModerationError::EmptyTermInFile { line: 1, .. })
        ));
    }

    #[test]
    fn invalid_utf8_names_file_and_line() {
        let err = parse_file(Path::new("bad.txt"), b"fine\nbad \xff byte\n").unwrap_err();
        assert!(matches!(err, ModerationError::NotUtf8 { line: 2, .. }));
        assert_eq!(
            err.to_string(),
            "bad.txt:2: moderation word list line is not valid UTF-8"
        );
    }

    #[test]
    fn a_byte_order_mark_does_not_hide_a_comment() {
        let entries = parse("\u{feff}# comment\nspam\n").unwrap();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn duplicates_collapse_and_keep_the_looser_anchors() {
        let entries = parse_terms(["fuck", "FUCK", "f.u.c.k", "*fuck", "!fuck"]).unwrap();
        assert_eq!(entries.len(), 2);
        assert!(entries[0].anchors.inside_left && entries[0].anchors.inside_right);
        assert_eq!(entries[1].action, Action::Allow);
    }

    #[test]
    fn parse_terms_names_the_position_of_an_empty_term() {
        let err = parse_terms(["spam", "  ", "ok"]).unwrap_err();
        assert!(matches!(err, ModerationError::EmptyTerm { index: 1, .. }));
    }

    #[test]
    fn load_dir_reads_txt_files_in_name_order() {
        let dir = scratch_dir("load");
        fs::write(dir.join("b.txt"), "shit\nspam\n").unwrap();
        fs::write(dir.join("a.txt"), "# first\nspam\n").unwrap();
        fs::write(dir.join("notes.md"), "not a list\n").unwrap();
        let entries = load_dir(&dir).unwrap();
        let names: Vec<_> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["spam", "shit"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_dir_reports_missing_and_empty_directories() {
        let missing = std::env::temp_dir().join("moderation-no-such-dir-7f3a");
        assert!(matches!(
            load_dir(&missing),
            Err(ModerationError::ListDir { .. })
        ));
        let dir = scratch_dir("empty");
        assert!(matches!(
            load_dir(&dir),
            Err(ModerationError::NoWordLists { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn load_dir_names_the_file_with_a_bad_term() {
        let dir = scratch_dir("bad-term");
        fs::write(dir.join("ok.txt"), "spam\n").unwrap();
        fs::write(dir.join("broken.txt"), "fine\n\n---\n").unwrap();
        let err = load_dir(&dir).unwrap_err();
        match err {
            ModerationError::EmptyTermInFile { path, line, .. } => {
                assert_eq!(path, dir.join("broken.txt"));
                assert_eq!(line, 3);
            }
            other => panic!("unexpected error {other:?}"),
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("moderation-wordlist-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }
}
