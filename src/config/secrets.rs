//! The API key of a provider: from `api_key_env` (an environment variable),
//! `api_key_file` (a file; a relative name is looked up in systemd's
//! `$CREDENTIALS_DIRECTORY` first) or a literal `api_key` (accepted, with a warning).
//! A key is never put in a message. The webhook signing secret
//! (`webhook_secret_env` / `webhook_secret_file`) follows the same rules.

use super::Problem;
use super::raw::RawProvider;
use secrecy::SecretString;
use std::path::{Path, PathBuf};

/// Reads the key of provider `p`; `key` turns a key name into its dotted path.
pub(super) fn load_secret(
    p: &RawProvider,
    key: &dyn Fn(&str) -> String,
    warnings: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) -> Option<SecretString> {
    let sources = [
        p.api_key_env.is_some(),
        p.api_key_file.is_some(),
        p.api_key.is_some(),
    ]
    .iter()
    .filter(|s| **s)
    .count();
    if sources > 1 {
        problems.push(Problem {
            key: key("api_key_env"),
            message: "set only one of api_key_env, api_key_file and api_key".into(),
        });
        return None;
    }
    if let Some(var) = &p.api_key_env {
        return from_env(
            var,
            &key("api_key_env"),
            "the API key",
            "api_key_file",
            problems,
        );
    }
    if let Some(path) = &p.api_key_file {
        return from_file(path, &key("api_key_file"), "the API key", problems);
    }
    if let Some(literal) = p.api_key.clone() {
        let value = literal.into_string();
        if value.trim().is_empty() {
            problems.push(Problem {
                key: key("api_key"),
                message: "is empty; set api_key_env or api_key_file instead".into(),
            });
            return None;
        }
        warnings.push(format!(
            "{} holds a literal api_key; prefer api_key_env or api_key_file so the key stays out of the config file",
            key("api_key")
        ));
        return Some(SecretString::from(value.trim().to_owned()));
    }
    problems.push(Problem {
        key: key("api_key_env"),
        message: "no API key: set api_key_env (an environment variable) or api_key_file (a file, e.g. a systemd credential)".into(),
    });
    None
}

/// A secret from the environment variable `var`; a problem under `key` when it is unset
/// or empty. `what` names the secret in messages, `other` the key to use instead.
pub(super) fn from_env(
    var: &str,
    key: &str,
    what: &str,
    other: &str,
    problems: &mut Vec<Problem>,
) -> Option<SecretString> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_owned())),
        Ok(_) => {
            problems.push(Problem {
                key: key.to_owned(),
                message: format!("environment variable `{var}` is empty; export {what} in it"),
            });
            None
        }
        Err(_) => {
            problems.push(Problem {
                key: key.to_owned(),
                message: format!(
                    "environment variable `{var}` is not set; export {what} in it (or use {other})"
                ),
            });
            None
        }
    }
}

/// A secret from the file `path` (see [`resolve_credential_path`]); a problem under `key`
/// when it cannot be read or is empty.
pub(super) fn from_file(
    path: &Path,
    key: &str,
    what: &str,
    problems: &mut Vec<Problem>,
) -> Option<SecretString> {
    let resolved = resolve_credential_path(path);
    match std::fs::read_to_string(&resolved) {
        Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_owned())),
        Ok(_) => {
            problems.push(Problem {
                key: key.to_owned(),
                message: format!("{} is empty; write {what} into it", resolved.display()),
            });
            None
        }
        Err(e) => {
            problems.push(Problem {
                key: key.to_owned(),
                message: format!("cannot read {}: {e}", resolved.display()),
            });
            None
        }
    }
}

/// A relative `api_key_file` is looked up in systemd's `$CREDENTIALS_DIRECTORY` first
/// (`LoadCredential=`), then relative to the working directory.
fn resolve_credential_path(path: &Path) -> PathBuf {
    if path.is_relative()
        && let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY")
    {
        let candidate = Path::new(&dir).join(path);
        if candidate.exists() {
            return candidate;
        }
    }
    path.to_owned()
}
