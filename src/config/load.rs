//! Loading: where the file is found, the figment layers (built-in defaults < file <
//! `CONTACT_SYNC_` environment), the unknown-key check on the merged tree, and the hand-off
//! to validation.

use super::raw::{HTTP_KEYS, PROVIDER_KEYS, RawConfig, STORE_KEYS, SYNC_KEYS, TOP_KEYS, defaults};
use super::validate::validate;
use super::{
    CONFIG_ENV, ConfigError, ENV_PREFIX, LOCAL_CONFIG, Problem, SYSTEM_CONFIG, Secrets, Settings,
};
use crate::provider::{KindSettings, ProviderKind, SettingValue};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use std::path::{Path, PathBuf};

/// Finds the config file: `explicit`, else `$CONTACT_SYNC_CONFIG`, else
/// `/etc/contact-sync/config.toml`, else `./contact-sync.toml` (as README.md says).
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(ConfigError::single(
                Some(path.to_owned()),
                "",
                format!(
                    "config file {} does not exist or is not a file; pass an existing file to --config",
                    path.display()
                ),
            ))
        };
    }
    if let Some(env) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        let path = PathBuf::from(env);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(ConfigError::single(
                Some(path.clone()),
                "",
                format!(
                    "${CONFIG_ENV} points at {}, which does not exist; fix or unset it",
                    path.display()
                ),
            ))
        };
    }
    for candidate in [SYSTEM_CONFIG, LOCAL_CONFIG] {
        let path = PathBuf::from(candidate);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(ConfigError::single(
        None,
        "",
        format!(
            "no config file found (looked for --config, ${CONFIG_ENV}, {SYSTEM_CONFIG}, ./{LOCAL_CONFIG}); \
             copy config/example.toml and pass it with --config, or try `contact-sync demo`"
        ),
    ))
}

/// Loads and validates the config at `path` with environment overrides.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    load_with(path, Secrets::Load)
}

/// Loads and validates the config at `path`, reading secrets or not.
pub fn load_with(path: &Path, secrets: Secrets) -> Result<Settings, ConfigError> {
    let figment = Figment::from(Serialized::defaults(defaults()))
        .merge(Toml::file_exact(path))
        .merge(
            Env::prefixed(ENV_PREFIX)
                .ignore(&["CONFIG", "LOG"])
                .split("__"),
        );
    from_figment(&figment, Some(path.to_owned()), secrets)
}

/// Loads and validates a config from TOML text (no environment), for tests and the demo.
pub fn from_toml_str(text: &str) -> Result<Settings, ConfigError> {
    let figment = Figment::from(Serialized::defaults(defaults())).merge(Toml::string(text));
    from_figment(&figment, None, Secrets::Load)
}

fn from_figment(
    figment: &Figment,
    source: Option<PathBuf>,
    secrets: Secrets,
) -> Result<Settings, ConfigError> {
    let tree: Dict = figment
        .extract()
        .map_err(|e| figment_error(&e, source.clone()))?;
    let mut problems = unknown_keys(&tree);
    if !problems.is_empty() {
        return Err(ConfigError { source, problems });
    }
    let raw: RawConfig = figment
        .extract()
        .map_err(|e| figment_error(&e, source.clone()))?;
    let settings = validate(
        raw,
        &kind_tables(&tree),
        source.clone(),
        secrets,
        &mut problems,
    );
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(ConfigError { source, problems })
    }
}

fn figment_error(err: &figment::Error, source: Option<PathBuf>) -> ConfigError {
    let problems = err
        .clone()
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            Problem {
                key,
                message: format!("{}{origin}", e.kind),
            }
        })
        .collect();
    ConfigError { source, problems }
}

fn suggest(unknown: &str, known: &[&str]) -> String {
    let best = known
        .iter()
        .map(|k| (strsim::jaro_winkler(unknown, k), *k))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((_, k)) => format!("unknown key `{unknown}`, did you mean `{k}`?"),
        None => format!(
            "unknown key `{unknown}`; known keys here: {}",
            known.join(", ")
        ),
    }
}

fn check_dict(dict: &Dict, prefix: &str, known: &[&str], problems: &mut Vec<Problem>) {
    for key in dict.keys() {
        if !known.contains(&key.as_str()) {
            problems.push(Problem {
                key: format!("{prefix}{key}"),
                message: suggest(key, known),
            });
        }
    }
}

fn unknown_keys(tree: &Dict) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_dict(tree, "", TOP_KEYS, &mut problems);
    for (section, known) in [
        ("store", STORE_KEYS),
        ("sync", SYNC_KEYS),
        ("http", HTTP_KEYS),
    ] {
        if let Some(Value::Dict(_, dict)) = tree.get(section) {
            check_dict(dict, &format!("{section}."), known, &mut problems);
        }
    }
    for (i, dict) in provider_tables(tree).into_iter().enumerate() {
        let label = match dict.get("name") {
            Some(Value::String(_, n)) => n.clone(),
            _ => i.to_string(),
        };
        let prefix = format!("providers[{label}].");
        let kind = match dict.get("kind") {
            Some(Value::String(_, k)) => ProviderKind::parse(k),
            _ => None,
        };
        let Some(kind) = kind else {
            // The kind is reported by validation; accept any kind's keys meanwhile.
            let known: Vec<&str> = PROVIDER_KEYS
                .iter()
                .chain(ProviderKind::ALL.iter().flat_map(|k| k.kind_keys()))
                .copied()
                .collect();
            check_dict(dict, &prefix, &known, &mut problems);
            continue;
        };
        let known: Vec<&str> = PROVIDER_KEYS
            .iter()
            .chain(kind.kind_keys())
            .copied()
            .collect();
        for key in dict.keys().filter(|k| !known.contains(&k.as_str())) {
            let owners: Vec<&str> = ProviderKind::ALL
                .into_iter()
                .filter(|k| k.kind_keys().contains(&key.as_str()))
                .map(ProviderKind::as_str)
                .collect();
            problems.push(Problem {
                key: format!("{prefix}{key}"),
                message: if owners.is_empty() {
                    suggest(key, &known)
                } else {
                    format!(
                        "`{key}` is a setting of {} providers, not of {kind}; remove it",
                        owners.join(" and ")
                    )
                },
            });
        }
    }
    problems
}

/// The `[[providers]]` tables of the merged config tree (non-tables are left to
/// deserialisation to report).
fn provider_tables(tree: &Dict) -> Vec<&Dict> {
    match tree.get("providers") {
        Some(Value::Array(_, providers)) => providers
            .iter()
            .filter_map(|p| match p {
                Value::Dict(_, dict) => Some(dict),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The keys of each provider table that are not common keys: the kind-specific ones
/// (unknown keys are refused before this is read), in provider order.
fn kind_tables(tree: &Dict) -> Vec<KindSettings> {
    provider_tables(tree)
        .into_iter()
        .map(|dict| {
            dict.iter()
                .filter(|(k, _)| !PROVIDER_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), setting_value(v)))
                .collect()
        })
        .collect()
}

/// A config value as the adapters see it.
fn setting_value(value: &Value) -> SettingValue {
    match value {
        Value::String(_, s) => SettingValue::Text(s.clone()),
        Value::Char(_, c) => SettingValue::Text(c.to_string()),
        Value::Bool(_, b) => SettingValue::Bool(*b),
        Value::Num(_, n) => {
            if let Some(i) = n.to_i128() {
                i64::try_from(i)
                    .map_or_else(|_| SettingValue::Text(i.to_string()), SettingValue::Integer)
            } else if let Some(u) = n.to_u128() {
                i64::try_from(u)
                    .map_or_else(|_| SettingValue::Text(u.to_string()), SettingValue::Integer)
            } else {
                SettingValue::Float(n.to_f64().unwrap_or(f64::NAN))
            }
        }
        Value::Empty(..) => SettingValue::Text(String::new()),
        Value::Dict(..) => SettingValue::Other("a table".to_owned()),
        Value::Array(..) => SettingValue::Other("an array".to_owned()),
    }
}
