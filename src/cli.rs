//! The command line (as README.md documents it, which scripts rely on): clap derive
//! types only.

use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Keeps the contacts of Chatwoot, MaiAgent, Agentalk and DM Champ in step.
///
/// Without a subcommand, runs as a daemon on the configured schedule until SIGTERM/SIGINT;
/// with --sync-now, runs one cycle and exits.
#[derive(Debug, Parser)]
#[command(name = "contact-sync", version, about, long_about)]
pub struct Cli {
    /// Config file (else $CONTACT_SYNC_CONFIG, /etc/contact-sync/config.toml, ./contact-sync.toml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Run one full cycle (pull, match, plan, push, drain retries), print a summary, exit.
    #[arg(long)]
    pub sync_now: bool,

    /// With --sync-now: read the providers and print every planned write; send no write and
    /// leave the store as it was.
    #[arg(long, requires = "sync_now")]
    pub dry_run: bool,

    /// With --dry-run: print the first-run match report and the plan as one JSON object.
    #[arg(long, requires = "dry_run")]
    pub json: bool,

    /// Limit the cycle to these providers (instance names; repeatable).
    #[arg(long = "provider", value_name = "NAME")]
    pub providers: Vec<String>,

    /// Log format: pretty (default on a terminal) or json.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,

    /// More log output (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Less log output (warnings and errors only).
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// A subcommand; none runs the sync (daemon or --sync-now).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colour on a terminal).
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show what the store holds: contacts, links per provider, last runs, queued and
    /// given-up pushes, conflicts. Works while the daemon runs.
    Status {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The review queue: records whose person is in doubt (open items), and the
    /// decisions on them. Works while the daemon runs: a decision is carried out by the
    /// next sync cycle.
    Review {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// What to do; none lists the open items.
        #[command(subcommand)]
        action: Option<ReviewAction>,
    },
    /// Load and validate the config, print it with secrets as ***; exit 2 if invalid.
    CheckConfig,
    /// Start simulated providers in-process with overlapping contacts, sync them, and show
    /// what happened. Needs no accounts.
    Demo {
        /// How many people to seed across the simulated providers.
        #[arg(long, default_value_t = 40)]
        contacts: u64,
    },
    /// Serve the four simulated providers on loopback until SIGTERM/SIGINT; prints one
    /// JSON line with their base URLs and credentials.
    Simulate {
        /// How many people to seed.
        #[arg(long, default_value_t = 0)]
        contacts: u64,
        /// Seed of the generated data.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the JSON object to this file.
        #[arg(long, value_name = "FILE")]
        info_file: Option<PathBuf>,
        /// `real`: each simulated provider enforces per-minute limits as its platform does
        /// (Chatwoot 3,000 a minute, contact search 100; the others
        /// `--rate-limit-others`), answering its own 429. `off` (default): no limits.
        #[arg(long, value_enum, default_value_t = RateLimitsMode::Off)]
        rate_limits: RateLimitsMode,
        /// With `--rate-limits real`: requests a minute allowed by the providers that
        /// document no limit (MaiAgent, Agentalk, DM Champ).
        #[arg(long, value_name = "N", default_value_t = crate::simulator::ratelimit::DEFAULT_OTHERS_PER_MINUTE)]
        rate_limit_others: u64,
        /// With `--rate-limits real`: the length of one fixed window (`1m` as on the
        /// platforms); every per-minute limit is scaled to it (`1s`: 3,000 a minute becomes
        /// 50 a second).
        #[arg(long, value_name = "DURATION", default_value = "1m", value_parser = humantime::parse_duration)]
        rate_window: std::time::Duration,
    },
    /// Exit 0 if the running daemon's /readyz answers 200 (for container health checks).
    Healthcheck,
    /// List the recent runs (one per cycle; an undo is a run too): id, start and end,
    /// whether it went through, and per provider what was pulled and written.
    Runs {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// How many runs to show, newest first.
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// Show the history of one person: every change a provider made to them, every write
    /// contact-sync sent, links and deletions, oldest first. Works while the daemon runs.
    History {
        /// The person: an email, a phone, a contact id, or PROVIDER:REMOTE_ID (e.g.
        /// support:42).
        key: String,
        /// Print one JSON object instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Put back what a run changed, as a run of its own: pull, restore the values from
    /// before that run on the fields nobody changed since, and push them to every
    /// provider.
    Undo {
        /// The run to undo (`contact-sync runs` lists them).
        #[arg(long, value_name = "ID")]
        run: i64,
        /// Print the undo's plan; send nothing and leave the store as it was.
        #[arg(long)]
        dry_run: bool,
        /// Also delete the people the run created, in the providers where it created them
        /// and that can delete.
        #[arg(long)]
        delete_created: bool,
    },
    /// Chatwoot account webhooks, which carry a change to contact-sync in seconds.
    Webhooks {
        /// What to do.
        #[command(subcommand)]
        command: WebhooksCommand,
    },
}

/// `review` subcommands.
#[derive(Debug, Subcommand)]
pub enum ReviewAction {
    /// Show an item: its records and the candidate people side by side, field by field.
    Show {
        /// The item's id (from `contact-sync review`).
        id: i64,
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// They are one person: the people become one (the one known longest survives, or
    /// the one named by --keep) and every record of them links to it.
    Merge {
        /// The item's id.
        id: i64,
        /// The contact that survives (one of the item's contacts).
        #[arg(long, value_name = "CONTACT_ID")]
        keep: Option<i64>,
    },
    /// They are different people: the record is linked to one person (the one named by
    /// --link, else the one its strongest key names) and the value it shares with the
    /// other is never used to match them again.
    Apart {
        /// The item's id.
        id: i64,
        /// The contact the record belongs to.
        #[arg(long, value_name = "CONTACT_ID")]
        link: Option<i64>,
    },
}

/// `contact-sync webhooks …`.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// Create (or update) the account webhook posting contact_created and contact_updated
    /// to URL, and print what to put in the config (with the signing secret when
    /// Chatwoot returns one).
    Register {
        /// The Chatwoot provider (instance name in the config).
        #[arg(long, value_name = "NAME")]
        provider: String,
        /// Where Chatwoot posts the events: the daemon's
        /// http(s)://HOST/webhooks/NAME as Chatwoot reaches it.
        #[arg(long, value_name = "URL")]
        url: String,
    },
    /// List the account webhooks of a Chatwoot provider.
    List {
        /// The Chatwoot provider (instance name in the config).
        #[arg(long, value_name = "NAME")]
        provider: String,
    },
}

/// `contact-sync simulate --rate-limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RateLimitsMode {
    /// No limits.
    Off,
    /// The platforms' limits.
    Real,
}
