//! Simulated providers: stateful HTTP servers that behave like the real APIs.
//!
//! One module per provider ([`chatwoot`], and `maiagent`, `agentalk`, `dmchamp`) owns that
//! provider's in-memory state and its axum router, written from `reference/providers.md`
//! alone (no code shared with the clients in `src/provider/`). Each follows one interface:
//!
//! ```text
//! pub struct State;                  // contacts behind a lock
//! State::new(Credentials) -> State   // Credentials: provider-specific, pub fields
//! State::seed(&self, people)         // insert seed::Person values as a human typed them
//! State::dump(&self) -> Value        // the whole state in the provider's JSON shape
//! State::contact_count(&self) -> usize
//! router(Arc<State>) -> Router       // the documented paths, auth checked
//! ```
//!
//! This module is the shared machinery around them:
//! - [`SimServer`]: one provider served on `127.0.0.1:<port chosen by the OS>`, wrapped in
//!   the fault-injection ([`faults`]) and request-log ([`log`]) middleware, with the
//!   control endpoint under `/__sim/` (no auth; not logged, not counted, never faulted):
//!   `GET /__sim/state` (the dump), `GET /__sim/log`, `GET /__sim/counters`,
//!   `GET /__sim/faults`, `POST /__sim/faults` (a JSON [`faults::FaultRule`]),
//!   `DELETE /__sim/faults`, `POST /__sim/reset-log`.
//! - [`Simulation`]: the four providers started together and seeded with overlapping
//!   people ([`seed`]); [`Simulation::info`] is the object `contact-sync simulate` prints.
//! - [`SimCredentials`]: every provider's credentials, deterministic from the seed.

pub mod agentalk;
pub mod chatwoot;
pub mod dmchamp;
pub mod faults;
pub mod log;
pub mod maiagent;
pub mod seed;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State as Ext};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use self::faults::{FaultAction, FaultRule, Faults};
use self::log::RequestLog;
use self::seed::Dice;

/// One running simulated provider.
pub struct SimServer<S> {
    base_url: String,
    addr: SocketAddr,
    state: Arc<S>,
    faults: Faults,
    log: RequestLog,
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
        let dump_state = Arc::clone(&state);
        let core = Arc::new(Core {
            faults: faults.clone(),
            log: log.clone(),
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

/// Every simulated provider's credentials, deterministic from the simulation seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimCredentials {
    /// Chatwoot account id, API inbox id and access token.
    pub chatwoot: chatwoot::Credentials,
    /// MaiAgent `Api-Key` (`prefix.secret`, djangorestframework-api-key style).
    pub maiagent_api_key: String,
    /// MaiAgent inbox UUID.
    pub maiagent_inbox_id: String,
    /// Agentalk organization UUID (the token is `{org uuid}.{secret}`).
    pub agentalk_org_id: String,
    /// Agentalk token secret.
    pub agentalk_secret: String,
    /// DM Champ `apiKey`.
    pub dmchamp_api_key: String,
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const BASE58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
const HEX: &[u8] = b"0123456789abcdef";

fn token(d: &mut Dice, alphabet: &[u8], len: usize) -> String {
    (0..len).map(|_| char::from(*d.pick(alphabet))).collect()
}

fn uuid(d: &mut Dice) -> String {
    let a = d.next();
    seed::uuid_from(a, d.next())
}

impl SimCredentials {
    /// The credentials of the simulation with `seed`.
    pub fn from_seed(seed: u64) -> Self {
        let mut d = Dice::new(seed, 0, 0x6372_6564);
        let account_id = 1 + d.below(999);
        let inbox_id = 1 + d.below(99);
        let chatwoot_token = token(&mut d, BASE58, 24);
        let maiagent_api_key = format!("{}.{}", token(&mut d, ALNUM, 8), token(&mut d, ALNUM, 32));
        let maiagent_inbox_id = uuid(&mut d);
        let agentalk_org_id = uuid(&mut d);
        let agentalk_secret = token(&mut d, ALNUM, 32);
        let dmchamp_api_key = token(&mut d, HEX, 32);
        SimCredentials {
            chatwoot: chatwoot::Credentials {
                account_id,
                inbox_id,
                api_key: chatwoot_token,
            },
            maiagent_api_key,
            maiagent_inbox_id,
            agentalk_org_id,
            agentalk_secret,
            dmchamp_api_key,
        }
    }

    /// Agentalk's bearer token: `{org uuid}.{secret}`.
    pub fn agentalk_api_key(&self) -> String {
        format!("{}.{}", self.agentalk_org_id, self.agentalk_secret)
    }

    /// The `contact-sync simulate` object (DESIGN §2) for servers at these base URLs.
    pub fn info(&self, chatwoot: &str, maiagent: &str, agentalk: &str, dmchamp: &str) -> Value {
        json!({
            "chatwoot": {
                "base_url": chatwoot,
                "account_id": self.chatwoot.account_id,
                "inbox_id": self.chatwoot.inbox_id,
                "api_key": self.chatwoot.api_key,
            },
            "maiagent": {
                "base_url": maiagent,
                "inbox_id": self.maiagent_inbox_id,
                "api_key": self.maiagent_api_key,
            },
            "agentalk": {"base_url": agentalk, "api_key": self.agentalk_api_key()},
            "dmchamp": {"base_url": dmchamp, "api_key": self.dmchamp_api_key},
        })
    }
}

/// How to start a [`Simulation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SimOptions {
    /// Size of the seeded population (each person lands in one or more providers).
    pub contacts: u64,
    /// Seed of the population and the credentials.
    pub seed: u64,
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

/// The four simulated providers, started together and seeded with overlapping people.
pub struct Simulation {
    /// The seed it was started with.
    pub seed: u64,
    /// Its credentials.
    pub credentials: SimCredentials,
    /// Chatwoot.
    pub chatwoot: SimServer<chatwoot::State>,
    /// MaiAgent.
    pub maiagent: SimServer<maiagent::State>,
    /// Agentalk.
    pub agentalk: SimServer<agentalk::State>,
    /// DM Champ.
    pub dmchamp: SimServer<dmchamp::State>,
}

impl Simulation {
    /// Starts the four servers on loopback ports chosen by the OS and seeds them with the
    /// first `options.contacts` people of `options.seed` ([`seed::people_for`]).
    pub async fn start(options: SimOptions) -> std::io::Result<Simulation> {
        let SimOptions { contacts, seed } = options;
        let credentials = SimCredentials::from_seed(seed);

        let cw = Arc::new(chatwoot::State::new(credentials.chatwoot.clone()));
        let mai = Arc::new(maiagent::State::new(maiagent::Credentials {
            api_key: credentials.maiagent_api_key.clone(),
            inbox_id: credentials.maiagent_inbox_id.clone(),
        }));
        let ata = Arc::new(agentalk::State::new(agentalk::Credentials {
            org_id: credentials.agentalk_org_id.clone(),
            secret: credentials.agentalk_secret.clone(),
        }));
        let dmc = Arc::new(dmchamp::State::new(dmchamp::Credentials {
            api_key: credentials.dmchamp_api_key.clone(),
        }));

        if contacts > 0 {
            use seed::{Provider, people_for};
            let (a, b, c, d) = tokio::join!(
                seed_blocking(&cw, move |s| s.seed(people_for(
                    seed,
                    contacts,
                    Provider::Chatwoot
                ))),
                seed_blocking(&mai, move |s| s.seed(people_for(
                    seed,
                    contacts,
                    Provider::MaiAgent
                ))),
                seed_blocking(&ata, move |s| s.seed(people_for(
                    seed,
                    contacts,
                    Provider::Agentalk
                ))),
                seed_blocking(&dmc, move |s| s.seed(people_for(
                    seed,
                    contacts,
                    Provider::DmChamp
                ))),
            );
            a?;
            b?;
            c?;
            d?;
        }

        let chatwoot =
            SimServer::start(Arc::clone(&cw), chatwoot::router(cw), chatwoot::State::dump).await?;
        let maiagent = SimServer::start(
            Arc::clone(&mai),
            maiagent::router(mai),
            maiagent::State::dump,
        )
        .await?;
        let agentalk = SimServer::start(
            Arc::clone(&ata),
            agentalk::router(ata),
            agentalk::State::dump,
        )
        .await?;
        let dmchamp =
            SimServer::start(Arc::clone(&dmc), dmchamp::router(dmc), dmchamp::State::dump).await?;
        Ok(Simulation {
            seed,
            credentials,
            chatwoot,
            maiagent,
            agentalk,
            dmchamp,
        })
    }

    /// The object `contact-sync simulate` prints (DESIGN §2): `{"chatwoot": {"base_url",
    /// "account_id", "inbox_id", "api_key"}, "maiagent": {"base_url", "inbox_id",
    /// "api_key"}, "agentalk": {"base_url", "api_key"}, "dmchamp": {"base_url",
    /// "api_key"}}`.
    pub fn info(&self) -> Value {
        self.credentials.info(
            self.chatwoot.base_url(),
            self.maiagent.base_url(),
            self.agentalk.base_url(),
            self.dmchamp.base_url(),
        )
    }

    /// Stops the four servers.
    pub async fn shutdown(self) {
        tokio::join!(
            self.chatwoot.shutdown(),
            self.maiagent.shutdown(),
            self.agentalk.shutdown(),
            self.dmchamp.shutdown(),
        );
    }
}
