//! The process exit codes (README.md, "Exit codes"), shared by every command: the CLI
//! layer (`app`), the daemon and the demo all return one of these.

/// Exit code: everything synced / the command succeeded.
pub const EXIT_OK: u8 = 0;
/// Exit code: the cycle ran but something failed, or a runtime error.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: bad usage or invalid config; nothing was done.
pub const EXIT_USAGE: u8 = 2;
