//! Turning validated settings into the engine's provider slots: one client per selected
//! provider, built before any request is sent. Used by the CLI commands (`app`), the
//! demo, the tests and the bench.

use crate::config::{ConfigError, Settings};
use crate::exit::{EXIT_FAILED, EXIT_USAGE};
use crate::provider::AnyProvider;
use crate::sync::ProviderSlot;

/// The engine's provider slots, one per selected provider.
pub type Slots = Vec<ProviderSlot<AnyProvider>>;

/// Prints a config error for the user and returns the exit code for it.
pub fn report_config_error(err: &ConfigError) -> u8 {
    eprintln!("error: {err}");
    EXIT_USAGE
}

/// Builds the engine's provider slots for the providers selected by `names` (all when
/// empty). On failure the problem is printed and the exit code returned.
pub fn build_slots(settings: &Settings, names: &[String]) -> Result<Slots, u8> {
    let selected = settings
        .select_providers(names)
        .map_err(|e| report_config_error(&e))?;
    let mut slots = Vec::new();
    for p in selected {
        match crate::provider::build(p) {
            Ok(client) => slots.push(ProviderSlot {
                settings: p.clone(),
                client,
            }),
            Err(e) => {
                eprintln!("error: {e}");
                return Err(EXIT_FAILED);
            }
        }
    }
    Ok(slots)
}
