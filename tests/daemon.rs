//! The daemon as a user runs it: the real binary, real signals, the simulated providers
//! on loopback. A change made in one provider reaches the others within two ticks; the
//! health, readiness and metrics endpoints answer as documented; SIGTERM in the middle of
//! a push exits 0 and the next `--sync-now` finds nothing lost and nothing duplicated; a
//! provider slower than its schedule skips ticks instead of stacking cycles; systemd's
//! notifications arrive on `NOTIFY_SOCKET`; a second daemon on the same store is refused.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contact_sync::domain::normalize::{DefaultRegion, normalize_phone};
use contact_sync::simulator::{SimOptions, Simulation};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_contact-sync");
/// Upper bound of every wait: a safety net against a hang, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(90);
/// Never fires in a test (1 January, midnight): only the start-up cycle runs.
const NEVER: &str = "0 0 0 1 1 *";

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The environment holding the simulated providers' keys (the config names them).
fn key_env(info: &Value) -> Vec<(&'static str, String)> {
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    vec![
        ("SIM_CHATWOOT_KEY", s(&info["chatwoot"]["api_key"])),
        ("SIM_MAIAGENT_KEY", s(&info["maiagent"]["api_key"])),
        ("SIM_AGENTALK_KEY", s(&info["agentalk"]["api_key"])),
        ("SIM_DMCHAMP_KEY", s(&info["dmchamp"]["api_key"])),
    ]
}

struct Setup<'a> {
    schedule: &'a str,
    chatwoot_schedule: Option<&'a str>,
    http_port: Option<u16>,
}

/// A config for the four simulated providers, store in `dir`.
fn write_config(dir: &Path, info: &Value, setup: &Setup<'_>) -> PathBuf {
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    let http = setup.http_port.map_or_else(String::new, |p| {
        format!("[http]\nlisten = \"127.0.0.1:{p}\"\nunready_after = \"30m\"\n")
    });
    let cw_schedule = setup
        .chatwoot_schedule
        .map_or_else(String::new, |s| format!("schedule = \"{s}\"\n"));
    let text = format!(
        r#"[store]
path = "{store}"

[sync]
schedule = "{schedule}"
default_region = "US"
shutdown_timeout = "20s"

{http}
[[providers]]
name = "support"
kind = "chatwoot"
base_url = "{cw_url}"
account_id = {cw_account}
inbox_id = {cw_inbox}
api_key_env = "SIM_CHATWOOT_KEY"
{cw_schedule}
[[providers]]
name = "sales-bot"
kind = "maiagent"
base_url = "{mai_url}"
inbox_id = "{mai_inbox}"
api_key_env = "SIM_MAIAGENT_KEY"

[[providers]]
name = "whatsapp"
kind = "agentalk"
base_url = "{ata_url}"
api_key_env = "SIM_AGENTALK_KEY"

[[providers]]
name = "campaigns"
kind = "dmchamp"
base_url = "{dmc_url}"
api_key_env = "SIM_DMCHAMP_KEY"
"#,
        store = dir.join("contacts.db").display(),
        schedule = setup.schedule,
        cw_url = s(&info["chatwoot"]["base_url"]),
        cw_account = info["chatwoot"]["account_id"],
        cw_inbox = info["chatwoot"]["inbox_id"],
        mai_url = s(&info["maiagent"]["base_url"]),
        mai_inbox = s(&info["maiagent"]["inbox_id"]),
        ata_url = s(&info["agentalk"]["base_url"]),
        dmc_url = s(&info["dmchamp"]["base_url"]),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A command for the binary with the keys in its environment and no stray settings.
fn command(info: &Value) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("CONTACT_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .envs(key_env(info));
    cmd
}

/// Runs a one-shot command to its end (on a blocking thread: the simulated providers
/// share this runtime).
async fn output(mut cmd: Command) -> Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

/// `contact-sync ARGS` with the keys in its environment, run to its end.
async fn run(info: &Value, args: &[&str]) -> Output {
    let mut cmd = command(info);
    cmd.args(args);
    output(cmd).await
}

/// The daemon, its log (JSON lines) in `log`.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(info: &Value, config: &Path, dir: &Path, env: &[(&str, String)]) -> Self {
        let log = dir.join(format!("daemon-{}.log", free_port()));
        let stderr = std::fs::File::create(&log).unwrap();
        let child = command(info)
            .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM (through `kill`, as an operator or a supervisor would).
    fn sigterm(&self) {
        let pid = self.child.id().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// Waits for the exit; returns the exit code.
    async fn exit_code(&mut self) -> i32 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the daemon did not exit; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // A failed test must not leave a daemon behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` until it returns `Some`, at most [`PATIENCE`].
async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn get(url: String) -> Option<(u16, String)> {
    let r = client().get(&url).send().await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

async fn readyz(port: u16) -> Option<(u16, Value)> {
    let (status, body) = get(format!("http://127.0.0.1:{port}/readyz")).await?;
    Some((status, serde_json::from_str(&body).unwrap()))
}

async fn cycles_finished(port: u16) -> u64 {
    let (_, body) = readyz(port).await.unwrap();
    body["cycles_finished"].as_u64().unwrap()
}

async fn metrics(port: u16) -> String {
    get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .1
}

/// The value of the sample `name{labels}` in Prometheus text, if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        let wanted = series.split_once('{').map_or(series, |(n, _)| n);
        let (name, labels) = key.split_once('{').unwrap_or((key, ""));
        if name != wanted {
            return None;
        }
        let want_labels: Vec<&str> = series
            .split_once('{')
            .map(|(_, l)| l.trim_end_matches('}').split(',').collect())
            .unwrap_or_default();
        want_labels
            .iter()
            .all(|w| labels.trim_end_matches('}').split(',').any(|l| l == *w))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// A simulated provider's whole state (`GET /__sim/state`).
async fn state(base_url: &str) -> Value {
    let (status, body) = get(format!("{base_url}/__sim/state")).await.unwrap();
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

async fn set_fault(base_url: &str, rule: Value) {
    let r = client()
        .post(format!("{base_url}/__sim/faults"))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "fault rule refused: {rule}");
}

async fn clear_faults(base_url: &str) {
    let r = client()
        .delete(format!("{base_url}/__sim/faults"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
}

fn base(info: &Value, provider: &str) -> String {
    info[provider]["base_url"].as_str().unwrap().to_owned()
}

const PROVIDERS: [&str; 4] = ["chatwoot", "maiagent", "agentalk", "dmchamp"];

/// Each provider's contacts as (E.164 phones, lower-cased emails), counting repeats.
async fn holdings(info: &Value) -> BTreeMap<&'static str, (Vec<String>, Vec<String>)> {
    let us = DefaultRegion::parse("US").unwrap();
    let mut out = BTreeMap::new();
    for p in PROVIDERS {
        let dump = state(&base(info, p)).await;
        let mut phones = Vec::new();
        let mut emails = Vec::new();
        for c in dump["contacts"].as_array().unwrap() {
            let phone = ["phone_number", "phoneNumber", "phone"]
                .iter()
                .find_map(|k| match &c[*k] {
                    Value::String(s) if !s.is_empty() => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            if let Some(e164) = phone.and_then(|raw| normalize_phone(&raw, us)) {
                phones.push(e164.as_str().to_owned());
            }
            if let Some(email) = c["email"].as_str().map(|e| e.trim().to_lowercase())
                && !email.is_empty()
            {
                emails.push(email);
            }
        }
        out.insert(p, (phones, emails));
    }
    out
}

/// Whether a notification line starting with `prefix` was received.
fn has(got: &[String], prefix: &str) -> bool {
    got.iter().any(|m| m.lines().any(|l| l.starts_with(prefix)))
}

/// Creates a contact in Chatwoot through its public API, as a person using Chatwoot would.
async fn create_in_chatwoot(info: &Value, name: &str, email: &str, phone: &str) {
    let url = format!(
        "{}/api/v1/accounts/{}/contacts",
        base(info, "chatwoot"),
        info["chatwoot"]["account_id"]
    );
    let r = client()
        .post(url)
        .header(
            "api_access_token",
            info["chatwoot"]["api_key"].as_str().unwrap(),
        )
        .json(&json!({"name": name, "email": email, "phone_number": phone}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "chatwoot create: {}", r.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_reaches_every_provider_within_two_ticks_and_the_endpoints_answer() {
    let sim = Simulation::start(SimOptions {
        contacts: 6,
        seed: 7,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let info = sim.info();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &info,
        &Setup {
            schedule: "*/2 * * * * *",
            chatwoot_schedule: None,
            http_port: Some(port),
        },
    );
    // The first listing is slow, so the daemon is observed before its first cycle ends.
    let chatwoot = base(&info, "chatwoot");
    set_fault(
        &chatwoot,
        json!({"method": "GET", "count": 1, "action": {"kind": "delay", "millis": 1500}}),
    )
    .await;
    let mut daemon = Daemon::start(&info, &config, dir.path(), &[]);

    // Alive at once; not ready until a cycle finished.
    let (status, body) = wait_for("/healthz", || {
        get(format!("http://127.0.0.1:{port}/healthz"))
    })
    .await;
    assert_eq!((status, body.trim()), (200, "ok"));
    let (status, body) = readyz(port).await.unwrap();
    if body["cycles_finished"] == 0 {
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["ready"], false);
        assert!(
            body["reason"]
                .as_str()
                .unwrap()
                .contains("no sync cycle has finished yet"),
            "{body}"
        );
        let out = run(
            &info,
            &["healthcheck", "--config", config.to_str().unwrap()],
        )
        .await;
        // Still before the first cycle's end, or just after it: both are honest answers.
        if out.status.code() == Some(1) {
            assert!(String::from_utf8_lossy(&out.stderr).contains("503"));
        }
    }
    let body = wait_for("readiness", || async {
        readyz(port)
            .await
            .filter(|(s, _)| *s == 200)
            .map(|(_, b)| b)
    })
    .await;
    assert_eq!(body["ready"], true, "{body}");
    let out = run(
        &info,
        &["healthcheck", "--config", config.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    // A second daemon on the same store is refused with the store's message.
    let second = run(&info, &["--config", config.to_str().unwrap()]).await;
    assert_eq!(second.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("another contact-sync process is already syncing"),
        "{stderr}"
    );

    // A person added in Chatwoot by hand...
    let phone = "+16502530000";
    let email = "tick.tester@example.org";
    create_in_chatwoot(&info, "Tick Tester", email, phone).await;
    let at_change = cycles_finished(port).await;
    // ...is everywhere once two more cycles finished (the one running at the change may
    // have read Chatwoot before it; the next one started after it).
    wait_for("two more cycles", || async {
        (cycles_finished(port).await >= at_change + 2).then_some(())
    })
    .await;
    let held = holdings(&info).await;
    for p in PROVIDERS {
        assert!(
            held[p].0.iter().any(|x| x == phone),
            "{p} does not hold the new contact's phone after two ticks: {:?}",
            held[p]
        );
    }
    assert!(held["maiagent"].1.iter().any(|e| e == email));

    // Metrics, with the documented names.
    let text = metrics(port).await;
    for series in [
        "contact_sync_pulled_total{provider=\"support\"}",
        "contact_sync_created_total{provider=\"whatsapp\"}",
        "contact_sync_updated_total{provider=\"support\"}",
        "contact_sync_tag_changes_total{provider=\"support\"}",
        "contact_sync_failed_total{provider=\"campaigns\"}",
        "contact_sync_skipped_ticks_total{provider=\"sales-bot\"}",
        "contact_sync_intents_pending{provider=\"whatsapp\"}",
        "contact_sync_intents_dead{provider=\"whatsapp\"}",
        "contact_sync_last_success_timestamp_seconds{provider=\"support\"}",
        "contact_sync_requests_total{provider=\"support\",method=\"GET\",status_class=\"2xx\"}",
        "contact_sync_request_duration_seconds_bucket{provider=\"support\",le=\"+Inf\"}",
        "contact_sync_cycle_duration_seconds_count",
        "contact_sync_cycles_total{result=\"ok\"}",
    ] {
        assert!(
            sample(&text, series).is_some(),
            "no {series} in /metrics:\n{text}"
        );
    }
    assert!(sample(&text, "contact_sync_created_total{provider=\"whatsapp\"}").unwrap() >= 1.0);
    assert!(sample(&text, "contact_sync_pulled_total{provider=\"support\"}").unwrap() >= 1.0);
    assert!(
        sample(
            &text,
            "contact_sync_last_success_timestamp_seconds{provider=\"support\"}"
        )
        .unwrap()
            > 1.7e9
    );

    daemon.sigterm();
    assert_eq!(daemon.exit_code().await, 0, "log:\n{}", daemon.log());
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_push_exits_zero_and_the_next_sync_loses_and_duplicates_nothing() {
    let sim = Simulation::start(SimOptions {
        contacts: 30,
        seed: 11,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let info = sim.info();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &info,
        &Setup {
            schedule: NEVER,
            chatwoot_schedule: None,
            http_port: Some(port),
        },
    );
    // Slow writes everywhere, so SIGTERM lands while pushes are in flight.
    for p in PROVIDERS {
        for method in ["POST", "PUT", "PATCH"] {
            set_fault(
                &base(&info, p),
                json!({"method": method, "action": {"kind": "delay", "millis": 300}}),
            )
            .await;
        }
    }
    let mut daemon = Daemon::start(&info, &config, dir.path(), &[]);
    wait_for("a few writes", || async {
        let text = get(format!("http://127.0.0.1:{port}/metrics")).await?.1;
        let writes: f64 = text
            .lines()
            .filter(|l| {
                l.starts_with("contact_sync_requests_total{")
                    && (l.contains("method=\"POST\"")
                        || l.contains("method=\"PUT\"")
                        || l.contains("method=\"PATCH\""))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum();
        (writes >= 3.0).then_some(())
    })
    .await;
    daemon.sigterm();
    let code = daemon.exit_code().await;
    let log = daemon.log();
    assert_eq!(code, 0, "log:\n{log}");
    assert!(
        log.contains("work in flight finished and committed"),
        "{log}"
    );
    let cycles_started = log.matches("\"cycle started\"").count();
    assert_eq!(cycles_started, 1, "only the start-up cycle ran");

    // Everything left is done by one-shot runs; then nothing is left to do.
    for p in PROVIDERS {
        clear_faults(&base(&info, p)).await;
    }
    for round in 1..=2 {
        let out = run(&info, &["--config", config.to_str().unwrap(), "--sync-now"]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "sync-now #{round}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run(
        &info,
        &["status", "--json", "--config", config.to_str().unwrap()],
    )
    .await;
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["pending"], 0, "{status}");
    assert_eq!(status["dead"], 0, "{status}");
    for p in status["providers"].as_array().unwrap() {
        let run = &p["last_run"];
        assert_eq!(run["ok"], true, "{p}");
        assert_eq!(run["created"], 0, "the last run still had creates: {p}");
        assert_eq!(run["updated"], 0, "the last run still had updates: {p}");
    }

    // Nothing lost, nothing duplicated: every provider holds exactly what an uninterrupted
    // sync of the same data leaves (same records, counted with repeats, by phone and email).
    let interrupted = holdings(&info).await;
    let baseline_sim = Simulation::start(SimOptions {
        contacts: 30,
        seed: 11,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let baseline_info = baseline_sim.info();
    let baseline_dir = tempfile::tempdir().unwrap();
    let baseline_config = write_config(
        baseline_dir.path(),
        &baseline_info,
        &Setup {
            schedule: NEVER,
            chatwoot_schedule: None,
            http_port: None,
        },
    );
    for _ in 0..2 {
        let out = run(
            &baseline_info,
            &["--config", baseline_config.to_str().unwrap(), "--sync-now"],
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let baseline = holdings(&baseline_info).await;
    for p in PROVIDERS {
        let sorted = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        assert_eq!(
            sorted(&interrupted[p].0),
            sorted(&baseline[p].0),
            "{p}: phones differ from an uninterrupted sync"
        );
        assert_eq!(
            sorted(&interrupted[p].1),
            sorted(&baseline[p].1),
            "{p}: emails differ from an uninterrupted sync"
        );
        let (a, b) = (
            state(&base(&info, p)).await["contacts"]
                .as_array()
                .unwrap()
                .len(),
            state(&base(&baseline_info, p)).await["contacts"]
                .as_array()
                .unwrap()
                .len(),
        );
        assert_eq!(
            a, b,
            "{p}: {a} records after the interrupted sync, {b} after an uninterrupted one"
        );
    }
    assert!(
        !interrupted["agentalk"].0.is_empty(),
        "the pushes reached Agentalk"
    );
    baseline_sim.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slower_than_its_schedule_skips_ticks_instead_of_stacking_cycles() {
    let sim = Simulation::start(SimOptions {
        contacts: 3,
        seed: 5,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let info = sim.info();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(
        dir.path(),
        &info,
        &Setup {
            schedule: NEVER,
            chatwoot_schedule: Some("* * * * * *"),
            http_port: Some(port),
        },
    );
    // Every Chatwoot read takes longer than the 1-second schedule.
    set_fault(
        &base(&info, "chatwoot"),
        json!({"method": "GET", "action": {"kind": "delay", "millis": 1500}}),
    )
    .await;
    let mut daemon = Daemon::start(&info, &config, dir.path(), &[]);
    let skipped = wait_for("skipped ticks and three cycles", || async {
        let text = get(format!("http://127.0.0.1:{port}/metrics")).await?.1;
        let skipped = sample(
            &text,
            "contact_sync_skipped_ticks_total{provider=\"support\"}",
        )?;
        let cycles = cycles_finished(port).await;
        (skipped >= 1.0 && cycles >= 3).then_some(skipped)
    })
    .await;
    assert!(skipped >= 1.0);
    daemon.sigterm();
    assert_eq!(daemon.exit_code().await, 0);

    // The log shows cycles strictly one after the other.
    let mut running: Option<u64> = None;
    let mut finished = 0;
    for line in daemon.log().lines() {
        let Ok(event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match event["message"].as_str() {
            Some("cycle started") => {
                assert_eq!(
                    running, None,
                    "cycle {} started while {running:?} ran",
                    event["cycle"]
                );
                running = event["cycle"].as_u64();
            }
            Some("cycle finished" | "cycle failed") => {
                assert_eq!(running, event["cycle"].as_u64(), "{line}");
                running = None;
                finished += 1;
            }
            Some(m) if m.contains("schedule tick skipped") => {
                assert_eq!(event["provider"], "support", "{line}");
            }
            _ => {}
        }
    }
    assert!(finished >= 3);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_notifications_arrive_on_notify_socket() {
    let sim = Simulation::start(SimOptions {
        contacts: 2,
        seed: 3,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let info = sim.info();
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let config = write_config(
        dir.path(),
        &info,
        &Setup {
            schedule: "*/2 * * * * *",
            chatwoot_schedule: None,
            http_port: None,
        },
    );
    let mut daemon = Daemon::start(
        &info,
        &config,
        dir.path(),
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap().to_owned()),
            // WatchdogSec=2: pings at least every second.
            ("WATCHDOG_USEC", "2000000".to_owned()),
        ],
    );
    // Reads datagrams until `done` holds (on a blocking thread: the socket is std's).
    let socket = std::sync::Arc::new(socket);
    let collect = |mut got: Vec<String>, done: fn(&[String]) -> bool| {
        let socket = socket.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let deadline = std::time::Instant::now() + PATIENCE;
                let mut buf = [0u8; 4096];
                while !done(&got) {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "gave up waiting for notifications; got {got:?}"
                    );
                    if let Ok(n) = socket.recv(&mut buf) {
                        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                    }
                }
                got
            })
            .await
            .unwrap()
        }
    };
    let messages = collect(Vec::new(), |got| {
        has(got, "READY=1") && has(got, "STATUS=last cycle at") && has(got, "WATCHDOG=1")
    })
    .await;
    let ready = messages.iter().position(|m| m.contains("READY=1")).unwrap();
    let first_status = messages
        .iter()
        .position(|m| m.contains("STATUS=last cycle at"))
        .unwrap();
    assert!(ready < first_status, "READY=1 comes first: {messages:?}");
    let status = &messages[first_status];
    assert!(status.contains("support ok"), "{status}");

    daemon.sigterm();
    let messages = collect(messages, |got| has(got, "STOPPING=1")).await;
    assert!(has(&messages, "STOPPING=1"));
    assert_eq!(daemon.exit_code().await, 0);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_needs_http_listen_and_a_running_daemon() {
    let sim = Simulation::start(SimOptions::default()).await.unwrap();
    let info = sim.info();
    let dir = tempfile::tempdir().unwrap();
    let without = write_config(
        dir.path(),
        &info,
        &Setup {
            schedule: NEVER,
            chatwoot_schedule: None,
            http_port: None,
        },
    );
    let out = run(
        &info,
        &["healthcheck", "--config", without.to_str().unwrap()],
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("[http] listen"));

    let with = write_config(
        dir.path(),
        &info,
        &Setup {
            schedule: NEVER,
            chatwoot_schedule: None,
            http_port: Some(free_port()),
        },
    );
    let out = run(&info, &["healthcheck", "--config", with.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(1), "no daemon runs: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot connect"));
    sim.shutdown().await;
}
