//! Client-side pacing: how fast one provider instance is sent requests.
//!
//! The platforms' rate limits are mostly undocumented (Chatwoot: 3,000 a minute per IP and
//! 100 a minute for contact search, answered 429 without `Retry-After`), so the client
//! learns them: [`Aimd`] is an additive-increase, multiplicative-decrease controller of
//! one request class's rate, a pure state machine driven by the caller's clock (tested
//! without timers). [`Pacer`] holds one controller for all the instance's requests and one
//! per request class with its own lower limit (a search endpoint), plus the configured
//! ceiling (`requests_per_second`, through governor).
//!
//! The controller, per class:
//! - **Unpaced until the first 429** (or paced at the ceiling when one is set): a provider
//!   that never throttles is never slowed down.
//! - **It measures what the provider answered** as the answers over the class's **busy
//!   time**: the time when at least one request of the class was waiting for its turn or
//!   in flight, or the class was held back after a 429. A class whose requests are
//!   interleaved with other work (a lookup between two writes) is idle in between, and
//!   that idle time does not count: it says nothing about the provider. After a pause
//!   longer than [`IDLE`] the measurement starts afresh.
//! - **On a 429** every request of the class waits ([`Aimd::throttled`]): for the
//!   `Retry-After` when the provider sends one, else a probe delay that starts at the
//!   retry base delay and doubles on each 429 in a row (at most [`MAX_PROBE_FACTOR`]
//!   times it), so a fixed window that is used up (Chatwoot's minute) costs a handful of
//!   429s, not one per request. The first 429 after an answer also **decreases** the rate
//!   (at most once a second) to [`BETA`] times the measured rate, or times the current
//!   rate if that is lower. The first answer after the 429s refines it the same way, the
//!   wait included (a fixed window used up early shows as its allowance over the whole
//!   window). Only the answer to a request sent after the first 429 ends the wait: one
//!   let in just before the window was used up, and answered just after, says nothing
//!   about the window being over. With a rate in force, no decrease (nor its refinement)
//!   goes below **half that rate**: one 429 can at most halve it, however sparse the
//!   class was.
//! - **On each answer to a request that had to wait** the rate grows by
//!   [`INCREASE_SHARE`] of the measured rate per second of sending (additive: a straight
//!   line between decreases), or of the floor if that is higher: when the floor held the
//!   rate up against a lower measurement, the rate is back where it was within
//!   `1 / INCREASE_SHARE` seconds of sending. Never above the ceiling.
//! - **Near the limit it learnt** (within [`NEAR_LIMIT`] of the rate that met the last
//!   429, as TCP CUBIC keeps the window of its last loss) the increase is [`NEAR_LIMIT_SLOWDOWN`] times
//!   as steep: the rate climbs back quickly to just under the limit, then creeps across
//!   it, so a short window is overshot (and answered 429) a few times less often and
//!   more of the time is spent close to the limit. Past the band it climbs at full speed
//!   again: a limit that was raised is still found.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter, clock::Clock};
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The multiplicative decrease: a 429 sets the rate to this share of what the provider
/// answered (over the class's busy time), or of the current rate if that is lower.
pub const BETA: f64 = 0.9;
/// A decrease (and its refinement) never takes the rate below this share of the rate in
/// force when the 429 came.
pub const FLOOR_SHARE: f64 = 0.5;
/// The additive increase, per second of sending: this share of the measured rate (or of
/// the floor of the last decrease, if higher).
pub const INCREASE_SHARE: f64 = 0.02;
/// The band around the learnt limit (as a share of it, either side) where the increase
/// is slower.
pub const NEAR_LIMIT: f64 = 0.05;
/// How much slower the increase is in that band.
pub const NEAR_LIMIT_SLOWDOWN: f64 = 0.1;
/// The slowest rate a decrease goes to, requests a second.
pub const MIN_RATE: f64 = 0.2;
/// At most one decrease in this long (429s in a burst are one signal).
pub const DECREASE_COOLDOWN: Duration = Duration::from_secs(1);
/// The longest probe delay after 429s in a row, as a multiple of the first one.
pub const MAX_PROBE_FACTOR: u32 = 8;
/// A class idle for longer than this (nothing waiting or in flight, not held back by a
/// 429) starts a new measurement when it is busy again.
pub const IDLE: Duration = Duration::from_secs(5);

/// The rate controller of one request class (see the module doc). Every method takes
/// the time, so it is a pure function of what it was told.
///
/// A request's life: [`Aimd::asked`] when it wants its turn (optional: a request that
/// never waits may skip it), [`Aimd::sent`] when it goes, then one of
/// [`Aimd::answered`], [`Aimd::throttled`] or [`Aimd::released`]; or
/// [`Aimd::withdrawn`] if it gave up before it was sent.
#[derive(Debug, Clone)]
pub struct Aimd {
    /// Requests a second; `None`: unpaced (no 429 seen and no ceiling).
    rate: Option<f64>,
    ceiling: Option<f64>,
    probe_base: Duration,
    probe: Duration,
    next_at: Option<Instant>,
    blocked_until: Option<Instant>,
    throttled_in_a_row: u32,
    /// When the first of the 429s in a row came.
    throttled_since: Option<Instant>,
    last_decrease: Option<Instant>,
    /// Half the rate in force at the last decrease: what no decrease nor refinement goes
    /// below until the next decrease.
    floor: Option<f64>,
    /// What the provider answered at the last decrease or its refinement: the additive
    /// increase is a share of it (or of the floor, if higher).
    increase_basis: f64,
    /// The limit learnt: the rate in force when the last decrease came (the first time,
    /// unpaced, what the provider answered until the wait was over); `None` before the
    /// first 429. Near it the increase is slower.
    learnt: Option<f64>,
    /// The measurement: answers, and the busy time they took, since it started.
    answered: u64,
    busy: Duration,
    /// Up to when `busy` is counted.
    mark: Option<Instant>,
    /// The end of the last busy time.
    last_busy: Option<Instant>,
    /// Requests that asked for their turn and were not sent yet.
    waiting: u32,
    /// Requests sent and not answered yet.
    in_flight: u32,
    probing_until: Option<Instant>,
    decreases: u64,
}

impl Aimd {
    /// A controller capped at `ceiling` requests a second (if any), starting there (or
    /// unpaced), whose first probe delay after a 429 is `probe_base`.
    pub fn new(ceiling: Option<f64>, probe_base: Duration) -> Self {
        let ceiling = ceiling.filter(|c| c.is_finite() && *c > 0.0);
        Aimd {
            rate: ceiling,
            ceiling,
            probe_base,
            probe: probe_base,
            next_at: None,
            blocked_until: None,
            throttled_in_a_row: 0,
            throttled_since: None,
            last_decrease: None,
            floor: None,
            increase_basis: 0.0,
            learnt: None,
            answered: 0,
            busy: Duration::ZERO,
            mark: None,
            last_busy: None,
            waiting: 0,
            in_flight: 0,
            probing_until: None,
            decreases: 0,
        }
    }

    /// The rate in force, requests a second (`None`: unpaced).
    pub fn rate(&self) -> Option<f64> {
        self.rate
    }

    /// How many times the rate was decreased.
    pub fn decreases(&self) -> u64 {
        self.decreases
    }

    /// When the next request may go: `None` now, else the instant to wait for.
    pub fn ready_at(&self, now: Instant) -> Option<Instant> {
        [self.blocked_until, self.next_at, self.probing_until]
            .into_iter()
            .flatten()
            .filter(|t| *t > now)
            .max()
    }

    /// Counts the busy time up to `now`: all of it while a request is waiting or in
    /// flight, else up to the end of a 429's wait.
    fn advance(&mut self, now: Instant) {
        let Some(mark) = self.mark else {
            self.mark = Some(now);
            return;
        };
        if now <= mark {
            return;
        }
        let busy_until = if self.waiting + self.in_flight > 0 {
            now
        } else {
            self.blocked_until.map_or(mark, |b| b.clamp(mark, now))
        };
        if busy_until > mark {
            self.busy += busy_until.saturating_duration_since(mark);
            self.last_busy = Some(busy_until);
        }
        self.mark = Some(now);
    }

    /// A request of an idle class: after a long pause, a new measurement starts.
    fn wake(&mut self, now: Instant) {
        let idle = self.waiting + self.in_flight == 0
            && self.throttled_in_a_row == 0
            && self
                .last_busy
                .is_some_and(|b| now.saturating_duration_since(b) > IDLE);
        if idle {
            self.restart(now);
        }
    }

    /// Starts a new measurement at `now`.
    fn restart(&mut self, now: Instant) {
        self.answered = 0;
        self.busy = Duration::ZERO;
        self.mark = Some(now);
    }

    /// What the provider answered over the busy time of the measurement, requests a
    /// second (`None`: nothing answered, or no busy time to divide by).
    fn measured(&self) -> Option<f64> {
        let busy = self.busy.as_secs_f64();
        (self.answered > 0 && busy > 0.0).then(|| self.answered as f64 / busy)
    }

    /// A request wants its turn at `now` (it may have to wait: that time is busy time).
    pub fn asked(&mut self, now: Instant) {
        self.advance(now);
        self.wake(now);
        self.waiting += 1;
    }

    /// A request that asked gave up before it was sent.
    pub fn withdrawn(&mut self, now: Instant) {
        self.advance(now);
        self.waiting = self.waiting.saturating_sub(1);
    }

    /// A request goes at `now` (after [`Aimd::ready_at`] said so).
    pub fn sent(&mut self, now: Instant) {
        self.advance(now);
        self.wake(now);
        self.waiting = self.waiting.saturating_sub(1);
        self.in_flight += 1;
        self.next_at = self.rate.map(|r| {
            // From the slot this request had, if it went less than an interval late (a
            // timer wakes up to a millisecond after the slot: counted from `now`, 100 a
            // second would be 90), else from now (nothing was waiting: no catching up).
            let step = interval(r);
            let slot = self.next_at.filter(|t| *t <= now && now < *t + step);
            slot.unwrap_or(now) + step
        });
        if self.throttled_in_a_row > 0 {
            // A probe after 429s: one at a time until it is answered.
            self.probing_until = Some(now + self.probe_base * MAX_PROBE_FACTOR * 2);
        }
    }

    /// A request of this class got no answer at all (a transport failure, or it was
    /// dropped): the next one may go.
    pub fn released(&mut self, now: Instant) {
        self.advance(now);
        self.in_flight = self.in_flight.saturating_sub(1);
        self.probing_until = None;
    }

    /// A request of this class sent at `sent` was answered at `now` (anything but a
    /// 429); `waited`: it had to wait for its turn, so the rate was what held it back.
    pub fn answered(&mut self, sent: Instant, now: Instant, mut waited: bool) {
        self.advance(now);
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.throttled_since.is_some_and(|t| sent < t) {
            // Sent before the 429s began, it was let in before the window was used up
            // and only answered after: it says nothing about the window being over.
            self.answered += 1;
            return;
        }
        self.probing_until = None;
        if self.throttled_in_a_row > 0 {
            // The first answer after 429s: the window that was used up is over. What was
            // answered over the busy time until now (the wait included) is what the
            // provider allows.
            if let Some(allowed) = self.measured() {
                let rate = self.rate.map_or(allowed * BETA, |r| r.min(allowed * BETA));
                self.rate = Some(self.bounded(rate));
                self.increase_basis = allowed;
                self.learnt = self.learnt.or(Some(allowed));
            }
            self.restart(now);
            waited = false;
        }
        self.answered += 1;
        self.throttled_in_a_row = 0;
        self.throttled_since = None;
        self.probe = self.probe_base;
        if let (true, Some(rate)) = (waited, self.rate) {
            // Per answer at `rate`: a second of them adds INCREASE_SHARE of the basis.
            let basis = self
                .floor
                .map_or(self.increase_basis, |f| f.max(self.increase_basis));
            let mut step = INCREASE_SHARE * basis / rate.max(MIN_RATE);
            if self
                .learnt
                .is_some_and(|l| (rate - l).abs() <= NEAR_LIMIT * l)
            {
                step *= NEAR_LIMIT_SLOWDOWN;
            }
            self.rate = Some(self.cap(rate + step));
        }
    }

    /// A request of this class was answered 429 at `now`, with the provider's
    /// `Retry-After` if it sent one.
    pub fn throttled(&mut self, now: Instant, retry_after: Option<Duration>) {
        self.advance(now);
        self.in_flight = self.in_flight.saturating_sub(1);
        let first = self.throttled_in_a_row == 0;
        self.throttled_in_a_row += 1;
        if first {
            self.throttled_since = Some(now);
        }
        self.probing_until = None;
        let wait = retry_after.unwrap_or(self.probe);
        if retry_after.is_none() {
            self.probe = (self.probe * 2).min(self.probe_base * MAX_PROBE_FACTOR);
        }
        let until = now + wait;
        self.blocked_until = Some(self.blocked_until.map_or(until, |b| b.max(until)));
        let cooled = self
            .last_decrease
            .is_none_or(|t| now.saturating_duration_since(t) >= DECREASE_COOLDOWN);
        if !(first && cooled) {
            return;
        }
        // Nothing answered yet (the window was used up before we came): nothing to learn
        // from but the wait.
        let Some(measured) = self.measured() else {
            return;
        };
        let before = self.rate;
        self.floor = before.map(|r| r * FLOOR_SHARE);
        let basis = before.map_or(measured, |r| r.min(measured));
        self.increase_basis = basis;
        self.learnt = before;
        self.rate = Some(self.bounded(BETA * basis));
        self.last_decrease = Some(now);
        self.decreases += 1;
    }

    /// `rate` no lower than the floor of the last decrease, within the bounds.
    fn bounded(&self, rate: f64) -> f64 {
        self.cap(self.floor.map_or(rate, |f| rate.max(f)))
    }

    fn cap(&self, rate: f64) -> f64 {
        let rate = rate.max(MIN_RATE);
        self.ceiling.map_or(rate, |c| rate.min(c))
    }
}

fn interval(rate: f64) -> Duration {
    Duration::try_from_secs_f64(1.0 / rate.max(MIN_RATE)).unwrap_or(Duration::from_secs(5))
}

/// What a request is, for pacing: the endpoints with their own lower limit are told apart
/// from the rest by their path alone (no adapter code), e.g. Chatwoot's
/// `/contacts/search` (100 a minute against 3,000 for everything).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// Any request.
    General,
    /// A search endpoint (a path segment `search`).
    Search,
}

impl RequestClass {
    /// The class of a request to `url`.
    pub fn of(url: &url::Url) -> Self {
        if url
            .path_segments()
            .is_some_and(|mut s| s.any(|seg| seg.eq_ignore_ascii_case("search")))
        {
            RequestClass::Search
        } else {
            RequestClass::General
        }
    }

    /// Its label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestClass::General => "all",
            RequestClass::Search => "search",
        }
    }
}

#[derive(Debug)]
struct Controllers {
    all: Aimd,
    search: Aimd,
}

/// The pacing of one provider instance: the learnt rate of all its requests and of its
/// search requests, under the configured ceiling. Waits with tokio's timer, so a paused
/// test clock is respected.
pub struct Pacer {
    provider: String,
    ceiling: Option<DefaultDirectRateLimiter>,
    controllers: Mutex<Controllers>,
}

impl fmt::Debug for Pacer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacer")
            .field("ceiling", &self.ceiling.is_some())
            .field("controllers", &self.controllers)
            .finish()
    }
}

/// A request's turn, from [`Pacer::wait`] until its outcome is told ([`Turn::answered`],
/// [`Turn::throttled`], [`Turn::released`]). Dropped before that (the request was
/// cancelled), it releases its place, so the pacer never counts it as waiting or in
/// flight for good.
#[derive(Debug)]
pub struct Turn<'a> {
    pacer: &'a Pacer,
    class: RequestClass,
    waited: bool,
    /// When it was let through (`None` while it waits).
    sent: Option<Instant>,
    state: TurnState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TurnState {
    Waiting,
    Sent,
    Done,
}

impl Pacer {
    /// A pacer for `provider` with at most `requests_per_second` (`None`, zero, negative
    /// or non-finite: no ceiling), probing after a 429 from `probe_base` on.
    pub fn new(provider: &str, requests_per_second: Option<f64>, probe_base: Duration) -> Self {
        let ceiling = requests_per_second.filter(|r| r.is_finite() && *r > 0.0);
        let quota = ceiling
            .and_then(|r| Duration::try_from_secs_f64(1.0 / r).ok())
            .and_then(Quota::with_period);
        Self {
            provider: provider.to_owned(),
            ceiling: quota.map(RateLimiter::direct),
            controllers: Mutex::new(Controllers {
                all: Aimd::new(ceiling, probe_base),
                search: Aimd::new(ceiling, probe_base),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Controllers> {
        self.controllers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The learnt rate of `class`, requests a second (`None`: unpaced).
    pub fn rate(&self, class: RequestClass) -> Option<f64> {
        let c = self.lock();
        match class {
            RequestClass::General => c.all.rate(),
            RequestClass::Search => c.search.rate(),
        }
    }

    /// Waits until a request of `class` may go out. The turn is the request's place: tell
    /// it the outcome.
    pub async fn wait(&self, class: RequestClass) -> Turn<'_> {
        let mut turn = Turn {
            pacer: self,
            class,
            waited: false,
            sent: None,
            state: TurnState::Waiting,
        };
        {
            let mut c = self.lock();
            let now = Instant::now();
            c.all.asked(now);
            if class == RequestClass::Search {
                c.search.asked(now);
            }
        }
        loop {
            let until = {
                let mut c = self.lock();
                let now = Instant::now();
                let at = match class {
                    RequestClass::General => c.all.ready_at(now),
                    RequestClass::Search => match (c.all.ready_at(now), c.search.ready_at(now)) {
                        (Some(a), Some(b)) => Some(a.max(b)),
                        (a, b) => a.or(b),
                    },
                };
                if at.is_none() {
                    c.all.sent(now);
                    if class == RequestClass::Search {
                        c.search.sent(now);
                    }
                    turn.sent = Some(now);
                    turn.state = TurnState::Sent;
                }
                at
            };
            match until {
                Some(t) => {
                    turn.waited = true;
                    tokio::time::sleep_until(t).await;
                }
                None => break,
            }
        }
        if let Some(limiter) = &self.ceiling {
            loop {
                match limiter.check() {
                    Ok(()) => break,
                    Err(not_until) => {
                        turn.waited = true;
                        let wait = not_until.wait_time_from(limiter.clock().now());
                        tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
                    }
                }
            }
        }
        turn
    }
}

impl Turn<'_> {
    /// The request was answered with something other than a 429.
    pub fn answered(mut self) {
        self.state = TurnState::Done;
        let mut c = self.pacer.lock();
        let now = Instant::now();
        let sent = self.sent.unwrap_or(now);
        match self.class {
            RequestClass::General => c.all.answered(sent, now, self.waited),
            RequestClass::Search => {
                c.search.answered(sent, now, self.waited);
                c.all.answered(sent, now, false);
            }
        }
    }

    /// The request got no answer (a transport failure).
    pub fn released(mut self) {
        self.state = TurnState::Done;
        self.pacer.release(self.class);
    }

    /// The request was answered 429 (with the provider's `Retry-After`, if any): its
    /// class waits and slows down (a search's 429 slows the searches only; when the limit
    /// of everything was reached, the other requests meet it too).
    pub fn throttled(mut self, retry_after: Option<Duration>) {
        self.state = TurnState::Done;
        let pacer = self.pacer;
        let (rate, decreased) = {
            let mut c = pacer.lock();
            let now = Instant::now();
            let aimd = match self.class {
                RequestClass::General => &mut c.all,
                RequestClass::Search => {
                    // It went through the instance's turn too: a probe there is over.
                    c.all.released(now);
                    &mut c.search
                }
            };
            let before = aimd.decreases();
            aimd.throttled(now, retry_after);
            (aimd.rate(), aimd.decreases() > before)
        };
        if decreased && let Some(rate) = rate {
            metrics::gauge!(
                "contact_sync_pacing_rate",
                "provider" => pacer.provider.clone(),
                "class" => self.class.as_str()
            )
            .set(rate);
            tracing::info!(
                provider = %pacer.provider,
                class = self.class.as_str(),
                rate,
                "rate limited: pacing at the learnt rate"
            );
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        match self.state {
            TurnState::Done => {}
            TurnState::Sent => self.pacer.release(self.class),
            TurnState::Waiting => {
                let mut c = self.pacer.lock();
                let now = Instant::now();
                c.all.withdrawn(now);
                if self.class == RequestClass::Search {
                    c.search.withdrawn(now);
                }
            }
        }
    }
}

impl Pacer {
    fn release(&self, class: RequestClass) {
        let mut c = self.lock();
        let now = Instant::now();
        c.all.released(now);
        if class == RequestClass::Search {
            c.search.released(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROBE: Duration = Duration::from_secs(1);

    /// Sends one request at a time, as fast as `ctl` allows, from `start` for `secs`
    /// against a fixed-window limit of `per_window` requests per `window` (windows start
    /// at `start`); each request takes `1 / demand` seconds to be answered, so `demand` is
    /// the most the caller would send per second. Returns (answered, throttled).
    fn run(
        ctl: &mut Aimd,
        start: Instant,
        secs: u64,
        window: Duration,
        per_window: u64,
        demand: f64,
    ) -> (u64, u64) {
        let end = start + Duration::from_secs(secs);
        let latency = interval(demand);
        let mut now = start;
        let (mut ok, mut throttled) = (0, 0);
        let (mut index, mut count) = (0u128, 0u64);
        while now < end {
            ctl.asked(now);
            let waited = match ctl.ready_at(now) {
                Some(t) => {
                    now = t;
                    true
                }
                None => false,
            };
            ctl.sent(now);
            let i = now.duration_since(start).as_nanos() / window.as_nanos();
            if i != index {
                index = i;
                count = 0;
            }
            count += 1;
            let sent = now;
            now += latency;
            if count > per_window {
                throttled += 1;
                ctl.throttled(now, None);
            } else {
                ok += 1;
                ctl.answered(sent, now, waited);
            }
        }
        (ok, throttled)
    }

    /// One request sent at `at` and answered `latency` later, without waiting.
    fn serve(ctl: &mut Aimd, at: Instant, latency: Duration) {
        ctl.sent(at);
        ctl.answered(at, at + latency, false);
    }

    #[test]
    fn unpaced_until_the_first_429() {
        let now = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        assert_eq!(ctl.rate(), None);
        for i in 0..100 {
            let t = now + Duration::from_millis(i);
            assert_eq!(ctl.ready_at(t), None);
            ctl.sent(t);
            ctl.answered(t, t, false);
        }
        assert_eq!(ctl.rate(), None);
    }

    #[test]
    fn a_429_blocks_the_class_and_probes_with_growing_delays() {
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        ctl.sent(t0);
        ctl.throttled(t0, None);
        assert_eq!(ctl.ready_at(t0), Some(t0 + PROBE));
        let t1 = t0 + PROBE;
        ctl.sent(t1);
        ctl.throttled(t1, None);
        let t2 = ctl.ready_at(t1).unwrap();
        assert!(t2 >= t1 + 2 * PROBE, "the probe delay doubles");
        // Capped at MAX_PROBE_FACTOR times the first.
        let mut t = t2;
        for _ in 0..10 {
            ctl.sent(t);
            ctl.throttled(t, None);
            let next = ctl.ready_at(t).unwrap();
            assert!(next.duration_since(t) <= PROBE * MAX_PROBE_FACTOR);
            t = next;
        }
        // A Retry-After is obeyed as given.
        ctl.sent(t);
        ctl.throttled(t, Some(Duration::from_secs(30)));
        assert!(ctl.ready_at(t).unwrap() >= t + Duration::from_secs(30));
    }

    #[test]
    fn the_first_429_sets_the_rate_from_what_was_answered_and_the_wait_refines_it() {
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        // 200 answers in 2 s, one after the other, then a 429.
        for i in 0..200 {
            serve(
                &mut ctl,
                t0 + Duration::from_millis(i * 10),
                Duration::from_millis(10),
            );
        }
        ctl.sent(t0 + Duration::from_secs(2));
        ctl.throttled(t0 + Duration::from_secs(2), None);
        let rate = ctl.rate().unwrap();
        assert!((rate - BETA * 100.0).abs() < 1.0, "{rate}");
        // Further 429s in the same burst do not decrease it again.
        for probe in [3, 5] {
            ctl.sent(t0 + Duration::from_secs(probe));
            ctl.throttled(t0 + Duration::from_secs(probe), None);
        }
        assert_eq!(ctl.rate(), Some(rate));
        assert_eq!(ctl.decreases(), 1);
        // Answered again 8 s after the start, the class held back since the first 429:
        // 200 in 8 s is what the provider allows. No rate was in force before the first
        // 429, so nothing bounds this first estimate.
        ctl.sent(t0 + Duration::from_secs(8));
        ctl.answered(
            t0 + Duration::from_secs(8),
            t0 + Duration::from_secs(8),
            false,
        );
        let rate = ctl.rate().unwrap();
        assert!((rate - BETA * 25.0).abs() < 0.5, "{rate}");
    }

    #[test]
    fn answers_to_requests_sent_before_the_429s_do_not_end_the_wait() {
        // Eight at a time against 6,000 a minute in a fixed window: the window is used up
        // after 6 s; seven requests let in just before it was are answered just after the
        // first 429. They do not mean the window is over: the wait goes on until the
        // window ends, and what was answered over the whole minute is the rate.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        for i in 0..5_993 {
            serve(
                &mut ctl,
                t0 + Duration::from_millis(i),
                Duration::from_millis(1),
            );
        }
        let early = t0 + Duration::from_millis(5_995);
        for _ in 0..7 {
            ctl.sent(early);
        }
        let t = t0 + Duration::from_millis(5_999);
        ctl.sent(t);
        ctl.throttled(t + Duration::from_millis(1), None);
        for _ in 0..7 {
            ctl.answered(early, t + Duration::from_millis(5), false);
        }
        // Probes until the window ends.
        let end = t0 + Duration::from_mins(1);
        let mut t = t + Duration::from_millis(5);
        loop {
            t = ctl.ready_at(t).unwrap_or(t);
            ctl.sent(t);
            if t < end {
                ctl.throttled(t, None);
            } else {
                ctl.answered(t, t + Duration::from_millis(1), false);
                break;
            }
        }
        let rate = ctl.rate().unwrap();
        assert!((rate - BETA * 100.0).abs() < 10.0, "{rate}");
    }

    #[test]
    fn a_timer_that_wakes_late_does_not_slow_the_rate() {
        // Paced at 100 a second, each request goes a millisecond after its slot (a timer's
        // resolution): still 100 a second, not 1 / 11 ms.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(Some(100.0), PROBE);
        let mut t = t0;
        let mut sent = 0;
        while t < t0 + Duration::from_secs(10) {
            ctl.asked(t);
            if let Some(slot) = ctl.ready_at(t) {
                t = slot + Duration::from_millis(1);
            }
            ctl.sent(t);
            ctl.answered(t, t, true);
            sent += 1;
        }
        assert!((990..=1_001).contains(&sent), "{sent}");
    }

    #[test]
    fn a_sparse_class_hitting_a_429_keeps_at_least_half_its_rate() {
        // Paced at 40/s, the class sends a lookup every 2 s between other work (each
        // answered in 20 ms); then the provider's shared limit is used up by the rest and
        // the next lookup is answered 429, and the limit's window ends 8 s later.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(Some(40.0), PROBE);
        for i in 0..30 {
            serve(
                &mut ctl,
                t0 + Duration::from_secs(i * 2),
                Duration::from_millis(20),
            );
        }
        let t = t0 + Duration::from_mins(1);
        ctl.sent(t);
        ctl.throttled(t, None);
        let rate = ctl.rate().unwrap();
        assert!(rate >= 20.0, "one 429 at most halves the rate: {rate}");
        // The probes until the window ends.
        for probe in [1, 3] {
            let t = t + Duration::from_secs(probe);
            ctl.sent(t);
            ctl.throttled(t, None);
        }
        let t = t + Duration::from_secs(8);
        ctl.asked(t);
        let ready = ctl.ready_at(t).unwrap_or(t);
        ctl.sent(ready);
        ctl.answered(ready, ready + Duration::from_millis(20), true);
        let rate = ctl.rate().unwrap();
        assert!(
            rate >= 20.0,
            "the wait's refinement does not take it below half either: {rate}"
        );
        // The idle time between the lookups is not what the provider allows: the decrease
        // itself was by BETA of the rate in force, not to 30 answers a minute.
        assert_eq!(ctl.decreases(), 1);
    }

    #[test]
    fn a_pause_starts_a_new_measurement() {
        // Ten slow answers (a second each), a pause, then 100 answers in a second and a
        // 429: the provider answered 100 a second, not 110 in 11 s.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        for i in 0..10 {
            serve(
                &mut ctl,
                t0 + Duration::from_secs(i),
                Duration::from_secs(1),
            );
        }
        let t1 = t0 + Duration::from_secs(10) + IDLE * 2;
        for i in 0..100 {
            serve(
                &mut ctl,
                t1 + Duration::from_millis(i * 10),
                Duration::from_millis(10),
            );
        }
        let t = t1 + Duration::from_secs(1);
        ctl.sent(t);
        ctl.throttled(t, None);
        let rate = ctl.rate().unwrap();
        assert!((rate - BETA * 100.0).abs() < 1.0, "{rate}");
    }

    #[test]
    fn after_a_decrease_the_rate_climbs_back_to_the_ceiling() {
        // Saturated at a 40/s ceiling against 400 a minute in fixed windows: the window is
        // used up in 10 s and the class is held back for the other 50, which refines the
        // rate down to its floor, half the ceiling.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(Some(40.0), PROBE);
        let (ok, _) = run(&mut ctl, t0, 60, Duration::from_mins(1), 400, 1_000.0);
        assert!(ok >= 400, "{ok}");
        let t = t0 + Duration::from_secs(61);
        ctl.asked(t);
        let t = ctl.ready_at(t).unwrap_or(t);
        ctl.sent(t);
        let sent = t;
        let t = t + Duration::from_millis(1);
        ctl.answered(sent, t, true);
        let low = ctl.rate().unwrap();
        assert!((20.0..30.0).contains(&low), "{low}");
        // Then a minute of sending with requests waiting for their turn and no 429: back
        // at the ceiling, by a straight line (the floor held the rate up against a lower
        // measurement, so it grows by a share of the floor, 2% of 20 a second: 50 s to
        // 40/s, about 1,900 answers in the minute).
        let (ok, throttled) = run(&mut ctl, t, 60, Duration::from_hours(1), u64::MAX, 1_000.0);
        assert_eq!(throttled, 0);
        let rate = ctl.rate().unwrap();
        assert!(rate >= 0.95 * 40.0, "climbed back to {rate}");
        assert!(ok >= 1_800, "{ok}");
    }

    #[test]
    fn a_probe_goes_alone() {
        let t0 = Instant::now();
        let mut ctl = Aimd::new(Some(1_000.0), PROBE);
        ctl.sent(t0);
        ctl.throttled(t0, None);
        let t1 = ctl.ready_at(t0).unwrap();
        ctl.sent(t1);
        let later = t1 + Duration::from_millis(100);
        assert!(
            ctl.ready_at(later).is_some(),
            "waits for the probe's answer"
        );
        ctl.answered(t1, later, true);
        assert!(
            ctl.ready_at(later + Duration::from_millis(10)).is_none(),
            "answered: the next may go"
        );
        ctl.sent(later);
        ctl.throttled(later, None);
        let t2 = ctl.ready_at(later).unwrap();
        ctl.sent(t2);
        ctl.released(t2);
        assert_eq!(
            ctl.ready_at(t2 + Duration::from_millis(10)),
            None,
            "no answer at all: released"
        );
    }

    #[test]
    fn answers_after_waiting_raise_the_rate_additively_up_to_the_ceiling() {
        let t0 = Instant::now();
        let mut ctl = Aimd::new(Some(50.0), PROBE);
        assert_eq!(ctl.rate(), Some(50.0), "a ceiling is where it starts");
        for i in 0..100 {
            serve(
                &mut ctl,
                t0 + Duration::from_millis(i * 20),
                Duration::from_millis(20),
            );
        }
        ctl.sent(t0 + Duration::from_secs(2));
        ctl.throttled(t0 + Duration::from_secs(2), None);
        // The window is over after 2.5 s: 100 answered in 2.5 s.
        ctl.sent(t0 + Duration::from_millis(2_500));
        let t = t0 + Duration::from_millis(2_500);
        ctl.answered(t, t, false);
        let low = ctl.rate().unwrap();
        assert!((low - BETA * 40.0).abs() < 0.5, "{low}");
        // Answers that did not wait say nothing about the rate.
        let t3 = t0 + Duration::from_secs(3);
        ctl.answered(t3, t3, false);
        assert_eq!(ctl.rate(), Some(low));
        // Each answer after a wait adds increase/rate: a second of them adds `increase`.
        let n = low.round() as u64;
        for _ in 0..n {
            ctl.answered(t3, t3, true);
        }
        let grown = ctl.rate().unwrap() - low;
        let expected = INCREASE_SHARE * 40.0;
        assert!(
            (grown - expected).abs() < expected * 0.1,
            "{grown} vs {expected}"
        );
        for _ in 0..100_000 {
            ctl.answered(t3, t3, true);
        }
        assert_eq!(ctl.rate(), Some(50.0), "never above the ceiling");
    }

    #[test]
    fn a_fixed_minute_window_is_learnt_with_few_429s_and_used_well() {
        // Chatwoot: 3,000 a minute in fixed windows, a client that could send 1,000/s.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        let window = Duration::from_mins(1);
        let (ok, throttled) = run(&mut ctl, t0, 20 * 60, window, 3_000, 1_000.0);
        let allowed = 20 * 3_000;
        let share = throttled as f64 / (ok + throttled) as f64;
        let used = ok as f64 / f64::from(allowed);
        eprintln!("share {share} used {used} rate {:?}", ctl.rate());
        assert!(share <= 0.01, "429 share {share}");
        assert!(used >= 0.9, "utilisation {used}");
        let rate = ctl.rate().unwrap();
        assert!((35.0..=80.0).contains(&rate), "learnt rate {rate}");
    }

    #[test]
    fn a_shorter_window_is_learnt_too() {
        // The same rate in ten-second windows, probing from 100 ms.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, Duration::from_millis(100));
        let (ok, throttled) = run(&mut ctl, t0, 300, Duration::from_secs(10), 500, 1_000.0);
        let share = throttled as f64 / (ok + throttled) as f64;
        let used = ok as f64 / (300.0 * 50.0);
        eprintln!("share {share} used {used} rate {:?}", ctl.rate());
        assert!(share <= 0.01, "429 share {share}");
        assert!(used >= 0.9, "utilisation {used}");
    }

    #[test]
    fn near_the_limit_it_learnt_the_rate_creeps_and_past_it_climbs_again() {
        // 100 answered in 5 s, then a 429; answered again at 5 s: 20 a second is the
        // limit learnt, and the rate starts at BETA times it.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, PROBE);
        for i in 0..100 {
            serve(
                &mut ctl,
                t0 + Duration::from_millis(i * 50),
                Duration::from_millis(50),
            );
        }
        let t = t0 + Duration::from_secs(5);
        ctl.sent(t);
        ctl.throttled(t, None);
        ctl.sent(t);
        ctl.answered(t, t, false);
        let start = ctl.rate().unwrap();
        assert!((start - BETA * 20.0).abs() < 0.2, "{start}");
        // Answers that waited, until the rate reaches `target`: how many it took.
        let mut answers_until = |target: f64| {
            let mut n = 0u32;
            while ctl.rate().unwrap() < target {
                ctl.answered(t, t, true);
                n += 1;
            }
            n
        };
        let below = answers_until(19.0);
        let near = answers_until(20.0);
        let above = answers_until(22.0);
        // Per unit of rate: 1.0 below the band, 1.0 in it, 1.0 past it (22 - 21).
        assert!(
            near >= 5 * below,
            "near the limit it creeps: {below} answers for 18 -> 19, {near} for 19 -> 20"
        );
        assert!(
            above < near * 3 / 2,
            "past the band it climbs at full speed again: {above} answers for 20 -> 22 \
             (of which 21 -> 22 out of the band), {near} for 19 -> 20"
        );
    }

    #[test]
    fn one_second_windows_as_the_end_to_end_test_runs_them() {
        // 1,200 a minute in one-second windows, probing from 20 ms.
        let t0 = Instant::now();
        let mut ctl = Aimd::new(None, Duration::from_millis(20));
        let (ok, throttled) = run(&mut ctl, t0, 200, Duration::from_secs(1), 20, 1_000.0);
        let share = throttled as f64 / (ok + throttled) as f64;
        let used = ok as f64 / (200.0 * 20.0);
        eprintln!("share {share} used {used} rate {:?}", ctl.rate());
        assert!(share <= 0.01, "429 share {share}");
        assert!(used >= 0.9, "utilisation {used}");
    }

    /// A fixed-window limit on every request to a provider: the answers admitted per
    /// window, and the 429s.
    struct SharedLimit {
        start: Instant,
        window: Duration,
        per_window: u64,
        admitted: Mutex<Vec<u64>>,
        throttled: Mutex<u64>,
        requests: std::sync::atomic::AtomicU64,
    }

    impl SharedLimit {
        fn admit(&self, now: Instant) -> bool {
            let i = (now.duration_since(self.start).as_nanos() / self.window.as_nanos()) as usize;
            let mut admitted = self.admitted.lock().unwrap();
            if admitted.len() <= i {
                admitted.resize(i + 1, 0);
            }
            if admitted[i] < self.per_window {
                admitted[i] += 1;
                true
            } else {
                *self.throttled.lock().unwrap() += 1;
                false
            }
        }
    }

    /// Sends one request of `class` through `pacer` until it is answered, retrying 429s
    /// at once (as the HTTP client does); each is answered after 1 to 20 ms (a fixed
    /// sequence), so answers do not come back in the order the requests went.
    async fn send(pacer: &Pacer, limit: &SharedLimit, class: RequestClass) {
        loop {
            let turn = pacer.wait(class).await;
            let ok = limit.admit(Instant::now());
            let n = limit
                .requests
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(1 + (n * 7_919) % 20)).await;
            if ok {
                turn.answered();
                return;
            }
            turn.throttled(None);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lookups_between_writes_under_one_shared_limit_keep_the_pipe_full() {
        // Agentalk in the bench: one limit on every request (6,000 a minute in fixed
        // windows); each person is a lookup (a search) then a write, eight people at a
        // time, each request answered in 1 to 20 ms, 5 ms of the engine's own work per
        // person and a 2 s pause for planning every 1,000 people. A search's 429 slows the
        // search class alone, whose requests are half of all and idle while the writes go;
        // requests let in just before a window is used up are answered after the first
        // 429s.
        let pacer = Pacer::new("agentalk", None, Duration::from_secs(1));
        let start = Instant::now();
        let limit = SharedLimit {
            start,
            window: Duration::from_mins(1),
            per_window: 6_000,
            admitted: Mutex::new(Vec::new()),
            throttled: Mutex::new(0),
            requests: std::sync::atomic::AtomicU64::new(0),
        };
        let windows = 10;
        let end = start + limit.window * windows;
        let people = Mutex::new(0u64);
        let (pacer, limit, people) = (&pacer, &limit, &people);
        let worker = || async move {
            while Instant::now() < end {
                let n = {
                    let mut p = people.lock().unwrap();
                    *p += 1;
                    *p
                };
                if n % 1_000 == 0 {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
                send(pacer, limit, RequestClass::Search).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
                send(pacer, limit, RequestClass::General).await;
            }
        };
        futures::future::join_all((0..8).map(|_| worker())).await;

        let admitted = limit.admitted.lock().unwrap().clone();
        let throttled = *limit.throttled.lock().unwrap();
        let answered: u64 = admitted.iter().sum();
        let share = throttled as f64 / (answered + throttled) as f64;
        // Once learnt (from the second window on), the share of each window's allowance
        // that was used.
        let used: Vec<f64> = admitted[1..windows as usize]
            .iter()
            .map(|a| *a as f64 / limit.per_window as f64)
            .collect();
        let mean = used.iter().sum::<f64>() / used.len() as f64;
        let rates = (
            pacer.rate(RequestClass::General),
            pacer.rate(RequestClass::Search),
        );
        eprintln!("429 share {share:.4}, used {used:.2?}, rates {rates:?}");
        assert!(share <= 0.01, "429 share {share}");
        assert!(mean >= 0.9, "utilisation {mean}: {used:.2?}");
        // A window that starts at 90% of the rate learnt in the one before, climbing, may
        // use less than all of its allowance; none falls far behind.
        assert!(
            used.iter().all(|u| *u >= 0.75),
            "no window falls far behind: {used:.2?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_turn_dropped_before_its_answer_gives_its_place_back() {
        let pacer = Pacer::new("p", None, PROBE);
        pacer.wait(RequestClass::General).await.throttled(None);
        let t0 = Instant::now();
        // The probe after the 429 goes alone; cancelled before its answer, it lets the
        // next request go at once rather than after the probe's timeout.
        let probe = pacer.wait(RequestClass::Search).await;
        drop(probe);
        let next = pacer.wait(RequestClass::General).await;
        assert!(Instant::now() - t0 <= PROBE, "{:?}", Instant::now() - t0);
        next.answered();
        // A wait cancelled before its turn is no longer counted as waiting either.
        pacer.wait(RequestClass::General).await.throttled(None);
        let waiting =
            tokio::time::timeout(Duration::from_millis(10), pacer.wait(RequestClass::Search)).await;
        assert!(waiting.is_err(), "still held back by the 429");
        let c = pacer.lock();
        for ctl in [&c.all, &c.search] {
            assert_eq!((ctl.waiting, ctl.in_flight), (0, 0), "{ctl:?}");
        }
    }

    #[test]
    fn search_requests_are_a_class_of_their_own() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert_eq!(
            RequestClass::of(&u("https://h/api/v1/accounts/1/contacts/search?q=x")),
            RequestClass::Search
        );
        assert_eq!(
            RequestClass::of(&u("https://h/api/v1/accounts/1/contacts/filter")),
            RequestClass::General
        );
        assert_eq!(
            RequestClass::of(&u("https://h/api/v1/accounts/1/contacts?q=search")),
            RequestClass::General
        );
    }
}
