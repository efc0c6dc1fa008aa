//! The simulated Chatwoot account API over real HTTP on loopback, checked against the
//! behaviour of Chatwoot's account API (v4.9.1). Tests seed state; the server decides
//! every answer.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use contact_sync::simulator::chatwoot::{self, Credentials, PAGE_SIZE};
use contact_sync::simulator::seed::{self, Person};
use contact_sync::simulator::{SimServer, SimulatedProvider};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "cw-token-123";
const ACCOUNT: u64 = 12;
const INBOX: u64 = 4;

struct Cw {
    server: SimServer<chatwoot::State>,
    http: reqwest::Client,
}

impl Cw {
    async fn start(people: Vec<Person>) -> Self {
        let state = Arc::new(chatwoot::State::new(Credentials {
            account_id: ACCOUNT,
            inbox_id: INBOX,
            api_key: TOKEN.to_owned(),
        }));
        state.seed(people);
        Cw {
            server: chatwoot::State::serve(state).await.unwrap(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_mins(1))
                .build()
                .unwrap(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1/accounts/{ACCOUNT}{path}", self.server.base_url())
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, self.url(path))
            .query(query)
            .header("api_access_token", TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn get(&self, path: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
        self.call(Method::GET, path, query, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, &[], Some(body)).await
    }

    /// Creates a contact and returns its id.
    async fn create(&self, body: Value) -> u64 {
        let (status, v) = self.post("/contacts", body).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        v["payload"]["contact"]["id"].as_u64().unwrap()
    }

    async fn filter(&self, payload: Value) -> (StatusCode, Value) {
        self.post("/contacts/filter", json!({ "payload": payload }))
            .await
    }
}

fn ids(page: &Value) -> Vec<u64> {
    page["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_u64().unwrap())
        .collect()
}

fn person(
    index: u64,
    first: &str,
    last: &str,
    email: Option<&str>,
    phone: Option<&str>,
    tags: &[&str],
) -> Person {
    Person {
        index,
        first_name: first.to_owned(),
        last_name: last.to_owned(),
        email: email.map(str::to_owned),
        phone: phone.map(str::to_owned),
        phone_e164: phone.map(str::to_owned),
        tags: tags.iter().map(|t| (*t).to_owned()).collect(),
    }
}

/// `n` people with an email each.
fn crowd(n: u64) -> Vec<Person> {
    (0..n)
        .map(|i| {
            person(
                i,
                &format!("Person{i}"),
                "Test",
                Some(&format!("p{i}@example.com")),
                None,
                &[],
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Listing

#[tokio::test]
async fn pages_of_fifteen_until_a_short_page_then_empty_pages_with_the_count() {
    let cw = Cw::start(crowd(40)).await;
    let mut seen = Vec::new();
    for (page, want) in [("1", 15), ("2", 15), ("3", 10), ("4", 0), ("99", 0)] {
        let (status, v) = cw
            .get("/contacts", &[("page", page), ("sort", "created_at")])
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["payload"].as_array().unwrap().len(), want, "page {page}");
        assert_eq!(v["meta"]["count"], 40);
        // `current_page` echoes the raw parameter: a string.
        assert_eq!(v["meta"]["current_page"], page);
        seen.extend(ids(&v));
    }
    assert_eq!(PAGE_SIZE, 15);
    let distinct: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(distinct.len(), 40);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "created_at order");

    // Without `page`: the integer 1.
    let (_, v) = cw.get("/contacts", &[("sort", "created_at")]).await;
    assert_eq!(v["meta"]["current_page"], 1);
    assert_eq!(ids(&v), seen[..15]);
    // Kaminari: 0, negative and non-numeric pages are the first page; "2abc" is page 2.
    for raw in ["0", "-3", "abc", ""] {
        let (_, v) = cw
            .get("/contacts", &[("page", raw), ("sort", "created_at")])
            .await;
        assert_eq!(ids(&v), seen[..15], "page={raw}");
        assert_eq!(v["meta"]["current_page"], raw);
    }
    let (_, v) = cw
        .get("/contacts", &[("page", "2abc"), ("sort", "created_at")])
        .await;
    assert_eq!(ids(&v), seen[15..30]);

    // -created_at is the reverse.
    let (_, v) = cw.get("/contacts", &[("sort", "-created_at")]).await;
    let mut reversed = seen.clone();
    reversed.reverse();
    assert_eq!(ids(&v), reversed[..15]);
}

#[tokio::test]
async fn order_changes_between_requests_without_sort_and_is_stable_with_it() {
    let cw = Cw::start(crowd(40)).await;
    let mut firsts = HashSet::new();
    for _ in 0..30 {
        let (_, v) = cw.get("/contacts", &[]).await;
        assert_eq!(v["payload"].as_array().unwrap().len(), 15);
        assert_eq!(v["meta"]["count"], 40);
        firsts.insert(ids(&v));
    }
    assert!(firsts.len() > 1, "unsorted listing never changed order");

    let mut sorted = HashSet::new();
    for _ in 0..10 {
        let (_, v) = cw.get("/contacts", &[("sort", "created_at")]).await;
        sorted.insert(ids(&v));
    }
    assert_eq!(sorted.len(), 1);

    // A client that pages without `sort` sees duplicates and misses.
    let mut incomplete_scans = 0;
    for _ in 0..5 {
        let mut all = Vec::new();
        for page in ["1", "2", "3"] {
            let (_, v) = cw.get("/contacts", &[("page", page)]).await;
            all.extend(ids(&v));
        }
        let distinct: HashSet<u64> = all.iter().copied().collect();
        if distinct.len() < 40 {
            incomplete_scans += 1;
        }
    }
    assert!(incomplete_scans > 0);
}

#[tokio::test]
async fn sort_keys() {
    let people = vec![
        person(0, "bob", "Zed", Some("b@example.com"), None, &[]),
        person(1, "Alice", "Young", None, Some("+14155550101"), &[]),
        person(2, "carol", "Xu", Some("A@example.com"), None, &[]),
        person(3, "42", "Numbers", Some("n@example.com"), None, &[]),
    ];
    let cw = Cw::start(people).await;
    let (_, all) = cw.get("/contacts", &[("sort", "created_at")]).await;
    let id = ids(&all);
    let (bob, alice, carol, num) = (id[0], id[1], id[2], id[3]);

    let (_, v) = cw.get("/contacts", &[("sort", "name")]).await;
    assert_eq!(
        ids(&v),
        [alice, bob, carol, num],
        "names starting with a digit sort as 'z'"
    );
    let (_, v) = cw.get("/contacts", &[("sort", "-name")]).await;
    assert_eq!(ids(&v), [num, carol, bob, alice]);
    // email: ascending NULLs last, descending NULLs first.
    let (_, v) = cw.get("/contacts", &[("sort", "email")]).await;
    assert_eq!(ids(&v), [carol, bob, num, alice]);
    let (_, v) = cw.get("/contacts", &[("sort", "-email")]).await;
    assert_eq!(ids(&v), [alice, num, bob, carol]);
    // Unknown sort keys are ignored.
    let (status, v) = cw.get("/contacts", &[("sort", "favourite_colour")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["meta"]["count"], 4);
}

#[tokio::test]
async fn only_resolved_contacts_are_listed() {
    let cw = Cw::start(crowd(3)).await;
    let id = cw.create(json!({"name": "Anonymous visitor"})).await;
    let (_, v) = cw.get("/contacts", &[("sort", "created_at")]).await;
    assert_eq!(v["meta"]["count"], 3);
    assert!(!ids(&v).contains(&id));
    // It exists all the same.
    let (status, v) = cw.get(&format!("/contacts/{id}"), &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["payload"]["name"], "Anonymous visitor");
    // An identifier resolves it.
    let (status, _) = cw
        .call(
            Method::PATCH,
            &format!("/contacts/{id}"),
            &[],
            Some(json!({"identifier": "ext-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, v) = cw.get("/contacts", &[("sort", "created_at")]).await;
    assert_eq!(v["meta"]["count"], 4);
    assert_eq!(*ids(&v).last().unwrap(), id);
}

#[tokio::test]
async fn labels_filter_takes_any_of_the_labels() {
    let people = vec![
        person(0, "A", "A", Some("a@example.com"), None, &["vip"]),
        person(1, "B", "B", Some("b@example.com"), None, &["lead"]),
        person(2, "C", "C", Some("c@example.com"), None, &["vip", "lead"]),
        person(3, "D", "D", Some("d@example.com"), None, &[]),
    ];
    let cw = Cw::start(people).await;
    let (_, v) = cw
        .get("/contacts", &[("labels[]", "vip"), ("sort", "created_at")])
        .await;
    assert_eq!(v["meta"]["count"], 2);
    let vip = ids(&v);
    let (_, v) = cw
        .get(
            "/contacts",
            &[
                ("labels[]", "vip"),
                ("labels[]", "lead"),
                ("sort", "created_at"),
            ],
        )
        .await;
    assert_eq!(v["meta"]["count"], 3);
    let (_, v) = cw
        .get("/contacts", &[("labels[]", "VIP"), ("sort", "created_at")])
        .await;
    assert_eq!(ids(&v), vip);
    let (_, v) = cw.get("/contacts", &[("labels[]", "nothing")]).await;
    assert_eq!(v["meta"]["count"], 0);
    assert_eq!(v["payload"], json!([]));

    // Changing a contact's labels moves it in and out of the filter.
    let d = {
        let (_, all) = cw.get("/contacts", &[("sort", "created_at")]).await;
        ids(&all)[3]
    };
    cw.post(&format!("/contacts/{d}/labels"), json!({"labels": ["vip"]}))
        .await;
    let (_, v) = cw.get("/contacts", &[("labels[]", "vip")]).await;
    assert_eq!(v["meta"]["count"], 3);
}

// ---------------------------------------------------------------------------------------
// Search and filter

#[tokio::test]
async fn search_is_a_substring_match() {
    let people = vec![
        person(
            0,
            "María",
            "García",
            Some("maria@example.com"),
            Some("+886912345678"),
            &[],
        ),
        person(
            1,
            "John",
            "Smith",
            Some("john@corp.example.org"),
            Some("+14155550199"),
            &[],
        ),
        person(2, "志明", "王", Some("wang@example.com"), None, &[]),
    ];
    let cw = Cw::start(people).await;
    let id = cw
        .create(json!({"name": "Ident", "identifier": "TestIdentifier"}))
        .await;

    for q in ["", "   "] {
        let (status, v) = cw.get("/contacts/search", &[("q", q)]).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(
            v,
            json!({"error": "Specify search string with parameter q"})
        );
    }
    let (status, _) = cw.get("/contacts/search", &[]).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    let names = |v: &Value| -> Vec<String> {
        v["payload"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, v) = cw.get("/contacts/search", &[("q", "GARCÍA")]).await;
    assert_eq!(names(&v), ["María García"]);
    let (_, v) = cw.get("/contacts/search", &[("q", "CORP.example")]).await;
    assert_eq!(names(&v), ["John Smith"]);
    // `+` must be sent encoded (reqwest sends %2B).
    let (_, v) = cw.get("/contacts/search", &[("q", "+8869")]).await;
    assert_eq!(names(&v), ["María García"]);
    let (_, v) = cw.get("/contacts/search", &[("q", "志明")]).await;
    assert_eq!(names(&v), ["王志明"]);
    let (_, v) = cw.get("/contacts/search", &[("q", "example.com")]).await;
    assert_eq!(v["meta"]["count"], 2);
    // `_` is a wildcard.
    let (_, v) = cw.get("/contacts/search", &[("q", "j_hn")]).await;
    assert_eq!(names(&v), ["John Smith"]);
    // The identifier match respects case.
    let (_, v) = cw.get("/contacts/search", &[("q", "TestIdent")]).await;
    assert_eq!(ids(&v), [id]);
    let (_, v) = cw.get("/contacts/search", &[("q", "testident")]).await;
    assert_eq!(v["meta"]["count"], 0);
}

#[tokio::test]
async fn filter_finds_exact_keys() {
    let people = vec![
        person(
            0,
            "Ana",
            "Lopez",
            Some("ana@example.com"),
            Some("+886912345678"),
            &["vip"],
        ),
        person(
            1,
            "Ben",
            "Ng",
            Some("ben@example.com"),
            Some("+14155550123"),
            &[],
        ),
    ];
    let cw = Cw::start(people).await;
    let ext = cw
        .create(json!({"name": "Ext", "identifier": "Key-ABC"}))
        .await;
    let (_, all) = cw.get("/contacts", &[("sort", "created_at")]).await;
    let (ana, ben) = (ids(&all)[0], ids(&all)[1]);

    let eq = |key: &str, value: &str| json!([{"attribute_key": key, "filter_operator": "equal_to", "values": [value]}]);
    for phone in ["+886912345678", "886912345678", "+886 912 345 678"] {
        let (status, v) = cw.filter(eq("phone_number", phone)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ids(&v), [ana], "{phone}");
        assert_eq!(v["meta"]["count"], 1);
    }
    let (_, v) = cw.filter(eq("email", "BEN@Example.COM")).await;
    assert_eq!(ids(&v), [ben]);
    // Identifier lookup is case-insensitive (uniqueness is not).
    let (_, v) = cw.filter(eq("identifier", "key-abc")).await;
    assert_eq!(ids(&v), [ext]);
    let (_, v) = cw.filter(eq("email", "nobody@example.com")).await;
    assert_eq!(
        v,
        json!({"meta": {"count": 0, "current_page": 1}, "payload": []})
    );

    // OR and AND.
    let (_, v) = cw
        .filter(json!([
            {"attribute_key": "email", "filter_operator": "equal_to", "values": ["ana@example.com"], "query_operator": "OR"},
            {"attribute_key": "email", "filter_operator": "equal_to", "values": ["ben@example.com"]}
        ]))
        .await;
    assert_eq!(v["meta"]["count"], 2);
    let (_, v) = cw
        .filter(json!([
            {"attribute_key": "email", "filter_operator": "contains", "values": ["example"], "query_operator": "and"},
            {"attribute_key": "labels", "filter_operator": "equal_to", "values": ["VIP"]}
        ]))
        .await;
    assert_eq!(ids(&v), [ana]);

    // Errors.
    let (status, v) = cw
        .filter(json!([{"attribute_key": "identifier", "filter_operator": "eq", "values": ["x"]}]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        v["error"],
        "Invalid operator. The allowed operators for identifier are [equal_to,not_equal_to]."
    );
    let (status, v) = cw
        .filter(json!([{"attribute_key": "email", "filter_operator": "equal_to", "values": []}]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        v["error"],
        "Invalid value. The values provided for email are invalid"
    );
    let (status, v) = cw
        .filter(json!([{"attribute_key": "updated_at", "filter_operator": "equal_to", "values": ["x"]}]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("Invalid attribute key - [updated_at].")
    );
    let (status, v) = cw
        .filter(json!([
            {"attribute_key": "email", "filter_operator": "equal_to", "values": ["a"], "query_operator": "XOR"},
            {"attribute_key": "email", "filter_operator": "equal_to", "values": ["b"]}
        ]))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        v["error"],
        r#"Query operator must be either "AND" or "OR"."#
    );
}

// ---------------------------------------------------------------------------------------
// Errors

#[tokio::test]
async fn auth_and_not_found_bodies() {
    let cw = Cw::start(crowd(2)).await;
    let (_, all) = cw.get("/contacts", &[("sort", "created_at")]).await;
    let id = ids(&all)[0];
    let paths = [
        (Method::GET, "/contacts".to_owned()),
        (Method::POST, "/contacts".to_owned()),
        (Method::GET, "/contacts/search?q=a".to_owned()),
        (Method::POST, "/contacts/filter".to_owned()),
        (Method::GET, format!("/contacts/{id}")),
        (Method::PATCH, format!("/contacts/{id}")),
        (Method::DELETE, format!("/contacts/{id}")),
        (Method::GET, format!("/contacts/{id}/labels")),
        (Method::GET, "/labels".to_owned()),
    ];
    for (method, path) in &paths {
        let url = cw.url(path);
        let r = cw.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v,
            json!({"errors": ["You need to sign in or sign up before continuing."]})
        );
        let r = cw
            .http
            .request(method.clone(), &url)
            .header("api_access_token", "wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v, json!({"error": "Invalid Access Token"}));
    }
    // Unknown account, unknown or malformed contact id.
    let not_found = json!({"error": "Resource could not be found"});
    let r = cw
        .http
        .get(format!(
            "{}/api/v1/accounts/999/contacts",
            cw.server.base_url()
        ))
        .header("api_access_token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    assert_eq!(r.json::<Value>().await.unwrap(), not_found);
    for path in [
        "/contacts/99999999",
        "/contacts/abc",
        "/contacts/99999999/labels",
    ] {
        let (status, v) = cw.get(path, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(v, not_found);
    }
    let (status, _) = cw
        .call(
            Method::PUT,
            "/contacts/99999999",
            &[],
            Some(json!({"name": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn validation_errors() {
    let people = vec![person(
        0,
        "Ana",
        "Lopez",
        Some("ana@example.com"),
        Some("+12000000"),
        &[],
    )];
    let cw = Cw::start(people).await;
    cw.create(json!({"name": "Keyed", "identifier": "CRM-1"}))
        .await;

    let check = |v: &Value, message: &str, attrs: &[&str]| {
        assert_eq!(v["message"], message, "{v}");
        assert_eq!(v["attributes"], json!(attrs), "{v}");
    };
    let (status, v) = cw
        .post(
            "/contacts",
            json!({"name": "x", "email": "ANA@Example.COM"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check(&v, "Email has already been taken", &["email"]);
    let (status, v) = cw
        .post(
            "/contacts",
            json!({"name": "x", "phone_number": "+12000000"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check(&v, "Phone number has already been taken", &["phone_number"]);
    let (status, v) = cw
        .post("/contacts", json!({"name": "x", "identifier": "CRM-1"}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check(&v, "Identifier has already been taken", &["identifier"]);
    // Identifier uniqueness is case-sensitive.
    let (status, _) = cw
        .post("/contacts", json!({"name": "x", "identifier": "crm-1"}))
        .await;
    assert_eq!(status, StatusCode::OK);

    for bad in ["+1 555 123", "123456789", "4155550123", "+0123"] {
        let (status, v) = cw
            .post("/contacts", json!({"name": "x", "phone_number": bad}))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
        check(
            &v,
            "Phone number should be in e164 format",
            &["phone_number"],
        );
    }
    // The regex is not anchored at the start.
    for odd in ["abc+15551234567", "+12"] {
        let (status, v) = cw
            .post("/contacts", json!({"name": "x", "phone_number": odd}))
            .await;
        assert_eq!(status, StatusCode::OK, "{odd}: {v}");
    }
    let (status, v) = cw
        .post("/contacts", json!({"name": "n".repeat(3996)}))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check(
        &v,
        "Name is too long (maximum is 255 characters)",
        &["name"],
    );
    let (status, v) = cw
        .post(
            "/contacts",
            json!({"name": "x", "email": " spaced@example.com"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check(&v, "Email Invalid email", &["email"]);
    // Several errors at once are joined.
    let (status, v) = cw
        .post(
            "/contacts",
            json!({"name": "x", "email": "ana@example.com", "phone_number": "+12000000"}),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check(
        &v,
        "Email has already been taken, Phone number has already been taken",
        &["email", "phone_number"],
    );
    // Updates are validated too, and a refused update changes nothing.
    let id = cw
        .create(json!({"name": "Other", "email": "other@example.com"}))
        .await;
    let (status, v) = cw
        .call(
            Method::PUT,
            &format!("/contacts/{id}"),
            &[],
            Some(json!({"name": "Renamed", "email": "Ana@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    check(&v, "Email has already been taken", &["email"]);
    let (_, v) = cw.get(&format!("/contacts/{id}"), &[]).await;
    assert_eq!(v["payload"]["name"], "Other");
    // Keeping its own values is not a conflict.
    let (status, _) = cw
        .call(
            Method::PUT,
            &format!("/contacts/{id}"),
            &[],
            Some(json!({"email": "other@example.com"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

// ---------------------------------------------------------------------------------------
// Create, update, delete, labels, merge

#[tokio::test]
async fn create_update_and_delete() {
    let cw = Cw::start(crowd(1)).await;
    let (status, v) = cw
        .post(
            "/contacts",
            json!({
                "name": "Zoë Müller",
                "email": "Zoe.Muller@Example.COM",
                "phone_number": "+4915123456789",
                "custom_attributes": {"plan": "gold", "seats": 3},
                "additional_attributes": {"city": "Berlin"}
            }),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["payload"]["contact_inbox"],
        json!({"inbox": null, "source_id": null})
    );
    let c = &v["payload"]["contact"];
    let id = c["id"].as_u64().unwrap();
    assert_eq!(c["email"], "zoe.muller@example.com");
    assert_eq!(c["custom_attributes"], json!({"plan": "gold", "seats": 3}));
    assert!(c["created_at"].is_i64());
    assert!(c.get("updated_at").is_none());
    assert!(c.get("last_activity_at").is_none(), "omitted when null");
    assert_eq!(c["contact_inboxes"], json!([]));

    // Only the keys sent change; attribute hashes merge.
    let (status, v) = cw
        .call(
            Method::PATCH,
            &format!("/contacts/{id}"),
            &[],
            Some(json!({"custom_attributes": {"seats": 5, "region": "EU"}, "additional_attributes": {"company_name": "Acme"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let c = &v["payload"];
    assert_eq!(c["name"], "Zoë Müller");
    assert_eq!(c["phone_number"], "+4915123456789");
    assert_eq!(
        c["custom_attributes"],
        json!({"plan": "gold", "seats": 5, "region": "EU"})
    );
    assert_eq!(
        c["additional_attributes"],
        json!({"city": "Berlin", "company_name": "Acme"})
    );

    // PUT behaves the same; an empty email clears it; blocked toggles.
    let (status, v) = cw
        .call(
            Method::PUT,
            &format!("/contacts/{id}"),
            &[],
            Some(json!({"email": "", "blocked": true})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["payload"]["email"], Value::Null);
    assert_eq!(v["payload"]["blocked"], true);
    assert_eq!(v["payload"]["custom_attributes"]["plan"], "gold");

    let (status, v) = cw
        .post(
            &format!("/contacts/{id}/destroy_custom_attributes"),
            json!({"custom_attributes": ["plan"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        v["payload"]["custom_attributes"],
        json!({"seats": 5, "region": "EU"})
    );

    // Into the inbox: the full inbox object and a source id.
    let (status, v) = cw
        .post(
            "/contacts",
            json!({"name": "Inboxed", "email": "inboxed@example.com", "inbox_id": INBOX}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let ci = &v["payload"]["contact_inbox"];
    assert_eq!(ci["inbox"]["id"], INBOX);
    assert_eq!(ci["inbox"]["channel_type"], "Channel::Api");
    let source = ci["source_id"].as_str().unwrap();
    assert_eq!(
        v["payload"]["contact"]["contact_inboxes"][0]["source_id"],
        source
    );
    let (status, _) = cw
        .post("/contacts", json!({"name": "Lost", "inbox_id": 9999}))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Show: contact_inboxes by default, not with include_contact_inboxes=false.
    let inboxed = v["payload"]["contact"]["id"].as_u64().unwrap();
    let (_, v) = cw.get(&format!("/contacts/{inboxed}"), &[]).await;
    assert_eq!(v["payload"]["contact_inboxes"][0]["inbox"]["id"], INBOX);
    let (_, v) = cw
        .get(
            &format!("/contacts/{inboxed}"),
            &[("include_contact_inboxes", "false")],
        )
        .await;
    assert!(v["payload"].get("contact_inboxes").is_none());

    // Delete: 200 with an empty body, then gone.
    let (status, v) = cw
        .call(Method::DELETE, &format!("/contacts/{id}"), &[], None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, Value::Null);
    let (status, _) = cw.get(&format!("/contacts/{id}"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Its email and phone are free again.
    cw.create(json!({"name": "Again", "phone_number": "+4915123456789"}))
        .await;
}

#[tokio::test]
async fn seeded_contacts_look_like_chatwoot_s() {
    let cw = Cw::start(seed::people_for(8, 200, chatwoot::State::SEED).collect()).await;
    let (_, v) = cw
        .get("/contacts", &[("sort", "created_at"), ("page", "1")])
        .await;
    let contacts = v["payload"].as_array().unwrap();
    for c in contacts {
        assert!(c["id"].is_u64());
        assert!(c["created_at"].is_i64());
        assert!(c.get("updated_at").is_none());
        assert!(c["additional_attributes"].is_object());
        assert!(c["custom_attributes"].is_object());
        assert_eq!(c["contact_inboxes"][0]["inbox"]["id"], INBOX);
        if let Some(email) = c["email"].as_str() {
            assert_eq!(email, email.to_lowercase());
        }
        if let Some(t) = c.get("last_activity_at") {
            assert!(t.is_i64());
        }
    }
    // Some have activity, some do not (the key is then absent).
    let (_, v) = cw.get("/contacts", &[("sort", "last_activity_at")]).await;
    assert!(v["payload"][0].get("last_activity_at").is_some());
    let (_, v) = cw
        .get("/contacts", &[("sort", "-last_activity_at"), ("page", "1")])
        .await;
    assert!(
        v["payload"][0].get("last_activity_at").is_some(),
        "NULLS LAST both ways"
    );
    let (_, dump) = (0, cw.server.state().dump());
    assert!(
        dump["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c.get("last_activity_at").is_none())
    );
    let (_, v) = cw.get("/contacts/search", &[("q", "example")]).await;
    assert!(v["meta"]["count"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn contact_labels_replace_the_whole_set() {
    let people = vec![person(0, "A", "A", Some("a@example.com"), None, &["vip"])];
    let cw = Cw::start(people).await;
    let (_, all) = cw.get("/contacts", &[]).await;
    let id = ids(&all)[0];
    let path = format!("/contacts/{id}/labels");

    let (status, v) = cw.get(&path, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"payload": ["vip"]}));
    let (_, v) = cw
        .post(&path, json!({"labels": ["label3", "label4"]}))
        .await;
    assert_eq!(v, json!({"payload": ["label3", "label4"]}));
    let (_, v) = cw.get(&path, &[]).await;
    assert_eq!(v, json!({"payload": ["label3", "label4"]}));
    let (_, v) = cw.post(&path, json!({"labels": ["only"]})).await;
    assert_eq!(v, json!({"payload": ["only"]}));
    // An existing tag keeps its spelling; duplicates and blanks go; commas split.
    let (_, v) = cw
        .post(&path, json!({"labels": ["VIP", "vip", " ", "x, y"]}))
        .await;
    assert_eq!(v, json!({"payload": ["vip", "x", "y"]}));
    // No labels, or an empty list, clears them.
    let (_, v) = cw.post(&path, json!({})).await;
    assert_eq!(v, json!({"payload": []}));
    cw.post(&path, json!({"labels": ["a"]})).await;
    let (_, v) = cw.post(&path, json!({"labels": []})).await;
    assert_eq!(v, json!({"payload": []}));
}

#[tokio::test]
async fn account_labels() {
    let people = vec![
        person(0, "A", "A", Some("a@example.com"), None, &["vip"]),
        person(
            1,
            "B",
            "B",
            Some("b@example.com"),
            None,
            &["newsletter", "vip"],
        ),
    ];
    let cw = Cw::start(people).await;
    let (status, v) = cw.get("/labels", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let titles: Vec<&str> = v["payload"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["vip", "newsletter"]);
    let label = &v["payload"][0];
    for key in ["id", "title", "description", "color", "show_on_sidebar"] {
        assert!(label.get(key).is_some(), "{key}");
    }
    let (status, v) = cw
        .post("/labels", json!({"title": "Gold", "color": "#ffd700"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["title"], "gold");
    assert_eq!(v["color"], "#ffd700");
    let (status, v) = cw.post("/labels", json!({"title": "GOLD"})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["attributes"], json!(["title"]));
    // Contact labels are free-form: they do not create account labels.
    let (_, all) = cw.get("/contacts", &[]).await;
    cw.post(
        &format!("/contacts/{}/labels", ids(&all)[0]),
        json!({"labels": ["adhoc"]}),
    )
    .await;
    let (_, v) = cw.get("/labels", &[]).await;
    assert_eq!(v["payload"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn merge_keeps_the_base_values_and_deletes_the_mergee() {
    let cw = Cw::start(Vec::new()).await;
    let base = cw
        .create(json!({"name": "Base", "email": "base@example.com", "custom_attributes": {"a": 1}}))
        .await;
    let mergee = cw
        .create(json!({"name": "Mergee", "email": "mergee@example.com", "phone_number": "+33612345678", "custom_attributes": {"a": 2, "b": 3}}))
        .await;
    let (status, v) = cw
        .post(
            "/actions/contact_merge",
            json!({"base_contact_id": base, "mergee_contact_id": mergee}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["id"], base);
    assert_eq!(v["name"], "Base");
    assert_eq!(v["email"], "base@example.com");
    assert_eq!(v["phone_number"], "+33612345678");
    assert_eq!(v["custom_attributes"], json!({"a": 1, "b": 3}));
    assert!(v.get("contact_inboxes").is_none());
    let (status, _) = cw.get(&format!("/contacts/{mergee}"), &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = cw
        .post(
            "/actions/contact_merge",
            json!({"base_contact_id": base, "mergee_contact_id": 123_456_789}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

// ---------------------------------------------------------------------------------------
// Scale

#[tokio::test]
async fn a_hundred_thousand_contacts_list_completely_with_sort() {
    let n = 100_000;
    let cw = Cw::start(seed::people(5, n).collect()).await;
    let total = cw.server.state().resolved_count();
    assert_eq!(
        total as u64, n,
        "every seeded person has an email or a phone"
    );
    let mut seen = HashSet::with_capacity(total);
    let mut last_created = i64::MIN;
    let mut page = 1;
    loop {
        let p = page.to_string();
        let (status, v) = cw
            .get(
                "/contacts",
                &[
                    ("sort", "created_at"),
                    ("page", &p),
                    ("include_contact_inboxes", "false"),
                ],
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["meta"]["count"], total);
        let items = v["payload"].as_array().unwrap();
        for c in items {
            assert!(
                seen.insert(c["id"].as_u64().unwrap()),
                "duplicate {}",
                c["id"]
            );
            let created = c["created_at"].as_i64().unwrap();
            assert!(created >= last_created);
            last_created = created;
        }
        if items.len() < PAGE_SIZE {
            break;
        }
        page += 1;
    }
    assert_eq!(seen.len(), total, "missed contacts");
    assert_eq!(page, total.div_ceil(PAGE_SIZE));
}

/// Throughput of list pages (`sort=created_at`, 100,000 contacts, 4 concurrent clients in
/// the same process) over loopback, with and without `contact_inboxes`.
/// Run: `cargo test --release --test sim_chatwoot -- --ignored --nocapture list_throughput`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, not a check; run in release"]
async fn list_throughput() {
    let cw = Arc::new(Cw::start(seed::people(5, 100_000).collect()).await);
    let pages_total = 100_000usize.div_ceil(PAGE_SIZE);
    let per_client = 5_000;
    let clients = 4;
    for inboxes in ["true", "false"] {
        let started = std::time::Instant::now();
        let mut tasks = Vec::new();
        for c in 0..clients {
            let cw = Arc::clone(&cw);
            tasks.push(tokio::spawn(async move {
                for i in 0..per_client {
                    let page = ((c * per_client + i) % pages_total + 1).to_string();
                    let (status, _) = cw
                        .get(
                            "/contacts",
                            &[
                                ("sort", "created_at"),
                                ("page", &page),
                                ("include_contact_inboxes", inboxes),
                            ],
                        )
                        .await;
                    assert_eq!(status, StatusCode::OK);
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let elapsed = started.elapsed();
        let pages = clients * per_client;
        println!(
            "include_contact_inboxes={inboxes}: {pages} pages of {PAGE_SIZE} in {elapsed:?}: {:.0} pages/s",
            pages as f64 / elapsed.as_secs_f64()
        );
    }
}
