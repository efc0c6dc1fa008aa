//! Shared fixtures of the end-to-end tests: the four simulated providers, a config
//! pointing at them, the real binary, and views of what each provider holds.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use contact_sync::demo::{KeyStyle, config_for};
use contact_sync::simulator::{SimOptions, Simulation, seed};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Output;

pub const SEED: u64 = 11;

pub struct World {
    pub sim: Simulation,
    _dir: tempfile::TempDir,
    pub config: PathBuf,
    pub keys: Vec<(String, String)>,
    pub people: u64,
}

impl World {
    pub async fn new(people: u64) -> World {
        let sim = Simulation::start(SimOptions {
            contacts: people,
            seed: SEED,
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let info = sim.info();
        let mut text = config_for(&info, &dir.path().join("contacts.db"), KeyStyle::Env);
        // Fast retries so fault tests stay quick (the policy itself is the default one).
        text = text.replace("\nkind = ", "\nretry_base_delay = \"20ms\"\nkind = ");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
        let key = |p: &str| info[p]["api_key"].as_str().unwrap().to_owned();
        let keys = vec![
            ("SIM_CHATWOOT_KEY".to_owned(), key("chatwoot")),
            ("SIM_MAIAGENT_KEY".to_owned(), key("maiagent")),
            ("SIM_AGENTALK_KEY".to_owned(), key("agentalk")),
            ("SIM_DMCHAMP_KEY".to_owned(), key("dmchamp")),
        ];
        World {
            sim,
            _dir: dir,
            config,
            keys,
            people,
        }
    }

    /// Runs the binary with `args` (plus `--config`) off the async runtime.
    pub async fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_contact-sync"));
        cmd.args(args).arg("--config").arg(&self.config);
        cmd.env_remove("CONTACT_SYNC_CONFIG")
            .env("RUST_LOG", "contact_sync=info");
        for (k, v) in &self.keys {
            cmd.env(k, v);
        }
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// Starts `--sync-now` in the background.
    pub fn spawn_sync(&self) -> std::process::Child {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_contact-sync"));
        cmd.arg("--sync-now").arg("--config").arg(&self.config);
        cmd.env_remove("CONTACT_SYNC_CONFIG")
            .env("RUST_LOG", "contact_sync=warn");
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        for (k, v) in &self.keys {
            cmd.env(k, v);
        }
        cmd.spawn().unwrap()
    }

    pub fn total_writes(&self) -> u64 {
        self.writes().iter().sum()
    }

    pub async fn sync(&self) -> Output {
        self.run(&["--sync-now"]).await
    }

    pub async fn status(&self) -> Value {
        let out = self.run(&["status", "--json"]).await;
        assert!(out.status.success(), "{out:?}");
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn writes(&self) -> [u64; 4] {
        [
            self.sim.chatwoot.log().counters().writes,
            self.sim.maiagent.log().counters().writes,
            self.sim.agentalk.log().counters().writes,
            self.sim.dmchamp.log().counters().writes,
        ]
    }

    /// Expected sizes after convergence: `(known, in agentalk, in dm champ)`. Only people
    /// seeded into an enumerable provider (Chatwoot, MaiAgent) can be known to the sync;
    /// people only in Agentalk or DM Champ stay where they are.
    pub fn expected(&self) -> (usize, usize, usize) {
        let (mut known, mut ata, mut dmc) = (0, 0, 0);
        for p in seed::people(SEED, self.people) {
            let at = seed::placement(SEED, p.index);
            let is_known = at.chatwoot || at.maiagent;
            let phone = p.phone_e164.is_some();
            known += usize::from(is_known);
            ata += usize::from((is_known && phone) || at.agentalk);
            dmc += usize::from((is_known && phone) || at.dmchamp);
        }
        (known, ata, dmc)
    }

    pub fn chatwoot(&self) -> Vec<Value> {
        contacts(&self.sim.chatwoot.state().dump())
    }
    pub fn maiagent(&self) -> Vec<Value> {
        contacts(&self.sim.maiagent.state().dump())
    }
    pub fn agentalk(&self) -> Vec<Value> {
        contacts(&self.sim.agentalk.state().dump())
    }
    pub fn dmchamp(&self) -> Vec<Value> {
        contacts(&self.sim.dmchamp.state().dump())
    }

    pub fn chatwoot_url(&self, path: &str) -> String {
        let info = self.sim.info();
        format!(
            "{}/api/v1/accounts/{}{path}",
            info["chatwoot"]["base_url"].as_str().unwrap(),
            info["chatwoot"]["account_id"]
        )
    }

    pub fn chatwoot_token(&self) -> String {
        self.sim.info()["chatwoot"]["api_key"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

pub fn contacts(dump: &Value) -> Vec<Value> {
    dump["contacts"].as_array().cloned().unwrap_or_default()
}

pub fn text(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

/// Contacts per lower-cased email: every value must be 1 (no duplicates).
pub fn assert_no_duplicate_emails(provider: &str, contacts: &[Value]) {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for c in contacts {
        let email = text(c, "email").trim().to_lowercase();
        if !email.is_empty() {
            *seen.entry(email).or_default() += 1;
        }
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "{provider} holds duplicates: {dups:?}");
}

pub fn assert_converged(world: &World) {
    let (known, in_ata, in_dmc) = world.expected();
    let (cw, mai, ata, dmc) = (
        world.chatwoot(),
        world.maiagent(),
        world.agentalk(),
        world.dmchamp(),
    );
    assert_eq!(cw.len(), known, "chatwoot holds everyone known once");
    assert_eq!(mai.len(), known, "maiagent holds everyone known once");
    assert_eq!(
        ata.len(),
        in_ata,
        "agentalk holds everyone known with a phone once"
    );
    assert_eq!(
        dmc.len(),
        in_dmc,
        "dm champ holds everyone known with a phone once"
    );
    for (name, list) in [
        ("chatwoot", &cw),
        ("maiagent", &mai),
        ("agentalk", &ata),
        ("dmchamp", &dmc),
    ] {
        assert_no_duplicate_emails(name, list);
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The end state of a converged world, for comparing runs: per provider, the sorted
/// (email, name) pairs.
pub fn end_state(world: &World) -> Vec<Vec<(String, String)>> {
    [
        world.chatwoot(),
        world.maiagent(),
        world.agentalk(),
        world.dmchamp(),
    ]
    .into_iter()
    .map(|list| {
        let mut v: Vec<(String, String)> = list
            .iter()
            .map(|c| {
                let name = if c.get("firstName").is_some() {
                    format!("{} {}", text(c, "firstName"), text(c, "lastName"))
                } else {
                    text(c, "name")
                };
                (text(c, "email").trim().to_lowercase(), name)
            })
            .collect();
        v.sort();
        v
    })
    .collect()
}
