//! End to end: a write Chatwoot refuses because another of its records holds the key
//! (422 "has already been taken") becomes a lookup, then a link or a `refused` review
//! item — never a retry loop. The holder is a record Chatwoot's listing did not show (made
//! after the listing ran), added through the simulator's `/__sim/contacts/unlisted`, or a
//! listed record linked to another person that an agent gave the key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, json_of, stderr, sync_ok, text};
use serde_json::{Value, json};

/// A Chatwoot record the contacts list does not show yet; returns its id.
async fn unlisted_chatwoot_record(world: &World, body: Value) -> String {
    let info = world.sim.info();
    let r = reqwest::Client::builder()
        .build()
        .unwrap()
        .post(format!(
            "{}/__sim/contacts/unlisted",
            info["chatwoot"]["base_url"].as_str().unwrap()
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let body: Value = r.json().await.unwrap();
    text(&body, "id")
}

/// Someone types a new contact into MaiAgent.
async fn maiagent_record(world: &World, name: &str, phone: &str, email: &str) {
    world
        .maiagent_record(json!({"name": name, "phoneNumber": phone, "email": email}))
        .await;
}

fn chatwoot_writes(world: &World) -> u64 {
    world.server("chatwoot").log().counters().writes
}

fn chatwoot_with_email<'a>(contacts: &'a [Value], email: &str) -> Vec<&'a Value> {
    contacts
        .iter()
        .filter(|c| text(c, "email").eq_ignore_ascii_case(email))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_links_the_holder_when_nothing_contradicts_it() {
    let world = World::new(30).await;
    sync_ok(&world).await;
    // A walk-in was typed into Chatwoot after the listing: the sync never saw it.
    let holder = unlisted_chatwoot_record(
        &world,
        json!({"name": "Walk In", "email": "wanda.walker@example.net"}),
    )
    .await;
    maiagent_record(
        &world,
        "Wanda Walker",
        "+34612345678",
        "wanda.walker@example.net",
    )
    .await;
    let chatwoot_before = world.contacts("chatwoot").len();
    sync_ok(&world).await;

    // Chatwoot refused the create (the email is taken); the holder was looked up,
    // linked to Wanda and brought up to date — no second record, no item.
    let cw = world.contacts("chatwoot");
    assert_eq!(cw.len(), chatwoot_before, "nothing new was created");
    let held = chatwoot_with_email(&cw, "wanda.walker@example.net");
    assert_eq!(held.len(), 1);
    assert_eq!(text(held[0], "id"), holder);
    assert_eq!(text(held[0], "name"), "Wanda Walker");
    assert_eq!(text(held[0], "phone_number"), "+34612345678");
    assert_eq!(
        json_of(&world, &["review", "--json"]).await["items"],
        json!([])
    );
    let history = json_of(&world, &["history", "wanda.walker@example.net", "--json"]).await;
    let events = history["events"].as_array().unwrap();
    assert!(
        events.iter().any(|e| e["kind"] == "linked"
            && e["provider"] == "support"
            && text(e, "new") == holder),
        "{history}"
    );

    // Settled: a further cycle writes nothing anywhere.
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a further cycle writes nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_whose_holder_is_someone_elses_becomes_a_refused_item_never_a_retry() {
    let world = World::new(30).await;
    sync_ok(&world).await;
    // Diego, a Brazilian WhatsApp number, reaches every provider.
    maiagent_record(
        &world,
        "Diego Dias",
        "+5511987654321",
        "diego.dias@example.net",
    )
    .await;
    sync_ok(&world).await;
    // Chatwoot also holds, unlisted, an old record with Yara's email and Diego's number
    // in its 8-digit WhatsApp form.
    let holder = unlisted_chatwoot_record(
        &world,
        json!({"name": "Old Number", "email": "yara.young@example.net", "phone_number": "+551187654321"}),
    )
    .await;
    maiagent_record(
        &world,
        "Yara Young",
        "+34612345679",
        "yara.young@example.net",
    )
    .await;
    let writes_before = chatwoot_writes(&world);
    sync_ok(&world).await;
    // One create was sent and refused; the holder names Diego, so nothing is linked.
    assert_eq!(chatwoot_writes(&world), writes_before + 1);
    let list = json_of(&world, &["review", "--json"]).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let item = &items[0];
    assert_eq!(item["kind"], "refused");
    assert_eq!(item["provider"], "support");
    assert_eq!(text(item, "remote_id"), holder);
    assert_eq!(item["contacts"].as_array().unwrap().len(), 2, "{item}");
    let reason = item["reason"].as_str().unwrap();
    assert!(reason.contains("refused to create"), "{reason}");
    let id = item["id"].as_i64().unwrap().to_string();
    let cw = world.contacts("chatwoot");
    assert_eq!(chatwoot_with_email(&cw, "yara.young@example.net").len(), 1);
    assert_eq!(
        text(
            chatwoot_with_email(&cw, "yara.young@example.net")[0],
            "name"
        ),
        "Old Number"
    );

    // The plain list says the same for a human.
    let out = world.run(&["review"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed = common::stdout(&out);
    assert!(listed.contains("1 open review item(s):"), "{listed}");
    assert!(
        listed.contains(&format!("#{id}")) && listed.contains("refused"),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("support record {holder}")),
        "{listed}"
    );
    assert!(listed.contains("refused to create"), "{listed}");
    assert!(listed.contains("review merge ID"), "{listed}");

    // Never a retry loop: further cycles send nothing to Chatwoot for her.
    sync_ok(&world).await;
    sync_ok(&world).await;
    assert_eq!(
        chatwoot_writes(&world),
        writes_before + 1,
        "the refused write is not sent again"
    );
    // She changes her number in MaiAgent: a dry run shows her held back in Chatwoot,
    // naming the item, and a real cycle sends nothing there for her either.
    new_phone_in_maiagent(&world, "yara.young@example.net", "+34612345670").await;
    let out = world.run(&["--sync-now", "--dry-run"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let plan = common::stdout(&out);
    assert!(
        plan.contains(&format!("held for review item {id}")),
        "{plan}"
    );
    sync_ok(&world).await;
    assert_eq!(chatwoot_writes(&world), writes_before + 1, "still held");
    // `review show` puts the holder beside both people.
    let show = json_of(&world, &["review", "show", &id, "--json"]).await;
    assert_eq!(text(&show["records"][0], "remote_id"), holder);
    assert_eq!(show["contacts"].as_array().unwrap().len(), 2);

    // Different people: Yara is written there without the email the other record holds.
    let out = world.run(&["review", "apart", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    sync_ok(&world).await;
    let cw = world.contacts("chatwoot");
    let yara: Vec<&Value> = cw
        .iter()
        .filter(|c| text(c, "name") == "Yara Young")
        .collect();
    assert_eq!(yara.len(), 1, "created once");
    assert_eq!(
        text(yara[0], "phone_number"),
        "+34612345670",
        "her new number"
    );
    assert_eq!(text(yara[0], "email"), "", "the held email is not sent");
    assert_eq!(
        json_of(&world, &["review", "--json"]).await["items"],
        json!([])
    );
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a further cycle writes nothing");
}

/// A MaiAgent edit: a new phone for the contact with `email`.
async fn new_phone_in_maiagent(world: &World, email: &str, phone: &str) {
    let mai = world
        .contacts("maiagent")
        .into_iter()
        .find(|c| text(c, "email").eq_ignore_ascii_case(email))
        .unwrap();
    let info = world.sim.info();
    let r = reqwest::Client::builder()
        .build()
        .unwrap()
        .patch(format!(
            "{}/api/contacts/{}/",
            info["maiagent"]["base_url"].as_str().unwrap(),
            text(&mai, "id")
        ))
        .header(
            "Authorization",
            format!("Api-Key {}", info["maiagent"]["api_key"].as_str().unwrap()),
        )
        .json(&json!({ "phoneNumber": phone }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_update_opens_an_item_and_merge_folds_the_holder_into_the_record() {
    let world = World::new(30).await;
    sync_ok(&world).await;
    // Someone both Chatwoot and MaiAgent hold.
    let mai = world.contacts("maiagent");
    let person = world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| {
            let email = text(c, "email");
            !email.is_empty()
                && mai
                    .iter()
                    .any(|m| text(m, "email").eq_ignore_ascii_case(&email))
        })
        .unwrap();
    let (record, email) = (text(&person, "id"), text(&person, "email"));
    // A spare Chatwoot record, never listed, holds the phone they get in MaiAgent.
    let spare = unlisted_chatwoot_record(
        &world,
        json!({"name": "Spare Phone", "phone_number": "+34612345670"}),
    )
    .await;
    new_phone_in_maiagent(&world, &email, "+34612345670").await;
    let writes_before = chatwoot_writes(&world);
    sync_ok(&world).await;
    assert_eq!(
        chatwoot_writes(&world),
        writes_before + 1,
        "the update was sent once"
    );
    let list = json_of(&world, &["review", "--json"]).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["kind"], "refused");
    assert_eq!(text(&items[0], "remote_id"), spare);
    assert_eq!(items[0]["contacts"].as_array().unwrap().len(), 1);
    let reason = items[0]["reason"].as_str().unwrap();
    assert!(reason.contains("linked to no one"), "{reason}");
    let id = items[0]["id"].as_i64().unwrap().to_string();
    sync_ok(&world).await;
    assert_eq!(chatwoot_writes(&world), writes_before + 1, "not sent again");

    // One person: Chatwoot merges the spare record into theirs, then takes the phone.
    let out = world.run(&["review", "merge", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    sync_ok(&world).await;
    let cw = world.contacts("chatwoot");
    assert!(cw.iter().all(|c| text(c, "id") != spare), "merged away");
    let theirs = cw.iter().find(|c| text(c, "id") == record).unwrap();
    assert_eq!(text(theirs, "phone_number"), "+34612345670");
    let show = json_of(&world, &["review", "show", &id, "--json"]).await;
    assert_eq!(
        show["history"][0]["records"],
        json!([format!("support:{spare}")]),
        "{show}"
    );
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a further cycle writes nothing");
}

/// An agent edits a Chatwoot record in its UI (the simulator's `/__sim/contacts/{id}`).
async fn agent_edits_chatwoot_record(world: &World, id: &str, body: Value) {
    let info = world.sim.info();
    let r = reqwest::Client::builder()
        .build()
        .unwrap()
        .patch(format!(
            "{}/__sim/contacts/{id}",
            info["chatwoot"]["base_url"].as_str().unwrap()
        ))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_create_whose_holder_is_linked_to_someone_else_becomes_a_refused_item_never_a_retry()
 {
    let world = World::new(30).await;
    sync_ok(&world).await;
    // Bruno is typed into MaiAgent and learnt by a sync of MaiAgent alone: he is known,
    // not yet in Chatwoot.
    maiagent_record(
        &world,
        "Bruno Brandt",
        "+34612345681",
        "bruno.brandt@example.net",
    )
    .await;
    let out = world.run(&["--sync-now", "--provider", "sales-bot"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        chatwoot_with_email(&world.contacts("chatwoot"), "bruno.brandt@example.net").is_empty()
    );
    // An agent types Bruno's email onto the Chatwoot record of someone else, a record
    // linked to that person.
    let record = world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| !text(c, "email").is_empty())
        .unwrap();
    let (holder, owner_email) = (text(&record, "id"), text(&record, "email"));
    agent_edits_chatwoot_record(
        &world,
        &holder,
        json!({"email": "bruno.brandt@example.net"}),
    )
    .await;
    let writes_before = chatwoot_writes(&world);
    sync_ok(&world).await;

    // The record is still someone else's: Bruno is not linked to it, nobody is merged,
    // and what was refused waits for a decision as a `refused` item beside both people.
    let list = json_of(&world, &["review", "--json"]).await;
    let items = list["items"].as_array().unwrap();
    let refused: Vec<&Value> = items
        .iter()
        .filter(|i| i["kind"] == "refused" && text(i, "remote_id") == holder)
        .collect();
    assert_eq!(refused.len(), 1, "{list}");
    assert_eq!(refused[0]["provider"], "support");
    assert_eq!(
        refused[0]["contacts"].as_array().unwrap().len(),
        2,
        "{list}"
    );
    let history = json_of(&world, &["history", "bruno.brandt@example.net", "--json"]).await;
    assert!(
        !history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "linked" && e["provider"] == "support"),
        "Bruno was not linked to the holder: {history}"
    );
    let owner = json_of(&world, &["history", &owner_email, "--json"]).await;
    assert!(
        owner["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["kind"] != "merged"),
        "{owner}"
    );
    let cw = world.contacts("chatwoot");
    assert_eq!(
        chatwoot_with_email(&cw, "bruno.brandt@example.net").len(),
        1,
        "only the holder"
    );
    let sent = chatwoot_writes(&world) - writes_before;
    assert_eq!(sent, 1, "Bruno's create was sent once, and refused");

    // Never a retry loop: further cycles send nothing more to Chatwoot and open nothing.
    sync_ok(&world).await;
    sync_ok(&world).await;
    assert_eq!(
        chatwoot_writes(&world) - writes_before,
        sent,
        "not sent again"
    );
    assert_eq!(json_of(&world, &["review", "--json"]).await, list);
}
