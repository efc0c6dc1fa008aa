//! The SQLite store on a real file: migrations, refusal of a newer store, the sync lock,
//! read-only status alongside a writer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use contact_sync::store::{self, Store, StoreError};

#[tokio::test]
async fn migrates_an_empty_file_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/dir/contacts.db");
    let store = Store::open(&path).await.unwrap();
    let tables: Vec<String> = store
        .call(|c| {
            let mut stmt =
                c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")?;
            let rows = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok(rows)
        })
        .await
        .unwrap();
    for t in [
        "contact_tags",
        "contacts",
        "conflicts",
        "intents",
        "links",
        "match_keys",
        "providers",
        "runs",
    ] {
        assert!(
            tables.iter().any(|x| x == t),
            "missing table {t}: {tables:?}"
        );
    }
    let mode: String = store
        .call(|c| Ok(c.pragma_query_value(None, "journal_mode", |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(mode, "wal");
    drop(store);
    // Reopening applies nothing new and keeps the version.
    let store = Store::open(&path).await.unwrap();
    let version: i64 = store
        .call(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
        .await
        .unwrap();
    assert_eq!(
        version,
        i64::try_from(store::migrations::latest_version()).unwrap()
    );
}

#[tokio::test]
async fn refuses_a_store_from_a_newer_binary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("contacts.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let err = Store::open(&path).await.unwrap_err();
    assert!(
        matches!(err, StoreError::TooNew { found: 99, .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("newer than this contact-sync supports")
    );
    let err = store::open_read_only(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }));
}

#[tokio::test]
async fn a_second_writer_is_refused_while_readers_work() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("contacts.db");
    let first = Store::open(&path).await.unwrap();
    let err = Store::open(&path).await.unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("already syncing") && msg.contains(&std::process::id().to_string()),
        "{msg}"
    );
    // A read-only status works alongside the writer.
    let conn = store::open_read_only(&path).unwrap().unwrap();
    let report = store::status::report(Some(&conn), &[]).unwrap();
    assert_eq!(report.contacts, 0);
    drop(first);
    // Once released, the lock can be taken again.
    Store::open(&path).await.unwrap();
}
