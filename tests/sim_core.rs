//! The simulator's shared core over real HTTP on loopback: fault injection, the request
//! log and counters, the control endpoint, seeding, and the simulation's credentials.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use contact_sync::domain::normalize::{DefaultRegion, normalize_phone};
use contact_sync::simulator::chatwoot::{self, Credentials};
use contact_sync::simulator::faults::{FaultAction, FaultRule, RetryAfter, TEN_MB};
use contact_sync::simulator::seed::{self, HOME_REGION, Provider};
use contact_sync::simulator::{
    PROVIDERS, SimCredentials, SimServer, SimulatedProvider, dmchamp, maiagent,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const TOKEN: &str = "core-test-token";
const ACCOUNT: u64 = 3;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_mins(1))
        .build()
        .unwrap()
}

/// A Chatwoot server seeded with the first `n` people of seed 11.
async fn chatwoot_server(n: u64) -> SimServer<chatwoot::State> {
    let state = Arc::new(chatwoot::State::new(Credentials {
        account_id: ACCOUNT,
        inbox_id: 5,
        api_key: TOKEN.to_owned(),
    }));
    state.seed(seed::people_for(11, n, chatwoot::State::SEED));
    chatwoot::State::serve(state).await.unwrap()
}

fn contacts_url(server: &SimServer<chatwoot::State>) -> String {
    format!("{}/api/v1/accounts/{ACCOUNT}/contacts", server.base_url())
}

async fn list(server: &SimServer<chatwoot::State>) -> reqwest::Response {
    client()
        .get(contacts_url(server))
        .query(&[("sort", "created_at")])
        .header("api_access_token", TOKEN)
        .send()
        .await
        .unwrap()
}

/// The real answer of the listing, for comparing with faulty ones.
async fn real_listing(server: &SimServer<chatwoot::State>) -> Vec<u8> {
    let response = list(server).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.bytes().await.unwrap().to_vec()
}

// ---------------------------------------------------------------------------------------
// Faults

#[tokio::test]
async fn status_fault_with_retry_after_in_seconds() {
    let server = chatwoot_server(20).await;
    server
        .faults()
        .add(FaultRule::new(FaultAction::too_many_requests(RetryAfter::Seconds(7))).count(1));
    let r = list(&server).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "7");
    // count = 1: the next request is served normally.
    assert_eq!(list(&server).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn status_fault_with_retry_after_as_http_date() {
    let server = chatwoot_server(20).await;
    server.faults().add(FaultRule::new(FaultAction::Status {
        status: 503,
        retry_after: Some(RetryAfter::HttpDate(120)),
        body: Some("{\"error\":\"maintenance\"}".to_owned()),
        content_type: Some("application/json".to_owned()),
    }));
    let r = list(&server).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let date = httpdate::parse_http_date(r.headers()["retry-after"].to_str().unwrap()).unwrap();
    assert!(date > SystemTime::now() + Duration::from_mins(1));
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.text().await.unwrap(), "{\"error\":\"maintenance\"}");
}

#[tokio::test]
async fn chatwoot_throttle_has_no_retry_after() {
    let server = chatwoot_server(20).await;
    server
        .faults()
        .add(FaultRule::new(FaultAction::chatwoot_throttled()));
    let r = list(&server).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_none());
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "Retry later\n");
}

#[tokio::test]
async fn latency_fault_still_serves_the_real_answer() {
    let server = chatwoot_server(20).await;
    let real = real_listing(&server).await;
    server
        .faults()
        .add(FaultRule::new(FaultAction::Delay { millis: 150 }));
    let r = list(&server).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().to_vec(), real);
    assert_eq!(server.faults().fired(), 1);
}

#[tokio::test]
async fn malformed_bodies() {
    let server = chatwoot_server(20).await;
    let real = real_listing(&server).await;
    let real_json: Value = serde_json::from_slice(&real).unwrap();
    let faults = server.faults();

    faults.add(FaultRule::new(FaultAction::InvalidJson).count(1));
    let r = list(&server).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(serde_json::from_slice::<Value>(&r.bytes().await.unwrap()).is_err());

    for status in [200u16, 502] {
        faults.clear();
        faults.add(FaultRule::new(FaultAction::HtmlPage { status }));
        let r = list(&server).await;
        assert_eq!(r.status().as_u16(), status);
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(r.text().await.unwrap().starts_with("<!DOCTYPE html>"));
    }

    faults.clear();
    faults.add(FaultRule::new(FaultAction::Truncated));
    let mut r = list(&server).await;
    assert_eq!(r.status(), StatusCode::OK);
    // The full length is announced, half of it arrives, then the connection ends: the
    // client sees an incomplete message, not a short body.
    assert_eq!(r.content_length(), Some(real.len() as u64));
    let mut received = Vec::new();
    let ended = loop {
        match r.chunk().await {
            Ok(Some(chunk)) => received.extend_from_slice(&chunk),
            Ok(None) => break None,
            Err(e) => break Some(e),
        }
    };
    let ended = ended.expect("reading a truncated body fails");
    assert!(ended.is_body() || ended.is_decode(), "{ended}");
    assert!(received.len() < real.len());
    assert_eq!(&real[..received.len()], &received[..]);

    faults.clear();
    faults.add(FaultRule::new(FaultAction::WrongTypes));
    let r = list(&server).await;
    let scrambled: Value = r.json().await.unwrap();
    // Same shape, but no string left where the real answer had strings.
    assert_eq!(scrambled["meta"]["count"], real_json["meta"]["count"]);
    let first = &scrambled["payload"][0];
    assert!(!first["name"].is_string(), "{first}");
    assert!(!first["thumbnail"].is_string(), "{first}");
    assert!(first["name"].is_object() || first["name"].is_number());

    faults.clear();
    faults.add(FaultRule::new(FaultAction::Oversized { bytes: TEN_MB }));
    let r = list(&server).await;
    let body = r.bytes().await.unwrap();
    assert!(body.len() >= TEN_MB);
    assert_eq!(serde_json::from_slice::<Value>(&body).unwrap(), real_json);
}

#[tokio::test]
async fn dropped_connection_is_an_error_for_the_client() {
    let server = chatwoot_server(20).await;
    server
        .faults()
        .add(FaultRule::new(FaultAction::DropConnection).count(1));
    let outcome = match client()
        .get(contacts_url(&server))
        .header("api_access_token", TOKEN)
        .send()
        .await
    {
        Ok(r) => r.bytes().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(
        outcome.is_err(),
        "a dropped connection must fail the request"
    );
    // The server itself is fine afterwards.
    assert_eq!(list(&server).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_nth_count_method_and_path_are_honoured() {
    let server = chatwoot_server(20).await;
    server.faults().add(
        FaultRule::new(FaultAction::status(503))
            .method(Method::GET)
            .path("/contacts")
            .every_nth(3)
            .count(2),
    );
    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(list(&server).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 503, 200, 200, 503, 200, 200, 200]);

    // A rule for another method or path never fires on the listing.
    server.faults().clear();
    server
        .faults()
        .add(FaultRule::new(FaultAction::status(500)).method(Method::POST));
    server
        .faults()
        .add(FaultRule::new(FaultAction::status(500)).path("/labels"));
    assert_eq!(list(&server).await.status(), StatusCode::OK);
    let rules = server.faults().rules();
    assert_eq!((rules[0].seen, rules[1].seen), (0, 0));
}

#[tokio::test]
async fn faults_through_the_control_endpoint() {
    let server = chatwoot_server(20).await;
    let http = client();
    let url = format!("{}/__sim/faults", server.base_url());
    let rule = json!({
        "method": "get",
        "path": "/contacts",
        "action": {"kind": "status", "status": 429, "retry_after": {"seconds": 2}},
        "count": 1
    });
    let r = http.post(&url).json(&rule).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = list(&server).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers()["retry-after"], "2");

    let listed: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed[0]["fired"], 1);
    assert_eq!(listed[0]["method"], "GET");

    let r = http
        .post(&url)
        .json(&json!({"action": {"kind": "drop_connection"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(
        http.delete(&url).send().await.unwrap().status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(list(&server).await.status(), StatusCode::OK);

    // A rule that is not valid JSON for a rule is refused.
    let r = http
        .post(&url)
        .json(&json!({"action": {"kind": "explode"}}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error());
}

// ---------------------------------------------------------------------------------------
// Log, counters, control endpoint

#[tokio::test]
async fn request_log_redacts_secrets_and_counts_reads_and_writes() {
    let server = chatwoot_server(20).await;
    let http = client();
    let base = contacts_url(&server);

    // A DM Champ style key in the query must never reach the log.
    let r = http
        .get(format!("{base}?apiKey=very-secret-key&page=2"))
        .header("api_access_token", TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Reads: GET, and the read-only POST filter. Writes: create, update.
    let r = http
        .post(format!("{base}/filter"))
        .header("api_access_token", TOKEN)
        .json(&json!({"payload": [{"attribute_key": "email", "filter_operator": "equal_to", "values": ["x@example.com"]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let created: Value = http
        .post(&base)
        .header("api_access_token", TOKEN)
        .json(&json!({"name": "Log Test", "email": "log@example.com"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["payload"]["contact"]["id"].as_u64().unwrap();
    let r = http
        .put(format!("{base}/{id}"))
        .header("api_access_token", TOKEN)
        .json(&json!({"name": "Log Test 2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Unauthorised requests are logged too.
    let r = http.get(&base).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Control requests are neither logged nor counted.
    let _ = http
        .get(format!("{}/__sim/state", server.base_url()))
        .send()
        .await
        .unwrap();

    let counters = server.log().counters();
    assert_eq!(counters.requests, 5);
    assert_eq!(counters.reads, 3);
    assert_eq!(counters.writes, 2);
    assert_eq!(counters.errors, 1);

    let entries = server.log().entries();
    assert_eq!(entries.len(), 5);
    assert_eq!(entries[0].method, "GET");
    assert_eq!(
        entries[0].query.as_deref(),
        Some("apiKey=***&page=2"),
        "{entries:?}"
    );
    assert!(entries[1].read && !entries[2].read);
    assert_eq!(entries[4].status, 401);

    // The same through the control endpoint, and the secret appears nowhere.
    let text = http
        .get(format!("{}/__sim/log", server.base_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("very-secret-key"));
    let log: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(log.as_array().unwrap().len(), 5);
    let counters: Value = http
        .get(format!("{}/__sim/counters", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counters["reads"], 3);
    assert_eq!(counters["writes"], 2);

    let r = http
        .post(format!("{}/__sim/reset-log", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(server.log().counters().requests, 0);
    assert!(server.log().entries().is_empty());
}

#[tokio::test]
async fn fired_faults_are_logged_with_their_kind() {
    let server = chatwoot_server(5).await;
    server
        .faults()
        .add(FaultRule::new(FaultAction::chatwoot_throttled()).count(1));
    let _ = list(&server).await;
    let _ = list(&server).await;
    let entries = server.log().entries();
    assert_eq!(entries[0].status, 429);
    assert_eq!(entries[0].fault.as_deref(), Some("status"));
    assert_eq!(entries[1].fault, None);
    assert_eq!(server.log().counters().faults, 1);
}

#[tokio::test]
async fn control_endpoint_serves_the_state_dump() {
    let server = chatwoot_server(50).await;
    let dump: Value = client()
        .get(format!("{}/__sim/state", server.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let contacts = dump["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), server.state().contact_count());
    assert_eq!(dump["account_id"], ACCOUNT);
    assert!(contacts.iter().all(|c| c["labels"].is_array()));
    // Faults never apply to the control endpoint.
    server
        .faults()
        .add(FaultRule::new(FaultAction::status(500)));
    let r = client()
        .get(format!("{}/__sim/counters", server.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn shutdown_stops_the_server() {
    let server = chatwoot_server(1).await;
    let url = contacts_url(&server);
    server.shutdown().await;
    assert!(client().get(url).send().await.is_err());
}

// ---------------------------------------------------------------------------------------
// Seeding

#[test]
fn seeding_is_deterministic() {
    let a: Vec<_> = seed::people(42, 300).collect();
    let b: Vec<_> = seed::people(42, 300).collect();
    assert_eq!(a, b);
    assert_eq!(seed::person(42, 123), a[123]);
    let other: Vec<_> = seed::people(43, 300).collect();
    assert_ne!(a, other);
    for i in 0..300 {
        assert_eq!(seed::placement(42, i), seed::placement(42, i));
        for p in Provider::all() {
            assert_eq!(
                seed::written_for(42, &a[i as usize], p),
                seed::written_for(42, &a[i as usize], p)
            );
        }
    }
    let via_stream: Vec<_> = seed::people_for(42, 300, maiagent::State::SEED).collect();
    let by_hand: Vec<_> = (0..300)
        .filter(|&i| seed::placement(42, i).contains(maiagent::State::SEED))
        .map(|i| seed::written_for(42, &seed::person(42, i), maiagent::State::SEED))
        .collect();
    assert_eq!(via_stream, by_hand);
}

#[test]
fn generation_streams() {
    // Nothing is materialised: a population of 2^64 people yields its first ones at once.
    let first: Vec<_> = seed::people(5, u64::MAX).take(3).collect();
    assert_eq!(first.len(), 3);
    let first: Vec<_> = seed::people_for(5, u64::MAX, dmchamp::State::SEED)
        .take(3)
        .collect();
    assert_eq!(first.len(), 3);
}

#[test]
fn seeded_keys_are_unique() {
    let mut phones = HashSet::new();
    let mut emails = HashSet::new();
    for person in seed::people(9, 200_000) {
        assert!(
            person.email.is_some() || person.phone.is_some(),
            "{person:?}"
        );
        if let Some(email) = person.email_key() {
            assert!(emails.insert(email.clone()), "duplicate email {email}");
        }
        if let Some(e164) = person.phone_e164 {
            assert!(phones.insert(e164.clone()), "duplicate phone {e164}");
        }
    }
    assert!(phones.len() > 160_000 && emails.len() > 160_000);
}

/// Parsing phones is slow (libphonenumber's regexes), so this checks a sample.
#[test]
fn seeded_phones_are_valid_and_normalise_as_written() {
    let us = DefaultRegion::parse(HOME_REGION).unwrap();
    let mut regions: HashMap<&str, usize> = HashMap::new();
    for person in seed::people(9, 2_500) {
        let Some(e164) = person.phone_e164.clone() else {
            continue;
        };
        let parsed = phonenumber::parse(None, &e164).unwrap();
        assert!(phonenumber::is_valid(&parsed), "invalid number {e164}");
        let region = person.phone_region().unwrap();
        *regions.entry(region).or_default() += 1;
        // The canonical phone is written at home: it normalises with its own region.
        let typed = person.phone.as_deref().unwrap();
        let at_home = normalize_phone(typed, DefaultRegion::parse(region).unwrap()).unwrap();
        assert_eq!(at_home.key(), Some(e164.as_str()), "{typed} in {region}");
        // In every provider, it normalises with the default region.
        for provider in Provider::all() {
            let written = seed::written_for(9, &person, provider);
            let typed = written.phone.as_deref().unwrap();
            let got = normalize_phone(typed, us).unwrap();
            assert_eq!(got.key(), Some(e164.as_str()), "{typed} in {provider:?}");
        }
    }
    assert!(regions.len() >= 10, "{regions:?}");
}

#[test]
fn population_is_realistic() {
    let people: Vec<_> = seed::people(3, 5_000).collect();
    let names: String = people.iter().map(seed::Person::full_name).collect();
    let has = |range: std::ops::RangeInclusive<char>| names.chars().any(|c| range.contains(&c));
    assert!(has('\u{4e00}'..='\u{9fff}'), "Chinese");
    assert!(has('\u{3040}'..='\u{30ff}'), "Japanese kana");
    assert!(has('\u{0600}'..='\u{06ff}'), "Arabic");
    assert!(has('\u{0400}'..='\u{04ff}'), "Cyrillic");
    assert!(has('\u{00c0}'..='\u{017f}'), "Latin with accents");

    let emails: Vec<&str> = people.iter().filter_map(|p| p.email.as_deref()).collect();
    assert!(emails.iter().any(|e| e.chars().any(char::is_uppercase)));
    assert!(emails.iter().any(|e| e.trim() != *e));

    let tags: HashSet<&str> = people
        .iter()
        .flat_map(|p| &p.tags)
        .map(String::as_str)
        .collect();
    assert!(tags.contains("VIP") && tags.contains("vip"), "{tags:?}");
    let vocabulary: HashSet<String> = seed::tag_vocabulary().collect();
    assert!(tags.iter().all(|t| vocabulary.contains(&t.to_lowercase())));

    // Local formats are there: US national with parentheses, a 00 prefix in MaiAgent.
    let phones: Vec<&str> = people.iter().filter_map(|p| p.phone.as_deref()).collect();
    assert!(
        phones.iter().any(|p| p.starts_with('(')),
        "{:?}",
        &phones[..20]
    );
    let mai: Vec<String> = seed::people_for(3, 5_000, maiagent::State::SEED)
        .filter_map(|p| p.phone)
        .collect();
    assert!(mai.iter().any(|p| p.starts_with("00")));
    assert!(mai.iter().any(|p| p.starts_with('+') && p.contains(' ')));
}

#[test]
fn overlap_plan() {
    let n = 20_000;
    let mut in_provider: HashMap<&str, u64> = HashMap::new();
    let mut two_or_more = 0;
    for i in 0..n {
        let p = seed::placement(77, i);
        assert!(p.count() >= 1);
        if p.count() >= 2 {
            two_or_more += 1;
        }
        for name in ["chatwoot", "maiagent", "agentalk", "dmchamp"] {
            *in_provider.entry(name).or_default() += u64::from(p.contains_kind(name));
        }
        let person = seed::person(77, i);
        if p.contains_kind("agentalk") || p.contains_kind("dmchamp") {
            assert!(person.phone.is_some(), "Agentalk and DM Champ need a phone");
        }
    }
    let share = |name: &str| in_provider[name] * 100 / n;
    assert!((65..=78).contains(&share("chatwoot")), "{in_provider:?}");
    assert!((55..=65).contains(&share("maiagent")), "{in_provider:?}");
    assert!((20..=32).contains(&share("agentalk")), "{in_provider:?}");
    assert!((20..=32).contains(&share("dmchamp")), "{in_provider:?}");
    assert!(two_or_more * 100 / n >= 40, "{two_or_more}");

    // The same person is written differently across providers.
    let mut differs = 0;
    for i in 0..2_000 {
        let person = seed::person(77, i);
        let cw = seed::written_for(77, &person, chatwoot::State::SEED);
        let mai = seed::written_for(77, &person, maiagent::State::SEED);
        assert_eq!(cw.index, mai.index);
        if cw.phone != mai.phone || cw.email != mai.email {
            differs += 1;
        }
        // Chatwoot keeps E.164 and lower-case labels.
        assert_eq!(cw.phone, person.phone_e164);
        assert!(cw.tags.iter().all(|t| *t == t.to_lowercase()));
    }
    assert!(differs > 1_000, "{differs}");
}

// ---------------------------------------------------------------------------------------
// Credentials and `info()`

#[test]
fn simulation_info_shape() {
    let creds = SimCredentials::from_seed(17);
    assert_eq!(creds, SimCredentials::from_seed(17));
    assert_ne!(creds, SimCredentials::from_seed(18));
    let info = creds.info(|kind| {
        let port = PROVIDERS.iter().position(|e| e.kind == kind).unwrap() + 1;
        format!("http://127.0.0.1:{port}")
    });
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(keys(&info), ["agentalk", "chatwoot", "dmchamp", "maiagent"]);
    assert_eq!(
        keys(&info["chatwoot"]),
        ["account_id", "api_key", "base_url", "inbox_id"]
    );
    assert_eq!(keys(&info["maiagent"]), ["api_key", "base_url", "inbox_id"]);
    assert_eq!(keys(&info["agentalk"]), ["api_key", "base_url"]);
    assert_eq!(keys(&info["dmchamp"]), ["api_key", "base_url"]);
    assert!(info["chatwoot"]["account_id"].is_u64());
    assert!(info["chatwoot"]["inbox_id"].is_u64());
    assert_eq!(info["chatwoot"]["base_url"], "http://127.0.0.1:1");

    let is_uuid = |s: &str| {
        s.len() == 36
            && s.chars().enumerate().all(|(i, c)| {
                if [8, 13, 18, 23].contains(&i) {
                    c == '-'
                } else {
                    c.is_ascii_hexdigit()
                }
            })
    };
    assert!(is_uuid(info["maiagent"]["inbox_id"].as_str().unwrap()));
    let agentalk = info["agentalk"]["api_key"].as_str().unwrap();
    let (org, secret) = agentalk.split_once('.').unwrap();
    assert!(is_uuid(org) && !secret.is_empty() && !secret.contains('.'));
    assert!(!info["dmchamp"]["api_key"].as_str().unwrap().is_empty());
}

#[tokio::test]
async fn whole_simulation_starts_seeds_and_serves() {
    use contact_sync::simulator::{SimOptions, Simulation};
    let sim = Simulation::start(SimOptions {
        contacts: 500,
        seed: 21,
        ..SimOptions::default()
    })
    .await
    .unwrap();
    let info = sim.info();
    assert_eq!(
        info,
        SimCredentials::from_seed(21).info(|kind| sim
            .provider(kind)
            .unwrap()
            .base_url()
            .to_owned())
    );
    assert_eq!(sim.instances().len(), PROVIDERS.len());
    for p in Provider::all() {
        let expected = (0..500)
            .filter(|&i| seed::placement(21, i).contains(p))
            .count();
        let got = sim.provider(p.kind).unwrap().contact_count();
        assert_eq!(got, expected, "{p:?}");
    }
    // Every server answers its control endpoint on loopback.
    for url in sim.instances().iter().map(|i| i.server.base_url()) {
        assert!(url.starts_with("http://127.0.0.1:"));
        let r = client()
            .get(format!("{url}/__sim/counters"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    sim.shutdown().await;
}

#[test]
fn every_provider_kind_is_simulated_once() {
    use contact_sync::provider::ProviderKind;
    let mut kinds: Vec<&str> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
    let mut simulated: Vec<&str> = PROVIDERS.iter().map(|e| e.kind).collect();
    kinds.sort_unstable();
    simulated.sort_unstable();
    assert_eq!(kinds, simulated);
    // Each entry's seed profile is its own.
    for e in PROVIDERS {
        assert_eq!(e.seed.kind, e.kind);
        assert_eq!(Provider::of(e.kind), Some(e.seed));
    }
}
