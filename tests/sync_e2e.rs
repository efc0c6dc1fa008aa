//! End to end: the real binary syncing the four simulated providers over loopback, as
//! README.md describes it. The simulated providers decide every answer; tests only seed
//! data, make "human" edits through each provider's public API, and inject faults.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, assert_converged, end_state, stdout, text};
use contact_sync::simulator::faults::{FaultAction, FaultRule, RetryAfter};
use serde_json::{Value, json};
use std::collections::HashMap;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_sync_converges_and_second_sends_nothing() {
    let world = World::new(60).await;
    let out = world.sync().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_converged(&world);
    let status = world.status().await;
    assert_eq!(
        status["contacts"],
        world.known(),
        "one golden record per person: {status}"
    );
    assert_eq!(status["pending"], 0);
    assert_eq!(status["dead"], 0);
    assert_eq!(status["conflicts"], 0);

    // Everyone's name and email agree across Chatwoot and MaiAgent.
    let by_email = |list: Vec<Value>| -> HashMap<String, String> {
        list.iter()
            .map(|c| (text(c, "email").trim().to_lowercase(), text(c, "name")))
            .collect()
    };
    let (cw, mai) = (
        by_email(world.contacts("chatwoot")),
        by_email(world.contacts("maiagent")),
    );
    for (email, name) in &cw {
        if !email.is_empty() {
            assert_eq!(mai.get(email), Some(name), "{email}");
        }
    }

    let before = world.writes();
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_eq!(world.writes(), before, "a second run sends zero writes");
    assert_converged(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn human_edits_reach_the_others_with_one_write_each() {
    let world = World::new(30).await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    // Pick someone held everywhere: with a phone and an email.
    let person = world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| !text(c, "email").is_empty() && !text(c, "phone_number").is_empty())
        .expect("someone with a phone and an email");
    let id = text(&person, "id");
    let email = text(&person, "email");
    let http = reqwest::Client::builder().build().unwrap();
    let token = world.chatwoot_token();

    // Rename in Chatwoot.
    let r = http
        .put(world.chatwoot_url(&format!("/contacts/{id}")))
        .header("api_access_token", &token)
        .json(&json!({"name": "Renata Quintero-Vale"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let before = world.writes();
    assert_eq!(world.sync().await.status.code(), Some(0));
    let after = world.writes();
    assert_eq!(after[0] - before[0], 0, "nothing written back to chatwoot");
    assert_eq!(after[1] - before[1], 1, "one write to maiagent");
    assert_eq!(after[2] - before[2], 1, "one write to agentalk");
    assert_eq!(after[3] - before[3], 1, "one write to dm champ");
    let mai = world
        .contacts("maiagent")
        .into_iter()
        .find(|c| text(c, "email").eq_ignore_ascii_case(&email))
        .unwrap();
    assert_eq!(text(&mai, "name"), "Renata Quintero-Vale");
    let ata = world
        .contacts("agentalk")
        .into_iter()
        .find(|c| text(c, "email").eq_ignore_ascii_case(&email))
        .unwrap();
    assert_eq!(
        (text(&ata, "firstName"), text(&ata, "lastName")),
        ("Renata".into(), "Quintero-Vale".into())
    );

    // Tag add in Chatwoot (labels replace the whole set: read, add, write).
    let labels: Value = http
        .get(world.chatwoot_url(&format!("/contacts/{id}/labels")))
        .header("api_access_token", &token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut set: Vec<String> = labels["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    http.post(world.chatwoot_url("/labels"))
        .header("api_access_token", &token)
        .json(&json!({"title": "priority", "description": "", "color": "#ff0000", "show_on_sidebar": true}))
        .send()
        .await
        .unwrap();
    set.push("priority".into());
    let r = http
        .post(world.chatwoot_url(&format!("/contacts/{id}/labels")))
        .header("api_access_token", &token)
        .json(&json!({"labels": set}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let before = world.writes();
    assert_eq!(world.sync().await.status.code(), Some(0));
    let after = world.writes();
    assert_eq!(after[0] - before[0], 0, "nothing written back to chatwoot");
    assert_eq!(after[1] - before[1], 0, "maiagent has no tags");
    assert_eq!(after[2] - before[2], 1, "one tag write to agentalk");
    assert_eq!(after[3] - before[3], 1, "one tag write to dm champ");
    let ata = world
        .contacts("agentalk")
        .into_iter()
        .find(|c| text(c, "email").eq_ignore_ascii_case(&email))
        .unwrap();
    assert!(ata["tags"].to_string().contains("priority"), "{ata}");

    // Tag remove in Chatwoot: Agentalk follows, DM Champ cannot (skipped, not an error).
    set.retain(|t| t != "priority");
    http.post(world.chatwoot_url(&format!("/contacts/{id}/labels")))
        .header("api_access_token", &token)
        .json(&json!({"labels": set}))
        .send()
        .await
        .unwrap();
    let before = world.writes();
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let after = world.writes();
    assert_eq!(after[2] - before[2], 1, "one tag removal in agentalk");
    assert_eq!(after[3] - before[3], 0, "dm champ cannot remove tags");
    let ata = world
        .contacts("agentalk")
        .into_iter()
        .find(|c| text(c, "email").eq_ignore_ascii_case(&email))
        .unwrap();
    assert!(!ata["tags"].to_string().contains("priority"), "{ata}");

    // Email change in MaiAgent reaches Chatwoot.
    let mai = world
        .contacts("maiagent")
        .into_iter()
        .find(|c| text(c, "email").eq_ignore_ascii_case(&email))
        .unwrap();
    let info = world.sim.info();
    let r = http
        .patch(format!(
            "{}/api/contacts/{}/",
            info["maiagent"]["base_url"].as_str().unwrap(),
            text(&mai, "id")
        ))
        .header(
            "Authorization",
            format!("Api-Key {}", info["maiagent"]["api_key"].as_str().unwrap()),
        )
        .json(&json!({"email": "renata.qv@example.org"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
    let before = world.writes();
    assert_eq!(world.sync().await.status.code(), Some(0));
    let after = world.writes();
    assert_eq!(after[0] - before[0], 1, "one write to chatwoot");
    assert_eq!(after[1] - before[1], 0, "nothing written back to maiagent");
    let cw = world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| text(c, "id") == id)
        .unwrap();
    assert_eq!(text(&cw, "email"), "renata.qv@example.org");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_still_converge_to_the_same_end_state() {
    let clean = World::new(25).await;
    assert_eq!(clean.sync().await.status.code(), Some(0));

    let faulty = World::new(25).await;
    let s = |kind: &str| faulty.server(kind);
    s("chatwoot").faults().add(
        FaultRule::new(FaultAction::chatwoot_throttled())
            .every_nth(3)
            .count(4),
    );
    s("maiagent")
        .faults()
        .add(FaultRule::new(FaultAction::too_many_requests(RetryAfter::Seconds(1))).count(2));
    s("agentalk").faults().add(
        FaultRule::new(FaultAction::status(503))
            .every_nth(4)
            .count(3),
    );
    s("dmchamp")
        .faults()
        .add(FaultRule::new(FaultAction::too_many_requests(RetryAfter::HttpDate(1))).count(1));
    s("dmchamp")
        .faults()
        .add(FaultRule::new(FaultAction::Delay { millis: 300 }).count(5));
    let out = faulty.sync().await;
    // Transient faults are retried inside the cycle; a write that still failed is retried
    // by the next cycle.
    if out.status.code() != Some(0) {
        assert_eq!(faulty.sync().await.status.code(), Some(0));
    }
    assert_converged(&faulty);
    assert_eq!(end_state(&faulty), end_state(&clean));
    assert!(s("chatwoot").faults().fired() > 0 && s("agentalk").faults().fired() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_page_fails_that_provider_only_and_loses_nothing() {
    let world = World::new(40).await;
    world.server("maiagent").faults().add(
        FaultRule::new(FaultAction::InvalidJson)
            .method(reqwest::Method::GET)
            .count(1),
    );
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let table = stdout(&out);
    assert!(
        table.contains("sales-bot") && table.contains("FAILED"),
        "{table}"
    );
    // The others synced: Chatwoot's people reached Agentalk and DM Champ.
    let status = world.status().await;
    let linked = |name: &str| {
        status["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["linked"]
            .as_i64()
            .unwrap()
    };
    assert!(linked("support") > 0 && linked("whatsapp") > 0, "{status}");
    // The next clean run converges.
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert_converged(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_person_deleted_in_chatwoot_is_not_recreated_nor_deleted_elsewhere() {
    let world = World::new(30).await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    let victim = world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| !text(c, "email").is_empty())
        .unwrap();
    let email = text(&victim, "email");
    let http = reqwest::Client::builder().build().unwrap();
    let r = http
        .delete(world.chatwoot_url(&format!("/contacts/{}", text(&victim, "id"))))
        .header("api_access_token", world.chatwoot_token())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    for _ in 0..2 {
        let out = world.sync().await;
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    }
    assert!(
        !world
            .contacts("chatwoot")
            .iter()
            .any(|c| text(c, "email") == email),
        "not re-created in chatwoot"
    );
    assert!(
        world
            .contacts("maiagent")
            .iter()
            .any(|c| text(c, "email").eq_ignore_ascii_case(&email)),
        "kept in maiagent"
    );
    assert_eq!(world.contacts("chatwoot").len(), world.known() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_listing_once_deletes_and_unlinks_nothing() {
    let world = World::new(30).await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    let linked_before = world.status().await["providers"][0]["linked"].clone();
    // A proxy answers the listing with an empty page once.
    world.server("chatwoot").faults().add(
        FaultRule::new(FaultAction::Status {
            status: 200,
            retry_after: None,
            body: Some(r#"{"meta":{"count":0,"current_page":"1"},"payload":[]}"#.into()),
            content_type: Some("application/json".into()),
        })
        .method(reqwest::Method::GET)
        .path("/contacts")
        .count(1),
    );
    let before = world.writes();
    let out = world.sync().await;
    assert!(
        stdout(&out).contains("none were marked deleted"),
        "{}",
        stdout(&out)
    );
    assert_eq!(world.writes(), before, "nothing written anywhere");
    assert_eq!(
        world.status().await["providers"][0]["linked"],
        linked_before
    );
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0));
    assert_converged(&world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_and_the_real_run_does_what_it_printed() {
    let world = World::new(20).await;
    // A first dry run against fresh providers plans creates but sends nothing.
    let out = world.run(&["--sync-now", "--dry-run"]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout(&out).contains("create"), "{}", stdout(&out));
    assert_eq!(world.writes(), [0, 0, 0, 0]);
    assert_eq!(
        world.status().await["contacts"],
        0,
        "the store is left as it was"
    );
    assert_eq!(world.sync().await.status.code(), Some(0));

    // A human renames someone in Chatwoot; the dry run shows the update per provider.
    let person = world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| !text(c, "phone_number").is_empty() && !text(c, "email").is_empty())
        .unwrap();
    let old = text(&person, "name");
    let http = reqwest::Client::builder().build().unwrap();
    http.put(world.chatwoot_url(&format!("/contacts/{}", text(&person, "id"))))
        .header("api_access_token", world.chatwoot_token())
        .json(&json!({"name": "Dry Run Person"}))
        .send()
        .await
        .unwrap();
    let status_before = world.status().await;
    let before = world.writes();
    let out = world.run(&["--sync-now", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0));
    let listing = stdout(&out);
    assert!(
        listing.contains(&format!("name {old:?} → \"Dry Run Person\"")),
        "{listing}"
    );
    let planned = listing
        .lines()
        .filter(|l| l.trim_start().starts_with("update"))
        .count();
    assert_eq!(world.writes(), before, "dry run sends no write");
    assert_eq!(
        world.status().await,
        status_before,
        "dry run leaves the store as it was"
    );
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0));
    let after = world.writes();
    let sent: u64 = after.iter().zip(before).map(|(a, b)| a - b).sum();
    assert_eq!(
        sent, planned as u64,
        "the real run sent what the dry run printed:\n{listing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_claiming_two_people_is_held_as_a_conflict_not_merged() {
    let world = World::new(30).await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    let people: Vec<Value> = world
        .contacts("chatwoot")
        .into_iter()
        .filter(|c| !text(c, "email").is_empty() && !text(c, "phone_number").is_empty())
        .take(2)
        .collect();
    let (a, b) = (&people[0], &people[1]);
    let contacts_before = world.status().await["contacts"].clone();
    // Someone types a new MaiAgent contact with A's phone and B's email.
    world
        .maiagent_record(json!({
            "name": "Mixed Up",
            "phoneNumber": text(a, "phone_number"),
            "email": text(b, "email"),
        }))
        .await;
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let status = world.status().await;
    assert_eq!(status["conflicts"], 1, "{status}");
    assert_eq!(status["conflict_details"][0]["provider"], "sales-bot");
    assert_eq!(
        status["contacts"], contacts_before,
        "nothing merged, nothing created"
    );
    // A and B are untouched in Chatwoot.
    let cw = world.contacts("chatwoot");
    for p in [a, b] {
        let now = cw.iter().find(|c| text(c, "id") == text(p, "id")).unwrap();
        assert_eq!(
            (text(now, "name"), text(now, "email")),
            (text(p, "name"), text(p, "email"))
        );
    }
    let human = world.run(&["status"]).await;
    assert!(
        stdout(&human).contains("conflicts awaiting review"),
        "{}",
        stdout(&human)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_flag_limits_the_cycle_to_the_named_providers() {
    let world = World::new(20).await;
    let out = world
        .run(&[
            "--sync-now",
            "--provider",
            "support",
            "--provider",
            "whatsapp",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let table = stdout(&out);
    assert!(
        table.contains("support") && table.contains("whatsapp"),
        "{table}"
    );
    assert!(
        !table.contains("sales-bot") && !table.contains("campaigns"),
        "{table}"
    );
    let writes = world.writes();
    assert_eq!(
        (writes[1], writes[3]),
        (0, 0),
        "nothing sent to unnamed providers"
    );
    assert!(writes[2] > 0, "whatsapp was pushed to");
    assert_eq!(
        world.server("maiagent").log().counters().reads,
        0,
        "maiagent not even read"
    );
    let out = world.run(&["--sync-now", "--provider", "nope"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no provider named `nope`"));
}

/// `contact-sync simulate` as README.md describes it: one JSON line, the same object in
/// `--info-file`, servers usable with only that object's credentials, SIGTERM stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_prints_its_info_serves_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let info_file = dir.path().join("sim.json");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_contact-sync"))
        .args(["simulate", "--contacts", "20", "--seed", "3", "--info-file"])
        .arg(&info_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut waited = 0;
    while !info_file.exists() && waited < 200 {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    // The file is written in one go after the line is printed; give it a moment to land.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let info: Value = serde_json::from_str(&std::fs::read_to_string(&info_file).unwrap()).unwrap();
    for (provider, keys) in [
        (
            "chatwoot",
            &["base_url", "account_id", "inbox_id", "api_key"][..],
        ),
        ("maiagent", &["base_url", "inbox_id", "api_key"][..]),
        ("agentalk", &["base_url", "api_key"][..]),
        ("dmchamp", &["base_url", "api_key"][..]),
    ] {
        for key in keys {
            assert!(!info[provider][key].is_null(), "{provider}.{key} in {info}");
        }
    }
    let http = reqwest::Client::builder().build().unwrap();
    let list: Value = http
        .get(format!(
            "{}/api/v1/accounts/{}/contacts?sort=created_at",
            info["chatwoot"]["base_url"]
                .as_str()
                .unwrap()
                .trim_end_matches('/'),
            info["chatwoot"]["account_id"]
        ))
        .header(
            "api_access_token",
            info["chatwoot"]["api_key"].as_str().unwrap(),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["meta"]["count"].as_u64().unwrap() > 0, "{list}");
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let line: Value =
        serde_json::from_slice(out.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line, info, "the printed line is the info-file object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_propagate_deletes_a_deletion_reaches_the_providers_that_can_delete() {
    let world = World::new(30).await;
    let text_cfg = std::fs::read_to_string(&world.config).unwrap();
    std::fs::write(
        &world.config,
        text_cfg.replace("[sync]\n", "[sync]\npropagate_deletes = true\n"),
    )
    .unwrap();
    assert_eq!(world.sync().await.status.code(), Some(0));
    let victim = world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| !text(c, "email").is_empty() && !text(c, "phone_number").is_empty())
        .unwrap();
    let (email, phone) = (text(&victim, "email"), text(&victim, "phone_number"));
    let held = |list: Vec<Value>, key: &str, value: &str| {
        list.iter()
            .any(|c| text(c, key).trim().eq_ignore_ascii_case(value))
    };
    assert!(
        held(world.contacts("agentalk"), "phone", &phone)
            && held(world.contacts("dmchamp"), "phoneNumber", &phone)
    );
    let http = reqwest::Client::builder().build().unwrap();
    let r = http
        .delete(world.chatwoot_url(&format!("/contacts/{}", text(&victim, "id"))))
        .header("api_access_token", world.chatwoot_token())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("deleted here because they were deleted elsewhere"),
        "{}",
        stdout(&out)
    );
    assert!(
        !held(world.contacts("chatwoot"), "email", &email),
        "gone from chatwoot"
    );
    assert!(
        !held(world.contacts("maiagent"), "email", &email),
        "deleted in maiagent"
    );
    assert!(
        !held(world.contacts("agentalk"), "phone", &phone),
        "deleted in agentalk: {}",
        stdout(&out)
    );
    assert!(
        held(world.contacts("dmchamp"), "phoneNumber", &phone),
        "dm champ cannot delete: kept"
    );
    // Nothing comes back, and the next cycle has nothing left to write.
    let before = world.writes();
    assert_eq!(world.sync().await.status.code(), Some(0));
    assert_eq!(world.writes(), before);
    assert!(!held(world.contacts("maiagent"), "email", &email));
}

/// A person a lookup-only platform holds with an email the listed platforms lack: the
/// first sync links them there and never erases what that platform holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_found_record_keeps_what_only_it_holds() {
    use contact_sync::simulator::seed;
    let people = 300;
    let world = World::new(people).await;
    let (chatwoot, maiagent, agentalk) = (
        seed::Provider::of("chatwoot").unwrap(),
        seed::Provider::of("maiagent").unwrap(),
        seed::Provider::of("agentalk").unwrap(),
    );
    // Held by Agentalk with an email that no listable platform holding them has.
    let cases: Vec<(String, String)> = seed::people(common::SEED, people)
        .filter_map(|p| {
            let at = seed::placement(common::SEED, p.index);
            if !at.contains(agentalk) {
                return None;
            }
            let mut listed = [chatwoot, maiagent].into_iter().filter(|q| at.contains(*q));
            let first = listed.next()?;
            let without = |q| seed::written_for(common::SEED, &p, q).email.is_none();
            (without(first) && listed.all(without)).then_some(())?;
            let in_aa = seed::written_for(common::SEED, &p, agentalk);
            Some((in_aa.phone_e164.clone()?, in_aa.email_key()?))
        })
        .collect();
    assert!(!cases.is_empty(), "the seed has such people");
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let held: HashMap<String, String> = world
        .contacts("agentalk")
        .iter()
        .map(|c| (text(c, "phone"), text(c, "email").trim().to_lowercase()))
        .collect();
    for (phone, email) in &cases {
        assert_eq!(
            held.get(phone),
            Some(email),
            "Agentalk kept the email of {phone}"
        );
    }
}
