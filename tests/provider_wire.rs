//! Wire edge cases of the provider clients against wiremock on 127.0.0.1: retries and
//! `Retry-After`, non-idempotent writes, timeouts, error classification, oversized and
//! malformed bodies, pagination quirks, query encoding and secret redaction.
#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use contact_sync::config::{KindSettings, ProviderSettings, RetryPolicy};
use contact_sync::domain::{Fields, Tags};
use contact_sync::provider::{
    self, AnyProvider, ErrorKind, LookupKey, Provider, ProviderKind, Target,
};
use secrecy::SecretString;
use serde_json::{Value, json};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Match, Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "k3y-SECRET-9f8e7d";

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        base_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
        max_retries: 3,
        max_elapsed: Duration::from_secs(20),
    }
}

fn settings(kind: ProviderKind, server: &MockServer) -> ProviderSettings {
    ProviderSettings {
        name: format!("test-{kind}"),
        kind,
        base_url: url::Url::parse(&server.uri()).unwrap(),
        kind_settings: match kind {
            ProviderKind::Chatwoot => KindSettings::new()
                .with("account_id", 1u64)
                .with("inbox_id", "7"),
            ProviderKind::Maiagent => KindSettings::new().with("inbox_id", "0b6a3c1e-inbox"),
            _ => KindSettings::new(),
        },
        api_key: SecretString::from(KEY),
        schedule: None,
        push: true,
        requests_per_second: None,
        request_timeout: Duration::from_secs(5),
        retry: fast_retry(),
    }
}

fn client(kind: ProviderKind, server: &MockServer) -> AnyProvider {
    provider::build(&settings(kind, server)).unwrap()
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap_or_default()
}

fn chatwoot_contact(id: u64) -> Value {
    json!({
        "id": id, "name": format!("Person {id}"), "email": format!("p{id}@example.com"),
        "phone_number": format!("+1415555{id:04}"), "identifier": null,
        "custom_attributes": {}, "additional_attributes": {}, "created_at": 1_700_000_000
    })
}

fn chatwoot_page(ids: std::ops::Range<u64>, count: u64, current_page: &Value) -> Value {
    json!({
        "meta": {"count": count, "current_page": current_page},
        "payload": ids.map(chatwoot_contact).collect::<Vec<_>>()
    })
}

/// Log lines written while a test runs, at TRACE level.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let writer = self.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The raw (still percent-encoded) query string contains `needle`.
struct RawQueryContains(&'static str);

impl Match for RawQueryContains {
    fn matches(&self, request: &Request) -> bool {
        request.url.query().is_some_and(|q| q.contains(self.0))
    }
}

// ---------------------------------------------------------------- retries

#[tokio::test]
async fn retry_after_seconds_is_honoured_then_the_page_is_read() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/contacts"))
        .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "1"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chatwoot_page(1..4, 3, &json!(1))))
        .mount(&server)
        .await;
    let mut s = settings(ProviderKind::Chatwoot, &server);
    s.retry.max_delay = Duration::from_mins(1);
    let cw = provider::build(&s).unwrap();
    let logs = Capture::default();
    let _guard = logs.install();

    let page = cw.list_page(None).await.unwrap();

    assert_eq!(page.records.len(), 3);
    assert_eq!(requests(&server).await.len(), 2);
    let text = logs.text();
    assert!(
        text.contains("delay_ms=1000"),
        "the server's 1 s was used: {text}"
    );
    assert!(text.contains("server_hint=true"), "{text}");
}

#[tokio::test]
async fn retry_after_http_date_is_honoured() {
    let server = MockServer::start().await;
    let date = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    Mock::given(method("GET"))
        .and(path("/api/contacts/"))
        .respond_with(ResponseTemplate::new(503).insert_header("retry-after", date.as_str()))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/contacts/"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"count": 0, "next": null, "previous": null, "results": []})),
        )
        .mount(&server)
        .await;
    let mut s = settings(ProviderKind::Maiagent, &server);
    s.retry.max_delay = Duration::from_mins(1);
    let mai = provider::build(&s).unwrap();
    let logs = Capture::default();
    let _guard = logs.install();

    let page = mai.list_page(None).await.unwrap();

    assert!(page.records.is_empty() && page.next.is_none());
    assert_eq!(requests(&server).await.len(), 2);
    let text = logs.text();
    assert!(text.contains("server_hint=true"), "{text}");
    // The computed backoff would be 10-20 ms; the date asks for about a second or two.
    let delay: u64 = text
        .split("delay_ms=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|d| d.parse().ok())
        .unwrap();
    assert!(delay >= 500, "delay from the HTTP date: {delay} ms");
}

#[tokio::test]
async fn chatwoot_429_without_retry_after_backs_off_and_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/contacts"))
        .respond_with(ResponseTemplate::new(429).set_body_raw("Retry later\n", "text/plain"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chatwoot_page(1..2, 1, &json!(1))))
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);
    let logs = Capture::default();
    let _guard = logs.install();

    let page = cw.list_page(None).await.unwrap();

    assert_eq!(page.records.len(), 1);
    assert_eq!(requests(&server).await.len(), 3);
    assert!(logs.text().contains("server_hint=false"));
}

#[tokio::test]
async fn a_500_on_a_read_is_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .respond_with(ResponseTemplate::new(500).set_body_json("Internal error"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"success": true, "contactId": "abc123"})),
        )
        .mount(&server)
        .await;
    let dm = client(ProviderKind::Dmchamp, &server);

    let hit = dm.lookup(LookupKey::Phone("+14155550123")).await.unwrap();

    assert_eq!(hit.unwrap().remote_id, "abc123");
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn retries_are_bounded_and_the_error_is_transient() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(502).set_body_string("bad gateway"))
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);

    let err = cw.list_page(None).await.unwrap_err();

    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.status, Some(502));
    assert_eq!(
        requests(&server).await.len(),
        4,
        "1 attempt + max_retries 3"
    );
    assert!(
        err.to_string().contains("gave up after 4 attempts"),
        "{err}"
    );
}

#[tokio::test]
async fn a_create_is_not_retried_after_a_500() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/accounts/1/contacts"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"error": "boom"})))
        .expect(1)
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);

    let err = cw
        .create(
            &fields(&[("name", "Ann"), ("phone", "+14155550123")]),
            &Tags::new(),
        )
        .await
        .unwrap_err();

    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(
        requests(&server).await.len(),
        1,
        "a create may have been processed"
    );
}

#[tokio::test]
async fn a_create_is_retried_after_a_429() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/contacts"))
        .respond_with(ResponseTemplate::new(429))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "success": true,
            "data": {"message": "Successfully created new contact", "contactId": "c9"}
        })))
        .mount(&server)
        .await;
    let dm = client(ProviderKind::Dmchamp, &server);

    let created = dm
        .create(
            &fields(&[("phone", "+14155550123"), ("first_name", "Ann")]),
            &Tags::new(),
        )
        .await
        .unwrap();

    assert_eq!(created.remote_id, "c9");
    assert!(!created.existed);
    assert_eq!(requests(&server).await.len(), 2);
}

#[tokio::test]
async fn a_timeout_is_transient_and_retried_for_reads() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"results": []}))
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let mut s = settings(ProviderKind::Agentalk, &server);
    s.request_timeout = Duration::from_millis(200);
    s.retry.max_retries = 1;
    let ag = provider::build(&s).unwrap();

    let err = ag
        .lookup(LookupKey::Phone("+14155550123"))
        .await
        .unwrap_err();

    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("timed out"), "{err}");
    assert_eq!(requests(&server).await.len(), 2);
}

// ---------------------------------------------------------------- classification

#[tokio::test]
async fn a_401_is_auth_with_a_hint() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(401).set_body_json(json!({"error": "Invalid Access Token"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);

    let err = cw.list_page(None).await.unwrap_err();

    assert_eq!(err.kind, ErrorKind::Auth);
    assert_eq!(err.status, Some(401));
    assert!(err.message.contains("Invalid Access Token"), "{err}");
    assert!(err.hint.contains("api_key_env"), "{}", err.hint);
    assert!(err.to_string().contains("list contacts page 1"), "{err}");
}

#[tokio::test]
async fn an_html_page_is_malformed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/contacts/"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            "<!DOCTYPE html><html><head><title>Login</title></head><body>Sign in</body></html>",
            "text/html",
        ))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/contacts"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_raw("<html><body>maintenance</body></html>", "application/json"),
        )
        .mount(&server)
        .await;

    for kind in [ProviderKind::Maiagent, ProviderKind::Chatwoot] {
        let err = client(kind, &server).list_page(None).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed, "{kind}: {err}");
        assert!(err.message.contains("HTML"), "{err}");
    }
}

#[tokio::test]
async fn a_10_mb_body_is_malformed() {
    let server = MockServer::start().await;
    let mut huge = br#"{"meta": {"count": 1}, "payload": [], "pad": ""#.to_vec();
    huge.resize(10 * 1024 * 1024, b'x');
    huge.extend_from_slice(br#""}"#);
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(huge, "application/json"))
        .expect(1)
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);

    let err = cw.list_page(None).await.unwrap_err();

    assert_eq!(err.kind, ErrorKind::Malformed);
    assert!(err.message.contains("exceeds"), "{err}");
}

#[tokio::test]
async fn truncated_json_is_malformed_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(
            r#"{"meta": {"count": 2, "current_page": "1"}, "payload": [{"id": 1, "name": "A"#,
            "application/json",
        ))
        .expect(1)
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);

    let err = cw.list_page(None).await.unwrap_err();

    assert_eq!(err.kind, ErrorKind::Malformed);
    assert!(err.message.contains("truncated"), "{err}");
}

#[tokio::test]
async fn chatwoot_duplicate_is_already_exists_with_attributes() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/accounts/1/contacts"))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({
            "message": "Email has already been taken, Phone number has already been taken",
            "attributes": ["email", "phone_number"]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);

    let err = cw
        .create(
            &fields(&[
                ("name", "Ann"),
                ("email", "a@example.com"),
                ("phone", "+14155550123"),
            ]),
            &Tags::new(),
        )
        .await
        .unwrap_err();

    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert_eq!(err.status, Some(422));
    assert_eq!(
        err.conflicting,
        vec!["email".to_owned(), "phone".to_owned()]
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(301).insert_header("location", "https://elsewhere.example/api/"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client(ProviderKind::Maiagent, &server)
        .list_page(None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.hint.contains("elsewhere.example"), "{}", err.hint);
}

// ---------------------------------------------------------------- pagination

#[tokio::test]
async fn chatwoot_pages_with_int_and_string_current_page() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/contacts"))
        .and(query_param("page", "1"))
        .and(query_param("sort", "created_at"))
        .and(query_param("include_contact_inboxes", "false"))
        .and(header("api_access_token", KEY))
        .respond_with(ResponseTemplate::new(200).set_body_json(chatwoot_page(1..16, 20, &json!(1))))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/contacts"))
        .and(query_param("page", "2"))
        .and(query_param("sort", "created_at"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chatwoot_page(
            16..21,
            20,
            &json!("2"),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);

    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = cw.list_page(cursor.as_deref()).await.unwrap();
        all.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }

    assert_eq!(all.len(), 20);
    assert_eq!(all[0].remote_id, "1");
    assert_eq!(all[19].fields["email"], "p20@example.com");
    assert_eq!(all[19].fields["source_id"], "");
}

#[tokio::test]
async fn maiagent_nested_snake_case_and_foreign_next_host() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/contacts/"))
        .and(query_param("page", "1"))
        .and(header("authorization", format!("Api-Key {KEY}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 3,
            "next": "http://internal.maiagent.local:8000/api/contacts/?page=2&pageSize=100",
            "previous": null,
            "results": [[
                {"id": "u1", "name": "Ann", "phone_number": 886_912_345_678_u64, "email": "ann@example.com",
                 "source_id": "k1", "query_metadata": {"plan": "gold"}, "created_at": "2024-01-01T00:00:00Z"},
                {"id": "u2", "name": "Bob", "phoneNumber": "+886912000000", "sourceId": null,
                 "createdAt": "1751875361000", "updatedAt": 1_751_875_361_000_u64}
            ]]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/contacts/"))
        .and(query_param("page", "2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 3, "next": null, "previous": "http://internal.maiagent.local:8000/api/contacts/",
            "results": [{"id": "u3", "name": "Cy", "phoneNumber": null, "email": null}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let mai = client(ProviderKind::Maiagent, &server);

    let first = mai.list_page(None).await.unwrap();
    let next = first.next.clone().unwrap();
    assert!(
        next.starts_with(&server.uri()),
        "rewritten onto the base: {next}"
    );
    let second = mai.list_page(Some(&next)).await.unwrap();

    assert_eq!(first.records.len(), 2);
    assert_eq!(first.records[0].fields["phone"], "886912345678");
    assert_eq!(first.records[0].fields["source_id"], "k1");
    assert_eq!(first.records[0].fields["attr.plan"], "gold");
    assert_eq!(first.records[1].fields["source_id"], "");
    assert_eq!(second.records[0].remote_id, "u3");
    assert!(second.next.is_none());
}

#[tokio::test]
async fn maiagent_invalid_page_mid_listing_asks_for_a_restart() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/contacts/"))
        .and(query_param("page", "5"))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"detail": "Invalid page."})))
        .mount(&server)
        .await;
    let mai = client(ProviderKind::Maiagent, &server);
    let cursor = format!("{}/api/contacts/?page=5&pageSize=100", server.uri());

    let err = mai.list_page(Some(&cursor)).await.unwrap_err();

    assert_eq!(err.kind, ErrorKind::ListingChanged);
    assert!(err.restart_listing());
    assert!(err.message.contains("Invalid page."), "{err}");
}

// ---------------------------------------------------------------- query encoding

#[tokio::test]
async fn plus_is_sent_as_percent_2b_in_every_query() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .and(RawQueryContains("phoneNumber=%2B14155550123"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true, "contactId": "d1"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/contacts/search"))
        .and(RawQueryContains("phone=%2B14155550123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "count": 1, "limit": 50, "offset": 0,
            "results": [{"id": "a1", "phone": "+14155550123", "firstName": "Ann"}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/contacts"))
        .and(RawQueryContains("labels%5B%5D=c%2B%2B"))
        .respond_with(ResponseTemplate::new(200).set_body_json(chatwoot_page(3..5, 2, &json!("1"))))
        .expect(1)
        .mount(&server)
        .await;

    let dm = client(ProviderKind::Dmchamp, &server);
    let ag = client(ProviderKind::Agentalk, &server);
    let cw = client(ProviderKind::Chatwoot, &server);
    let d = dm
        .lookup(LookupKey::Phone("+14155550123"))
        .await
        .unwrap()
        .unwrap();
    let a = ag
        .lookup(LookupKey::Phone("+14155550123"))
        .await
        .unwrap()
        .unwrap();
    let c = cw.list_tag_page("c++", None).await.unwrap();

    assert_eq!(d.remote_id, "d1");
    assert!(d.fields.is_empty(), "DM Champ lookups return only an id");
    assert_eq!(a.remote_id, "a1");
    assert_eq!(a.fields["first_name"], "Ann");
    assert_eq!(c.remote_ids, vec!["3".to_owned(), "4".to_owned()]);
    assert!(c.next.is_none());
}

// ---------------------------------------------------------------- secrets

#[tokio::test]
async fn dmchamp_api_key_never_reaches_errors_or_logs() {
    let server = MockServer::start().await;
    // The key must travel (as the query parameter) ...
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .and(query_param("apiKey", KEY))
        .and(query_param("email", "ann@example.com"))
        .respond_with(ResponseTemplate::new(500).set_body_json(format!(
            "upstream failed for https://api.dmchamp.com/v1/contacts?apiKey={KEY}&email=x"
        )))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .and(query_param("apiKey", KEY))
        .and(query_param("phoneNumber", "+14155550123"))
        .respond_with(ResponseTemplate::new(401).set_body_json(format!("Invalid API key {KEY}")))
        .mount(&server)
        .await;
    let dm = client(ProviderKind::Dmchamp, &server);
    let logs = Capture::default();
    let _guard = logs.install();

    let transient = dm
        .lookup(LookupKey::Email("ann@example.com"))
        .await
        .unwrap_err();
    let auth = dm
        .lookup(LookupKey::Phone("+14155550123"))
        .await
        .unwrap_err();
    // ... and a connection failure (reqwest errors name the URL) must not leak it either.
    let mut s = settings(ProviderKind::Dmchamp, &server);
    s.base_url = url::Url::parse("http://127.0.0.1:9").unwrap();
    s.retry.max_retries = 0;
    let refused = provider::build(&s)
        .unwrap()
        .lookup(LookupKey::Phone("+14155550123"))
        .await
        .unwrap_err();

    assert_eq!(transient.kind, ErrorKind::Transient);
    assert_eq!(auth.kind, ErrorKind::Auth);
    assert_eq!(refused.kind, ErrorKind::Transient);
    for err in [&transient, &auth, &refused] {
        let shown = format!("{err} {err:?}");
        assert!(!shown.contains(KEY), "key leaked into the error: {shown}");
    }
    assert!(transient.message.contains("apiKey=REDACTED"), "{transient}");
    let text = logs.text();
    assert!(
        text.contains("provider request"),
        "requests are logged: {text}"
    );
    assert!(
        text.contains("phoneNumber=%2B14155550123"),
        "URLs are logged: {text}"
    );
    assert!(!text.contains(KEY), "key leaked into the logs: {text}");
    assert!(!format!("{dm:?}").contains(KEY));
}

// ---------------------------------------------------------------- writes

#[tokio::test]
async fn chatwoot_tag_add_posts_the_full_set_and_creates_missing_labels() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/accounts/1/labels"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "payload": [{"id": 1, "title": "customer", "description": null, "color": "#000", "show_on_sidebar": true}]
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/accounts/1/labels"))
        .and(body_json(json!({"title": "vip", "show_on_sidebar": false})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 2, "title": "vip"})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/accounts/1/contacts/42/labels"))
        .and(body_json(json!({"labels": ["customer", "vip"]})))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"payload": ["customer", "vip"]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);
    let current: Tags = ["customer"].into_iter().collect();
    let projection = fields(&[("name", "Ann")]);
    let target = Target {
        remote_id: "42",
        fields: &projection,
        tags: &current,
    };

    cw.add_tags(target, &["vip".to_owned(), "Customer".to_owned()])
        .await
        .unwrap();
}

#[tokio::test]
async fn chatwoot_lookup_checks_exactness_itself() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/accounts/1/contacts/filter"))
        .and(body_json(json!({"payload": [{
            "attribute_key": "identifier", "filter_operator": "equal_to",
            "values": ["Key-1"], "query_operator": null
        }]})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "meta": {"count": 1, "current_page": 1},
            "payload": [{"id": 5, "name": "X", "identifier": "key-1", "email": null, "phone_number": null}]
        })))
        .mount(&server)
        .await;
    let cw = client(ProviderKind::Chatwoot, &server);

    let found = cw.lookup(LookupKey::SourceId("Key-1")).await.unwrap();

    assert!(found.is_none(), "identifier uniqueness is case-sensitive");
}

#[tokio::test]
async fn dmchamp_duplicate_create_error_links_the_existing_contact() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/contacts"))
        .respond_with(
            ResponseTemplate::new(409)
                .set_body_json(json!({"success": false, "error": "Contact already exists"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/contacts"))
        .and(query_param("phoneNumber", "+14155550123"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true, "contactId": "old7"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/tags"))
        .and(query_param("tag", "vip"))
        .and(query_param("phoneNumber", "14155550123"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"success": true})))
        .expect(1)
        .mount(&server)
        .await;
    let dm = client(ProviderKind::Dmchamp, &server);
    let tags: Tags = ["vip"].into_iter().collect();

    let created = dm
        .create(
            &fields(&[("phone", "+14155550123"), ("source_id", "k1")]),
            &tags,
        )
        .await
        .unwrap();

    assert_eq!(created.remote_id, "old7");
    assert!(created.existed);
}

#[tokio::test]
async fn dmchamp_refuses_phone_changes_without_a_request() {
    let server = MockServer::start().await;
    let dm = client(ProviderKind::Dmchamp, &server);
    let projection = fields(&[("phone", "+14155550199")]);
    let tags = Tags::new();
    let target = Target {
        remote_id: "d1",
        fields: &projection,
        tags: &tags,
    };

    let err = dm
        .update(
            target,
            &fields(&[("phone", "+14155550199"), ("first_name", "Ann")]),
        )
        .await
        .unwrap_err();

    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("phone"), "{err}");
    assert!(requests(&server).await.is_empty());
}

#[tokio::test]
async fn agentalk_upsert_status_says_whether_the_contact_existed() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/contacts"))
        .and(header("authorization", format!("Bearer {KEY}").as_str()))
        .and(body_json(json!({"phone": "+14155550123", "firstName": "Ann", "tags": ["vip"], "fields": {"city": "Oslo"}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"contact": {"id": "a1", "phone": "+14155550123"}})))
        .expect(1)
        .mount(&server)
        .await;
    let ag = client(ProviderKind::Agentalk, &server);
    let tags: Tags = ["vip"].into_iter().collect();

    let created = ag
        .create(
            &fields(&[
                ("phone", "+14155550123"),
                ("first_name", "Ann"),
                ("attr.city", "Oslo"),
                ("email", ""),
            ]),
            &tags,
        )
        .await
        .unwrap();

    assert_eq!(created.remote_id, "a1");
    assert!(created.existed, "200 means the phone was already there");
}

#[tokio::test]
async fn maiagent_update_patches_only_changes_and_clears_with_null() {
    let server = MockServer::start().await;
    Mock::given(method("PATCH"))
        .and(path("/api/contacts/u1/"))
        .and(body_json(json!({
            "email": null, "name": "Ann B",
            "queryMetadata": {"plan": "gold", "seats": "3"}
        })))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"id": "u1", "name": "Ann B"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let mai = client(ProviderKind::Maiagent, &server);
    let projection = fields(&[
        ("name", "Ann B"),
        ("email", ""),
        ("attr.plan", "gold"),
        ("attr.seats", "3"),
    ]);
    let tags = Tags::new();
    let target = Target {
        remote_id: "u1",
        fields: &projection,
        tags: &tags,
    };

    mai.update(
        target,
        &fields(&[("name", "Ann B"), ("email", ""), ("attr.seats", "3")]),
    )
    .await
    .unwrap();
}
