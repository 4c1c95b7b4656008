//! One timer per shim for all its containers' monitors (a pod's containers share one shim).
//!
//! At each multiple of the tick on CLOCK_MONOTONIC the ticker gives every member a *look* (its cheap probe, on
//! the runtime thread) and hands the members with a report due to one step on tokio's blocking pool, which reports
//! them in one message (`batch.rs`). A shim of N containers so costs one timer wake-up a tick, not N, and one hop
//! to the blocking pool per wake-up with something to say. While that step runs (a broker call, bounded by the
//! client's timeout) the ticker waits: the next look is at the first tick after it. A member that needs to
//! report between ticks (a container starting to stop) steps on its own ([`Watched::step_all`] with itself).
//! Without members the ticker holds no timer.
//!
//! The timer is a periodic `timerfd` on CLOCK_MONOTONIC armed at an absolute multiple of the tick ([`TickFd`]): one
//! `epoll` wake-up and one 8-byte read a tick, where a tokio sleep armed anew each tick woke the runtime two or
//! three times (its timer wheel's coarse slots) and wrote its eventfd. tokio's sleep stays the fallback where no
//! timerfd can be made.
//!
//! When every member is *settled* ([`Watched::settled`]: idle, the broker told so, nothing pending) the timer is
//! re-armed at the members' heartbeat instead of the tick: a shim of idle containers wakes once per heartbeat,
//! when it has something to send anyway, instead of every tick to find nothing to say. [`Ticker::wake`] (a member
//! joined, a container started stopping, an OOM kill), a member's PSI trigger firing ([`Ticker::watch`]:
//! `runtime_hooks::trigger`, a CPU or memory stall of 10% over 2 s, fired about 2 s after it began) or a wake
//! source a member armed for the sleep ([`Watched::arm_wakes`]: a poke, a v1 memory threshold, a v2
//! `memory.events` change) ends such a sleep at once: the members are told which descriptors fired
//! ([`Watched::woke_by`]) and looked at, and the tick is back as soon as one of them is not settled. While the
//! ticker ticks anyway a trigger is drained and ignored.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use runtime_hooks::{PressureTriggers, TriggerSet};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Notify;

/// What the ticker watches: a container's monitor.
pub trait Watched: Send + Sync + 'static {
    /// The look at a tick: `true` when a report is due (always when `forced`: the broker poked the shim). Runs
    /// on the runtime thread: it must not block.
    fn look(&self, forced: bool) -> bool;

    /// The broker wrote to the member's connection unasked (a poke: it has directives for one of the shim's
    /// containers, on whichever member's connection carried their last report), so every member reports.
    /// Must not block.
    fn poked(&self) -> bool {
        false
    }

    /// Adds the member's wake sources to `set` for one wake-up each (before a settled sleep): its connection to
    /// the broker (a poke), its memory usage threshold (v1: growth) or its `memory.events` (v2: usage past
    /// `memory.high` or `memory.max`). Must not block.
    fn arm_wakes(&self, _set: &TriggerSet) {}

    /// A settled sleep ended because these descriptors of the set fired (PSI triggers, armed wake sources of any
    /// member). Must not block.
    fn woke_by(&self, _fired: &[RawFd]) {}

    /// `Some(period)` when the looks before the next multiple of `period` (a multiple of the tick) would find
    /// nothing to say; `None` to be looked at every tick. Runs on the runtime thread: it must not block.
    fn settled(&self) -> Option<Duration>;

    /// The step of the members whose look said due, on the blocking pool.
    fn step_all(due: &[Arc<Self>])
    where
        Self: Sized;
}

/// The shim's timer; see the module docs.
pub struct Ticker<W> {
    tick: Duration,
    members: Mutex<Vec<Arc<W>>>,
    /// A member joined (wakes a ticker that had none), or something ended a settled sleep ([`Self::wake`]).
    woken: Notify,
    running: AtomicBool,
    /// A member left since the last look: every other member reports at that look ([`Self::leave`]).
    left: AtomicBool,
    /// The members' PSI triggers behind one epoll fd (`None`: no epoll set could be made).
    triggers: Option<TriggerSet>,
}

impl<W: Watched> Ticker<W> {
    pub fn new(tick: Duration) -> Self {
        Self {
            tick,
            members: Mutex::new(Vec::new()),
            woken: Notify::new(),
            running: AtomicBool::new(false),
            left: AtomicBool::new(false),
            triggers: TriggerSet::new()
                .inspect_err(|e| tracing::debug!("no epoll set for PSI triggers: {e}"))
                .ok(),
        }
    }

    /// Wakes a settled sleep when one of `t`'s stall triggers fires.
    pub fn watch(&self, t: &PressureTriggers) {
        if let Some(set) = &self.triggers
            && let Err(e) = set.add(t)
        {
            tracing::debug!("watching PSI triggers: {e}");
        }
    }

    /// No longer wakes on `t`'s triggers (before they are dropped).
    pub fn unwatch(&self, t: &PressureTriggers) {
        if let Some(set) = &self.triggers
            && let Err(e) = set.remove(t)
        {
            tracing::debug!("unwatching PSI triggers: {e}");
        }
    }

    fn members(&self) -> std::sync::MutexGuard<'_, Vec<Arc<W>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `w`; the first join starts the ticker's task on the current tokio runtime.
    pub fn join(self: &Arc<Self>, w: Arc<W>) {
        self.members().push(w);
        if !self.running.swap(true, Ordering::AcqRel) {
            tokio::spawn(self.clone().run());
        }
        self.woken.notify_one();
    }

    /// Looks at every member now, whatever the timer (a member may have stopped being settled).
    pub fn wake(&self) {
        self.woken.notify_one();
    }

    /// Removes `w` (no-op when it is not a member). A step already under way may still include it: its step
    /// must check that it is still running. The members left report at once, as on a poke: the leaving
    /// member's connection may be the one their last reports went on (`batch.rs`), where the broker pokes them,
    /// and it closes with the member; their reports tell the broker a live one.
    pub fn leave(&self, w: &Arc<W>) {
        let mut members = self.members();
        let before = members.len();
        members.retain(|m| !Arc::ptr_eq(m, w));
        if members.len() < before && !members.is_empty() {
            self.left.store(true, Ordering::Release);
            self.woken.notify_one();
        }
    }

    pub fn len(&self) -> usize {
        self.members().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The period to wait for next: the tick, or the members' heartbeat when all of them are settled.
    fn period(&self) -> Duration {
        // Stops at the first member that is not settled: a busy shim asks one member a tick, not all.
        let settled = self
            .members()
            .iter()
            .try_fold(Duration::MAX, |p, m| m.settled().map(|q| p.min(q)));
        match settled {
            Some(p) if p > self.tick && p != Duration::MAX => p,
            _ => self.tick,
        }
    }

    async fn run(self: Arc<Self>) {
        let mut timer: Option<TickFd> = None;
        let mut period = self.tick;
        let stalls = self.triggers.as_ref().and_then(|set| {
            // SAFETY: the AsyncFd borrows the set's epoll fd, which the ticker owns and this task's `self` keeps
            // alive for as long as the AsyncFd exists (both live in this function).
            unsafe { AsyncFd::register_with_interest(set.as_fd(), Interest::READABLE) }
                .inspect_err(|e| tracing::debug!("PSI triggers not watched: {e}"))
                .ok()
        });
        let mut fired: Vec<RawFd> = Vec::new();
        loop {
            if self.is_empty() {
                // No members, no timer. A join between the check and the wait leaves a permit: none is missed.
                timer = None;
                period = self.tick;
                self.left.store(false, Ordering::Release);
                self.woken.notified().await;
                continue;
            }
            if timer.is_none() {
                timer = TickFd::new(period)
                    .inspect_err(|e| {
                        tracing::debug!("no timerfd for the ticker ({e}): tokio's sleep instead")
                    })
                    .ok();
            }
            let stalled = tokio::select! {
                _ = async {
                    match &timer {
                        Some(t) => t.wait().await,
                        None => tokio::time::sleep(next_tick(period)).await,
                    }
                } => false,
                _ = self.woken.notified() => false,
                _ = stall(stalls.as_ref(), self.triggers.as_ref(), &mut fired) => true,
            };
            if stalled {
                if period <= self.tick {
                    // Ticking anyway: the next tick looks at the stalled member (or sees the poke); no extra
                    // round for it.
                    fired.clear();
                    continue;
                }
                tracing::debug!("a PSI trigger, a poke or a memory event ended a settled sleep");
                for m in self.members().iter() {
                    m.woke_by(&fired);
                }
                fired.clear();
            }
            // A look never blocks (two counter reads, a zero-timeout poll), so it runs under the members' lock: no
            // copy of the list a tick.
            let due: Vec<Arc<W>> = {
                let members = self.members();
                let poked =
                    self.left.swap(false, Ordering::AcqRel) || members.iter().any(|m| m.poked());
                members.iter().filter(|m| m.look(poked)).cloned().collect()
            };
            if !due.is_empty() {
                if tokio::task::spawn_blocking(move || W::step_all(&due))
                    .await
                    .is_err()
                {
                    tracing::error!("a monitor step panicked");
                }
                // Ticks that passed during the step are skipped: the next look is at the first tick after it.
                if let Some(t) = &timer {
                    t.expirations();
                }
            }
            let next = self.period();
            if next != period {
                period = next;
                if let Some(t) = &timer
                    && let Err(e) = t.arm(period)
                {
                    tracing::debug!("re-arming the ticker's timerfd ({e}): tokio's sleep instead");
                    timer = None;
                }
            }
            if period > self.tick
                && let Some(set) = &self.triggers
            {
                // A settled sleep also ends when the broker pokes or a memory threshold fires (each source once
                // per sleep).
                for m in self.members().iter() {
                    m.arm_wakes(set);
                }
            }
        }
    }
}

/// Until a member's stall trigger fired (never without triggers); consumes what fired, and appends the descriptors
/// that fired to `fired`.
async fn stall(
    fd: Option<&AsyncFd<BorrowedFd<'_>>>,
    set: Option<&TriggerSet>,
    fired: &mut Vec<RawFd>,
) {
    let (Some(fd), Some(set)) = (fd, set) else {
        return std::future::pending().await;
    };
    let Ok(mut guard) = fd.readable().await else {
        // The reactor is gone (the runtime is shutting down).
        return std::future::pending().await;
    };
    // An edge-triggered waiter is not told again of events left behind: drain until fewer than a full batch.
    while set.drain_into(Some(&mut *fired)) == runtime_hooks::trigger::DRAIN_MAX {}
    // A storm of PSI triggers says no more than its first batch: who fired is kept bounded.
    fired.truncate(runtime_hooks::trigger::DRAIN_MAX);
    guard.clear_ready();
}

/// A periodic CLOCK_MONOTONIC timer descriptor that fires at every multiple of the tick, registered with tokio.
struct TickFd {
    fd: AsyncFd<OwnedFd>,
}

impl TickFd {
    fn new(tick: Duration) -> std::io::Result<TickFd> {
        // SAFETY: timerfd_create takes a clock id and flags and returns a new descriptor or -1.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw was just returned by timerfd_create and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        arm(fd.as_raw_fd(), tick)?;
        // SAFETY: the AsyncFd owns the timerfd, so it stays open for as long as it is registered.
        let fd = unsafe { AsyncFd::register(fd) }?;
        Ok(TickFd { fd })
    }

    /// Fires from now on at every multiple of `period` (ticks pending from the old period are dropped).
    fn arm(&self, period: Duration) -> std::io::Result<()> {
        arm(self.fd.as_raw_fd(), period)
    }

    /// Until the next tick (at once when one passed since the last read).
    async fn wait(&self) {
        loop {
            let Ok(mut guard) = self.fd.readable().await else {
                // The reactor is gone (the runtime is shutting down): nothing more to look at.
                return std::future::pending().await;
            };
            if self.expirations() > 0 {
                return;
            }
            guard.clear_ready();
        }
    }

    /// Reads (and so clears) the ticks passed since the last read; 0 when none.
    fn expirations(&self) -> u64 {
        let mut buf = [0u8; 8];
        // SAFETY: reading 8 bytes into an 8-byte buffer from a timerfd we own (non-blocking).
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n == 8 { u64::from_ne_bytes(buf) } else { 0 }
    }
}

/// Arms timerfd `fd` at the next multiple of `period` on CLOCK_MONOTONIC, then every `period`.
fn arm(fd: std::os::fd::RawFd, period: Duration) -> std::io::Result<()> {
    let now = monotonic_now().ok_or_else(std::io::Error::last_os_error)?;
    let spec = libc::itimerspec {
        it_interval: timespec(period),
        it_value: timespec(now + next_tick_after(now, period)),
    };
    // SAFETY: fd is a timerfd its caller owns; spec is a valid itimerspec; the old value is not asked for.
    let rc =
        unsafe { libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: libc::c_long::from(d.subsec_nanos()),
    }
}

/// CLOCK_MONOTONIC now (since boot, the same clock for every process on the host); `None` when it cannot be read.
pub fn monotonic_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return None;
    }
    Some(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The time to the next multiple of `tick` on the host's monotonic clock. Every shim wakes at the same instants,
/// so the reports due at a tick reach the broker together and share one commit of its journal (one fsync for all
/// of them, where reports spread over the second cost one each), and the host's CPUs wake once per tick for all
/// containers rather than at 100 scattered moments.
pub fn next_tick(tick: Duration) -> Duration {
    match monotonic_now() {
        Some(now) => next_tick_after(now, tick),
        None => tick,
    }
}

/// From `now` to the next multiple of `tick` after it (a whole tick when `now` is one).
fn next_tick_after(now: Duration, tick: Duration) -> Duration {
    let tick_ns = tick.as_nanos().max(1);
    let left = tick_ns - now.as_nanos() % tick_ns;
    Duration::from_nanos(u64::try_from(left).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// A member that counts its looks and says due when `due` is set; steps are recorded as the ids stepped
    /// together.
    struct Member {
        id: usize,
        due: AtomicBool,
        looks: AtomicUsize,
        steps: Arc<Mutex<Vec<Vec<usize>>>>,
        settled: Mutex<Option<Duration>>,
        /// Its connection to the broker, if any (a poke is a line written to it).
        conn: Option<std::os::unix::net::UnixStream>,
    }

    impl Member {
        fn new(id: usize, due: bool, steps: &Arc<Mutex<Vec<Vec<usize>>>>) -> Arc<Self> {
            Arc::new(Member {
                id,
                due: AtomicBool::new(due),
                looks: AtomicUsize::new(0),
                steps: steps.clone(),
                settled: Mutex::new(None),
                conn: None,
            })
        }

        fn looks(&self) -> usize {
            self.looks.load(Ordering::Relaxed)
        }
    }

    impl Watched for Member {
        fn look(&self, forced: bool) -> bool {
            self.looks.fetch_add(1, Ordering::Relaxed);
            forced || self.due.load(Ordering::Relaxed)
        }

        fn poked(&self) -> bool {
            self.conn.as_ref().is_some_and(|c| {
                let mut pfd = [nix::poll::PollFd::new(
                    c.as_fd(),
                    nix::poll::PollFlags::POLLIN,
                )];
                nix::poll::poll(&mut pfd, nix::poll::PollTimeout::ZERO).is_ok_and(|n| n > 0)
            })
        }

        fn arm_wakes(&self, set: &TriggerSet) {
            if let Some(c) = &self.conn {
                set.arm_readable(c.as_fd()).expect("arm");
            }
        }

        fn settled(&self) -> Option<Duration> {
            *self.settled.lock().expect("settled")
        }

        fn step_all(due: &[Arc<Self>]) {
            let ids = due.iter().map(|m| m.id).collect();
            for m in due {
                if let Some(c) = &m.conn {
                    // The report reads the poke.
                    let mut line = [0u8; 64];
                    let _ = (&*c).read(&mut line);
                }
            }
            due[0].steps.lock().expect("steps").push(ids);
        }
    }

    async fn until(what: impl Fn() -> bool) {
        while !what() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn one_wake_up_looks_at_every_member_and_steps_the_due_ones_together() {
        let ticker = Arc::new(Ticker::new(Duration::from_millis(20)));
        let steps = Arc::new(Mutex::new(Vec::new()));
        let members: Vec<Arc<Member>> = (0..4)
            .map(|id| Member::new(id, id % 2 == 0, &steps))
            .collect();
        for m in &members {
            ticker.join(m.clone());
        }
        // Bounded by nextest's per-test timeout: a ticker that never steps hangs here and fails.
        until(|| !steps.lock().expect("steps").is_empty()).await;
        assert_eq!(
            steps.lock().expect("steps")[0],
            [0, 2],
            "the due members in one step"
        );
        // A member that left is not looked at any more.
        ticker.leave(&members[3]);
        let before = members[3].looks.load(Ordering::Relaxed);
        let seen = steps.lock().expect("steps").len();
        until(|| steps.lock().expect("steps").len() >= seen + 2).await;
        assert_eq!(members[3].looks.load(Ordering::Relaxed), before);
        assert!(
            members[1].looks.load(Ordering::Relaxed) >= 3,
            "every tick looks at every member"
        );
    }

    #[tokio::test]
    async fn a_ticker_without_members_waits_for_a_join() {
        let ticker = Arc::new(Ticker::new(Duration::from_millis(10)));
        let steps = Arc::new(Mutex::new(Vec::new()));
        let m = Member::new(7, true, &steps);
        ticker.join(m.clone());
        ticker.leave(&m);
        assert!(ticker.is_empty());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let looks = m.looks.load(Ordering::Relaxed);
        // Joined again: the idle ticker wakes and looks.
        ticker.join(m.clone());
        until(|| m.looks.load(Ordering::Relaxed) > looks).await;
        until(|| !steps.lock().expect("steps").is_empty()).await;
    }

    #[tokio::test]
    async fn settled_members_are_looked_at_once_a_period_until_woken() {
        let tick = Duration::from_millis(10);
        let ticker = Arc::new(Ticker::new(tick));
        let steps = Arc::new(Mutex::new(Vec::new()));
        let (a, b) = (Member::new(1, false, &steps), Member::new(2, false, &steps));
        ticker.join(a.clone());
        ticker.join(b.clone());
        until(|| a.looks() >= 2).await;
        // Both settled for an hour: after the look that finds it, no look until woken.
        let hour = Duration::from_secs(3600);
        *a.settled.lock().expect("settled") = Some(hour);
        *b.settled.lock().expect("settled") = Some(hour);
        let seen = a.looks();
        until(|| a.looks() > seen).await;
        let asleep = a.looks();
        tokio::time::sleep(tick * 10).await;
        assert_eq!(
            a.looks(),
            asleep,
            "no look between a settled shim's heartbeats"
        );
        // One member not settled any more: woken, the ticker looks at once and ticks again.
        *b.settled.lock().expect("settled") = None;
        ticker.wake();
        until(|| a.looks() >= asleep + 3).await;
        assert!(
            b.looks() >= asleep + 3,
            "every member is looked at each tick"
        );
        // A member settled for less than a tick changes nothing: still every tick.
        *b.settled.lock().expect("settled") = Some(tick / 2);
        let now = a.looks();
        until(|| a.looks() >= now + 3).await;
    }

    #[tokio::test]
    async fn a_poke_ends_a_settled_sleep_and_every_member_reports() {
        let tick = Duration::from_millis(10);
        let ticker = Arc::new(Ticker::new(tick));
        let steps = Arc::new(Mutex::new(Vec::new()));
        let (broker_end, shim_end) = std::os::unix::net::UnixStream::pair().expect("pair");
        let a = Arc::new(Member {
            conn: Some(shim_end),
            ..Arc::into_inner(Member::new(1, false, &steps)).expect("one owner")
        });
        let b = Member::new(2, false, &steps);
        let hour = Duration::from_secs(3600);
        *a.settled.lock().expect("settled") = Some(hour);
        *b.settled.lock().expect("settled") = Some(hour);
        ticker.join(a.clone());
        ticker.join(b.clone());
        until(|| a.looks() >= 1).await;
        tokio::time::sleep(tick * 5).await;
        let asleep = a.looks();
        assert!(steps.lock().expect("steps").is_empty(), "nothing due");
        // The broker has directives for b, whose last report went on a's connection: it pokes there.
        (&broker_end).write_all(b"poke\n").expect("poke");
        until(|| !steps.lock().expect("steps").is_empty()).await;
        assert_eq!(
            steps.lock().expect("steps")[0],
            vec![1, 2],
            "a poke makes every member report"
        );
        assert!(a.looks() > asleep);
        // Settled again (the poke was read): asleep until the next poke, which wakes it again.
        tokio::time::sleep(tick * 5).await;
        let after = a.looks();
        tokio::time::sleep(tick * 10).await;
        assert_eq!(a.looks(), after, "asleep again after the poke");
        (&broker_end).write_all(b"poke\n").expect("poke");
        until(|| steps.lock().expect("steps").len() >= 2).await;
    }

    #[tokio::test]
    async fn a_member_leaving_makes_the_others_report_once() {
        let tick = Duration::from_millis(10);
        let ticker = Arc::new(Ticker::new(tick));
        let steps = Arc::new(Mutex::new(Vec::new()));
        let members: Vec<Arc<Member>> = (1..=3).map(|id| Member::new(id, false, &steps)).collect();
        let hour = Duration::from_secs(3600);
        for m in &members {
            *m.settled.lock().expect("settled") = Some(hour);
            ticker.join(m.clone());
        }
        until(|| members[0].looks() >= 1).await;
        tokio::time::sleep(tick * 5).await;
        assert!(steps.lock().expect("steps").is_empty(), "nothing due");
        // Member 1 carried the others' last reports; it goes, and its connection with it.
        ticker.leave(&members[0]);
        until(|| !steps.lock().expect("steps").is_empty()).await;
        assert_eq!(
            steps.lock().expect("steps")[0],
            vec![2, 3],
            "the members left report on a connection of their own"
        );
        // Once: asleep again after it.
        tokio::time::sleep(tick * 5).await;
        assert_eq!(steps.lock().expect("steps").len(), 1, "one report each");
        ticker.leave(&members[1]);
        until(|| steps.lock().expect("steps").len() >= 2).await;
        assert_eq!(steps.lock().expect("steps")[1], vec![3]);
        // The last member leaving asks nothing of anyone.
        ticker.leave(&members[2]);
        tokio::time::sleep(tick * 5).await;
        assert_eq!(steps.lock().expect("steps").len(), 2);
    }

    #[tokio::test]
    async fn the_timer_descriptor_counts_the_ticks_that_passed() {
        let yearly = TickFd::new(Duration::from_secs(365 * 86_400)).expect("timerfd");
        let fast = TickFd::new(Duration::from_millis(10)).expect("timerfd");
        fast.wait().await;
        std::thread::sleep(Duration::from_millis(50));
        // At least 50 ms passed: at least four multiples of 10 ms, read (and cleared) at once.
        assert!(fast.expirations() >= 4);
        assert_eq!(
            yearly.expirations(),
            0,
            "no multiple of a year of uptime passed"
        );
    }

    #[test]
    fn wake_ups_fall_on_multiples_of_the_tick() {
        let tick = Duration::from_millis(1000);
        let ms = Duration::from_millis;
        assert_eq!(next_tick_after(ms(12_300), tick), ms(700));
        assert_eq!(
            next_tick_after(ms(12_000), tick),
            tick,
            "on a tick: the next one"
        );
        assert_eq!(next_tick_after(ms(12_999), tick), ms(1));
        assert_eq!(
            next_tick_after(ms(1_100), ms(250)),
            ms(150),
            "any tick length"
        );
        assert!(next_tick(tick) <= tick);
    }
}
