//! Configuration errors, placed at the file, line and key they concern.
//!
//! Positions come from the `toml` crate: the byte span of a value ([`toml::Spanned`]) or of
//! a parse error ([`toml::de::Error::span`]); the key of a type error comes from the path
//! serde was deserializing ([`serde_path_to_error`]).

use std::ops::Range;

use serde_path_to_error::Segment;
use toml_edit::{ImDocument, Item, Key, Table};

/// A configuration that failed to load: says where and what.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config error: {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config error: {file} line {line}: {key}: {message}")]
    AtLine {
        file: String,
        line: usize,
        key: String,
        message: String,
    },
    #[error("config error: environment {variable}: {key}: {message}")]
    Environment {
        variable: String,
        key: String,
        message: String,
    },
    #[error("config error: {file}: {key}: {message}")]
    Key {
        file: String,
        key: String,
        message: String,
    },
}

/// The key named when a syntax error is outside any key (e.g. a broken table header).
const TOP_LEVEL: &str = "(top level)";

/// The path segments serde walks through inside a [`toml::Spanned`] value.
const SPANNED_FIELD_PREFIX: &str = "$__serde_spanned_private";

impl ConfigError {
    /// `message` about the value of `key` at `span` of `text`.
    pub(super) fn at(
        file: &str,
        text: &str,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::AtLine {
            file: file.to_owned(),
            line: line_number(text, span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// `message` about `key` as a whole (e.g. a required key that is missing).
    pub(super) fn key(file: &str, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Key {
            file: file.to_owned(),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// A TOML syntax error or a value of the wrong type, from the toml crate.
    pub(super) fn from_toml(
        file: &str,
        text: &str,
        error: &serde_path_to_error::Error<toml::de::Error>,
    ) -> ConfigError {
        let inner = error.inner();
        // toml's messages may run over several lines ("invalid table header\nexpected …").
        let message = inner
            .message()
            .trim()
            .lines()
            .collect::<Vec<_>>()
            .join("; ");
        let typed_key = key_of_path(error.path());
        let Some(span) = inner.span() else {
            return ConfigError::key(file, typed_key.as_deref().unwrap_or(TOP_LEVEL), message);
        };
        // A type error carries the path of the key; a syntax error (the document did not
        // parse) has none, so its key is read from the lines that did.
        let key = typed_key
            .or_else(|| key_of_syntax_error(text, span.start))
            .unwrap_or_else(|| TOP_LEVEL.to_owned());
        ConfigError::at(file, text, span, &key, message)
    }
}

/// The 1-based line of byte `offset` in `text`.
pub(super) fn line_number(text: &str, offset: usize) -> usize {
    let before = text.get(..offset).unwrap_or(text);
    before.matches('\n').count() + 1
}

/// The dotted key of a serde path (`server.listen[1]` → `server.listen`), or None at the
/// top level.
fn key_of_path(path: &serde_path_to_error::Path) -> Option<String> {
    let names: Vec<&str> = path
        .iter()
        .filter_map(|segment| match segment {
            Segment::Map { key } if !key.starts_with(SPANNED_FIELD_PREFIX) => Some(key.as_str()),
            _ => None,
        })
        .collect();
    (!names.is_empty()).then(|| names.join("."))
}

/// The key a syntax error at `offset` belongs to: the dotted key written on the statement
/// it happened in, inside the last table header before it. The statement is found as the
/// nearest line start before `offset` where the text up to it parses as a document (a
/// multi-line array starts earlier than the line of the error).
fn key_of_syntax_error(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_starts = before
        .match_indices('\n')
        .map(|(index, _)| index + 1)
        .rev()
        .chain(std::iter::once(0));
    for start in line_starts {
        let Ok(document) = ImDocument::parse(text.get(..start)?) else {
            continue;
        };
        let mut path = current_table(document.as_table());
        let statement = text.get(start..)?.lines().next().unwrap_or_default();
        if let Some((written_key, _)) = statement.split_once('=') {
            if let Ok(keys) = Key::parse(written_key.trim()) {
                path.extend(keys.iter().map(|key| key.get().to_owned()));
            }
        }
        return (!path.is_empty()).then(|| path.join("."));
    }
    None
}

/// The path of the table whose header comes last in the document (the one a following
/// `key = value` belongs to); empty for the top level.
fn current_table(root: &Table) -> Vec<String> {
    fn visit(table: &Table, path: &mut Vec<String>, best: &mut (usize, Vec<String>)) {
        for (name, item) in table.iter() {
            let tables: Vec<&Table> = match item {
                Item::Table(table) => vec![table],
                Item::ArrayOfTables(array) => array.iter().collect(),
                _ => Vec::new(),
            };
            for child in tables {
                path.push(name.to_owned());
                if let Some(span) = child.span() {
                    if span.start >= best.0 {
                        *best = (span.start, path.clone());
                    }
                }
                visit(child, path, best);
                path.pop();
            }
        }
    }
    let mut best = (0, Vec::new());
    visit(root, &mut Vec::new(), &mut best);
    best.1
}
