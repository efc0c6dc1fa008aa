//! The fault matrix of issue 11 point 7: provider × fault × operation, against the real
//! binary and the simulated providers.
//!
//! Each cell names an operation by HTTP method and path substring per provider. Where a
//! path is a prefix of other paths of the same method (Chatwoot's `…/contacts` vs
//! `…/contacts/filter`), a *shield* rule added first matches the longer paths and serves
//! them untouched (`Delay { millis: 0 }` wins the request), so only the operation itself is
//! faulted. Cells that share a fault and an operation run in one world for every provider
//! that has the operation (they do not interfere: each provider is its own server).
//!
//! Not distinguishable by method and path, so covered together: MaiAgent's listing and its
//! lookup (both `GET …/contacts/`, the lookup adds `?query=`); Agentalk's create and update
//! (both the phone-keyed upsert `POST /api/contacts`). Not reachable with one instance per
//! kind: a Chatwoot tag write after a clean sync (tags originate only in Chatwoot, the one
//! listable provider with tags) and Chatwoot's lookup (used only to verify an uncertain
//! create; it is exercised by the create cells' uncertain faults).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, assert_converged, assert_no_duplicate_emails, stdout, text};
use contact_sync::simulator::faults::{FaultAction, FaultRule, RetryAfter};
use reqwest::Method;
use serde_json::json;

const SHIELD: FaultAction = FaultAction::Delay { millis: 0 };
/// The per-provider request timeout of the timeout cells, and the delay that exceeds it.
const TIMEOUT: &str = "timeout = \"1s\"";
const HANG_MS: u64 = 1_500;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Throttled,
    RetryAfterSeconds,
    RetryAfterDate,
    Status500,
    Html502,
    Status503,
    Timeout,
    Dropped,
    Truncated,
}

const FAULTS: [Fault; 9] = [
    Fault::Throttled,
    Fault::RetryAfterSeconds,
    Fault::RetryAfterDate,
    Fault::Status500,
    Fault::Html502,
    Fault::Status503,
    Fault::Timeout,
    Fault::Dropped,
    Fault::Truncated,
];

impl Fault {
    fn action(self) -> FaultAction {
        match self {
            Fault::Throttled => FaultAction::chatwoot_throttled(),
            Fault::RetryAfterSeconds => FaultAction::too_many_requests(RetryAfter::Seconds(1)),
            Fault::RetryAfterDate => FaultAction::too_many_requests(RetryAfter::HttpDate(1)),
            Fault::Status500 => FaultAction::status(500),
            Fault::Html502 => FaultAction::HtmlPage { status: 502 },
            Fault::Status503 => FaultAction::status(503),
            Fault::Timeout => FaultAction::Delay { millis: HANG_MS },
            Fault::Dropped => FaultAction::DropConnection,
            Fault::Truncated => FaultAction::Truncated,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    List,
    Lookup,
    Create,
    Update,
    TagWrite,
}

/// One operation of one provider: its method, its path substring, and the longer paths
/// of the same method that must not be faulted.
struct Target {
    kind: &'static str,
    name: &'static str,
    method: Method,
    path: &'static str,
    shield: Option<&'static str>,
}

fn target(
    kind: &'static str,
    name: &'static str,
    method: Method,
    path: &'static str,
    shield: Option<&'static str>,
) -> Target {
    Target {
        kind,
        name,
        method,
        path,
        shield,
    }
}

/// Where each operation happens, per provider (paths from `src/provider/<kind>.rs` and
/// the simulators' routers). Providers without the operation are left out.
fn targets(op: Op) -> Vec<Target> {
    use Method as M;
    match op {
        Op::List => vec![
            target(
                "chatwoot",
                "support",
                M::GET,
                "/contacts",
                Some("/contacts/"),
            ),
            target("maiagent", "sales-bot", M::GET, "/api/contacts/", None),
        ],
        Op::Lookup => vec![
            target("agentalk", "whatsapp", M::GET, "/api/contacts/search", None),
            target(
                "dmchamp",
                "campaigns",
                M::GET,
                "/v1/contacts",
                Some("/v1/contacts/"),
            ),
        ],
        Op::Create => vec![
            target(
                "chatwoot",
                "support",
                M::POST,
                "/contacts",
                Some("/contacts/"),
            ),
            target("maiagent", "sales-bot", M::POST, "/api/contacts/", None),
            target(
                "agentalk",
                "whatsapp",
                M::POST,
                "/api/contacts",
                Some("/api/contacts/"),
            ),
            target(
                "dmchamp",
                "campaigns",
                M::POST,
                "/v1/contacts",
                Some("/v1/contacts/"),
            ),
        ],
        Op::Update => vec![
            target("chatwoot", "support", M::PUT, "/contacts/", None),
            target("maiagent", "sales-bot", M::PATCH, "/api/contacts/", None),
            target(
                "agentalk",
                "whatsapp",
                M::POST,
                "/api/contacts",
                Some("/api/contacts/"),
            ),
            target("dmchamp", "campaigns", M::PUT, "/v1/contacts/", None),
        ],
        Op::TagWrite => vec![
            target("agentalk", "whatsapp", M::POST, "/tags", None),
            target("dmchamp", "campaigns", M::POST, "/v1/tags", None),
        ],
    }
}

fn log(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Adds the rules of `t` with `fault`, firing at most `count` times (every matching
/// request when `None`).
fn inject(world: &World, t: &Target, fault: Fault, count: Option<u32>) {
    let faults = world.server(t.kind).faults();
    if let Some(shield) = t.shield {
        faults.add(FaultRule::new(SHIELD).method(t.method.clone()).path(shield));
    }
    let mut rule = FaultRule::new(fault.action())
        .method(t.method.clone())
        .path(t.path);
    if let Some(n) = count {
        rule = rule.count(n);
    }
    faults.add(rule);
}

/// Times the injected fault (not a shield) fired at `t`'s provider.
fn fired(world: &World, t: &Target) -> u32 {
    world
        .server(t.kind)
        .faults()
        .rules()
        .iter()
        .filter(|r| r.rule.action != SHIELD)
        .map(|r| r.fired)
        .sum()
}

fn clear(world: &World) {
    for kind in ["chatwoot", "maiagent", "agentalk", "dmchamp"] {
        world.server(kind).faults().clear();
    }
}

fn short_timeouts(world: &World) {
    for name in ["support", "sales-bot", "whatsapp", "campaigns"] {
        world.set_provider(name, TIMEOUT);
    }
}

/// A small world; `budget` is its `sync.retry_budget`.
async fn world(fault: Fault, budget: &str) -> World {
    let world = World::new(20).await;
    world.set_sync(&format!("retry_budget = \"{budget}\""));
    if fault == Fault::Timeout {
        short_timeouts(&world);
    }
    world
}

/// After a clean sync, a human renames one person in Chatwoot and one in MaiAgent (so
/// every provider gets an update) and labels one Chatwoot person (so Agentalk and DM
/// Champ get a tag write).
async fn change_people(world: &World) {
    let http = reqwest::Client::builder().build().unwrap();
    let cw = world.contacts("chatwoot");
    let with_phone: Vec<_> = cw
        .iter()
        .filter(|c| !text(c, "phone_number").is_empty() && !text(c, "email").is_empty())
        .collect();
    let (a, b) = (with_phone[0], with_phone[1]);
    let r = http
        .put(world.chatwoot_url(&format!("/contacts/{}", text(a, "id"))))
        .header("api_access_token", world.chatwoot_token())
        .json(&json!({"name": "Renamed In Chatwoot"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    // A label that exists in the account and that `b` lacks.
    let label = cw
        .iter()
        .flat_map(|c| c["labels"].as_array().cloned().unwrap_or_default())
        .filter_map(|l| l.as_str().map(str::to_owned))
        .find(|l| {
            !b["labels"]
                .as_array()
                .is_some_and(|have| have.iter().any(|h| h.as_str() == Some(l)))
        })
        .expect("a label to add");
    let mut labels: Vec<String> = b["labels"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|l| l.as_str().map(str::to_owned))
        .collect();
    labels.push(label);
    let r = http
        .post(world.chatwoot_url(&format!("/contacts/{}/labels", text(b, "id"))))
        .header("api_access_token", world.chatwoot_token())
        .json(&json!({ "labels": labels }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    // Someone else (not `a`, with a phone) renamed in MaiAgent.
    let info = world.sim.info();
    let base = info["maiagent"]["base_url"].as_str().unwrap().to_owned();
    let key = info["maiagent"]["api_key"].as_str().unwrap().to_owned();
    let email_a = text(a, "email").to_lowercase();
    let m = world
        .contacts("maiagent")
        .into_iter()
        .find(|c| {
            !text(c, "phoneNumber").is_empty()
                && !text(c, "email").is_empty()
                && text(c, "email").to_lowercase() != email_a
        })
        .expect("a MaiAgent contact with a phone");
    let r = http
        .patch(format!("{base}/api/contacts/{}/", text(&m, "id")))
        .header("Authorization", format!("Api-Key {key}"))
        .json(&json!({"name": "Renamed In Maiagent"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
}

/// A world with the changes of [`change_people`] pending after a clean sync.
async fn changed_world(fault: Fault, budget: &str) -> World {
    let world = world(fault, budget).await;
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    change_people(&world).await;
    world
}

/// A transient cell: `fault` fires twice on `op` in every provider that has it; one run
/// exits 0 and converges without duplicates, and the next run sends no write.
async fn transient(op: Op, fault: Fault) {
    let world = match op {
        Op::Update | Op::TagWrite => changed_world(fault, "20s").await,
        _ => world(fault, "20s").await,
    };
    let cells = targets(op);
    for t in &cells {
        inject(&world, t, fault, Some(2));
    }
    let out = world.sync().await;
    let cell = format!("{op:?} × {fault:?}");
    assert_eq!(out.status.code(), Some(0), "{cell}: {}", log(&out));
    for t in &cells {
        assert!(
            fired(&world, t) > 0,
            "{cell}: the fault fired at {}: {:?}\n{}",
            t.name,
            world.server(t.kind).faults().rules(),
            log(&out)
        );
    }
    assert_converged(&world);
    clear(&world);
    let before = world.writes();
    let out = world.sync().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{cell}, second run: {}",
        log(&out)
    );
    assert_eq!(
        world.writes(),
        before,
        "{cell}: a second run sends no write\n{}",
        log(&out)
    );
}

macro_rules! transient_cells {
    ($($name:ident: $op:expr, $faults:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            for fault in $faults {
                transient($op, fault).await;
            }
        }
    )*};
}

// A truncated body is the connection cut mid-message (the full `Content-Length`
// announced, half the body sent): a transport failure, retried like a dropped
// connection; for a create or an upsert it is an uncertain write, verified by lookup
// before it is sent again.
transient_cells! {
    transient_faults_on_list_pages_converge_in_one_run: Op::List, FAULTS;
    transient_faults_on_lookups_converge_in_one_run: Op::Lookup, FAULTS;
    transient_faults_on_creates_converge_in_one_run: Op::Create, FAULTS;
    transient_faults_on_updates_converge_in_one_run: Op::Update, FAULTS;
    transient_faults_on_tag_writes_converge_in_one_run: Op::TagWrite, FAULTS;
}

/// A fault that never clears on `op` of one provider: the run exits 1 naming it and
/// saying what to do, nothing is duplicated, and once the fault clears a rerun converges.
async fn never_clears(op: Op, fault: Fault, kind: &str) {
    let world = match op {
        Op::Update | Op::TagWrite => changed_world(fault, "5s").await,
        _ => world(fault, "5s").await,
    };
    let t = targets(op)
        .into_iter()
        .find(|t| t.kind == kind)
        .expect("the provider has the operation");
    inject(&world, &t, fault, None);
    let out = world.sync().await;
    let cell = format!("{} {op:?} × {fault:?} (never clears)", t.name);
    assert_eq!(out.status.code(), Some(1), "{cell}: {}", log(&out));
    assert!(fired(&world, &t) > 0, "{cell}: the fault fired");
    let shown = stdout(&out);
    let line = shown
        .lines()
        .find(|l| l.starts_with(t.name))
        .unwrap_or_default();
    assert!(
        !line.is_empty() && !line.ends_with("ok"),
        "{cell}: the summary names {} as failing\n{}",
        t.name,
        log(&out)
    );
    let all = log(&out);
    assert!(
        ["rerun", "next cycle", "Check"]
            .iter()
            .any(|w| all.contains(w)),
        "{cell}: the summary or the log says what to do\n{all}"
    );
    for k in ["chatwoot", "maiagent", "agentalk", "dmchamp"] {
        assert_no_duplicate_emails(k, &world.contacts(k));
    }
    clear(&world);
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{cell}, rerun: {}", log(&out));
    assert_converged(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_answered_503_forever_exits_1_and_the_rerun_converges() {
    never_clears(Op::Create, Fault::Status503, "chatwoot").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_throttled_forever_exits_1_and_the_rerun_converges() {
    never_clears(Op::List, Fault::Throttled, "maiagent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_timing_out_forever_exit_1_and_the_rerun_converges() {
    never_clears(Op::Lookup, Fault::Timeout, "dmchamp").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_dropped_forever_exit_1_and_the_rerun_converges() {
    never_clears(Op::Update, Fault::Dropped, "maiagent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tag_writes_answered_502_forever_exit_1_and_the_rerun_converges() {
    never_clears(Op::TagWrite, Fault::Html502, "agentalk").await;
}
