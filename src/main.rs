//! The `contact-sync` binary: parses the command line, sets up logging, and hands over to
//! [`contact_sync::app`].
use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = contact_sync::cli::Cli::parse();
    // The demo prints its own story; its logs stay quiet unless asked for.
    let quiet = cli.quiet
        || (cli.verbose == 0
            && matches!(cli.command, Some(contact_sync::cli::Command::Demo { .. })));
    contact_sync::telemetry::init(cli.log_format, cli.verbose, quiet);
    contact_sync::app::run(&cli)
}
