//! When a monitor reports: a [`Probe`] at every wake-up (CPU time and charged memory, two files kept open),
//! a report only when the broker's picture of the container is out of date, and a full [`Sample`] (the other
//! ~15 files) only when the container is doing something.
//!
//! [`Pacer::check`] decides on each probe. A report goes out when the container is busy (it used more than
//! [`Pacing::idle_cpu_cores`] over the last wake-up, or was busy at the last report: the broker hears when it
//! went idle), when its memory moved by [`Pacing::memory_step_bytes`] since the last report, when the caller
//! forces one (the container is stopping, an OOM kill), or after [`Pacing::heartbeat`] without one, so a quiet
//! container never looks gone to the broker (its `stale_after_ms`). A busy container therefore reports at every
//! wake-up as before; only an idle one goes quiet.
//!
//! A container idle for [`SETTLE_LOOKS`] wake-ups in a row, whose idleness the broker has heard, is
//! [`Pacer::settled`]: its monitor may skip the wake-ups between heartbeats (`shim/src/ticker.rs` then sleeps
//! until the next heartbeat instant unless something wakes it), since each of them would find nothing to say.

use std::time::Duration;

pub use crate::sample::Probe;

/// Idle wake-ups in a row after which a container is [`Pacer::settled`].
pub const SETTLE_LOOKS: u32 = 3;

/// What counts as a change worth a report.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pacing {
    /// Longest time without a report (well inside the broker's `stale_after_ms`).
    pub heartbeat: Duration,
    /// Below this use (cores, over one wake-up) a container is idle.
    pub idle_cpu_cores: f64,
    /// A memory change from the last report of at least this much is reported.
    pub memory_step_bytes: u64,
}

impl Pacing {
    /// Reports at most `heartbeat` apart; idle below 1% of a core; 1 MiB of memory is a change.
    pub fn with_heartbeat(heartbeat: Duration) -> Self {
        Self {
            heartbeat,
            idle_cpu_cores: 0.01,
            memory_step_bytes: 1 << 20,
        }
    }
}

/// Whether a heartbeat falls due at `now_ns` after a report at `reported_ns` (both CLOCK_MONOTONIC): when a
/// multiple of `heartbeat` lies between them. Heartbeats thus fall on the same instants for every container of
/// every shim (with wake-ups on multiples of the tick, at the same wake-up), and the broker takes them in one
/// batch and one commit per heartbeat rather than a share of them at every tick. Two reports are never more than
/// `heartbeat` plus one wake-up apart.
pub fn heartbeat_due(reported_ns: u64, now_ns: u64, heartbeat: Duration) -> bool {
    let hb = u64::try_from(heartbeat.as_nanos()).unwrap_or(u64::MAX);
    hb == 0 || now_ns / hb > reported_ns / hb
}

/// Why a wake-up reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Nothing reported yet (or the last report failed).
    First,
    /// The caller asked (stopping, OOM).
    Forced,
    /// CPU or memory could not be read: the full sample says what it can.
    Unreadable,
    /// The container used CPU over the last wake-up, or did at the last report.
    Busy,
    /// Memory moved by at least the step since the last report.
    Memory,
    /// The heartbeat fell due.
    Heartbeat,
}

impl Why {
    /// Whether the full sample is worth reading: not for a heartbeat of an idle container, whose other
    /// counters stand still.
    pub fn needs_full_sample(self) -> bool {
        self != Why::Heartbeat
    }
}

/// The decision on each probe of one container; see the module docs.
#[derive(Debug, Clone)]
pub struct Pacer {
    pacing: Pacing,
    /// The probe the broker last received, and whether the container was busy then.
    reported: Option<(Probe, bool)>,
    /// The latest wake-up's probe, and the one before it.
    last: Option<Probe>,
    before: Option<Probe>,
    /// Whether the latest probe showed a busy container.
    busy: bool,
    /// Wake-ups in a row whose probe showed an idle container.
    idle_looks: u32,
    /// The latest check asked for a report that the broker has not taken.
    unsent: bool,
}

impl Pacer {
    /// A pacer that has reported nothing.
    pub fn new(pacing: Pacing) -> Self {
        Self {
            pacing,
            reported: None,
            last: None,
            before: None,
            busy: true,
            idle_looks: 0,
            unsent: false,
        }
    }

    /// The pacing in force.
    pub fn pacing(&self) -> Pacing {
        self.pacing
    }

    /// Changes the heartbeat (the broker said how long it waits).
    pub fn set_heartbeat(&mut self, heartbeat: Duration) {
        self.pacing.heartbeat = heartbeat;
    }

    /// Decides on this wake-up's probe: `Some` to report now. `forced` reports whatever the figures.
    pub fn check(&mut self, p: Probe, forced: bool) -> Option<Why> {
        let why = self.decide(p, forced);
        self.unsent = why.is_some();
        if why == Some(Why::Memory) {
            // Memory on the move: looked at every wake-up again until it has been still for a while.
            self.idle_looks = 0;
        }
        why
    }

    fn decide(&mut self, p: Probe, forced: bool) -> Option<Why> {
        let prev = self.last.replace(p);
        self.before = prev;
        self.busy = match prev {
            Some(q) => p
                .cores_since(&q)
                .is_none_or(|c| c >= self.pacing.idle_cpu_cores),
            None => true,
        };
        self.idle_looks = if self.busy {
            0
        } else {
            self.idle_looks.saturating_add(1)
        };
        let Some((rep, was_busy)) = self.reported else {
            return Some(Why::First);
        };
        if forced {
            return Some(Why::Forced);
        }
        let (Some(_), Some(mem)) = (p.cpu_usage_ns, p.memory_bytes) else {
            return Some(Why::Unreadable);
        };
        if self.busy || was_busy {
            return Some(Why::Busy);
        }
        if rep
            .memory_bytes
            .is_none_or(|m| m.abs_diff(mem) >= self.pacing.memory_step_bytes)
        {
            return Some(Why::Memory);
        }
        heartbeat_due(rep.monotonic_ns, p.monotonic_ns, self.pacing.heartbeat)
            .then_some(Why::Heartbeat)
    }

    /// The probe before the latest one when the broker never received it: a report after quiet wake-ups sends it
    /// first, so the broker's newest rate covers the last wake-up only (a container that just woke up is seen
    /// at its real use, not averaged over the quiet seconds).
    pub fn quiet_before(&self) -> Option<Probe> {
        let (rep, _) = self.reported?;
        self.before.filter(|b| b.monotonic_ns > rep.monotonic_ns)
    }

    /// Idle for [`SETTLE_LOOKS`] wake-ups in a row, the broker told so (its last report said idle and nothing
    /// reported since failed) and a heartbeat set: the wake-ups before the next heartbeat would say nothing.
    pub fn settled(&self) -> bool {
        !self.pacing.heartbeat.is_zero()
            && self.idle_looks >= SETTLE_LOOKS
            && !self.unsent
            && self.reported.is_some_and(|(_, was_busy)| !was_busy)
    }

    /// The memory the broker last heard of, when the container was idle then (`None` while busy or before any
    /// report): a memory threshold (`threshold.rs`) one step above it wakes a settled container that grows.
    pub fn idle_memory(&self) -> Option<u64> {
        self.reported
            .filter(|(_, busy)| !busy)
            .and_then(|(p, _)| p.memory_bytes)
    }

    /// The report carrying the latest probe went out and the broker took it.
    pub fn reported(&mut self) {
        self.unsent = false;
        if let Some(p) = self.last {
            self.reported = Some((p, self.busy));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ContainerCgroup;
    use crate::testutil::{FakeHost, Layout};

    const C: &str = "/default/ctr";
    const SEC: u64 = 1_000_000_000;

    fn probe(t_s: u64, cpu_ns: u64, mem: u64) -> Probe {
        Probe {
            unix_ns: t_s * SEC,
            monotonic_ns: t_s * SEC,
            cpu_usage_ns: Some(cpu_ns),
            memory_bytes: Some(mem),
        }
    }

    fn pacer() -> Pacer {
        Pacer::new(Pacing::with_heartbeat(Duration::from_secs(3)))
    }

    /// Feeds probes one per second and returns which reported (the caller's report always succeeds).
    fn run(p: &mut Pacer, probes: &[Probe]) -> Vec<Option<Why>> {
        probes
            .iter()
            .map(|&pr| {
                let why = p.check(pr, false);
                if why.is_some() {
                    p.reported();
                }
                why
            })
            .collect()
    }

    #[test]
    fn probe_reads_cpu_and_memory_on_each_layout_and_follows_the_files() {
        for layout in [Layout::V1, Layout::V2, Layout::Hybrid] {
            let host = FakeHost::new(layout);
            host.container(C);
            let cg = ContainerCgroup::discover(&host.roots(), C).expect("fake container");
            let mut sampler = cg.sampler();
            let full = cg.sample();
            let p = sampler.probe();
            assert_eq!(
                (p.cpu_usage_ns, p.memory_bytes),
                (full.cpu.usage_ns, full.memory.usage_bytes),
                "{layout:?}: the probe reads what the full sample reads"
            );
            assert!(p.cpu_usage_ns.is_some() && p.memory_bytes.is_some());
            let (cpu_file, cpu_text, mem_file) = match layout {
                Layout::V2 => ("", "usage_usec 7000\n", "memory.current"),
                _ => ("cpuacct", "7000000\n", "memory.usage_in_bytes"),
            };
            let cpu_name = if layout == Layout::V2 {
                "cpu.stat"
            } else {
                "cpuacct.usage"
            };
            let mem_ctl = if layout == Layout::V2 { "" } else { "memory" };
            host.file(&host.rel(cpu_file, C, cpu_name), cpu_text);
            host.file(&host.rel(mem_ctl, C, mem_file), "5\n");
            let again = sampler.probe();
            assert_eq!(
                (again.cpu_usage_ns, again.memory_bytes),
                (Some(7_000_000), Some(5)),
                "{layout:?}: the files kept open are read again"
            );
            assert!(again.monotonic_ns >= p.monotonic_ns);
            let s = again.onto(&full);
            assert_eq!(
                (s.cpu.usage_ns, s.memory.usage_bytes, s.monotonic_ns),
                (Some(7_000_000), Some(5), again.monotonic_ns)
            );
            assert_eq!(
                (s.io, s.pids, s.cpu.nr_periods),
                (full.io, full.pids, full.cpu.nr_periods),
                "the other counters are the last full sample's"
            );
        }
    }

    #[test]
    fn an_unreadable_figure_reports() {
        let host = FakeHost::new(Layout::V1);
        host.container(C);
        let cg = ContainerCgroup::discover(&host.roots(), C).expect("fake container");
        let mut sampler = cg.sampler();
        let mut p = pacer();
        assert_eq!(p.check(sampler.probe(), false), Some(Why::First));
        p.reported();
        // What a cgroup being removed reads as through a descriptor kept open (the kernel: ENODEV).
        host.file(&host.rel("memory", C, "memory.usage_in_bytes"), "");
        let gone = sampler.probe();
        assert_eq!(gone.memory_bytes, None);
        assert_eq!(p.check(gone, false), Some(Why::Unreadable));
    }

    #[test]
    fn an_idle_container_reports_only_its_heartbeat() {
        let mut p = pacer();
        let probes: Vec<Probe> = (0..10).map(|t| probe(t, 5_000_000, 100 << 20)).collect();
        let got = run(&mut p, &probes);
        use Why::*;
        assert_eq!(
            got,
            vec![
                Some(First),
                // The broker last saw it "busy" (no rate yet at the first report): it hears it is idle once.
                Some(Busy),
                None,
                // On multiples of the heartbeat (3 s), not 3 s after the last report.
                Some(Heartbeat),
                None,
                None,
                Some(Heartbeat),
                None,
                None,
                Some(Heartbeat),
            ]
        );
        assert!(!Heartbeat.needs_full_sample() && Busy.needs_full_sample());
    }

    #[test]
    fn an_idle_container_settles_and_anything_to_say_unsettles_it() {
        let mut p = pacer();
        let mem = 100 << 20;
        let settled: Vec<bool> = (0..5)
            .map(|t| {
                run(&mut p, &[probe(t, 0, mem)]);
                p.settled()
            })
            .collect();
        // First report, then "idle" said once (the broker saw it busy), then idle looks until the third.
        assert_eq!(settled, [false, false, false, true, true]);
        assert_eq!(p.idle_memory(), Some(mem), "idle when last reported");
        let mut first = pacer();
        run(&mut first, &[probe(0, 0, mem)]);
        assert_eq!(first.idle_memory(), None, "a first report counts as busy");
        // Memory moving: not settled (nor while its report is not taken), and again only after three still looks.
        let mem = mem + (2 << 20);
        assert_eq!(p.check(probe(5, 0, mem), false), Some(Why::Memory));
        assert!(!p.settled(), "a memory step not yet reported");
        p.reported();
        assert!(!p.settled(), "memory just moved");
        run(&mut p, &[probe(6, 0, mem), probe(7, 0, mem)]);
        assert!(!p.settled());
        run(&mut p, &[probe(8, 0, mem)]);
        assert!(p.settled());
        // Busy: at once not settled, and settled again only after three idle looks that the broker heard of.
        run(&mut p, &[probe(9, SEC, mem)]);
        assert!(!p.settled());
        let again: Vec<bool> = (10..14)
            .map(|t| {
                run(&mut p, &[probe(t, SEC, mem)]);
                p.settled()
            })
            .collect();
        assert_eq!(again, [false, false, true, true]);
        // Without a heartbeat (an older broker: every wake-up reports) nothing settles.
        let mut every = Pacer::new(Pacing::with_heartbeat(Duration::ZERO));
        for t in 0..6 {
            run(&mut every, &[probe(t, 0, mem)]);
        }
        assert!(!every.settled());
    }

    #[test]
    fn a_container_that_wakes_up_reports_at_once_and_until_it_is_idle_again() {
        let mut p = Pacer::new(Pacing::with_heartbeat(Duration::from_secs(60)));
        let mem = 100 << 20;
        // Idle for 3 s, busy (half a core) for 2 s, then idle.
        let cpu = [0, 0, 0, 0, SEC / 2, SEC, SEC, SEC, SEC];
        let probes: Vec<Probe> = cpu
            .iter()
            .enumerate()
            .map(|(t, c)| probe(t as u64, *c, mem))
            .collect();
        let mut got = Vec::new();
        for (i, pr) in probes.iter().enumerate() {
            let why = p.check(*pr, false);
            if i == 4 {
                assert_eq!(why, Some(Why::Busy), "the first busy second reports");
                assert_eq!(
                    p.quiet_before(),
                    Some(probes[3]),
                    "the quiet probe just before goes first, so the rate covers the last second"
                );
            }
            if why.is_some() {
                p.reported();
                assert_eq!(p.quiet_before(), None, "nothing unreported once reported");
            }
            got.push(why);
        }
        use Why::*;
        assert_eq!(
            got,
            vec![
                Some(First),
                Some(Busy),
                None,
                None,
                Some(Busy),
                Some(Busy),
                // Idle again: said once.
                Some(Busy),
                None,
                None,
            ]
        );
    }

    #[test]
    fn memory_moving_by_a_step_from_the_last_report_reports() {
        let mut p = Pacer::new(Pacing::with_heartbeat(Duration::from_secs(60)));
        let base = 100u64 << 20;
        // Creeping up by 300 KiB a second: reported each time the total since the last report reaches 1 MiB.
        let probes: Vec<Probe> = (0..9)
            .map(|t| probe(t, 0, base + t * (300 << 10)))
            .collect();
        let got = run(&mut p, &probes);
        use Why::*;
        assert_eq!(
            got,
            vec![
                Some(First),
                Some(Busy),
                None,
                None,
                None,
                Some(Memory),
                None,
                None,
                None,
            ]
        );
        // Shrinking counts too.
        assert_eq!(p.check(probe(9, 0, base), false), Some(Memory));
    }

    #[test]
    fn heartbeats_fall_on_multiples_of_the_heartbeat_and_at_most_one_apart() {
        let hb = Duration::from_secs(3);
        let ms = |m: u64| m * 1_000_000;
        assert!(!heartbeat_due(ms(3_100), ms(5_900), hb));
        assert!(heartbeat_due(ms(5_900), ms(6_001), hb), "a multiple passed");
        assert!(
            heartbeat_due(0, ms(1), Duration::ZERO),
            "no heartbeat: always"
        );
        // Two containers reporting last at different instants: their next heartbeats fall at the same wake-up.
        let next = |from: u64| {
            (1..=10)
                .map(|t| ms(from + t * 1_000))
                .find(|&t| heartbeat_due(ms(from), t, hb))
        };
        assert_eq!(next(10_000), next(11_000));
        for from in 0..20 {
            let at = next(from * 1_000).expect("due within the heartbeat");
            assert!(at - ms(from * 1_000) <= ms(3_000), "from {from} s");
        }
    }

    #[test]
    fn forced_and_failed_reports_go_out_at_the_next_wake_up() {
        let mut p = pacer();
        run(&mut p, &[probe(0, 0, 1), probe(1, 0, 1)]);
        assert_eq!(p.check(probe(2, 0, 1), false), None);
        assert_eq!(p.check(probe(3, 0, 1), true), Some(Why::Forced));
        // The report failed (no `reported()`): the heartbeat counts from the last report the broker took.
        assert_eq!(p.check(probe(4, 0, 1), false), Some(Why::Heartbeat));
        p.set_heartbeat(Duration::from_secs(10));
        assert_eq!(p.check(probe(5, 0, 1), false), None);
        assert_eq!(p.pacing().heartbeat, Duration::from_secs(10));
    }
}
