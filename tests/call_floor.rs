//! API calls are the currency: a first import and the cycles after it, counted by the
//! simulated providers, against the least each provider's API allows for the seeded
//! population (`simulator::floor`, computed from the seed alone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SEED, World, stdout};
use contact_sync::domain::normalize::{DefaultRegion, normalize_phone};
use contact_sync::simulator::PROVIDERS;
use contact_sync::simulator::floor::{self, Requests};
use serde_json::{Value, json};
use std::fmt::Write;

fn counted(world: &World, kind: &str) -> Requests {
    let c = world.server(kind).log().counters();
    Requests {
        reads: c.reads,
        writes: c.writes,
    }
}

fn reset(world: &World) {
    for kind in ["chatwoot", "maiagent", "agentalk", "dmchamp"] {
        world.server(kind).log().reset();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_spends_at_most_five_percent_over_the_floor_and_a_quiet_cycle_the_floor() {
    let people = 400;
    let world = World::new(people).await;
    let floors = floor::floors(SEED, people);
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let mut report = String::new();
    let mut over = Vec::new();
    for (kind, floor) in &floors {
        let sent = counted(&world, kind);
        let limit = (floor.import.total() * 105 / 100).max(floor.import.total() + 2);
        let _ = writeln!(
            report,
            "{kind}: sent {} reads + {} writes = {}, floor {} + {} = {} (limit {limit})",
            sent.reads,
            sent.writes,
            sent.total(),
            floor.import.reads,
            floor.import.writes,
            floor.import.total()
        );
        if sent.total() > limit {
            over.push(*kind);
            let mut by = std::collections::BTreeMap::<String, u64>::new();
            for e in world.server(kind).log().entries() {
                let shape: String = e
                    .path
                    .split('/')
                    .map(|p| {
                        if p.len() > 12 || p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() {
                            "{id}"
                        } else {
                            p
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/");
                *by.entry(format!("{} {shape} {}", e.method, e.status))
                    .or_default() += 1;
            }
            let _ = writeln!(report, "  {by:?}");
        }
    }
    assert!(over.is_empty(), "over the floor: {over:?}\n{report}");

    // The cycle after it sends nothing but the listings; a quiet one after that too:
    // exactly the no-change floor computed from the seed (which is also the listing of
    // what each provider holds now).
    for _ in 0..2 {
        reset(&world);
        let out = world.sync().await;
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        for (kind, floor) in &floors {
            assert_eq!(
                floor.no_change.reads,
                world.server(kind).listing_floor(),
                "{kind}: the no-change floor from the seed is the listing of what it holds"
            );
            assert_eq!(
                counted(&world, kind),
                floor.no_change,
                "{kind}: a cycle with nothing changed reads its listing and writes nothing"
            );
        }
    }

    // 1% of the people renamed in MaiAgent: the listings plus one update per other
    // provider holding each of them, exactly.
    let has_phone = rename_one_percent_in_maiagent(&world).await;
    reset(&world);
    let out = world.sync().await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    for (kind, floor) in &floors {
        let entry = PROVIDERS.iter().find(|e| e.kind == *kind).unwrap();
        let renamed_here = if *kind == "maiagent" {
            Vec::new()
        } else {
            has_phone.clone()
        };
        let sent: Vec<String> = world
            .server(kind)
            .log()
            .entries()
            .iter()
            .filter(|e| !e.read)
            .map(|e| format!("{} {} {}", e.method, e.path, e.status))
            .collect();
        assert_eq!(
            counted(&world, kind),
            floor.changed(entry, renamed_here),
            "{kind}: a cycle after 1% were renamed in MaiAgent ({has_phone:?} with a phone) is at its floor; writes sent: {sent:?}"
        );
    }
}

/// Renames 1% of MaiAgent's contacts (at least one; the first of pages spread over its
/// listing) through its API; per renamed contact, whether it has a phone.
async fn rename_one_percent_in_maiagent(world: &World) -> Vec<bool> {
    let info = world.server("maiagent").info();
    let base = info["base_url"].as_str().unwrap().to_owned();
    let key = format!("Api-Key {}", info["api_key"].as_str().unwrap());
    let client =
        contact_sync::provider::http::build_client(std::time::Duration::from_secs(30)).unwrap();
    let page = |n: u64| {
        let (client, key, base) = (client.clone(), key.clone(), base.clone());
        async move {
            client
                .get(format!("{base}/api/contacts/?page={n}&pageSize=10"))
                .header("authorization", key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let total = page(1).await["count"].as_u64().unwrap();
    let wanted = total.div_ceil(100).max(1);
    let pages = total.div_ceil(10);
    let region = DefaultRegion::parse("US").unwrap();
    let mut has_phone = Vec::new();
    for i in 0..wanted {
        let body = page(1 + i * pages / wanted).await;
        let c = &body["results"][0];
        let id = c["id"].as_str().unwrap();
        // MaiAgent shows a phone as text or, as some were typed, as a bare number.
        let phone = match &c["phoneNumber"] {
            Value::String(p) => p.clone(),
            Value::Number(n) => format!("+{n}"),
            _ => String::new(),
        };
        has_phone.push(normalize_phone(&phone, region).is_some());
        let name = format!("{} Renamed", c["name"].as_str().unwrap_or("").trim());
        let r = client
            .patch(format!("{base}/api/contacts/{id}/"))
            .header("authorization", &key)
            .json(&json!({"name": name}))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "PATCH {id}: {}", r.status());
    }
    has_phone
}
