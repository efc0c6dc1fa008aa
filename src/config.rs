//! Configuration: figment layering (built-in defaults < TOML file < `CONTACT_SYNC_` env),
//! validation into [`Settings`], and secret loading. Nothing here sends a request or
//! creates a file; every problem is reported with the key it concerns.

use crate::domain::normalize::DefaultRegion;
use crate::provider::{BaseUrl, ProviderKind};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::provider::{KindSettings, ProviderSettings, RetryPolicy, SettingValue};

/// Where the config file is looked for when `--config` is not given (DESIGN §2).
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
    /// Health/metrics endpoint address, if enabled.
    pub http_listen: Option<SocketAddr>,
    /// `/readyz` turns unready when a provider has been failing for longer than this.
    pub unready_after: Duration,
    /// Providers in config order (the order decides same-cycle conflicts: first wins).
    pub providers: Vec<ProviderSettings>,
    /// Non-fatal remarks to log once (e.g. a literal `api_key`).
    pub warnings: Vec<String>,
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

// ---------------------------------------------------------------------------------------
// Raw (deserialised) form

/// A string that may arrive as a number (figment turns digits-only env values into
/// numbers; ids are often written unquoted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum StringOrNumber {
    Str(String),
    Int(i64),
    UInt(u64),
    Float(f64),
}

impl StringOrNumber {
    fn into_string(self) -> String {
        match self {
            StringOrNumber::Str(s) => s,
            StringOrNumber::Int(i) => i.to_string(),
            StringOrNumber::UInt(u) => u.to_string(),
            StringOrNumber::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct RawConfig {
    store: RawStore,
    sync: RawSync,
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    providers: Vec<RawProvider>,
}

#[derive(Debug, Serialize, Deserialize)]
struct RawStore {
    path: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct RawSync {
    schedule: String,
    default_region: String,
    propagate_deletes: bool,
    shutdown_timeout: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct RawHttp {
    listen: Option<String>,
    unready_after: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct RawProvider {
    name: Option<String>,
    kind: Option<String>,
    base_url: Option<String>,
    api_key_env: Option<String>,
    api_key_file: Option<PathBuf>,
    api_key: Option<StringOrNumber>,
    schedule: Option<String>,
    push: Option<bool>,
    requests_per_second: Option<f64>,
    allow_insecure_http: Option<bool>,
    timeout: Option<String>,
    max_retries: Option<usize>,
    retry_base_delay: Option<String>,
}

fn defaults() -> RawConfig {
    RawConfig {
        store: RawStore {
            path: PathBuf::from("/var/lib/contact-sync/contacts.db"),
        },
        sync: RawSync {
            schedule: "0 */5 * * * *".to_owned(),
            default_region: "US".to_owned(),
            propagate_deletes: false,
            shutdown_timeout: "30s".to_owned(),
        },
        http: None,
        providers: Vec::new(),
    }
}

const TOP_KEYS: &[&str] = &["store", "sync", "http", "providers"];
const STORE_KEYS: &[&str] = &["path"];
const SYNC_KEYS: &[&str] = &[
    "schedule",
    "default_region",
    "propagate_deletes",
    "shutdown_timeout",
];
const HTTP_KEYS: &[&str] = &["listen", "unready_after"];
/// The keys every provider table takes; each kind adds its own
/// ([`ProviderKind::kind_keys`]).
const PROVIDER_KEYS: &[&str] = &[
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

// ---------------------------------------------------------------------------------------
// Loading

/// Finds the config file: `explicit`, else `$CONTACT_SYNC_CONFIG`, else
/// `/etc/contact-sync/config.toml`, else `./contact-sync.toml` (DESIGN §2).
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

/// Whether secrets are read while loading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secrets {
    /// Read and require every provider's API key.
    Load,
    /// Do not read keys (for `status`, which only needs the store path): keys are empty.
    Skip,
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

// ---------------------------------------------------------------------------------------
// Validation

/// Turns a 5-field cron expression into the 6-field form (seconds first) and checks it.
pub fn normalize_cron(expr: &str) -> Result<String, String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let six = match fields.len() {
        5 => format!("0 {}", fields.join(" ")),
        6 => fields.join(" "),
        n => {
            return Err(format!(
                "`{expr}` has {n} fields; write 6 (sec min hour dom mon dow, e.g. \"0 */5 * * * *\") or 5 (min hour dom mon dow)"
            ));
        }
    };
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Required)
        .build()
        .parse(&six)
        .map(|_| six)
        .map_err(|e| format!("`{expr}` is not a valid cron expression ({e})"))
}

fn parse_duration(value: &str, key: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(Problem {
                key: key.to_owned(),
                message: format!("`{value}` is not a duration ({e}); write e.g. \"30s\" or \"5m\""),
            });
            None
        }
    }
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn validate(
    raw: RawConfig,
    kind_tables: &[KindSettings],
    source: Option<PathBuf>,
    secrets: Secrets,
    problems: &mut Vec<Problem>,
) -> Settings {
    let mut warnings = Vec::new();
    let schedule = match normalize_cron(&raw.sync.schedule) {
        Ok(s) => s,
        Err(message) => {
            problems.push(Problem {
                key: "sync.schedule".into(),
                message,
            });
            raw.sync.schedule.clone()
        }
    };
    let default_region_code = raw.sync.default_region.trim().to_ascii_uppercase();
    let default_region = DefaultRegion::parse(&default_region_code).unwrap_or_else(|| {
        problems.push(Problem {
            key: "sync.default_region".into(),
            message: format!(
                "`{}` is not a known ISO 3166 region code; write e.g. \"US\", \"GB\", \"TW\"",
                raw.sync.default_region
            ),
        });
        DefaultRegion::default()
    });
    let shutdown_timeout = parse_duration(
        &raw.sync.shutdown_timeout,
        "sync.shutdown_timeout",
        problems,
    )
    .unwrap_or(Duration::from_secs(30));
    let mut http_listen = None;
    let mut unready_after = Duration::from_mins(30);
    if let Some(http) = &raw.http {
        if let Some(listen) = &http.listen {
            match listen.parse::<SocketAddr>() {
                Ok(addr) => http_listen = Some(addr),
                Err(_) => problems.push(Problem {
                    key: "http.listen".into(),
                    message: format!("`{listen}` is not an address; write e.g. \"127.0.0.1:9477\""),
                }),
            }
        }
        if let Some(v) = &http.unready_after
            && let Some(d) = parse_duration(v, "http.unready_after", problems)
        {
            unready_after = d;
        }
    }
    if raw.store.path.as_os_str().is_empty() {
        problems.push(Problem {
            key: "store.path".into(),
            message: "must not be empty; write e.g. \"/var/lib/contact-sync/contacts.db\"".into(),
        });
    }
    if raw.providers.is_empty() {
        problems.push(Problem {
            key: "providers".into(),
            message: "no provider is configured; add at least one [[providers]] table (see config/example.toml)".into(),
        });
    }
    let mut providers = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (index, p) in raw.providers.into_iter().enumerate() {
        let label = p.name.clone().unwrap_or_else(|| index.to_string());
        let key = |k: &str| format!("providers[{label}].{k}");
        let name = match p.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => {
                if names.iter().any(|seen| seen == n) {
                    problems.push(Problem {
                        key: key("name"),
                        message: format!(
                            "duplicate provider name `{n}`; every [[providers]] needs a unique name"
                        ),
                    });
                }
                names.push(n.to_owned());
                n.to_owned()
            }
            _ => {
                problems.push(Problem {
                    key: key("name"),
                    message: "missing; give every provider a unique name (used in logs, status and --provider)".into(),
                });
                label.clone()
            }
        };
        let Some(kind) = p.kind.as_deref().and_then(ProviderKind::parse) else {
            let shown = p.kind.as_deref().unwrap_or("");
            problems.push(Problem {
                key: key("kind"),
                message: if shown.is_empty() {
                    format!("missing; set kind to one of {}", ProviderKind::names())
                } else {
                    format!(
                        "unknown kind `{shown}`; use one of {}",
                        ProviderKind::names()
                    )
                },
            });
            continue;
        };
        let base_text = match p.base_url.as_deref() {
            Some(b) if !b.trim().is_empty() => Some(b.trim().to_owned()),
            _ => kind.default_base_url().map(str::to_owned),
        };
        let base_url = match base_text {
            None => {
                let example = match kind.base_url() {
                    BaseUrl::Required { example } => example,
                    BaseUrl::Default(url) => url,
                };
                problems.push(Problem {
                    key: key("base_url"),
                    message: format!(
                        "required for {kind}: the address of your instance, e.g. \"{example}\""
                    ),
                });
                None
            }
            Some(text) => match url::Url::parse(text.trim_end_matches('/')) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                    if u.scheme() == "http"
                        && !is_loopback_host(&u)
                        && !p.allow_insecure_http.unwrap_or(false)
                    {
                        problems.push(Problem {
                            key: key("base_url"),
                            message: format!(
                                "`{text}` uses plain http to a remote host, which would send the API key unencrypted; use https, or set allow_insecure_http = true on this provider"
                            ),
                        });
                    }
                    Some(u)
                }
                _ => {
                    problems.push(Problem {
                        key: key("base_url"),
                        message: format!("`{text}` is not an http(s) URL"),
                    });
                    None
                }
            },
        };
        let push = p.push.unwrap_or(true);
        let table = kind_tables.get(index).cloned().unwrap_or_default();
        let kind_settings = kind
            .validate_kind_settings(&table, push)
            .map_err(|found| {
                problems.extend(found.into_iter().map(|problem| Problem {
                    key: key(problem.key),
                    message: problem.message,
                }));
            })
            .ok();
        let api_key = match secrets {
            Secrets::Load => load_secret(&p, &key, &mut warnings, problems),
            Secrets::Skip => Some(SecretString::from(String::new())),
        };
        let schedule = p.schedule.as_deref().and_then(|s| match normalize_cron(s) {
            Ok(s) => Some(s),
            Err(message) => {
                problems.push(Problem {
                    key: key("schedule"),
                    message,
                });
                None
            }
        });
        if let Some(rps) = p.requests_per_second
            && !(rps.is_finite() && rps > 0.0)
        {
            problems.push(Problem {
                key: key("requests_per_second"),
                message: format!("`{rps}` must be a positive number"),
            });
        }
        let request_timeout = p
            .timeout
            .as_deref()
            .and_then(|t| parse_duration(t, &key("timeout"), problems))
            .unwrap_or(Duration::from_secs(30));
        let mut retry = RetryPolicy::default();
        if let Some(n) = p.max_retries {
            retry.max_retries = n;
        }
        if let Some(d) = p
            .retry_base_delay
            .as_deref()
            .and_then(|t| parse_duration(t, &key("retry_base_delay"), problems))
        {
            retry.base_delay = d;
            retry.max_delay = retry.max_delay.max(d);
        }
        if let (Some(base_url), Some(api_key), Some(kind_settings)) =
            (base_url, api_key, kind_settings)
        {
            providers.push(ProviderSettings {
                name,
                kind,
                base_url,
                kind_settings,
                api_key,
                schedule,
                push,
                requests_per_second: p.requests_per_second.filter(|r| r.is_finite() && *r > 0.0),
                request_timeout,
                retry,
            });
        }
    }
    Settings {
        source,
        store_path: raw.store.path,
        schedule,
        default_region_code,
        default_region,
        propagate_deletes: raw.sync.propagate_deletes,
        shutdown_timeout,
        http_listen,
        unready_after,
        providers,
        warnings,
    }
}

fn load_secret(
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

// ---------------------------------------------------------------------------------------
// Display

#[derive(Serialize)]
struct EffectiveProvider<'a> {
    name: &'a str,
    kind: &'a str,
    base_url: String,
    #[serde(flatten)]
    kind_settings: &'a KindSettings,
    api_key: &'a str,
    schedule: &'a str,
    push: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_per_second: Option<f64>,
    timeout: String,
    max_retries: usize,
    retry_base_delay: String,
}

impl Settings {
    /// The effective configuration as TOML, with every secret shown as `***`.
    pub fn to_redacted_toml(&self) -> String {
        #[derive(Serialize)]
        struct Effective<'a> {
            store: Dict,
            sync: Dict,
            #[serde(skip_serializing_if = "Option::is_none")]
            http: Option<Dict>,
            providers: Vec<EffectiveProvider<'a>>,
        }
        let mut store = Dict::new();
        store.insert("path".into(), self.store_path.display().to_string().into());
        let mut sync = Dict::new();
        sync.insert("schedule".into(), self.schedule.clone().into());
        sync.insert(
            "default_region".into(),
            self.default_region_code.clone().into(),
        );
        sync.insert("propagate_deletes".into(), self.propagate_deletes.into());
        sync.insert(
            "shutdown_timeout".into(),
            humantime::format_duration(self.shutdown_timeout)
                .to_string()
                .into(),
        );
        let http = self.http_listen.map(|addr| {
            let mut d = Dict::new();
            d.insert("listen".into(), addr.to_string().into());
            d.insert(
                "unready_after".into(),
                humantime::format_duration(self.unready_after)
                    .to_string()
                    .into(),
            );
            d
        });
        let providers = self
            .providers
            .iter()
            .map(|p| EffectiveProvider {
                name: &p.name,
                kind: p.kind.as_str(),
                base_url: p.base_url.as_str().trim_end_matches('/').to_owned(),
                kind_settings: &p.kind_settings,
                api_key: if p.api_key.expose_secret().is_empty() {
                    ""
                } else {
                    "***"
                },
                schedule: p.schedule.as_deref().unwrap_or(&self.schedule),
                push: p.push,
                requests_per_second: p.requests_per_second,
                timeout: humantime::format_duration(p.request_timeout).to_string(),
                max_retries: p.retry.max_retries,
                retry_base_delay: humantime::format_duration(p.retry.base_delay).to_string(),
            })
            .collect();
        let effective = Effective {
            store,
            sync,
            http,
            providers,
        };
        toml::to_string_pretty(&effective).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }

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
}
