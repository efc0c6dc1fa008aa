//! What `check-config` prints: the effective configuration as TOML, secrets shown as
//! `***`.

use super::Settings;
use crate::provider::KindSettings;
use figment::value::Dict;
use secrecy::ExposeSecret;
use serde::Serialize;

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
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_allow_unsigned: Option<bool>,
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
        store.insert("history_days".into(), self.history_days.into());
        let mut sync = Dict::new();
        sync.insert("schedule".into(), self.schedule.clone().into());
        sync.insert(
            "default_region".into(),
            self.default_region_code.clone().into(),
        );
        sync.insert("propagate_deletes".into(), self.propagate_deletes.into());
        sync.insert(
            "whatsapp_phone_variants".into(),
            self.default_region.whatsapp_variants().into(),
        );
        sync.insert(
            "shutdown_timeout".into(),
            humantime::format_duration(self.shutdown_timeout)
                .to_string()
                .into(),
        );
        sync.insert(
            "retry_budget".into(),
            humantime::format_duration(self.retry_budget)
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
            .map(|p| {
                let webhook = self.webhooks.iter().find(|w| w.provider == p.name);
                (p, webhook)
            })
            .map(|(p, webhook)| EffectiveProvider {
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
                webhook_secret: webhook.and_then(|w| w.secret.as_ref()).map(|_| "***"),
                webhook_allow_unsigned: webhook.filter(|w| w.allow_unsigned).map(|_| true),
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
}
