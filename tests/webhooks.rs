//! Chatwoot webhooks end to end, as a user sets them up: the real binary registers the
//! webhook in the simulated Chatwoot (`contact-sync webhooks register`), the daemon runs
//! with an hourly schedule, and the simulated Chatwoot posts signed `contact_updated`
//! events on every edit. A rename reaches the three other providers within seconds;
//! forged, replayed and oversized events change nothing; a duplicated delivery is
//! applied once; an event accepted but not applied when the daemon is killed is applied
//! after the restart; an edit made while the daemon was down is caught by the restart's
//! full cycle. A contact created in Chatwoot reaches MaiAgent too in the same targeted
//! cycle (found and linked when MaiAgent already holds the person, never duplicated);
//! edits made through the simulator's control endpoint are delivered like API edits; a
//! webhook-driven change is a run that `runs` lists and `undo --run` puts back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contact_sync::simulator::{SimOptions, Simulation};
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_contact-sync");
/// Upper bound of every wait: a safety net against a hang, never a timing assertion.
const PATIENCE: Duration = Duration::from_secs(90);
/// The contract: a Chatwoot edit reaches the other providers within this.
const WITHIN: Duration = Duration::from_secs(3);
/// Once an hour: only the start-up cycle runs during a test.
const HOURLY: &str = "0 0 * * * *";
const OTHERS: [&str; 3] = ["maiagent", "agentalk", "dmchamp"];
/// Edits in the burst test.
const EDITS: usize = 1_000;

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

fn key_env(info: &Value) -> Vec<(&'static str, String)> {
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    vec![
        ("SIM_CHATWOOT_KEY", s(&info["chatwoot"]["api_key"])),
        ("SIM_MAIAGENT_KEY", s(&info["maiagent"]["api_key"])),
        ("SIM_AGENTALK_KEY", s(&info["agentalk"]["api_key"])),
        ("SIM_DMCHAMP_KEY", s(&info["dmchamp"]["api_key"])),
    ]
}

/// A config for the four simulated providers, hourly, endpoint on `port`; `webhook` is
/// added to the Chatwoot block.
fn write_config(dir: &Path, info: &Value, port: u16, webhook: &str) -> PathBuf {
    let s = |v: &Value| v.as_str().unwrap().to_owned();
    let text = format!(
        r#"[store]
path = "{store}"

[sync]
schedule = "{HOURLY}"
default_region = "US"
shutdown_timeout = "20s"

[http]
listen = "127.0.0.1:{port}"

[[providers]]
name = "support"
kind = "chatwoot"
base_url = "{cw_url}"
account_id = {cw_account}
inbox_id = {cw_inbox}
api_key_env = "SIM_CHATWOOT_KEY"
retry_base_delay = "20ms"
{webhook}

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

fn command(info: &Value) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_remove("CONTACT_SYNC_CONFIG")
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .envs(key_env(info));
    cmd
}

async fn run(info: &Value, args: &[&str]) -> Output {
    let mut cmd = command(info);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(info: &Value, config: &Path, dir: &Path) -> Self {
        let log = dir.join(format!("daemon-{}.log", free_port()));
        let stderr = std::fs::File::create(&log).unwrap();
        let child = command(info)
            .args(["--config", config.to_str().unwrap(), "--log-format", "json"])
            .env("RUST_LOG", "contact_sync=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap();
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, and wait for the process to be gone.
    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Polls `check` until it returns `Some`, giving up after `limit`.
async fn poll<T, F, Fut>(what: &str, limit: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up waiting for {what} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn get_json(url: String) -> Option<Value> {
    let r = client().get(&url).send().await.ok()?;
    r.json().await.ok()
}

async fn cycles_finished(port: u16) -> Option<u64> {
    get_json(format!("http://127.0.0.1:{port}/readyz"))
        .await?
        .get("cycles_finished")?
        .as_u64()
}

fn base(info: &Value, provider: &str) -> String {
    info[provider]["base_url"].as_str().unwrap().to_owned()
}

/// A simulated provider's state as text (searched for a name).
async fn state_text(info: &Value, provider: &str) -> String {
    get_json(format!("{}/__sim/state", base(info, provider)))
        .await
        .unwrap()
        .to_string()
}

async fn writes(info: &Value, provider: &str) -> u64 {
    get_json(format!("{}/__sim/counters", base(info, provider)))
        .await
        .unwrap()["writes"]
        .as_u64()
        .unwrap()
}

fn chatwoot_url(info: &Value, path: &str) -> String {
    format!(
        "{}/api/v1/accounts/{}/{path}",
        base(info, "chatwoot"),
        info["chatwoot"]["account_id"]
    )
}

/// Creates a contact in Chatwoot through its API; returns its id.
async fn create_in_chatwoot(info: &Value, name: &str, email: &str, phone: &str) -> u64 {
    let r: Value = client()
        .post(chatwoot_url(info, "contacts"))
        .header(
            "api_access_token",
            info["chatwoot"]["api_key"].as_str().unwrap(),
        )
        .json(&json!({"name": name, "email": email, "phone_number": phone}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    r["payload"]["contact"]["id"].as_u64().unwrap()
}

/// Renames a contact in Chatwoot through its API, as an agent would.
async fn rename_in_chatwoot(info: &Value, id: u64, name: &str) {
    let r = client()
        .put(chatwoot_url(info, &format!("contacts/{id}")))
        .header(
            "api_access_token",
            info["chatwoot"]["api_key"].as_str().unwrap(),
        )
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "rename: {}", r.status());
}

/// Waits until every other provider shows `name`, at most `limit`.
async fn reaches_the_others(info: &Value, name: &str, limit: Duration) {
    poll(
        &format!("`{name}` in every other provider"),
        limit,
        || async {
            for p in OTHERS {
                if !state_text(info, p).await.contains(name) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// The simulated Chatwoot's deliveries so far.
async fn deliveries(info: &Value) -> Vec<Value> {
    get_json(format!(
        "{}/__sim/webhooks/deliveries",
        base(info, "chatwoot")
    ))
    .await
    .unwrap()["deliveries"]
        .as_array()
        .unwrap()
        .clone()
}

async fn delivery_fault(info: &Value, rule: Value) {
    let r = client()
        .post(format!("{}/__sim/webhooks/faults", base(info, "chatwoot")))
        .json(&rule)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "delivery fault refused: {rule}");
}

/// Registers the webhook through the binary; returns the signing secret it printed.
async fn register(info: &Value, config: &Path, port: u16) -> String {
    let url = format!("http://127.0.0.1:{port}/webhooks/support");
    let config = config.to_str().unwrap();
    let out = run(
        info,
        &[
            "webhooks",
            "register",
            "--provider",
            "support",
            "--url",
            &url,
            "--config",
            config,
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("created"), "{stdout}");
    assert!(stdout.contains("webhook_secret_env"), "{stdout}");
    let secret = stdout
        .lines()
        .find_map(|l| l.strip_prefix("signing secret: "))
        .expect("no signing secret printed")
        .trim()
        .to_owned();
    // Registering again updates the same webhook instead of adding one.
    let again = run(
        info,
        &[
            "webhooks",
            "register",
            "--provider",
            "support",
            "--url",
            &url,
            "--config",
            config,
        ],
    )
    .await;
    assert!(String::from_utf8_lossy(&again.stdout).contains("updated"));
    let listed = run(
        info,
        &[
            "webhooks",
            "list",
            "--provider",
            "support",
            "--config",
            config,
        ],
    )
    .await;
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(
        listed.contains(&url) && listed.contains("contact_updated"),
        "{listed}"
    );
    assert!(!listed.contains(&secret), "list never prints the secret");
    secret
}

/// A webhook-ready world: simulators with `people`, a Chatwoot person linked everywhere,
/// the webhook registered, the secret in a file named by the config. Returns (sim, dir,
/// config, port, the person's Chatwoot id, the secret).
async fn setup(people: u64) -> (Simulation, tempfile::TempDir, PathBuf, u16, u64, String) {
    let sim = Simulation::start(SimOptions {
        contacts: people,
        seed: 5,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let info = sim.info();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), &info, port, "");
    let secret = register(&info, &config, port).await;
    let secret_file = dir.path().join("webhook-secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let config = write_config(
        dir.path(),
        &info,
        port,
        &format!("webhook_secret_file = \"{}\"", secret_file.display()),
    );
    let checked = run(
        &info,
        &["check-config", "--config", config.to_str().unwrap()],
    )
    .await;
    let shown = String::from_utf8_lossy(&checked.stdout).into_owned();
    assert!(checked.status.success(), "{shown}");
    assert!(shown.contains("webhook_secret = \"***\""), "{shown}");
    assert!(
        !shown.contains(&secret),
        "check-config never prints the secret"
    );
    let id = create_in_chatwoot(&info, "Wendyhook", "wendy.hook@example.com", "+14155550142").await;
    (sim, dir, config, port, id, secret)
}

fn sign(secret: &str, ts: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

async fn post_event(port: u16, name: &str, ts: i64, signature: &str, body: Vec<u8>) -> u16 {
    client()
        .post(format!("http://127.0.0.1:{port}/webhooks/{name}"))
        .header("content-type", "application/json")
        .header("x-chatwoot-timestamp", ts.to_string())
        .header("x-chatwoot-signature", signature)
        .header("x-chatwoot-delivery", format!("test-{ts}-{}", body.len()))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Events queued in the store (for record `remote_id`, or all).
fn queued_for(store: &Path, remote_id: Option<u64>) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT count(*) FROM webhook_events WHERE ?1 IS NULL OR remote_id = ?1",
        [remote_id.map(|id| id.to_string())],
        |r| r.get(0),
    )
    .unwrap()
}

fn queued(store: &Path) -> i64 {
    queued_for(store, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chatwoot_rename_reaches_the_others_in_seconds_and_bad_events_change_nothing() {
    let (sim, dir, config, port, id, secret) = setup(20).await;
    let info = sim.info();
    let daemon = Daemon::start(&info, &config, dir.path());
    poll("the start-up cycle", PATIENCE, || async {
        cycles_finished(port).await.filter(|n| *n >= 1)
    })
    .await;
    reaches_the_others(&info, "Wendyhook", PATIENCE).await;

    // A rename in Chatwoot reaches the three others within seconds, not at the next
    // (hourly) cycle.
    rename_in_chatwoot(&info, id, "Wendyrenamed").await;
    reaches_the_others(&info, "Wendyrenamed", WITHIN).await;

    // Forged, replayed and oversized events are refused and change nothing.
    poll("the queue drained", PATIENCE, || async {
        (queued(&dir.path().join("contacts.db")) == 0).then_some(())
    })
    .await;
    let before: Vec<u64> = futures::future::join_all(OTHERS.map(|p| writes(&info, p))).await;
    let event = |name: &str| {
        json!({"event": "contact_updated", "id": id, "name": name, "email": "wendy.hook@example.com",
               "phone_number": "+14155550142", "identifier": null, "custom_attributes": {},
               "additional_attributes": {}, "thumbnail": "", "type": "contact",
               "account": {"id": info["chatwoot"]["account_id"], "name": "x"},
               "changed_attributes": [{"name": {"previous_value": "Wendyrenamed", "current_value": name}}]})
        .to_string()
        .into_bytes()
    };
    let forged = event("Mallory");
    let ts = now();
    assert_eq!(
        post_event(
            port,
            "support",
            ts,
            &sign("not-the-secret", ts, &forged),
            forged.clone()
        )
        .await,
        401
    );
    let old = now() - 600;
    assert_eq!(
        post_event(
            port,
            "support",
            old,
            &sign(&secret, old, &forged),
            forged.clone()
        )
        .await,
        401,
        "a replayed (old) timestamp is refused even with a valid signature"
    );
    let mut big = event("Big");
    big.extend(std::iter::repeat_n(b' ', 2 * 1024 * 1024));
    let ts = now();
    assert_eq!(
        post_event(port, "support", ts, &sign(&secret, ts, &big), big).await,
        413
    );
    assert_eq!(
        post_event(port, "nobody", ts, &sign(&secret, ts, &forged), forged).await,
        404
    );
    // Nothing was queued, so nothing will be written.
    assert_eq!(queued(&dir.path().join("contacts.db")), 0);
    let after: Vec<u64> = futures::future::join_all(OTHERS.map(|p| writes(&info, p))).await;
    assert_eq!(before, after);
    for p in OTHERS {
        assert!(!state_text(&info, p).await.contains("Mallory"));
    }

    // A corrupted delivery (body changed after signing) is refused the same way.
    delivery_fault(&info, json!({"action": "corrupt", "count": 1})).await;
    rename_in_chatwoot(&info, id, "Wendytampered").await;
    let refused = poll("the corrupted delivery", PATIENCE, || async {
        deliveries(&info)
            .await
            .into_iter()
            .find(|d| d["fault"] == "corrupt" && !d["status"].is_null())
    })
    .await;
    assert_eq!(refused["status"], 401);
    assert_eq!(queued(&dir.path().join("contacts.db")), 0);

    // A duplicated delivery (same delivery id twice) is applied once: one update per
    // provider, and the second copy is answered 200.
    delivery_fault(&info, json!({"action": "duplicate", "count": 1})).await;
    let before: Vec<u64> = futures::future::join_all(OTHERS.map(|p| writes(&info, p))).await;
    rename_in_chatwoot(&info, id, "Wendytwice").await;
    reaches_the_others(&info, "Wendytwice", WITHIN).await;
    let copies = poll("both copies answered", PATIENCE, || async {
        let d: Vec<Value> = deliveries(&info)
            .await
            .into_iter()
            .filter(|d| d["fault"] == "duplicate" && !d["status"].is_null())
            .collect();
        (d.len() == 2).then_some(d)
    })
    .await;
    assert_eq!(copies[0]["delivery_id"], copies[1]["delivery_id"]);
    let mut statuses: Vec<u64> = copies
        .iter()
        .map(|d| d["status"].as_u64().unwrap())
        .collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 202]);
    poll("the queue drained", PATIENCE, || async {
        (queued(&dir.path().join("contacts.db")) == 0).then_some(())
    })
    .await;
    let after: Vec<u64> = futures::future::join_all(OTHERS.map(|p| writes(&info, p))).await;
    for ((p, b), a) in OTHERS.iter().zip(&before).zip(&after) {
        assert_eq!(a - b, 1, "{p}: the rename is one update, applied once");
    }
    // Our own writes come back from Chatwoot as events too; none of them is read again
    // (the metrics count them as moot) and none writes anything.
    if std::env::var_os("SHOW_DAEMON_LOG").is_some() {
        eprintln!("{}", daemon.log());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_event_survives_sigkill_and_edits_while_down_are_caught_at_restart() {
    let (sim, dir, config, port, id, secret) = setup(10).await;
    let info = sim.info();
    let store = dir.path().join("contacts.db");
    let other =
        create_in_chatwoot(&info, "Oscardown", "oscar.down@example.com", "+14155550177").await;
    let mut daemon = Daemon::start(&info, &config, dir.path());
    poll("the start-up cycle", PATIENCE, || async {
        cycles_finished(port).await.filter(|n| *n >= 1)
    })
    .await;
    reaches_the_others(&info, "Oscardown", PATIENCE).await;

    // Reading the record hangs: the event is accepted (202) and queued, not applied.
    let cw = base(&info, "chatwoot");
    let r = client()
        .post(format!("{cw}/__sim/faults"))
        .json(&json!({"method": "GET", "path": format!("/contacts/{id}"), "action": {"kind": "delay", "millis": 60_000}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    rename_in_chatwoot(&info, id, "Wendykilled").await;
    let accepted = poll("the delivery accepted", PATIENCE, || async {
        deliveries(&info).await.into_iter().find(|d| {
            d["event"] == "contact_updated" && d["contact_id"] == id && d["status"] == 202
        })
    })
    .await;
    assert_eq!(accepted["status"], 202);
    daemon.kill9();
    assert_eq!(
        queued_for(&store, Some(id)),
        1,
        "the accepted event is in the store"
    );
    for p in OTHERS {
        assert!(!state_text(&info, p).await.contains("Wendykilled"), "{p}");
    }

    // While the daemon is down, another edit: its delivery finds nobody.
    rename_in_chatwoot(&info, other, "Oscaredited").await;
    poll("the undelivered event", PATIENCE, || async {
        deliveries(&info)
            .await
            .into_iter()
            .find(|d| d["contact_id"] == other && d["status"].is_null())
    })
    .await;

    // Restart: the queued event is applied and the full start-up cycle catches the edit
    // made while the daemon was down.
    client()
        .delete(format!("{cw}/__sim/faults"))
        .send()
        .await
        .unwrap();
    let daemon = Daemon::start(&info, &config, dir.path());
    reaches_the_others(&info, "Wendykilled", PATIENCE).await;
    reaches_the_others(&info, "Oscaredited", PATIENCE).await;
    poll("the queue drained", PATIENCE, || async {
        (queued(&store) == 0).then_some(())
    })
    .await;
    let log = daemon.log();
    assert!(!log.contains(&secret), "the secret is never logged");
}

/// What the store's link to Chatwoot record `remote_id` last saw: its name.
fn chatwoot_snapshot_name(store: &Path, remote_id: u64) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let snapshot: String = conn
        .query_row(
            "SELECT l.snapshot FROM links l JOIN providers p ON p.id = l.provider_id
             WHERE p.name = 'support' AND l.remote_id = ?1",
            [remote_id.to_string()],
            |r| r.get(0),
        )
        .ok()?;
    let v: Value = serde_json::from_str(&snapshot).ok()?;
    v["name"].as_str().map(str::to_owned)
}

fn pending_intents(store: &Path) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT count(*) FROM intents WHERE state = 'pending'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_a_thousand_edits_is_absorbed_without_dropping_any() {
    let (sim, dir, config, port, _id, _secret) = setup(120).await;
    let info = sim.info();
    let store = dir.path().join("contacts.db");
    let _daemon = Daemon::start(&info, &config, dir.path());
    poll("the start-up cycle", PATIENCE, || async {
        cycles_finished(port).await.filter(|n| *n >= 1)
    })
    .await;
    poll("the start-up events drained", PATIENCE, || async {
        (queued(&store) == 0).then_some(())
    })
    .await;
    let dump = get_json(format!("{}/__sim/state", base(&info, "chatwoot")))
        .await
        .unwrap();
    let ids: Vec<u64> = dump["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["phone_number"].is_string())
        .filter_map(|c| c["id"].as_u64())
        .take(100)
        .collect();
    assert!(ids.len() >= 20, "{} contacts", ids.len());
    let reset = client()
        .post(format!("{}/__sim/reset-log", base(&info, "chatwoot")))
        .send()
        .await
        .unwrap();
    assert!(reset.status().is_success());
    // 1,000 edits, ten or so per contact, twenty at a time: 1,000 signed deliveries.
    let edits: Vec<(u64, String)> = (0..EDITS)
        .map(|i| (ids[i % ids.len()], format!("Burst{}x{i}", i % ids.len())))
        .collect();
    {
        use futures::StreamExt;
        futures::stream::iter(edits.iter().cloned())
            .map(|(id, name)| {
                let info = info.clone();
                async move { rename_in_chatwoot(&info, id, &name).await }
            })
            .buffer_unordered(20)
            .collect::<Vec<()>>()
            .await;
    }
    let answered = poll("every delivery answered", PATIENCE, || async {
        let d = deliveries(&info).await;
        let burst: Vec<Value> = d
            .into_iter()
            .filter(|d| {
                ids.contains(&d["contact_id"].as_u64().unwrap_or(0))
                    && d["event"] == "contact_updated"
            })
            .collect();
        (burst.len() >= EDITS).then_some(burst)
    })
    .await;
    assert!(
        answered.iter().all(|d| d["status"] == 202),
        "every event accepted: {:?}",
        answered
            .iter()
            .filter(|d| d["status"] != 202)
            .take(3)
            .collect::<Vec<_>>()
    );
    // Nothing dropped: each contact's last name is what the store saw last, and
    // every write it caused went out.
    let last: std::collections::HashMap<u64, String> = edits.iter().cloned().collect();
    poll("every last name applied and pushed", PATIENCE, || async {
        let done = queued(&store) == 0
            && pending_intents(&store) == 0
            && last
                .iter()
                .all(|(id, name)| chatwoot_snapshot_name(&store, *id).as_deref() == Some(name));
        done.then_some(())
    })
    .await;
    let cw = get_json(format!("{}/__sim/counters", base(&info, "chatwoot")))
        .await
        .unwrap();
    let reads = cw["reads"].as_u64().unwrap();
    eprintln!(
        "burst: {reads} Chatwoot reads for {EDITS} events on {} contacts",
        ids.len()
    );
    // At most the record and its labels per event; events of one contact coalesce, and
    // those that already show what the store holds cost nothing.
    assert!(
        reads <= 2 * EDITS as u64,
        "{reads} Chatwoot reads for {EDITS} events"
    );
    assert!(reads >= 2 * ids.len() as u64);
    assert_eq!(
        cw["writes"].as_u64().unwrap(),
        EDITS as u64,
        "only the edits themselves"
    );
}

/// The simulated MaiAgent's contacts whose email is `email`.
async fn maiagent_records_with_email(info: &Value, email: &str) -> Vec<Value> {
    get_json(format!("{}/__sim/state", base(info, "maiagent")))
        .await
        .unwrap()["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["email"].as_str() == Some(email))
        .cloned()
        .collect()
}

/// Creates a contact in MaiAgent through its API, as someone working there would; returns
/// its id.
async fn create_in_maiagent(info: &Value, name: &str, email: &str, phone: &str) -> String {
    let r = client()
        .post(format!("{}/api/contacts/", base(info, "maiagent")))
        .header(
            "authorization",
            format!("Api-Key {}", info["maiagent"]["api_key"].as_str().unwrap()),
        )
        .json(&json!({"name": name, "email": email, "phoneNumber": phone,
                      "inboxes": [{"id": info["maiagent"]["inbox_id"]}]}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "maiagent create: {}", r.status());
    let v: Value = r.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// Creates a contact through the simulated Chatwoot's control endpoint (as an agent in
/// the UI would); returns its id.
async fn create_through_control(info: &Value, body: Value) -> u64 {
    let r = client()
        .post(format!("{}/__sim/contacts", base(info, "chatwoot")))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "control create: {}", r.status());
    let v: Value = r.json().await.unwrap();
    v["payload"]["contact"]["id"].as_u64().unwrap()
}

/// The remote id of the store's link of `provider` for the person with `email`.
fn linked_remote_id(store: &Path, provider: &str, email: &str) -> Option<String> {
    let conn =
        rusqlite::Connection::open_with_flags(store, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.query_row(
        "SELECT l.remote_id FROM links l JOIN providers p ON p.id = l.provider_id
         WHERE p.name = ?1 AND l.state = 'active' AND l.contact_id =
           (SELECT contact_id FROM links l2 JOIN providers p2 ON p2.id = l2.provider_id
            WHERE p2.name = 'support' AND l2.snapshot LIKE ?2)",
        [provider.to_owned(), format!("%\"{email}\"%")],
        |r| r.get(0),
    )
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_created_in_chatwoot_reaches_maiagent_too_in_seconds_and_is_never_duplicated() {
    let (sim, dir, config, port, _id, _secret) = setup(10).await;
    let info = sim.info();
    let store = dir.path().join("contacts.db");
    let _daemon = Daemon::start(&info, &config, dir.path());
    poll("the start-up cycle", PATIENCE, || async {
        cycles_finished(port).await.filter(|n| *n >= 1)
    })
    .await;
    reaches_the_others(&info, "Wendyhook", PATIENCE).await;

    // A person new everywhere, created in Chatwoot through its API: the targeted cycle
    // creates them in MaiAgent (which can be listed, and whose listing completed at
    // start-up) as well as in the two providers that cannot be listed.
    create_in_chatwoot(
        &info,
        "Newtonhook",
        "newton.hook@example.com",
        "+14155550181",
    )
    .await;
    reaches_the_others(&info, "Newtonhook", WITHIN).await;
    assert_eq!(
        maiagent_records_with_email(&info, "newton.hook@example.com")
            .await
            .len(),
        1
    );

    // Someone adds a person in MaiAgent by hand, after its last listing; then an agent
    // adds the same person in Chatwoot's UI (the control endpoint). MaiAgent's record is
    // found by the person's keys and linked, not duplicated.
    let by_hand =
        create_in_maiagent(&info, "Mira Hand", "mira.hook@example.com", "+14155550182").await;
    let mira = create_through_control(
        &info,
        json!({"name": "Mirahook", "email": "mira.hook@example.com", "phone_number": "+14155550182"}),
    )
    .await;
    reaches_the_others(&info, "Mirahook", WITHIN).await;
    let held = maiagent_records_with_email(&info, "mira.hook@example.com").await;
    assert_eq!(held.len(), 1, "no duplicate in MaiAgent: {held:?}");
    assert_eq!(held[0]["id"].as_str(), Some(by_hand.as_str()));
    assert_eq!(
        linked_remote_id(&store, "sales-bot", "mira.hook@example.com").as_deref(),
        Some(by_hand.as_str())
    );

    // An edit made through the control endpoint is delivered and applied like an API edit.
    let r = client()
        .patch(format!("{}/__sim/contacts/{mira}", base(&info, "chatwoot")))
        .json(&json!({"name": "Miraedited"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "control edit: {}", r.status());
    reaches_the_others(&info, "Miraedited", WITHIN).await;
    poll("the control edit's delivery accepted", PATIENCE, || async {
        deliveries(&info).await.into_iter().find(|d| {
            d["contact_id"] == mira && d["event"] == "contact_updated" && d["status"] == 202
        })
    })
    .await;
    assert_eq!(
        maiagent_records_with_email(&info, "mira.hook@example.com")
            .await
            .len(),
        1
    );
}

async fn runs_json(info: &Value, config: &Path) -> Vec<Value> {
    let out = run(
        info,
        &["runs", "--json", "--config", config.to_str().unwrap()],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["runs"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_driven_rename_is_a_run_that_undo_puts_back() {
    let (sim, dir, config, port, id, _secret) = setup(10).await;
    let info = sim.info();
    let store = dir.path().join("contacts.db");
    let mut daemon = Daemon::start(&info, &config, dir.path());
    poll("the start-up cycle", PATIENCE, || async {
        cycles_finished(port).await.filter(|n| *n >= 1)
    })
    .await;
    reaches_the_others(&info, "Wendyhook", PATIENCE).await;
    poll("the start-up echoes drained", PATIENCE, || async {
        (queued(&store) == 0).then_some(())
    })
    .await;
    // The start-up cycle's own writes to Chatwoot come back as events; they change
    // nothing and leave no run behind.
    let before = runs_json(&info, &config).await;
    assert!(
        before.iter().all(|r| r.get("trigger").is_none()),
        "echoes made no run: {before:#?}"
    );

    rename_in_chatwoot(&info, id, "Wendyundo").await;
    reaches_the_others(&info, "Wendyundo", WITHIN).await;
    let listed = poll("the webhook run listed", PATIENCE, || async {
        runs_json(&info, &config)
            .await
            .into_iter()
            .find(|r| r["trigger"] == "webhook" && r["finished_at"].is_string())
    })
    .await;
    let run_id = listed["id"].as_i64().unwrap();
    assert!(run_id > before[0]["id"].as_i64().unwrap(), "run ids grow");
    assert_eq!(listed["ok"], true);
    for p in listed["providers"].as_array().unwrap() {
        match p["name"].as_str().unwrap() {
            "support" => assert_eq!(p["pulled"], 1, "{listed}"),
            other => assert_eq!(p["updated"], 1, "{other}: {listed}"),
        }
    }
    let human = run(&info, &["runs", "--config", config.to_str().unwrap()]).await;
    assert!(
        String::from_utf8_lossy(&human.stdout).contains("(webhook)"),
        "{}",
        String::from_utf8_lossy(&human.stdout)
    );

    // `history` names the run: the change came from Chatwoot and went to the others.
    let history = run(
        &info,
        &[
            "history",
            "wendy.hook@example.com",
            "--json",
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .await;
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    let in_run: Vec<&Value> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["run"] == run_id)
        .collect();
    assert!(
        in_run.iter().any(|e| e["kind"] == "changed_in"
            && e["provider"] == "support"
            && e["new"] == "Wendyundo"),
        "{in_run:#?}"
    );
    for p in ["sales-bot", "whatsapp", "campaigns"] {
        assert!(
            in_run
                .iter()
                .any(|e| e["kind"] == "sent_to" && e["provider"] == p),
            "{p}: {in_run:#?}"
        );
    }

    // Undo it (the daemon holds the store's sync lock: stop it first).
    poll("the queue drained", PATIENCE, || async {
        (queued(&store) == 0).then_some(())
    })
    .await;
    daemon.kill9();
    let undo = run(
        &info,
        &[
            "undo",
            "--run",
            &run_id.to_string(),
            "--config",
            config.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        undo.status.success(),
        "{}{}",
        String::from_utf8_lossy(&undo.stdout),
        String::from_utf8_lossy(&undo.stderr)
    );
    for p in ["chatwoot", "maiagent", "agentalk", "dmchamp"] {
        let text = state_text(&info, p).await;
        assert!(text.contains("Wendyhook"), "{p} has the old name back");
        assert!(
            !text.contains("Wendyundo"),
            "{p} no longer has the new name"
        );
    }
    let after = runs_json(&info, &config).await;
    assert_eq!(after[0]["undo_of"], run_id, "{:#?}", after[0]);
}
