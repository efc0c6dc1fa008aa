//! `contact-sync demo`: the four simulated providers in-process, seeded with overlapping
//! people, synced twice into a temporary store — the first cycle merges and propagates,
//! the second shows that nothing is left to write.

use crate::config;
use crate::simulator::{SimOptions, Simulation};
use crate::store::{self, Store};
use crate::sync::{CycleOptions, Engine};
use serde_json::Value;
use std::fmt::Write;

/// The config a user would write for the simulation described by `info` (DESIGN §2's
/// `simulate` object), with literal keys and the store at `store_path`.
pub fn config_for(info: &Value, store_path: &std::path::Path, key_style: KeyStyle) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let key = |name: &str, value: &Value| match key_style {
        KeyStyle::Literal => format!("api_key = \"{}\"", s(value)),
        KeyStyle::Env => format!("api_key_env = \"{name}\""),
    };
    format!(
        r#"[store]
path = "{store}"

[sync]
default_region = "US"

[[providers]]
name = "support"
kind = "chatwoot"
base_url = "{cw_url}"
account_id = {cw_account}
inbox_id = {cw_inbox}
{cw_key}

[[providers]]
name = "sales-bot"
kind = "maiagent"
base_url = "{mai_url}"
inbox_id = "{mai_inbox}"
{mai_key}

[[providers]]
name = "whatsapp"
kind = "agentalk"
base_url = "{ata_url}"
{ata_key}

[[providers]]
name = "campaigns"
kind = "dmchamp"
base_url = "{dmc_url}"
{dmc_key}
"#,
        store = store_path.display(),
        cw_url = s(&info["chatwoot"]["base_url"]),
        cw_account = info["chatwoot"]["account_id"],
        cw_inbox = info["chatwoot"]["inbox_id"],
        cw_key = key("SIM_CHATWOOT_KEY", &info["chatwoot"]["api_key"]),
        mai_url = s(&info["maiagent"]["base_url"]),
        mai_inbox = s(&info["maiagent"]["inbox_id"]),
        mai_key = key("SIM_MAIAGENT_KEY", &info["maiagent"]["api_key"]),
        ata_url = s(&info["agentalk"]["base_url"]),
        ata_key = key("SIM_AGENTALK_KEY", &info["agentalk"]["api_key"]),
        dmc_url = s(&info["dmchamp"]["base_url"]),
        dmc_key = key("SIM_DMCHAMP_KEY", &info["dmchamp"]["api_key"]),
    )
}

/// How [`config_for`] writes API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `api_key = "..."` (the demo; a warning is logged).
    Literal,
    /// `api_key_env = "SIM_<PROVIDER>_KEY"` (the environment must hold them).
    Env,
}

/// Runs the demo and returns its text, or an error message.
pub async fn run(contacts: u64) -> Result<String, String> {
    let mut out = String::new();
    let sim = Simulation::start(SimOptions { contacts, seed: 7 })
        .await
        .map_err(|e| format!("cannot start the simulated providers: {e}"))?;
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let store_path = dir.path().join("contacts.db");
    let text = config_for(&sim.info(), &store_path, KeyStyle::Literal);
    let settings = config::from_toml_str(&text).map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "Started four simulated providers on loopback, seeded with {contacts} people spread over them\n\
         (the same person written differently in each: local phone formats, mixed-case emails):"
    );
    for p in &settings.providers {
        let _ = writeln!(
            out,
            "  {:<10} {:<9} {}",
            p.name,
            p.kind.as_str(),
            p.base_url
        );
    }
    let slots = crate::slots::build_slots(&settings, &[])
        .map_err(|_| "cannot build the provider clients".to_owned())?;
    let store = Store::open(&store_path).await.map_err(|e| e.to_string())?;
    let mut engine = Engine::new(store, slots, settings.default_region);
    let opts = CycleOptions {
        drain_all: true,
        ..CycleOptions::default()
    };
    let first = engine.run_cycle(&opts).await.map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "\nFirst cycle: pull, match, merge, push ({} write requests)\n",
        first.write_requests()
    );
    out.push_str(&first.summary_table());

    let people = engine
        .store()
        .call(|c| store::outbox::sample_people(c, 4))
        .await
        .map_err(|e| e.to_string())?;
    let _ = writeln!(out, "\nA few people as every provider now holds them:");
    for (person, links) in people {
        let get = |k: &str| person.fields.get(k).cloned().unwrap_or_default();
        let tags: Vec<&str> = person.tags.names().collect();
        let _ = writeln!(
            out,
            "  {} <{}> {}  tags: {}",
            get("name"),
            get("email"),
            get("phone"),
            if tags.is_empty() {
                "-".to_owned()
            } else {
                tags.join(", ")
            }
        );
        let held: Vec<String> = links.iter().map(|(p, id)| format!("{p} #{id}")).collect();
        let _ = writeln!(out, "      held by: {}", held.join(", "));
    }
    let second = engine.run_cycle(&opts).await.map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "\nSecond cycle: nothing changed anywhere, so {} write requests were sent.\n",
        second.write_requests()
    );
    out.push_str(&second.summary_table());
    let _ = writeln!(
        out,
        "\nNext: `contact-sync simulate --contacts 100 --info-file sim.json` serves the same\n\
         simulated providers until Ctrl-C; point a config at them (see README) and run\n\
         `contact-sync --config FILE --sync-now`."
    );
    sim.shutdown().await;
    if first.ok() && second.ok() {
        Ok(out)
    } else {
        Err(format!(
            "{out}\nthe demo cycle reported failures (see above)"
        ))
    }
}
