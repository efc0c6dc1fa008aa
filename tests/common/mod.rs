//! Shared fixtures of the end-to-end tests: the simulated providers (every registered
//! one, or named instances such as two Chatwoot accounts), a config pointing at them,
//! the real binary, and views of what each provider holds. Nothing here names a kind
//! except the Chatwoot URL helpers: the kinds come from `simulator::PROVIDERS`.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use contact_sync::demo::{KeyStyle, config_for, config_header, provider_block};
use contact_sync::simulator::{
    InstanceSpec, PROVIDERS, RunningProvider, SimOptions, Simulation, seed,
};
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
    /// Every registered simulated provider (one instance each, named as the demo names
    /// them), seeded with `people`, and a config pointing at them.
    pub async fn new(people: u64) -> World {
        World::start(SimOptions {
            contacts: people,
            seed: SEED,
            ..SimOptions::default()
        })
        .await
    }

    /// As [`World::new`], with the identity cases seeded on top of the population
    /// (`seed::identity_cases`: WhatsApp privacy ids in the chat platforms, MaiAgent
    /// records sharing a phone).
    pub async fn with_identity_cases(people: u64) -> World {
        World::start(SimOptions {
            contacts: people,
            seed: SEED,
            identity_cases: true,
        })
        .await
    }

    async fn start(options: SimOptions) -> World {
        let people = options.contacts;
        let sim = Simulation::start(options).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let info = sim.info();
        let text = config_for(&info, &dir.path().join("contacts.db"), KeyStyle::Env);
        let keys = PROVIDERS
            .iter()
            .map(|e| {
                let key = info[e.kind]["api_key"].as_str().unwrap().to_owned();
                (e.key_env(), key)
            })
            .collect();
        World::finish(sim, dir, &text, keys, people)
    }

    /// The named instances of `instances` (e.g. two Chatwoot accounts and a MaiAgent
    /// workspace), seeded with `people` (instance 0 of a kind holds what it holds in
    /// [`World::new`], other instances their own share), and a config with one
    /// `[[providers]]` block per instance, its key read from `SIM_<NAME>_KEY`.
    pub async fn with_instances(people: u64, instances: &[InstanceSpec]) -> World {
        let sim = Simulation::start_instances(
            SimOptions {
                contacts: people,
                seed: SEED,
                ..SimOptions::default()
            },
            instances,
        )
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut text = config_header(&dir.path().join("contacts.db"));
        let mut keys = Vec::new();
        for i in sim.instances() {
            let env = format!(
                "SIM_{}_KEY",
                i.name
                    .to_ascii_uppercase()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            );
            let info = i.server.info();
            text.push_str(&provider_block(
                &i.name,
                i.server.kind(),
                &info,
                KeyStyle::Env,
                &env,
            ));
            keys.push((env, info["api_key"].as_str().unwrap().to_owned()));
        }
        World::finish(sim, dir, &text, keys, people)
    }

    fn finish(
        sim: Simulation,
        dir: tempfile::TempDir,
        text: &str,
        keys: Vec<(String, String)>,
        people: u64,
    ) -> World {
        // Fast retries so fault tests stay quick (the policy itself is the default one).
        let text = text.replace("\nkind = ", "\nretry_base_delay = \"20ms\"\nkind = ");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap();
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

    /// The first running instance of `kind`.
    pub fn server(&self, kind: &str) -> &dyn RunningProvider {
        self.sim
            .provider(kind)
            .unwrap_or_else(|| panic!("no simulated {kind} running"))
    }

    /// The running instance named `name`.
    pub fn instance(&self, name: &str) -> &dyn RunningProvider {
        self.sim
            .instance(name)
            .unwrap_or_else(|| panic!("no simulated provider named {name}"))
    }

    /// Write requests each instance received, in the order they were started (for
    /// [`World::new`]: registry order, as `simulator::PROVIDERS` lists the kinds).
    pub fn writes(&self) -> Vec<u64> {
        self.sim
            .instances()
            .iter()
            .map(|i| i.server.log().counters().writes)
            .collect()
    }

    /// How many people a sync can know: those seeded into a provider it can list.
    pub fn known(&self) -> usize {
        seed::people(SEED, self.people)
            .filter(|p| {
                seed::placement(SEED, p.index)
                    .providers()
                    .any(|at| at.listable)
            })
            .count()
    }

    /// Expected contacts per kind after convergence (instance 0 of each). Only people
    /// seeded into a listable provider can be known to the sync; a provider that can
    /// only look people up holds those it was seeded with plus everyone known it can
    /// store (with a phone, where it needs one); a listable one holds everyone known.
    pub fn expected(&self) -> Vec<(&'static str, usize)> {
        self.expected_without(&[])
    }

    /// As [`World::expected`], when the listable platforms in `unread` could not be read:
    /// only the people the others list are known.
    pub fn expected_without(&self, unread: &[&str]) -> Vec<(&'static str, usize)> {
        let kinds: Vec<seed::Provider> = seed::Provider::all()
            .filter(|p| self.sim.provider(p.kind).is_some())
            .collect();
        let mut held = vec![0usize; kinds.len()];
        for p in seed::people(SEED, self.people) {
            let at = seed::placement(SEED, p.index);
            let known = at
                .providers()
                .any(|q| q.listable && !unread.contains(&q.kind));
            let phone = p.phone_e164.is_some();
            for (n, kind) in held.iter_mut().zip(&kinds) {
                let storable = phone || !kind.needs_phone;
                let holds = if kind.listable {
                    known
                } else {
                    (known && storable) || at.contains(*kind)
                };
                *n += usize::from(holds);
            }
        }
        kinds.iter().map(|k| k.kind).zip(held).collect()
    }

    /// The contacts instance 0 of `kind` holds (its dump's `contacts`).
    pub fn contacts(&self, kind: &str) -> Vec<Value> {
        contacts(&self.server(kind).dump())
    }

    /// Chatwoot's API URL of `path` (instance 0).
    pub fn chatwoot_url(&self, path: &str) -> String {
        let info = self.sim.info();
        format!(
            "{}/api/v1/accounts/{}{path}",
            info["chatwoot"]["base_url"].as_str().unwrap(),
            info["chatwoot"]["account_id"]
        )
    }

    /// Chatwoot's API token (instance 0).
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
    for (kind, expected) in world.expected() {
        let list = world.contacts(kind);
        let profile = seed::Provider::of(kind).unwrap();
        let who = if !profile.listable && profile.needs_phone {
            "everyone known with a phone"
        } else {
            "everyone known"
        };
        assert_eq!(list.len(), expected, "{kind} holds {who} once");
        assert_no_duplicate_emails(kind, &list);
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// One `--sync-now` that must exit 0 (its output in the failure message).
pub async fn sync_ok(world: &World) {
    let out = world.sync().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );
}

/// A command with `--json` that must exit 0; its stdout parsed.
pub async fn json_of(world: &World, args: &[&str]) -> Value {
    let out = world.run(args).await;
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The end state of a converged world, for comparing runs: per provider, the sorted
/// (email, name) pairs.
pub fn end_state(world: &World) -> Vec<Vec<(String, String)>> {
    world
        .sim
        .instances()
        .iter()
        .map(|i| contacts(&i.server.dump()))
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

impl World {
    /// Adds `line` to the config's `[sync]` section.
    pub fn set_sync(&self, line: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let text = text.replacen("[sync]\n", &format!("[sync]\n{line}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
    }

    /// Adds `line` to the `[[providers]]` block of the instance named `name`.
    pub fn set_provider(&self, name: &str, line: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let anchor = format!("name = \"{name}\"\n");
        assert!(text.contains(&anchor), "no provider named {name}:\n{text}");
        let text = text.replacen(&anchor, &format!("{anchor}{line}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
    }

    /// The instance names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.sim
            .instances()
            .iter()
            .map(|i| i.name.clone())
            .collect()
    }

    /// Someone types a contact into MaiAgent (`fields`: `name`, `phoneNumber`, `email`, …,
    /// as its API takes them); returns the new record's id.
    pub async fn maiagent_record(&self, fields: Value) -> String {
        let info = self.sim.info();
        let mut body = fields;
        body["inboxes"] = serde_json::json!([{"id": info["maiagent"]["inbox_id"]}]);
        let r = reqwest::Client::builder()
            .build()
            .unwrap()
            .post(format!(
                "{}/api/contacts/",
                info["maiagent"]["base_url"].as_str().unwrap()
            ))
            .header(
                "Authorization",
                format!("Api-Key {}", info["maiagent"]["api_key"].as_str().unwrap()),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let answer = r.text().await.unwrap();
        assert_eq!(status, 201, "{answer}");
        let created: Value = serde_json::from_str(&answer).unwrap();
        text(&created, "id")
    }

    /// The store file.
    #[allow(clippy::used_underscore_binding)]
    pub fn store_path(&self) -> PathBuf {
        self.config.with_file_name("contacts.db")
    }

    /// Runs the binary with `args` (plus `--config`) and extra environment variables.
    pub async fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_contact-sync"));
        cmd.args(args).arg("--config").arg(&self.config);
        cmd.env_remove("CONTACT_SYNC_CONFIG")
            .env("RUST_LOG", "contact_sync=info");
        for (k, v) in &self.keys {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }
}
