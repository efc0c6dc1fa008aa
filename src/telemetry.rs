//! Logging setup: `tracing` with an `EnvFilter` (`RUST_LOG` wins over -v/-q), pretty on a
//! terminal, plain lines elsewhere, JSON with `--log-format json`. Logs go to stderr so
//! stdout stays for command output.

use crate::cli::LogFormat;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `verbose`: 0 = info, 1 = debug, 2+ = trace.
pub fn init(format: Option<LogFormat>, verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(format!(
            "{level},hyper=warn,reqwest=warn,h2=warn,rustls=warn,tokio_cron_scheduler=warn"
        ))
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let is_tty = std::io::stderr().is_terminal();
    let result = match format {
        Some(LogFormat::Json) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        Some(LogFormat::Pretty) | None if is_tty => builder.with_ansi(true).try_init(),
        _ => builder.with_ansi(false).try_init(),
    };
    // A subscriber may already be installed (tests); that one stays.
    let _ = result;
}
