//! Task object augmentation: each container carries its predicted profile, its current allocation and its
//! monitor, and this is the shim's side of the broker protocol (docs/BROKER-API.md).
//!
//! - Create: the `io.predictive.*` annotations are checked (a bad value fails Create with InvalidArgument
//!   naming the annotation); mode `off` stops here and the broker is never contacted. Otherwise the shim
//!   registers the container with a bounded wait ([`Settings::register_budget`], 50 ms) and, in mode `enforce`,
//!   the initial allocation ([`Augment::spec_directives`]) is written into the bundle's `config.json` before
//!   libcontainer reads it (`container::write_config`, one edit with the placed cgroupsPath). A slow or
//!   absent broker means the spec's limits stand (fail open, said once in the log); when none answers on the
//!   socket the shim starts `predictived` itself unless `autostart = false` (`spawn.rs`; its lock file keeps a
//!   second one from starting) and the monitor registers the container once it is up, adopting the limits in
//!   force.
//! - Running: every tick (the broker config's `tick_ms`, default 1 s) the monitor samples the cgroup
//!   (runtime-hooks), reports the samples and applies the directives the reply carries. A broker that
//!   restarted answers `not_found`: the monitor registers again with `adopt`, which changes no limit.
//! - Exit: the run summary goes to the broker (`finish`) before the container can be deleted, so the next
//!   prediction learns from it.
//!
//! Everything blocking (the broker socket, cgroup files) runs on tokio's blocking pool, never on the shim's
//! single runtime thread.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use oci_spec::runtime::{LinuxResources, Spec};
use predictive_api::annotations::Annotations;
use predictive_api::apply::NetApplied;
use predictive_api::client::{Client, ClientError};
use predictive_api::types::{Action, Allocation, CgroupKind, Directive, Mode, SpecLimits};
use predictive_api::wire::{Finish, ParentLimit, Register, Registered, Report, Update};
use runtime_hooks::{
    ActuateError, ContainerCgroup, HostRoots, Pacer, Pacing, Probe, Sample, Sampler, Why,
};
use tokio::sync::Notify;

use crate::batch::Sent;
use crate::error::{Result, ShimError};
use crate::freeze::Freezer;
pub use crate::settings::{CONFIG_ENV, Settings};
use crate::spawn;
use crate::ticker::{Ticker, Watched};

/// Most samples kept for a broker that does not answer.
const MAX_BUFFERED: usize = 64;
/// How long a Create waits for a broker it has just started (only then: see `spawn.rs`).
const SPAWN_WAIT: Duration = Duration::from_millis(1000);
/// Each call of a run's summary (its last samples, its Finish) when the broker left the container's last call
/// unanswered: the Delete does not wait for it, so a stalled broker that comes back within it still records
/// the run, and the one that does not costs no Delete anything.
pub const UNWAITED_SUMMARY_BUDGET: Duration = Duration::from_secs(3);

/// The Create's Register; when no broker answers and this Create starts one, it waits for its socket a little
/// longer, once. Without one started (none found, autostart off, tried recently) the Create goes on at once.
fn register_at_create(
    client: &mut Client,
    register: &Register,
    s: &Settings,
) -> std::result::Result<Registered, ClientError> {
    let mut result = client.register(register);
    if let Err(e) = &result
        && e.is_no_broker()
        && spawn::maybe_spawn_broker(s)
    {
        let deadline = Instant::now() + SPAWN_WAIT;
        while Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            result = client.register(register);
            if !matches!(&result, Err(e) if e.is_no_broker()) {
                break;
            }
        }
    }
    result
}

/// The annotations of a spec, as the broker reads them.
fn annotations(spec: &Spec) -> BTreeMap<String, String> {
    spec.annotations()
        .as_ref()
        .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// The user's limits and requests in a spec.
/// `d` with the user's disabled OOM killer standing, as runc leaves it: the broker turns the killer on when an
/// allocation reaches the user's limit, which is right only where the user left it on.
fn honour_oom_choice(d: &Directive, user_disabled: bool) -> std::borrow::Cow<'_, Directive> {
    match &d.action {
        Action::SetMemoryLimit {
            limit_bytes,
            oom_kill_disabled: false,
        } if user_disabled => std::borrow::Cow::Owned(Directive {
            action: Action::SetMemoryLimit {
                limit_bytes: *limit_bytes,
                oom_kill_disabled: true,
            },
            ..d.clone()
        }),
        _ => std::borrow::Cow::Borrowed(d),
    }
}

/// Whether the annotations are a CRI pod sandbox's (the pause process).
fn is_sandbox(map: &BTreeMap<String, String>) -> bool {
    map.get(predictive_api::annotations::CRI_CONTAINER_TYPE)
        .is_some_and(|t| t == "sandbox")
}

/// Whether the spec turns the OOM killer off (`linux.resources.memory.disableOOMKiller`).
fn oom_kill_disabled_by(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.disable_oom_killer())
        .unwrap_or(false)
}

pub fn spec_limits(spec: &Spec) -> SpecLimits {
    resource_limits(
        spec.linux().as_ref().and_then(|l| l.resources().as_ref()),
        is_kubernetes(&annotations(spec)),
    )
}

/// Whether containerd's CRI plugin made the spec (it always sets the container type): Kubernetes' resource
/// meaning applies.
fn is_kubernetes(annotations: &BTreeMap<String, String>) -> bool {
    annotations.contains_key(predictive_api::annotations::CRI_CONTAINER_TYPE)
}

/// The user's limits and requests in a spec's (or an Update's) resources. A quota is the limit. For a Kubernetes
/// container (`kubernetes`) CPU shares are the request, as kubelet writes them (`cpu_shares` = request x 1024, so
/// 1024 is a 1-CPU request); shares of 2 are a BestEffort pod's, and absent or 0 shares are no request. Elsewhere
/// 1024 is no request either: `ctr run` writes it whenever `--cpu-shares` is not given (its flag's default).
/// CPU figures stop at the protocol's [`MAX_CORES`](predictive_api::validate::MAX_CORES): the kernel takes a quota
/// of 100,000 cores or shares of 2^40 (it clamps shares), and the broker would refuse the container.
pub fn resource_limits(res: Option<&LinuxResources>, kubernetes: bool) -> SpecLimits {
    use predictive_api::validate::MAX_CORES;
    let cpu = res.and_then(|r| r.cpu().as_ref());
    let mem = res.and_then(|r| r.memory().as_ref());
    let cpu_limit_cores = cpu.and_then(|c| match (c.quota(), c.period()) {
        (Some(q), p) if q > 0 => {
            Some((q as f64 / p.filter(|p| *p > 0).unwrap_or(100_000) as f64).min(MAX_CORES))
        }
        _ => None,
    });
    let cpu_request_cores = cpu
        .and_then(|c| c.shares())
        .filter(|s| *s > 2 && (kubernetes || *s != 1024))
        .map(|s| (s as f64 / 1024.0).min(MAX_CORES));
    let positive = |v: Option<i64>| v.filter(|v| *v > 0).map(|v| v as u64);
    SpecLimits {
        cpu_limit_cores,
        cpu_request_cores,
        memory_limit_bytes: positive(mem.and_then(|m| m.limit())),
        memory_request_bytes: positive(mem.and_then(|m| m.reservation())),
    }
}

fn host_cgroup_kind() -> CgroupKind {
    if runtime_hooks::placement::SystemdHost::current().unified {
        CgroupKind::V2
    } else {
        CgroupKind::V1
    }
}

/// The allocation the spec itself gives.
fn spec_allocation(l: &SpecLimits) -> Allocation {
    Allocation {
        cpu_cores: l.cpu_limit_cores,
        memory_bytes: l.memory_limit_bytes,
        memory_max_bytes: l.memory_limit_bytes,
    }
}

/// Checks the annotations of a spec: a bad `io.predictive.*` value is an InvalidArgument naming it.
pub fn check_annotations(spec: &Spec) -> Result<Annotations> {
    Annotations::parse(&annotations(spec))
        .map_err(|e| ShimError::InvalidArgument(format!("invalid annotation: {e}")))
}

/// The limited cgroups above the container at `cgroup_path` (its pod's, `kubepods`'), read through
/// runtime-hooks; none when the path is empty or cannot be read (said at debug level: the broker then allocates
/// from the host alone).
fn parent_limits(id: &str, cgroup_path: &str) -> Vec<ParentLimit> {
    if cgroup_path.is_empty() {
        return Vec::new();
    }
    match runtime_hooks::ancestor_limits(&HostRoots::default(), cgroup_path) {
        Ok(found) => found
            .into_iter()
            .take(predictive_api::wire::MAX_PARENTS)
            .map(|a| ParentLimit {
                path: a.path,
                cpu_limit_cores: a.cpu_limit_cores,
                memory_limit_bytes: a.memory_limit_bytes,
            })
            .collect(),
        Err(e) => {
            tracing::debug!(
                container = id,
                "no parent cgroup limits: {}",
                predictive_api::error_chain(&e)
            );
            Vec::new()
        }
    }
}

/// The broker's heartbeat (`Registered::heartbeat_ms`) rounded up to whole ticks: wake-ups fall on multiples of
/// the tick, so a heartbeat of 2.5 ticks would fall due 3 and 2 ticks apart by turns (more reports for the same
/// staleness bound), and heartbeats on multiples of a whole number of ticks fall on the same wake-up in every
/// shim (`runtime_hooks::pacing::heartbeat_due`). None (an older broker): every wake-up reports.
fn heartbeat_in_ticks(heartbeat_ms: Option<u64>, tick: Duration) -> Duration {
    let hb = Duration::from_millis(heartbeat_ms.unwrap_or(0));
    let tick_ns = tick.as_nanos().max(1);
    let ticks = hb.as_nanos().div_ceil(tick_ns);
    Duration::from_nanos(u64::try_from(ticks * tick_ns).unwrap_or(u64::MAX))
}

/// Keeps at most [`MAX_BUFFERED`] samples for a broker that does not answer, the newest.
fn push_bounded(buffered: &mut Vec<Sample>, s: Sample) {
    if buffered.len() >= MAX_BUFFERED {
        buffered.remove(0);
    }
    buffered.push(s);
}

/// What Register tells the broker about a container at Create: its identity, annotations, image and command,
/// the spec's limits and the limited cgroups above it.
fn register_message(
    id: &str,
    namespace: &str,
    spec: &Spec,
    map: BTreeMap<String, String>,
) -> Register {
    let image = ["io.kubernetes.cri.image-name", "io.containerd.image.name"]
        .iter()
        .find_map(|k| map.get(*k).cloned())
        .unwrap_or_default();
    let limits = spec_limits(spec);
    let cgroup_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parents = parent_limits(id, &cgroup_path);
    let (image, cgroup_path) = (shown_text(image), shown_text(cgroup_path));
    Register {
        container_id: id.to_owned(),
        namespace: namespace.to_owned(),
        annotations: map,
        image,
        // The pod's to choose, up to the kernel's ~2 MiB: the Register carries a bounded form, which still
        // tells commands apart, so that it fits in a line.
        command: spec
            .process()
            .as_ref()
            .and_then(|p| p.args().as_deref())
            .map(|args| {
                predictive_api::wire::bounded_command(args, predictive_api::wire::MAX_COMMAND_BYTES)
                    .into_owned()
            })
            .unwrap_or_default(),
        limits,
        cgroup_path,
        pid: None,
        cgroup: Some(host_cgroup_kind()),
        adopt: None,
        parents,
        own_netns: Some(own_netns(spec)),
        net_ingress: Some(true),
        // The shim's ticker watches the monitors' connections and reports at once on a poke (`ticker.rs`).
        pokes: Some(true),
        created_ns: None,
    }
}

/// A Register's text that the broker only shows (the image, the cgroup path), as its range check takes it: as is
/// when it passes, else with its control characters escaped and cut at 512 characters (`validate::shown`, the
/// broker's own escaping; at most ~3 KiB), or empty when it is only whitespace. An operator may give
/// `ctr run --cgroup` a path with a control character in it (a legal cgroup name); sent raw, the Register was
/// refused and the container ran unmonitored.
fn shown_text(v: String) -> String {
    use predictive_api::validate::{MAX_PATH, optional_text, shown};
    if optional_text("", &v, MAX_PATH).is_ok() {
        v
    } else if v.trim().is_empty() {
        String::new()
    } else {
        // An escaped control character takes at most 6 bytes, any other at most 4.
        shown(&v, MAX_PATH / 8)
    }
}

/// Whether the spec gives the container a network namespace of its own (a new one, or a path such as a CNI
/// netns); without one it shares the host's network and no egress limit applies.
fn own_netns(spec: &Spec) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| {
            ns.iter()
                .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        })
}

/// The shim's one timer for its containers' monitors (`ticker.rs`), on the broker config's tick.
fn ticker() -> &'static Arc<Ticker<Augment>> {
    static TICKER: OnceLock<Arc<Ticker<Augment>>> = OnceLock::new();
    TICKER.get_or_init(|| Arc::new(Ticker::new(Settings::get().tick)))
}

/// Both set and `now` below `then`.
fn below<T: PartialOrd>(now: Option<T>, then: Option<T>) -> bool {
    matches!((now, then), (Some(n), Some(t)) if n < t)
}

/// Ends a settled sleep of the shim's ticker: its containers are looked at now (`ticker.rs`).
pub fn wake_monitors() {
    ticker().wake();
}

impl Watched for Augment {
    fn look(&self, forced: bool) -> bool {
        self.wake(forced)
    }

    fn poked(&self) -> bool {
        self.state
            .try_lock()
            .is_ok_and(|st| !st.finished && st.client.has_unread())
    }

    fn arm_wakes(&self, set: &runtime_hooks::TriggerSet) {
        let Ok(st) = self.state.try_lock() else {
            return;
        };
        if let Some(fd) = st.client.fd()
            && let Err(e) = set.arm_readable(fd)
        {
            tracing::debug!(container = %self.id, "watching the broker's connection for pokes: {e}");
        }
        drop(st);
        let Ok(w) = self.wakes.try_lock() else {
            return;
        };
        if let Some(t) = w.threshold.as_ref()
            && let Err(e) = set.arm_readable(std::os::fd::AsFd::as_fd(t))
        {
            tracing::debug!(container = %self.id, "watching the memory threshold: {e}");
        }
        // A container held at `memory.high` changes the file every 10 ms: after it woke a sleep, the file is
        // armed again only once `MEMORY_EVENTS_QUIET` has passed (a PSI trigger's rate), and read first, so a
        // change the looks have already seen does not end the next sleep.
        if let Some(events) = w.events.as_ref()
            && w.events_woke
                .is_none_or(|at| at.elapsed() >= MEMORY_EVENTS_QUIET)
            && let Err(e) = events.consume().map_err(|e| e.to_string()).and_then(|_| {
                set.arm_priority(std::os::fd::AsFd::as_fd(events))
                    .map_err(|e| e.to_string())
            })
        {
            tracing::debug!(container = %self.id, "watching {}: {e}", events.path().display());
        }
    }

    fn woke_by(&self, fired: &[std::os::fd::RawFd]) {
        use std::os::fd::AsRawFd;
        if let Ok(mut w) = self.wakes.try_lock()
            && w.events
                .as_ref()
                .is_some_and(|e| fired.contains(&e.as_raw_fd()))
        {
            tracing::debug!(container = %self.id, "memory.events changed: usage passed memory.high or memory.max");
            w.events_woke = Some(Instant::now());
        }
    }

    fn settled(&self) -> Option<Duration> {
        self.settled()
    }

    fn step_all(due: &[Arc<Self>]) {
        Augment::step_all(due)
    }
}

/// Most wake-ups between two Registers of a container the broker left unanswered (`MonitorState::register_wait`).
const MAX_REGISTER_BACKOFF: u32 = 8;

/// What wakes a settled shim for one container, besides a poke from the broker.
#[derive(Default)]
struct Wakes {
    /// PSI triggers on the container's pressure files.
    triggers: Option<runtime_hooks::PressureTriggers>,
    /// A v1 memory usage threshold one step above the idle usage the broker last heard of
    /// ([`Augment::keep_threshold`]).
    threshold: Option<runtime_hooks::MemoryThreshold>,
    /// No threshold can be armed here (cgroup v2, no memory controller): not tried again.
    no_threshold: bool,
    /// cgroup v2: the container's `memory.events`, which changes when its usage passes `memory.high` (the
    /// broker's allocation) or `memory.max`, where the kernel starts reclaiming from it.
    events: Option<runtime_hooks::ChangeFile>,
    /// When a change of `events` last ended a settled sleep.
    events_woke: Option<Instant>,
}

/// After `memory.events` woke a settled sleep, how long until it may wake one again (a PSI trigger's window: a
/// container held at `memory.high` changes the file up to every 10 ms).
const MEMORY_EVENTS_QUIET: Duration = Duration::from_secs(2);

/// What a container's monitor owns between ticks.
struct MonitorState {
    client: Client,
    /// The container is known to the broker.
    registered: bool,
    /// A Register went out and got no answer (a timeout, a dropped connection): the broker may have taken it,
    /// so the run's Finish is sent anyway (the broker answers not_found when it never got it) and no task is left
    /// registered after the container is gone.
    maybe_known: bool,
    /// Wake-ups left before the monitor tries to register again, and the last such wait: a broker that left a
    /// Register unanswered (stalled) reads every retry once it goes on, and one that refused it refuses it again,
    /// so they are spaced out (1, 2, 4, then every [`MAX_REGISTER_BACKOFF`] ticks) instead of one per tick.
    register_wait: (u32, u32),
    /// The run's Finish went out (or the container is gone): no step reports for it any more (the shim's ticker
    /// may have looked at it just before it left).
    finished: bool,
    cgroup: Option<ContainerCgroup>,
    sampler: Option<Sampler>,
    buffered: Vec<Sample>,
    /// The last full sample read.
    last: Option<Sample>,
    /// The last full sample left the network counters out: the container's network namespace lists more
    /// interfaces than the sampler reads (said in the log when it starts and when it ends).
    net_oversized: bool,
    pace: Pace,
}

/// When the monitor reports (`runtime_hooks::pacing`): the probe of each wake-up decides.
struct Pace {
    pacer: Pacer,
    /// What the wake-up's probe decided, for the blocking step that reports.
    due: Option<(Probe, Why)>,
    /// The broker has heard the container is stopping: every wake-up reports from then on (it is short).
    stopping_sent: bool,
    /// The cgroup's OOM-kill counter at the last report the broker took.
    oom_kills_reported: u64,
}

impl Pace {
    /// With the heartbeat the broker asked for at registration (`Registered::heartbeat_ms`); without one (an
    /// older broker, or none yet) every wake-up reports.
    fn new(heartbeat_ms: Option<u64>) -> Self {
        Self {
            pacer: Pacer::new(Pacing::with_heartbeat(heartbeat_in_ticks(
                heartbeat_ms,
                Settings::get().tick,
            ))),
            due: None,
            stopping_sent: false,
            oom_kills_reported: 0,
        }
    }
}

/// The augmentation of one task: prediction, allocation, monitor.
pub struct Augment {
    /// The container as the broker names it ([`predictive_api::wire::broker_id`]: `<namespace>/<id>` outside
    /// containerd's `default` namespace), in every message and log line.
    pub id: String,
    pub mode: Mode,
    /// What Register sent (its limits and parents follow an Update): sent again after a broker restart.
    register: Mutex<Register>,
    /// The broker's answer at registration: the predicted profile (`None`: not registered, or cold start).
    pub registered: Mutex<Option<Registered>>,
    /// The allocation in force.
    pub allocation: Mutex<Allocation>,
    pid: Mutex<Option<i32>>,
    state: Mutex<MonitorState>,
    stop: Notify,
    monitor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    finished: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What ends the shim's settled sleep for this container besides a poke (`ticker.rs`).
    wakes: Mutex<Wakes>,
    /// Directories this shim made in the companion hierarchies (`name=systemd`, a hybrid host's cgroup2 tree),
    /// deepest last.
    companions: Mutex<Vec<PathBuf>>,
    /// The systemd unit owning the cgroup (systemd driver): directives are set on it too.
    scope: Mutex<Option<crate::systemd::Scope>>,
    /// Who froze the container (the user, the broker) and whether it is stopping (`freeze.rs`).
    pub freezer: Freezer,
    /// An egress limit is in force: the monitor reports every tick with the full sample (its network counters),
    /// since a sender can move megabytes a second at under 1% of a core, which the pacer would call idle and the
    /// broker would then see no traffic and lend the sender's share away.
    net_limited: std::sync::atomic::AtomicBool,
    /// An ingress limit is in force: the same rule for a receiver.
    net_in_limited: std::sync::atomic::AtomicBool,
    /// The spec disables the OOM killer (Docker's `--oom-kill-disable`, cgroup v1): no directive turns it on.
    oom_kill_disabled_by_user: bool,
    /// The broker left this container's last call unanswered within its budget (stopped, hung): a Delete does
    /// not wait for the run's summary, which goes out after the reply with [`UNWAITED_SUMMARY_BUDGET`].
    unanswered: std::sync::atomic::AtomicBool,
    /// The run summary's last read of the cgroup is done (or none is needed): the cgroup may go.
    summarized: tokio::sync::watch::Sender<bool>,
    /// When Create sent the Register: the run's duration is measured from here (`Finish::ran_ms`).
    created: Instant,
}

/// A directive for the network (egress or ingress), applied outside the cgroup.
fn is_net(a: &Action) -> bool {
    matches!(
        a,
        Action::SetNetEgress { .. } | Action::SetNetIngress { .. }
    )
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The `delete` action after a shim that is gone (SIGKILL, the OOM killer) while its container still stood: tells
/// the broker the run ended with the exit status the action reports to containerd (137), so the container's
/// allocation and leases leave the broker's books now rather than at its forget, and the run is recorded. Nothing
/// for a container the broker was never told of (mode off, a pod sandbox, predictive disabled, a spec that does
/// not load or whose annotations do not check); bounded by the Register budget, never starts a broker, and a
/// broker that is down or never knew the container is not an error.
pub fn finish_after_dead_shim(namespace: &str, id: &str, bundle: &Path) {
    let Ok(spec) = Spec::load(bundle.join("config.json")) else {
        return;
    };
    let Ok(ann) = check_annotations(&spec) else {
        return;
    };
    let sandbox = is_sandbox(&annotations(&spec));
    let s = Settings::get();
    if sandbox || ann.mode == Mode::Off || !s.enabled {
        return;
    }
    let f = Finish {
        container_id: predictive_api::wire::broker_id(namespace, id),
        exit_code: 137,
        oom_killed: false,
        peak_memory_bytes: None,
        cpu_seconds: None,
        ran_ms: None,
        // Unknown to the `delete` action: the Finish ends whichever run of the container is registered.
        created_ns: None,
    };
    match Client::new(&s.socket, s.register_budget).finish(&f) {
        Ok(_) => {}
        Err(e) if e.is_no_broker() || e.is_not_registered() => {}
        Err(e) => eprintln!(
            "{}: delete {}: the broker was not told the run ended: {}",
            crate::RUNTIME_NAME,
            id.escape_debug(),
            predictive_api::error_chain(&e)
        ),
    }
}

impl Augment {
    /// Create, before libcontainer: checks the annotations and registers (bounded); in mode enforce the caller
    /// writes [`Augment::spec_directives`] into `config.json`. `None` in mode off. Blocking: call from the
    /// blocking pool.
    pub fn prepare(id: &str, namespace: &str, spec: &Spec) -> Result<Option<Arc<Augment>>> {
        // The broker serves every namespace: its name for the container says which (`a/web`; `web` in `default`).
        let id = &predictive_api::wire::broker_id(namespace, id);
        let ann = check_annotations(spec)?;
        let map = annotations(spec);
        if is_sandbox(&map) {
            // The pause process: nothing to predict, and its history would pollute the pod's.
            tracing::debug!(
                container = id,
                "a pod sandbox: not registered with the broker"
            );
            return Ok(None);
        }
        if ann.mode == Mode::Off {
            tracing::debug!(
                container = id,
                "io.predictive.mode=off: the broker is not contacted"
            );
            return Ok(None);
        }
        let s = Settings::get();
        if !s.enabled {
            return Ok(None);
        }
        let mut register = register_message(id, namespace, spec, map);
        let started = Instant::now();
        // The run's name to the broker, in every Register and its Finish: when this Create was taken, on the
        // monotonic clock every shim on the host shares.
        register.created_ns = crate::ticker::monotonic_now().map(|d| d.as_nanos() as u64);
        let limits = register.limits;
        let mut client = Client::new(&s.socket, s.register_budget);
        let result = register_at_create(&mut client, &register, s);
        let mut allocation = spec_allocation(&limits);
        // No answer (a timeout, a broken connection): the broker may have it, so Finish goes out; a refusal is not.
        let maybe_known =
            matches!(&result, Err(e) if !e.is_no_broker() && !matches!(e, ClientError::Broker(_)));
        let unanswered = matches!(&result, Err(e) if e.is_unanswered());
        let registered = match result {
            Ok(r) => {
                spawn::note_available(s);
                tracing::info!(
                    container = id,
                    task_key = %r.task_key,
                    mode = ?r.mode,
                    cold_start = r.cold_start,
                    allocation = ?r.allocation,
                    took_us = started.elapsed().as_micros() as u64,
                    "registered with the broker"
                );
                if r.mode == Mode::Enforce {
                    allocation = r.allocation;
                }
                Some(r)
            }
            Err(ClientError::Broker(e))
                if e.code == predictive_api::wire::ErrorCode::InvalidAnnotation =>
            {
                return Err(ShimError::InvalidArgument(e.message));
            }
            Err(e) if e.is_no_broker() => {
                // Said once per host (spawn.rs), not once per container.
                spawn::note_unavailable(s, &format!("no broker at {}", s.socket.display()));
                tracing::debug!(
                    container = id,
                    "broker unavailable ({}): starting with the spec's limits (fail open)",
                    predictive_api::error_chain(&e)
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    container = id,
                    "broker unavailable ({}): starting with the spec's limits (fail open)",
                    predictive_api::error_chain(&e)
                );
                None
            }
        };
        client.set_timeout(s.tick.min(Duration::from_secs(1)));
        Ok(Some(Arc::new(Augment {
            id: id.to_owned(),
            mode: ann.mode,
            created: started,
            register: Mutex::new(register),
            state: Mutex::new(MonitorState {
                client,
                registered: registered.is_some(),
                maybe_known,
                register_wait: (0, 0),
                finished: false,
                cgroup: None,
                sampler: None,
                buffered: Vec::new(),
                last: None,
                net_oversized: false,
                pace: Pace::new(registered.as_ref().and_then(|r| r.heartbeat_ms)),
            }),
            registered: Mutex::new(registered),
            allocation: Mutex::new(allocation),
            pid: Mutex::new(None),
            stop: Notify::new(),
            net_limited: std::sync::atomic::AtomicBool::new(false),
            net_in_limited: std::sync::atomic::AtomicBool::new(false),
            monitor: Mutex::new(None),
            finished: Mutex::new(None),
            wakes: Mutex::default(),
            companions: Mutex::new(Vec::new()),
            scope: Mutex::new(None),
            freezer: Freezer::default(),
            oom_kill_disabled_by_user: oom_kill_disabled_by(spec),
            unanswered: std::sync::atomic::AtomicBool::new(unanswered),
            summarized: tokio::sync::watch::Sender::new(false),
        })))
    }

    /// `d` as it is applied (see [`honour_oom_choice`]).
    fn honoured<'d>(&self, d: &'d Directive) -> std::borrow::Cow<'d, Directive> {
        honour_oom_choice(d, self.oom_kill_disabled_by_user)
    }

    /// The registration's directives as they are applied (mode enforce only): into `config.json` before
    /// libcontainer reads it ([`crate::spec_edit::edit_spec`] keeps the CPU and memory ones), and to the cgroup
    /// once the init exists.
    pub fn spec_directives(&self) -> Vec<Directive> {
        lock(&self.registered)
            .as_ref()
            .filter(|r| r.mode == Mode::Enforce)
            .map(|r| {
                r.directives
                    .iter()
                    .map(|d| self.honoured(d).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The container's cgroup is a systemd unit's (systemd driver): every directive applied is set on the unit
    /// too, so that systemd's next daemon-reload keeps it.
    pub fn set_scope(&self, scope: crate::systemd::Scope) {
        *lock(&self.scope) = Some(scope);
    }

    /// Under the systemd driver, keeps a directive applied to the cgroup only (a weight), for
    /// [`crate::systemd::Scope::sync`] to write again after the unit's next change and for the unit's drop-ins.
    fn keep_for_unit(&self, action: &Action) {
        if let Some(scope) = lock(&self.scope).as_ref() {
            self.keep_in(scope, action);
        }
    }

    fn keep_in(&self, scope: &crate::systemd::Scope, action: &Action) {
        if let Err(e) = scope.keep(action) {
            tracing::warn!(container = %self.id, ?action, "applied to the cgroup, but not written into the unit's drop-ins (a daemon-reload would undo it): {e}");
        }
    }

    /// Under the systemd driver, sets the unit's properties for the applied directive `d` (and writes again what
    /// the unit has none for), or keeps `d` (a weight, applied to the cgroup only) for the next change and for the
    /// unit's drop-ins.
    fn sync_unit(&self, d: &Directive, cg: &ContainerCgroup) {
        let guard = lock(&self.scope);
        let Some(scope) = guard.as_ref() else {
            return;
        };
        let Some(resources) = unit_resources(&d.action) else {
            return self.keep_in(scope, &d.action);
        };
        match scope.sync(&resources, cg) {
            Ok(problems) => {
                for p in problems {
                    tracing::warn!(container = %self.id, action = ?d.action, "after the unit's properties changed, writing again what it has none for: {p}");
                }
            }
            Err(e) => {
                tracing::warn!(container = %self.id, action = ?d.action, "directive applied to the cgroup but not to its systemd unit (a daemon-reload would undo it): {}", predictive_api::error_chain(&e));
            }
        }
    }

    /// [`Augment::created`]'s blocking part: puts the container's init into the companion hierarchies (a move
    /// into a cgroup waits for the kernel's RCU grace period, 5-25 ms), applies the registration's directives and
    /// sets up the sampler. Call from the blocking pool.
    fn attach(&self, pid: i32) {
        *lock(&self.pid) = Some(pid);
        let made = crate::companions::join_companions(&HostRoots::default(), &self.id, pid);
        lock(&self.companions).extend(made);
        let own = self.spec_directives();
        {
            let mut st = lock(&self.state);
            match ContainerCgroup::from_pid(&HostRoots::default(), pid) {
                Ok(cg) => {
                    for d in &own {
                        if is_net(&d.action) {
                            self.apply_net(d);
                        } else if d.action == Action::Unknown {
                            self.unknown(d);
                        } else {
                            match predictive_api::apply::apply(d, &cg) {
                                Ok(true) => self.keep_for_unit(&d.action),
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(container = %self.id, "applying the initial {:?}: {e}", d.action)
                                }
                            }
                        }
                    }
                    st.sampler = Some(cg.sampler());
                    self.freezer.set_cgroup(cg.clone());
                    st.cgroup = Some(cg);
                }
                Err(e) => tracing::warn!(container = %self.id, "no cgroup to monitor: {e}"),
            }
        }
    }

    /// The container's cgroup, once [`Augment::created`] found it.
    pub fn cgroup(&self) -> Option<ContainerCgroup> {
        lock(&self.state).cgroup.clone()
    }

    /// After libcontainer created the container (before its process runs): joins the companion hierarchies and
    /// applies the registration's directives to the live cgroup too (the OOM-killer switch is not in every cgroup
    /// driver's spec support), on the blocking pool ([`Augment::attach`]), then starts the monitor. Returns once
    /// the container is in its cgroups: the Start waits for it (`task::set_up`, after Create's reply).
    pub async fn created(self: &Arc<Self>, pid: i32) {
        let me = self.clone();
        if tokio::task::spawn_blocking(move || me.attach(pid))
            .await
            .is_err()
        {
            tracing::error!(container = %self.id, "setting up the cgroups panicked");
        }
        self.start_monitor();
    }

    /// The monitor: the shim's ticker (`ticker.rs`, one timer for all its containers) looks at it every tick,
    /// reading the cheap probe on the runtime thread, and only when the pacer says the broker's picture is out of
    /// date does the container join that wake-up's step on the blocking pool: full sample when it matters,
    /// report (with the shim's other reports of the wake-up, in one message), apply ([`Augment::step_all`]). An
    /// idle container costs two `pread`s a tick and a report per heartbeat. Between ticks, a container that
    /// starts stopping is kicked and steps at once on its own.
    fn start_monitor(self: &Arc<Self>) {
        self.arm_triggers();
        ticker().join(self.clone());
        let me = self.clone();
        *lock(&self.monitor) = Some(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = me.stop.notified() => break,
                    // The container just became stopping: the broker hears it now, not a tick later.
                    _ = me.freezer.kicked() => {}
                }
                // The shim's ticker may sleep until a heartbeat: a stopping container is looked at every tick.
                ticker().wake();
                if !me.wake(true) {
                    continue;
                }
                let m = me.clone();
                if tokio::task::spawn_blocking(move || Augment::step_all(&[m]))
                    .await
                    .is_err()
                {
                    tracing::error!(container = %me.id, "a monitor step panicked");
                }
            }
        }));
    }

    /// PSI triggers on the container's cpu/memory pressure, watched by the shim's ticker: a stall ends a settled
    /// sleep. Without them (a v1 host without the cgroup2 tree, no PSI) the container is seen at its heartbeat.
    fn arm_triggers(&self) {
        let dirs = lock(&self.state).cgroup.as_ref().map(|c| c.dirs().clone());
        let Some(dirs) = dirs else {
            return;
        };
        match runtime_hooks::PressureTriggers::arm(&dirs) {
            Ok(t) => {
                static SAID: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::info!(window = ?runtime_hooks::trigger::WINDOW, "PSI triggers armed: a stall ends a settled sleep");
                }
                ticker().watch(&t);
                lock(&self.wakes).triggers = Some(t);
            }
            Err(e) => {
                tracing::debug!(container = %self.id, "no PSI triggers: {}", predictive_api::error_chain(&e))
            }
        }
        match runtime_hooks::ChangeFile::memory_events(&dirs) {
            Some(Ok(events)) => lock(&self.wakes).events = Some(events),
            Some(Err(e)) => {
                tracing::debug!(container = %self.id, "memory.events not watched: {e}")
            }
            None => {}
        }
    }

    /// Leaves the ticker and drops the triggers (closing one waits for an RCU grace period, ~18 ms: not on the
    /// runtime thread).
    fn leave_ticker(self: &Arc<Self>) {
        ticker().leave(self);
        // Closing a threshold's eventfd unregisters it later, in a kernel worker (~7 us).
        let mut wakes = lock(&self.wakes);
        drop(wakes.threshold.take());
        drop(wakes.events.take());
        let triggers = wakes.triggers.take();
        drop(wakes);
        let Some(t) = triggers else {
            return;
        };
        ticker().unwatch(&t);
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || drop(t))),
            Err(_) => drop(t),
        }
    }

    /// One wake-up's probe; `true` when a report is due. Never blocks the runtime thread: the state is only
    /// tried (a step or a Finish holding it means the blocking path runs), and the two files read are cgroup
    /// counters, which never wait on a device.
    fn wake(&self, kicked: bool) -> bool {
        let Ok(mut guard) = self.state.try_lock() else {
            return true;
        };
        let st = &mut *guard;
        if st.finished {
            return false;
        }
        let Some(sampler) = st.sampler.as_mut() else {
            return false;
        };
        let probe = sampler.probe();
        let forced = kicked
            || !st.registered
            || st.pace.stopping_sent
            || !st.buffered.is_empty()
            || self.net_limited.load(std::sync::atomic::Ordering::Relaxed)
            || self
                .net_in_limited
                .load(std::sync::atomic::Ordering::Relaxed);
        match st.pace.pacer.check(probe, forced) {
            Some(why) => {
                st.pace.due = Some((probe, why));
                true
            }
            None => false,
        }
    }

    /// The heartbeat when the looks until the next one would find nothing to say (`ticker.rs`): the pacer has
    /// it settled (idle, the broker told so), nothing is buffered or pending (a poke that came during the last
    /// report is: the next tick reports), the container is neither frozen by the broker nor stopping, nothing
    /// forces a report each tick (a network limit), and it lends nothing (its allocation is not below what it
    /// registered with: a lender turning busy must get its CPU back within ticks). Never blocks: a state held
    /// elsewhere means not settled.
    fn settled(&self) -> Option<Duration> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.net_limited.load(Relaxed) || self.net_in_limited.load(Relaxed) {
            return None;
        }
        let st = self.state.try_lock().ok()?;
        let quiet = !st.finished
            && st.registered
            && st.sampler.is_some()
            && !st.pace.stopping_sent
            && st.buffered.is_empty()
            && st.pace.due.is_none()
            && !st.client.poked_late()
            && st.pace.pacer.settled();
        let heartbeat = st.pace.pacer.pacing().heartbeat;
        drop(st);
        (quiet && self.freezer.at_rest() && !self.lends()).then_some(heartbeat)
    }

    /// Whether the allocation in force is below the one registered with, in CPU or memory (the broker lent part
    /// of it, or took it back under pressure).
    fn lends(&self) -> bool {
        let (Ok(now), Ok(reg)) = (self.allocation.try_lock(), self.registered.try_lock()) else {
            return true;
        };
        let Some(reg) = reg.as_ref() else {
            return false;
        };
        below(now.cpu_cores, reg.allocation.cpu_cores)
            || below(now.memory_bytes, reg.allocation.memory_bytes)
    }

    /// The step of a wake-up's due containers (the shim's ticker's, or one kicked container): each one's report
    /// is made under its lock ([`Self::make_report`]), all go to the broker in one message on the first one's
    /// connection (`batch.rs`), and each one's outcome is applied under the same lock ([`Self::complete`]).
    /// The locks are held across the call, as one container's step always did: an Update or a Finish of one of
    /// them waits for it (the client's timeout bounds it). Nothing else takes two of these locks.
    fn step_all(due: &[Arc<Augment>]) {
        let mut held = Vec::with_capacity(due.len());
        let mut reports = Vec::with_capacity(due.len());
        for a in due {
            let mut st = lock(&a.state);
            if let Some((report, oom_kills)) = a.make_report(&mut st) {
                held.push((a, st, oom_kills));
                reports.push(report);
            }
        }
        let Some((_, first, _)) = held.first_mut() else {
            return;
        };
        let outcomes = crate::batch::shared().send(reports, &mut first.client);
        for ((a, mut st, oom_kills), (sent, report)) in held.into_iter().zip(outcomes) {
            a.complete(&mut st, sent, report, oom_kills);
            a.keep_threshold(&st);
        }
    }

    /// Keeps a v1 memory usage threshold one memory step above the usage the broker last heard of an idle
    /// container, so a settled container whose memory grows wakes the shim's ticker (`ticker.rs`) instead of
    /// waiting for its heartbeat. Re-armed only when that usage left the step below the level (an arm waits for
    /// an RCU grace period, 8-16 ms here: it runs on the blocking pool, after a report); a busy container keeps
    /// the one it has. Not tried again where none can be armed (cgroup v2: its `memory.events`, watched in
    /// [`Watched::arm_wakes`], and its PSI memory trigger stand in).
    fn keep_threshold(&self, st: &MonitorState) {
        let (Some(mem), Some(cg)) = (st.pace.pacer.idle_memory(), st.cgroup.as_ref()) else {
            return;
        };
        let step = st.pace.pacer.pacing().memory_step_bytes;
        let mut w = lock(&self.wakes);
        let kept = w
            .threshold
            .as_ref()
            .is_some_and(|t| t.bytes() > mem && t.bytes() <= mem.saturating_add(step));
        if st.finished || w.no_threshold || kept {
            return;
        }
        // The old one first: its eventfd may have fired (the growth this report told of).
        w.threshold = None;
        match runtime_hooks::MemoryThreshold::arm(cg.dirs(), mem.saturating_add(step)) {
            Ok(t) => w.threshold = Some(t),
            Err(e) => {
                use runtime_hooks::ThresholdError::{CgroupV2, NoMemoryController};
                w.no_threshold = matches!(e, CgroupV2 | NoMemoryController);
                tracing::debug!(container = %self.id, "no memory threshold: {}", predictive_api::error_chain(&e));
            }
        }
    }

    /// A due container's report and its OOM-kill counter: the full sample when it matters, register if needed.
    /// `None`: nothing to send (it finished, the look found nothing after all, or it could not register).
    fn make_report(&self, st: &mut MonitorState) -> Option<(Report, u64)> {
        if st.finished {
            return None;
        }
        let sampler = st.sampler.as_mut()?;
        let (probe, why) = match st.pace.due.take() {
            Some(due) => due,
            None => {
                // The wake-up could not look (the state was busy): decide here.
                let p = sampler.probe();
                (p, st.pace.pacer.check(p, true)?)
            }
        };
        if let (Some(before), Some(last)) = (st.pace.pacer.quiet_before(), st.last.as_ref()) {
            // The wake-up before was quiet: the broker's newest rate must cover the last tick only.
            push_bounded(&mut st.buffered, before.onto(last));
        }
        let s = match st.last.as_ref() {
            Some(last) if !why.needs_full_sample() => probe.onto(last),
            _ => {
                let full = sampler.sample();
                st.last = Some(full.clone());
                if sampler.net_oversized() != st.net_oversized {
                    st.net_oversized = sampler.net_oversized();
                    if st.net_oversized {
                        tracing::warn!(container = %self.id, "network counters left out: the container's network namespace lists more interfaces than the monitor reads (its /proc/<pid>/net/dev is over 256 KiB, about 2,000 interfaces)");
                    } else {
                        tracing::info!(container = %self.id, "network counters read again");
                    }
                }
                full
            }
        };
        push_bounded(&mut st.buffered, s);
        if !st.registered && !self.register_again(st) {
            return None;
        }
        let oom_kills = st
            .last
            .as_ref()
            .and_then(|s| s.memory.oom_kills)
            .unwrap_or(0);
        let report = Report {
            container_id: self.id.clone(),
            samples: std::mem::take(&mut st.buffered),
            oom_events: oom_kills.saturating_sub(st.pace.oom_kills_reported),
            stopping: self.freezer.stopping_blocking(),
        };
        Some((report, oom_kills))
    }

    /// What became of a container's report: apply the directives, register again for a broker that restarted,
    /// keep the samples for the next one when it failed.
    fn complete(&self, st: &mut MonitorState, sent: Sent, report: Report, oom_kills: u64) {
        self.unanswered.store(
            matches!(sent, Sent::Unanswered(_)),
            std::sync::atomic::Ordering::Relaxed,
        );
        match sent {
            Sent::Directives(directives) => {
                st.pace.pacer.reported();
                st.pace.oom_kills_reported = oom_kills;
                st.pace.stopping_sent |= report.stopping.is_some();
                for d in &directives {
                    self.apply(st, d);
                }
            }
            Sent::NotRegistered => {
                tracing::info!(container = %self.id, "the broker does not know this container (it restarted): registering again");
                st.registered = false;
                st.buffered = report.samples;
                if self.register_again(st) {
                    // The first samples prime the broker's rates; send them now.
                    let again = Report {
                        container_id: self.id.clone(),
                        samples: std::mem::take(&mut st.buffered),
                        oom_events: report.oom_events,
                        stopping: report.stopping.clone(),
                    };
                    match st.client.report(&again) {
                        Ok(_) => {
                            st.pace.pacer.reported();
                            st.pace.oom_kills_reported = oom_kills;
                        }
                        Err(e) => {
                            tracing::debug!(container = %self.id, "report after registering again: {e}")
                        }
                    }
                }
            }
            Sent::NoBroker => {
                tracing::debug!(container = %self.id, "report: no broker");
                st.buffered = report.samples;
                st.registered = false;
            }
            Sent::Unanswered(e) | Sent::Failed(e) => {
                tracing::debug!(container = %self.id, "report: {e}");
                st.buffered = report.samples;
            }
        }
    }

    /// The broker left this container's last call unanswered within its budget: a Delete lets the run's
    /// summary go out after its reply instead of waiting for it.
    pub fn unanswered(&self) -> bool {
        self.unanswered.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps [`Self::unanswered`] up to date with a call's outcome (`None`: answered).
    fn note_answer(&self, error: Option<&ClientError>) {
        self.unanswered.store(
            error.is_some_and(ClientError::is_unanswered),
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Registers a running container with the allocation in force; `true` when the broker took it.
    fn register_again(&self, st: &mut MonitorState) -> bool {
        if st.register_wait.0 > 0 {
            st.register_wait.0 -= 1;
            return false;
        }
        let mut r = lock(&self.register).clone();
        r.pid = *lock(&self.pid);
        r.adopt = Some(*lock(&self.allocation));
        let result = st.client.register(&r);
        self.note_answer(result.as_ref().err());
        st.register_wait = match &result {
            // Unanswered (a stalled broker reads every retry once it goes on), or refused (the same Register is
            // refused again): spaced out.
            Err(e) if e.is_unanswered() || matches!(e, ClientError::Broker(_)) => {
                let wait = (st.register_wait.1 * 2).clamp(1, MAX_REGISTER_BACKOFF);
                (wait, wait)
            }
            _ => (0, 0),
        };
        match result {
            Ok(reg) => {
                spawn::note_available(Settings::get());
                tracing::info!(container = %self.id, task_key = %reg.task_key, "registered with the broker (limits in force adopted)");
                // What adopting leaves to apply (the priority's IO weight: a late Register's container started
                // without it).
                for d in &reg.directives {
                    self.apply(st, d);
                }
                if reg.heartbeat_ms.is_some() {
                    st.pace
                        .pacer
                        .set_heartbeat(heartbeat_in_ticks(reg.heartbeat_ms, Settings::get().tick));
                }
                let mut cur = lock(&self.registered);
                if cur.is_none() {
                    *cur = Some(reg);
                }
                st.registered = true;
                true
            }
            Err(e) => {
                if e.is_no_broker() {
                    spawn::maybe_spawn_broker(Settings::get());
                } else {
                    st.maybe_known = true;
                }
                tracing::debug!(container = %self.id, "registering: {}", predictive_api::error_chain(&e));
                false
            }
        }
    }

    fn apply(&self, st: &MonitorState, d: &Directive) {
        if !d.applied || self.mode != Mode::Enforce {
            return;
        }
        if is_net(&d.action) {
            self.apply_net(d);
            return;
        }
        if d.action == Action::Unknown {
            self.unknown(d);
            return;
        }
        let Some(cg) = st.cgroup.as_ref() else {
            return;
        };
        let d = &*self.honoured(d);
        match self
            .freezer
            .apply_broker(d, cg, predictive_api::apply::apply)
        {
            Ok(true) => {
                self.sync_unit(d, cg);
                let mut a = lock(&self.allocation);
                match &d.action {
                    Action::SetCpu { cores } => a.cpu_cores = *cores,
                    Action::SetMemoryHigh {
                        high_bytes,
                        max_bytes,
                    } => {
                        a.memory_bytes = *high_bytes;
                        a.memory_max_bytes = *max_bytes;
                    }
                    Action::SetMemoryLimit { limit_bytes, .. } => a.memory_bytes = *limit_bytes,
                    _ => {}
                }
                tracing::info!(container = %self.id, action = ?d.action, reason = %d.reason, "directive applied");
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(container = %self.id, action = ?d.action, "directive not applied: {e}")
            }
        }
    }

    /// A directive whose action this shim does not know (a newer broker's): skipped, and said so.
    fn unknown(&self, d: &Directive) {
        tracing::warn!(container = %self.id, reason = %d.reason, "directive skipped: its action is unknown to this shim (a newer broker?)");
    }

    /// An egress directive, in the network namespace of the container's init, or an ingress one, on the host-side
    /// peers of its veth interfaces; errors are logged, never fatal (an ingress peer that cannot be verified is
    /// such an error: nothing is written).
    fn apply_net(&self, d: &Directive) {
        let Some(pid) = *lock(&self.pid) else {
            return;
        };
        let (direction, limited, flag) = match d.action {
            Action::SetNetEgress { rate_bytes_per_sec } => {
                ("egress", rate_bytes_per_sec.is_some(), &self.net_limited)
            }
            Action::SetNetIngress { rate_bytes_per_sec } => (
                "ingress",
                rate_bytes_per_sec.is_some(),
                &self.net_in_limited,
            ),
            _ => return,
        };
        match predictive_api::apply::apply_net(d, pid, Path::new("/proc")) {
            Ok(Some(NetApplied::HostNetwork)) => {
                tracing::info!(container = %self.id, action = ?d.action, "{direction} limit skipped: the container shares the host's network namespace (out of reach)");
            }
            Ok(Some(done)) => {
                flag.store(limited, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(container = %self.id, action = ?d.action, reason = %d.reason, interfaces = ?done, "directive applied");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(container = %self.id, action = ?d.action, "directive not applied: {}", predictive_api::error_chain(&e));
            }
        }
    }

    /// The user resized the container (Update); the shim wrote the new resources to the cgroup already. The broker
    /// gets the new limits (they become the ceiling of the allocation at once) and the directives it answers are
    /// applied here, so the allocation in force is current. A broker that does not answer, or does not know the
    /// container: the new limits stand as written whole (fail open, as at Create), and the monitor registers the
    /// container again with them. Blocking: call from the blocking pool.
    ///
    /// `write` writes the user's resources to the cgroup; it runs under the monitor's lock, so no tick applies a
    /// directive decided before the resize between the user's values and the broker's answer.
    pub fn resized(
        &self,
        resources: &LinuxResources,
        write: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut guard = lock(&self.state);
        let st = &mut *guard;
        write()?;
        let (limits, parents) = {
            let mut r = lock(&self.register);
            let limits = resource_limits(Some(resources), is_kubernetes(&r.annotations));
            r.limits = limits;
            r.parents = parent_limits(&self.id, &r.cgroup_path);
            (limits, r.parents.clone())
        };
        self.tell_resize(st, limits, parents);
        Ok(())
    }

    fn tell_resize(&self, st: &mut MonitorState, limits: SpecLimits, parents: Vec<ParentLimit>) {
        if !st.registered {
            self.fail_open(st, &limits, "the broker does not know the container yet");
            return;
        }
        let update = Update {
            container_id: self.id.clone(),
            limits,
            parents: Some(parents),
        };
        match st.client.update(&update) {
            Ok(directives) => {
                tracing::info!(container = %self.id, ?limits, directives = directives.len(), "resize told to the broker");
                for d in &directives {
                    self.apply(st, d);
                }
                if self.mode != Mode::Enforce {
                    *lock(&self.allocation) = spec_allocation(&limits);
                }
            }
            Err(e) => {
                if e.is_not_registered() || e.is_no_broker() {
                    st.registered = false;
                }
                self.fail_open(st, &limits, &predictive_api::error_chain(&e));
            }
        }
    }

    /// The spec's (new) limits stand, written whole: CPU quota, memory limit with the v1 OOM killer on.
    fn fail_open(&self, st: &MonitorState, limits: &SpecLimits, why: &str) {
        tracing::warn!(container = %self.id, "resize not told to the broker ({why}): the new limits stand (fail open)");
        if self.mode == Mode::Enforce
            && let Some(cg) = st.cgroup.as_ref()
        {
            let memory = match cg.version() {
                runtime_hooks::CgroupVersion::V2 => Action::SetMemoryHigh {
                    high_bytes: None,
                    max_bytes: limits.memory_limit_bytes,
                },
                _ => Action::SetMemoryLimit {
                    limit_bytes: limits.memory_limit_bytes,
                    oom_kill_disabled: self.oom_kill_disabled_by_user,
                },
            };
            for action in [
                Action::SetCpu {
                    cores: limits.cpu_limit_cores,
                },
                memory,
            ] {
                let d = Directive {
                    container_id: self.id.clone(),
                    action,
                    reason: "resize with no broker: the spec's limits".to_owned(),
                    applied: true,
                    old_value: None,
                };
                if let Err(e) = predictive_api::apply::apply(&d, cg) {
                    tracing::warn!(container = %self.id, action = ?d.action, "restoring the spec's limits: {e}");
                }
            }
        }
        *lock(&self.allocation) = spec_allocation(limits);
    }

    /// The init process exited: stop the monitor and send the run summary (in the background; [`Self::wait`]
    /// waits for it).
    pub fn exited(self: &Arc<Self>, status: u32, oom_killed: bool) {
        self.leave_ticker();
        self.stop.notify_one();
        let me = self.clone();
        let handle = tokio::spawn(async move {
            let monitor = lock(&me.monitor).take();
            if let Some(m) = monitor {
                let _ = m.await;
            }
            let m = me.clone();
            let _ = tokio::task::spawn_blocking(move || m.finish(status, oom_killed)).await;
        });
        *lock(&self.finished) = Some(handle);
    }

    fn finish(&self, status: u32, oom_killed: bool) {
        let mut st = lock(&self.state);
        st.finished = true;
        if !st.registered && !st.maybe_known {
            // Still unknown to the broker (it was down all along): nothing it could learn from.
            self.summarized.send_replace(true);
            return;
        }
        if self.unanswered() {
            // Nobody waits for it (see `unanswered`): time for a stalled broker to come back.
            st.client.set_timeout(UNWAITED_SUMMARY_BUDGET);
        }
        // The cgroup outlives its processes until Delete: one last read gives the run's totals, which a run
        // shorter than a tick has in no sample.
        let last = st
            .sampler
            .as_mut()
            .map(|s| s.sample())
            .or_else(|| st.last.clone());
        let peak = last
            .as_ref()
            .and_then(|s| s.memory.peak_bytes.or(s.memory.usage_bytes))
            .max(
                st.last
                    .as_ref()
                    .and_then(|s| s.memory.peak_bytes.or(s.memory.usage_bytes)),
            );
        let cpu_seconds = last
            .as_ref()
            .and_then(|s| s.cpu.usage_ns)
            .map(|ns| ns as f64 / 1e9);
        self.summarized.send_replace(true);
        if st.registered && !st.buffered.is_empty() {
            let rep = Report {
                container_id: self.id.clone(),
                samples: std::mem::take(&mut st.buffered),
                oom_events: 0,
                stopping: None,
            };
            let _ = st.client.report(&rep);
        }
        let f = Finish {
            container_id: self.id.clone(),
            exit_code: status as i32,
            oom_killed,
            peak_memory_bytes: peak,
            cpu_seconds,
            ran_ms: Some(self.created.elapsed().as_millis() as u64),
            created_ns: lock(&self.register).created_ns,
        };
        match st.client.finish(&f) {
            Ok(done) => tracing::info!(
                container = %self.id,
                duration_s = done.duration_s,
                samples = done.samples,
                "run recorded by the broker"
            ),
            // Its Register went unanswered and never reached the broker: nothing was left behind.
            Err(e) if !st.registered && e.is_not_registered() => {
                tracing::debug!(container = %self.id, "the broker never registered this container")
            }
            // The request stays in the broker's socket: a broker that comes back records the run then.
            Err(e) if e.is_unanswered() => tracing::warn!(
                container = %self.id,
                "the run's summary got no answer ({}): recorded only if the broker reads it later",
                predictive_api::error_chain(&e)
            ),
            Err(e) => {
                tracing::warn!(container = %self.id, "the run was not recorded: {}", predictive_api::error_chain(&e))
            }
        }
    }

    /// Takes over cgroup2 directories made for this container before it was created (outermost first):
    /// [`Augment::cleanup`] removes them with the ones [`crate::companions::join_companions`] makes.
    pub fn adopt_companions(&self, made: Vec<PathBuf>) {
        lock(&self.companions).splice(0..0, made);
    }

    /// After the container's processes are gone: removes the directories [`crate::companions::join_companions`] made.
    pub fn cleanup(&self) {
        let made: Vec<PathBuf> = lock(&self.companions).drain(..).collect();
        crate::companions::remove_companions(&self.id, &made);
    }

    /// Waits (at most `within`) until the run summary has read the cgroup for the last time.
    pub async fn summarized(&self, within: Duration) {
        let mut read = self.summarized.subscribe();
        let _ = tokio::time::timeout(within, read.wait_for(|done| *done)).await;
    }

    /// Waits (at most `within`) until the run summary was sent, so a shim that exits after Delete loses
    /// nothing.
    pub async fn wait(self: &Arc<Self>, within: Duration) {
        self.leave_ticker();
        self.stop.notify_one();
        let finished = lock(&self.finished).take();
        if let Some(h) = finished {
            let _ = tokio::time::timeout(within, h).await;
        } else if let Some(m) = lock(&self.monitor).take() {
            m.abort();
        }
    }
}

/// The OCI resources a CPU or memory directive amounts to, for a systemd unit's properties; `None` for the
/// rest (freezing is not a unit property systemd rewrites).
fn unit_resources(action: &Action) -> Option<oci_spec::runtime::LinuxResources> {
    use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};
    let mut r = LinuxResources::default();
    match action {
        Action::SetCpu { cores } => {
            let mut cpu = LinuxCpu::default();
            cpu.set_period(Some(100_000));
            cpu.set_quota(Some(match cores {
                Some(c) => ((c * 100_000.0).round() as i64).max(1000),
                None => -1,
            }));
            r.set_cpu(Some(cpu));
        }
        Action::SetMemoryHigh {
            high_bytes,
            max_bytes,
        } => {
            let mut unified = std::collections::HashMap::new();
            unified.insert(
                "memory.high".to_owned(),
                high_bytes.unwrap_or(u64::MAX).to_string(),
            );
            if let Some(m) = max_bytes {
                unified.insert("memory.max".to_owned(), m.to_string());
            }
            r.set_unified(Some(unified));
        }
        Action::SetMemoryLimit {
            limit_bytes: Some(l),
            ..
        } => {
            let mut mem = LinuxMemory::default();
            mem.set_limit(Some(i64::try_from(*l).unwrap_or(i64::MAX)));
            r.set_memory(Some(mem));
        }
        _ => return None,
    }
    Some(r)
}

/// Update: applies `resources` to the container's live cgroup `cg` (its own, as found at the create), field by field as
/// `runc update` does (runtime-hooks: shares become `cpu.weight` on v2 with runc's conversion, `unified` entries
/// are written on v2), then, when the broker manages the container, tells it the new limits and applies its
/// answer ([`Augment::resized`]). Blocking: call from the blocking pool.
pub fn apply_update(
    cg: &ContainerCgroup,
    id: &str,
    resources: &LinuxResources,
    augment: Option<&Augment>,
) -> Result<()> {
    let write = || {
        cg.update_resources(resources)
            .map_err(|e| update_error(id, e))
    };
    match augment {
        Some(a) => a.resized(resources, write),
        None => write(),
    }
}

/// The ttrpc error of a refused Update: a value the kernel or the shim refuses is the request's fault
/// (InvalidArgument), a kernel that cannot reclaim enough yet is the container's state (FailedPrecondition).
pub fn update_error(id: &str, e: ActuateError) -> ShimError {
    let message = predictive_api::error_chain(&e);
    match e {
        ActuateError::Invalid { .. }
        | ActuateError::BadKey { .. }
        | ActuateError::OutOfRange { .. }
        | ActuateError::Unsupported { .. }
        | ActuateError::NoController { .. }
        | ActuateError::BelowUsage { .. } => {
            ShimError::InvalidArgument(format!("update {id}: {message}"))
        }
        ActuateError::Busy { .. } => {
            ShimError::FailedPrecondition(format!("update {id}: {message}"))
        }
        _ => ShimError::Runtime {
            op: "update",
            id: id.to_owned(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heartbeat_is_a_whole_number_of_ticks() {
        let tick = Duration::from_millis(1000);
        let ms = Duration::from_millis;
        assert_eq!(heartbeat_in_ticks(Some(2500), tick), ms(3000));
        assert_eq!(heartbeat_in_ticks(Some(3000), tick), ms(3000));
        assert_eq!(heartbeat_in_ticks(Some(2500), ms(250)), ms(2500));
        assert_eq!(heartbeat_in_ticks(None, tick), Duration::ZERO);
    }

    #[test]
    fn the_users_disabled_oom_killer_is_never_turned_on() {
        let spec = |memory: serde_json::Value| -> Spec {
            serde_json::from_value(serde_json::json!({
                "ociVersion": "1.0.2",
                "linux": {"resources": {"memory": memory}}
            }))
            .expect("a spec")
        };
        assert!(oom_kill_disabled_by(&spec(
            serde_json::json!({"limit": 1024, "disableOOMKiller": true})
        )));
        assert!(!oom_kill_disabled_by(&spec(
            serde_json::json!({"limit": 1024})
        )));
        let d = |oom_kill_disabled| Directive {
            container_id: "c1".into(),
            action: Action::SetMemoryLimit {
                limit_bytes: Some(1024),
                oom_kill_disabled,
            },
            reason: "r".into(),
            applied: true,
            old_value: None,
        };
        assert_eq!(*honour_oom_choice(&d(false), true), d(true));
        assert_eq!(*honour_oom_choice(&d(true), true), d(true));
        // Where the user left it on, the broker's choice stands either way.
        assert_eq!(*honour_oom_choice(&d(false), false), d(false));
        assert_eq!(*honour_oom_choice(&d(true), false), d(true));
    }

    #[test]
    fn spec_limits_reads_quota_shares_and_memory() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"resources": {
                "cpu": {"quota": 50000, "period": 100000, "shares": 512},
                "memory": {"limit": 268435456, "reservation": 134217728}
            }}
        }))
        .expect("spec");
        let l = spec_limits(&spec);
        assert_eq!(l.cpu_limit_cores, Some(0.5));
        assert_eq!(l.cpu_request_cores, Some(0.5));
        assert_eq!(l.memory_limit_bytes, Some(256 << 20));
        assert_eq!(l.memory_request_bytes, Some(128 << 20));
        let none: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "linux": {"resources": {"cpu": {"shares": 1024, "quota": -1}, "memory": {"limit": -1}}}
        }))
        .expect("spec");
        assert!(none.linux().is_some());
        assert_eq!(
            spec_limits(&none),
            SpecLimits::default(),
            "ctr's default 1024 shares are no request"
        );
        let mut pod: serde_json::Value = serde_json::to_value(&none).expect("json");
        pod["annotations"] = serde_json::json!({"io.kubernetes.cri.container-type": "container"});
        let pod: Spec = serde_json::from_value(pod).expect("spec");
        assert_eq!(
            spec_limits(&pod),
            SpecLimits {
                cpu_request_cores: Some(1.0),
                ..SpecLimits::default()
            },
            "kubelet's 1024 shares are a 1-CPU request"
        );
    }

    /// What a pod chooses (its command line, up to the kernel's ~2 MiB; a CPU limit of millions of cores, which
    /// the scheduler does not check and the kernel takes) still makes a Register the broker takes, in one line:
    /// before, the broker refused it, and the container ran unmonitored, its Register retried every tick.
    #[test]
    fn whatever_a_pod_chooses_makes_a_register_the_broker_takes() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "args": (0..10_000)
                .map(|i| format!("{i:05}{}", "\u{1}".repeat(200)))
                .collect::<Vec<_>>()},
            "linux": {"resources": {
                "cpu": {"quota": i64::MAX, "period": 1, "shares": u64::MAX},
                "memory": {"limit": i64::MAX, "reservation": i64::MAX}
            }}
        }))
        .expect("spec");
        let r = register_message("c", "k8s.io", &spec, annotations(&spec));
        let line = predictive_api::wire::encode_request(
            Some(1),
            &predictive_api::wire::Request::Register(r.clone()),
        )
        .expect("encoded");
        assert!(
            line.len() < predictive_api::wire::MAX_LINE,
            "a Register of {} bytes",
            line.len()
        );
        let (_, parsed) = predictive_api::wire::parse_request(&line);
        let parsed = parsed.expect("parsed as the broker reads it");
        assert_eq!(predictive_api::validate::request(&parsed), Ok(()));
        let max = predictive_api::validate::MAX_CORES;
        assert_eq!(
            (r.limits.cpu_limit_cores, r.limits.cpu_request_cores),
            (Some(max), Some(max))
        );

        // What an operator chooses: `ctr run --cgroup` with a control character, or a path past the bound; an
        // image name the same. Shown escaped, and the Register taken.
        for (path, shown) in [
            ("/odd\npath/c", "/odd\\npath/c".to_owned()),
            ("/\u{1b}[31mred", "/\\u{1b}[31mred".to_owned()),
            ("   ", String::new()),
            ("/plain/c", "/plain/c".to_owned()),
        ] {
            let mut spec = spec.clone();
            let linux = spec.linux().clone().unwrap_or_default();
            spec.set_linux(Some(
                linux.clone().set_cgroups_path(Some(path.into())).clone(),
            ));
            let mut map = annotations(&spec);
            map.insert("io.containerd.image.name".into(), path.into());
            let r = register_message("c", "default", &spec, map);
            assert_eq!((&r.cgroup_path, &r.image), (&shown, &shown), "{path:?}");
            let req = predictive_api::wire::Request::Register(r);
            assert_eq!(predictive_api::validate::request(&req), Ok(()), "{path:?}");
        }
        let long = format!("/{}", "\u{7f}".repeat(5_000));
        let shown = shown_text(long);
        assert!(shown.len() <= predictive_api::validate::MAX_PATH && shown.starts_with("/\\u{7f}"));
    }

    #[test]
    fn shares_are_kubernetes_requests() {
        let limits = |cpu: serde_json::Value| {
            let r: LinuxResources =
                serde_json::from_value(serde_json::json!({ "cpu": cpu })).expect("resources");
            resource_limits(Some(&r), true)
        };
        assert_eq!(
            limits(serde_json::json!({"shares": 1024})).cpu_request_cores,
            Some(1.0)
        );
        assert_eq!(
            limits(serde_json::json!({"shares": 2048})).cpu_request_cores,
            Some(2.0)
        );
        assert_eq!(
            limits(serde_json::json!({"shares": 102})).cpu_request_cores,
            Some(102.0 / 1024.0)
        );
        // BestEffort (2), unset (0) and absent: no request.
        for cpu in [
            serde_json::json!({"shares": 2}),
            serde_json::json!({"shares": 0}),
            serde_json::json!({}),
        ] {
            assert_eq!(limits(cpu.clone()).cpu_request_cores, None, "{cpu}");
        }
        assert_eq!(resource_limits(None, true), SpecLimits::default());
        let ctr: LinuxResources =
            serde_json::from_value(serde_json::json!({"cpu": {"shares": 1024}}))
                .expect("resources");
        assert_eq!(resource_limits(Some(&ctr), false).cpu_request_cores, None);
        let l = limits(serde_json::json!({"quota": 150000, "period": 100000, "shares": 1536}));
        assert_eq!(
            (l.cpu_limit_cores, l.cpu_request_cores),
            (Some(1.5), Some(1.5))
        );
    }

    #[test]
    fn refused_updates_map_to_grpc_codes() {
        use containerd_shim_protos::ttrpc::Code;
        let io = || std::io::Error::from_raw_os_error(libc::EINVAL);
        let cases = [
            (
                ActuateError::Invalid {
                    path: "/sys/fs/cgroup/x/cpu.max".into(),
                    value: "1 1".into(),
                    source: io(),
                },
                Code::INVALID_ARGUMENT,
            ),
            (
                ActuateError::BadKey {
                    key: "cgroup.procs".into(),
                    reason: "changes the cgroup's membership or structure",
                },
                Code::INVALID_ARGUMENT,
            ),
            (
                ActuateError::Busy {
                    path: "/sys/fs/cgroup/memory/x/memory.limit_in_bytes".into(),
                    value: "1".into(),
                    source: std::io::Error::from_raw_os_error(libc::EBUSY),
                },
                Code::FAILED_PRECONDITION,
            ),
            (
                ActuateError::Read {
                    path: "/x".into(),
                    source: io(),
                },
                Code::UNKNOWN,
            ),
        ];
        for (e, code) in cases {
            let shown = e.to_string();
            let err = update_error("c1", e);
            assert_eq!(err.code(), code, "{shown}");
            assert!(err.chain().contains("c1"), "{}", err.chain());
        }
    }

    #[test]
    fn a_bad_annotation_names_itself() {
        let spec: Spec = serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "annotations": {"io.predictive.priority": "urgent"}
        }))
        .expect("spec");
        let e = check_annotations(&spec).expect_err("bad priority");
        let msg = e.to_string();
        assert!(msg.contains("io.predictive.priority"), "{msg}");
        assert!(msg.contains("urgent"), "{msg}");
    }
}
