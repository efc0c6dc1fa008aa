//! What the simulator knows about each simulated provider, and how it handles one
//! without naming it.
//!
//! A provider module implements [`SimulatedProvider`] on its `State`; the list of them is
//! [`super::PROVIDERS`] (one [`entry`] a line). Everything that starts, seeds, describes
//! or configures "every simulated provider" ([`super::Simulation`], [`super::seed`],
//! `demo::config_for`, the tests' `World`, the benchmark) walks that list, so a new
//! provider is its module plus one line there.

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt::Debug;
use std::sync::Arc;

use axum::Router;
use futures::future::BoxFuture;
use serde_json::Value;

use super::faults::Faults;
use super::floor::{FloorPerson, Requests};
use super::log::RequestLog;
use super::ratelimit::{Limit, RateLimitSettings, RateLimits};
use super::seed::{self, Dice, Person};
use super::{SimServer, seed_blocking};

/// One simulated provider: its state type, and the facts about it the simulator needs.
pub trait SimulatedProvider: Send + Sync + Sized + 'static {
    /// The config's `kind` (as `ProviderKind::as_str` spells it) and the key of this
    /// provider's entry in the `contact-sync simulate` object.
    const KIND: &'static str;
    /// The `name` the demo config gives this provider (`support`, `sales-bot`, …).
    const DEMO_NAME: &'static str;
    /// How seeded people are placed into this provider and typed there.
    const SEED: seed::Provider;
    /// Its listing or lookups answer the contact's fields (DM Champ's answer only an id):
    /// what only it holds can be learnt by a sync.
    const REVEALS_FIELDS: bool = true;
    /// Its API shows the tags a contact carries (MaiAgent's has no tags: what its people
    /// carry there cannot be learnt by a sync).
    const REVEALS_TAGS: bool = true;

    /// What a client needs to talk to one instance (account, keys).
    type Credentials: Clone + Debug + Send + Sync + 'static;

    /// Draws credentials from `dice` (deterministic: same dice, same credentials).
    fn credentials(dice: &mut Dice) -> Self::Credentials;
    /// An empty instance with these credentials.
    fn new(credentials: Self::Credentials) -> Self;
    /// Its routes over `state`, auth checked.
    fn router(state: Arc<Self>) -> Router;
    /// Inserts people as a human typed them into this provider.
    fn seed(&self, people: Box<dyn Iterator<Item = Person> + Send>);
    /// Inserts this provider's share of the identity cases of the first `contacts` people
    /// of `seed` ([`seed::identity_cases`]), on top of the population; only when a
    /// simulation is started with them ([`Seeding::identity_cases`]). None by default.
    fn seed_identity_cases(&self, seed: u64, contacts: u64) {
        let _ = (seed, contacts);
    }
    /// The whole state in the provider's JSON shape (`{"contacts": [...], ...}`).
    fn dump(&self) -> Value;
    /// Number of contacts held.
    fn contact_count(&self) -> usize;
    /// This provider's entry of the `simulate` object: `base_url` plus what a config
    /// needs besides it (`api_key`, account or inbox ids).
    fn info(credentials: &Self::Credentials, base_url: &str) -> Value;
    /// The kind-specific lines of a config's `[[providers]]` block for the instance
    /// described by `info` (its `simulate` entry); `name`, `kind`, `base_url` and the key
    /// are written by the caller.
    fn config_lines(info: &Value) -> Vec<String>;
    /// The least requests this provider's API allows for one person in a first import
    /// (see [`super::floor`]), besides reading its listing.
    fn import_floor(person: &FloorPerson<'_>) -> Requests;
    /// The least reads of one whole listing of `held` contacts, `labels` counting how many
    /// carry each label (nothing for a provider that cannot be listed).
    fn listing_floor(held: u64, labels: &BTreeMap<String, u64>) -> u64;
    /// The least reads of one whole listing of what it holds now (nothing for a provider
    /// that cannot be listed).
    fn listing_floor_now(&self) -> u64 {
        0
    }
    /// The limits it enforces under `--rate-limits real` ([`super::ratelimit`]): by
    /// default one limit on every request, `settings.others_per_minute` (the platforms
    /// that document none); a platform with documented limits states them.
    fn rate_limits(settings: &RateLimitSettings) -> Vec<Limit> {
        vec![Limit::all(settings.others_per_minute)]
    }
    /// Its answer to a request over a limit, `left` being the time to the end of the
    /// window.
    fn throttled(left: std::time::Duration) -> axum::response::Response;
}

/// A running simulated provider of any kind (a [`SimServer`] seen through the registry).
pub trait RunningProvider: Send + Sync {
    /// Its kind ([`SimulatedProvider::KIND`]).
    fn kind(&self) -> &'static str;
    /// How seeded people are placed into it ([`SimulatedProvider::SEED`]).
    fn seed_profile(&self) -> seed::Provider;
    /// `http://127.0.0.1:PORT`.
    fn base_url(&self) -> &str;
    /// Its fault rules.
    fn faults(&self) -> &Faults;
    /// Its request log.
    fn log(&self) -> &RequestLog;
    /// Its whole state ([`SimulatedProvider::dump`]).
    fn dump(&self) -> Value;
    /// Number of contacts held.
    fn contact_count(&self) -> usize;
    /// Its entry of the `simulate` object.
    fn info(&self) -> Value;
    /// [`SimulatedProvider::listing_floor_now`].
    fn listing_floor(&self) -> u64;
    /// Its rate limits (off unless set).
    fn rate_limits(&self) -> &RateLimits;
    /// Enforces its platform's limits ([`SimulatedProvider::rate_limits`]) from now on.
    fn enforce_rate_limits(&self, settings: &RateLimitSettings);
    /// The typed server, for [`super::Simulation::server`].
    fn as_any(&self) -> &dyn Any;
    /// Stops it (see [`SimServer::shutdown`]).
    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()>;
}

struct Running<P: SimulatedProvider> {
    server: SimServer<P>,
    credentials: P::Credentials,
}

impl<P: SimulatedProvider> RunningProvider for Running<P> {
    fn kind(&self) -> &'static str {
        P::KIND
    }
    fn seed_profile(&self) -> seed::Provider {
        P::SEED
    }
    fn base_url(&self) -> &str {
        self.server.base_url()
    }
    fn faults(&self) -> &Faults {
        self.server.faults()
    }
    fn log(&self) -> &RequestLog {
        self.server.log()
    }
    fn dump(&self) -> Value {
        self.server.state().dump()
    }
    fn contact_count(&self) -> usize {
        self.server.state().contact_count()
    }
    fn info(&self) -> Value {
        P::info(&self.credentials, self.server.base_url())
    }
    fn listing_floor(&self) -> u64 {
        self.server.state().listing_floor_now()
    }
    fn rate_limits(&self) -> &RateLimits {
        self.server.rate_limits()
    }
    fn enforce_rate_limits(&self, settings: &RateLimitSettings) {
        self.server
            .rate_limits()
            .set(settings, &P::rate_limits(settings), P::throttled);
    }
    fn as_any(&self) -> &dyn Any {
        &self.server
    }
    fn shutdown(self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(self.server.shutdown())
    }
}

/// Credentials of any kind, as [`Entry::credentials`] draws them.
pub type AnyCredentials = Box<dyn Any + Send + Sync>;

/// Who to seed into an instance being started: the first `contacts` people of the
/// population of `seed` that `placement` puts there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seeding {
    /// Seed of the population.
    pub seed: u64,
    /// Size of the population.
    pub contacts: u64,
    /// Which instance of its kind this is: 0 holds the people [`seed::placement`] puts
    /// in the kind; instance `n > 0` draws its own share of the population
    /// ([`seed::people_for_instance`]).
    pub instance: u64,
    /// Also seed the identity cases ([`SimulatedProvider::seed_identity_cases`]).
    pub identity_cases: bool,
}

/// One registry line: a [`SimulatedProvider`] with its type erased.
pub struct Entry {
    /// [`SimulatedProvider::KIND`].
    pub kind: &'static str,
    /// [`SimulatedProvider::DEMO_NAME`].
    pub demo_name: &'static str,
    /// [`SimulatedProvider::SEED`].
    pub seed: seed::Provider,
    /// [`SimulatedProvider::credentials`].
    pub credentials: fn(&mut Dice) -> AnyCredentials,
    /// [`SimulatedProvider::info`] (`Value::Null` for credentials of another kind).
    pub info: fn(&AnyCredentials, &str) -> Value,
    /// [`SimulatedProvider::config_lines`].
    pub config_lines: fn(&Value) -> Vec<String>,
    /// [`SimulatedProvider::REVEALS_FIELDS`].
    pub reveals_fields: bool,
    /// [`SimulatedProvider::REVEALS_TAGS`].
    pub reveals_tags: bool,
    /// [`SimulatedProvider::import_floor`].
    pub import_floor: fn(&FloorPerson<'_>) -> Requests,
    /// [`SimulatedProvider::listing_floor`].
    pub listing_floor: fn(u64, &BTreeMap<String, u64>) -> u64,
    /// [`SimulatedProvider::rate_limits`].
    pub rate_limits: fn(&RateLimitSettings) -> Vec<Limit>,
    /// Builds the state from these credentials (of this kind, else an error), seeds it,
    /// and serves it.
    pub start: fn(
        &AnyCredentials,
        Seeding,
    ) -> BoxFuture<'static, std::io::Result<Box<dyn RunningProvider>>>,
}

impl Entry {
    /// The environment variable the tests and `demo::config_for` use for this kind's key:
    /// `SIM_<KIND>_KEY`.
    pub fn key_env(&self) -> String {
        format!("SIM_{}_KEY", self.kind.to_ascii_uppercase())
    }
}

impl Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The registry line of `P`.
pub const fn entry<P: SimulatedProvider>() -> Entry {
    Entry {
        kind: P::KIND,
        demo_name: P::DEMO_NAME,
        seed: P::SEED,
        credentials: credentials_of::<P>,
        info: info_of::<P>,
        config_lines: P::config_lines,
        reveals_fields: P::REVEALS_FIELDS,
        reveals_tags: P::REVEALS_TAGS,
        import_floor: P::import_floor,
        listing_floor: P::listing_floor,
        rate_limits: P::rate_limits,
        start: start_of::<P>,
    }
}

fn credentials_of<P: SimulatedProvider>(dice: &mut Dice) -> AnyCredentials {
    Box::new(P::credentials(dice))
}

fn info_of<P: SimulatedProvider>(credentials: &AnyCredentials, base_url: &str) -> Value {
    credentials
        .downcast_ref::<P::Credentials>()
        .map_or(Value::Null, |c| P::info(c, base_url))
}

fn start_of<P: SimulatedProvider>(
    credentials: &AnyCredentials,
    seeding: Seeding,
) -> BoxFuture<'static, std::io::Result<Box<dyn RunningProvider>>> {
    let credentials = credentials.downcast_ref::<P::Credentials>().cloned();
    Box::pin(async move {
        let credentials = credentials.ok_or_else(|| {
            std::io::Error::other(format!("credentials of another kind for {}", P::KIND))
        })?;
        let state = Arc::new(P::new(credentials.clone()));
        if seeding.contacts > 0 {
            seed_blocking(&state, move |s| {
                let Seeding {
                    seed,
                    contacts,
                    instance,
                    identity_cases,
                } = seeding;
                s.seed(Box::new(seed::people_for_instance(
                    seed,
                    contacts,
                    P::SEED,
                    instance,
                )));
                if identity_cases {
                    s.seed_identity_cases(seed, contacts);
                }
            })
            .await?;
        }
        let router = P::router(Arc::clone(&state));
        let server = SimServer::start(state, router, P::dump).await?;
        Ok(Box::new(Running::<P> {
            server,
            credentials,
        }) as Box<dyn RunningProvider>)
    })
}
