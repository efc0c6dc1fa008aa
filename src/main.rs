//! The `contact-sync` binary: parses the command line, sets up logging, and hands over to
//! [`contact_sync::app`].
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = contact_sync::cli::Cli::parse();
    contact_sync::telemetry::init(cli.log_format, cli.verbose, cli.quiet);
    contact_sync::app::run(&cli)
}
