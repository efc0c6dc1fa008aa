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
        }) => simulate(*contacts, *seed, info_file.as_deref()),
        Some(Command::Healthcheck) => healthcheck(cli),
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

fn runtime() -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
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
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let cancel = tokio_util::sync::CancellationToken::new();
        crate::daemon::cancel_on_signal(cancel.clone());
        let dry_dir;
        let store_path = if cli.dry_run {
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
        let first_run = cli.dry_run && matches!(store.active_links().await, Ok(0));
        let report_store = store.clone();
        let names: Vec<String> = slots.iter().map(|s| s.settings.name.clone()).collect();
        let mut engine = crate::sync::Engine::new(
            store,
            slots,
            settings.default_region,
            crate::clock::Clock::system(),
        )
        .with_propagate_deletes(settings.propagate_deletes)
        .with_retry_budget(settings.retry_budget);
        let display = crate::daemon::progress::Display::new(&names);
        let opts = crate::sync::CycleOptions {
            dry_run: cli.dry_run,
            drain_all: true,
            cancel,
            pull_only: None,
            progress: Some(display.hook()),
            record_steps: false,
        };
        let result = engine.run_cycle(&opts).await;
        display.finish();
        match result {
            Ok(report) => {
                if cli.dry_run {
                    let items = match report_store.open_review_items().await {
                        Ok(items) => items,
                        Err(e) => {
                            eprintln!("error: {e}");
                            return EXIT_FAILED;
                        }
                    };
                    let matches = report.match_report(&items);
                    if cli.json {
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
                    print!("{}", report.plan_listing());
                    println!();
                }
                print!("{}", report.summary_table());
                if report.ok() { EXIT_OK } else { EXIT_FAILED }
            }
            Err(e) => {
                eprintln!("error: {e}");
                EXIT_FAILED
            }
        }
    })
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

fn simulate(contacts: u64, seed: u64, info_file: Option<&std::path::Path>) -> u8 {
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let sim = match crate::simulator::Simulation::start(crate::simulator::SimOptions {
            contacts,
            seed,
        })
        .await
        {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: cannot start the simulated providers: {e}");
                return EXIT_FAILED;
            }
        };
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
