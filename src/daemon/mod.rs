//! Process lifecycle: signals, schedules, systemd notification, the health and metrics
//! endpoint. The only module that knows about clocks and signals.
//!
//! [`run`] is the daemon (`contact-sync` without `--sync-now`): it opens the store (taking
//! the sync lock), binds the endpoint, tells systemd it is ready, runs one cycle over every
//! provider, then cycles on the configured cron schedules ([`schedule`]) until SIGTERM or
//! SIGINT, when it finishes the page or push in flight, commits and exits 0.
//! [`healthcheck`] is `contact-sync healthcheck`.

pub mod health;
pub mod http;
pub mod metrics;
pub mod progress;
pub mod schedule;
pub mod systemd;
pub mod webhooks;

use crate::config::Settings;
use crate::exit::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::provider::Provider;
use crate::store::Store;
use crate::sync::{Engine, ProviderSlot};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the Prometheus recorder's upkeep runs (drains histogram buffers).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);
/// How long `healthcheck` waits for `/readyz`.
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs the daemon until SIGTERM/SIGINT; returns the process exit code (0 after a clean
/// stop; 1 when the store cannot be opened, e.g. another process holds its lock, or the
/// endpoint cannot bind; 2 when a schedule cannot be scheduled).
pub fn run<P: Provider + 'static>(settings: &Settings, slots: Vec<ProviderSlot<P>>) -> u8 {
    let rt = match crate::app::runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let code = rt.block_on(serve(settings, slots));
    // Work abandoned after shutdown_timeout must not hold the exit up.
    rt.shutdown_timeout(Duration::from_secs(1));
    code
}

/// The daemon's body (see [`run`]).
pub async fn serve<P: Provider + 'static>(settings: &Settings, slots: Vec<ProviderSlot<P>>) -> u8 {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone());
    let names: Vec<String> = slots.iter().map(|s| s.settings.name.clone()).collect();
    let schedules: Vec<(String, Option<String>)> = slots
        .iter()
        .map(|s| (s.settings.name.clone(), s.settings.schedule.clone()))
        .collect();

    let store = match Store::open(&settings.store_path).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let health = Arc::new(health::Health::new(&names, settings.unready_after));
    health.set_store_open(true);

    let http_stop = CancellationToken::new();
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut http_task = None;
    if let Some(addr) = settings.http_listen {
        let handle = match metrics::install() {
            Ok(h) => Some(h),
            Err(e) => {
                tracing::warn!("metrics are not available: {e}");
                None
            }
        };
        let listener = match http::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        };
        if let Some(handle) = handle.clone() {
            let stop = http_stop.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(UPKEEP_EVERY);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = every.tick() => handle.run_upkeep(),
                        () = stop.cancelled() => break,
                    }
                }
            });
        }
        if !crate::config::is_loopback(&addr) {
            tracing::warn!(%addr, "the health and metrics endpoint listens beyond loopback; make sure that is intended");
        }
        tracing::info!(%addr, "health and metrics endpoint: /healthz /readyz /metrics");
        let endpoint = http::Endpoint {
            health: Arc::clone(&health),
            metrics: handle,
            webhooks: (!settings.webhooks.is_empty()).then(|| {
                Arc::new(webhooks::Receivers::new(
                    &settings.webhooks,
                    &account_ids(settings),
                    store.clone(),
                    Arc::clone(&wake),
                ))
            }),
        };
        for w in &settings.webhooks {
            if w.allow_unsigned {
                tracing::warn!(provider = %w.provider, "WEBHOOK EVENTS ARE NOT SIGNED: anyone who can reach http://{addr}/webhooks/{} can make contact-sync read any contact of this account; set webhook_secret_env or webhook_secret_file as soon as your Chatwoot signs its webhooks", w.provider);
            } else {
                tracing::info!(provider = %w.provider, "webhook events accepted at POST /webhooks/{} (signed)", w.provider);
            }
        }
        http_task = Some(tokio::spawn(http::serve(
            listener,
            endpoint,
            http_stop.clone(),
        )));
    }
    metrics::register_providers(&names);

    let daemon_store = store.clone();
    let engine = Engine::new(
        store,
        slots,
        settings.default_region,
        crate::clock::Clock::system(),
    )
    .with_propagate_deletes(settings.propagate_deletes)
    .with_retry_budget(settings.retry_budget)
    .with_history_days(settings.history_days);
    let daemon = schedule::Daemon::new(engine, Arc::clone(&health), cancel.clone());
    let groups = schedule::schedule_groups(&settings.schedule, &schedules);
    let mut sched = match schedule::scheduler(&daemon, groups, systemd::watchdog_interval()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            http_stop.cancel();
            return EXIT_USAGE;
        }
    };

    systemd::ready(&format!(
        "store {} open; first cycle running",
        settings.store_path.display()
    ));
    tracing::info!(
        providers = %names.join(","),
        store = %settings.store_path.display(),
        "contact-sync daemon started"
    );
    daemon.start_initial();
    let worker = (!settings.webhooks.is_empty()).then(|| {
        tokio::spawn(webhooks::run_worker(
            Arc::clone(&daemon),
            daemon_store.clone(),
            Arc::clone(&wake),
            cancel.clone(),
        ))
    });
    if let Err(e) = sched.start().await {
        eprintln!("error: cannot start the scheduler: {e}");
        daemon.shutdown(settings.shutdown_timeout).await;
        http_stop.cancel();
        return EXIT_FAILED;
    }

    cancel.cancelled().await;
    systemd::stopping("stopping: finishing the page or push in flight");
    if let Err(e) = sched.shutdown().await {
        tracing::debug!("scheduler shutdown: {e}");
    }
    if daemon.shutdown(settings.shutdown_timeout).await {
        tracing::info!("work in flight finished and committed");
    } else {
        tracing::warn!(
            timeout = %humantime::format_duration(settings.shutdown_timeout),
            "work still in flight after sync.shutdown_timeout; exiting anyway (committed pages and pushes are kept; the rest is redone at the next start)"
        );
    }
    if let Some(worker) = worker {
        let _ = tokio::time::timeout(Duration::from_secs(2), worker).await;
    }
    http_stop.cancel();
    if let Some(task) = http_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
    }
    tracing::info!("contact-sync daemon stopped");
    EXIT_OK
}

/// Each provider's `account_id` (kind-specific; only kinds with one), by name: webhook
/// events of another account are ignored.
fn account_ids(settings: &Settings) -> std::collections::HashMap<String, String> {
    settings
        .providers
        .iter()
        .filter_map(|p| {
            p.kind_settings
                .text("account_id")
                .map(|id| (p.name.clone(), id))
        })
        .collect()
}

/// `contact-sync healthcheck`: exit 0 when the running daemon's `/readyz` answers 200,
/// 1 otherwise (with the reason on stderr), 2 when the config has no `[http] listen`.
pub fn healthcheck(settings: &Settings) -> u8 {
    let Some(listen) = settings.http_listen else {
        eprintln!(
            "error: the configuration has no [http] listen, so there is no endpoint to check; add [http] listen = \"127.0.0.1:9477\""
        );
        return EXIT_USAGE;
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return EXIT_FAILED;
        }
    };
    match rt.block_on(http::check_ready(listen, HEALTHCHECK_TIMEOUT)) {
        Ok(line) => {
            println!("{line}");
            EXIT_OK
        }
        Err(reason) => {
            eprintln!("unhealthy: {reason}");
            EXIT_FAILED
        }
    }
}

/// Cancels `token` on the first SIGTERM or SIGINT (Ctrl-C).
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: finishing the work in flight, then exiting");
        token.cancel();
    });
}

/// Waits for SIGTERM or SIGINT.
pub async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
