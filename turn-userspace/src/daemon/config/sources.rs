//! Where values come from, in rising precedence: the file, the environment
//! (`TURN_RELAY_<SECTION>_<KEY>`), the command line. Each value remembers its [`Origin`]
//! so errors name it (file and line, variable, or option) and `--print-config` shows it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use toml_edit::ImDocument;

use super::keys::{self, Key, ENV_PREFIX, KEYS};

/// What an ignored variable is told about.
pub(super) fn ignored_variable_note(variable: &str) -> String {
    format!(
        "environment variable {variable} names no configuration key ({ENV_PREFIX}<SECTION>_<KEY>, e.g. {}); ignored",
        KEYS.first().map(Key::environment_variable).unwrap_or_default()
    )
}
use super::schema::RawConfig;
use super::ConfigError;

/// Where one value came from (absent from [`Origins`]: the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File { file: String, line: usize },
    Environment { variable: String },
    CommandLine { option: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { file, line } => write!(f, "{file} line {line}"),
            Origin::Environment { variable } => write!(f, "environment {variable}"),
            Origin::CommandLine { option } => write!(f, "command line {option}"),
        }
    }
}

impl Origin {
    /// `message` about the value of `key` that came from here (a file value is placed by
    /// its own span instead, see `Validator::at`).
    pub(super) fn error(&self, key: &str, message: impl Into<String>) -> ConfigError {
        match self {
            Origin::File { file, line } => ConfigError::AtLine {
                file: file.clone(),
                line: *line,
                key: key.to_owned(),
                message: message.into(),
            },
            Origin::Environment { variable } => ConfigError::Environment {
                variable: variable.clone(),
                key: key.to_owned(),
                message: message.into(),
            },
            Origin::CommandLine { option } => ConfigError::key(option, key, message),
        }
    }
}

/// The origin of every key that is not at its default, by dotted key.
pub type Origins = BTreeMap<String, Origin>;

/// One command-line option that sets a key, its value written as an environment variable
/// would be (lists comma-separated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandLineValue {
    pub option: String,
    pub key: String,
    pub value: String,
}

/// The inputs of a configuration, kept so a reload reads them again the same way.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    /// The TOML file (`--config`).
    pub file: Option<PathBuf>,
    /// The `TURN_RELAY_*` environment variables.
    pub environment: Vec<(String, String)>,
    pub command_line: Vec<CommandLineValue>,
}

impl Sources {
    /// `file` with this process's `TURN_RELAY_*` environment variables.
    pub fn from_process(file: Option<PathBuf>) -> Sources {
        Sources {
            file,
            environment: std::env::vars()
                .filter(|(name, _)| name.starts_with(ENV_PREFIX))
                .collect(),
            command_line: Vec::new(),
        }
    }

    /// Sets `key` to `value` from command-line `option` (wins over file and environment).
    pub fn set(&mut self, option: &str, key: &str, value: impl Into<String>) {
        self.command_line.push(CommandLineValue {
            option: option.to_owned(),
            key: key.to_owned(),
            value: value.into(),
        });
    }

    /// The environment's and then the command line's values, each as a one-key layer, and
    /// the `TURN_RELAY_*` variables that name no key. Those are ignored, not refused:
    /// orchestrators add variables of their own with the same prefix (Kubernetes does
    /// for a Service called `turn-relay`: `TURN_RELAY_SERVICE_HOST`, `TURN_RELAY_PORT`).
    pub(super) fn overrides(&self) -> Result<(Vec<Override>, Vec<String>), ConfigError> {
        let mut overrides = Vec::new();
        let mut ignored = Vec::new();
        for (variable, text) in &self.environment {
            let Some(key) = keys::by_environment_variable(variable) else {
                ignored.push(variable.clone());
                continue;
            };
            let origin = Origin::Environment {
                variable: variable.clone(),
            };
            overrides.push(Override::new(key, text, origin)?);
        }
        for value in &self.command_line {
            let origin = Origin::CommandLine {
                option: value.option.clone(),
            };
            let key = keys::find(&value.key)
                .ok_or_else(|| origin.error(&value.key, "not a configuration key"))?;
            overrides.push(Override::new(key, &value.value, origin)?);
        }
        Ok((overrides, ignored))
    }
}

/// One key's value from the environment or the command line, parsed as the file's schema.
pub(super) struct Override {
    pub(super) key: &'static Key,
    pub(super) origin: Origin,
    pub(super) layer: RawConfig,
}

impl Override {
    fn new(key: &'static Key, text: &str, origin: Origin) -> Result<Override, ConfigError> {
        let dotted = key.dotted();
        let value = keys::value_of_text(key.kind, text).map_err(|m| origin.error(&dotted, m))?;
        let mut section = toml::Table::new();
        section.insert(key.name.to_owned(), value);
        let mut document = toml::Table::new();
        document.insert(key.section.to_owned(), toml::Value::Table(section));
        let layer = RawConfig::from_toml(&document.to_string()).map_err(|error| {
            origin.error(&dotted, error.inner().message().trim().replace('\n', "; "))
        })?;
        Ok(Override { key, origin, layer })
    }
}

/// The line of every key written in the file `text` (already known to parse).
pub(super) fn file_origins(text: &str, file: &str) -> Origins {
    let Ok(document) = ImDocument::parse(text) else {
        return Origins::new();
    };
    let mut origins = Origins::new();
    for key in KEYS {
        let written = document
            .get(key.section)
            .and_then(|section| section.as_table_like())
            .and_then(|section| section.get_key_value(key.name));
        if let Some((name, _)) = written {
            let offset = name.span().map_or(0, |span| span.start);
            origins.insert(
                key.dotted(),
                Origin::File {
                    file: file.to_owned(),
                    line: super::error::line_number(text, offset),
                },
            );
        }
    }
    origins
}
