//! systemd notification (`Type=notify`) through `sd-notify`: READY=1 once the store is
//! open and the config valid, STATUS= lines with the last cycle's result, WATCHDOG=1 from
//! the scheduler when `WatchdogSec=` is set, STOPPING=1 on shutdown. Every call is a
//! no-op without `$NOTIFY_SOCKET` (Docker, Kubernetes, a terminal).

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!("cannot notify systemd: {e}");
    }
}

/// READY=1 with a first STATUS= line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// STATUS=… (shown by `systemctl status`).
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// WATCHDOG=1.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// STOPPING=1 with a STATUS= line.
pub fn stopping(status: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}

/// A 6-field cron expression that fires at least twice per watchdog `interval`
/// (every `interval / 2` seconds, at least every second, at most every 30 s).
pub fn watchdog_cron(interval: Duration) -> String {
    let every = (interval.as_secs() / 2).clamp(1, 30);
    // Steps that divide 60 keep the gaps even across the minute boundary.
    let step = [30, 20, 15, 12, 10, 6, 5, 4, 3, 2, 1]
        .into_iter()
        .find(|s| *s <= every)
        .unwrap_or(1);
    format!("*/{step} * * * * *")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_cron_fires_within_half_the_interval() {
        assert_eq!(watchdog_cron(Duration::from_mins(1)), "*/30 * * * * *");
        assert_eq!(watchdog_cron(Duration::from_secs(14)), "*/6 * * * * *");
        assert_eq!(watchdog_cron(Duration::from_secs(1)), "*/1 * * * * *");
        assert_eq!(watchdog_cron(Duration::from_hours(1)), "*/30 * * * * *");
    }
}
