//! Command implementations behind the CLI: each returns the process exit code
//! (0 everything synced, 1 something failed, 2 bad usage or invalid config).

use crate::cli::{Cli, Command};
use crate::config::{self, Secrets, Settings};
use crate::slots::{Slots, report_config_error};
use crate::store;
use std::process::ExitCode;

pub use crate::exit::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
pub use crate::slots::build_slots;

/// Runs the parsed command line.
pub fn run(cli: &Cli) -> ExitCode {
    let code = match &cli.command {
        Some(Command::CheckConfig) => check_config(cli),
        Some(Command::Status { json }) => status(cli, *json),
        Some(Command::Review { json, action }) => match load_settings(cli, Secrets::Skip) {
            Ok(settings) => crate::review::run(&settings, *json, action.as_ref()),
            Err(code) => code,
        },
        Some(Command::Demo { contacts }) => demo(*contacts),
        Some(Command::Simulate {
            contacts,
            seed,
            info_file,
            rate_limits,
            rate_limit_others,
            rate_window,
        }) => simulate(
            *contacts,
            *seed,
            info_file.as_deref(),
            (*rate_limits == crate::cli::RateLimitsMode::Real).then_some(
                crate::simulator::ratelimit::RateLimitSettings {
                    window: *rate_window,
                    others_per_minute: *rate_limit_others,
                },
            ),
        ),
        Some(Command::Healthcheck) => healthcheck(cli),
        Some(Command::Runs { json, limit }) => runs(cli, *json, *limit),
        Some(Command::History { key, json }) => history(cli, key, *json),
        Some(Command::Undo {
            run,
            dry_run,
            delete_created,
        }) => undo(
            cli,
            crate::sync::undo::UndoRequest {
                run: *run,
                delete_created: *delete_created,
            },
            *dry_run,
        ),
        Some(Command::Webhooks { command }) => webhooks(cli, command),
        None if cli.sync_now => sync_now(cli),
        None => daemon(cli),
    };
    ExitCode::from(code)
}

fn daemon(cli: &Cli) -> u8 {
    let (settings, slots) = match settings_and_slots(cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    crate::daemon::run(&settings, slots)
}

fn webhooks(cli: &Cli, command: &crate::cli::WebhooksCommand) -> u8 {
    use crate::cli::WebhooksCommand;
    let name = match command {
        WebhooksCommand::Register { provider, .. } | WebhooksCommand::List { provider } => provider,
    };
    let settings = match load_settings(cli, Secrets::Load) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let slots = match build_slots(&settings, std::slice::from_ref(name)) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let Some(slot) = slots.into_iter().next() else {
        return EXIT_USAGE;
    };
    rt.block_on(async {
        match command {
            WebhooksCommand::Register { url, .. } => {
                crate::webhooks::register(&settings, &slot, url).await
            }
            WebhooksCommand::List { .. } => crate::webhooks::list(&slot).await,
        }
    })
}

fn healthcheck(cli: &Cli) -> u8 {
    match load_settings(cli, Secrets::Skip) {
        Ok(settings) => crate::daemon::healthcheck(&settings),
        Err(code) => code,
    }
}

fn load_settings(cli: &Cli, secrets: Secrets) -> Result<Settings, u8> {
    let path = config::locate(cli.config.as_deref()).map_err(|e| report_config_error(&e))?;
    let settings = config::load_with(&path, secrets).map_err(|e| report_config_error(&e))?;
    for warning in &settings.warnings {
        tracing::warn!("{warning}");
    }
    Ok(settings)
}

fn check_config(cli: &Cli) -> u8 {
    let settings = match load_settings(cli, Secrets::Load) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if let Some(source) = &settings.source {
        println!("# effective configuration from {}", source.display());
    }
    print!("{}", settings.to_redacted_toml());
    println!("# configuration is valid");
    EXIT_OK
}

fn status(cli: &Cli, json: bool) -> u8 {
    let settings = match load_settings(cli, Secrets::Skip) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let configured: Vec<(String, String)> = settings
        .providers
        .iter()
        .map(|p| (p.name.clone(), p.kind.as_str().to_owned()))
        .collect();
    let conn = match store::open_read_only(&settings.store_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let report = match store::status::report(conn.as_ref(), &configured) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if json {
        match serde_json::to_string(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot render status: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        if conn.is_none() {
            println!(
                "store {} does not exist yet (no sync has run)",
                settings.store_path.display()
            );
        }
        print!("{}", render_status(&report));
    }
    EXIT_OK
}

/// The human form of the status report.
pub fn render_status(report: &store::status::StatusReport) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "contacts: {}   pending pushes: {}   given up: {}   conflicts: {}",
        report.contacts, report.pending, report.dead, report.conflicts
    );
    let _ = writeln!(
        out,
        "{:<16} {:<9} {:>8}  {:<25} {:<6} {:>7} {:>7} {:>7} {:>5} {:>6}",
        "provider",
        "kind",
        "linked",
        "last run",
        "ok",
        "pulled",
        "created",
        "updated",
        "tags",
        "failed"
    );
    for p in &report.providers {
        match &p.last_run {
            Some(r) => {
                let ok = match r.ok {
                    Some(true) => "yes",
                    Some(false) => "NO",
                    None => "-",
                };
                let _ = writeln!(
                    out,
                    "{:<16} {:<9} {:>8}  {:<25} {:<6} {:>7} {:>7} {:>7} {:>5} {:>6}",
                    p.name,
                    p.kind,
                    p.linked,
                    r.started_at,
                    ok,
                    r.pulled,
                    r.created,
                    r.updated,
                    r.tag_changes,
                    r.failed
                );
                if let Some(err) = &r.error {
                    let _ = writeln!(out, "  └ {err}");
                }
            }
            None => {
                let _ = writeln!(
                    out,
                    "{:<16} {:<9} {:>8}  {:<25}",
                    p.name, p.kind, p.linked, "never"
                );
            }
        }
    }
    if !report.conflict_details.is_empty() {
        let _ = writeln!(
            out,
            "conflicts awaiting review (records kept apart, nothing merged):"
        );
        for c in &report.conflict_details {
            let _ = writeln!(
                out,
                "  {} record {}: {} (contacts {:?}, {})",
                c.provider, c.remote_id, c.reason, c.contacts, c.detected_at
            );
        }
    }
    out
}

/// The async runtime of every command: one thread. The engine's heavy work already has
/// its own threads (the store's writer, the normaliser), and what runs on the runtime is
/// mostly waiting on sockets; a multi-thread runtime only added cross-thread wake-ups
/// for every request and a malloc arena per worker (four-provider import of 100k in the
/// bench: 65.5 -> 58.5 s, peak RSS 62.8 -> 61.2 MiB; BENCHMARKS.md).
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            EXIT_FAILED
        })
}

/// The settings with their secrets, and the slots of the selected providers (an exit
/// code once the problem is printed).
fn settings_and_slots(cli: &Cli) -> Result<(Settings, Slots), u8> {
    let settings = load_settings(cli, Secrets::Load)?;
    let slots = build_slots(&settings, &cli.providers)?;
    Ok((settings, slots))
}

fn sync_now(cli: &Cli) -> u8 {
    let (settings, slots) = match settings_and_slots(cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    run_engine(&settings, slots, cli.dry_run, cli.json, None)
}

/// Runs one cycle (or, with `undo`, the undo of a run) on the store — on a copy of it in
/// dry-run — with progress on the terminal, and prints what it did (`json`: a dry run's
/// match report and plan as one JSON object).
fn run_engine(
    settings: &Settings,
    slots: Slots,
    dry_run: bool,
    json: bool,
    undo: Option<crate::sync::undo::UndoRequest>,
) -> u8 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        crate::daemon::cancel_on_signal(cancel.clone());
        let dry_dir;
        let store_path = if dry_run {
            dry_dir = match tempfile::tempdir() {
                Ok(d) => d,
                Err(e) => {
                    eprintln!("error: cannot create a temporary directory for the dry run: {e}");
                    return EXIT_FAILED;
                }
            };
            let copy = dry_dir.path().join("dry-run.db");
            if let Err(e) = store::copy_for_dry_run(&settings.store_path, &copy) {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
            copy
        } else {
            settings.store_path.clone()
        };
        let store = match store::Store::open(&store_path).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        };
        let first_run = dry_run && undo.is_none() && matches!(store.active_links().await, Ok(0));
        let report_store = store.clone();
        let names: Vec<String> = slots.iter().map(|s| s.settings.name.clone()).collect();
        let mut engine = crate::sync::Engine::new(
            store,
            slots,
            settings.default_region,
            crate::clock::Clock::system(),
        )
        .with_propagate_deletes(settings.propagate_deletes)
        .with_retry_budget(settings.retry_budget)
        .with_history_days(settings.history_days);
        let display = crate::daemon::progress::Display::new(&names);
        let opts = crate::sync::CycleOptions {
            dry_run,
            drain_all: true,
            cancel,
            pull_only: None,
            progress: Some(display.hook()),
            record_steps: false,
            only_contacts: None,
            unlisted: false,
        };
        let result = match undo {
            None => engine.run_cycle(&opts).await.map(|r| (r, None)),
            Some(request) => engine
                .undo_run(&opts, request)
                .await
                .map(|(r, o)| (r, Some((request.run, o)))),
        };
        display.finish();
        match result {
            Ok((report, undone)) => {
                if dry_run {
                    let items = match report_store.open_review_items().await {
                        Ok(items) => items,
                        Err(e) => {
                            eprintln!("error: {e}");
                            return EXIT_FAILED;
                        }
                    };
                    let matches = report.match_report(&items);
                    if json {
                        let plan: Vec<serde_json::Value> = report
                            .providers
                            .iter()
                            .flat_map(|p| {
                                p.steps.iter().map(|s| {
                                    let mut v =
                                        serde_json::to_value(s).unwrap_or(serde_json::Value::Null);
                                    if let Some(o) = v.as_object_mut() {
                                        o.insert("provider".into(), p.name.clone().into());
                                    }
                                    v
                                })
                            })
                            .collect();
                        println!("{}", serde_json::json!({ "report": matches, "plan": plan }));
                        return if report.ok() { EXIT_OK } else { EXIT_FAILED };
                    }
                    println!("dry run: nothing was written to any provider or to the store\n");
                    if first_run {
                        print!("{}", matches.render());
                        println!();
                    }
                }
                if let Some((run, outcome)) = &undone {
                    println!("{}", outcome.describe(*run));
                }
                if dry_run {
                    print!("{}", report.plan_listing());
                    println!();
                }
                print!("{}", report.summary_table());
                if let Some(run) = report.run.filter(|_| !dry_run) {
                    println!("run {run}");
                }
                if report.ok() { EXIT_OK } else { EXIT_FAILED }
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_FAILED
            }
        }
    })
}

/// Opens the store read-only for a report command (`None`: no store yet); an exit code
/// once the problem is printed.
fn read_only_store(settings: &Settings) -> Result<Option<rusqlite::Connection>, u8> {
    let conn = store::open_read_only(&settings.store_path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_FAILED
    })?;
    if let Some(c) = &conn
        && !store::is_current(c).unwrap_or(false)
    {
        eprintln!(
            "error: the store {} was last written by an older contact-sync and has no journal yet; run one sync (`contact-sync --sync-now`, or start the daemon) to bring it up to date",
            settings.store_path.display()
        );
        return Err(EXIT_FAILED);
    }
    Ok(conn)
}

fn print_json(value: &impl serde::Serialize) -> u8 {
    match serde_json::to_string(value) {
        Ok(text) => {
            println!("{text}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: cannot render JSON: {e}");
            EXIT_FAILED
        }
    }
}

fn runs(cli: &Cli, json: bool, limit: usize) -> u8 {
    let settings = match load_settings(cli, Secrets::Skip) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let runs = match read_only_store(&settings) {
        Ok(Some(conn)) => match store::journal::list_runs(&conn, limit) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        },
        Ok(None) => Vec::new(),
        Err(code) => return code,
    };
    if json {
        return print_json(&serde_json::json!({ "runs": runs }));
    }
    print!("{}", render_runs(&runs));
    EXIT_OK
}

/// The human form of `contact-sync runs`.
pub fn render_runs(runs: &[store::journal::RunView]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if runs.is_empty() {
        out.push_str("no runs yet\n");
        return out;
    }
    let _ = writeln!(
        out,
        "{:>6}  {:<21} {:<21} {:<4}  per provider: pulled/created/updated/tags/failed",
        "run", "started", "finished", "ok"
    );
    for r in runs {
        let ok = match r.ok {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let _ = write!(
            out,
            "{:>6}  {:<21} {:<21} {:<4} ",
            r.id,
            r.started_at,
            r.finished_at.as_deref().unwrap_or("-"),
            ok
        );
        for p in &r.providers {
            let _ = write!(
                out,
                " {} {}/{}/{}/{}/{}",
                p.name, p.pulled, p.created, p.updated, p.tag_changes, p.failed
            );
        }
        if let Some(undone) = r.undo_of {
            let _ = write!(out, "  (undo of run {undone})");
        }
        if let Some(trigger) = &r.trigger {
            let _ = write!(out, "  ({trigger})");
        }
        out.push('\n');
    }
    out
}

fn history(cli: &Cli, key: &str, json: bool) -> u8 {
    let settings = match load_settings(cli, Secrets::Skip) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let unknown = || {
        eprintln!(
            "error: no person in the store matches {key:?}; give an email, a phone, a contact id, or PROVIDER:REMOTE_ID (e.g. {}:42)",
            settings
                .providers
                .first()
                .map_or("support", |p| p.name.as_str())
        );
        EXIT_USAGE
    };
    let conn = match read_only_store(&settings) {
        Ok(Some(conn)) => conn,
        Ok(None) => return unknown(),
        Err(code) => return code,
    };
    let found = store::journal::resolve_key(&conn, key, settings.default_region).and_then(|id| {
        id.map(|id| store::journal::history(&conn, id).map(|h| (id, h)))
            .transpose()
    });
    let (contact, entries) = match found {
        Ok(Some(found)) => found,
        Ok(None) => return unknown(),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let events = store::journal::history_events(&entries);
    if json {
        return print_json(&serde_json::json!({ "contact": contact, "events": events }));
    }
    print!("{}", render_history(contact, &events));
    EXIT_OK
}

/// The human form of `contact-sync history`.
pub fn render_history(contact: i64, events: &[store::journal::HistoryEvent]) -> String {
    use std::fmt::Write;
    let mut out = format!("contact {contact}: {} event(s)\n", events.len());
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    for e in events {
        let run = e.run.map(|r| format!("run {r}")).unwrap_or_default();
        let provider = e.provider.as_deref().unwrap_or("contact-sync");
        let what = match &e.field {
            Some(f) => format!("{f} {} → {}", show(&e.old), show(&e.new)),
            // Two people became one: who went into whom.
            None if e.kind == crate::domain::journal::EventKind::Merged && e.provider.is_none() => {
                format!("contact {} → contact {}", show(&e.old), show(&e.new))
            }
            None => format!("record {} → {}", show(&e.old), show(&e.new)),
        };
        let _ = write!(
            out,
            "{}  {:<8} {:<10} {:<16} {what}",
            e.at,
            run,
            e.kind.as_str(),
            provider
        );
        if let Some(op) = &e.op {
            let _ = write!(out, "  [{op}: {}]", e.outcome.as_deref().unwrap_or("ok"));
        }
        out.push('\n');
    }
    out
}

fn undo(cli: &Cli, request: crate::sync::undo::UndoRequest, dry_run: bool) -> u8 {
    let (settings, slots) = match settings_and_slots(cli) {
        Ok(loaded) => loaded,
        Err(code) => return code,
    };
    let info = match read_only_store(&settings) {
        Ok(Some(conn)) => match store::journal::run_info(&conn, request.run) {
            Ok(info) => info,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_FAILED;
            }
        },
        Ok(None) => None,
        Err(code) => return code,
    };
    let Some((started_at, _, _)) = info else {
        eprintln!(
            "error: there is no run {} in the store; `contact-sync runs` lists them",
            request.run
        );
        return EXIT_USAGE;
    };
    let kept_since =
        crate::clock::Clock::system().now_secs() - i64::from(settings.history_days) * 86_400;
    if started_at < kept_since {
        eprintln!(
            "error: run {} began more than store.history_days ({}) days ago; its journal is pruned, so it cannot be undone",
            request.run, settings.history_days
        );
        return EXIT_USAGE;
    }
    run_engine(&settings, slots, dry_run, false, Some(request))
}

fn demo(contacts: u64) -> u8 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(crate::demo::run(contacts)) {
        Ok(text) => {
            print!("{text}");
            EXIT_OK
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}

fn simulate(
    contacts: u64,
    seed: u64,
    info_file: Option<&std::path::Path>,
    rate_limits: Option<crate::simulator::ratelimit::RateLimitSettings>,
) -> u8 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let sim = match crate::simulator::Simulation::start(crate::simulator::SimOptions {
            contacts,
            seed,
            ..crate::simulator::SimOptions::default()
        })
        .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot start the simulated providers: {e}");
                return EXIT_FAILED;
            }
        };
        if let Some(settings) = &rate_limits {
            sim.enforce_rate_limits(settings);
        }
        let info = sim.info().to_string();
        println!("{info}");
        if let Some(path) = info_file
            && let Err(e) = std::fs::write(path, format!("{info}\n"))
        {
            eprintln!("error: cannot write {}: {e}", path.display());
            sim.shutdown().await;
            return EXIT_FAILED;
        }
        tracing::info!("simulated providers are serving; stop with Ctrl-C or SIGTERM");
        crate::daemon::wait_for_signal().await;
        sim.shutdown().await;
        EXIT_OK
    })
}
