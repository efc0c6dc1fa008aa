//! Configuration: figment layering (built-in defaults < TOML file < `CONTACT_SYNC_` env),
//! validation into [`Settings`], and secret loading. Nothing here sends a request or
//! creates a file; every problem is reported with the key it concerns.
//!
//! - [`load`](self::load()) (`load.rs`): finding the file, layering, the unknown-key check;
//! - `raw.rs`: the deserialised form and the built-in defaults;
//! - `validate.rs`: raw form → [`Settings`], one function per section and per key group;
//!   kind-specific keys are checked by the provider's adapter
//!   ([`crate::provider::Adapter`]);
//! - `secrets.rs`: `api_key_env` / `api_key_file` / literal `api_key`;
//! - `render.rs`: the redacted effective configuration `check-config` prints.
//!
//! The per-provider settings the clients are built from live in
//! [`crate::provider::settings`] and are re-exported here.

mod load;
mod raw;
mod render;
mod secrets;
mod validate;

use crate::domain::normalize::DefaultRegion;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

pub use crate::provider::{KindSettings, ProviderSettings, RetryPolicy, SettingValue};
pub use load::{from_toml_str, load, load_with, locate};
pub use validate::normalize_cron;

/// Where the config file is looked for when `--config` is not given (before
/// [`SYSTEM_CONFIG`] and [`LOCAL_CONFIG`]).
pub const CONFIG_ENV: &str = "CONTACT_SYNC_CONFIG";
/// The system-wide config file.
pub const SYSTEM_CONFIG: &str = "/etc/contact-sync/config.toml";
/// The config file in the working directory.
pub const LOCAL_CONFIG: &str = "contact-sync.toml";
/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "CONTACT_SYNC_";

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file the config was read from, if any.
    pub source: Option<PathBuf>,
    /// SQLite store path.
    pub store_path: PathBuf,
    /// How many days the journal keeps (`store.history_days`, default 90, 1..=36500).
    pub history_days: u32,
    /// Default cron schedule (6 fields).
    pub schedule: String,
    /// Region code for national-format phone numbers, as written (upper-cased).
    pub default_region_code: String,
    /// Parsed default region.
    pub default_region: DefaultRegion,
    /// Whether a deletion in one provider deletes the contact elsewhere.
    pub propagate_deletes: bool,
    /// How long the daemon waits for work in flight on SIGTERM.
    pub shutdown_timeout: Duration,
    /// How long one cycle keeps retrying transient failures before leaving them for the
    /// next cycle (`sync.retry_budget`, default 2 min, always > 0).
    pub retry_budget: Duration,
    /// Health/metrics endpoint address, if enabled.
    pub http_listen: Option<SocketAddr>,
    /// `/readyz` turns unready when a provider has been failing for longer than this.
    pub unready_after: Duration,
    /// Providers in config order (the order decides same-cycle conflicts: first wins).
    pub providers: Vec<ProviderSettings>,
    /// The providers that take webhook events (`POST /webhooks/{name}` on
    /// `[http] listen`), in config order.
    pub webhooks: Vec<WebhookSettings>,
    /// Non-fatal remarks to log once (e.g. a literal `api_key`).
    pub warnings: Vec<String>,
}

/// How one provider's webhook events are received (`webhook_secret_env` /
/// `webhook_secret_file` / `webhook_allow_unsigned`).
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// The provider instance name (the last segment of `/webhooks/{name}`).
    pub provider: String,
    /// The signing secret; `None` when unsigned events are allowed instead. Never logged.
    pub secret: Option<secrecy::SecretString>,
    /// Unsigned events are accepted (no secret configured).
    pub allow_unsigned: bool,
}

/// One problem in the config, with the key it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted key, e.g. `providers[support].api_key_env` or `sync.schedule`.
    pub key: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// Invalid or missing configuration (exit code 2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file involved, if any.
    pub source: Option<PathBuf>,
    /// Every problem found.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(path) => write!(f, "invalid configuration in {}:", path.display())?,
            None => write!(f, "invalid configuration:")?,
        }
        for p in &self.problems {
            if p.key.is_empty() {
                write!(f, "\n  - {}", p.message)?;
            } else {
                write!(f, "\n  - `{}`: {}", p.key, p.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn single(source: Option<PathBuf>, key: &str, message: impl Into<String>) -> Self {
        Self {
            source,
            problems: vec![Problem {
                key: key.to_owned(),
                message: message.into(),
            }],
        }
    }
}

/// Whether secrets are read while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read and require every provider's API key.
    Load,
    /// Do not read keys (for `status`, which only needs the store path): keys are empty.
    Skip,
}

impl Settings {
    /// The providers selected by `--provider` names (all when `names` is empty).
    pub fn select_providers(
        &self,
        names: &[String],
    ) -> Result<Vec<&ProviderSettings>, ConfigError> {
        if names.is_empty() {
            return Ok(self.providers.iter().collect());
        }
        let mut out = Vec::new();
        for name in names {
            match self.providers.iter().find(|p| &p.name == name) {
                Some(p) => out.push(p),
                None => {
                    let known: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
                    return Err(ConfigError::single(
                        self.source.clone(),
                        "--provider",
                        format!(
                            "no provider named `{name}`; configured: {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(out)
    }
}

/// Whether an address is on the loopback interface.
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        IpAddr::V4(ip) => ip.is_loopback(),
        IpAddr::V6(ip) => ip.is_loopback(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::path::Path;

    #[test]
    fn debug_of_settings_hides_secrets() {
        let settings = from_toml_str(
            "[[providers]]\nname = \"a\"\nkind = \"agentalk\"\napi_key = \"very-secret-key\"\n",
        )
        .unwrap();
        let debug = format!("{settings:?}");
        assert!(!debug.contains("very-secret-key"), "{debug}");
        assert!(!settings.to_redacted_toml().contains("very-secret-key"));
    }

    #[test]
    fn five_field_cron_becomes_six() {
        assert_eq!(normalize_cron("*/5 * * * *").unwrap(), "0 */5 * * * *");
        assert_eq!(normalize_cron("0 */2 * * * *").unwrap(), "0 */2 * * * *");
        assert!(normalize_cron("* * *").is_err());
    }

    #[test]
    fn loopback_http_is_allowed_and_remote_needs_opt_in() {
        let ok = from_toml_str(
            "[[providers]]\nname = \"a\"\nkind = \"dmchamp\"\nbase_url = \"http://127.0.0.1:8080\"\napi_key = \"k\"\n\
             [[providers]]\nname = \"b\"\nkind = \"dmchamp\"\nbase_url = \"http://10.0.0.5\"\nallow_insecure_http = true\napi_key = \"k\"\n",
        )
        .unwrap();
        assert_eq!(ok.providers.len(), 2);
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn figment_env_digits_stay_strings() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "c.toml",
                "[[providers]]\nname = \"a\"\nkind = \"maiagent\"\ninbox_id = 42\napi_key_env = \"K\"\n",
            )?;
            jail.set_env("K", "000123");
            jail.set_env("CONTACT_SYNC_SYNC__DEFAULT_REGION", "tw");
            let settings = load(Path::new("c.toml")).map_err(|e| e.to_string())?;
            assert_eq!(
                settings.providers[0]
                    .kind_settings
                    .text("inbox_id")
                    .as_deref(),
                Some("42")
            );
            assert_eq!(settings.providers[0].api_key.expose_secret(), "000123");
            assert_eq!(settings.default_region_code, "TW");
            Ok(())
        });
    }

    const AGENTALK: &str = "[[providers]]\nname = \"a\"\nkind = \"agentalk\"\napi_key = \"k\"\n";

    #[test]
    fn history_days_defaults_to_90_and_must_be_a_positive_number_of_days() {
        assert_eq!(from_toml_str(AGENTALK).unwrap().history_days, 90);
        let set = from_toml_str(&format!("[store]\nhistory_days = 30\n{AGENTALK}")).unwrap();
        assert_eq!(set.history_days, 30);
        assert!(set.to_redacted_toml().contains("history_days = 30"));
        for bad in ["0", "-5", "100000"] {
            let err =
                from_toml_str(&format!("[store]\nhistory_days = {bad}\n{AGENTALK}")).unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            assert_eq!(err.problems[0].key, "store.history_days");
            assert!(err.problems[0].message.contains(bad), "{err}");
        }
    }

    #[test]
    fn retry_budget_defaults_to_two_minutes_and_must_be_positive() {
        assert_eq!(
            from_toml_str(AGENTALK).unwrap().retry_budget,
            Duration::from_mins(2)
        );
        let set = from_toml_str(&format!("[sync]\nretry_budget = \"90s\"\n{AGENTALK}")).unwrap();
        assert_eq!(set.retry_budget, Duration::from_secs(90));
        assert!(set.to_redacted_toml().contains("retry_budget = \"1m 30s\""));
        for bad in ["0s", "soon"] {
            let err = from_toml_str(&format!("[sync]\nretry_budget = \"{bad}\"\n{AGENTALK}"))
                .unwrap_err();
            assert_eq!(err.problems.len(), 1, "{err}");
            assert_eq!(err.problems[0].key, "sync.retry_budget");
            assert!(err.problems[0].message.contains(bad), "{err}");
        }
    }

    #[test]
    fn kind_specific_keys_belong_to_their_kind() {
        let err = from_toml_str(&format!("{AGENTALK}account_id = 3\n")).unwrap_err();
        assert_eq!(err.problems[0].key, "providers[a].account_id");
        assert!(
            err.problems[0]
                .message
                .contains("setting of chatwoot providers"),
            "{err}"
        );
        let err = from_toml_str(&format!("{AGENTALK}acount_id = 3\n")).unwrap_err();
        assert!(err.problems[0].message.contains("unknown key"), "{err}");
    }

    #[test]
    fn chatwoot_ids_are_checked_by_the_adapter_and_shown_normalised() {
        let cw = "[[providers]]\nname = \"c\"\nkind = \"chatwoot\"\nbase_url = \"https://c.example.com\"\napi_key = \"k\"\n";
        let err =
            from_toml_str(&format!("{cw}account_id = \"x\"\ninbox_id = \"y\"\n")).unwrap_err();
        let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["providers[c].account_id", "providers[c].inbox_id"]);
        let ok = from_toml_str(&format!("{cw}account_id = \" 4 \"\ninbox_id = 9\n")).unwrap();
        let shown = ok.to_redacted_toml();
        assert!(shown.contains("account_id = 4\n"), "{shown}");
        assert!(shown.contains("inbox_id = \"9\"\n"), "{shown}");
    }
}
