//! `cargo bench --bench sync`: full cycles of the real engine against the simulated
//! providers over loopback, at 10k and 100k people (and 1M with `BENCH_1M=1` or `--1m`),
//! each figure the median and range of `BENCH_RUNS` (default 3) runs, printed as tables
//! and written to `<target>/bench-sync.csv`. BENCHMARKS.md explains every figure.
//!
//! Processes (so that the engine's memory is measured alone):
//! - the **orchestrator** (this binary without arguments) starts everything, changes data
//!   in the simulators between cycles, reads their request counters, and reports;
//! - the **simulators** run in their own process: the package binary `contact-sync
//!   simulate --contacts N --seed S` (found through `CARGO_BIN_EXE_contact-sync`, which
//!   cargo sets for benches and builds before them) for the four providers with realistic
//!   overlap, and this binary with `__sim-one N SEED` for one MaiAgent workspace holding
//!   all N people (the single-provider figures);
//! - the **engine** runs in a fresh process per run (this binary with `__engine CONFIG`),
//!   the same code `contact-sync --sync-now` runs (`Engine::run_cycle` over a store and
//!   the real HTTP clients), driven one cycle at a time over stdin; after each command it
//!   reports its own peak RSS (`VmHWM` of `/proc/self/status`) and the cycle's stage
//!   timings.
//!
//! Environment: `BENCH_1M=1` adds the 1M size; `BENCH_SIZES=10000,50000` replaces the
//! sizes; `BENCH_RUNS=5` changes the number of runs; `BENCH_SCENARIOS=one,four` picks the
//! scenario groups (`ceiling`, `one`, `four`; default all of these; `webhook` runs the
//! webhook latency scenario: the daemon with a webhook registered in the simulated
//! Chatwoot, `BENCH_WEBHOOK_EDITS` (default 1,000) renames over `BENCH_WEBHOOK_PEOPLE`
//! (default 2,000) people, median and p99 latency and requests per event; `ratelimit` runs
//! a first import against `simulate --rate-limits real`: `BENCH_RATELIMIT_PEOPLE` (default
//! 5,000) people, the undocumented providers allowing `BENCH_RATELIMIT_OTHERS` (default
//! 6,000) requests a minute; per provider the 429 share and the rate-limit utilisation).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contact_sync::clock::Clock;
use contact_sync::demo::{KeyStyle, config_for};
use contact_sync::domain::RemoteRecord;
use contact_sync::provider::Provider;
use contact_sync::simulator::{
    PROVIDERS, SimCredentials, SimServer, SimulatedProvider, maiagent, seed,
};
use contact_sync::store::Store;
use contact_sync::sync::listing::Listing;
use contact_sync::sync::{CycleOptions, Engine};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEED: u64 = 7;
/// Share of the contacts changed before the change cycle, in percent.
const CHANGED_PERCENT: u64 = 1;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("__engine") => engine_child(Path::new(&args[1])),
        Some("__sim-one") => sim_one_child(args[1].parse().unwrap(), args[2].parse().unwrap()),
        _ => orchestrate(&args),
    }
}

// ---------------------------------------------------------------------------------------
// Child: the engine

fn runtime() -> tokio::runtime::Runtime {
    // The same runtime `contact-sync --sync-now` builds (`app::runtime`: one thread).
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// `(VmHWM, VmRSS)` of this process in KiB.
fn memory_kib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let get = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (get("VmHWM:"), get("VmRSS:"))
}

/// Runs the engine of `config` one command at a time: `cycle` (one full cycle, as
/// `--sync-now` runs it), `ceiling DB` (fetch + decode every page of the first provider,
/// then insert the same rows into a bare SQLite table at DB), `quit`. Answers one JSON line
/// per command.
fn engine_child(config: &Path) {
    let rt = runtime();
    rt.block_on(async {
        let text = std::fs::read_to_string(config).unwrap();
        let settings = contact_sync::config::from_toml_str(&text).unwrap();
        let store_path = settings.store_path.clone();
        let region = settings.default_region;
        let mut slots = Some(contact_sync::app::build_slots(&settings, &[]).unwrap());
        let mut engine = None;
        let stdin = std::io::stdin();
        let mut out = std::io::stdout();
        for line in stdin.lock().lines() {
            let line = line.unwrap();
            let mut words = line.split_whitespace();
            let answer = match words.next() {
                Some("cycle") => {
                    if engine.is_none() {
                        let store = Store::open(&store_path).await.unwrap();
                        engine = Some(Engine::new(
                            store,
                            slots.take().unwrap(),
                            region,
                            Clock::system(),
                        ));
                    }
                    let engine = engine.as_mut().unwrap();
                    let opts = CycleOptions {
                        drain_all: true,
                        ..CycleOptions::default()
                    };
                    let started = Instant::now();
                    let report = engine.run_cycle(&opts).await.unwrap();
                    let secs = started.elapsed().as_secs_f64();
                    let contacts: i64 = engine.store().contact_count().await.unwrap();
                    let providers: Vec<Value> = report
                        .providers
                        .iter()
                        .map(|p| {
                            json!({
                                "name": p.name, "kind": p.kind, "counts": p.counts,
                                "writes": p.write_requests, "error": p.error,
                                "conflicts": p.conflicts, "timings": p.timings,
                            })
                        })
                        .collect();
                    json!({"secs": secs, "contacts": contacts, "providers": providers})
                }
                Some("ceiling") => {
                    let db = PathBuf::from(words.next().unwrap());
                    ceiling(&slots.as_ref().unwrap()[0].client, &db).await
                }
                _ => break,
            };
            let (hwm, rss) = memory_kib();
            let mut answer = answer;
            answer["hwm_kib"] = json!(hwm);
            answer["rss_kib"] = json!(rss);
            writeln!(out, "{answer}").unwrap();
            out.flush().unwrap();
        }
    });
}

/// Hands the records of every page of `client`'s listing to `f`, in order.
async fn each_page<P: Provider>(client: &P, mut f: impl FnMut(Vec<RemoteRecord>)) {
    let mut listing = Listing::new(client);
    let mut fetched = listing.first().await;
    loop {
        let page = fetched.0.unwrap();
        f(page.records);
        match listing.next(page.next.as_deref()).await {
            Some(next) => fetched = next,
            None => break,
        }
    }
}

/// The ceilings: every page of `client` fetched and decoded (nothing else), then the same
/// rows inserted into one SQLite table with three secondary indexes, one transaction per
/// page, with a prepared statement.
async fn ceiling<P: Provider>(client: &P, db: &Path) -> Value {
    // Pass 1 (timed): every page fetched and decoded, then dropped — the engine never
    // holds more than a few pages either. Requested the way the engine requests them
    // (`Listing`: pages ahead when the listing is numbered).
    let started = Instant::now();
    let mut records = 0usize;
    each_page(client, |page| records += page.len()).await;
    let fetch_secs = started.elapsed().as_secs_f64();

    // Pass 2 (not timed): the same rows, kept for the insert ceiling.
    let mut pages = Vec::new();
    each_page(client, |page| pages.push(page)).await;

    let db = db.to_owned();
    let insert_secs = tokio::task::spawn_blocking(move || {
        let mut conn = rusqlite::Connection::open(&db).unwrap();
        // The store's own connection settings (WAL, synchronous = NORMAL, checkpoints).
        contact_sync::store::apply_pragmas(&conn).unwrap();
        conn.execute_batch(
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, remote_id TEXT NOT NULL, name TEXT NOT NULL,
                 email TEXT NOT NULL, phone TEXT NOT NULL, fields TEXT NOT NULL);
             CREATE UNIQUE INDEX contacts_remote ON contacts(remote_id);
             CREATE INDEX contacts_email ON contacts(email);
             CREATE INDEX contacts_phone ON contacts(phone);",
        )
        .unwrap();
        let started = Instant::now();
        for page in &pages {
            let tx = conn.transaction().unwrap();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "INSERT INTO contacts (remote_id, name, email, phone, fields) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )
                    .unwrap();
                for r in page {
                    let get = |k: &str| r.fields.get(k).map_or("", String::as_str);
                    stmt.execute(rusqlite::params![
                        r.remote_id,
                        get("name"),
                        get("email"),
                        get("phone"),
                        serde_json::to_string(&r.fields).unwrap(),
                    ])
                    .unwrap();
                }
            }
            tx.commit().unwrap();
        }
        started.elapsed().as_secs_f64()
    })
    .await
    .unwrap();
    json!({"records": records, "fetch_secs": fetch_secs, "insert_secs": insert_secs})
}

// ---------------------------------------------------------------------------------------
// Child: one MaiAgent workspace holding all N people

fn sim_one_child(people: u64, seed_value: u64) {
    let rt = runtime();
    rt.block_on(async {
        let all = SimCredentials::from_seed(seed_value);
        let creds = all.of::<maiagent::State>().unwrap().clone();
        let state = Arc::new(maiagent::State::new(creds.clone()));
        let seeded = Arc::clone(&state);
        tokio::task::spawn_blocking(move || {
            seeded.seed(
                seed::people(seed_value, people)
                    .map(|p| seed::written_for(seed_value, &p, maiagent::State::SEED)),
            );
        })
        .await
        .unwrap();
        let server = SimServer::start(
            Arc::clone(&state),
            maiagent::router(Arc::clone(&state)),
            maiagent::State::dump,
        )
        .await
        .unwrap();
        let info = json!({"maiagent": {
            "base_url": server.base_url(),
            "inbox_id": state.inbox_id(),
            "api_key": creds.api_key,
        }});
        println!("{info}");
        std::io::stdout().flush().unwrap();
        // Serve until the orchestrator closes our stdin.
        tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await
        .unwrap();
        server.shutdown().await;
    });
}

// ---------------------------------------------------------------------------------------
// Orchestrator: processes

/// A child process answering one JSON line per line sent.
struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(mut cmd: Command) -> Worker {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Worker {
            child,
            stdin,
            stdout,
        }
    }

    fn read_line(&mut self) -> Value {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("a child answered {line:?} (not JSON: {e})"))
    }

    fn ask(&mut self, command: &str) -> Value {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.read_line()
    }

    fn stop(mut self) {
        drop(self.stdin.take());
        if self
            .child
            .wait_timeout_or_kill(Duration::from_secs(10))
            .is_none()
        {
            eprintln!("a child did not stop in time and was killed");
        }
    }
}

trait WaitTimeout {
    fn wait_timeout_or_kill(&mut self, limit: Duration) -> Option<std::process::ExitStatus>;
}

impl WaitTimeout for Child {
    // The orchestrator is synchronous: there is no async runtime to block.
    #[allow(clippy::disallowed_methods)]
    fn wait_timeout_or_kill(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.kill();
        let _ = self.wait();
        None
    }
}

fn self_exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

fn start_sim_one(people: u64) -> (Worker, Value) {
    let mut cmd = Command::new(self_exe());
    cmd.arg("__sim-one")
        .arg(people.to_string())
        .arg(SEED.to_string());
    let mut w = Worker::spawn(cmd);
    let info = w.read_line();
    (w, info)
}

/// A child killed when dropped (also when the orchestrator panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sim_four(people: u64, dir: &Path) -> (KillOnDrop, Value) {
    start_sim_four_with(people, dir, &[])
}

// The orchestrator is synchronous: there is no async runtime to block.
#[allow(clippy::disallowed_methods)]
fn start_sim_four_with(people: u64, dir: &Path, extra: &[&str]) -> (KillOnDrop, Value) {
    let info_file = dir.join("sim.json");
    let child = Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .args(["simulate", "--contacts", &people.to_string()])
        .args(extra)
        .args(["--seed", &SEED.to_string(), "--info-file"])
        .arg(&info_file)
        .arg("-q")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let child = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_mins(10);
    loop {
        if let Ok(text) = std::fs::read_to_string(&info_file)
            && text.ends_with('\n')
        {
            return (child, serde_json::from_str(&text).unwrap());
        }
        assert!(Instant::now() < deadline, "the simulator did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_engine(config: &Path) -> Worker {
    let mut cmd = Command::new(self_exe());
    cmd.arg("__engine").arg(config);
    Worker::spawn(cmd)
}

fn one_provider_config(info: &Value, store: &Path) -> String {
    let m = &info["maiagent"];
    format!(
        "[store]\npath = \"{}\"\n\n[sync]\ndefault_region = \"US\"\n\n[[providers]]\nname = \"sales-bot\"\nkind = \"maiagent\"\nbase_url = \"{}\"\ninbox_id = \"{}\"\napi_key = \"{}\"\n",
        store.display(),
        m["base_url"].as_str().unwrap(),
        m["inbox_id"].as_str().unwrap(),
        m["api_key"].as_str().unwrap()
    )
}

// ---------------------------------------------------------------------------------------
// Orchestrator: HTTP to the simulators' control endpoints and APIs

struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            client: contact_sync::provider::http::build_client(Duration::from_mins(1)).unwrap(),
        }
    }

    fn reset_logs(&self, info: &Value) {
        for base in base_urls(info).values() {
            self.rt.block_on(async {
                let r = self
                    .client
                    .post(format!("{base}/__sim/reset-log"))
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().is_success());
            });
        }
    }

    /// `(reads, writes, answers of 400 or more)` per provider since the last reset.
    fn counters(&self, info: &Value) -> BTreeMap<String, (u64, u64, u64)> {
        base_urls(info)
            .into_iter()
            .map(|(name, base)| {
                let v: Value = self.rt.block_on(async {
                    self.client
                        .get(format!("{base}/__sim/counters"))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap()
                });
                let n = |k: &str| v[k].as_u64().unwrap();
                (name, (n("reads"), n("writes"), n("errors")))
            })
            .collect()
    }

    /// Per provider since the last reset: (requests, answered 429, first and last
    /// request in ms of the simulator's clock).
    fn rate_counters(&self, info: &Value) -> BTreeMap<String, (u64, u64, u64, u64)> {
        base_urls(info)
            .into_iter()
            .map(|(name, base)| {
                let v: Value = self.rt.block_on(async {
                    self.client
                        .get(format!("{base}/__sim/counters"))
                        .send()
                        .await
                        .unwrap()
                        .json()
                        .await
                        .unwrap()
                });
                let n = |k: &str| v[k].as_u64().unwrap();
                (
                    name,
                    (
                        n("requests"),
                        n("throttled"),
                        n("first_at_ms"),
                        n("last_at_ms"),
                    ),
                )
            })
            .collect()
    }

    /// Renames `percent`% of the MaiAgent contacts (spread over the whole listing);
    /// returns their ids, and whether each has a phone.
    fn change_maiagent(&self, info: &Value, percent: u64) -> (Vec<String>, Vec<bool>) {
        let m = &info["maiagent"];
        let base = m["base_url"].as_str().unwrap();
        let key = format!("Api-Key {}", m["api_key"].as_str().unwrap());
        self.rt.block_on(async {
            let page = |n: u64| {
                let client = self.client.clone();
                let key = key.clone();
                async move {
                    client
                        .get(format!("{base}/api/contacts/?page={n}&pageSize=100"))
                        .header("authorization", key)
                        .send()
                        .await
                        .unwrap()
                        .json::<Value>()
                        .await
                        .unwrap()
                }
            };
            let first = page(1).await;
            let total = first["count"].as_u64().unwrap();
            let wanted = (total * percent).div_ceil(100);
            let pages = total.div_ceil(100);
            // One contact from each of `wanted` pages spread over the listing (several per
            // page when there are fewer pages than contacts to change).
            let per_page = wanted.div_ceil(pages).max(1);
            let step = (pages / wanted.div_ceil(per_page)).max(1);
            let mut changed = Vec::new();
            let mut has_phone = Vec::new();
            let region = contact_sync::domain::normalize::DefaultRegion::parse("US").unwrap();
            let mut n = 1;
            while (changed.len() as u64) < wanted && n <= pages {
                let body = page(n).await;
                for c in body["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .take(per_page as usize)
                {
                    if changed.len() as u64 >= wanted {
                        break;
                    }
                    let id = c["id"].as_str().unwrap().to_owned();
                    let name = format!("{} Renamed", c["name"].as_str().unwrap_or("").trim());
                    let r = self
                        .client
                        .patch(format!("{base}/api/contacts/{id}/"))
                        .header("authorization", &key)
                        .json(&json!({"name": name}))
                        .send()
                        .await
                        .unwrap();
                    assert!(r.status().is_success(), "PATCH {id}: {}", r.status());
                    changed.push(id);
                    // MaiAgent shows a phone as text or, as some were typed, a number.
                    let phone = match &c["phoneNumber"] {
                        Value::String(p) => p.clone(),
                        Value::Number(n) => format!("+{n}"),
                        _ => String::new(),
                    };
                    has_phone.push(
                        contact_sync::domain::normalize::normalize_phone(&phone, region).is_some(),
                    );
                }
                n += step;
            }
            (changed, has_phone)
        })
    }
}

fn base_urls(info: &Value) -> BTreeMap<String, String> {
    info.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["base_url"].as_str().unwrap().to_owned()))
        .collect()
}

/// Writes the engine should send after `changed` MaiAgent contacts were renamed: one
/// update per other provider holding each of them.
fn expected_change_writes(store: &Path, changed: &[String]) -> u64 {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let maiagent: i64 = conn
        .query_row(
            "SELECT id FROM providers WHERE kind = 'maiagent'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // Index lookups only (`links_remote`, then `links_contact` per other provider): one
    // query per changed contact stays cheap at a million links.
    let mut stmt = conn
        .prepare(
            "SELECT count(*) FROM links m JOIN links o ON o.contact_id = m.contact_id
             WHERE m.provider_id = ?1 AND m.remote_id = ?2
             AND o.provider_id IN (SELECT id FROM providers WHERE id != ?1)
             AND o.state = 'active'",
        )
        .unwrap();
    changed
        .iter()
        .map(|id| {
            stmt.query_row(rusqlite::params![maiagent, id], |r| r.get::<_, i64>(0))
                .unwrap() as u64
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// Orchestrator: results

/// Every sample of every figure: (size, scenario, figure) → samples.
#[derive(Default)]
struct Results(BTreeMap<(u64, String, String), Vec<f64>>);

impl Results {
    fn add(&mut self, size: u64, scenario: &str, figure: &str, value: f64) {
        self.0
            .entry((size, scenario.to_owned(), figure.to_owned()))
            .or_default()
            .push(value);
    }

    fn get(&self, size: u64, scenario: &str, figure: &str) -> Option<Stats> {
        self.0
            .get(&(size, scenario.to_owned(), figure.to_owned()))
            .map(|v| Stats::of(v))
    }
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
    n: usize,
}

impl Stats {
    fn of(samples: &[f64]) -> Stats {
        let mut v = samples.to_vec();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            f64::midpoint(v[n / 2 - 1], v[n / 2])
        };
        Stats {
            median,
            min: v[0],
            max: v[n - 1],
            n,
        }
    }
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 || v.fract().abs() < f64::EPSILON {
        let s = format!("{v:.0}");
        // Thousands separators.
        let (sign, digits) = s.strip_prefix('-').map_or(("", s.as_str()), |d| ("-", d));
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        format!("{sign}{out}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn fmt_stats(s: Option<Stats>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if (s.max - s.min).abs() < f64::EPSILON => fmt_num(s.median),
        Some(s) => format!(
            "{} ({}–{})",
            fmt_num(s.median),
            fmt_num(s.min),
            fmt_num(s.max)
        ),
    }
}

fn add_cycle(results: &mut Results, size: u64, scenario: &str, answer: &Value, per: f64) {
    let secs = answer["secs"].as_f64().unwrap();
    results.add(size, scenario, "secs", secs);
    results.add(size, scenario, "contacts_per_s", per / secs);
    let providers = answer["providers"].as_array().unwrap();
    let mut writes = 0;
    let mut pulled = 0;
    for p in providers {
        writes += p["writes"].as_u64().unwrap();
        pulled += p["counts"]["pulled"].as_u64().unwrap();
        if let Some(e) = p["error"].as_str() {
            eprintln!("  ! {} failed: {e}", p["name"]);
        }
        let failed = p["counts"]["failed"].as_u64().unwrap();
        if failed > 0 {
            eprintln!("  ! {}: {failed} writes failed", p["name"]);
        }
        let kind = p["kind"].as_str().unwrap();
        for (stage, v) in p["timings"].as_object().unwrap() {
            results.add(
                size,
                scenario,
                &format!("stage.{kind}.{stage}_s"),
                v.as_f64().unwrap(),
            );
        }
    }
    results.add(size, scenario, "engine_writes", writes as f64);
    results.add(size, scenario, "records_listed", pulled as f64);
    results.add(
        size,
        scenario,
        "golden_contacts",
        answer["contacts"].as_f64().unwrap(),
    );
}

fn add_counters(
    results: &mut Results,
    size: u64,
    scenario: &str,
    counters: &BTreeMap<String, (u64, u64, u64)>,
) {
    let (mut reads, mut writes) = (0, 0);
    for (name, (r, w, e)) in counters {
        results.add(size, scenario, &format!("api.{name}.reads"), *r as f64);
        results.add(size, scenario, &format!("api.{name}.writes"), *w as f64);
        // DM Champ answers 404 to a lookup that finds nothing: errors are not failures.
        results.add(
            size,
            scenario,
            &format!("api.{name}.status_4xx_5xx"),
            *e as f64,
        );
        reads += r;
        writes += w;
    }
    results.add(size, scenario, "api.reads", reads as f64);
    results.add(size, scenario, "api.writes", writes as f64);
}

fn add_floor(
    results: &mut Results,
    size: u64,
    scenario: &str,
    kind: &str,
    floor: contact_sync::simulator::floor::Requests,
) {
    results.add(
        size,
        scenario,
        &format!("floor.{kind}.reads"),
        floor.reads as f64,
    );
    results.add(
        size,
        scenario,
        &format!("floor.{kind}.writes"),
        floor.writes as f64,
    );
}

/// A no-change cycle must send no write at all: say so loudly if one did.
fn warn_unless_no_writes(counters: &BTreeMap<String, (u64, u64, u64)>) {
    for (name, (_, writes, _)) in counters {
        if *writes > 0 {
            eprintln!("  ! the no-change cycle sent {writes} writes to {name}");
        }
    }
}

fn mib(kib: &Value) -> f64 {
    kib.as_f64().unwrap() / 1024.0
}

// ---------------------------------------------------------------------------------------
// Orchestrator: scenarios

fn run_ceiling(results: &mut Results, size: u64, runs: usize, info: &Value, dir: &Path) {
    for run in 0..runs {
        let rdir = dir.join(format!("ceiling-{run}"));
        std::fs::create_dir_all(&rdir).unwrap();
        let config = rdir.join("config.toml");
        std::fs::write(&config, one_provider_config(info, &rdir.join("unused.db"))).unwrap();
        let mut engine = start_engine(&config);
        let a = engine.ask(&format!("ceiling {}", rdir.join("bare.db").display()));
        engine.stop();
        let records = a["records"].as_f64().unwrap();
        results.add(size, "ceiling", "records", records);
        results.add(
            size,
            "ceiling",
            "fetch_per_s",
            records / a["fetch_secs"].as_f64().unwrap(),
        );
        results.add(
            size,
            "ceiling",
            "insert_per_s",
            records / a["insert_secs"].as_f64().unwrap(),
        );
        eprintln!(
            "  ceiling run {}: fetch+decode {:.2}s, bare insert {:.2}s ({records} rows)",
            run + 1,
            a["fetch_secs"].as_f64().unwrap(),
            a["insert_secs"].as_f64().unwrap()
        );
        let _ = std::fs::remove_dir_all(&rdir);
    }
}

fn run_one(results: &mut Results, size: u64, runs: usize, info: &Value, dir: &Path, http: &Http) {
    for run in 0..runs {
        let rdir = dir.join(format!("one-{run}"));
        std::fs::create_dir_all(&rdir).unwrap();
        let config = rdir.join("config.toml");
        std::fs::write(
            &config,
            one_provider_config(info, &rdir.join("contacts.db")),
        )
        .unwrap();
        let mut engine = start_engine(&config);
        http.reset_logs(info);
        let import = engine.ask("cycle");
        let counters = http.counters(info);
        let listed = import["providers"][0]["counts"]["pulled"].as_f64().unwrap();
        add_cycle(results, size, "one.import", &import, listed);
        add_counters(results, size, "one.import", &counters);
        http.reset_logs(info);
        let again = engine.ask("cycle");
        let counters = http.counters(info);
        add_cycle(results, size, "one.nochange", &again, listed);
        add_counters(results, size, "one.nochange", &counters);
        warn_unless_no_writes(&counters);
        results.add(size, "one", "peak_rss_mib", mib(&again["hwm_kib"]));
        results.add(size, "one", "import_peak_rss_mib", mib(&import["hwm_kib"]));
        engine.stop();
        eprintln!(
            "  one provider run {}: import {:.2}s, no-change {:.2}s, peak RSS {:.1} MiB",
            run + 1,
            import["secs"].as_f64().unwrap(),
            again["secs"].as_f64().unwrap(),
            mib(&again["hwm_kib"])
        );
        let _ = std::fs::remove_dir_all(&rdir);
    }
}

fn run_four(results: &mut Results, size: u64, runs: usize, dir: &Path, http: &Http) {
    for run in 0..runs {
        let rdir = dir.join(format!("four-{run}"));
        std::fs::create_dir_all(&rdir).unwrap();
        let started = Instant::now();
        let (sim, info) = start_sim_four(size, &rdir);
        eprintln!(
            "  four providers run {}: simulator seeded in {:.1}s",
            run + 1,
            started.elapsed().as_secs_f64()
        );
        let store = rdir.join("contacts.db");
        let config = rdir.join("config.toml");
        std::fs::write(&config, config_for(&info, &store, KeyStyle::Literal)).unwrap();
        let mut engine = start_engine(&config);

        http.reset_logs(&info);
        let import = engine.ask("cycle");
        let counters = http.counters(&info);
        let people = import["contacts"].as_f64().unwrap();
        add_cycle(results, size, "four.import", &import, people);
        add_counters(results, size, "four.import", &counters);
        // The call floor of this import, from the seed alone (src/simulator/floor.rs).
        let floors = contact_sync::simulator::floor::floors(SEED, size);
        for (kind, floor) in &floors {
            add_floor(results, size, "four.import", kind, floor.import);
        }

        // The first cycle after the import lists every record the import wrote and
        // settles its hash (a write resets a link's hash: the provider's own rendering of
        // it is only known from its listing). Measured apart; it must write nothing.
        http.reset_logs(&info);
        let settle = engine.ask("cycle");
        let counters = http.counters(&info);
        add_cycle(results, size, "four.settle", &settle, 1.0);
        add_counters(results, size, "four.settle", &counters);
        warn_unless_no_writes(&counters);

        http.reset_logs(&info);
        let again = engine.ask("cycle");
        let counters = http.counters(&info);
        let listed: f64 = again["providers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["counts"]["pulled"].as_f64().unwrap())
            .sum();
        add_cycle(results, size, "four.nochange", &again, listed);
        add_counters(results, size, "four.nochange", &counters);
        warn_unless_no_writes(&counters);
        for (kind, floor) in &floors {
            add_floor(results, size, "four.nochange", kind, floor.no_change);
        }

        let (changed, has_phone) = http.change_maiagent(&info, CHANGED_PERCENT);
        // The floor of the change cycle: the listings plus one update per other provider
        // holding each renamed person.
        for (kind, floor) in &floors {
            let entry = PROVIDERS.iter().find(|e| e.kind == *kind).unwrap();
            let renamed = if *kind == "maiagent" {
                Vec::new()
            } else {
                has_phone.clone()
            };
            add_floor(
                results,
                size,
                "four.change",
                kind,
                floor.changed(entry, renamed),
            );
        }
        http.reset_logs(&info);
        let change = engine.ask("cycle");
        let counters = http.counters(&info);
        add_cycle(results, size, "four.change", &change, listed);
        add_counters(results, size, "four.change", &counters);
        results.add(
            size,
            "four.change",
            "changed_contacts",
            changed.len() as f64,
        );
        let expected = expected_change_writes(&store, &changed);
        results.add(size, "four.change", "expected_writes", expected as f64);
        let sent: u64 = counters.values().map(|(_, w, _)| w).sum();
        if sent != expected {
            eprintln!("  ! the change cycle sent {sent} writes; {expected} were expected");
        }
        results.add(size, "four", "peak_rss_mib", mib(&change["hwm_kib"]));
        engine.stop();
        drop(sim);
        eprintln!(
            "  four providers run {}: import {:.2}s ({} people), settle {:.2}s, no-change {:.2}s, change {:.2}s, peak RSS {:.1} MiB",
            run + 1,
            import["secs"].as_f64().unwrap(),
            people,
            settle["secs"].as_f64().unwrap(),
            again["secs"].as_f64().unwrap(),
            change["secs"].as_f64().unwrap(),
            mib(&change["hwm_kib"])
        );
        let _ = std::fs::remove_dir_all(&rdir);
    }
}

// ---------------------------------------------------------------------------------------
// Orchestrator: rate limits

/// A first import of the four providers with `simulate --rate-limits real` (one-minute
/// windows; Chatwoot 3,000 a minute, the others `BENCH_RATELIMIT_OTHERS` a minute, default
/// 6,000) over `BENCH_RATELIMIT_PEOPLE` people (default 5,000), the client learning the
/// limits (no `requests_per_second`). Per provider: requests, the share answered 429, and
/// the rate it was answered at while busy (first to last request) against the allowed
/// rate, and the same minute by minute. Returns the tables.
fn run_ratelimit(results: &mut Results, dir: &Path, http: &Http) -> String {
    let people: u64 = std::env::var("BENCH_RATELIMIT_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5_000);
    let others: u64 = std::env::var("BENCH_RATELIMIT_OTHERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
    let settings = contact_sync::simulator::ratelimit::RateLimitSettings {
        window: Duration::from_mins(1),
        others_per_minute: others,
    };
    let rdir = dir.join("ratelimit");
    std::fs::create_dir_all(&rdir).unwrap();
    let others_arg = others.to_string();
    let (sim, info) = start_sim_four_with(
        people,
        &rdir,
        &["--rate-limits", "real", "--rate-limit-others", &others_arg],
    );
    let store = rdir.join("contacts.db");
    let config = rdir.join("config.toml");
    std::fs::write(&config, config_for(&info, &store, KeyStyle::Literal)).unwrap();
    let mut engine = start_engine(&config);
    http.reset_logs(&info);
    let sampler = MinuteSampler::start(&info);
    let import = engine.ask("cycle");
    let counters = http.rate_counters(&info);
    let minutes = sampler.finish(&counters);
    engine.stop();
    drop(sim);
    let secs = import["secs"].as_f64().unwrap();
    for p in import["providers"].as_array().unwrap() {
        if let Some(e) = p["error"].as_str() {
            eprintln!("  ! {} failed: {e}", p["name"]);
        }
        let failed = p["counts"]["failed"].as_u64().unwrap();
        if failed > 0 {
            eprintln!("  ! {}: {failed} writes failed", p["name"]);
        }
    }
    let mut out = format!(
        "\nRate limits (`simulate --rate-limits real`, one-minute windows, others {} a minute): \
         first import of {} people, {:.0} s\n\n\
         | provider | requests | answered 429 | busy | answered/s | allowed/s | utilisation |\n\
         |---|---|---|---|---|---|---|\n",
        fmt_num(others as f64),
        fmt_num(people as f64),
        secs
    );
    let mut by_minute = String::from(
        "\nAnswered requests per minute of the import, as a share of the allowed rate \
         (minutes counted from the start of the import; the last one is partial):\n\n\
         | provider | minutes at >= 90% / with requests | per minute |\n|---|---|---|\n",
    );
    for (kind, (requests, throttled, first, last)) in &counters {
        let entry = PROVIDERS.iter().find(|e| e.kind == kind).unwrap();
        let allowed = (entry.rate_limits)(&settings)
            .first()
            .map_or(0.0, |l| settings.per_second(l.per_minute));
        let shares: Vec<f64> = minutes
            .get(kind)
            .map(|m| {
                m.iter()
                    .map(|(answered, secs)| *answered as f64 / (allowed * secs).max(1e-9))
                    .collect()
            })
            .unwrap_or_default();
        let busy_minutes = shares.iter().filter(|s| **s > 0.0).count();
        let full = shares.iter().filter(|s| **s >= 0.9).count();
        let series: Vec<String> = shares
            .iter()
            .map(|s| format!("{:.0}%", s * 100.0))
            .collect();
        let _ = writeln!(
            by_minute,
            "| {kind} | {full} / {busy_minutes} | {} |",
            series.join(" ")
        );
        results.add(
            people,
            "ratelimit",
            &format!("{kind}.minutes_at_90"),
            full as f64,
        );
        let busy = last.saturating_sub(*first) as f64 / 1000.0;
        let answered = (requests - throttled) as f64 / busy.max(1e-3);
        let share = *throttled as f64 / (*requests).max(1) as f64;
        let used = answered / allowed;
        let _ = writeln!(
            out,
            "| {kind} | {} | {} ({:.2}%) | {busy:.0} s | {answered:.1} | {allowed:.1} | {:.0}% |",
            fmt_num(*requests as f64),
            fmt_num(*throttled as f64),
            share * 100.0,
            used * 100.0
        );
        results.add(
            people,
            "ratelimit",
            &format!("{kind}.requests"),
            *requests as f64,
        );
        results.add(
            people,
            "ratelimit",
            &format!("{kind}.throttled"),
            *throttled as f64,
        );
        results.add(people, "ratelimit", &format!("{kind}.utilisation"), used);
    }
    out.push_str(&by_minute);
    let _ = std::fs::remove_dir_all(&rdir);
    eprintln!("{out}");
    out
}

/// Reads the simulators' counters once a minute from the start of an import, on its own
/// thread, so that each provider's answered rate can be shown minute by minute (whether a
/// provider was paced below its limit or had no work left for part of the import).
struct MinuteSampler {
    /// Dropped (or sent to) when the import ended.
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Vec<(f64, BTreeMap<String, (u64, u64, u64, u64)>)>>,
    started: Instant,
}

impl MinuteSampler {
    fn start(info: &Value) -> MinuteSampler {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let started = Instant::now();
        let info = info.clone();
        let thread = std::thread::spawn(move || {
            let http = Http::new();
            let mut samples = Vec::new();
            loop {
                samples.push((started.elapsed().as_secs_f64(), http.rate_counters(&info)));
                let next = Duration::from_secs(60 * samples.len() as u64);
                let wait = next.saturating_sub(started.elapsed());
                if !matches!(
                    stopped.recv_timeout(wait),
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout)
                ) {
                    return samples;
                }
            }
        });
        MinuteSampler {
            stop,
            thread,
            started,
        }
    }

    /// Per provider, `(answered, seconds)` of each minute (the last one up to `last`, the
    /// counters read when the import ended).
    fn finish(
        self,
        last: &BTreeMap<String, (u64, u64, u64, u64)>,
    ) -> BTreeMap<String, Vec<(u64, f64)>> {
        let ended = self.started.elapsed().as_secs_f64();
        let _ = self.stop.send(());
        let mut samples = self.thread.join().unwrap();
        samples.push((ended, last.clone()));
        let mut out: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
        for pair in samples.windows(2) {
            let ((t0, a), (t1, b)) = (&pair[0], &pair[1]);
            for (kind, (req1, thr1, _, _)) in b {
                let (req0, thr0) = a.get(kind).map_or((0, 0), |c| (c.0, c.1));
                let answered = (req1 - thr1).saturating_sub(req0 - thr0);
                out.entry(kind.clone())
                    .or_default()
                    .push((answered, (t1 - t0).max(1e-3)));
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------------------
// Orchestrator: webhook latency

/// Reads a JSON answer (`None` when unreachable or not JSON).
fn get_json(http: &Http, url: &str) -> Option<Value> {
    http.rt.block_on(async {
        let r = http.client.get(url).send().await.ok()?;
        r.json().await.ok()
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` every `every` until it returns `Some`, at most `limit`.
#[allow(clippy::disallowed_methods)] // The orchestrator is synchronous.
fn poll<T>(limit: Duration, every: Duration, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(every);
    }
}

/// The E.164 phones of a simulated provider's contacts.
fn phones_of(dump: &Value) -> std::collections::HashSet<String> {
    let us = contact_sync::domain::normalize::DefaultRegion::parse("US").unwrap();
    dump["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| {
            ["phone_number", "phoneNumber", "phone"]
                .iter()
                .find_map(|k| match &c[*k] {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
        })
        .filter_map(|raw| contact_sync::domain::normalize::normalize_phone(&raw, us))
        .map(|p| p.as_str().to_owned())
        .collect()
}

/// The daemon with a webhook registered in the simulated Chatwoot: `BENCH_WEBHOOK_EDITS`
/// (default 1,000) renames made one after another through Chatwoot's API, each timed
/// from the PUT to the moment the last of the three other providers has received its
/// write; plus the requests each event cost and what a polling cycle spends to notice
/// the same edit.
#[allow(clippy::disallowed_methods)] // The orchestrator is synchronous.
fn run_webhook(results: &mut Results, dir: &Path, http: &Http) {
    let people: u64 = std::env::var("BENCH_WEBHOOK_PEOPLE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let edits: usize = std::env::var("BENCH_WEBHOOK_EDITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let rdir = dir.join("webhook");
    std::fs::create_dir_all(&rdir).unwrap();
    let (sim, info) = start_sim_four(people, &rdir);
    let store = rdir.join("contacts.db");
    let port = free_port();
    let config = rdir.join("config.toml");
    let text = config_for(&info, &store, KeyStyle::Literal).replacen(
        "[sync]\n",
        &format!("[http]\nlisten = \"127.0.0.1:{port}\"\n\n[sync]\nschedule = \"0 0 * * * *\"\n"),
        1,
    );
    std::fs::write(&config, &text).unwrap();
    let bin = env!("CARGO_BIN_EXE_contact-sync");
    let url = format!("http://127.0.0.1:{port}/webhooks/support");
    let out = Command::new(bin)
        .args([
            "webhooks",
            "register",
            "--provider",
            "support",
            "--url",
            &url,
            "-q",
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let secret = printed
        .lines()
        .find_map(|l| l.strip_prefix("signing secret: "))
        .unwrap_or_else(|| panic!("no secret printed: {printed}"))
        .trim()
        .to_owned();
    let secret_file = rdir.join("webhook-secret");
    std::fs::write(&secret_file, &secret).unwrap();
    let text = text.replacen(
        "name = \"support\"\n",
        &format!(
            "name = \"support\"\nwebhook_secret_file = \"{}\"\n",
            secret_file.display()
        ),
        1,
    );
    std::fs::write(&config, &text).unwrap();
    let log = std::fs::File::create(rdir.join("daemon.log")).unwrap();
    let daemon = KillOnDrop(
        Command::new(bin)
            .args(["--config", config.to_str().unwrap(), "-q"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let ready = format!("http://127.0.0.1:{port}/readyz");
    poll(Duration::from_mins(10), Duration::from_millis(100), || {
        get_json(http, &ready)?["cycles_finished"]
            .as_u64()
            .filter(|n| *n >= 1)
    })
    .expect("the daemon's first cycle did not finish");
    // The start-up cycle's own writes to Chatwoot come back as events: let them drain.
    let queued = || -> i64 {
        rusqlite::Connection::open_with_flags(&store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .and_then(|c| c.query_row("SELECT count(*) FROM webhook_events", [], |r| r.get(0)))
            .unwrap_or(1)
    };
    poll(Duration::from_mins(5), Duration::from_millis(100), || {
        (queued() == 0).then_some(())
    })
    .expect("the start-up events did not drain");

    // Chatwoot people that every other provider holds.
    let bases = base_urls(&info);
    let dump = |kind: &str| get_json(http, &format!("{}/__sim/state", bases[kind])).unwrap();
    let others = ["maiagent", "agentalk", "dmchamp"];
    let held: Vec<std::collections::HashSet<String>> =
        others.iter().map(|k| phones_of(&dump(k))).collect();
    let us = contact_sync::domain::normalize::DefaultRegion::parse("US").unwrap();
    let picks: Vec<u64> = dump("chatwoot")["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| {
            c["phone_number"]
                .as_str()
                .and_then(|p| contact_sync::domain::normalize::normalize_phone(p, us))
                .is_some_and(|p| held.iter().all(|h| h.contains(p.as_str())))
        })
        .filter_map(|c| c["id"].as_u64())
        .collect();
    assert!(!picks.is_empty(), "no Chatwoot contact is held everywhere");
    let cw = &info["chatwoot"];
    let cw_url = |id: u64| {
        format!(
            "{}/api/v1/accounts/{}/contacts/{id}",
            cw["base_url"].as_str().unwrap(),
            cw["account_id"]
        )
    };
    let token = cw["api_key"].as_str().unwrap().to_owned();
    let writes_of = |kind: &str| -> u64 {
        get_json(http, &format!("{}/__sim/counters", bases[kind])).unwrap()["writes"]
            .as_u64()
            .unwrap()
    };
    http.reset_logs(&info);
    let mut latencies = Vec::with_capacity(edits);
    let mut missed = 0;
    for i in 0..edits {
        let id = picks[i % picks.len()];
        let before: Vec<u64> = others.iter().map(|k| writes_of(k)).collect();
        let started = Instant::now();
        http.rt.block_on(async {
            let r = http
                .client
                .put(cw_url(id))
                .header("api_access_token", &token)
                .json(&json!({ "name": format!("Hook Edit {i}") }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "rename: {}", r.status());
        });
        let reached = poll(Duration::from_secs(10), Duration::from_millis(1), || {
            others
                .iter()
                .zip(&before)
                .all(|(k, b)| writes_of(k) > *b)
                .then(|| started.elapsed())
        });
        match reached {
            Some(d) => latencies.push(d.as_secs_f64() * 1000.0),
            None => missed += 1,
        }
    }
    let counters = http.counters(&info);
    let n = edits as f64;
    let chatwoot_reads = counters["chatwoot"].0 as f64;
    let other_writes: u64 = others.iter().map(|k| counters[*k].1).sum();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1]
    };
    if !latencies.is_empty() {
        results.add(people, "webhook", "latency_p50_ms", pct(0.5));
        results.add(people, "webhook", "latency_p99_ms", pct(0.99));
        results.add(people, "webhook", "latency_max_ms", pct(1.0));
    }
    results.add(people, "webhook", "edits", n);
    results.add(people, "webhook", "missed", f64::from(missed));
    results.add(people, "webhook", "reads_per_event", chatwoot_reads / n);
    results.add(
        people,
        "webhook",
        "writes_per_event",
        other_writes as f64 / n,
    );
    drop(daemon);

    // What a polling cycle would spend to notice one edit: a whole Chatwoot listing
    // (pages and labels), with nothing else changed.
    http.reset_logs(&info);
    let out = Command::new(bin)
        .args(["--sync-now", "-q", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success() || out.status.code() == Some(1));
    let polling = http.counters(&info)["chatwoot"].0;
    results.add(people, "webhook", "polling_cycle_reads", polling as f64);
    drop(sim);
    let _ = std::fs::remove_dir_all(&rdir);
    eprintln!(
        "  webhook: {edits} edits of {} people held everywhere ({people} people seeded): latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {missed} missed; per event {:.2} Chatwoot reads and {:.2} writes to the others; a polling cycle reads Chatwoot {polling} times",
        picks.len(),
        if latencies.is_empty() {
            f64::NAN
        } else {
            pct(0.5)
        },
        if latencies.is_empty() {
            f64::NAN
        } else {
            pct(0.99)
        },
        if latencies.is_empty() {
            f64::NAN
        } else {
            pct(1.0)
        },
        chatwoot_reads / n,
        other_writes as f64 / n,
    );
    println!(
        "\n## Webhook latency ({edits} Chatwoot edits, {people} people, one after another)\n\n| figure | value |\n|---|---|\n| edit → last other provider written, median | {:.1} ms |\n| … p99 | {:.1} ms |\n| … max | {:.1} ms |\n| edits not propagated within 10 s | {missed} |\n| Chatwoot reads per event | {:.2} |\n| writes to the other providers per event | {:.2} |\n| Chatwoot reads of a polling cycle (to notice the same edit) | {polling} |",
        if latencies.is_empty() {
            f64::NAN
        } else {
            pct(0.5)
        },
        if latencies.is_empty() {
            f64::NAN
        } else {
            pct(0.99)
        },
        if latencies.is_empty() {
            f64::NAN
        } else {
            pct(1.0)
        },
        chatwoot_reads / n,
        other_writes as f64 / n,
    );
}

// ---------------------------------------------------------------------------------------
// Orchestrator: the report

fn report(results: &Results, sizes: &[u64]) -> String {
    let mut out = String::new();
    let m = |size: u64, sc: &str, f: &str| results.get(size, sc, f).map_or(f64::NAN, |s| s.median);
    let row = |out: &mut String, label: &str, cells: Vec<String>| {
        let _ = write!(out, "| {label} |");
        for c in cells {
            let _ = write!(out, " {c} |");
        }
        out.push('\n');
    };
    let header = |out: &mut String, first: &str| {
        let _ = write!(out, "| {first} |");
        for s in sizes {
            let _ = write!(out, " {} people |", fmt_num(*s as f64));
        }
        out.push_str("\n|---|");
        for _ in sizes {
            out.push_str("---|");
        }
        out.push('\n');
    };
    let cells = |sc: &str, f: &str| -> Vec<String> {
        sizes
            .iter()
            .map(|s| fmt_stats(results.get(*s, sc, f)))
            .collect()
    };
    let ratio = |num: (&str, &str), den: (&str, &str)| -> Vec<String> {
        sizes
            .iter()
            .map(|s| {
                let v = m(*s, num.0, num.1) / m(*s, den.0, den.1);
                if v.is_nan() {
                    "-".to_owned()
                } else {
                    format!("{:.0}%", v * 100.0)
                }
            })
            .collect()
    };

    out.push_str("\nCeilings (same machine, same run)\n\n");
    header(&mut out, "figure (median (min–max))");
    row(&mut out, "rows", cells("ceiling", "records"));
    row(
        &mut out,
        "fetch + decode only, MaiAgent pages of 100 (contacts/s)",
        cells("ceiling", "fetch_per_s"),
    );
    row(
        &mut out,
        "bare SQLite insert, 3 indexes, 1 tx per 100 rows (rows/s)",
        cells("ceiling", "insert_per_s"),
    );

    out.push_str("\nOne enumerating provider (MaiAgent holding every person)\n\n");
    header(&mut out, "figure (median (min–max))");
    row(
        &mut out,
        "contacts listed",
        cells("one.import", "records_listed"),
    );
    row(&mut out, "first import (s)", cells("one.import", "secs"));
    row(
        &mut out,
        "first import (contacts/s)",
        cells("one.import", "contacts_per_s"),
    );
    row(
        &mut out,
        "  ratio to fetch ceiling",
        ratio(("one.import", "contacts_per_s"), ("ceiling", "fetch_per_s")),
    );
    row(
        &mut out,
        "  ratio to insert ceiling",
        ratio(
            ("one.import", "contacts_per_s"),
            ("ceiling", "insert_per_s"),
        ),
    );
    row(
        &mut out,
        "no-change cycle (s)",
        cells("one.nochange", "secs"),
    );
    row(
        &mut out,
        "no-change cycle (contacts/s)",
        cells("one.nochange", "contacts_per_s"),
    );
    row(
        &mut out,
        "  ratio to fetch ceiling",
        ratio(
            ("one.nochange", "contacts_per_s"),
            ("ceiling", "fetch_per_s"),
        ),
    );
    row(
        &mut out,
        "no-change cycle: writes sent",
        cells("one.nochange", "api.writes"),
    );
    row(
        &mut out,
        "import: API reads / writes",
        sizes
            .iter()
            .map(|s| {
                format!(
                    "{} / {}",
                    fmt_num(m(*s, "one.import", "api.reads")),
                    fmt_num(m(*s, "one.import", "api.writes"))
                )
            })
            .collect(),
    );
    row(
        &mut out,
        "no-change: API reads / writes",
        sizes
            .iter()
            .map(|s| {
                format!(
                    "{} / {}",
                    fmt_num(m(*s, "one.nochange", "api.reads")),
                    fmt_num(m(*s, "one.nochange", "api.writes"))
                )
            })
            .collect(),
    );
    row(
        &mut out,
        "peak RSS of the engine (MiB)",
        cells("one", "peak_rss_mib"),
    );
    for stage in ["fetch", "normalize", "store", "pull", "plan", "push"] {
        row(
            &mut out,
            &format!("import stage: {stage} (s)"),
            cells("one.import", &format!("stage.maiagent.{stage}_s")),
        );
    }
    for stage in ["fetch", "normalize", "store", "pull", "plan", "push"] {
        row(
            &mut out,
            &format!("no-change stage: {stage} (s)"),
            cells("one.nochange", &format!("stage.maiagent.{stage}_s")),
        );
    }

    out.push_str("\nFour providers with realistic overlap (`contact-sync simulate`)\n\n");
    header(&mut out, "figure (median (min–max))");
    row(
        &mut out,
        "golden records after import",
        cells("four.import", "golden_contacts"),
    );
    row(
        &mut out,
        "records listed per cycle",
        cells("four.nochange", "records_listed"),
    );
    row(&mut out, "first import (s)", cells("four.import", "secs"));
    row(
        &mut out,
        "first import (golden records/s)",
        cells("four.import", "contacts_per_s"),
    );
    row(
        &mut out,
        "first cycle after the import, settling hashes (s)",
        cells("four.settle", "secs"),
    );
    row(
        &mut out,
        "  writes sent",
        cells("four.settle", "api.writes"),
    );
    row(
        &mut out,
        "no-change cycle (s)",
        cells("four.nochange", "secs"),
    );
    row(
        &mut out,
        "no-change cycle (records listed/s)",
        cells("four.nochange", "contacts_per_s"),
    );
    row(
        &mut out,
        "no-change cycle: writes sent",
        cells("four.nochange", "api.writes"),
    );
    row(
        &mut out,
        "1% change: contacts renamed in MaiAgent",
        cells("four.change", "changed_contacts"),
    );
    row(
        &mut out,
        "1% change: writes sent",
        cells("four.change", "api.writes"),
    );
    row(
        &mut out,
        "1% change: writes expected (1 per other provider holding each)",
        cells("four.change", "expected_writes"),
    );
    row(
        &mut out,
        "1% change cycle (s)",
        cells("four.change", "secs"),
    );
    row(
        &mut out,
        "peak RSS of the engine (MiB)",
        cells("four", "peak_rss_mib"),
    );
    for kind in PROVIDERS.iter().map(|e| e.kind) {
        for stage in ["fetch", "store", "pull", "plan", "push"] {
            row(
                &mut out,
                &format!("import stage: {kind} {stage} (s)"),
                cells("four.import", &format!("stage.{kind}.{stage}_s")),
            );
        }
    }

    // Only providers that can be listed are read in a no-change cycle.
    for kind in PROVIDERS.iter().filter(|e| e.seed.listable).map(|e| e.kind) {
        for stage in ["fetch", "normalize", "store", "pull"] {
            row(
                &mut out,
                &format!("no-change stage: {kind} {stage} (s)"),
                cells("four.nochange", &format!("stage.{kind}.{stage}_s")),
            );
        }
    }
    out.push_str("\nAPI requests per provider per cycle (reads / writes, median)\n\n");
    let _ = write!(out, "| cycle | provider |");
    for s in sizes {
        let _ = write!(out, " {} people |", fmt_num(*s as f64));
    }
    out.push_str("\n|---|---|");
    for _ in sizes {
        out.push_str("---|");
    }
    out.push('\n');
    for (sc, label) in [
        ("one.import", "one: import"),
        ("one.nochange", "one: no change"),
        ("four.import", "four: import"),
        ("four.settle", "four: first cycle after import"),
        ("four.nochange", "four: no change"),
        ("four.change", "four: 1% changed"),
    ] {
        for p in PROVIDERS.iter().map(|e| e.kind) {
            let r = format!("api.{p}.reads");
            if sizes.iter().all(|s| results.get(*s, sc, &r).is_none()) {
                continue;
            }
            let _ = write!(out, "| {label} | {p} |");
            for s in sizes {
                let _ = write!(
                    out,
                    " {} / {} |",
                    fmt_num(m(*s, sc, &r)),
                    fmt_num(m(*s, sc, &format!("api.{p}.writes")))
                );
            }
            out.push('\n');
        }
    }
    out.push_str(
        "\nFour providers against the call floor: requests sent / the least the provider's API \
         allows (src/simulator/floor.rs, from the seeded people and, for the change cycle, the \
         renames the bench made), reads + writes\n\n",
    );
    let _ = write!(out, "| cycle | provider |");
    for s in sizes {
        let _ = write!(out, " {} people |", fmt_num(*s as f64));
    }
    out.push_str("\n|---|---|");
    for _ in sizes {
        out.push_str("---|");
    }
    out.push('\n');
    for (sc, label) in [
        ("four.import", "import"),
        ("four.nochange", "no change"),
        ("four.change", "1% changed"),
    ] {
        for p in PROVIDERS.iter().map(|e| e.kind) {
            let floor_reads = format!("floor.{p}.reads");
            if sizes
                .iter()
                .all(|s| results.get(*s, sc, &floor_reads).is_none())
            {
                continue;
            }
            let _ = write!(out, "| {label} | {p} |");
            for s in sizes {
                let sent =
                    m(*s, sc, &format!("api.{p}.reads")) + m(*s, sc, &format!("api.{p}.writes"));
                let floor = m(*s, sc, &floor_reads) + m(*s, sc, &format!("floor.{p}.writes"));
                let ratio = if floor > 0.0 {
                    format!(" ({:.2}x)", sent / floor)
                } else {
                    String::new()
                };
                let _ = write!(out, " {} / {}{ratio} |", fmt_num(sent), fmt_num(floor));
            }
            out.push('\n');
        }
    }
    out
}

fn write_csv(results: &Results, path: &Path) {
    let mut text = String::from("people,scenario,figure,median,min,max,runs\n");
    for ((size, sc, f), samples) in &results.0 {
        let s = Stats::of(samples);
        let _ = writeln!(
            text,
            "{size},{sc},{f},{},{},{},{}",
            s.median, s.min, s.max, s.n
        );
    }
    std::fs::write(path, text).unwrap();
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| t.lines().next().map(str::to_owned))
        .unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "{} cores, {cpu}; {mem}; load average {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn orchestrate(args: &[String]) {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut sizes: Vec<u64> = match std::env::var("BENCH_SIZES") {
        Ok(v) => v.split(',').map(|s| s.trim().parse().unwrap()).collect(),
        Err(_) => vec![10_000, 100_000],
    };
    if std::env::var("BENCH_1M").is_ok_and(|v| v == "1") || args.iter().any(|a| a == "--1m") {
        sizes.push(1_000_000);
    }
    let scenarios = std::env::var("BENCH_SCENARIOS").unwrap_or_else(|_| "ceiling,one,four".into());
    let want = |s: &str| scenarios.split(',').any(|x| x.trim() == s);
    let target_dir = self_exe()
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map(Path::to_owned)
        .unwrap();
    let csv = target_dir.join("bench-sync.csv");
    let work = tempfile::Builder::new()
        .prefix("bench-sync-")
        .tempdir()
        .unwrap();
    let http = Http::new();
    let mut results = Results::default();
    let started = Instant::now();
    eprintln!("machine: {}", machine());
    for &size in &sizes {
        eprintln!("== {} people, {runs} runs", fmt_num(size as f64));
        if want("ceiling") || want("one") {
            let t = Instant::now();
            let (sim, info) = start_sim_one(size);
            eprintln!(
                "  one-provider simulator seeded in {:.1}s",
                t.elapsed().as_secs_f64()
            );
            if want("ceiling") {
                run_ceiling(&mut results, size, runs, &info, work.path());
            }
            if want("one") {
                run_one(&mut results, size, runs, &info, work.path(), &http);
            }
            sim.stop();
        }
        if want("four") {
            run_four(&mut results, size, runs, work.path(), &http);
        }
    }
    if want("webhook") {
        eprintln!("== webhook latency");
        run_webhook(&mut results, work.path(), &http);
    }
    let ratelimit = if want("ratelimit") {
        eprintln!("== rate limits");
        run_ratelimit(&mut results, work.path(), &http)
    } else {
        String::new()
    };
    let text = report(&results, &sizes);
    println!("machine: {}", machine());
    println!("{text}{ratelimit}");
    write_csv(&results, &csv);
    println!(
        "CSV: {} (total {:.0}s)",
        csv.display(),
        started.elapsed().as_secs_f64()
    );
}
