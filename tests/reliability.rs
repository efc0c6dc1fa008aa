//! The reliability promises a cron one-shot relies on, against the simulated providers:
//! transient faults are survived inside one run; one provider that never answers does not
//! hold the others back; two accounts of one platform are two providers.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, assert_converged, contacts, stdout, text};
use contact_sync::simulator::InstanceSpec;
use contact_sync::simulator::faults::{FaultAction, FaultRule, RetryAfter};
use reqwest::Method;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

fn log(out: &std::process::Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_within_the_budget_converge_in_one_run() {
    let world = World::new(40).await;
    // A proxy answering 503 to every 4th MaiAgent request (creates included), Chatwoot's
    // rate limit (429 without Retry-After) on every 3rd request, Agentalk asking to wait a
    // second on its first two writes, one DM Champ 500.
    world
        .server("maiagent")
        .faults()
        .add(FaultRule::new(FaultAction::status(503)).every_nth(4));
    world
        .server("chatwoot")
        .faults()
        .add(FaultRule::new(FaultAction::chatwoot_throttled()).every_nth(3));
    world.server("agentalk").faults().add(
        FaultRule::new(FaultAction::too_many_requests(RetryAfter::Seconds(1)))
            .method(Method::POST)
            .count(2),
    );
    world
        .server("dmchamp")
        .faults()
        .add(FaultRule::new(FaultAction::status(500)).count(1));
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    for kind in ["maiagent", "chatwoot"] {
        assert!(
            world.server(kind).faults().fired() > 0,
            "{kind}'s faults fired"
        );
    }
    assert_converged(&world);
    // Nothing is left over: the next run sends nothing.
    world.server("maiagent").faults().clear();
    world.server("chatwoot").faults().clear();
    let before = world.writes();
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    assert_eq!(world.writes(), before, "a second run sends no write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_are_looked_up_before_they_are_sent_again() {
    let world = World::new(40).await;
    // Every 4th Chatwoot request closes without an answer (the request is not applied).
    world
        .server("chatwoot")
        .faults()
        .add(FaultRule::new(FaultAction::DropConnection).every_nth(4));
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    assert!(world.server("chatwoot").faults().fired() > 0);
    assert_converged(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_answered_503_after_they_were_applied_are_not_duplicated() {
    // A 503 the proxy sends after the provider applied the create: only a lookup can
    // tell. Chatwoot can be searched by every key, so the retry links, never re-creates.
    let world = World::new(30).await;
    world.server("chatwoot").faults().add(
        FaultRule::new(FaultAction::DropConnection)
            .method(Method::POST)
            .path("/contacts")
            .every_nth(3),
    );
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    assert_converged(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_never_answers_is_cut_off_and_the_others_converge() {
    let world = World::new(30).await;
    world.set_sync("retry_budget = \"6s\"");
    world.set_provider("campaigns", "timeout = \"1s\"");
    // DM Champ accepts connections and never answers (within any timeout).
    world
        .server("dmchamp")
        .faults()
        .add(FaultRule::new(FaultAction::Delay { millis: 600_000 }));
    let started = Instant::now();
    let out = world.sync().await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", log(&out));
    let shown = stdout(&out);
    let line = shown
        .lines()
        .find(|l| l.starts_with("campaigns"))
        .unwrap_or_default();
    assert!(line.contains("cut off"), "{shown}");
    // Within the retry budget plus a request timeout (and the process's start and
    // the other providers' own work).
    assert!(took < Duration::from_secs(30), "took {took:?}\n{shown}");
    // The other three converged in that same run.
    let expected: BTreeMap<&str, usize> = world.expected().into_iter().collect();
    for kind in ["chatwoot", "maiagent", "agentalk"] {
        assert_eq!(
            world.contacts(kind).len(),
            expected[kind],
            "{kind} converged while DM Champ hung\n{shown}"
        );
    }
    for name in ["support", "sales-bot", "whatsapp"] {
        let l = shown.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(l.ends_with("ok"), "{l}");
    }
    // Its work was kept: once it answers, the next run completes it.
    world.server("dmchamp").faults().clear();
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    assert_converged(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listable_provider_that_never_answers_does_not_hold_back_the_others() {
    let world = World::new(30).await;
    world.set_sync("retry_budget = \"6s\"");
    world.set_provider("support", "timeout = \"1s\"");
    // Chatwoot accepts connections and never answers: its listing cannot be read.
    world
        .server("chatwoot")
        .faults()
        .add(FaultRule::new(FaultAction::Delay { millis: 600_000 }));
    let started = Instant::now();
    let out = world.sync().await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", log(&out));
    let shown = stdout(&out);
    let line = shown
        .lines()
        .find(|l| l.starts_with("support"))
        .unwrap_or_default();
    assert!(!line.ends_with("ok"), "{shown}");
    assert!(took < Duration::from_secs(30), "took {took:?}\n{shown}");
    // Everyone the other listings show reached the other three in that same run.
    let expected: BTreeMap<&str, usize> =
        world.expected_without(&["chatwoot"]).into_iter().collect();
    for kind in ["maiagent", "agentalk", "dmchamp"] {
        assert_eq!(
            world.contacts(kind).len(),
            expected[kind],
            "{kind} converged while Chatwoot hung\n{shown}"
        );
    }
    for name in ["sales-bot", "whatsapp", "campaigns"] {
        let l = shown.lines().find(|l| l.starts_with(name)).unwrap();
        assert!(l.ends_with("ok"), "{l}");
    }
    // Once it answers, the next run reads it and everything converges.
    world.server("chatwoot").faults().clear();
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    assert_converged(&world);
}

/// Per person (email), the labels one Chatwoot account holds.
fn labels(dump: &serde_json::Value) -> BTreeMap<String, BTreeSet<String>> {
    contacts(dump)
        .iter()
        .filter(|c| !text(c, "email").is_empty())
        .map(|c| {
            let labels = c["labels"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_lowercase))
                        .collect()
                })
                .unwrap_or_default();
            (text(c, "email").to_lowercase(), labels)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_chatwoot_accounts_are_two_providers_and_keep_their_labels() {
    let world = World::with_instances(
        60,
        &[
            InstanceSpec::new("support", "chatwoot", 0),
            InstanceSpec::new("sales", "chatwoot", 1),
            InstanceSpec::new("sales-bot", "maiagent", 0),
        ],
    )
    .await;
    let before: Vec<_> = ["support", "sales"]
        .iter()
        .map(|n| labels(&world.instance(n).dump()))
        .collect();
    assert!(
        before[0].values().any(|l| !l.is_empty()) && before[1].values().any(|l| !l.is_empty()),
        "both accounts start with labelled people"
    );
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    let after: Vec<_> = ["support", "sales"]
        .iter()
        .map(|n| labels(&world.instance(n).dump()))
        .collect();
    // Every person is once in each account, and nobody lost a label they carried.
    let people: BTreeSet<&String> = after[0].keys().chain(after[1].keys()).collect();
    for (i, name) in ["support", "sales"].iter().enumerate() {
        let dump = world.instance(name).dump();
        common::assert_no_duplicate_emails(name, &contacts(&dump));
        assert_eq!(
            after[i].len(),
            people.len(),
            "{name} holds every person with an email"
        );
        for (email, had) in &before[i] {
            let has = &after[i][email];
            assert!(
                had.is_subset(has),
                "{name}: {email} had {had:?}, has {has:?}"
            );
        }
    }
    // A person's labels from either account reach the other.
    for (email, had) in &before[0] {
        assert!(
            had.is_subset(&after[1][email]),
            "sales: {email} lacks {had:?}"
        );
    }
    // A second cycle has nothing to do.
    let writes = world.writes();
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    assert_eq!(world.writes(), writes, "the second cycle sends no write");
    let again: Vec<_> = ["support", "sales"]
        .iter()
        .map(|n| labels(&world.instance(n).dump()))
        .collect();
    assert_eq!(again, after, "labels stay as they are");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_that_shrinks_mid_scan_is_restarted() {
    // MaiAgent holds two pages; page 2 is answered late, and meanwhile people are deleted
    // there, so page 2 no longer exists when it is served ("Invalid page.").
    let world = World::new(250).await;
    let mai = world.server("maiagent");
    let held = contacts(&mai.dump());
    assert!(held.len() > 110, "two pages: {}", held.len());
    mai.faults().add(
        FaultRule::new(FaultAction::Delay { millis: 3_000 })
            .method(Method::GET)
            .path("/api/contacts")
            .every_nth(2)
            .count(1),
    );
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_contact-sync"));
    cmd.args(["--sync-now", "--config"]).arg(&world.config);
    cmd.env_remove("CONTACT_SYNC_CONFIG")
        .env("RUST_LOG", "contact_sync=info");
    for (k, v) in &world.keys {
        cmd.env(k, v);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Once the first page was answered, delete enough people to leave one page.
    let started = Instant::now();
    while mai.log().counters().reads < 1 && started.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = mai.info();
    let http = reqwest::Client::builder().build().unwrap();
    let key = info["api_key"].as_str().unwrap().to_owned();
    let base = info["base_url"]
        .as_str()
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let mut deleted = 0;
    for c in held.iter().rev() {
        if deleted == held.len() - 90 {
            break;
        }
        let r = http
            .delete(format!("{base}/api/contacts/{}/", text(c, "id")))
            .header("authorization", format!("Api-Key {key}"))
            .send()
            .await
            .unwrap();
        if r.status().is_success() {
            deleted += 1;
        }
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", log(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("listing changed during the scan"),
        "the listing was restarted: {}",
        log(&out)
    );
    common::assert_no_duplicate_emails("maiagent", &world.contacts("maiagent"));
    let writes = world.writes();
    assert_eq!(world.sync().await.status.code(), Some(0));
    assert_eq!(world.writes(), writes, "nothing left to do");
}
