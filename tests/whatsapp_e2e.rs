//! End to end: WhatsApp-aware phone keys with the real binary and the simulated
//! providers. A Brazilian mobile written without its 9th digit in MaiAgent and with it in
//! Chatwoot is one person, and neither platform's number is rewritten; a WhatsApp privacy
//! id (`…@lid`) never matches anyone and is never written anywhere as a phone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, sync_ok, text};
use serde_json::{Value, json};

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
    let info = world.sim.info();
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
        .json(&json!({
            "name": name,
            "phoneNumber": phone,
            "inboxes": [{"id": info["maiagent"]["inbox_id"]}],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    text(&r.json::<Value>().await.unwrap(), "id")
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
