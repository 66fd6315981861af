//! Where each setting comes from: a flag, else its `SWITCHBOARD_*`
//! environment variable, else its key in the TOML file named by `--config`,
//! else its default.
//!
//! clap already merges flags, environment and defaults; the file is folded in
//! by handing its keys to clap as flags, only for the settings that neither a
//! flag nor the environment gave. So every value, wherever it comes from, goes
//! through the one parser of its flag, and an unknown key or a bad value is an
//! error that names the file and the key.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command, CommandFactory, FromArgMatches};
use thiserror::Error;

/// The clap id of `--config`, which names the file and is no key in it.
const CONFIG_ID: &str = "config";

/// A command line, environment or configuration file that cannot be used.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A bad flag, a bad environment variable, `--help` or `--version`:
    /// clap's own message and exit status (`clap::Error::exit`).
    #[error(transparent)]
    Usage(#[from] clap::Error),
    #[error("cannot read the configuration file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path} is not valid TOML: {message}")]
    Toml { path: String, message: String },
    #[error("{path}: unknown key `{key}`{hint}")]
    UnknownKey { path: String, key: String, hint: String },
    #[error("{path}: bad value for `{key}`: {message}")]
    BadValue { path: String, key: String, message: String },
}

/// Where a setting's value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Flag,
    /// The environment variable of that name.
    Env(String),
    /// The configuration file at that path.
    File(String),
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::File(path) => write!(f, "file {path}"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One effective setting: its key (the flag's long name), its value as TOML
/// (`None` when unset), and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub key: String,
    pub value: Option<String>,
    pub source: Source,
}

/// Every setting of a node, in the order of `--help`.
#[derive(Clone, Debug, Default)]
pub struct Settings(pub Vec<Setting>);

impl Settings {
    pub fn get(&self, key: &str) -> Option<&Setting> {
        self.0.iter().find(|s| s.key == key)
    }
}

/// The settings as a TOML file a node could be given (`--config`), each line
/// commented with where its value came from.
impl fmt::Display for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self.0.iter().filter_map(|s| s.value.as_ref().map(|v| s.key.len() + v.len())).max().unwrap_or(0);
        for s in &self.0 {
            match &s.value {
                Some(v) => writeln!(f, "{:<width$}  # {}", format!("{} = {v}", s.key), s.source, width = width + 3)?,
                None => writeln!(f, "# {} is not set ({})", s.key, s.source)?,
            }
        }
        Ok(())
    }
}

/// Parses `args` (the program name first) into `T`, with the environment and
/// the `--config` file folded in, and says where each setting came from.
///
/// # Errors
/// [`LoadError::Usage`] for what clap refuses; the other variants for a file
/// that cannot be read, is not TOML, or holds an unknown key or a bad value.
pub fn load<T: CommandFactory + FromArgMatches>(
    args: impl IntoIterator<Item = impl Into<OsString>>,
) -> Result<(T, Settings), LoadError> {
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = T::command();
    let given = command.clone().try_get_matches_from(&args)?;
    let (from_file, path) = match given.get_one::<PathBuf>(CONFIG_ID) {
        Some(path) => (file_flags(&command, &given, path)?, Some(path.display().to_string())),
        None => (Vec::new(), None),
    };
    let mut merged = Vec::with_capacity(args.len() + from_file.len());
    merged.extend(args.first().cloned());
    merged.extend(from_file.iter().map(|(_, flag)| flag.clone()));
    merged.extend(args.iter().skip(1).cloned());
    let matches = command.clone().try_get_matches_from(&merged)?;
    let settings = settings(&command, &matches, &from_file, path.as_deref());
    Ok((T::from_arg_matches(&matches)?, settings))
}

/// The settings a node takes: every visible flag but `--config`, `--help`
/// and `--version`.
fn keys(command: &Command) -> impl Iterator<Item = (&str, &Arg)> {
    command.get_arguments().filter(|a| !a.is_hide_set() && a.get_id() != CONFIG_ID).filter_map(|a| {
        let long = a.get_long()?;
        (long != "help" && long != "version").then_some((long, a))
    })
}

/// Reads the file and turns each key that no flag or environment variable
/// set into a flag: `(key, "--key=value")`.
fn file_flags(command: &Command, given: &ArgMatches, path: &Path) -> Result<Vec<(String, OsString)>, LoadError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read { path: shown.clone(), source })?;
    let table: toml::Table =
        toml::from_str(&text).map_err(|e| LoadError::Toml { path: shown.clone(), message: e.to_string() })?;
    let mut flags = Vec::new();
    for (key, value) in table {
        let bad = |message: String| LoadError::BadValue { path: shown.clone(), key: key.clone(), message };
        let Some((_, arg)) = keys(command).find(|(long, _)| *long == key) else {
            return Err(LoadError::UnknownKey { path: shown.clone(), hint: hint(command, &key), key });
        };
        let flag = match (arg.get_action().takes_values(), value) {
            (false, toml::Value::Boolean(false)) => continue,
            (false, toml::Value::Boolean(true)) => format!("--{key}"),
            (false, _) => return Err(bad("expects true or false".into())),
            (true, toml::Value::String(s)) => format!("--{key}={s}"),
            (true, v @ (toml::Value::Integer(_) | toml::Value::Float(_) | toml::Value::Boolean(_))) => {
                format!("--{key}={v}")
            }
            (true, _) => return Err(bad("expects a single string or number".into())),
        };
        // Parsed alone first, so that a bad value is blamed on the file's key
        // (even one that a flag or the environment overrides).
        if let Err(e) = command.clone().try_get_matches_from(["switchboard", flag.as_str()]) {
            return Err(bad(first_line(&e)));
        }
        let overridden = matches!(
            given.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !overridden {
            flags.push((key, flag.into()));
        }
    }
    Ok(flags)
}

/// A suggestion for a mistyped key.
fn hint(command: &Command, key: &str) -> String {
    let dashed = key.replace('_', "-");
    match keys(command).find(|(long, _)| *long == dashed) {
        Some((long, _)) => format!(" (did you mean `{long}`?)"),
        None if key == CONFIG_ID => " (a configuration file cannot name another)".into(),
        None => " (keys are the flags' long names, as `switchboard --help` lists them)".into(),
    }
}

/// clap's message without its "error: " prefix and usage tip.
fn first_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

fn settings(command: &Command, matches: &ArgMatches, from_file: &[(String, OsString)], path: Option<&str>) -> Settings {
    let settings = keys(command).map(|(long, arg)| {
        let id = arg.get_id().as_str();
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) if from_file.iter().any(|(k, _)| k == long) => {
                Source::File(path.unwrap_or_default().to_string())
            }
            Some(ValueSource::CommandLine) => Source::Flag,
            Some(ValueSource::EnvVariable) => {
                Source::Env(arg.get_env().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default())
            }
            _ => Source::Default,
        };
        let value = if arg.get_action().takes_values() {
            matches.get_raw(id).map(|raw| {
                let raw: Vec<String> = raw.map(|v| v.to_string_lossy().into_owned()).collect();
                as_toml(&raw.join(","))
            })
        } else {
            Some(matches.get_one::<bool>(id).copied().unwrap_or(false).to_string())
        };
        Setting { key: long.to_string(), value, source }
    });
    Settings(settings.collect())
}

/// A value as TOML: whole numbers bare, anything else a quoted string.
fn as_toml(raw: &str) -> String {
    let number = raw == "0" || (!raw.starts_with('0') && raw.parse::<i64>().is_ok_and(|n| n > 0));
    if number {
        raw.to_string()
    } else {
        toml::Value::String(raw.to_string()).to_string()
    }
}
