//! Simulated MaiAgent, Agentalk and DM Champ servers, exercised over real HTTP on
//! loopback with reqwest. Every answer comes from the simulators' own state; nothing is
//! scripted per test.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers: a panic is how a failed expectation is reported"
)]

use std::future::IntoFuture;
use std::sync::Arc;

use contact_sync::simulator::seed::{self, Person};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

/// Serve a router on an OS-chosen loopback port; returns its base URL.
async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(axum::serve(listener, router).into_future());
    format!("http://{addr}")
}

fn client() -> Client {
    Client::builder().build().unwrap()
}

/// Person `i`: unique names, a mixed-case email, a US phone typed locally and in E.164.
fn person(i: u64) -> Person {
    let (exchange, line) = (i / 10_000 % 1000, i % 10_000);
    Person {
        index: i,
        first_name: format!("Ada{i}"),
        last_name: format!("Lovelace{i}"),
        email: Some(format!("Ada.Lovelace{i}@Example.COM")),
        phone: Some(format!("(415) {exchange:03}-{line:04}")),
        phone_e164: Some(format!("+1415{exchange:03}{line:04}")),
        tags: vec!["Customer".to_owned()],
    }
}

fn people(range: std::ops::Range<u64>) -> impl Iterator<Item = Person> {
    range.map(person)
}

async fn json_of(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    };
    (status, body)
}

// =======================================================================================
// MaiAgent
// =======================================================================================

mod maiagent {
    use super::*;
    use contact_sync::simulator::maiagent::{
        CONVERSATIONS_EVERY, Credentials, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE, State, router,
    };

    const KEY: &str = "ma-secret-key";
    const INBOX: &str = "0b9f2a44-6a1e-4d8e-9a55-3c2f1e0d9b7a";
    const INBOX2: &str = "7d3c1b2a-0f9e-4a8b-8c7d-6e5f4a3b2c1d";

    struct Sim {
        state: Arc<State>,
        base: String,
        http: Client,
    }

    impl Sim {
        async fn start(seeded: u64) -> Sim {
            let state = Arc::new(State::new(Credentials {
                api_key: KEY.to_owned(),
                inbox_id: INBOX.to_owned(),
            }));
            state.seed(people(0..seeded));
            let base = serve(router(state.clone())).await;
            Sim {
                state,
                base,
                http: client(),
            }
        }

        async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
            let resp = self
                .http
                .get(format!("{}{path_and_query}", self.base))
                .header("Authorization", format!("Api-Key {KEY}"))
                .send()
                .await
                .unwrap();
            json_of(resp).await
        }

        async fn get_url(&self, url: &str) -> (StatusCode, Value) {
            let resp = self
                .http
                .get(url)
                .header("Authorization", format!("Api-Key {KEY}"))
                .send()
                .await
                .unwrap();
            json_of(resp).await
        }

        async fn send(
            &self,
            method: reqwest::Method,
            path: &str,
            body: &Value,
        ) -> (StatusCode, Value) {
            let resp = self
                .http
                .request(method, format!("{}{path}", self.base))
                .header("Authorization", format!("Api-Key {KEY}"))
                .json(body)
                .send()
                .await
                .unwrap();
            json_of(resp).await
        }

        async fn create(&self, body: &Value) -> (StatusCode, Value) {
            self.send(reqwest::Method::POST, "/api/contacts/", body)
                .await
        }

        async fn delete(&self, id: &str) -> (StatusCode, Value) {
            let resp = self
                .http
                .delete(format!("{}/api/contacts/{id}/", self.base))
                .header("Authorization", format!("Api-Key {KEY}"))
                .send()
                .await
                .unwrap();
            json_of(resp).await
        }
    }

    fn names(page: &Value) -> Vec<String> {
        page["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn auth_requires_the_api_key_header() {
        let sim = Sim::start(1).await;
        for prefix in ["/api", "/api/v1"] {
            let url = format!("{}{prefix}/contacts/", sim.base);
            let none = sim.http.get(&url).send().await.unwrap();
            assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
            let (_, body) = json_of(none).await;
            assert!(body["detail"].is_string(), "{body}");

            for header in [
                "Api-Key wrong".to_owned(),
                format!("Bearer {KEY}"),
                format!("Token {KEY}"),
            ] {
                let resp = sim
                    .http
                    .get(&url)
                    .header("Authorization", header)
                    .send()
                    .await
                    .unwrap();
                let (status, body) = json_of(resp).await;
                assert_eq!(status, StatusCode::UNAUTHORIZED);
                assert!(body["detail"].is_string());
            }
            let (status, _) = sim.get(&format!("{prefix}/contacts/")).await;
            assert_eq!(status, StatusCode::OK);
        }
        // Single contacts are protected too.
        let url = format!("{}/api/contacts/{INBOX}/", sim.base);
        let resp = sim.http.delete(url).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn pagination_follows_absolute_links_to_a_404_past_the_end() {
        let sim = Sim::start(45).await;
        let host = sim.base.trim_start_matches("http://").to_owned();

        let (status, p1) = sim.get("/api/contacts/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(p1["count"], 45);
        assert_eq!(p1["results"].as_array().unwrap().len(), DEFAULT_PAGE_SIZE);
        assert_eq!(p1["previous"], Value::Null);
        assert_eq!(
            p1["next"],
            json!(format!("http://{host}/api/contacts/?page=2"))
        );

        let (_, p2) = sim.get_url(p1["next"].as_str().unwrap()).await;
        assert_eq!(p2["count"], 45);
        // `previous` of page 2 drops `page` entirely.
        assert_eq!(
            p2["previous"],
            json!(format!("http://{host}/api/contacts/"))
        );
        let (_, p3) = sim.get_url(p2["next"].as_str().unwrap()).await;
        assert_eq!(p3["next"], Value::Null);
        assert_eq!(
            p3["previous"],
            json!(format!("http://{host}/api/contacts/?page=2"))
        );
        assert_eq!(p3["results"].as_array().unwrap().len(), 5);

        // Stable creation order, every contact exactly once.
        let all: Vec<String> = [&p1, &p2, &p3].into_iter().flat_map(names).collect();
        let expected: Vec<String> = (0..45).map(|i| format!("Ada{i} Lovelace{i}")).collect();
        assert_eq!(all, expected);

        for bad in ["4", "0", "-1", "abc", "1.0"] {
            let (status, body) = sim.get(&format!("/api/contacts/?page={bad}")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "page={bad}");
            assert_eq!(body, json!({"detail": "Invalid page."}));
        }
        let (status, last) = sim.get("/api/contacts/?page=last").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(names(&last), names(&p3));
    }

    #[tokio::test]
    async fn links_keep_other_params_and_the_v1_prefix() {
        let sim = Sim::start(30).await;
        let host = sim.base.trim_start_matches("http://").to_owned();
        let (status, p1) = sim.get("/api/v1/contacts/?search=ada&pageSize=10").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(p1["count"], 30);
        assert_eq!(
            p1["next"],
            json!(format!(
                "http://{host}/api/v1/contacts/?page=2&pageSize=10&search=ada"
            ))
        );
        let (_, p3) = sim
            .get_url(&format!(
                "{}/api/v1/contacts/?search=ada&pageSize=10&page=3",
                sim.base
            ))
            .await;
        assert_eq!(
            p3["previous"],
            json!(format!(
                "http://{host}/api/v1/contacts/?page=2&pageSize=10&search=ada"
            ))
        );
        assert_eq!(p3["next"], Value::Null);
    }

    #[tokio::test]
    async fn page_size_accepts_both_spellings_and_clamps_silently() {
        let sim = Sim::start(150).await;
        let len = |v: &Value| v["results"].as_array().unwrap().len();
        let (_, v) = sim.get("/api/contacts/?pageSize=5").await;
        assert_eq!(len(&v), 5);
        let (_, v) = sim.get("/api/contacts/?page_size=7").await;
        assert_eq!(len(&v), 7);
        let (status, v) = sim.get("/api/contacts/?pageSize=1000").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(len(&v), MAX_PAGE_SIZE);
        assert_eq!(v["count"], 150);
        for bad in ["0", "-3", "abc", ""] {
            let (status, v) = sim.get(&format!("/api/contacts/?pageSize={bad}")).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(len(&v), DEFAULT_PAGE_SIZE, "pageSize={bad}");
        }
        // Page 2 at the clamped size holds the remaining 50.
        let (_, v) = sim.get("/api/contacts/?page_size=500&page=2").await;
        assert_eq!(len(&v), 50);
        assert_eq!(v["next"], Value::Null);
    }

    #[tokio::test]
    async fn seeded_contacts_show_the_documented_shape_and_some_numeric_phones() {
        let sim = Sim::start(15).await;
        let (_, page) = sim.get("/api/contacts/?pageSize=15").await;
        let results = page["results"].as_array().unwrap();
        let c1 = &results[1];
        assert_eq!(c1["name"], "Ada1 Lovelace1");
        assert_eq!(c1["phoneNumber"], "(415) 000-0001");
        assert_eq!(c1["email"], "Ada.Lovelace1@Example.COM");
        assert_eq!(
            c1["inboxes"],
            json!([{"id": INBOX, "name": "Simulated inbox"}])
        );
        assert_eq!(c1["mcpCredentials"], json!([]));
        assert_eq!(c1["sourceId"], Value::Null);
        let created = c1["createdAt"].as_str().unwrap();
        assert!(created.len() >= 13 && created.bytes().all(|b| b.is_ascii_digit()));
        assert!(c1["updatedAt"].is_string());
        assert_eq!(c1["id"].as_str().unwrap().len(), 36);
        // Persons 0, 7 and 14 carry the phone as a JSON number (digits only).
        for (i, c) in results.iter().enumerate() {
            if i % 7 == 0 {
                let digits: String = format!("415000{i:04}").trim_start_matches('0').to_owned();
                assert_eq!(
                    c["phoneNumber"],
                    json!(digits.parse::<u64>().unwrap()),
                    "{c}"
                );
            } else {
                assert!(c["phoneNumber"].is_string(), "{c}");
            }
        }
    }

    #[tokio::test]
    async fn create_requires_name_and_inboxes_and_accepts_both_casings() {
        let sim = Sim::start(0).await;
        let (status, body) = sim.create(&json!({"email": "x@example.com"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["name"], json!(["This field is required."]));
        assert_eq!(body["inboxes"], json!(["This field is required."]));

        let (status, body) = sim.create(&json!({"inboxes": [{"id": INBOX}]})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"name": ["This field is required."]}));

        let (status, body) = sim.create(&json!({"name": "Grace"})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"inboxes": ["This field is required."]}));

        let (status, body) = sim
            .create(&json!({"name": "Grace", "inboxes": [{"id": INBOX2}]}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "unknown inbox: {body}");
        assert_eq!(sim.state.contact_count(), 0);

        // camelCase, phone as a JSON number → stored and shown as a string.
        let (status, a) = sim
            .create(&json!({"name": "Grace Hopper", "inboxes": [{"id": INBOX}],
                "phoneNumber": 912_345_678, "sourceId": "crm-1", "queryMetadata": {"tier": "gold"}}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{a}");
        assert_eq!(a["phoneNumber"], "912345678");
        assert_eq!(a["sourceId"], "crm-1");
        assert_eq!(a["queryMetadata"], json!({"tier": "gold"}));
        assert_eq!(a["createdAt"], a["updatedAt"]);

        // snake_case input, camelCase output.
        let (status, b) = sim
            .create(&json!({"name": "Alan", "inboxes": [{"id": INBOX}],
                "phone_number": "+886912345678", "source_id": "crm-2", "email": "alan@example.org"}))
            .await;
        assert_eq!(status, StatusCode::CREATED, "{b}");
        assert_eq!(b["phoneNumber"], "+886912345678");
        assert_eq!(b["sourceId"], "crm-2");
        assert_eq!(b["email"], "alan@example.org");

        let (status, fetched) = sim
            .get(&format!("/api/contacts/{}/", a["id"].as_str().unwrap()))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(fetched, a);
        assert_eq!(sim.state.contact_count(), 2);

        let (status, body) = sim
            .create(&json!({"name": "Bad", "inboxes": [{"id": INBOX}], "email": "not an email"}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["email"].is_array());
    }

    #[tokio::test]
    async fn patch_is_partial_put_is_full_and_updated_at_moves() {
        let sim = Sim::start(0).await;
        let (_, c) = sim
            .create(&json!({"name": "Grace", "inboxes": [{"id": INBOX}], "email": "g@example.com"}))
            .await;
        let id = c["id"].as_str().unwrap().to_owned();
        let path = format!("/api/contacts/{id}/");

        let (status, p) = sim
            .send(
                reqwest::Method::PATCH,
                &path,
                &json!({"name": "Grace Hopper"}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(p["name"], "Grace Hopper");
        assert_eq!(p["email"], "g@example.com");
        let before: u64 = c["updatedAt"].as_str().unwrap().parse().unwrap();
        let after: u64 = p["updatedAt"].as_str().unwrap().parse().unwrap();
        assert!(after > before);
        assert_eq!(p["createdAt"], c["createdAt"]);

        let (status, body) = sim
            .send(
                reqwest::Method::PUT,
                &path,
                &json!({"inboxes": [{"id": INBOX}], "email": "x@example.com"}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"name": ["This field is required."]}));

        let (status, body) = sim
            .send(reqwest::Method::PATCH, &path, &json!({"name": ""}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, json!({"name": ["This field may not be blank."]}));

        let (status, put) = sim
            .send(reqwest::Method::PUT, &path,
                &json!({"name": "G. Hopper", "inboxes": [{"id": INBOX}], "phoneNumber": "+15550001"}))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(put["name"], "G. Hopper");
        assert_eq!(put["phoneNumber"], "+15550001");
        let (_, fetched) = sim.get(&path).await;
        assert_eq!(fetched["name"], "G. Hopper");

        let (status, body) = sim
            .send(
                reqwest::Method::PATCH,
                &format!("/api/contacts/{INBOX2}/"),
                &json!({"name": "x"}),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"detail": "Not found."}));
    }

    #[tokio::test]
    async fn delete_is_204_and_refused_while_conversations_exist() {
        let sim = Sim::start(CONVERSATIONS_EVERY).await;
        let dump = sim.state.dump();
        let blocked = dump["withConversations"].as_array().unwrap();
        assert_eq!(
            blocked.len(),
            1,
            "person {} has conversations",
            CONVERSATIONS_EVERY - 1
        );
        let blocked = blocked[0].as_str().unwrap().to_owned();

        let (status, body) = sim.delete(&blocked).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["detail"].is_string());
        assert_eq!(sim.state.contact_count(), CONVERSATIONS_EVERY as usize);

        assert!(sim.state.set_has_conversations(&blocked, false));
        let (status, body) = sim.delete(&blocked).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        assert_eq!(body, Value::Null, "204 has no body");
        let (status, body) = sim.get(&format!("/api/contacts/{blocked}/")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, json!({"detail": "Not found."}));
        let (status, _) = sim.delete(&blocked).await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // A flag set later blocks too; the list no longer holds the deleted contact.
        let (_, page) = sim.get("/api/contacts/?pageSize=100").await;
        assert_eq!(page["count"], CONVERSATIONS_EVERY - 1);
        let other = page["results"][0]["id"].as_str().unwrap().to_owned();
        assert!(sim.state.set_has_conversations(&other, true));
        assert_eq!(sim.delete(&other).await.0, StatusCode::BAD_REQUEST);
        assert!(
            !sim.state.set_has_conversations(&blocked, true),
            "deleted contact"
        );
    }

    #[tokio::test]
    async fn source_id_is_unique_per_inbox() {
        let sim = Sim::start(0).await;
        assert!(sim.state.add_inbox(INBOX2, "Second"));
        let dup = json!({"sourceId": ["contact with this source id already exists."]});

        let (status, a) = sim
            .create(&json!({"name": "A", "inboxes": [{"id": INBOX}], "sourceId": "ext-1"}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let (status, body) = sim
            .create(&json!({"name": "B", "inboxes": [{"id": INBOX}], "sourceId": "ext-1"}))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, dup);
        let (status, c) = sim
            .create(&json!({"name": "C", "inboxes": [{"id": INBOX2}], "sourceId": "ext-1"}))
            .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "another inbox may reuse it: {c}"
        );
        assert_eq!(c["inboxes"], json!([{"id": INBOX2, "name": "Second"}]));

        let c_path = format!("/api/contacts/{}/", c["id"].as_str().unwrap());
        let (status, body) = sim
            .send(
                reqwest::Method::PATCH,
                &c_path,
                &json!({"inboxes": [{"id": INBOX}]}),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body, dup);

        let a_path = format!("/api/contacts/{}/", a["id"].as_str().unwrap());
        let (status, _) = sim
            .send(
                reqwest::Method::PATCH,
                &a_path,
                &json!({"sourceId": "ext-1", "name": "A2"}),
            )
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "a contact does not collide with itself"
        );

        // Freed by a delete.
        assert_eq!(
            sim.delete(a["id"].as_str().unwrap()).await.0,
            StatusCode::NO_CONTENT
        );
        let (status, _) = sim
            .send(
                reqwest::Method::PATCH,
                &c_path,
                &json!({"inboxes": [{"id": INBOX}, {"id": INBOX2}]}),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn query_search_and_inbox_filters() {
        let sim = Sim::start(30).await;
        assert!(sim.state.add_inbox(INBOX2, "Second"));
        let (_, crm) = sim
            .create(
                &json!({"name": "Zed", "inboxes": [{"id": INBOX2}], "sourceId": "CRM-4242",
                "email": "zed@corp.example"}),
            )
            .await;
        let zed_id = crm["id"].as_str().unwrap().to_owned();

        // query: name substring, case-insensitive: Ada1, Ada10..Ada19.
        let (_, v) = sim.get("/api/contacts/?query=ADA1&pageSize=100").await;
        assert_eq!(v["count"], 11);
        // query: source id and contact id.
        let (_, v) = sim.get("/api/contacts/?query=crm-42").await;
        assert_eq!(names(&v), ["Zed"]);
        let (_, v) = sim
            .get(&format!("/api/contacts/?query={}", &zed_id[..13]))
            .await;
        assert_eq!(names(&v), ["Zed"]);
        // query does not look at email.
        let (_, v) = sim.get("/api/contacts/?query=corp.example").await;
        assert_eq!(v["count"], 0);

        // search: every term somewhere in name/email/phone/sourceId.
        let (_, v) = sim.get("/api/contacts/?search=corp.example").await;
        assert_eq!(names(&v), ["Zed"]);
        let (_, v) = sim
            .get("/api/contacts/?search=lovelace2,example.com&pageSize=100")
            .await;
        assert_eq!(v["count"], 11);
        let (_, v) = sim.get("/api/contacts/?search=000-0003").await;
        assert_eq!(names(&v), ["Ada3 Lovelace3"]);
        let (_, v) = sim.get("/api/contacts/?search=ada3+nobody").await;
        assert_eq!(v["count"], 0);

        // inboxes.
        let (_, v) = sim.get(&format!("/api/contacts/?inboxes={INBOX2}")).await;
        assert_eq!(names(&v), ["Zed"]);
        let (_, v) = sim
            .get(&format!("/api/contacts/?inboxes={INBOX}&pageSize=100"))
            .await;
        assert_eq!(v["count"], 30);
        let (_, v) = sim
            .get(&format!(
                "/api/contacts/?inboxes={INBOX},{INBOX2}&pageSize=100"
            ))
            .await;
        assert_eq!(v["count"], 31);
        let (status, body) = sim.get("/api/contacts/?inboxes=nope").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["inboxes"].is_array());

        // Filters and pagination together: count is the filtered total, past the end is 404.
        let (_, v) = sim.get("/api/contacts/?query=ada1&pageSize=5&page=3").await;
        assert_eq!(v["results"].as_array().unwrap().len(), 1);
        assert_eq!(v["next"], Value::Null);
        let (status, _) = sim.get("/api/contacts/?query=ada1&pageSize=5&page=4").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // No match: one empty page, not a 404.
        let (status, v) = sim.get("/api/contacts/?query=nobody").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["results"], json!([]));
    }

    #[tokio::test]
    async fn hundred_thousand_contacts_stay_responsive() {
        let sim = Sim::start(100_000).await;
        assert_eq!(sim.state.contact_count(), 100_000);
        let (status, last) = sim.get("/api/contacts/?page=last&pageSize=100").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(last["count"], 100_000);
        assert_eq!(names(&last).last().unwrap(), "Ada99999 Lovelace99999");
        let id = last["results"][0]["id"].as_str().unwrap();
        let (status, one) = sim.get(&format!("/api/contacts/{id}/")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(one["name"], "Ada99900 Lovelace99900");
        let (_, found) = sim.get("/api/contacts/?query=ada77777").await;
        assert_eq!(names(&found), ["Ada77777 Lovelace77777"]);
    }
}

// =======================================================================================
// Agentalk
// =======================================================================================

mod agentalk {
    use super::*;
    use contact_sync::simulator::agentalk::{Credentials, DEFAULT_LIMIT, State, router};

    const ORG: &str = "15c94c3c-1873-4a09-bfbb-03357c29ea50";
    const SECRET: &str = "abc123xyz";

    struct Sim {
        state: Arc<State>,
        base: String,
        http: Client,
    }

    impl Sim {
        async fn start(seeded: impl IntoIterator<Item = Person>) -> Sim {
            let state = Arc::new(State::new(Credentials {
                org_id: ORG.to_owned(),
                secret: SECRET.to_owned(),
            }));
            state.seed(seeded);
            let base = serve(router(state.clone())).await;
            Sim {
                state,
                base,
                http: client(),
            }
        }

        fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
            self.http
                .request(method, format!("{}{path}", self.base))
                .bearer_auth(format!("{ORG}.{SECRET}"))
        }

        async fn call(
            &self,
            method: reqwest::Method,
            path: &str,
            body: Option<&Value>,
        ) -> (StatusCode, Value) {
            let mut req = self.req(method, path);
            if let Some(b) = body {
                req = req.json(b);
            }
            json_of(req.send().await.unwrap()).await
        }

        async fn upsert(&self, body: &Value) -> (StatusCode, Value) {
            self.call(reqwest::Method::POST, "/api/contacts", Some(body))
                .await
        }

        async fn search(&self, query: &str) -> (StatusCode, Value) {
            self.call(
                reqwest::Method::GET,
                &format!("/api/contacts/search{query}"),
                None,
            )
            .await
        }
    }

    fn tag_names(contact: &Value) -> Vec<String> {
        contact["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn auth_accepts_only_the_org_token_and_refuses_jwts() {
        let sim = Sim::start([]).await;
        let url = format!("{}/api/contacts/search?name=x", sim.base);
        let send = |auth: Option<String>| {
            let mut req = sim.http.get(&url);
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            async move { json_of(req.send().await.unwrap()).await }
        };
        let (status, body) = send(None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["detail"].is_string());

        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.c2lnbmF0dXJl";
        let (status, body) = send(Some(format!("Bearer {jwt}"))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body["detail"].as_str().unwrap().contains("JWT"), "{body}");

        for bad in [
            format!("Bearer {ORG}.wrong"),
            format!("Bearer {}.{SECRET}", ORG.to_uppercase()),
            format!("Bearer {ORG}"),
            format!("Api-Key {ORG}.{SECRET}"),
        ] {
            let (status, _) = send(Some(bad.clone())).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}");
        }
        let (status, body) = send(Some(format!("Bearer {ORG}.{SECRET}"))).await;
        assert_eq!(status, StatusCode::OK, "{body}");

        let resp = sim
            .req(reqwest::Method::GET, "/api/contacts/search?name=x")
            .header("X-Organization-ID", ORG)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = sim
            .req(reqwest::Method::GET, "/api/contacts/search?name=x")
            .header("X-Organization-ID", "00000000-0000-4000-8000-000000000000")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn upsert_creates_then_updates_by_normalised_phone_with_additive_tags() {
        let sim = Sim::start([]).await;
        let (status, first) = sim
            .upsert(
                &json!({"phone": "+1 (415) 555-0123", "firstName": "Ada", "lastName": "Lovelace",
                "email": "ada@example.com", "tags": ["VIP"], "fields": {"city": "London"}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{first}");
        assert_eq!(first["isNew"], true);
        let c = &first["contact"];
        assert_eq!(c["phone"], "+14155550123");
        assert_eq!(c["firstName"], "Ada");
        assert_eq!(c["email"], "ada@example.com");
        assert_eq!(tag_names(c), ["VIP"]);
        assert!(c["tags"][0]["id"].as_str().unwrap().len() == 36);
        assert_eq!(c["fields"], json!({"city": "London"}));
        assert!(c["createdAt"].is_string());

        let (status, second) = sim
            .upsert(&json!({"phone": "+14155550123", "firstName": "Augusta",
                "tags": ["Gold", "vip"], "fields": {"plan": "pro"}}))
            .await;
        assert_eq!(status, StatusCode::OK, "{second}");
        assert_eq!(second["isNew"], false);
        let c2 = &second["contact"];
        assert_eq!(c2["id"], c["id"]);
        assert_eq!(c2["firstName"], "Augusta");
        assert_eq!(c2["lastName"], "Lovelace", "absent fields are kept");
        assert_eq!(c2["email"], "ada@example.com");
        assert_eq!(
            tag_names(c2),
            ["VIP", "Gold"],
            "tags add, case-insensitively"
        );
        assert_eq!(c2["fields"], json!({"city": "London", "plan": "pro"}));
        assert_eq!(sim.state.contact_count(), 1);

        for bad in [
            json!({"firstName": "x"}),
            json!({"phone": "(415) 555-0123"}),
            json!({"phone": "+1 415 CALL NOW"}),
            json!({"phone": 14_155_550_123_u64}),
        ] {
            let (status, body) = sim.upsert(&bad).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(body["phone"].is_array(), "{body}");
        }
        assert_eq!(sim.state.contact_count(), 1);
    }

    #[tokio::test]
    async fn search_needs_phone_or_name_and_pages_with_limit_offset() {
        let mut crowd: Vec<Person> = people(0..120).collect();
        for p in &mut crowd {
            p.last_name = "Smith".to_owned();
        }
        let sim = Sim::start(crowd).await;
        assert_eq!(sim.state.contact_count(), 120);

        let (status, body) = sim.search("").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["detail"].is_string());
        let (status, _) = sim.search("?limit=5").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        // Phone: exact on normalised digits; `+` must arrive as %2B or be left out.
        let (status, v) = sim.search("?phone=%2B14150000042").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["count"], 1);
        assert_eq!(v["results"][0]["firstName"], "Ada42");
        assert_eq!(v["results"][0]["phone"], "+14150000042");
        let (_, v) = sim.search("?phone=14150000042").await;
        assert_eq!(v["count"], 1);
        let (_, v) = sim.search("?phone=%2B1415000004").await;
        assert_eq!(v["count"], 0, "no partial phone match");

        // Name: substring of first or last name, case-insensitive.
        let (_, v) = sim.search("?name=SMI").await;
        assert_eq!(v["count"], 120);
        assert_eq!(v["limit"], DEFAULT_LIMIT);
        assert_eq!(v["offset"], 0);
        assert_eq!(v["results"].as_array().unwrap().len(), DEFAULT_LIMIT);
        let (_, v) = sim.search("?name=smith&limit=30&offset=100").await;
        assert_eq!(v["limit"], 30);
        assert_eq!(v["offset"], 100);
        let got: Vec<&str> = v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["firstName"].as_str().unwrap())
            .collect();
        let want: Vec<String> = (100..120).map(|i| format!("Ada{i}")).collect();
        assert_eq!(got, want);
        let (_, v) = sim.search("?name=ada11").await;
        assert_eq!(v["count"], 11, "Ada11, Ada110..Ada119");
        let (_, v) = sim.search("?name=ada4&phone=%2B14150000042").await;
        assert_eq!(v["count"], 1, "both must match");
        let (_, v) = sim.search("?name=zzz&phone=%2B14150000042").await;
        assert_eq!(v["count"], 0);
    }

    #[tokio::test]
    async fn tags_add_and_remove_by_id_or_name() {
        let sim = Sim::start([person(1)]).await;
        let (_, found) = sim.search("?phone=%2B14150000001").await;
        let contact = &found["results"][0];
        assert_eq!(tag_names(contact), ["Customer"]);
        let id = contact["id"].as_str().unwrap().to_owned();
        let tags_path = format!("/api/contacts/{id}/tags");

        let (status, v) = sim
            .call(
                reqwest::Method::POST,
                &tags_path,
                Some(&json!({"tags": ["VIP", " vip ", "Gold"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(tag_names(&v["contact"]), ["Customer", "VIP", "Gold"]);

        let (status, v) = sim
            .call(reqwest::Method::DELETE, &format!("{tags_path}/gOLD"), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(tag_names(&v["contact"]), ["Customer", "VIP"]);

        let vip_id = v["contact"]["tags"][1]["id"].as_str().unwrap().to_owned();
        let (status, v) = sim
            .call(
                reqwest::Method::DELETE,
                &format!("{tags_path}/{vip_id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(tag_names(&v["contact"]), ["Customer"]);

        let (status, _) = sim
            .call(
                reqwest::Method::DELETE,
                &format!("{tags_path}/never-seen"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = sim
            .call(
                reqwest::Method::POST,
                &tags_path,
                Some(&json!({"labels": ["x"]})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["tags"].is_array());
        let (status, _) = sim
            .call(
                reqwest::Method::POST,
                "/api/contacts/00000000-0000-4000-8000-000000000000/tags",
                Some(&json!({"tags": ["x"]})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The search result shows the tags as they now are.
        let (_, found) = sim.search("?phone=%2B14150000001").await;
        assert_eq!(tag_names(&found["results"][0]), ["Customer"]);
    }

    #[tokio::test]
    async fn fields_patch_merges_and_clear_removes() {
        let sim = Sim::start([]).await;
        let (_, v) = sim
            .upsert(&json!({"phone": "+442079460958", "firstName": "Tim"}))
            .await;
        let id = v["contact"]["id"].as_str().unwrap().to_owned();
        let fields_path = format!("/api/contacts/{id}/fields");

        let (status, v) = sim
            .call(reqwest::Method::PATCH, &fields_path,
                Some(&json!({"fields": {"city": "Paris", "email": "tim@example.com", "lastName": "Berners-Lee"}})))
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        let c = &v["contact"];
        assert_eq!(c["fields"], json!({"city": "Paris"}));
        assert_eq!(c["email"], "tim@example.com");
        assert_eq!(c["lastName"], "Berners-Lee");
        assert_eq!(c["firstName"], "Tim");

        let (_, v) = sim
            .call(
                reqwest::Method::PATCH,
                &fields_path,
                Some(&json!({"fields": {"plan": "pro"}})),
            )
            .await;
        assert_eq!(
            v["contact"]["fields"],
            json!({"city": "Paris", "plan": "pro"})
        );

        let (status, body) = sim
            .call(
                reqwest::Method::PATCH,
                &fields_path,
                Some(&json!({"city": "Rome"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body["fields"].is_array());

        let (status, v) = sim
            .call(
                reqwest::Method::DELETE,
                &format!("{fields_path}/city"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["contact"]["fields"], json!({"plan": "pro"}));
        let (status, v) = sim
            .call(
                reqwest::Method::DELETE,
                &format!("{fields_path}/email"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["contact"]["email"], Value::Null);
        let (status, _) = sim
            .call(
                reqwest::Method::DELETE,
                &format!("{fields_path}/phone"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);

        let (_, found) = sim.search("?phone=%2B442079460958").await;
        let c = &found["results"][0];
        assert_eq!(c["fields"], json!({"plan": "pro"}));
        assert_eq!(c["email"], Value::Null);
    }

    #[tokio::test]
    async fn delete_answers_200_and_there_is_no_list_or_get_by_id() {
        let sim = Sim::start([person(5)]).await;
        let (_, found) = sim.search("?phone=%2B14150000005").await;
        let id = found["results"][0]["id"].as_str().unwrap().to_owned();

        let (status, _) = sim
            .call(reqwest::Method::GET, &format!("/api/contacts/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        let (status, _) = sim.call(reqwest::Method::GET, "/api/contacts", None).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

        let (status, v) = sim
            .call(
                reqwest::Method::DELETE,
                &format!("/api/contacts/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v, json!({"message": "Contact deleted"}));
        assert_eq!(sim.state.contact_count(), 0);
        let (_, found) = sim.search("?phone=%2B14150000005").await;
        assert_eq!(found["count"], 0);
        let (status, _) = sim
            .call(
                reqwest::Method::DELETE,
                &format!("/api/contacts/{id}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // The phone is free again: a new upsert creates a new contact.
        let (status, v) = sim.upsert(&json!({"phone": "+14150000005"})).await;
        assert_eq!(status, StatusCode::CREATED);
        assert_ne!(v["contact"]["id"], json!(id));
    }

    #[tokio::test]
    async fn dump_shows_seeded_people_as_agentalk_holds_them() {
        let mut no_phone = person(9);
        no_phone.phone = None;
        no_phone.phone_e164 = None;
        let sim = Sim::start([person(1), no_phone]).await;
        let dump = sim.state.dump();
        assert_eq!(dump["organizationId"], ORG);
        let contacts = dump["contacts"].as_array().unwrap();
        assert_eq!(contacts.len(), 1, "no phone, no Agentalk contact");
        let shown = seed::WaForm::of(1)
            .map_or_else(|| "+14150000001".to_owned(), |wa| wa.render(14_150_000_001));
        assert_eq!(
            contacts[0]["phone"], shown,
            "typed phone lacked +: E.164 used (or the WhatsApp id it came in with)"
        );
        assert_eq!(contacts[0]["email"], "Ada.Lovelace1@Example.COM");
        assert_eq!(dump["tags"][0]["name"], "Customer");
    }

    #[tokio::test]
    async fn some_seeded_phones_are_whatsapp_ids_and_are_found_by_phone() {
        let sim = Sim::start(people(0..60)).await;
        let dump = sim.state.dump();
        let phones: Vec<String> = dump["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["phone"].as_str().unwrap().to_owned())
            .collect();
        let jid = phones
            .iter()
            .find(|p| p.ends_with("@s.whatsapp.net"))
            .expect("a JID");
        assert!(phones.iter().any(|p| p.ends_with("@c.us")), "{phones:?}");
        assert!(phones.iter().filter(|p| p.starts_with('+')).count() > 30);
        // Deterministic: the same people, the same forms.
        let again = Sim::start(people(0..60)).await.state.dump();
        assert_eq!(dump["contacts"].as_array().unwrap().len(), 60);
        for (a, b) in dump["contacts"]
            .as_array()
            .unwrap()
            .iter()
            .zip(again["contacts"].as_array().unwrap())
        {
            assert_eq!(a["phone"], b["phone"]);
        }
        // A lookup by the number finds the contact shown with its WhatsApp id.
        let digits = jid.trim_end_matches("@s.whatsapp.net");
        let (status, v) = sim.search(&format!("?phone=%2B{digits}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["results"][0]["phone"], jid.as_str());
    }

    #[tokio::test]
    async fn hundred_thousand_contacts_stay_responsive() {
        let sim = Sim::start(people(0..100_000)).await;
        assert_eq!(sim.state.contact_count(), 100_000);
        let (status, v) = sim.search("?phone=%2B14150099999").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["count"], 1);
        assert_eq!(v["results"][0]["lastName"], "Lovelace99999");
        let (_, v) = sim.search("?name=lovelace7777&limit=5").await;
        assert_eq!(v["count"], 11);
    }
}

// =======================================================================================
// DM Champ
// =======================================================================================

mod dmchamp {
    use super::*;
    use contact_sync::simulator::dmchamp::{Credentials, DuplicateMode, State, router};

    const KEY: &str = "dm-key-123";

    struct Sim {
        state: Arc<State>,
        base: String,
        http: Client,
    }

    impl Sim {
        async fn start(seeded: impl IntoIterator<Item = Person>) -> Sim {
            let state = Arc::new(State::new(Credentials {
                api_key: KEY.to_owned(),
            }));
            state.seed(seeded);
            let base = serve(router(state.clone())).await;
            Sim {
                state,
                base,
                http: client(),
            }
        }

        /// `path_and_query` is sent as written (so `%2B` and raw `+` reach the server
        /// untouched); `apiKey` is appended.
        fn url(&self, path_and_query: &str) -> String {
            let sep = if path_and_query.contains('?') {
                '&'
            } else {
                '?'
            };
            format!("{}{path_and_query}{sep}apiKey={KEY}", self.base)
        }

        async fn call(
            &self,
            method: reqwest::Method,
            path_and_query: &str,
            body: Option<&Value>,
        ) -> (StatusCode, Value) {
            let mut req = self.http.request(method, self.url(path_and_query));
            if let Some(b) = body {
                req = req.json(b);
            }
            json_of(req.send().await.unwrap()).await
        }

        async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
            self.call(reqwest::Method::GET, path_and_query, None).await
        }

        async fn lookup_id(&self, query: &str) -> String {
            let (status, v) = self.get(&format!("/v1/contacts?{query}")).await;
            assert_eq!(status, StatusCode::OK, "{query}: {v}");
            v["contactId"].as_str().unwrap().to_owned()
        }

        fn contact_in_dump(&self, id: &str) -> Value {
            let dump = self.state.dump();
            dump["contacts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["contactId"] == id)
                .cloned()
                .unwrap()
        }
    }

    #[tokio::test]
    async fn auth_is_the_api_key_query_parameter_with_a_string_401() {
        let sim = Sim::start([person(1)]).await;
        for url in [
            format!("{}/v1/tags", sim.base),
            format!("{}/v1/tags?apiKey=wrong", sim.base),
            format!("{}/v1/contacts?phoneNumber=%2B14150000001", sim.base),
        ] {
            let (status, body) = json_of(sim.http.get(&url).send().await.unwrap()).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{url}");
            assert!(body.is_string(), "401 body is a bare JSON string: {body}");
        }
        let resp = sim
            .http
            .get(format!("{}/v1/tags", sim.base))
            .header("Authorization", format!("Bearer {KEY}"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::UNAUTHORIZED,
            "header auth is not a thing"
        );
        let (status, _) = sim.get("/v1/tags").await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn lookup_returns_only_the_id_by_encoded_phone_or_any_case_email() {
        let sim = Sim::start(people(0..10)).await;
        let (status, v) = sim.get("/v1/contacts?phoneNumber=%2B14150000007").await;
        assert_eq!(status, StatusCode::OK);
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 2, "only success and contactId: {v}");
        assert_eq!(v["success"], true);
        let id = v["contactId"].as_str().unwrap().to_owned();

        // A raw `+` decodes to a space: no match.
        let (status, v) = sim.get("/v1/contacts?phoneNumber=+14150000007").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["success"], false);
        assert!(v["message"].is_string());
        // Not E.164 as stored: no match either.
        let (status, _) = sim.get("/v1/contacts?phoneNumber=14150000007").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        assert_eq!(sim.lookup_id("email=ada.lovelace7%40example.com").await, id);
        assert_eq!(sim.lookup_id("email=ADA.LOVELACE7@EXAMPLE.COM").await, id);

        let (status, v) = sim.get("/v1/contacts?email=nobody%40example.com").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["success"], false);
        let (status, _) = sim.get("/v1/contacts").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = sim.get("/v1/contacts?phoneNumber=").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn create_defaults_names_and_handles_duplicates_in_both_modes() {
        let sim = Sim::start([]).await;
        let (status, v) = sim
            .call(
                reqwest::Method::POST,
                "/v1/contacts",
                Some(&json!({"phoneNumber": "+31612345678",
                "email": "Jan@Example.nl", "externalId": "ext-9"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["success"], true);
        let id = v["data"]["contactId"].as_str().unwrap().to_owned();
        assert_eq!(sim.lookup_id("phoneNumber=%2B31612345678").await, id);
        assert_eq!(sim.lookup_id("email=jan%40example.nl").await, id);

        let stored = sim.contact_in_dump(&id);
        assert_eq!(stored["firstName"], "Unknown");
        assert_eq!(stored["lastName"], "Unknown");
        assert_eq!(stored["is_bot_active"], true);
        assert_eq!(stored["do_not_disturb"], false);
        assert_eq!(stored["externalId"], "ext-9");
        assert_eq!(stored["isChatWindowOpen"], false);

        for bad in [
            json!({"firstName": "x"}),
            json!({"phoneNumber": ""}),
            json!({"phoneNumber": "0612345678"}),
            json!({"phoneNumber": "+31 6 1234 5678"}),
        ] {
            let (status, body) = sim
                .call(reqwest::Method::POST, "/v1/contacts", Some(&bad))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(body["error"].is_string(), "{body}");
        }

        let dup = json!({"phoneNumber": "+31612345678", "firstName": "Someone Else"});
        let (status, v) = sim
            .call(reqwest::Method::POST, "/v1/contacts", Some(&dup))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["success"], true);
        assert_eq!(v["data"]["message"], "Contact already exists");
        assert_eq!(v["data"]["contactId"], json!(id));
        assert_eq!(
            sim.contact_in_dump(&id)["firstName"],
            "Unknown",
            "nothing changed"
        );

        sim.state.set_duplicate_mode(DuplicateMode::Conflict);
        let (status, v) = sim
            .call(reqwest::Method::POST, "/v1/contacts", Some(&dup))
            .await;
        assert_eq!(status, StatusCode::CONFLICT);
        assert_eq!(
            v,
            json!({"success": false, "message": "Contact already exists"})
        );
        assert_eq!(sim.state.contact_count(), 1);
    }

    #[tokio::test]
    async fn put_updates_names_email_flags_but_never_the_phone() {
        let sim = Sim::start([person(3)]).await;
        let id = sim.lookup_id("phoneNumber=%2B14150000003").await;
        let (status, v) = sim
            .call(
                reqwest::Method::PUT,
                &format!("/v1/contacts/{id}"),
                Some(&json!({
                "firstName": "Grace", "lastName": "Hopper", "email": "grace@navy.example",
                "do_not_disturb": true, "is_bot_active": false, "phoneNumber": "+19999999999"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            v,
            json!({"success": true, "message": "Contact updated successfully"})
        );

        let stored = sim.contact_in_dump(&id);
        assert_eq!(stored["phoneNumber"], "+14150000003");
        assert_eq!(stored["firstName"], "Grace");
        assert_eq!(stored["lastName"], "Hopper");
        assert_eq!(stored["email"], "grace@navy.example");
        assert_eq!(stored["do_not_disturb"], true);
        assert_eq!(stored["is_bot_active"], false);

        assert_eq!(sim.lookup_id("phoneNumber=%2B14150000003").await, id);
        let (status, _) = sim.get("/v1/contacts?phoneNumber=%2B19999999999").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(sim.lookup_id("email=Grace%40Navy.example").await, id);
        let (status, _) = sim
            .get("/v1/contacts?email=ada.lovelace3%40example.com")
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "the old email no longer finds it"
        );

        let (status, v) = sim
            .call(
                reqwest::Method::PUT,
                "/v1/contacts/0123456789abcdef01234567",
                Some(&json!({"firstName": "x"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["success"], false);
        let (status, _) = sim
            .call(
                reqwest::Method::PUT,
                &format!("/v1/contacts/{id}"),
                Some(&json!({"do_not_disturb": "yes"})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // No delete in the API.
        let (status, _) = sim
            .call(reqwest::Method::DELETE, &format!("/v1/contacts/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn tags_are_read_per_contact_and_added_by_digits_phone_or_email() {
        let sim = Sim::start(people(0..3)).await;
        let id = sim.lookup_id("phoneNumber=%2B14150000002").await;
        let (status, v) = sim.get(&format!("/v1/contacts/tags/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v, json!([{"name": "Customer", "description": ""}]));

        let (status, v) = sim
            .call(
                reqwest::Method::POST,
                "/v1/tags?tag=VIP&phoneNumber=14150000002",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{v}");
        assert_eq!(v["success"], true);
        let (status, _) = sim
            .call(
                reqwest::Method::POST,
                "/v1/tags?tag=Gold&email=ADA.LOVELACE2%40example.com",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        // Adding an existing tag again (any case) does not duplicate it.
        let (status, _) = sim
            .call(
                reqwest::Method::POST,
                "/v1/tags?tag=vip&phoneNumber=14150000002",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);

        let (_, v) = sim.get(&format!("/v1/contacts/tags/{id}")).await;
        let names: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Customer", "VIP", "Gold"]);
        let (_, all) = sim.get("/v1/tags").await;
        let all: Vec<&str> = all
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(all, ["Customer", "VIP", "Gold"]);

        // The tag endpoint wants digits without `+`.
        let (status, v) = sim
            .call(
                reqwest::Method::POST,
                "/v1/tags?tag=X&phoneNumber=%2B14150000002",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["success"], false);
        let (status, _) = sim
            .call(
                reqwest::Method::POST,
                "/v1/tags?tag=X&phoneNumber=19998887777",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = sim
            .call(
                reqwest::Method::POST,
                "/v1/tags?phoneNumber=14150000002",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = sim
            .call(reqwest::Method::POST, "/v1/tags?tag=X", None)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = sim.get("/v1/contacts/tags/0123456789abcdef01234567").await;
        assert_eq!(status, StatusCode::NOT_FOUND);

        // Nothing created by the failed calls.
        let (_, all) = sim.get("/v1/tags").await;
        assert_eq!(all.as_array().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn lists_add_and_remove_with_a_json_body_on_delete() {
        let sim = Sim::start([person(4)]).await;
        assert!(sim.state.add_list("list-1", "Newsletter"));
        let id = sim.lookup_id("phoneNumber=%2B14150000004").await;
        let body = json!({"contactId": id, "listId": "list-1"});

        let (status, v) = sim
            .call(reqwest::Method::POST, "/v1/contacts/lists", Some(&body))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            v,
            json!({"success": true, "message": "Contact successfully added to list Newsletter"})
        );
        assert_eq!(sim.contact_in_dump(&id)["lists"], json!(["list-1"]));

        let (status, v) = sim
            .call(reqwest::Method::DELETE, "/v1/contacts/lists", Some(&body))
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["success"], true);
        assert_eq!(sim.contact_in_dump(&id)["lists"], json!([]));

        let (status, _) = sim
            .call(
                reqwest::Method::POST,
                "/v1/contacts/lists",
                Some(&json!({"contactId": id})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, v) = sim
            .call(
                reqwest::Method::POST,
                "/v1/contacts/lists",
                Some(&json!({"contactId": id, "listId": "nope"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(v["success"], false);

        // Create with an unknown list creates nothing; with a known one, joins it.
        let (status, _) = sim
            .call(
                reqwest::Method::POST,
                "/v1/contacts",
                Some(&json!({"phoneNumber": "+15550100", "listId": "nope"})),
            )
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(sim.state.contact_count(), 1);
        let (status, v) = sim
            .call(
                reqwest::Method::POST,
                "/v1/contacts",
                Some(&json!({"phoneNumber": "+15550100", "listIds": ["list-1"]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let new_id = v["data"]["contactId"].as_str().unwrap();
        assert_eq!(sim.contact_in_dump(new_id)["lists"], json!(["list-1"]));
    }

    #[tokio::test]
    async fn hundred_thousand_contacts_stay_responsive() {
        let sim = Sim::start(people(0..100_000)).await;
        assert_eq!(sim.state.contact_count(), 100_000);
        let by_phone = sim.lookup_id("phoneNumber=%2B14150099999").await;
        let by_email = sim.lookup_id("email=ada.lovelace99999%40example.com").await;
        assert_eq!(by_phone, by_email);
        let (status, v) = sim.get(&format!("/v1/contacts/tags/{by_phone}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v[0]["name"], "Customer");
    }
}
