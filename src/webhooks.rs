//! `contact-sync webhooks register` and `contact-sync webhooks list`: the account
//! webhooks of a Chatwoot provider, which post `contact_created` and `contact_updated` to
//! the daemon's `POST /webhooks/{name}` (see `daemon::webhooks`).

use crate::config::Settings;
use crate::exit::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::provider::chatwoot::{Chatwoot, WEBHOOK_EVENTS, Webhook};
use crate::provider::{AnyProvider, Provider};
use crate::sync::ProviderSlot;

/// The provider's Chatwoot client, or the exit code after saying why there is none.
fn chatwoot(slot: &ProviderSlot<AnyProvider>) -> Result<&Chatwoot, u8> {
    match &slot.client {
        AnyProvider::Chatwoot(c) => Ok(c),
        other => {
            eprintln!(
                "error: provider `{}` is a {} provider; account webhooks are a Chatwoot feature",
                slot.settings.name,
                other.kind()
            );
            Err(EXIT_USAGE)
        }
    }
}

/// `webhooks register --provider NAME --url URL`: creates the account webhook to `url`
/// subscribed to contact_created and contact_updated, or updates the one already posting
/// there, and prints what to put in the config.
pub async fn register(settings: &Settings, slot: &ProviderSlot<AnyProvider>, url: &str) -> u8 {
    let client = match chatwoot(slot) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let name = &slot.settings.name;
    let parsed = match url::Url::parse(url.trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => u,
        _ => {
            eprintln!(
                "error: --url `{url}` is not an http(s) URL; give the address Chatwoot posts to, e.g. https://sync.example.com/webhooks/{name}"
            );
            return EXIT_USAGE;
        }
    };
    let expected = format!("/webhooks/{name}");
    if !parsed.path().ends_with(&expected) {
        eprintln!(
            "warning: contact-sync receives this provider's events at {expected} on [http] listen; {url} does not end with it (fine only if a proxy rewrites the path)"
        );
    }
    if parsed.scheme() == "http" {
        eprintln!(
            "warning: {url} is plain http: events (contact names, emails, phones) travel unencrypted; put the endpoint behind https"
        );
    }
    let existing = match client.list_webhooks().await {
        Ok(list) => list
            .into_iter()
            .find(|w| w.url == parsed.as_str() || w.url == url),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let (webhook, action) = match &existing {
        Some(w) => (
            client.update_webhook(&w.id, parsed.as_str()).await,
            "updated",
        ),
        None => (client.create_webhook(parsed.as_str()).await, "created"),
    };
    let webhook = match webhook {
        Ok(w) => w,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    println!(
        "webhook {} {action}: {} ({})",
        webhook.id,
        webhook.url,
        describe_subscriptions(&webhook)
    );
    println!();
    let env = format!(
        "{}_WEBHOOK_SECRET",
        name.to_ascii_uppercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    match &webhook.secret {
        Some(secret) => {
            println!("signing secret: {secret}");
            println!();
            println!("Keep it like an API key. Put it in the environment or a file and add to the");
            println!("[[providers]] table of `{name}`:");
            println!();
            println!(
                "    webhook_secret_env = \"{env}\"      # or webhook_secret_file = \"/run/secrets/{name}_webhook\""
            );
        }
        None if action == "updated" => {
            println!("Chatwoot returned no signing secret for the existing webhook; the one shown");
            println!(
                "when it was created still signs its events. Add to the [[providers]] table of `{name}`:"
            );
            println!();
            println!("    webhook_secret_env = \"{env}\"      # or webhook_secret_file = \"...\"");
        }
        None => {
            println!(
                "Chatwoot returned no signing secret: this version does not sign its webhooks."
            );
            println!(
                "contact-sync refuses unsigned events unless the [[providers]] table of `{name}` has"
            );
            println!();
            println!("    webhook_allow_unsigned = true");
            println!();
            println!(
                "Then anyone who can reach the endpoint can make contact-sync re-read a contact:"
            );
            println!(
                "keep it reachable from Chatwoot only (firewall, private network), or upgrade Chatwoot."
            );
        }
    }
    if settings.http_listen.is_none() {
        println!();
        println!(
            "The config has no [http] listen yet: add one (e.g. [http] listen = \"127.0.0.1:9477\")"
        );
        println!("and make {url} reach it.");
    }
    EXIT_OK
}

/// `webhooks list --provider NAME`: one line per account webhook.
pub async fn list(slot: &ProviderSlot<AnyProvider>) -> u8 {
    let client = match chatwoot(slot) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.list_webhooks().await {
        Ok(list) if list.is_empty() => {
            println!(
                "no account webhooks; add one with `contact-sync webhooks register --provider {} --url URL`",
                slot.settings.name
            );
            EXIT_OK
        }
        Ok(list) => {
            let route = format!("/webhooks/{}", slot.settings.name);
            for w in &list {
                let ours = if w.url.ends_with(&route) {
                    "  (contact-sync)"
                } else {
                    ""
                };
                println!("{}  {}  {}{ours}", w.id, w.url, describe_subscriptions(w));
            }
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

/// The subscriptions, and whether the contact events are among them.
fn describe_subscriptions(w: &Webhook) -> String {
    if w.subscriptions.is_empty() {
        return "every event".to_owned();
    }
    let missing: Vec<&str> = WEBHOOK_EVENTS
        .iter()
        .copied()
        .filter(|e| !w.subscriptions.iter().any(|s| s == e))
        .collect();
    let text = w.subscriptions.join(", ");
    if missing.is_empty() {
        text
    } else {
        format!("{text}; missing {}", missing.join(", "))
    }
}
