//! `contact-sync review`: the review queue for people. Lists the open items, shows one
//! item's records and candidate people side by side, and writes the decisions
//! (`merge`, `apart`) that the next sync cycle carries out.
//!
//! Listing and showing open the store read-only; a decision holds SQLite's write lock
//! only for its own short transaction, so every command works while the daemon runs.

use crate::cli::ReviewAction;
use crate::config::Settings;
use crate::domain::review::Decision;
use crate::exit::{EXIT_FAILED, EXIT_OK, EXIT_USAGE};
use crate::store::{self, review as queue};
use std::collections::BTreeSet;
use std::fmt::Write;

/// Runs `review [--json]` or one of its subcommands; returns the exit code.
pub fn run(settings: &Settings, json: bool, action: Option<&ReviewAction>) -> u8 {
    match action {
        None => list(settings, json),
        Some(ReviewAction::Show {
            id,
            json: show_json,
        }) => show(settings, *id, json || *show_json),
        Some(ReviewAction::Merge { id, keep }) => decide(settings, *id, Decision::Merge, *keep),
        Some(ReviewAction::Apart { id, link }) => decide(settings, *id, Decision::Apart, *link),
    }
}

fn open_read_only(settings: &Settings) -> Result<Option<rusqlite::Connection>, u8> {
    store::open_read_only(&settings.store_path).map_err(|e| {
        eprintln!("error: {e}");
        EXIT_FAILED
    })
}

fn list(settings: &Settings, json: bool) -> u8 {
    let conn = match open_read_only(settings) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let items = match conn.as_ref().map(queue::open_items).transpose() {
        Ok(items) => items.unwrap_or_default(),
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if json {
        println!("{}", serde_json::json!({ "items": items }));
    } else {
        print!("{}", render_list(&items));
    }
    EXIT_OK
}

/// The human form of the open items.
pub fn render_list(items: &[queue::Item]) -> String {
    let mut out = String::new();
    if items.is_empty() {
        out.push_str("no open review items: every record is linked to exactly one person\n");
        return out;
    }
    let _ = writeln!(out, "{} open review item(s):", items.len());
    for i in items {
        let _ = writeln!(
            out,
            "  #{:<5} {:<22} {} record {}  contacts {:?}  opened {}",
            i.id, i.kind, i.provider, i.remote_id, i.contacts, i.opened_at
        );
        let _ = writeln!(out, "         {}", i.reason);
    }
    out.push_str(
        "See one with `contact-sync review show ID`; decide with `review merge ID` (one person) or `review apart ID` (different people).\n",
    );
    out
}

fn show(settings: &Settings, id: i64, json: bool) -> u8 {
    let conn = match open_read_only(settings) {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "error: there is no review item {id}: the store {} does not exist yet (no sync has run)",
                settings.store_path.display()
            );
            return EXIT_USAGE;
        }
        Err(code) => return code,
    };
    let (detail, state) = match queue::show_item(&conn, id) {
        Ok(Some(found)) => found,
        Ok(None) => {
            eprintln!(
                "error: there is no review item {id}; `contact-sync review` lists the open ones"
            );
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    if json {
        match serde_json::to_string(&detail) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("error: cannot render the item: {e}");
                return EXIT_FAILED;
            }
        }
    } else {
        print!("{}", render_detail(&detail, &state));
    }
    EXIT_OK
}

/// The human form of one item: records and people side by side, one row per field.
pub fn render_detail(detail: &queue::ItemDetail, state: &queue::ItemState) -> String {
    let mut out = String::new();
    let item = &detail.item;
    let _ = writeln!(
        out,
        "item #{} ({}), opened {}: {} record {}",
        item.id, item.kind, item.opened_at, item.provider, item.remote_id
    );
    let _ = writeln!(out, "  {}", item.reason);
    match state {
        queue::ItemState::Open => {}
        queue::ItemState::Decided(d) => {
            let _ = writeln!(out, "  decided: {d} (the next sync cycle carries it out)");
        }
        queue::ItemState::Resolved => {
            let _ = writeln!(out, "  closed: nothing left to decide");
        }
    }
    let mut columns: Vec<(String, &crate::domain::Fields)> = Vec::new();
    for r in &detail.records {
        columns.push((format!("{} {}", r.provider, r.remote_id), &r.fields));
    }
    for c in &detail.contacts {
        columns.push((format!("contact {}", c.id), &c.fields));
    }
    let names: BTreeSet<&str> = columns
        .iter()
        .flat_map(|(_, f)| {
            f.iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| k.as_str())
        })
        .collect();
    let width = |s: &str| s.chars().count();
    let mut widths: Vec<usize> = columns
        .iter()
        .map(|(title, fields)| {
            fields
                .values()
                .map(|v| width(v))
                .chain([width(title)])
                .max()
                .unwrap_or(0)
                .min(32)
        })
        .collect();
    for w in &mut widths {
        *w = (*w).max(1);
    }
    let cell = |s: &str, w: usize| {
        let mut s: String = s.chars().take(w).collect();
        let pad = w.saturating_sub(width(&s));
        s.extend(std::iter::repeat_n(' ', pad));
        s
    };
    let _ = write!(out, "\n  {}", cell("", 12));
    for ((title, _), w) in columns.iter().zip(&widths) {
        let _ = write!(out, "  {}", cell(title, *w));
    }
    out.push('\n');
    for name in names {
        let _ = write!(out, "  {}", cell(name, 12));
        for ((_, fields), w) in columns.iter().zip(&widths) {
            let v = fields.get(name).map_or("—", String::as_str);
            let v = if v.is_empty() { "—" } else { v };
            let _ = write!(out, "  {}", cell(v, *w));
        }
        out.push('\n');
    }
    for c in &detail.contacts {
        let links: Vec<String> = c
            .links
            .iter()
            .map(|l| format!("{} {}", l.provider, l.remote_id))
            .collect();
        let _ = writeln!(
            out,
            "  contact {} is linked to: {}",
            c.id,
            if links.is_empty() {
                "nothing".to_owned()
            } else {
                links.join(", ")
            }
        );
    }
    for h in &detail.history {
        let _ = writeln!(
            out,
            "\n  merged by item #{} ({}, {} record {}): contact {} kept{}",
            h.item,
            h.at,
            h.provider,
            h.remote_id,
            h.survivor.map_or_else(|| "?".to_owned(), |c| c.to_string()),
            if h.absorbed.is_empty() {
                String::new()
            } else {
                format!(
                    ", contact {} folded into it",
                    h.absorbed
                        .iter()
                        .map(i64::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
        for r in &h.records {
            let _ = writeln!(
                out,
                "    record {r} merged into the survivor's record there"
            );
        }
        for f in &h.fields {
            let _ = match (&f.dropped, &f.dropped_from) {
                (Some(v), Some(from)) => writeln!(
                    out,
                    "    {}: kept {:?} from {}; not kept {:?} from {}",
                    f.field, f.kept, f.kept_from, v, from
                ),
                _ => writeln!(out, "    {}: {:?} from {}", f.field, f.kept, f.kept_from),
            };
        }
    }
    if *state == queue::ItemState::Open {
        let _ = writeln!(
            out,
            "\nDecide:\n  contact-sync review merge {id} [--keep CONTACT_ID]   they are one person\n  contact-sync review apart {id} [--link CONTACT_ID]   they are different people",
            id = item.id
        );
    }
    out
}

fn decide(settings: &Settings, id: i64, decision: Decision, contact: Option<i64>) -> u8 {
    let mut conn = match store::open_for_decision(&settings.store_path) {
        Ok(Some(c)) => c,
        Ok(None) => {
            eprintln!(
                "error: there is no review item {id}: the store {} does not exist yet (no sync has run)",
                settings.store_path.display()
            );
            return EXIT_USAGE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let now = crate::clock::Clock::system().now_secs();
    match queue::decide(&mut conn, id, decision, contact, now) {
        Ok(queue::Decided::Written) => {
            let what = match (decision, contact) {
                (Decision::Merge, Some(c)) => format!("one person; contact {c} survives"),
                (Decision::Merge, None) => {
                    "one person; the contact known longest survives".to_owned()
                }
                (Decision::Apart, Some(c)) => {
                    format!("different people; the record goes to contact {c}")
                }
                (Decision::Apart, None) => {
                    "different people; the record goes to the person its strongest key names"
                        .to_owned()
                }
            };
            println!(
                "item #{id} decided: {what}. The next sync cycle carries it out (`contact-sync --sync-now`, or the daemon's next tick)."
            );
            EXIT_OK
        }
        Ok(queue::Decided::Unknown) => {
            eprintln!(
                "error: there is no review item {id}; `contact-sync review` lists the open ones"
            );
            EXIT_USAGE
        }
        Ok(queue::Decided::AlreadyDecided(state)) => {
            let how = match state {
                queue::ItemState::Decided(d) => {
                    format!("was already decided ({d}); the next sync cycle carries it out")
                }
                _ => {
                    "is already closed (decided and carried out, or no longer in doubt)".to_owned()
                }
            };
            eprintln!("error: review item {id} {how}; nothing changed");
            EXIT_USAGE
        }
        Ok(queue::Decided::BadContact(why)) => {
            eprintln!("error: review item {id}: {why}; nothing changed");
            EXIT_USAGE
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_FAILED
        }
    }
}
