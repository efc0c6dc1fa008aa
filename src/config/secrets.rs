//! The API key of a provider: from `api_key_env` (an environment variable),
//! `api_key_file` (a file; a relative name is looked up in systemd's
//! `$CREDENTIALS_DIRECTORY` first) or a literal `api_key` (accepted, with a warning).
//! A key is never put in a message.

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
        return match std::env::var(var) {
            Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_owned())),
            Ok(_) => {
                problems.push(Problem {
                    key: key("api_key_env"),
                    message: format!(
                        "environment variable `{var}` is empty; export the API key in it"
                    ),
                });
                None
            }
            Err(_) => {
                problems.push(Problem {
                    key: key("api_key_env"),
                    message: format!("environment variable `{var}` is not set; export the API key in it (or use api_key_file)"),
                });
                None
            }
        };
    }
    if let Some(path) = &p.api_key_file {
        let resolved = resolve_credential_path(path);
        return match std::fs::read_to_string(&resolved) {
            Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_owned())),
            Ok(_) => {
                problems.push(Problem {
                    key: key("api_key_file"),
                    message: format!("{} is empty; write the API key into it", resolved.display()),
                });
                None
            }
            Err(e) => {
                problems.push(Problem {
                    key: key("api_key_file"),
                    message: format!("cannot read {}: {e}", resolved.display()),
                });
                None
            }
        };
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
