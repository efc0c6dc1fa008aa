//! Validation: the raw form into [`Settings`], one small function per section and per
//! group of provider keys. Every problem is collected (not only the first), each naming
//! its key. Keys only one kind of provider takes are checked by that provider's adapter
//! ([`ProviderKind::validate_kind_settings`]).

use super::raw::{RawConfig, RawHttp, RawProvider, RawStore, RawSync};
use super::secrets::load_secret;
use super::{Problem, Secrets, Settings};
use crate::domain::normalize::DefaultRegion;
use crate::provider::{BaseUrl, KindSettings, ProviderKind, ProviderSettings, RetryPolicy};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Validates `raw` (with the kind-specific tables of its providers, in provider order):
/// the settings, with every problem found appended to `problems`.
pub(super) fn validate(
    raw: RawConfig,
    kind_tables: &[KindSettings],
    source: Option<PathBuf>,
    secrets: Secrets,
    problems: &mut Vec<Problem>,
) -> Settings {
    let sync = sync_section(&raw.sync, problems);
    let (http_listen, unready_after) = http_section(raw.http.as_ref(), problems);
    let history_days = store_section(&raw.store, problems);
    let mut warnings = Vec::new();
    let webhooks = webhooks(&raw.providers, kind_tables, secrets, http_listen, problems);
    let providers = providers(raw.providers, kind_tables, secrets, &mut warnings, problems);
    Settings {
        source,
        store_path: raw.store.path,
        history_days,
        schedule: sync.schedule,
        default_region_code: sync.default_region_code,
        default_region: sync.default_region,
        propagate_deletes: raw.sync.propagate_deletes,
        shutdown_timeout: sync.shutdown_timeout,
        retry_budget: sync.retry_budget,
        http_listen,
        unready_after,
        providers,
        webhooks,
        warnings,
    }
}

fn problem(key: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        key: key.into(),
        message: message.into(),
    }
}

// ---------------------------------------------------------------------------------------
// [sync], [http], [store]

/// The validated `[sync]` keys (with a usable value in place of each invalid one).
struct SyncKeys {
    schedule: String,
    default_region_code: String,
    default_region: DefaultRegion,
    shutdown_timeout: Duration,
    retry_budget: Duration,
}

fn sync_section(sync: &RawSync, problems: &mut Vec<Problem>) -> SyncKeys {
    let schedule = normalize_cron(&sync.schedule).unwrap_or_else(|message| {
        problems.push(problem("sync.schedule", message));
        sync.schedule.clone()
    });
    let default_region_code = sync.default_region.trim().to_ascii_uppercase();
    let default_region = DefaultRegion::parse(&default_region_code)
        .unwrap_or_else(|| {
            problems.push(problem(
                "sync.default_region",
                format!(
                    "`{}` is not a known ISO 3166 region code; write e.g. \"US\", \"GB\", \"TW\"",
                    sync.default_region
                ),
            ));
            DefaultRegion::default()
        })
        .with_whatsapp_variants(sync.whatsapp_phone_variants);
    let shutdown_timeout =
        parse_duration(&sync.shutdown_timeout, "sync.shutdown_timeout", problems)
            .unwrap_or(Duration::from_secs(30));
    let retry_budget = positive_duration(&sync.retry_budget, "sync.retry_budget", problems)
        .unwrap_or(Duration::from_mins(2));
    SyncKeys {
        schedule,
        default_region_code,
        default_region,
        shutdown_timeout,
        retry_budget,
    }
}

/// `[http]`: the listen address (none: no endpoint) and `unready_after` (default 30 min).
fn http_section(
    http: Option<&RawHttp>,
    problems: &mut Vec<Problem>,
) -> (Option<SocketAddr>, Duration) {
    let mut unready_after = Duration::from_mins(30);
    let Some(http) = http else {
        return (None, unready_after);
    };
    let listen = http.listen.as_ref().and_then(|listen| {
        listen.parse::<SocketAddr>().ok().or_else(|| {
            problems.push(problem(
                "http.listen",
                format!("`{listen}` is not an address; write e.g. \"127.0.0.1:9477\""),
            ));
            None
        })
    });
    if let Some(v) = &http.unready_after
        && let Some(d) = parse_duration(v, "http.unready_after", problems)
    {
        unready_after = d;
    }
    (listen, unready_after)
}

/// `[store]`: the path, and `history_days` (how long the journal keeps what happened).
fn store_section(store: &RawStore, problems: &mut Vec<Problem>) -> u32 {
    if store.path.as_os_str().is_empty() {
        problems.push(problem(
            "store.path",
            "must not be empty; write e.g. \"/var/lib/contact-sync/contacts.db\"",
        ));
    }
    match u32::try_from(store.history_days) {
        Ok(days @ 1..=36_500) => days,
        _ => {
            problems.push(problem(
                "store.history_days",
                format!(
                    "`{}` is not a number of days between 1 and 36500; write e.g. 90 (the journal behind `history` and `undo` keeps that many days)",
                    store.history_days
                ),
            ));
            90
        }
    }
}

// ---------------------------------------------------------------------------------------
// Webhooks

/// The providers that take webhook events: those with `webhook_secret_env`,
/// `webhook_secret_file` (read here, with the API key's rules) or
/// `webhook_allow_unsigned = true`. Their form was checked by the adapter (only kinds that
/// take webhooks have these keys); each needs `[http] listen`, where the events arrive.
fn webhooks(
    raw: &[RawProvider],
    kind_tables: &[KindSettings],
    secrets: Secrets,
    http_listen: Option<SocketAddr>,
    problems: &mut Vec<Problem>,
) -> Vec<crate::config::WebhookSettings> {
    use crate::provider::SettingValue;
    const ENV: &str = "webhook_secret_env";
    const FILE: &str = "webhook_secret_file";
    const UNSIGNED: &str = "webhook_allow_unsigned";
    let mut out = Vec::new();
    for (index, (p, table)) in raw.iter().zip(kind_tables).enumerate() {
        let name = p
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map_or_else(|| index.to_string(), str::to_owned);
        let env = table.text(ENV);
        let file = table.text(FILE);
        let unsigned = match table.get(UNSIGNED) {
            Some(SettingValue::Bool(b)) => *b,
            Some(v) => v.to_text() == "true",
            None => false,
        };
        let set = if env.is_some() {
            ENV
        } else if file.is_some() {
            FILE
        } else if unsigned {
            UNSIGNED
        } else {
            continue;
        };
        let key = |k: &str| format!("providers[{name}].{k}");
        if http_listen.is_none() {
            problems.push(problem(
                key(set),
                format!(
                    "webhook events arrive at POST /webhooks/{name} on the daemon's endpoint, and `http.listen` is not set; add [http] listen = \"127.0.0.1:9477\" (or remove `{set}`)"
                ),
            ));
        }
        let secret = match (secrets, env, file) {
            (Secrets::Skip, _, _) | (_, None, None) => None,
            (Secrets::Load, Some(var), _) => Some(super::secrets::from_env(
                &var,
                &key(ENV),
                "the webhook signing secret",
                FILE,
                problems,
            )),
            (Secrets::Load, None, Some(path)) => Some(super::secrets::from_file(
                std::path::Path::new(&path),
                &key(FILE),
                "the webhook signing secret",
                problems,
            )),
        };
        match secret {
            Some(None) => {} // reported
            Some(Some(secret)) => out.push(crate::config::WebhookSettings {
                provider: name,
                secret: Some(secret),
                allow_unsigned: false,
            }),
            None => out.push(crate::config::WebhookSettings {
                provider: name,
                secret: None,
                allow_unsigned: unsigned,
            }),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// [[providers]]

/// Every provider table, in config order; invalid ones are left out (their problems
/// reported).
fn providers(
    raw: Vec<RawProvider>,
    kind_tables: &[KindSettings],
    secrets: Secrets,
    warnings: &mut Vec<String>,
    problems: &mut Vec<Problem>,
) -> Vec<ProviderSettings> {
    if raw.is_empty() {
        problems.push(problem(
            "providers",
            "no provider is configured; add at least one [[providers]] table (see config/example.toml)",
        ));
    }
    let mut names: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (index, p) in raw.into_iter().enumerate() {
        let table = kind_tables.get(index).cloned().unwrap_or_default();
        let mut check = ProviderCheck {
            label: p.name.clone().unwrap_or_else(|| index.to_string()),
            problems: &mut *problems,
            warnings: &mut *warnings,
        };
        if let Some(settings) = check.provider(&p, &table, &mut names, secrets) {
            out.push(settings);
        }
    }
    out
}

/// The check of one provider table: problems are reported under
/// `providers[<name or index>].<key>`.
struct ProviderCheck<'a> {
    label: String,
    problems: &'a mut Vec<Problem>,
    warnings: &'a mut Vec<String>,
}

impl ProviderCheck<'_> {
    fn key(&self, key: &str) -> String {
        format!("providers[{}].{key}", self.label)
    }

    fn report(&mut self, key: &str, message: impl Into<String>) {
        let key = self.key(key);
        self.problems.push(problem(key, message));
    }

    /// The settings of the table `p`, or `None` when a problem leaves no client to build.
    fn provider(
        &mut self,
        p: &RawProvider,
        table: &KindSettings,
        names: &mut Vec<String>,
        secrets: Secrets,
    ) -> Option<ProviderSettings> {
        let name = self.name(p, names);
        let kind = self.kind(p)?;
        let base_url = self.base_url(p, kind);
        let push = p.push.unwrap_or(true);
        let kind_settings = self.kind_settings(kind, table, push);
        let api_key = match secrets {
            Secrets::Load => {
                let label = self.label.clone();
                let key = |k: &str| format!("providers[{label}].{k}");
                load_secret(p, &key, self.warnings, self.problems)
            }
            Secrets::Skip => Some(SecretString::from(String::new())),
        };
        let schedule = self.schedule(p);
        let requests_per_second = self.requests_per_second(p);
        let timeout_key = self.key("timeout");
        let request_timeout = p
            .timeout
            .as_deref()
            .and_then(|t| parse_duration(t, &timeout_key, self.problems))
            .unwrap_or(Duration::from_secs(30));
        let retry = self.retry_policy(p);
        Some(ProviderSettings {
            name,
            kind,
            base_url: base_url?,
            kind_settings: kind_settings?,
            api_key: api_key?,
            schedule,
            push,
            requests_per_second,
            request_timeout,
            retry,
        })
    }

    /// The instance name: present, non-blank and unique (recorded in `names`).
    fn name(&mut self, p: &RawProvider, names: &mut Vec<String>) -> String {
        match p.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => {
                if names.iter().any(|seen| seen == n) {
                    self.report(
                        "name",
                        format!(
                            "duplicate provider name `{n}`; every [[providers]] needs a unique name"
                        ),
                    );
                }
                names.push(n.to_owned());
                n.to_owned()
            }
            _ => {
                self.report(
                    "name",
                    "missing; give every provider a unique name (used in logs, status and --provider)",
                );
                self.label.clone()
            }
        }
    }

    /// The kind: one of the registered ones.
    fn kind(&mut self, p: &RawProvider) -> Option<ProviderKind> {
        let kind = p.kind.as_deref().and_then(ProviderKind::parse);
        if kind.is_none() {
            let message = match p.kind.as_deref().unwrap_or("") {
                "" => format!("missing; set kind to one of {}", ProviderKind::names()),
                shown => format!(
                    "unknown kind `{shown}`; use one of {}",
                    ProviderKind::names()
                ),
            };
            self.report("kind", message);
        }
        kind
    }

    /// The base URL (the kind's default when absent): http(s), and https unless the host
    /// is loopback or `allow_insecure_http` is set.
    fn base_url(&mut self, p: &RawProvider, kind: ProviderKind) -> Option<url::Url> {
        let text = match p.base_url.as_deref().map(str::trim) {
            Some(b) if !b.is_empty() => b.to_owned(),
            _ => match kind.base_url() {
                BaseUrl::Default(url) => url.to_owned(),
                BaseUrl::Required { example } => {
                    self.report(
                        "base_url",
                        format!(
                            "required for {kind}: the address of your instance, e.g. \"{example}\""
                        ),
                    );
                    return None;
                }
            },
        };
        match url::Url::parse(text.trim_end_matches('/')) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if u.scheme() == "http"
                    && !is_loopback_host(&u)
                    && !p.allow_insecure_http.unwrap_or(false)
                {
                    self.report(
                        "base_url",
                        format!(
                            "`{text}` uses plain http to a remote host, which would send the API key unencrypted; use https, or set allow_insecure_http = true on this provider"
                        ),
                    );
                }
                Some(u)
            }
            _ => {
                self.report("base_url", format!("`{text}` is not an http(s) URL"));
                None
            }
        }
    }

    /// The keys only this kind takes, as its adapter checks and normalises them.
    fn kind_settings(
        &mut self,
        kind: ProviderKind,
        table: &KindSettings,
        push: bool,
    ) -> Option<KindSettings> {
        match kind.validate_kind_settings(table, push) {
            Ok(settings) => Some(settings),
            Err(found) => {
                for p in found {
                    self.report(p.key, p.message);
                }
                None
            }
        }
    }

    /// The per-provider schedule override, normalised to 6 fields.
    fn schedule(&mut self, p: &RawProvider) -> Option<String> {
        let text = p.schedule.as_deref()?;
        normalize_cron(text)
            .map_err(|message| self.report("schedule", message))
            .ok()
    }

    /// `requests_per_second`, when a positive number.
    fn requests_per_second(&mut self, p: &RawProvider) -> Option<f64> {
        let rps = p.requests_per_second?;
        if rps.is_finite() && rps > 0.0 {
            Some(rps)
        } else {
            self.report(
                "requests_per_second",
                format!("`{rps}` must be a positive number"),
            );
            None
        }
    }

    /// The retry policy: the defaults with `max_retries` and `retry_base_delay` applied.
    fn retry_policy(&mut self, p: &RawProvider) -> RetryPolicy {
        let mut retry = RetryPolicy::default();
        if let Some(n) = p.max_retries {
            retry.max_retries = n;
        }
        let key = self.key("retry_base_delay");
        if let Some(d) = p
            .retry_base_delay
            .as_deref()
            .and_then(|t| parse_duration(t, &key, self.problems))
        {
            retry.base_delay = d;
            retry.max_delay = retry.max_delay.max(d);
        }
        retry
    }
}

// ---------------------------------------------------------------------------------------
// Values

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

/// A humantime duration ("30s", "5m"); a problem under `key` otherwise.
fn parse_duration(value: &str, key: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) => Some(d),
        Err(e) => {
            problems.push(problem(
                key,
                format!("`{value}` is not a duration ({e}); write e.g. \"30s\" or \"5m\""),
            ));
            None
        }
    }
}

/// A duration longer than zero; a problem under `key` otherwise.
fn positive_duration(value: &str, key: &str, problems: &mut Vec<Problem>) -> Option<Duration> {
    let d = parse_duration(value, key, problems)?;
    if d.is_zero() {
        problems.push(problem(
            key,
            format!("`{value}` must be longer than zero; write e.g. \"90s\" or \"2m\""),
        ));
        return None;
    }
    Some(d)
}

fn is_loopback_host(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}
