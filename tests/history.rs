//! End to end: the journal behind `contact-sync runs`, `history` and `undo`, with the real
//! binary and the simulated providers. Human edits go through each provider's public API;
//! the simulators decide every answer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, stdout, text};
use serde_json::{Value, json};

/// The person's name as each provider holds it (found by email), in config order.
fn names_of(world: &World, email: &str) -> Vec<(String, String)> {
    world
        .sim
        .instances()
        .iter()
        .map(|i| {
            let list = common::contacts(&i.server.dump());
            let c = list
                .iter()
                .find(|c| text(c, "email").eq_ignore_ascii_case(email))
                .unwrap_or_else(|| panic!("{} does not hold {email}", i.name));
            let name = if c.get("firstName").is_some() {
                format!("{} {}", text(c, "firstName"), text(c, "lastName"))
            } else {
                text(c, "name")
            };
            (i.name.clone(), name)
        })
        .collect()
}

async fn json_of(world: &World, args: &[&str]) -> Value {
    let out = world.run(args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn newest_run(world: &World) -> Value {
    json_of(world, &["runs", "--json", "--limit", "1"]).await["runs"][0].clone()
}

/// Someone every provider holds: with a phone and an email.
fn someone(world: &World) -> Value {
    world
        .contacts("chatwoot")
        .into_iter()
        .find(|c| !text(c, "email").is_empty() && !text(c, "phone_number").is_empty())
        .expect("someone with a phone and an email")
}

async fn rename_in_chatwoot(world: &World, id: &str, name: &str) {
    let r = reqwest::Client::builder()
        .build()
        .unwrap()
        .put(world.chatwoot_url(&format!("/contacts/{id}")))
        .header("api_access_token", world.chatwoot_token())
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
}

async fn rename_in_maiagent(world: &World, email: &str, name: &str) {
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
        .json(&json!({ "name": name }))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{r:?}");
}

fn journal_rows(world: &World) -> i64 {
    let conn = rusqlite::Connection::open(world.store_path()).unwrap();
    conn.query_row("SELECT count(*) FROM journal", [], |r| r.get(0))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_has_a_history_and_its_run_can_be_undone_and_the_undo_too() {
    let world = World::new(12).await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    // A cycle that changes nothing writes nothing to the journal.
    let rows = journal_rows(&world);
    assert!(rows > 0, "the first sync linked and created people");
    assert_eq!(world.sync().await.status.code(), Some(0));
    assert_eq!(
        journal_rows(&world),
        rows,
        "a no-change cycle journals nothing"
    );

    let person = someone(&world);
    let email = text(&person, "email");
    let old_name = text(&person, "name");
    let before = names_of(&world, &email);
    rename_in_chatwoot(&world, &text(&person, "id"), "Renata Quintero-Vale").await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    let run = newest_run(&world).await;
    let run_id = run["id"].as_i64().unwrap();
    assert_eq!(run["ok"], true, "{run}");
    assert!(run["finished_at"].as_str().unwrap().ends_with('Z'), "{run}");
    let providers: Vec<&str> = run["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(providers, world.names());

    // Who changed this? Chatwoot, in that run; contact-sync then wrote it everywhere else.
    let history = json_of(&world, &["history", &email, "--json"]).await;
    let events = history["events"].as_array().unwrap();
    let in_run: Vec<&Value> = events.iter().filter(|e| e["run"] == run_id).collect();
    assert!(
        in_run.iter().any(|e| e["kind"] == "changed_in"
            && e["provider"] == "support"
            && e["field"] == "name"
            && e["old"] == old_name.as_str()
            && e["new"] == "Renata Quintero-Vale"),
        "{history:#}"
    );
    for other in ["sales-bot", "whatsapp", "campaigns"] {
        let sent: Vec<&&Value> = in_run
            .iter()
            .filter(|e| e["kind"] == "sent_to" && e["provider"] == other)
            .collect();
        assert!(!sent.is_empty(), "nothing sent to {other}: {history:#}");
        for e in &sent {
            assert!(e["old"].is_string() && e["new"].is_string(), "{e}");
            assert_ne!(e["old"], e["new"], "{e}");
            assert!(
                "Renata Quintero-Vale".contains(e["new"].as_str().unwrap()),
                "{e}"
            );
        }
    }
    assert!(
        events
            .iter()
            .all(|e| e["at"].as_str().unwrap().ends_with('Z'))
    );
    // The same person by contact id and by a provider's record id.
    let contact = history["contact"].as_i64().unwrap();
    let by_id = json_of(&world, &["history", &contact.to_string(), "--json"]).await;
    assert_eq!(by_id, history);
    let by_record = json_of(
        &world,
        &[
            "history",
            &format!("support:{}", text(&person, "id")),
            "--json",
        ],
    )
    .await;
    assert_eq!(by_record["contact"], contact);

    // The undo's dry run prints its plan and sends nothing.
    let writes = world.writes();
    let out = world
        .run(&["undo", "--run", &run_id.to_string(), "--dry-run"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let listing = stdout(&out);
    assert!(
        listing.contains(&format!("name \"Renata Quintero-Vale\" → {old_name:?}")),
        "{listing}"
    );
    assert_eq!(world.writes(), writes, "a dry run sends nothing");
    assert_eq!(newest_run(&world).await["id"], run_id, "nor records a run");

    // The undo puts the old name back everywhere, in its own run.
    let out = world.run(&["undo", "--run", &run_id.to_string()]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(names_of(&world, &email), before, "{}", stdout(&out));
    let undo = newest_run(&world).await;
    assert_eq!(undo["undo_of"], run_id, "{undo}");
    let undo_id = undo["id"].as_i64().unwrap();
    assert!(undo_id > run_id);
    let writes = world.writes();
    assert_eq!(world.sync().await.status.code(), Some(0));
    assert_eq!(
        world.writes(),
        writes,
        "after the undo a cycle writes nothing"
    );
    let history = json_of(&world, &["history", &email, "--json"]).await;
    assert!(
        history["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["run"] == undo_id
                && e["kind"] == "changed_in"
                && e["provider"].is_null()
                && e["field"] == "name"
                && e["new"] == old_name.as_str()),
        "{history:#}"
    );

    // An undo can be undone: the rename comes back everywhere.
    let out = world.run(&["undo", "--run", &undo_id.to_string()]).await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let names = names_of(&world, &email);
    assert!(
        names.iter().all(|(_, n)| n == "Renata Quintero-Vale"),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undo_leaves_a_field_a_human_changed_since_and_says_so() {
    let world = World::new(8).await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    let person = someone(&world);
    let email = text(&person, "email");
    rename_in_chatwoot(&world, &text(&person, "id"), "First Rename").await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    let run_id = newest_run(&world).await["id"].as_i64().unwrap();
    // Someone renames them in MaiAgent before the undo: the undo's pull sees it.
    rename_in_maiagent(&world, &email, "Human Later").await;
    let out = world.run(&["undo", "--run", &run_id.to_string()]).await;
    let text_out = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text_out}");
    assert!(text_out.contains("left as they are"), "{text_out}");
    assert!(
        text_out
            .lines()
            .any(|l| l.contains(" name: changed later in sales-bot")),
        "{text_out}"
    );
    // The human's change stands, and reached everyone in the undo's run.
    let names = names_of(&world, &email);
    assert!(names.iter().all(|(_, n)| n == "Human Later"), "{names:?}");
    let writes = world.writes();
    assert_eq!(world.sync().await.status.code(), Some(0));
    assert_eq!(world.writes(), writes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_keys_and_runs_exit_2_with_a_message() {
    let world = World::new(4).await;
    let runs = json_of(&world, &["runs", "--json"]).await;
    assert_eq!(runs, json!({ "runs": [] }), "no store yet: no runs");
    assert_eq!(world.sync().await.status.code(), Some(0));
    let out = world.run(&["history", "nobody@example.org"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no person"));
    let out = world.run(&["undo", "--run", "999"]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no run 999"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undoing_an_import_with_delete_created_deletes_what_it_created_where_it_can() {
    let world = World::new(12).await;
    let seeded: Vec<usize> = world
        .names()
        .iter()
        .map(|n| common::contacts(&world.instance(n).dump()).len())
        .collect();
    assert_eq!(world.sync().await.status.code(), Some(0));
    let run_id = newest_run(&world).await["id"].as_i64().unwrap();
    let synced: Vec<usize> = world
        .names()
        .iter()
        .map(|n| common::contacts(&world.instance(n).dump()).len())
        .collect();
    assert!(
        synced.iter().zip(&seeded).all(|(s, b)| s > b),
        "{synced:?} {seeded:?}"
    );

    // Without --delete-created nothing is deleted, and it says so.
    let out = world
        .run(&["undo", "--run", &run_id.to_string(), "--dry-run"])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("--delete-created deletes them"),
        "{}",
        stdout(&out)
    );

    let out = world
        .run(&["undo", "--run", &run_id.to_string(), "--delete-created"])
        .await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&out),
        String::from_utf8_lossy(&out.stderr)
    );
    for (i, name) in world.names().iter().enumerate() {
        let now = common::contacts(&world.instance(name).dump()).len();
        let kind = world.instance(name).kind();
        if kind == "dmchamp" {
            assert_eq!(now, synced[i], "DM Champ cannot delete: {}", stdout(&out));
        } else {
            assert_eq!(
                now,
                seeded[i],
                "{name} is back to what it held: {}",
                stdout(&out)
            );
        }
    }
    assert!(stdout(&out).contains("kept"), "{}", stdout(&out));
    // Deleted records are never created again.
    let writes = world.writes();
    assert_eq!(world.sync().await.status.code(), Some(0));
    assert_eq!(world.writes(), writes);
}

/// Someone types a MaiAgent contact with `a`'s phone and `b`'s email: a record whose keys
/// name two people (a review item).
async fn mixed_up_record(world: &World, a: &Value, b: &Value) {
    world
        .maiagent_record(json!({
            "name": "Mixed Up",
            "phoneNumber": text(a, "phone_number"),
            "email": text(b, "email"),
        }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_review_merge_is_in_the_history_of_both_people_and_in_review_show() {
    let world = World::new(30).await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    let people: Vec<Value> = world
        .contacts("chatwoot")
        .into_iter()
        .filter(|c| !text(c, "email").is_empty() && !text(c, "phone_number").is_empty())
        .take(2)
        .collect();
    let (a, b) = (&people[0], &people[1]);
    mixed_up_record(&world, a, b).await;
    assert_eq!(world.sync().await.status.code(), Some(0));
    let items = json_of(&world, &["review", "--json"]).await["items"].clone();
    let item = items[0].clone();
    let id = item["id"].as_i64().unwrap().to_string();
    let ids: Vec<i64> = item["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_i64().unwrap())
        .collect();
    let (keep, other) = (ids[1], ids[0]);
    let out = world
        .run(&["review", "merge", &id, "--keep", &keep.to_string()])
        .await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(world.sync().await.status.code(), Some(0));
    let run = newest_run(&world).await["id"].as_i64().unwrap();

    // `history` of the survivor (by its email) says who went into whom, in that run.
    let survivor = json_of(&world, &["history", &text(b, "email"), "--json"]).await;
    // (Both people's keys are the survivor's now.)
    assert_eq!(survivor["contact"], keep, "{survivor}");
    let merged: Vec<&Value> = survivor["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "merged")
        .collect();
    assert!(
        merged
            .iter()
            .any(|e| e["field"].is_null() && e["old"] == other && e["new"] == keep),
        "{survivor}"
    );
    assert!(merged.iter().all(|e| e["run"] == run), "{survivor}");
    // The person folded in keeps its history, ending in the merge.
    let absorbed = json_of(&world, &["history", &other.to_string(), "--json"]).await;
    let last = absorbed["events"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["kind"], "merged", "{absorbed}");
    assert_eq!(
        (last["old"].clone(), last["new"].clone()),
        (json!(other), json!(keep))
    );

    // `review show` keeps what the merge decided: who survived, what was kept from whom.
    let show = json_of(&world, &["review", "show", &id, "--json"]).await;
    let history = show["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{show}");
    assert_eq!(history[0]["survivor"], keep);
    assert_eq!(history[0]["absorbed"], json!([other]));
    let fields = history[0]["fields"].as_array().unwrap();
    let email = fields.iter().find(|f| f["field"] == "email").unwrap();
    assert_eq!(email["kept_from"], format!("contact {keep}"));
    assert_eq!(email["dropped_from"], format!("contact {other}"));
    let human = stdout(&world.run(&["review", "show", &id]).await);
    assert!(human.contains(&format!("contact {keep} kept")), "{human}");
    assert!(human.contains("not kept"), "{human}");
}
