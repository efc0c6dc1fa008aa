//! `contact-sync demo`: every simulated provider in-process, seeded with overlapping
//! people, synced twice into a temporary store — the first cycle merges and propagates,
//! the second shows that nothing is left to write.

use crate::config;
use crate::simulator::{PROVIDERS, SimOptions, Simulation};
use crate::store::Store;
use crate::sync::{CycleOptions, Engine};
use serde_json::Value;
use std::fmt::Write;

/// The config a user would write for the simulation described by `info` (the object
/// `contact-sync simulate` prints), with the store at `store_path`: one `[[providers]]`
/// block for every registered simulated provider `info` describes, named as the demo
/// names it, its key written as `key_style` says (`SIM_<KIND>_KEY` for
/// [`KeyStyle::Env`]).
pub fn config_for(info: &Value, store_path: &std::path::Path, key_style: KeyStyle) -> String {
    let mut out = config_header(store_path);
    for e in PROVIDERS {
        if let Some(described) = info.get(e.kind) {
            out.push_str(&provider_block(
                e.demo_name,
                e.kind,
                described,
                key_style,
                &e.key_env(),
            ));
        }
    }
    out
}

/// The `[store]` and `[sync]` tables of a config for simulated providers.
pub fn config_header(store_path: &std::path::Path) -> String {
    format!(
        "[store]\npath = \"{}\"\n\n[sync]\ndefault_region = \"US\"\n",
        store_path.display()
    )
}

/// One `[[providers]]` block (with a blank line before it) for the simulated provider of
/// `kind` that `described` describes (its entry of the `simulate` object), named `name`;
/// with [`KeyStyle::Env`] the key is read from `key_env`.
pub fn provider_block(
    name: &str,
    kind: &str,
    described: &Value,
    key_style: KeyStyle,
    key_env: &str,
) -> String {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let mut out = format!(
        "\n[[providers]]\nname = \"{name}\"\nkind = \"{kind}\"\nbase_url = \"{}\"\n",
        s(&described["base_url"])
    );
    if let Some(e) = crate::simulator::entry_of(kind) {
        for line in (e.config_lines)(described) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    match key_style {
        KeyStyle::Literal => {
            let _ = writeln!(out, "api_key = \"{}\"", s(&described["api_key"]));
        }
        KeyStyle::Env => {
            let _ = writeln!(out, "api_key_env = \"{key_env}\"");
        }
    }
    out
}

/// How [`config_for`] writes API keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStyle {
    /// `api_key = "..."` (the demo; a warning is logged).
    Literal,
    /// `api_key_env = "SIM_<PROVIDER>_KEY"` (the environment must hold them).
    Env,
}

/// `four` for 4 (up to ten), else the digits.
fn number_word(n: usize) -> String {
    const WORDS: [&str; 11] = [
        "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    ];
    WORDS
        .get(n)
        .map_or_else(|| n.to_string(), |w| (*w).to_owned())
}

/// Runs the demo and returns its text, or an error message.
pub async fn run(contacts: u64) -> Result<String, String> {
    let mut out = String::new();
    let sim = Simulation::start(SimOptions {
        contacts,
        seed: 7,
        ..SimOptions::default()
    })
    .await
    .map_err(|e| format!("cannot start the simulated providers: {e}"))?;
    let dir =
        tempfile::tempdir().map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let store_path = dir.path().join("contacts.db");
    let text = config_for(&sim.info(), &store_path, KeyStyle::Literal);
    let settings = config::from_toml_str(&text).map_err(|e| e.to_string())?;
    let _ = writeln!(
        out,
        "Started {} simulated providers on loopback, seeded with {contacts} people spread over them\n\
         (the same person written differently in each: local phone formats, mixed-case emails):",
        number_word(PROVIDERS.len())
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
    let mut engine = Engine::new(
        store,
        slots,
        settings.default_region,
        crate::clock::Clock::system(),
    );
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
        .sample_people(4)
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
