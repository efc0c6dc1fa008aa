//! Simulated providers: stateful HTTP servers that behave like the real APIs.
//!
//! One module per provider ([`chatwoot`], [`maiagent`], [`agentalk`], [`dmchamp`]) owns
//! that provider's in-memory state and its axum router, written from what is known of the
//! real API alone (no code shared with the clients in `src/provider/`; the HTTP plumbing
//! the simulators share is [`http`]). Each implements [`SimulatedProvider`] on its `State`
//! and has one line in [`PROVIDERS`], the registry: adding a simulated provider is its
//! module, its `mod` line and that one line.
//!
//! This module is the shared machinery around them:
//! - [`SimServer`]: one provider served on `127.0.0.1:<port chosen by the OS>`, wrapped in
//!   the fault-injection ([`faults`]) and request-log ([`log`]) middleware, with the
//!   control endpoint under `/__sim/` (no auth; not logged, not counted, never faulted):
//!   `GET /__sim/state` (the dump), `GET /__sim/log`, `GET /__sim/counters`,
//!   `GET /__sim/faults`, `POST /__sim/faults` (a JSON [`faults::FaultRule`]),
//!   `DELETE /__sim/faults`, `POST /__sim/reset-log`. Rate limits ([`ratelimit`], off
//!   unless set) answer a request over a limit before faults or the handler see it.
//! - [`Simulation`]: every registered provider started together and seeded with
//!   overlapping people ([`seed`]); [`Simulation::info`] is the object `contact-sync
//!   simulate` prints. [`Simulation::start_instances`] starts any set of named instances
//!   (two accounts of one platform, say).
//! - [`SimCredentials`]: every provider's credentials, deterministic from the seed.

pub mod agentalk;
pub mod chatwoot;
pub mod dmchamp;
pub mod faults;
pub mod floor;
pub mod http;
pub mod log;
pub mod maiagent;
pub mod ratelimit;
pub mod registry;
pub mod seed;

pub use self::registry::{Entry, RunningProvider, Seeding, SimulatedProvider, entry};

/// The registry: every simulated provider, one line each, in a fixed order (the order
/// credentials are drawn and people placed in: append, never reorder).
pub static PROVIDERS: &[Entry] = &[
    entry::<chatwoot::State>(),
    entry::<maiagent::State>(),
    entry::<agentalk::State>(),
    entry::<dmchamp::State>(),
];

/// The registry entry of `kind`.
pub fn entry_of(kind: &str) -> Option<&'static Entry> {
    PROVIDERS.iter().find(|e| e.kind == kind)
}

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State as Ext};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::faults::{FaultAction, FaultRule, Faults};
use self::log::RequestLog;
use self::ratelimit::RateLimits;
use self::registry::AnyCredentials;
use self::seed::Dice;

/// One running simulated provider.
pub struct SimServer<S> {
    base_url: String,
    addr: SocketAddr,
    state: Arc<S>,
    faults: Faults,
    log: RequestLog,
    limits: RateLimits,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl<S> std::fmt::Debug for SimServer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimServer")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

/// What the middleware and the control endpoint share.
struct Core {
    faults: Faults,
    log: RequestLog,
    limits: RateLimits,
    dump: Box<dyn Fn() -> Value + Send + Sync>,
}

impl<S: Send + Sync + 'static> SimServer<S> {
    /// Serves `router` (the provider's routes over `state`) on `127.0.0.1:0`, wrapped in
    /// fault injection and the request log, plus the `/__sim/` control endpoint whose
    /// `GET /__sim/state` answers `dump(&state)`.
    pub async fn start(
        state: Arc<S>,
        router: Router,
        dump: fn(&S) -> Value,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let faults = Faults::default();
        let log = RequestLog::default();
        let limits = RateLimits::default();
        let dump_state = Arc::clone(&state);
        let core = Arc::new(Core {
            faults: faults.clone(),
            log: log.clone(),
            limits: limits.clone(),
            dump: Box::new(move || dump(&dump_state)),
        });
        let app = router
            .merge(control_router(Arc::clone(&core)))
            .layer(middleware::from_fn_with_state(core, observe));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Either an explicit shutdown or the handle being dropped.
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulated provider stopped with an error");
            }
        });
        Ok(SimServer {
            base_url: format!("http://{addr}"),
            addr,
            state,
            faults,
            log,
            limits,
            stop: Some(stop),
            task: Some(task),
        })
    }
}

impl<S> SimServer<S> {
    /// `http://127.0.0.1:PORT`: what a config's `base_url` takes (the client appends the
    /// documented paths).
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The socket address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The provider's state.
    pub fn state(&self) -> &Arc<S> {
        &self.state
    }

    /// The fault rules of this server.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The request log of this server.
    pub fn log(&self) -> &RequestLog {
        &self.log
    }

    /// The rate limits of this server (off unless set).
    pub fn rate_limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Stops accepting connections, lets requests in flight finish, and waits for that.
    /// (Dropping the handle also stops the server, without waiting.)
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

/// Fault injection and logging around every provider request; `/__sim/` passes through.
async fn observe(Ext(core): Ext<Arc<Core>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if path == "/__sim" || path.starts_with("/__sim/") {
        return next.run(req).await;
    }
    let method = req.method().clone();
    let query = req.uri().query().map(str::to_owned);
    if let Some(throttled) = core.limits.check(&path, std::time::SystemTime::now()) {
        core.log.record(
            &method,
            &path,
            query.as_deref(),
            throttled.status().as_u16(),
            None,
        );
        return throttled;
    }
    let action = core.faults.pick(&method, &path);
    let kind = action.as_ref().map(FaultAction::kind);
    let response = match action {
        Some(action) => faults::apply(action, req, next).await,
        None => next.run(req).await,
    };
    core.log.record(
        &method,
        &path,
        query.as_deref(),
        response.status().as_u16(),
        kind,
    );
    response
}

fn control_router(core: Arc<Core>) -> Router {
    Router::new()
        .route(
            "/__sim/state",
            get(|Ext(c): Ext<Arc<Core>>| async move { Json((c.dump)()) }),
        )
        .route(
            "/__sim/log",
            get(|Ext(c): Ext<Arc<Core>>| async move { Json(c.log.entries()) }),
        )
        .route(
            "/__sim/counters",
            get(|Ext(c): Ext<Arc<Core>>| async move { Json(c.log.counters()) }),
        )
        .route(
            "/__sim/faults",
            get(|Ext(c): Ext<Arc<Core>>| async move { Json(c.faults.rules()) })
                .post(
                    |Ext(c): Ext<Arc<Core>>, Json(rule): Json<FaultRule>| async move {
                        c.faults.add(rule.clone());
                        (StatusCode::CREATED, Json(rule))
                    },
                )
                .delete(|Ext(c): Ext<Arc<Core>>| async move {
                    c.faults.clear();
                    StatusCode::NO_CONTENT
                }),
        )
        .route(
            "/__sim/reset-log",
            post(|Ext(c): Ext<Arc<Core>>| async move {
                c.log.reset();
                StatusCode::NO_CONTENT.into_response()
            }),
        )
        .with_state(core)
}

// ---------------------------------------------------------------------------------------
// Credentials

/// Every simulated provider's credentials, deterministic from the simulation seed (drawn
/// in registry order from one dice, so adding a provider changes no other's).
pub struct SimCredentials {
    drawn: Vec<(&'static Entry, AnyCredentials)>,
}

/// The dice stream credentials are drawn from.
const CREDENTIALS_STREAM: u64 = 0x6372_6564;

impl SimCredentials {
    /// The credentials of the simulation with `seed` (instance 0 of every provider).
    pub fn from_seed(seed: u64) -> Self {
        let mut d = Dice::new(seed, 0, CREDENTIALS_STREAM);
        SimCredentials {
            drawn: PROVIDERS
                .iter()
                .map(|e| (e, (e.credentials)(&mut d)))
                .collect(),
        }
    }

    /// Credentials of instance `instance` of `entry`'s kind: those of [`Self::from_seed`]
    /// for instance 0, an independent draw for the others.
    pub fn for_instance(seed: u64, entry: &'static Entry, instance: u64) -> AnyCredentials {
        if instance == 0 {
            let mut d = Dice::new(seed, 0, CREDENTIALS_STREAM);
            for e in PROVIDERS {
                let drawn = (e.credentials)(&mut d);
                if e.kind == entry.kind {
                    return drawn;
                }
            }
        }
        let mut d = Dice::new(seed, instance, CREDENTIALS_STREAM);
        (entry.credentials)(&mut d)
    }

    /// The typed credentials of `P`.
    pub fn of<P: SimulatedProvider>(&self) -> Option<&P::Credentials> {
        self.drawn
            .iter()
            .find(|(e, _)| e.kind == P::KIND)
            .and_then(|(_, c)| c.downcast_ref())
    }

    /// The `contact-sync simulate` object for servers at `base_url(kind)`: one entry per
    /// provider, keyed by kind (see [`Simulation::info`]).
    pub fn info(&self, base_url: impl Fn(&str) -> String) -> Value {
        let mut out = Map::new();
        for (e, c) in &self.drawn {
            out.insert(e.kind.to_owned(), (e.info)(c, &base_url(e.kind)));
        }
        Value::Object(out)
    }
}

impl PartialEq for SimCredentials {
    fn eq(&self, other: &Self) -> bool {
        self.info(|_| String::new()) == other.info(|_| String::new())
    }
}

impl Eq for SimCredentials {}

impl std::fmt::Debug for SimCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kinds: Vec<&str> = self.drawn.iter().map(|(e, _)| e.kind).collect();
        f.debug_struct("SimCredentials")
            .field("kinds", &kinds)
            .finish_non_exhaustive()
    }
}

/// How to start a [`Simulation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimOptions {
    /// Size of the seeded population (each person lands in one or more providers).
    pub contacts: u64,
    /// Seed of the population and the credentials.
    pub seed: u64,
    /// Also seed the records that put identity matching to the test
    /// ([`seed::IdentityCases`]: WhatsApp privacy ids in the chat platforms, MaiAgent
    /// records sharing a phone). Off by default: the population's counts stay as they are.
    pub identity_cases: bool,
}

impl chatwoot::State {
    /// Starts a Chatwoot server over `state` (convenience for tests and tools).
    pub async fn serve(state: Arc<Self>) -> std::io::Result<SimServer<Self>> {
        let router = chatwoot::router(Arc::clone(&state));
        SimServer::start(state, router, chatwoot::State::dump).await
    }
}

/// Runs `seed_fn` over `state` on a blocking thread (seeding a million people takes
/// seconds).
async fn seed_blocking<S, F>(state: &Arc<S>, seed_fn: F) -> std::io::Result<()>
where
    S: Send + Sync + 'static,
    F: FnOnce(&S) + Send + 'static,
{
    let state = Arc::clone(state);
    tokio::task::spawn_blocking(move || seed_fn(&state))
        .await
        .map_err(std::io::Error::other)
}

/// One named instance of a simulated provider, to start with
/// [`Simulation::start_instances`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceSpec {
    /// The name a config gives it (`[[providers]] name`).
    pub name: String,
    /// Its kind (a registry entry's).
    pub kind: String,
    /// Which instance of its kind: 0 has the credentials and people of a plain
    /// [`Simulation`]; others draw their own credentials and their own share of the
    /// population (see [`Seeding::instance`]).
    pub instance: u64,
}

impl InstanceSpec {
    /// Instance `instance` of `kind`, named `name`.
    pub fn new(name: &str, kind: &str, instance: u64) -> Self {
        InstanceSpec {
            name: name.to_owned(),
            kind: kind.to_owned(),
            instance,
        }
    }
}

/// One running named instance.
pub struct Instance {
    /// Its name.
    pub name: String,
    /// Which instance of its kind it is.
    pub instance: u64,
    /// The server.
    pub server: Box<dyn RunningProvider>,
}

/// Simulated providers started together and seeded with overlapping people: by default
/// ([`Simulation::start`]) one instance of every registered provider.
pub struct Simulation {
    /// The seed it was started with.
    pub seed: u64,
    /// Its credentials (instance 0 of every registered provider).
    pub credentials: SimCredentials,
    instances: Vec<Instance>,
}

impl Simulation {
    /// Starts one instance of every registered provider, named as the demo names them, on
    /// loopback ports chosen by the OS, seeded with the first `options.contacts` people of
    /// `options.seed` ([`seed::people_for`]).
    pub async fn start(options: SimOptions) -> std::io::Result<Simulation> {
        let specs: Vec<InstanceSpec> = PROVIDERS
            .iter()
            .map(|e| InstanceSpec::new(e.demo_name, e.kind, 0))
            .collect();
        Simulation::start_instances(options, &specs).await
    }

    /// Starts the instances of `specs`, in that order, seeded concurrently.
    pub async fn start_instances(
        options: SimOptions,
        specs: &[InstanceSpec],
    ) -> std::io::Result<Simulation> {
        let SimOptions {
            contacts,
            seed,
            identity_cases,
        } = options;
        let mut starting = Vec::with_capacity(specs.len());
        for spec in specs {
            let entry = entry_of(&spec.kind).ok_or_else(|| {
                std::io::Error::other(format!("no simulated provider of kind {}", spec.kind))
            })?;
            let credentials = SimCredentials::for_instance(seed, entry, spec.instance);
            let seeding = Seeding {
                seed,
                contacts,
                instance: spec.instance,
                identity_cases,
            };
            starting.push(tokio::spawn((entry.start)(&credentials, seeding)));
        }
        let mut instances = Vec::with_capacity(specs.len());
        for (spec, task) in specs.iter().zip(starting) {
            let server = task.await.map_err(std::io::Error::other)??;
            instances.push(Instance {
                name: spec.name.clone(),
                instance: spec.instance,
                server,
            });
        }
        Ok(Simulation {
            seed,
            credentials: SimCredentials::from_seed(seed),
            instances,
        })
    }

    /// The object `contact-sync simulate` prints: one entry per kind, keyed by kind, for
    /// instance 0 of each: `{"chatwoot": {"base_url", "account_id", "inbox_id",
    /// "api_key"}, "maiagent": {"base_url", "inbox_id", "api_key"}, "agentalk":
    /// {"base_url", "api_key"}, "dmchamp": {"base_url", "api_key"}}` (`base_url` is what a
    /// config's `base_url` takes).
    pub fn info(&self) -> Value {
        let mut out = Map::new();
        for i in self.instances.iter().filter(|i| i.instance == 0) {
            out.insert(i.server.kind().to_owned(), i.server.info());
        }
        Value::Object(out)
    }

    /// Makes every instance enforce its platform's rate limits from now on
    /// (`contact-sync simulate --rate-limits real`; see [`ratelimit`]).
    pub fn enforce_rate_limits(&self, settings: &ratelimit::RateLimitSettings) {
        for i in &self.instances {
            i.server.enforce_rate_limits(settings);
        }
    }

    /// Every running instance, in the order started.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The running instance named `name`.
    pub fn instance(&self, name: &str) -> Option<&dyn RunningProvider> {
        self.instances
            .iter()
            .find(|i| i.name == name)
            .map(|i| &*i.server)
    }

    /// The first running instance of `kind`.
    pub fn provider(&self, kind: &str) -> Option<&dyn RunningProvider> {
        self.instances
            .iter()
            .find(|i| i.server.kind() == kind)
            .map(|i| &*i.server)
    }

    /// The first running instance of `P`, typed (its state, its credentials' effects).
    pub fn server<P: SimulatedProvider>(&self) -> Option<&SimServer<P>> {
        self.instances
            .iter()
            .find_map(|i| i.server.as_any().downcast_ref::<SimServer<P>>())
    }

    /// Stops every instance.
    pub async fn shutdown(self) {
        futures::future::join_all(self.instances.into_iter().map(|i| i.server.shutdown())).await;
    }
}
