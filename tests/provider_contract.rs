//! Contract suite: every provider client against its simulated provider (`src/simulator/`)
//! over loopback HTTP. The same scenarios for each adapter, as far as its capabilities
//! go: full enumeration of 1,000 contacts, lookup hit and miss, create then lookup,
//! update, tag add/remove, and the failures a client must survive (429 with and without
//! `Retry-After`, 500, a dropped connection) or report (malformed pages → Malformed, a
//! wrong key → Auth, a create that may have been processed is not sent twice).
//!
//! The simulators share no code with the clients; every answer comes from their state,
//! and failures come from their fault-injection rules, never from per-test scripts.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use contact_sync::config::{KindSettings, ProviderSettings, RetryPolicy};
use contact_sync::domain::{Fields, RemoteRecord, Tags};
use contact_sync::provider::{
    self, AnyProvider, ErrorKind, LookupKey, Provider, ProviderError, ProviderKind, Target,
};
use contact_sync::simulator::faults::{FaultAction, FaultRule, RetryAfter};
use contact_sync::simulator::seed::{self, Person};
use contact_sync::simulator::{
    SimServer, SimulatedProvider, agentalk, chatwoot, dmchamp, maiagent,
};
use reqwest::Method;
use secrecy::SecretString;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Seed of the simulated population.
const SEED: u64 = 7;
/// Contacts enumerated in the full-listing scenario.
const LISTED: usize = 1000;

fn settings(kind: ProviderKind, base: &str, key: &str) -> ProviderSettings {
    ProviderSettings {
        name: format!("contract-{kind}"),
        kind,
        base_url: url::Url::parse(base).unwrap(),
        kind_settings: KindSettings::new(),
        api_key: SecretString::from(key.to_owned()),
        schedule: None,
        push: true,
        requests_per_second: None,
        request_timeout: Duration::from_secs(10),
        retry: RetryPolicy {
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(5),
            max_retries: 3,
            max_elapsed: Duration::from_secs(30),
        },
    }
}

/// The first `n` people of the population that `provider` holds, as typed into it.
fn people(provider: seed::Provider, n: usize) -> Vec<Person> {
    seed::people_for(SEED, 20 * n as u64 + 100, provider)
        .take(n)
        .collect()
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// One simulated provider and a client for it.
struct Fixture<S> {
    server: SimServer<S>,
    settings: ProviderSettings,
    client: AnyProvider,
    /// A person the provider holds, for lookups.
    known: Person,
}

impl<S: Send + Sync + 'static> Fixture<S> {
    /// A client with a wrong key.
    fn wrong_key_client(&self) -> AnyProvider {
        let mut s = self.settings.clone();
        s.api_key = SecretString::from("wrong-key.0000000000".to_owned());
        provider::build(&s).unwrap()
    }

    /// Requests the server answered (fault or not) for `method` on paths containing `path`.
    fn answered(&self, method: &str, path: &str) -> usize {
        self.server
            .log()
            .entries()
            .iter()
            .filter(|e| e.method == method && e.path.contains(path))
            .count()
    }
}

async fn chatwoot_fixture(n: usize) -> Fixture<chatwoot::State> {
    let creds = chatwoot::Credentials {
        account_id: 3,
        inbox_id: 5,
        api_key: "cw-contract-token-0123456789".to_owned(),
    };
    let state = Arc::new(chatwoot::State::new(creds.clone()));
    let seeded = people(chatwoot::State::SEED, n.max(1));
    let known = seeded
        .iter()
        .find(|p| p.phone_e164.is_some() && p.email.is_some())
        .cloned()
        .unwrap();
    state.seed(seeded.into_iter().take(n));
    let server = chatwoot::State::serve(state).await.unwrap();
    let mut s = settings(ProviderKind::Chatwoot, server.base_url(), &creds.api_key);
    s.kind_settings = KindSettings::new()
        .with("account_id", creds.account_id)
        .with("inbox_id", creds.inbox_id.to_string());
    Fixture {
        client: provider::build(&s).unwrap(),
        settings: s,
        server,
        known,
    }
}

async fn maiagent_fixture(n: usize) -> Fixture<maiagent::State> {
    let key = "AbCd1234.maiagentcontractsecret0123456789";
    let state = Arc::new(maiagent::State::new(maiagent::Credentials {
        api_key: key.to_owned(),
        inbox_id: "0b9f2a44-6a1e-4d8e-9a55-3c2f1e0d9b7a".to_owned(),
    }));
    let seeded = people(maiagent::State::SEED, n.max(1));
    let known = seeded[0].clone();
    state.seed(seeded.into_iter().take(n));
    let inbox = state.inbox_id();
    let server = SimServer::start(
        Arc::clone(&state),
        maiagent::router(state),
        maiagent::State::dump,
    )
    .await
    .unwrap();
    let mut s = settings(ProviderKind::Maiagent, server.base_url(), key);
    s.kind_settings = KindSettings::new().with("inbox_id", inbox);
    Fixture {
        client: provider::build(&s).unwrap(),
        settings: s,
        server,
        known,
    }
}

async fn agentalk_fixture(n: usize) -> Fixture<agentalk::State> {
    let creds = agentalk::Credentials {
        org_id: "15c94c3c-1873-4a09-bfbb-03357c29ea50".to_owned(),
        secret: "agentalkcontractsecret".to_owned(),
    };
    let token = creds.token();
    let state = Arc::new(agentalk::State::new(creds));
    let seeded = people(agentalk::State::SEED, n.max(1));
    let known = seeded[0].clone();
    state.seed(seeded.into_iter().take(n));
    let server = SimServer::start(
        Arc::clone(&state),
        agentalk::router(state),
        agentalk::State::dump,
    )
    .await
    .unwrap();
    let s = settings(ProviderKind::Agentalk, server.base_url(), &token);
    Fixture {
        client: provider::build(&s).unwrap(),
        settings: s,
        server,
        known,
    }
}

async fn dmchamp_fixture(n: usize) -> Fixture<dmchamp::State> {
    let key = "0123456789abcdef0123456789abcdef";
    let state = Arc::new(dmchamp::State::new(dmchamp::Credentials {
        api_key: key.to_owned(),
    }));
    let seeded = people(dmchamp::State::SEED, n.max(1));
    let known = seeded.iter().find(|p| p.email.is_some()).cloned().unwrap();
    state.seed(seeded.into_iter().take(n));
    let server = SimServer::start(
        Arc::clone(&state),
        dmchamp::router(state),
        dmchamp::State::dump,
    )
    .await
    .unwrap();
    let s = settings(ProviderKind::Dmchamp, server.base_url(), key);
    Fixture {
        client: provider::build(&s).unwrap(),
        settings: s,
        server,
        known,
    }
}

async fn enumerate(client: &AnyProvider) -> Vec<RemoteRecord> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page = client.list_page(cursor.as_deref()).await.unwrap();
        all.extend(page.records);
        match page.next {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
    panic!("the listing never ended");
}

fn assert_complete(records: &[RemoteRecord], expected: usize) {
    let ids: BTreeSet<&str> = records.iter().map(|r| r.remote_id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "no contact twice");
    assert_eq!(records.len(), expected, "every contact once");
}

// ------------------------------------------------------------------ shared scenarios

/// The read each provider's failure scenarios go through: the first listing page where
/// the provider can list, else a phone lookup of a known person.
async fn probe<S>(fx: &Fixture<S>) -> Result<(), ProviderError> {
    probe_with(&fx.client, fx).await
}

async fn probe_with<S>(client: &AnyProvider, fx: &Fixture<S>) -> Result<(), ProviderError> {
    if client.capabilities().enumerate {
        client.list_page(None).await.map(|_| ())
    } else {
        let phone = fx.known.phone_e164.clone().unwrap();
        let found = client.lookup(LookupKey::Phone(&phone)).await?;
        assert!(found.is_some(), "the known person is found");
        Ok(())
    }
}

/// 429 with and without `Retry-After`, a 500, a dropped connection, a body cut off
/// mid-message: retried, then the
/// read succeeds. Malformed answers and a wrong key are reported as such.
async fn failure_contract<S: Send + Sync + 'static>(fx: &Fixture<S>) {
    let kind = fx.client.kind();
    let faults = fx.server.faults();
    for action in [
        FaultAction::too_many_requests(RetryAfter::Seconds(1)),
        FaultAction::too_many_requests(RetryAfter::HttpDate(1)),
        FaultAction::chatwoot_throttled(),
        FaultAction::status(500),
        FaultAction::status(503),
        FaultAction::DropConnection,
        FaultAction::Truncated,
    ] {
        faults.clear();
        faults.add(FaultRule::new(action.clone()).count(2));
        probe(fx)
            .await
            .unwrap_or_else(|e| panic!("{kind}: {action:?} is retried: {e}"));
        assert_eq!(
            faults.fired(),
            2,
            "{kind}: {action:?} fired twice, then the read succeeded"
        );
    }

    for action in [
        FaultAction::InvalidJson,
        FaultAction::HtmlPage { status: 200 },
        FaultAction::Oversized {
            bytes: seed_ten_mb(),
        },
    ] {
        faults.clear();
        faults.add(FaultRule::new(action.clone()));
        let err = probe(fx).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::Malformed, "{kind}: {action:?}: {err}");
        assert_eq!(faults.fired(), 1, "{kind}: {action:?} is not retried");
    }

    faults.clear();
    faults.add(FaultRule::new(FaultAction::HtmlPage { status: 502 }));
    let err = probe(fx).await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Transient,
        "{kind}: a 502 proxy page: {err}"
    );

    faults.clear();
    let err = probe_with(&fx.wrong_key_client(), fx).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Auth, "{kind}: {err}");
    assert!(err.hint.contains("api_key_env"), "{kind}: {}", err.hint);
    probe(fx).await.unwrap();
}

fn seed_ten_mb() -> usize {
    contact_sync::simulator::faults::TEN_MB
}

/// A create answered with a 500 may have been processed: it is not sent again.
async fn create_is_not_repeated<S: Send + Sync + 'static>(
    fx: &Fixture<S>,
    new: &Fields,
    path: &str,
) {
    let faults = fx.server.faults();
    faults.clear();
    faults.add(
        FaultRule::new(FaultAction::status(500))
            .method(Method::POST)
            .path(path)
            .count(1),
    );
    let before = fx.answered("POST", path);
    let err = fx.client.create(new, &Tags::new()).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{err}");
    assert_eq!(
        fx.answered("POST", path) - before,
        1,
        "exactly one create sent"
    );
    faults.clear();
}

// ------------------------------------------------------------------ Chatwoot

#[tokio::test]
async fn chatwoot_enumerates_every_listed_contact() {
    let fx = chatwoot_fixture(LISTED).await;
    let all = enumerate(&fx.client).await;
    assert_complete(&all, fx.server.state().resolved_count());
    assert!(
        all.len() > LISTED * 9 / 10,
        "nearly all seeded people are listed"
    );
    let lists = fx
        .server
        .log()
        .entries()
        .into_iter()
        .filter(|e| e.method == "GET" && e.path.ends_with("/contacts"))
        .collect::<Vec<_>>();
    assert!(
        lists.iter().all(|e| e
            .query
            .as_deref()
            .is_some_and(|q| q.contains("sort=created_at"))),
        "always sorted"
    );
}

#[tokio::test]
async fn chatwoot_lookup_create_update_tags() {
    let fx = chatwoot_fixture(30).await;
    let cw = &fx.client;
    let phone = fx.known.phone_e164.clone().unwrap();
    let email = fx.known.email_key().unwrap();
    let by_phone = cw.lookup(LookupKey::Phone(&phone)).await.unwrap().unwrap();
    let by_email = cw.lookup(LookupKey::Email(&email)).await.unwrap().unwrap();
    assert_eq!(by_phone.remote_id, by_email.remote_id);
    assert!(
        cw.lookup(LookupKey::Phone("+19995550100"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        cw.lookup(LookupKey::Email("nobody@example.com"))
            .await
            .unwrap()
            .is_none()
    );

    let new = fields(&[
        ("name", "Grace Hopper"),
        ("email", "grace@example.com"),
        ("phone", "+14155550100"),
        ("source_id", "cs-Grace"),
        ("attr.plan", "gold"),
    ]);
    let created = cw.create(&new, &Tags::new()).await.unwrap();
    assert!(!created.existed);
    let found = cw
        .lookup(LookupKey::SourceId("cs-Grace"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.remote_id, created.remote_id);
    assert_eq!(found.fields["attr.plan"], "gold");
    assert!(
        cw.lookup(LookupKey::SourceId("cs-grace"))
            .await
            .unwrap()
            .is_none()
    );

    let dup = cw.create(&new, &Tags::new()).await.unwrap_err();
    assert_eq!(dup.kind, ErrorKind::AlreadyExists);
    assert!(
        dup.conflicting.contains(&"email".to_owned()),
        "{:?}",
        dup.conflicting
    );

    let projection = fields(&[
        ("name", "Grace B. Hopper"),
        ("email", ""),
        ("phone", "+14155550100"),
        ("source_id", "cs-Grace"),
    ]);
    let none = Tags::new();
    let target = Target {
        remote_id: &created.remote_id,
        fields: &projection,
        tags: &none,
    };
    cw.update(
        target,
        &fields(&[
            ("name", "Grace B. Hopper"),
            ("email", ""),
            ("attr.plan", ""),
            ("attr.seats", "3"),
        ]),
    )
    .await
    .unwrap();
    let after = cw
        .lookup(LookupKey::Phone("+14155550100"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.fields["name"], "Grace B. Hopper");
    assert_eq!(after.fields["email"], "");
    assert_eq!(after.fields["attr.seats"], "3");
    assert!(!after.fields.contains_key("attr.plan"));

    cw.add_tags(target, &["Navy".to_owned(), "admiral".to_owned()])
        .await
        .unwrap();
    let tags = cw.read_tags(&created.remote_id).await.unwrap();
    assert!(
        tags.contains("navy") && tags.contains("admiral"),
        "{tags:?}"
    );
    let names = cw.list_tag_names().await.unwrap();
    assert!(
        names.iter().any(|n| n.eq_ignore_ascii_case("navy")),
        "account label created: {names:?}"
    );
    let page = cw.list_tag_page("navy", None).await.unwrap();
    assert!(page.remote_ids.contains(&created.remote_id));
    let target = Target {
        remote_id: &created.remote_id,
        fields: &projection,
        tags: &tags,
    };
    cw.remove_tags(target, &["NAVY".to_owned()]).await.unwrap();
    let tags = cw.read_tags(&created.remote_id).await.unwrap();
    assert!(
        !tags.contains("navy") && tags.contains("admiral"),
        "{tags:?}"
    );
}

#[tokio::test]
async fn chatwoot_failures() {
    let fx = chatwoot_fixture(20).await;
    failure_contract(&fx).await;
    create_is_not_repeated(
        &fx,
        &fields(&[("name", "X"), ("phone", "+14155550111")]),
        "/contacts",
    )
    .await;
    let faults = fx.server.faults();
    faults.add(FaultRule::new(FaultAction::WrongTypes));
    let err = fx.client.list_page(None).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Malformed, "{err}");
}

// ------------------------------------------------------------------ MaiAgent

#[tokio::test]
async fn maiagent_enumerates_every_contact() {
    let fx = maiagent_fixture(LISTED).await;
    let all = enumerate(&fx.client).await;
    assert_complete(&all, LISTED);
    assert_eq!(fx.server.state().contact_count(), LISTED);
}

#[tokio::test]
async fn maiagent_lookup_create_update() {
    let fx = maiagent_fixture(10).await;
    let mai = &fx.client;
    let created = mai
        .create(
            &fields(&[
                ("name", "Grace Hopper"),
                ("email", "grace@example.com"),
                ("phone", "+14155550100"),
                ("source_id", "cs-grace"),
                ("attr.plan", "gold"),
            ]),
            &Tags::new(),
        )
        .await
        .unwrap();
    assert!(!created.existed);
    let found = mai
        .lookup(LookupKey::SourceId("cs-grace"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.remote_id, created.remote_id);
    assert_eq!(found.fields["attr.plan"], "gold");
    assert!(
        mai.lookup(LookupKey::SourceId("cs-grac"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        mai.lookup(LookupKey::SourceId("nobody"))
            .await
            .unwrap()
            .is_none()
    );
    // By phone and email through the full-text search, checked exactly: a number that
    // only contains the digits, or a longer email, is not the person.
    for key in [
        LookupKey::Phone("+14155550100"),
        LookupKey::Email("Grace@Example.com"),
    ] {
        let hit = mai.lookup(key).await.unwrap().unwrap();
        assert_eq!(hit.remote_id, created.remote_id, "{key:?}");
    }
    for key in [
        LookupKey::Phone("+1415555010"),
        LookupKey::Email("race@example.com"),
    ] {
        assert!(mai.lookup(key).await.unwrap().is_none(), "{key:?}");
    }

    let projection = fields(&[
        ("name", "Grace B. Hopper"),
        ("email", ""),
        ("phone", "+14155550100"),
        ("source_id", "cs-grace"),
        ("attr.plan", "gold"),
        ("attr.seats", "3"),
    ]);
    let none = Tags::new();
    let target = Target {
        remote_id: &created.remote_id,
        fields: &projection,
        tags: &none,
    };
    mai.update(
        target,
        &fields(&[
            ("name", "Grace B. Hopper"),
            ("email", ""),
            ("attr.seats", "3"),
        ]),
    )
    .await
    .unwrap();
    let after = mai
        .lookup(LookupKey::SourceId("cs-grace"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.fields["name"], "Grace B. Hopper");
    assert_eq!(after.fields["email"], "");
    assert_eq!(after.fields["attr.seats"], "3");
    assert_eq!(after.fields["attr.plan"], "gold");
    assert_eq!(
        mai.read_tags(&created.remote_id).await.unwrap_err().kind,
        ErrorKind::Permanent
    );
}

#[tokio::test]
async fn maiagent_failures() {
    let fx = maiagent_fixture(20).await;
    failure_contract(&fx).await;
    create_is_not_repeated(
        &fx,
        &fields(&[("name", "X"), ("phone", "+14155550111")]),
        "/contacts/",
    )
    .await;
}

#[tokio::test]
async fn maiagent_listing_that_shrinks_asks_for_a_restart() {
    let fx = maiagent_fixture(300).await;
    // Read to the last page, keeping its cursor; then half the contacts go away, so the
    // last page no longer exists.
    let mut all = Vec::new();
    let mut page = fx.client.list_page(None).await.unwrap();
    let mut cursor = String::new();
    while let Some(next) = page.next.take() {
        all.append(&mut page.records);
        cursor = next;
        page = fx.client.list_page(Some(&cursor)).await.unwrap();
    }
    assert!(!cursor.is_empty(), "more than one page");
    for record in all.iter().take(200) {
        // Contacts with conversations refuse deletion (400); enough others go.
        let _ = fx.client.delete(&record.remote_id).await;
    }
    let err = fx.client.list_page(Some(&cursor)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::ListingChanged, "{err}");
}

// ------------------------------------------------------------------ Agentalk

#[tokio::test]
async fn agentalk_lookup_create_update_tags() {
    let fx = agentalk_fixture(30).await;
    let ag = &fx.client;
    let phone = fx.known.phone_e164.clone().unwrap();
    let seeded = ag.lookup(LookupKey::Phone(&phone)).await.unwrap().unwrap();
    assert_eq!(seeded.fields["first_name"], fx.known.first_name);
    assert!(
        ag.lookup(LookupKey::Phone("+19995550100"))
            .await
            .unwrap()
            .is_none()
    );

    let before = fx.server.state().contact_count();
    let created = ag
        .create(
            &fields(&[
                ("phone", "+14155550100"),
                ("first_name", "Grace"),
                ("last_name", "Hopper"),
                ("attr.city", "Arlington"),
            ]),
            &["Navy"].into_iter().collect(),
        )
        .await
        .unwrap();
    assert!(!created.existed);
    assert_eq!(fx.server.state().contact_count(), before + 1);
    let again = ag
        .create(&fields(&[("phone", "+14155550100")]), &Tags::new())
        .await
        .unwrap();
    assert!(again.existed);
    assert_eq!(again.remote_id, created.remote_id);

    let projection = fields(&[
        ("phone", "+14155550100"),
        ("first_name", "Grace"),
        ("last_name", ""),
        ("email", "grace@example.com"),
    ]);
    let tags: Tags = ["Navy"].into_iter().collect();
    let target = Target {
        remote_id: &created.remote_id,
        fields: &projection,
        tags: &tags,
    };
    ag.update(
        target,
        &fields(&[
            ("email", "grace@example.com"),
            ("last_name", ""),
            ("attr.city", ""),
            ("attr.rank", "RADM"),
        ]),
    )
    .await
    .unwrap();
    ag.add_tags(target, &["Admiral".to_owned()]).await.unwrap();
    ag.remove_tags(target, &["navy".to_owned()]).await.unwrap();
    let after = ag
        .lookup(LookupKey::Phone("+14155550100"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.fields["email"], "grace@example.com");
    assert_eq!(after.fields["last_name"], "");
    assert_eq!(after.fields["attr.rank"], "RADM");
    assert!(!after.fields.contains_key("attr.city"));
    let tags = after.tags.unwrap();
    assert!(
        tags.contains("admiral") && !tags.contains("navy"),
        "{tags:?}"
    );
    assert_eq!(
        ag.update(target, &fields(&[("phone", "+14155550101")]))
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Permanent
    );
}

#[tokio::test]
async fn agentalk_failures() {
    let fx = agentalk_fixture(20).await;
    failure_contract(&fx).await;
    // The upsert is keyed on phone, so a repeat after a 500 cannot duplicate: it is retried.
    let faults = fx.server.faults();
    faults.add(
        FaultRule::new(FaultAction::status(500))
            .method(Method::POST)
            .count(1),
    );
    let before = fx.server.state().contact_count();
    fx.client
        .create(
            &fields(&[("phone", "+14155550177"), ("first_name", "Once")]),
            &Tags::new(),
        )
        .await
        .unwrap();
    assert_eq!(fx.server.state().contact_count(), before + 1);
}

// ------------------------------------------------------------------ DM Champ

#[tokio::test]
async fn dmchamp_lookup_create_update_tags() {
    let fx = dmchamp_fixture(30).await;
    let dm = &fx.client;
    let phone = fx.known.phone_e164.clone().unwrap();
    let email = fx.known.email_key().unwrap();
    let by_phone = dm.lookup(LookupKey::Phone(&phone)).await.unwrap().unwrap();
    assert!(by_phone.fields.is_empty());
    let by_email = dm.lookup(LookupKey::Email(&email)).await.unwrap().unwrap();
    assert_eq!(by_phone.remote_id, by_email.remote_id);
    assert!(
        dm.lookup(LookupKey::Phone("+19995550100"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        dm.lookup(LookupKey::Email("nobody@example.com"))
            .await
            .unwrap()
            .is_none()
    );

    let created = dm
        .create(
            &fields(&[
                ("phone", "+14155550100"),
                ("first_name", "Grace"),
                ("source_id", "cs-1"),
            ]),
            &["Navy"].into_iter().collect(),
        )
        .await
        .unwrap();
    assert!(!created.existed);
    let found = dm
        .lookup(LookupKey::Phone("+14155550100"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.remote_id, created.remote_id);
    assert!(
        dm.read_tags(&created.remote_id)
            .await
            .unwrap()
            .contains("navy")
    );
    for mode in [
        dmchamp::DuplicateMode::ReturnExisting,
        dmchamp::DuplicateMode::Conflict,
    ] {
        fx.server.state().set_duplicate_mode(mode);
        let again = dm
            .create(&fields(&[("phone", "+14155550100")]), &Tags::new())
            .await
            .unwrap();
        assert!(again.existed, "{mode:?}");
        assert_eq!(again.remote_id, created.remote_id, "{mode:?}");
    }

    let projection = fields(&[
        ("phone", "+14155550100"),
        ("first_name", "Grace"),
        ("email", "g@example.com"),
    ]);
    let none = Tags::new();
    let target = Target {
        remote_id: &created.remote_id,
        fields: &projection,
        tags: &none,
    };
    dm.update(
        target,
        &fields(&[("last_name", "Hopper"), ("email", "g@example.com")]),
    )
    .await
    .unwrap();
    dm.add_tags(target, &["Admiral".to_owned()]).await.unwrap();
    let tags = dm.read_tags(&created.remote_id).await.unwrap();
    assert!(
        tags.contains("admiral") && tags.contains("navy"),
        "{tags:?}"
    );
    let dump = fx.server.state().dump().to_string();
    assert!(dump.contains("Hopper") && dump.contains("g@example.com"));
    assert_eq!(
        dm.update(target, &fields(&[("phone", "+14155550101")]))
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Permanent
    );
    assert_eq!(
        dm.remove_tags(target, &["navy".to_owned()])
            .await
            .unwrap_err()
            .kind,
        ErrorKind::Permanent
    );
}

#[tokio::test]
async fn dmchamp_failures_and_the_key_stays_out_of_errors() {
    let fx = dmchamp_fixture(20).await;
    failure_contract(&fx).await;
    create_is_not_repeated(&fx, &fields(&[("phone", "+14155550111")]), "/contacts").await;
    let err = fx
        .wrong_key_client()
        .lookup(LookupKey::Phone("+14155550111"))
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("wrong-key"), "{shown}");
}

// ------------------------------------------------------------------ listing ahead

/// Reads a whole listing through the engine's `Listing` (pages requested ahead).
async fn enumerate_ahead(client: &AnyProvider) -> Vec<RemoteRecord> {
    use contact_sync::sync::listing::Listing;
    let mut listing = Listing::new(client);
    let mut all = Vec::new();
    let mut fetched = listing.first().await;
    for _ in 0..10_000 {
        let page = fetched.0.unwrap();
        all.extend(page.records);
        match listing.next(page.next.as_deref()).await {
            Some(f) => fetched = f,
            None => return all,
        }
    }
    panic!("the listing never ended");
}

/// GET requests for contact listing pages the server answered.
fn listing_requests<S>(fx: &Fixture<S>, path_end: &str) -> usize {
    fx.server
        .log()
        .entries()
        .iter()
        .filter(|e| e.method == "GET" && e.path.ends_with(path_end))
        .count()
}

#[tokio::test]
async fn listing_ahead_reads_every_page_once_in_order() {
    // Chatwoot: pages of 15 by number; MaiAgent: pages of 100 by number.
    let cw = chatwoot_fixture(LISTED).await;
    let expected = enumerate(&cw.client).await;
    let before = listing_requests(&cw, "/contacts");
    let ahead = enumerate_ahead(&cw.client).await;
    let ids = |r: &[RemoteRecord]| r.iter().map(|r| r.remote_id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&ahead), ids(&expected), "same records, same order");
    assert_eq!(
        listing_requests(&cw, "/contacts") - before,
        before,
        "exactly as many requests as following `next`"
    );

    let ma = maiagent_fixture(LISTED).await;
    let expected = enumerate(&ma.client).await;
    let before = listing_requests(&ma, "/contacts/");
    let ahead = enumerate_ahead(&ma.client).await;
    assert_eq!(ids(&ahead), ids(&expected));
    assert_eq!(listing_requests(&ma, "/contacts/") - before, before);
    assert_eq!(before, LISTED.div_ceil(100));
}

#[tokio::test]
async fn listing_ahead_follows_a_listing_that_grew_during_the_scan() {
    use contact_sync::sync::listing::Listing;
    let fx = maiagent_fixture(250).await;
    let mut listing = Listing::new(&fx.client);
    let mut fetched = listing.first().await;
    // Three pages were announced; 120 contacts arrive before the rest is read.
    for i in 0..120 {
        let phone = format!("+1415555{i:04}");
        fx.client
            .create(
                &fields(&[("name", "Late Arrival"), ("phone", &phone)]),
                &Tags::default(),
            )
            .await
            .unwrap();
    }
    let mut all = Vec::new();
    loop {
        let page = fetched.0.unwrap();
        all.extend(page.records);
        match listing.next(page.next.as_deref()).await {
            Some(f) => fetched = f,
            None => break,
        }
    }
    assert_complete(&all, 370);
}

#[tokio::test]
async fn listing_ahead_stops_where_a_shrunken_listing_ends() {
    use contact_sync::sync::listing::Listing;
    let fx = maiagent_fixture(450).await;
    let mut listing = Listing::new(&fx.client);
    let first = listing.first().await.0.unwrap();
    assert_eq!(first.last_page, Some(5));
    // The listing shrinks to 2 pages before the rest is read: what is requested ahead
    // beyond the end is dropped, and the listing ends with an error the engine restarts
    // on (MaiAgent answers 404 "Invalid page.") or with the last page — never loops.
    let ids: Vec<String> = enumerate(&fx.client)
        .await
        .into_iter()
        .skip(150)
        .map(|r| r.remote_id)
        .collect();
    for id in &ids {
        fx.server.state().set_has_conversations(id, false);
        fx.client.delete(id).await.unwrap();
    }
    let mut pages = 1;
    let mut next = first.next.clone();
    while let Some(fetched) = listing.next(next.as_deref()).await {
        match fetched.0 {
            Ok(page) => {
                pages += 1;
                next = page.next;
            }
            Err(e) => {
                assert_eq!(e.kind, ErrorKind::ListingChanged, "{e}");
                break;
            }
        }
        assert!(pages <= 5, "never more pages than announced");
    }
}

#[tokio::test]
async fn label_listing_ahead_reads_every_page_once_in_order() {
    use contact_sync::sync::listing::Listing;
    let fx = chatwoot_fixture(LISTED).await;
    let labels = fx.client.list_tag_names().await.unwrap();
    assert!(!labels.is_empty(), "the seeded people carry labels");
    for label in &labels {
        // Following `next`, one page at a time.
        let mut expected = Vec::new();
        let mut cursor: Option<String> = None;
        let mut requests = 0;
        loop {
            let page = fx
                .client
                .list_tag_page(label, cursor.as_deref())
                .await
                .unwrap();
            requests += 1;
            expected.extend(page.remote_ids);
            match page.next {
                Some(n) => cursor = Some(n),
                None => break,
            }
        }
        // Through the engine's listing (pages ahead).
        let before = fx.server.log().entries().len();
        let mut listing = Listing::tagged(&fx.client, label);
        let mut fetched = listing.first().await;
        let mut ahead = Vec::new();
        loop {
            let page = fetched.0.unwrap();
            ahead.extend(page.remote_ids);
            match listing.next(page.next.as_deref()).await {
                Some(f) => fetched = f,
                None => break,
            }
        }
        assert_eq!(ahead, expected, "label {label}: same ids, same order");
        assert_eq!(
            fx.server.log().entries().len() - before,
            requests,
            "label {label}: one request per page"
        );
    }
}
