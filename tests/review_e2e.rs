//! End to end: the review queue with the real binary and the simulated providers. A
//! record whose keys point at two people opens an item; `review apart` keeps them apart
//! over further cycles; `review merge` makes them one person in every provider
//! (Chatwoot by its merge action, the others by link); decisions stick.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, json_of, stderr, stdout, sync_ok, text};
use serde_json::{Value, json};

/// Two Chatwoot people with a phone and an email each.
fn two_people(world: &World) -> (Value, Value) {
    let people: Vec<Value> = world
        .contacts("chatwoot")
        .into_iter()
        .filter(|c| !text(c, "email").is_empty() && !text(c, "phone_number").is_empty())
        .take(2)
        .collect();
    (people[0].clone(), people[1].clone())
}

/// A person's tags, read from the store file.
fn tags_of(world: &World, contact: i64) -> std::collections::BTreeSet<String> {
    let conn = rusqlite::Connection::open_with_flags(
        world.store_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare("SELECT tag_key FROM contact_tags WHERE contact_id = ?1")
        .unwrap();
    stmt.query_map([contact], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Someone types a MaiAgent contact with A's phone and B's email; returns its id.
async fn mixed_up_record(world: &World, a: &Value, b: &Value) -> String {
    world
        .maiagent_record(json!({
            "name": "Mixed Up",
            "phoneNumber": text(a, "phone_number"),
            "email": text(b, "email"),
        }))
        .await
}

/// The open item about the mixed-up record, checked against the contract shape.
async fn the_item(world: &World, remote_id: &str) -> Value {
    let list = json_of(world, &["review", "--json"]).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    let item = items[0].clone();
    assert!(item["id"].is_i64(), "{item}");
    assert_eq!(item["kind"], "ambiguous_match");
    assert_eq!(
        item["provider"], "sales-bot",
        "the configured name, not the kind"
    );
    assert_eq!(item["remote_id"], remote_id);
    let contacts = item["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 2);
    assert!(contacts.iter().all(Value::is_i64));
    assert!(!item["reason"].as_str().unwrap().is_empty());
    let opened = item["opened_at"].as_str().unwrap();
    assert!(
        opened.ends_with('Z') && opened.parse::<jiff::Timestamp>().is_ok(),
        "RFC 3339 UTC: {opened}"
    );
    item
}

/// The Chatwoot record linked to `contact`, from `review show`.
fn chatwoot_record_of(show: &Value, contact: i64) -> String {
    let person = show["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == contact)
        .unwrap();
    person["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["provider"] == "support")
        .map(|l| text(l, "remote_id"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_record_opens_an_item_and_apart_keeps_the_people_apart() {
    let world = World::new(30).await;
    sync_ok(&world).await;
    let (a, b) = two_people(&world);
    let contacts_before = world.status().await["contacts"].clone();
    let remote = mixed_up_record(&world, &a, &b).await;
    sync_ok(&world).await;

    let item = the_item(&world, &remote).await;
    let id = item["id"].as_i64().unwrap();
    assert_eq!(world.status().await["conflicts"], 1);

    // Side by side: the record and both people, with their links.
    let show = json_of(&world, &["review", "show", &id.to_string(), "--json"]).await;
    assert_eq!(show["item"], item);
    assert_eq!(show["records"][0]["provider"], "sales-bot");
    assert_eq!(show["records"][0]["remote_id"], remote.as_str());
    assert_eq!(
        show["records"][0]["fields"]["email"],
        text(&b, "email").to_lowercase()
    );
    assert_eq!(show["contacts"].as_array().unwrap().len(), 2);
    let human = world.run(&["review", "show", &id.to_string()]).await;
    assert!(stdout(&human).contains("Mixed Up"), "{}", stdout(&human));

    // Unknown ids are refused with exit 2.
    let out = world.run(&["review", "apart", "999999"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no review item 999999"),
        "{}",
        stderr(&out)
    );

    // Different people. The record goes to the person of its phone (the stronger key).
    let out = world.run(&["review", "apart", &id.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let again = world.run(&["review", "apart", &id.to_string()]).await;
    assert_eq!(again.status.code(), Some(2), "already decided");
    assert!(
        stderr(&again).contains("already decided"),
        "{}",
        stderr(&again)
    );
    assert_eq!(
        json_of(&world, &["review", "--json"]).await["items"],
        json!([])
    );
    assert_eq!(world.status().await["conflicts"], 0);

    sync_ok(&world).await;
    let status = world.status().await;
    assert_eq!(
        status["contacts"], contacts_before,
        "nobody merged, nobody new"
    );
    assert_eq!(status["conflicts"], 0);
    // MaiAgent keeps B's email on that record: the shared value is never overwritten.
    let record = world
        .contacts("maiagent")
        .into_iter()
        .find(|c| text(c, "id") == remote)
        .unwrap();
    assert_eq!(
        text(&record, "email").to_lowercase(),
        text(&b, "email").to_lowercase()
    );
    // A and B are untouched in Chatwoot: B's email was not copied onto A.
    let cw = world.contacts("chatwoot");
    for p in [&a, &b] {
        let now = cw.iter().find(|c| text(c, "id") == text(p, "id")).unwrap();
        assert_eq!(
            (text(now, "name"), text(now, "email")),
            (text(p, "name"), text(p, "email"))
        );
    }

    // The decision sticks: further cycles write nothing and never re-open the item.
    let before = world.writes();
    sync_ok(&world).await;
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "nothing left to write");
    assert_eq!(
        json_of(&world, &["review", "--json"]).await["items"],
        json!([])
    );
    assert_eq!(world.status().await["conflicts"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_makes_one_person_in_every_provider_and_then_nothing_is_written() {
    let world = World::new(30).await;
    sync_ok(&world).await;
    let (a, b) = two_people(&world);
    let contacts_before = world.status().await["contacts"].as_i64().unwrap();
    let chatwoot_before = world.contacts("chatwoot").len();
    let maiagent_before = world.contacts("maiagent").len();
    let remote = mixed_up_record(&world, &a, &b).await;
    sync_ok(&world).await;
    let item = the_item(&world, &remote).await;
    let id = item["id"].as_i64().unwrap();
    let people: Vec<i64> = item["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_i64().unwrap())
        .collect();
    let show = json_of(&world, &["review", "show", &id.to_string(), "--json"]).await;
    // --keep names the survivor: the one whose tags the other's do not cover, so that
    // the union of tags below is tested (which of the two seeded people got the lower
    // id depends on which listing was stored first).
    let (keep, other) = if tags_of(&world, people[0]).is_subset(&tags_of(&world, people[1])) {
        (people[0], people[1])
    } else {
        (people[1], people[0])
    };
    let base = chatwoot_record_of(&show, keep);
    let mergee = chatwoot_record_of(&show, other);
    let kept_email = show["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == keep)
        .unwrap()["fields"]["email"]
        .clone();

    let tags_before: std::collections::BTreeSet<String> = tags_of(&world, keep)
        .union(&tags_of(&world, other))
        .cloned()
        .collect();
    assert!(
        !tags_of(&world, other).is_subset(&tags_of(&world, keep)),
        "the other person carries a tag the survivor lacks, so the union below is tested"
    );

    // --keep must be one of the item's people.
    let out = world
        .run(&["review", "merge", &id.to_string(), "--keep", "999999"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = world
        .run(&[
            "review",
            "merge",
            &id.to_string(),
            "--keep",
            &keep.to_string(),
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    sync_ok(&world).await;
    let status = world.status().await;
    assert_eq!(
        status["contacts"],
        contacts_before - 1,
        "two people became one"
    );
    assert_eq!(status["conflicts"], 0);
    // Chatwoot merged the other's record into the survivor's.
    let cw = world.contacts("chatwoot");
    assert_eq!(cw.len(), chatwoot_before - 1);
    assert!(
        cw.iter().all(|c| text(c, "id") != mergee),
        "mergee destroyed"
    );
    let survivor = cw.iter().find(|c| text(c, "id") == base).unwrap();
    assert_eq!(
        text(survivor, "email").to_lowercase(),
        kept_email.as_str().unwrap(),
        "the survivor's value wins"
    );
    // Tags are united on the survivor.
    assert_eq!(tags_of(&world, keep), tags_before, "tags united");
    // MaiAgent cannot merge: nothing there is deleted.
    assert_eq!(world.contacts("maiagent").len(), maiagent_before + 1);
    // Every record of both links to the survivor.
    let show = json_of(&world, &["review", "show", &id.to_string(), "--json"]).await;
    let survivor_view = show["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == keep)
        .cloned()
        .unwrap();
    assert!(
        survivor_view["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["provider"] == "support" && text(l, "remote_id") == base),
        "{survivor_view}"
    );
    assert!(
        show["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["id"] != other),
        "the other person is gone: {show}"
    );
    // Decided and carried out: asking again is refused.
    let again = world.run(&["review", "merge", &id.to_string()]).await;
    assert_eq!(again.status.code(), Some(2));

    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a further cycle writes nothing");
    assert_eq!(
        json_of(&world, &["review", "--json"]).await["items"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_dry_run_reports_matches_and_items_before_any_write() {
    let world = World::new(30).await;
    let (a, b) = two_people(&world);
    mixed_up_record(&world, &a, &b).await;
    // One Argentinian mobile, written with the mobile 9 in Chatwoot and without in MaiAgent.
    let http = reqwest::Client::builder().build().unwrap();
    let response = http
        .post(world.chatwoot_url("/contacts"))
        .header("api_access_token", world.chatwoot_token())
        .json(&json!({"name": "Lucía Pereyra", "phone_number": "+5491123456789"}))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success());
    world
        .maiagent_record(json!({"name": "Lucía Pereyra", "phoneNumber": "+54 11 2345-6789"}))
        .await;

    let writes = world.writes();
    let out = world.run(&["--sync-now", "--dry-run", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let dry: Value = serde_json::from_slice(&out.stdout).unwrap();
    let report = &dry["report"];
    let matched = &report["matched_by"];
    for key in ["source_id", "phone", "email", "phone_variant"] {
        assert!(matched[key].is_u64(), "{report}");
    }
    assert!(
        matched["phone"].as_u64().unwrap() + matched["email"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert_eq!(
        matched["phone_variant"], 1,
        "the Argentinian mobile: {report}"
    );
    let gains = report["new_people"].as_object().unwrap();
    for name in world.names() {
        assert!(gains[&name].is_u64(), "{name}: {report}");
    }
    assert!(gains.values().map(|n| n.as_u64().unwrap()).sum::<u64>() > 0);
    let items = report["items"].as_array().unwrap();
    assert!(!items.is_empty(), "the mixed-up record is held: {report}");
    // The mixed-up record is held in sales-bot. When sales-bot's listing is stored before
    // Chatwoot's, the two Chatwoot records of those two people can also find one person
    // by different keys, which is a `duplicate_in_provider` item there (never two links).
    let names = world.names();
    assert!(
        items
            .iter()
            .all(|i| i["id"].is_i64() && names.iter().any(|n| i["provider"] == n.as_str())),
        "{report}"
    );
    assert!(
        items.iter().any(|i| i["provider"] == "sales-bot"),
        "{report}"
    );
    let plan = dry["plan"].as_array().unwrap();
    assert!(!plan.is_empty());
    assert!(plan.iter().all(|s| s["provider"].is_string()));
    assert_eq!(world.writes(), writes, "a dry run writes nothing");
    assert_eq!(world.status().await["contacts"], 0, "nor to the store");

    let human = world.run(&["--sync-now", "--dry-run"]).await;
    let text = stdout(&human);
    let report_at = text.find("first-run match report").expect(&text);
    let plan_at = text.find("planned write(s)").expect(&text);
    assert!(
        report_at < plan_at,
        "the report comes before the plan:\n{text}"
    );
}

/// The person a provider's record belongs to, read from the store file: the contact it
/// is linked to, or the one it is kept as a second record of.
fn owner_of(world: &World, provider: &str, remote_id: &str) -> Option<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        world.store_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    conn.query_row(
        "SELECT l.contact_id FROM links l JOIN providers p ON p.id = l.provider_id
         WHERE p.name = ?1 AND l.remote_id = ?2 AND l.state = 'active'
         UNION ALL
         SELECT m.contact_id FROM merged_records m JOIN providers p ON p.id = m.provider_id
         WHERE p.name = ?1 AND m.remote_id = ?2",
        [provider, remote_id],
        |r| r.get(0),
    )
    .ok()
}

/// The id of the item's person whose email is `email`, from `review show`.
fn person_with_email(show: &Value, email: &str) -> i64 {
    show["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| text(&c["fields"], "email").eq_ignore_ascii_case(email))
        .unwrap_or_else(|| panic!("no person with {email}: {show}"))["id"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apart_with_link_gives_the_record_to_the_person_named() {
    let world = World::new(30).await;
    sync_ok(&world).await;
    let (a, b) = two_people(&world);
    let remote = mixed_up_record(&world, &a, &b).await;
    sync_ok(&world).await;
    let id = the_item(&world, &remote).await["id"]
        .as_i64()
        .unwrap()
        .to_string();
    let show = json_of(&world, &["review", "show", &id, "--json"]).await;
    let bruno = person_with_email(&show, &text(&b, "email"));

    // --link must name someone who exists.
    let out = world
        .run(&["review", "apart", &id, "--link", "999999"])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Without --link the record would go to A (its phone is the stronger key); the
    // user says it is B's.
    let out = world
        .run(&["review", "apart", &id, "--link", &bruno.to_string()])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!("contact {bruno}")),
        "{}",
        stdout(&out)
    );
    sync_ok(&world).await;
    // MaiAgent holds B already (the sync wrote everyone there): the record is kept as a
    // second record of B, never written, and A keeps theirs.
    assert_eq!(owner_of(&world, "sales-bot", &remote), Some(bruno));
    let record = world
        .contacts("maiagent")
        .into_iter()
        .find(|c| text(c, "id") == remote)
        .unwrap();
    assert_eq!(text(&record, "name"), "Mixed Up", "not written");
    assert_eq!(text(&record, "phoneNumber"), text(&a, "phone_number"));
    // A's phone, which the record shares with A, is not copied onto B.
    let cw = world.contacts("chatwoot");
    let now = cw.iter().find(|c| text(c, "id") == text(&b, "id")).unwrap();
    assert_eq!(text(now, "phone_number"), text(&b, "phone_number"));
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a further cycle writes nothing");
    assert_eq!(
        json_of(&world, &["review", "--json"]).await["items"],
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_without_keep_keeps_the_person_known_longest() {
    let world = World::new(30).await;
    sync_ok(&world).await;
    let (a, b) = two_people(&world);
    let contacts_before = world.status().await["contacts"].as_i64().unwrap();
    let remote = mixed_up_record(&world, &a, &b).await;
    sync_ok(&world).await;
    let item = the_item(&world, &remote).await;
    let id = item["id"].as_i64().unwrap().to_string();
    let people: Vec<i64> = item["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_i64().unwrap())
        .collect();
    let (oldest, newer) = (*people.iter().min().unwrap(), *people.iter().max().unwrap());
    let out = world.run(&["review", "merge", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    sync_ok(&world).await;
    assert_eq!(
        world.status().await["contacts"],
        contacts_before - 1,
        "two people became one"
    );
    let show = json_of(&world, &["review", "show", &id, "--json"]).await;
    let left: Vec<i64> = show["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_i64().unwrap())
        .collect();
    assert!(left.contains(&oldest), "{show}");
    assert!(!left.contains(&newer), "{show}");
    assert_eq!(show["history"][0]["survivor"], oldest, "{show}");
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a further cycle writes nothing");
}

/// Creates a MaiAgent record; returns its id.
async fn maiagent_record(world: &World, name: &str, phone: &str, email: &str) -> String {
    world
        .maiagent_record(json!({"name": name, "phoneNumber": phone, "email": email}))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_carrying_the_email_of_a_held_duplicate_is_held_not_linked_by_its_phone() {
    use contact_sync::simulator::faults::{FaultAction, FaultRule};
    let world = World::new(30).await;
    // A family shares one phone in MaiAgent; nobody knows them yet. Chatwoot cannot be
    // read in the first cycle, so MaiAgent's listing decides who the person is.
    let phone = "+34612345678";
    let first = maiagent_record(&world, "Kid Family", phone, "kid@family.example").await;
    let second = maiagent_record(&world, "Ana Family", phone, "ana@family.example").await;
    world
        .server("chatwoot")
        .faults()
        .add(FaultRule::new(FaultAction::status(503)).method(reqwest::Method::GET));
    let chatwoot_before = world.contacts("chatwoot").len();
    let out = world.sync().await;
    assert_ne!(out.status.code(), Some(0), "Chatwoot could not be read");
    assert_eq!(world.contacts("chatwoot").len(), chatwoot_before);
    world.server("chatwoot").faults().clear();

    // One of the two records became the person, the other waits as a duplicate.
    let (kept, held) = match (
        owner_of(&world, "sales-bot", &first),
        owner_of(&world, "sales-bot", &second),
    ) {
        (Some(_), None) => (first, second),
        (None, Some(_)) => (second, first),
        other => panic!("exactly one is linked: {other:?}"),
    };
    let person = owner_of(&world, "sales-bot", &kept).unwrap();
    let list = json_of(&world, &["review", "--json"]).await;
    let held_item = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| text(i, "remote_id") == held)
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    assert_eq!(held_item["kind"], "duplicate_in_provider");
    let held_email = text(
        &world
            .contacts("maiagent")
            .into_iter()
            .find(|c| text(c, "id") == held)
            .unwrap(),
        "email",
    );

    // In Chatwoot the held record's person has that phone and their own email. The phone
    // names the person the other record became; the email names the record under review:
    // Chatwoot's record is held too, never linked to the other family member.
    let r = reqwest::Client::builder()
        .build()
        .unwrap()
        .post(world.chatwoot_url("/contacts"))
        .header("api_access_token", world.chatwoot_token())
        .json(&json!({"name": "Someone Family", "phone_number": phone, "email": held_email}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let body: Value = r.json().await.unwrap();
    let chatwoot_id = text(&body["payload"]["contact"], "id");
    assert!(!chatwoot_id.is_empty(), "{body}");
    for _ in 0..2 {
        sync_ok(&world).await;
        assert_eq!(
            owner_of(&world, "support", &chatwoot_id),
            None,
            "not linked"
        );
        let list = json_of(&world, &["review", "--json"]).await;
        let item = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["provider"] == "support" && text(i, "remote_id") == chatwoot_id)
            .unwrap_or_else(|| panic!("an item about the Chatwoot record: {list}"))
            .clone();
        // Held when the listing is merged; when the other family member's create in
        // Chatwoot is then refused for that phone, the same item holds them back there.
        assert!(
            item["kind"] == "ambiguous_match" || item["kind"] == "refused",
            "{item}"
        );
        assert_eq!(item["contacts"], json!([person]), "{item}");
        // The held record's item is still what it was.
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["id"] == held_item["id"] && i["kind"] == "duplicate_in_provider"),
            "{list}"
        );
    }
    // Settled: no retry loop.
    let before = world.writes();
    sync_ok(&world).await;
    assert_eq!(world.writes(), before, "a further cycle writes nothing");
    // Chatwoot's record is as it was typed; nobody wrote the held record's email onto the
    // other person anywhere.
    let record = world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| text(c, "id") == chatwoot_id)
        .unwrap();
    assert_eq!(text(&record, "email"), held_email);
    assert_eq!(text(&record, "name"), "Someone Family");
    let show = json_of(
        &world,
        &["review", "show", &held_item["id"].to_string(), "--json"],
    )
    .await;
    let them = show["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == person)
        .unwrap()
        .clone();
    assert_ne!(
        text(&them["fields"], "email").to_lowercase(),
        held_email.to_lowercase(),
        "{show}"
    );
}

/// Kills the daemon of a failed test.
struct Stop(u32);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_made_while_the_daemon_runs_is_carried_out_by_its_next_cycle() {
    let world = World::new(30).await;
    sync_ok(&world).await;
    let (a, b) = two_people(&world);
    let remote = mixed_up_record(&world, &a, &b).await;
    sync_ok(&world).await;
    let id = the_item(&world, &remote).await["id"]
        .as_i64()
        .unwrap()
        .to_string();

    // The daemon, a cycle every second.
    world.set_sync("schedule = \"* * * * * *\"");
    let log = world.store_path().with_file_name("daemon.log");
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_contact-sync"));
    cmd.arg("--config")
        .arg(&world.config)
        .env_remove("CONTACT_SYNC_CONFIG")
        .env("RUST_LOG", "contact_sync=info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in &world.keys {
        cmd.env(k, v);
    }
    let mut daemon = cmd.spawn().unwrap();
    let _guard = Stop(daemon.id());
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    // Wait until it has run a cycle of its own (the store lock is then held by it).
    let deadline = std::time::Instant::now() + std::time::Duration::from_mins(1);
    while !daemon_log().contains("cycle") {
        assert!(std::time::Instant::now() < deadline, "{}", daemon_log());
        assert!(daemon.try_wait().unwrap().is_none(), "{}", daemon_log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The list and the decision work beside it.
    let listed = json_of(&world, &["review", "--json"]).await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "{listed}");
    let out = world.run(&["review", "apart", &id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(daemon.try_wait().unwrap().is_none(), "{}", daemon_log());

    // Its next cycle carries the decision out: the record goes to A (its phone, the
    // strongest key), and the item is closed.
    let a_person = {
        let show = json_of(&world, &["review", "show", &id, "--json"]).await;
        person_with_email(&show, &text(&a, "email"))
    };
    loop {
        let open = json_of(&world, &["review", "--json"]).await;
        if open["items"] == json!([]) && owner_of(&world, "sales-bot", &remote).is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not carried out: {open}\n{}",
            daemon_log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(owner_of(&world, "sales-bot", &remote), Some(a_person));

    // SIGTERM ends it cleanly.
    let status = std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let code = loop {
        if let Some(s) = daemon.try_wait().unwrap() {
            break s.code();
        }
        assert!(std::time::Instant::now() < deadline, "{}", daemon_log());
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(code, Some(0), "{}", daemon_log());
}
