//! The simulator's clock: real time plus an offset that tests advance through the control
//! API. Code expiry, token expiry and daily quotas all read this clock, never the system's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// WeChat's quota day is China Standard Time (UTC+8), so the day changes at 16:00 UTC.
const CST_OFFSET_MS: u64 = 8 * 3600 * 1000;
const DAY_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Default)]
pub struct Clock {
    offset_ms: AtomicU64,
}

impl Clock {
    /// Milliseconds since the Unix epoch, simulated.
    pub fn now_ms(&self) -> u64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        real.saturating_add(self.offset_ms.load(Ordering::SeqCst))
    }

    pub fn now_secs(&self) -> u64 {
        self.now_ms() / 1000
    }

    pub fn advance(&self, d: Duration) {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        // Saturate rather than wrap: a huge advance must not send time backwards.
        let _ = self
            .offset_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |o| {
                Some(o.saturating_add(ms))
            });
    }

    pub fn reset(&self) {
        self.offset_ms.store(0, Ordering::SeqCst);
    }

    /// The simulated day number (China time), for daily quotas.
    pub fn day(&self) -> u64 {
        day_of(self.now_ms())
    }
}

pub fn day_of(ms: u64) -> u64 {
    ms.saturating_add(CST_OFFSET_MS) / DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advance_moves_time_and_day() {
        let c = Clock::default();
        let t0 = c.now_ms();
        let d0 = c.day();
        c.advance(Duration::from_secs(3600));
        assert!(c.now_ms() >= t0 + 3_600_000);
        c.advance(Duration::from_secs(86_400));
        assert_eq!(c.day(), d0 + 1 + u64::from(day_of(t0 + 3_600_000) != d0));
        c.reset();
        assert!(c.now_ms() < t0 + 3_600_000);
    }

    #[test]
    fn day_changes_at_midnight_china_time() {
        // 2024-01-01T15:59:59Z is 23:59:59 in Beijing; one second later is the next day there.
        let before = 1_704_124_799_000u64;
        assert_eq!(day_of(before) + 1, day_of(before + 1000));
    }
}
