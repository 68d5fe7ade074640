//! Bounds on what refused clients cost: refusals per source address, and refusal log lines.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::lock;

/// The address a request came from, put on each request by the HTTPS server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// Refusals each source address may earn per window before it is turned away unheard.
pub const REFUSALS_PER_WINDOW: u32 = 20;
const WINDOW: Duration = Duration::from_secs(10);
/// Sources tracked at once; beyond, the table starts over (a flood from many addresses is
/// then bounded by the review slots instead).
const MAX_SOURCES: usize = 10_000;

/// Counts refusals per source address in fixed windows.
#[derive(Default)]
pub struct RefusalsBySource {
    sources: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl RefusalsBySource {
    /// Whether `source` has had its share of refusals in the current window.
    pub fn exhausted(&self, source: IpAddr, now: Instant) -> bool {
        lock(&self.sources)
            .get(&source)
            .is_some_and(|&(start, count)| now < start + WINDOW && count >= REFUSALS_PER_WINDOW)
    }

    pub fn record(&self, source: IpAddr, now: Instant) {
        let mut sources = lock(&self.sources);
        if sources.len() >= MAX_SOURCES && !sources.contains_key(&source) {
            sources.clear();
        }
        let entry = sources.entry(source).or_insert((now, 0));
        if now >= entry.0 + WINDOW {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }
}

/// A budget of log lines per window; what goes over is counted and told with the next line.
pub struct LogBudget {
    lines_per_window: u32,
    window: Duration,
    state: Mutex<Option<(Instant, u32, u64)>>,
}

impl LogBudget {
    pub const fn new(lines_per_window: u32, window: Duration) -> Self {
        LogBudget {
            lines_per_window,
            window,
            state: Mutex::new(None),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` lines having been held back before it;
    /// `None` when this one is held back.
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = lock(&self.state);
        let (start, logged, held_back) = state.get_or_insert((now, 0, 0));
        if now >= *start + self.window {
            *start = now;
            *logged = 0;
        }
        if *logged >= self.lines_per_window {
            *held_back = held_back.saturating_add(1);
            return None;
        }
        *logged += 1;
        Some(std::mem::take(held_back))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn a_source_is_turned_away_after_its_refusals_until_the_window_ends() {
        let limiter = RefusalsBySource::default();
        let flood = IpAddr::from(Ipv4Addr::new(10, 0, 0, 1));
        let other = IpAddr::from(Ipv4Addr::new(10, 0, 0, 2));
        let now = Instant::now();
        for _ in 0..REFUSALS_PER_WINDOW {
            assert!(!limiter.exhausted(flood, now));
            limiter.record(flood, now);
        }
        assert!(limiter.exhausted(flood, now));
        assert!(!limiter.exhausted(other, now), "per source");
        assert!(!limiter.exhausted(flood, now + WINDOW));
    }

    #[test]
    fn the_log_budget_holds_back_and_then_counts() {
        let budget = LogBudget::new(2, Duration::from_secs(60));
        let now = Instant::now();
        assert_eq!(budget.admit(now), Some(0));
        assert_eq!(budget.admit(now), Some(0));
        for _ in 0..1000 {
            assert_eq!(budget.admit(now), None);
        }
        assert_eq!(budget.admit(now + Duration::from_secs(60)), Some(1000));
    }
}
