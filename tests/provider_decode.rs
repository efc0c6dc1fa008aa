//! Property tests of the adapters' decoders: arbitrary bytes, byte-mutated real payloads
//! and real payloads with any JSON node replaced by any JSON value. A decoder never
//! panics; it answers `Ok` or a `DecodeError` (which the driver reports as
//! `ErrorKind::Malformed`), and every record it returns has an id.

use contact_sync::domain::RemoteRecord;
use contact_sync::provider::http::Redactor;
use contact_sync::provider::wire::DecodeError;
use contact_sync::provider::{agentalk, chatwoot, dmchamp, maiagent};
use proptest::prelude::*;
use proptest::sample::Index;
use secrecy::SecretString;
use serde_json::{Value, json};

/// Real payloads (shapes as `docs/providers.md` describes them), one per decoder.
fn samples() -> Vec<(&'static str, Value)> {
    vec![
        (
            "chatwoot page",
            json!({"meta": {"count": 2, "current_page": "1"}, "payload": [
                {"id": 1, "name": "Ann", "email": "ann@example.com", "phone_number": "+14155550123",
                 "identifier": "k1", "blocked": false, "thumbnail": "", "availability_status": "offline",
                 "additional_attributes": {"city": "Oslo"}, "custom_attributes": {"plan": "gold", "seats": 3},
                 "last_activity_at": 1_700_000_000, "created_at": 1_700_000_000,
                 "contact_inboxes": [{"source_id": "s", "inbox": {"id": 7, "name": "Web"}}]},
                {"id": 2, "name": "", "email": null, "phone_number": null, "identifier": null,
                 "custom_attributes": {}, "created_at": 1_700_000_001}
            ]}),
        ),
        (
            "chatwoot created",
            json!({"payload": {"contact": {"id": 9, "name": "Ann", "email": null, "phone_number": "+1",
                "identifier": null, "custom_attributes": {}}, "contact_inbox": {"inbox": null, "source_id": null}}}),
        ),
        (
            "chatwoot labels",
            json!({"payload": ["vip", {"id": 1, "title": "lead"}]}),
        ),
        (
            "maiagent page",
            json!({"count": 2, "next": "https://api.maiagent.ai/api/contacts/?page=2", "previous": null,
                "results": [[
                {"id": "u1", "name": "Ann", "phoneNumber": 912_345_678, "email": "a@x.io", "sourceId": "k1",
                 "queryMetadata": {"plan": "gold"}, "inboxes": [{"id": "i1", "name": "Web"}],
                 "createdAt": "1751875361000", "updatedAt": 1_751_875_361_000_u64},
                {"id": "u2", "name": "Bob", "phone_number": "+886912345678", "source_id": null,
                 "query_metadata": null, "created_at": "2024-01-01T00:00:00Z"}]]}),
        ),
        (
            "maiagent contact",
            json!({"id": "u1", "name": "Ann", "inbox": {"id": "i", "name": "n"}, "mcpCredentials": []}),
        ),
        (
            "agentalk search",
            json!({"count": 1, "limit": 50, "offset": 0, "results": [
                {"id": "a1", "phone": "+14155550123", "firstName": "Ann", "lastName": null, "email": "a@x.io",
                 "tags": ["vip", {"id": "t", "name": "lead"}], "fields": {"city": "Oslo", "n": 1}}]}),
        ),
        (
            "agentalk upsert",
            json!({"isNew": true, "contact": {"id": "a1", "phone": "+14155550123", "tags": [], "fields": {}}}),
        ),
        (
            "dmchamp lookup",
            json!({"success": true, "contactId": "abc123"}),
        ),
        (
            "dmchamp created",
            json!({"success": true, "data": {"message": "Successfully created new contact", "contactId": "abc"}}),
        ),
        (
            "dmchamp tags",
            json!([{"name": "vip", "description": "d"}, {"name": "lead"}]),
        ),
    ]
}

fn ids_present(records: &[RemoteRecord]) -> bool {
    records.iter().all(|r| !r.remote_id.is_empty())
}

/// Runs every decoder over `body`; checks the invariants of each answer.
fn decode_all(body: &[u8]) {
    fn check<T>(what: &str, result: Result<T, DecodeError>, ok: impl FnOnce(&T) -> bool) {
        match result {
            Ok(value) => assert!(ok(&value), "{what}: decoded a record without an id"),
            Err(e) => assert!(!e.0.is_empty(), "{what}: an error without a message"),
        }
    }
    check("chatwoot page", chatwoot::decode_contact_page(body), |p| {
        ids_present(&p.records)
    });
    check("chatwoot created", chatwoot::decode_created(body), |r| {
        !r.remote_id.is_empty()
    });
    check("chatwoot labels", chatwoot::decode_labels(body), |_| true);
    check("maiagent page", maiagent::decode_contact_page(body), |p| {
        ids_present(&p.records)
    });
    check("maiagent contact", maiagent::decode_contact(body), |r| {
        !r.remote_id.is_empty()
    });
    check("agentalk search", agentalk::decode_search(body), |p| {
        ids_present(&p.records)
    });
    check("agentalk upsert", agentalk::decode_upsert(body), |u| {
        !u.record.remote_id.is_empty()
    });
    check("dmchamp lookup", dmchamp::decode_lookup(body), |id| {
        id.as_ref().is_none_or(|id| !id.is_empty())
    });
    check("dmchamp created", dmchamp::decode_created(body), |c| {
        !c.contact_id.is_empty()
    });
    check("dmchamp tags", dmchamp::decode_tags(body), |_| true);
}

#[test]
fn the_real_payloads_decode() {
    for (what, payload) in samples() {
        let body = payload.to_string();
        let body = body.as_bytes();
        let ok = match what {
            "chatwoot page" => chatwoot::decode_contact_page(body).map(|p| p.records.len() == 2),
            "chatwoot created" => chatwoot::decode_created(body).map(|r| r.remote_id == "9"),
            "chatwoot labels" => chatwoot::decode_labels(body).map(|l| l == ["vip", "lead"]),
            "maiagent page" => maiagent::decode_contact_page(body).map(|p| p.records.len() == 2),
            "maiagent contact" => maiagent::decode_contact(body).map(|r| r.remote_id == "u1"),
            "agentalk search" => agentalk::decode_search(body).map(|p| p.records.len() == 1),
            "agentalk upsert" => agentalk::decode_upsert(body).map(|u| u.is_new == Some(true)),
            "dmchamp lookup" => {
                dmchamp::decode_lookup(body).map(|id| id.as_deref() == Some("abc123"))
            }
            "dmchamp created" => dmchamp::decode_created(body).map(|c| c.contact_id == "abc"),
            "dmchamp tags" => dmchamp::decode_tags(body).map(|t| t.len() == 2),
            other => panic!("no check for {other}"),
        };
        assert_eq!(ok, Ok(true), "{what}");
    }
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("")),
        Just(json!("<html>")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z_]{0,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every JSON pointer inside `value` (the root is `""`).
fn pointers(value: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_owned());
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                pointers(item, &format!("{at}/{i}"), out);
            }
        }
        Value::Object(map) => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                pointers(v, &format!("{at}/{key}"), out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum ByteEdit {
    Set(Index, u8),
    Delete(Index),
    Insert(Index, u8),
    Truncate(Index),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    prop_oneof![
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Set(i, b)),
        any::<Index>().prop_map(ByteEdit::Delete),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<Index>().prop_map(ByteEdit::Truncate),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..600)) {
        decode_all(&body);
    }

    #[test]
    fn arbitrary_json_never_panics(value in json_value()) {
        decode_all(value.to_string().as_bytes());
    }

    #[test]
    fn byte_mutated_payloads_never_panic(
        sample in any::<Index>(),
        edits in prop::collection::vec(byte_edit(), 1..6),
    ) {
        let all = samples();
        let mut body = all[sample.index(all.len())].1.to_string().into_bytes();
        for edit in edits {
            if body.is_empty() {
                break;
            }
            match edit {
                ByteEdit::Set(i, b) => {
                    let i = i.index(body.len());
                    body[i] = b;
                }
                ByteEdit::Delete(i) => {
                    body.remove(i.index(body.len()));
                }
                ByteEdit::Insert(i, b) => body.insert(i.index(body.len()), b),
                ByteEdit::Truncate(i) => body.truncate(i.index(body.len())),
            }
        }
        decode_all(&body);
    }

    #[test]
    fn payloads_with_a_node_replaced_never_panic(
        sample in any::<Index>(),
        node in any::<Index>(),
        replacement in json_value(),
    ) {
        let all = samples();
        let mut value = all[sample.index(all.len())].1.clone();
        let mut paths = Vec::new();
        pointers(&value, "", &mut paths);
        let target = &paths[node.index(paths.len())];
        if target.is_empty() {
            value = replacement;
        } else if let Some(slot) = value.pointer_mut(target) {
            *slot = replacement;
        }
        decode_all(value.to_string().as_bytes());
    }

    #[test]
    fn scrubbing_never_panics_and_removes_the_key(
        before in "\\PC{0,40}",
        after in "\\PC{0,40}",
        param in prop_oneof![Just("apiKey="), Just("APIKEY="), Just("token="), Just("")],
    ) {
        let key = "k3y-SECRET-9f8e7d";
        let redactor = Redactor::new(&SecretString::from(key));
        let text = format!("{before}{param}{key}{after}");
        let clean = redactor.scrub(&text);
        prop_assert!(!clean.contains(key), "{}", clean);
        let _ = redactor.scrub(&before);
    }

    #[test]
    fn maiagent_next_links_never_panic(next in ".{0,80}") {
        let base = url::Url::parse("http://127.0.0.1:4100").unwrap();
        if let Ok(url) = maiagent::rewrite_next(&next, &base) {
            prop_assert_eq!(url.host_str(), Some("127.0.0.1"));
            prop_assert_eq!(url.port(), Some(4100));
        }
    }
}
