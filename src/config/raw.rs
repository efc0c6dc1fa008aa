//! The deserialised form of the config file, before validation, and the built-in
//! defaults (the lowest figment layer).

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A string that may arrive as a number (figment turns digits-only env values into
/// numbers; ids are often written unquoted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub(super) enum StringOrNumber {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl StringOrNumber {
    pub(super) fn into_string(self) -> String {
        match self {
            StringOrNumber::Str(s) => s,
            StringOrNumber::Int(i) => i.to_string(),
            StringOrNumber::UInt(u) => u.to_string(),
            StringOrNumber::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RawConfig {
    pub(super) store: RawStore,
    pub(super) sync: RawSync,
    #[serde(default)]
    pub(super) http: Option<RawHttp>,
    #[serde(default)]
    pub(super) providers: Vec<RawProvider>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RawStore {
    pub(super) path: PathBuf,
    pub(super) history_days: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RawSync {
    pub(super) schedule: String,
    pub(super) default_region: String,
    pub(super) propagate_deletes: bool,
    pub(super) shutdown_timeout: String,
    pub(super) retry_budget: String,
    pub(super) whatsapp_phone_variants: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RawHttp {
    pub(super) listen: Option<String>,
    pub(super) unready_after: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct RawProvider {
    pub(super) name: Option<String>,
    pub(super) kind: Option<String>,
    pub(super) base_url: Option<String>,
    pub(super) api_key_env: Option<String>,
    pub(super) api_key_file: Option<PathBuf>,
    pub(super) api_key: Option<StringOrNumber>,
    pub(super) schedule: Option<String>,
    pub(super) push: Option<bool>,
    pub(super) requests_per_second: Option<f64>,
    pub(super) allow_insecure_http: Option<bool>,
    pub(super) timeout: Option<String>,
    pub(super) max_retries: Option<usize>,
    pub(super) retry_base_delay: Option<String>,
}

pub(super) fn defaults() -> RawConfig {
    RawConfig {
        store: RawStore {
            path: PathBuf::from("/var/lib/contact-sync/contacts.db"),
            history_days: 90,
        },
        sync: RawSync {
            schedule: "0 */5 * * * *".to_owned(),
            default_region: "US".to_owned(),
            propagate_deletes: false,
            shutdown_timeout: "30s".to_owned(),
            retry_budget: "2m".to_owned(),
            whatsapp_phone_variants: true,
        },
        http: None,
        providers: Vec::new(),
    }
}

pub(super) const TOP_KEYS: &[&str] = &["store", "sync", "http", "providers"];
pub(super) const STORE_KEYS: &[&str] = &["path", "history_days"];
pub(super) const SYNC_KEYS: &[&str] = &[
    "schedule",
    "default_region",
    "propagate_deletes",
    "shutdown_timeout",
    "retry_budget",
    "whatsapp_phone_variants",
];
pub(super) const HTTP_KEYS: &[&str] = &["listen", "unready_after"];
/// The keys every provider table takes; each kind adds its own
/// ([`ProviderKind::kind_keys`]).
pub(super) const PROVIDER_KEYS: &[&str] = &[
    "name",
    "kind",
    "base_url",
    "api_key_env",
    "api_key_file",
    "api_key",
    "schedule",
    "push",
    "requests_per_second",
    "allow_insecure_http",
    "timeout",
    "max_retries",
    "retry_base_delay",
];
