//! End to end: WhatsApp-aware phone keys with the real binary and the simulated
//! providers. A Brazilian mobile written without its 9th digit in MaiAgent and with it in
//! Chatwoot is one person, and neither platform's number is rewritten; a WhatsApp privacy
//! id (`…@lid`) never matches anyone and is never written anywhere as a phone; records of
//! one platform that share a phone (a family's one number) are held for review, never
//! merged silently. The last two also with the simulator's seeded identity cases.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{SEED, World, json_of, sync_ok, text};
use contact_sync::simulator::seed;
use serde_json::{Value, json};
use std::collections::HashSet;

async fn chatwoot_contact(world: &World, body: Value) {
    let r = reqwest::Client::builder()
        .build()
        .unwrap()
        .post(world.chatwoot_url("/contacts"))
        .header("api_access_token", world.chatwoot_token())
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

async fn maiagent_contact(world: &World, name: &str, phone: &str) -> String {
    world
        .maiagent_record(json!({"name": name, "phoneNumber": phone}))
        .await
}

/// The contact a provider's record is linked to, read from the store file.
fn contact_of(world: &World, provider: &str, remote_id: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        world.store_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT l.contact_id FROM links l JOIN providers p ON p.id = l.provider_id
         WHERE p.name = ?1 AND l.remote_id = ?2 AND l.state = 'active'",
        [provider, remote_id],
        |r| r.get(0),
    )
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_brazilian_mobile_with_and_without_its_ninth_digit_is_one_person() {
    let world = World::new(0).await;
    chatwoot_contact(
        &world,
        json!({"name": "Joana Silva", "phone_number": "+5511987654321"}),
    )
    .await;
    let mai = maiagent_contact(&world, "Joana Silva", "+55 11 8765-4321").await;
    sync_ok(&world).await;

    let status = world.status().await;
    assert_eq!(status["contacts"], 1, "one person: {status}");
    assert_eq!(status["conflicts"], 0);
    let cw = world.contacts("chatwoot");
    assert_eq!(cw.len(), 1, "not created again in Chatwoot");
    let cw_id = text(&cw[0], "id");
    assert_eq!(
        contact_of(&world, "support", &cw_id),
        contact_of(&world, "sales-bot", &mai)
    );
    // Neither platform's number is rewritten because of the equivalence.
    assert_eq!(text(&cw[0], "phone_number"), "+5511987654321");
    let record = world
        .contacts("maiagent")
        .into_iter()
        .find(|c| text(c, "id") == mai)
        .unwrap();
    assert_eq!(text(&record, "phoneNumber"), "+55 11 8765-4321");

    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a second cycle writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whatsapp_privacy_id_never_matches_and_is_never_written_as_a_phone() {
    let world = World::new(0).await;
    let lid = "207325431808241@lid";
    let ana = maiagent_contact(&world, "Ana Lid", lid).await;
    let bea = maiagent_contact(&world, "Bea Lid", lid).await;
    sync_ok(&world).await;

    let status = world.status().await;
    assert_eq!(status["contacts"], 2, "two people, not matched by the LID");
    assert_eq!(status["conflicts"], 0, "and not held as duplicates either");
    assert_ne!(
        contact_of(&world, "sales-bot", &ana),
        contact_of(&world, "sales-bot", &bea)
    );
    for kind in ["chatwoot", "agentalk", "dmchamp"] {
        for c in world.contacts(kind) {
            let phone = ["phone_number", "phone", "phoneNumber", "mobile"]
                .iter()
                .map(|k| text(&c, k))
                .collect::<String>();
            assert!(
                !phone.contains("@lid"),
                "{kind} holds a LID as a phone: {c}"
            );
        }
    }
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before);
}

/// Every record id each provider holds (`(kind, id)`), e.g. before a first sync.
fn record_ids(world: &World) -> HashSet<(String, String)> {
    world
        .sim
        .instances()
        .iter()
        .flat_map(|i| {
            let kind = i.server.kind();
            common::contacts(&i.server.dump())
                .into_iter()
                .map(move |c| (kind.to_owned(), record_id(&c)))
        })
        .collect()
}

/// A record's id in its provider's dump (DM Champ calls it `contactId`).
fn record_id(c: &Value) -> String {
    match text(c, "id") {
        id if id.is_empty() => text(c, "contactId"),
        id => id,
    }
}

/// The `(provider name, remote id)` of every active link of `contact`.
fn links_of(world: &World, contact: i64) -> Vec<(String, String)> {
    let conn = rusqlite::Connection::open_with_flags(
        world.store_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT p.name, l.remote_id FROM links l JOIN providers p ON p.id = l.provider_id
             WHERE l.contact_id = ?1 AND l.state = 'active'",
        )
        .unwrap();
    stmt.query_map([contact], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The name the demo config gives the provider of `kind` (a link's provider).
fn name_of(kind: &str) -> &'static str {
    contact_sync::simulator::entry_of(kind).unwrap().demo_name
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_privacy_ids_never_match_anyone_and_are_never_written_as_phones() {
    let world = World::with_identity_cases(50).await;
    let lids = seed::identity_cases(SEED, 50, seed::Provider::of("maiagent").unwrap()).lids;
    assert!(!lids.is_empty());
    // Where the seed put them: every WhatsApp-fed platform holds each one, by its id.
    let holders = |kind: &str, key: &str, lid: &seed::LidContact| -> Vec<String> {
        world
            .contacts(kind)
            .iter()
            .filter(|c| text(c, key) == lid.id())
            .map(record_id)
            .collect()
    };
    let mut seeded = HashSet::new();
    for lid in &lids {
        for (kind, key) in [
            ("maiagent", "phoneNumber"),
            ("agentalk", "phone"),
            ("dmchamp", "phoneNumber"),
        ] {
            let ids = holders(kind, key, lid);
            assert_eq!(ids.len(), 1, "{kind} holds {} once", lid.id());
            seeded.insert((kind.to_owned(), ids[0].clone()));
        }
    }
    let before_sync = record_ids(&world);
    sync_ok(&world).await;

    for lid in &lids {
        // MaiAgent's record (the one a listing shows) is a person of their own: linked to
        // no record that was there before the sync, neither another person's nor the
        // same privacy id held by Agentalk or DM Champ.
        let mai = holders("maiagent", "phoneNumber", lid).pop().unwrap();
        let contact = contact_of(&world, "sales-bot", &mai).expect("the record is linked");
        for (provider, remote_id) in links_of(&world, contact) {
            if provider == "sales-bot" {
                assert_eq!(remote_id, mai);
                continue;
            }
            assert!(
                !before_sync
                    .iter()
                    .any(|(k, id)| name_of(k) == provider && *id == remote_id),
                "{} matched {provider} record {remote_id}",
                lid.id()
            );
        }
        // The other platforms' records of that privacy id are linked to no one and were
        // not written to.
        for kind in ["agentalk", "dmchamp"] {
            let key = if kind == "agentalk" {
                "phone"
            } else {
                "phoneNumber"
            };
            let ids = holders(kind, key, lid);
            assert_eq!(ids.len(), 1, "{kind} still holds {} once", lid.id());
            assert_eq!(contact_of(&world, name_of(kind), &ids[0]), None, "{kind}");
        }
    }
    // No other record anywhere carries a privacy id's digits, as a phone or otherwise.
    for i in world.sim.instances() {
        let kind = i.server.kind();
        for c in common::contacts(&i.server.dump()) {
            if seeded.contains(&(kind.to_owned(), record_id(&c))) {
                continue;
            }
            let all = c.to_string();
            for lid in &lids {
                assert!(
                    !all.contains(&lid.lid.to_string()),
                    "{kind} holds {}: {c}",
                    lid.id()
                );
            }
        }
    }
    // Nothing about them is held for review.
    let items = json_of(&world, &["review", "--json"]).await;
    for item in items["items"].as_array().unwrap() {
        let kind = world
            .sim
            .instance(item["provider"].as_str().unwrap())
            .unwrap()
            .kind();
        assert!(
            !seeded.contains(&(kind.to_owned(), text(item, "remote_id"))),
            "{item}"
        );
    }

    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a second cycle writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maiagent_records_sharing_a_phone_are_held_for_review_never_merged_silently() {
    let world = World::with_identity_cases(50).await;
    let family =
        seed::identity_cases(SEED, 50, seed::Provider::of("maiagent").unwrap()).shared_phones;
    assert!(!family.is_empty());
    // Each family member's record and the record of the person whose phone they share.
    let mai = world.contacts("maiagent");
    let pairs: Vec<(Value, Value)> = family
        .iter()
        .map(|f| {
            let email = f.email.clone().unwrap();
            let theirs = mai
                .iter()
                .find(|c| text(c, "email") == email)
                .unwrap()
                .clone();
            let sharing: Vec<&Value> = mai
                .iter()
                .filter(|c| c["phoneNumber"] == theirs["phoneNumber"] && c["id"] != theirs["id"])
                .collect();
            assert_eq!(
                sharing.len(),
                1,
                "one other record holds {}",
                theirs["phoneNumber"]
            );
            (sharing[0].clone(), theirs)
        })
        .collect();
    sync_ok(&world).await;

    let status = world.status().await;
    let list = json_of(&world, &["review", "--json"]).await;
    let items = list["items"].as_array().unwrap().clone();
    assert_eq!(status["conflicts"], items.len(), "{status}");
    // (held record, its item, the kept record, the shared number)
    let mut held_records: Vec<(Value, Value, Value, String)> = Vec::new();
    for (person, member) in &pairs {
        let (p_id, f_id) = (record_id(person), record_id(member));
        let linked: Vec<&Value> = [person, member]
            .into_iter()
            .filter(|r| contact_of(&world, "sales-bot", &record_id(r)).is_some())
            .collect();
        assert_eq!(linked.len(), 1, "exactly one of {p_id}, {f_id} is linked");
        let kept = linked[0];
        let held = if record_id(kept) == p_id {
            member
        } else {
            person
        };
        // The other one waits for a decision, as an item about that record.
        let item = items
            .iter()
            .find(|i| i["provider"] == "sales-bot" && text(i, "remote_id") == record_id(held))
            .unwrap_or_else(|| panic!("no item for {}: {list}", record_id(held)));
        assert!(
            item["kind"] == "duplicate_in_provider" || item["kind"] == "ambiguous_match",
            "{item}"
        );
        // Nothing of the held record reached another platform: the shared number is
        // there once, as the kept record's person, with the kept record's email.
        let e164 = seed::person(SEED, member_index(&family, member))
            .phone_e164
            .unwrap();
        let cw: Vec<Value> = world
            .contacts("chatwoot")
            .into_iter()
            .filter(|c| text(c, "phone_number") == e164)
            .collect();
        assert_eq!(cw.len(), 1, "Chatwoot holds {e164} once: {cw:?}");
        assert_eq!(text(&cw[0], "name"), text(kept, "name"));
        assert_eq!(
            text(&cw[0], "email").to_lowercase(),
            text(kept, "email").trim().to_lowercase()
        );
        held_records.push((held.clone(), item.clone(), kept.clone(), e164.clone()));
        let held_email = text(held, "email").trim().to_lowercase();
        if !held_email.is_empty() {
            for kind in ["chatwoot", "agentalk", "dmchamp"] {
                assert!(
                    world
                        .contacts(kind)
                        .iter()
                        .all(|c| text(c, "email").trim().to_lowercase() != held_email),
                    "{kind} holds the held record's email {held_email}"
                );
            }
        }
    }

    // Settled: a second cycle writes nothing and opens nothing new.
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a second cycle writes nothing");
    assert_eq!(json_of(&world, &["review", "--json"]).await, list);

    // A family: `review apart` makes the held record a person of their own, without the
    // number they share (it is not copied onto them, nor overwritten in MaiAgent), and the
    // question is not asked again.
    let (held, item, kept, e164) = held_records
        .iter()
        .find(|(held, ..)| !text(held, "email").trim().is_empty())
        .cloned()
        .unwrap();
    let id = item["id"].as_i64().unwrap().to_string();
    let out = world.run(&["review", "apart", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    sync_ok(&world).await;
    let theirs = contact_of(&world, "sales-bot", &record_id(&held)).expect("linked now");
    assert_ne!(
        Some(theirs),
        contact_of(&world, "sales-bot", &record_id(&kept)),
        "a person of their own"
    );
    let list = json_of(&world, &["review", "--json"]).await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| text(i, "remote_id") != record_id(&held)),
        "{list}"
    );
    let cw = world.contacts("chatwoot");
    let email = text(&held, "email").trim().to_lowercase();
    let created: Vec<&Value> = cw
        .iter()
        .filter(|c| text(c, "email").to_lowercase() == email)
        .collect();
    assert_eq!(created.len(), 1, "created in Chatwoot once");
    assert_eq!(text(created[0], "name"), text(&held, "name"));
    assert_eq!(
        text(created[0], "phone_number"),
        "",
        "the shared number is not copied"
    );
    assert_eq!(
        cw.iter()
            .filter(|c| text(c, "phone_number") == e164)
            .count(),
        1,
        "the number stays with the kept record's person"
    );
    let now = world
        .contacts("maiagent")
        .into_iter()
        .find(|c| c["id"] == held["id"])
        .unwrap();
    assert_eq!(now["phoneNumber"], held["phoneNumber"], "not overwritten");
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "settled");
    assert_eq!(json_of(&world, &["review", "--json"]).await, list);
}

/// The population index of the family member whose MaiAgent record is `record`.
fn member_index(family: &[seed::Person], record: &Value) -> u64 {
    family
        .iter()
        .find(|f| f.email.as_deref() == Some(text(record, "email").as_str()))
        .unwrap()
        .index
}
