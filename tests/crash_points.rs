//! Crash safety at every named crash point of a cycle (`src/crash.rs`): the real binary
//! aborts right there (`CRASH_POINT`, read by debug builds only), is run again,
//! and the end state must be what an uninterrupted run gives — no duplicate in any
//! provider, no change lost, propagated deletes completed, the store consistent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{World, assert_converged, contacts, end_state, stdout, text};

fn describe(out: &std::process::Output) -> String {
    format!(
        "code {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The store passes SQLite's integrity and foreign-key checks.
fn assert_store_consistent(world: &World) {
    let conn = rusqlite::Connection::open(world.store_path()).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let broken: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(broken, 0, "foreign keys hold");
    let creating: i64 = conn
        .query_row(
            "SELECT count(*) FROM links WHERE state = 'creating'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(creating, 0, "no create is left unresolved");
}

/// Runs `--sync-now` crashing at `point`; it must have crashed (not exited).
async fn crash_at(world: &World, point: &str) {
    let out = world
        .run_env(&["--sync-now"], &[("CRASH_POINT", point)])
        .await;
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("crash point"),
        "the run crashed at {point}: {}",
        describe(&out)
    );
}

/// Reruns until a run exits 0 (a write cut off mid-flight may need the run after).
async fn rerun(world: &World, point: &str) {
    let mut out = world.sync().await;
    if out.status.code() != Some(0) {
        out = world.sync().await;
    }
    assert_eq!(
        out.status.code(),
        Some(0),
        "rerun after a crash at {point}: {}",
        describe(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_at_any_point_of_a_first_sync_loses_nothing_and_duplicates_nothing() {
    let clean = World::new(30).await;
    assert_eq!(clean.sync().await.status.code(), Some(0));
    let expected = end_state(&clean);
    for point in [
        "after-page-stored@2",
        "after-plan-persisted@1",
        "after-plan-persisted@3",
        "after-write-sent@1",
        "after-write-sent@12",
        "after-write-sent@40",
    ] {
        let world = World::new(30).await;
        crash_at(&world, point).await;
        rerun(&world, point).await;
        assert_converged(&world);
        assert_eq!(end_state(&world), expected, "crash at {point}");
        assert_eq!(world.status().await["contacts"], world.known(), "{point}");
        assert_store_consistent(&world);
        // Nothing is left to do.
        let before = world.writes();
        assert_eq!(world.sync().await.status.code(), Some(0));
        assert_eq!(
            world.writes(),
            before,
            "{point}: a further run sends nothing"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_a_delete_propagates_completes_it_on_the_rerun() {
    for point in ["after-mark-gone", "mid-propagated-delete"] {
        let world = World::new(30).await;
        world.set_sync("propagate_deletes = true");
        assert_eq!(world.sync().await.status.code(), Some(0));
        // Someone in both Chatwoot and MaiAgent is deleted in Chatwoot.
        let in_maiagent: Vec<String> = world
            .contacts("maiagent")
            .iter()
            .map(|c| text(c, "email").to_lowercase())
            .filter(|e| !e.is_empty())
            .collect();
        let person = world
            .contacts("chatwoot")
            .into_iter()
            .find(|c| in_maiagent.contains(&text(c, "email").to_lowercase()))
            .unwrap();
        let email = text(&person, "email").to_lowercase();
        let http = reqwest::Client::builder().build().unwrap();
        let r = http
            .delete(world.chatwoot_url(&format!("/contacts/{}", text(&person, "id"))))
            .header("api_access_token", world.chatwoot_token())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());

        crash_at(&world, point).await;
        rerun(&world, point).await;
        let holds = |kind: &str| {
            contacts(&world.server(kind).dump())
                .iter()
                .any(|c| text(c, "email").to_lowercase() == email)
        };
        assert!(!holds("chatwoot"));
        assert!(
            !holds("maiagent"),
            "{point}: the delete propagated to MaiAgent after the crash"
        );
        assert_store_consistent(&world);
        // And it is never re-created.
        assert_eq!(world.sync().await.status.code(), Some(0));
        assert!(!holds("chatwoot") && !holds("maiagent"), "{point}");
    }
}
