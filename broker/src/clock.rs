//! The broker's two clocks.
//!
//! Everything the broker times runs on the **steady** clock: a task's freshness, a lease's term, a memory stall,
//! when a silent task is forgotten, where a task is in its predicted life, a run's duration. The steady clock is
//! `CLOCK_MONOTONIC` in milliseconds plus the difference between the wall clock and it, read once when the broker
//! starts: it reads like Unix milliseconds (the same as the wall clock until the wall clock steps) and never steps
//! itself. A step of the wall clock (NTP's `makestep` at boot, `date -s`, a VM resumed or migrated) used to look like
//! a long silence (15 minutes forward: every task "forgotten" at the next tick) or froze time (an hour back: a task
//! that stopped reporting stayed fresh for that hour and kept its leases).
//!
//! The **wall** clock labels what the broker records and shows: a run's start, a decision's time, a sample's time.
//! What the controller kept in steady time is shown on the wall clock by [`on_wall`]. The broker never compares a
//! peer's clock with its own: a report's freshness is the time the broker took it.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock milliseconds since the Unix epoch (0 before it).
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `CLOCK_MONOTONIC`, milliseconds.
fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC exists on every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// Wall minus monotonic at the first reading of the steady clock.
fn offset_ms() -> u64 {
    static OFFSET: OnceLock<u64> = OnceLock::new();
    *OFFSET.get_or_init(|| wall_ms().saturating_sub(monotonic_ms()))
}

/// The steady clock, milliseconds: Unix-like, never stepped (see the module's documentation).
pub fn steady_ms() -> u64 {
    monotonic_ms() + offset_ms()
}

/// What shows a steady time on the wall clock as it reads now: the same instant, shifted by however far the wall
/// clock stepped since the broker started (nothing when it did not). Both clocks are read once, here.
pub fn on_wall() -> impl Fn(u64) -> u64 {
    let (steady, wall) = (steady_ms(), wall_ms());
    move |at_ms| shift(at_ms, steady, wall)
}

/// `at_ms` on a clock that reads `now_ms` where `at`'s clock reads `now_at`: what [`on_wall`] computes.
fn shift(at_ms: u64, now_at: u64, now_ms: u64) -> u64 {
    if now_ms >= now_at {
        at_ms.saturating_add(now_ms - now_at)
    } else {
        at_ms.saturating_sub(now_at - now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_steady_clock_reads_like_the_wall_clock_and_never_goes_back() {
        let (w, s) = (wall_ms(), steady_ms());
        assert!(s.abs_diff(w) < 1000, "steady {s} against wall {w}");
        let mut last = steady_ms();
        for _ in 0..1000 {
            let now = steady_ms();
            assert!(now >= last, "{now} after {last}");
            last = now;
        }
    }

    #[test]
    fn a_steady_time_is_shown_on_the_wall_clock_as_stepped() {
        // The wall clock 15 minutes ahead of the steady one: a lease that ends in 5 s ends 5 s from now.
        assert_eq!(shift(1_005_000, 1_000_000, 1_900_000), 1_905_000);
        // An hour behind: what happened 10 s ago happened 10 s before the wall clock's now.
        assert_eq!(shift(4_990_000, 5_000_000, 1_400_000), 1_390_000);
        assert_eq!(shift(10, 5_000_000, 1_400_000), 0, "before the epoch: 0");
        assert_eq!(shift(42, 7, 7), 42, "no step: unchanged");
    }
}
