//! The broker's wire protocol, version [`PROTOCOL_VERSION`]: newline-delimited JSON over a Unix stream socket
//! (default [`DEFAULT_SOCKET`]). The full schema with examples is in docs/BROKER-API.md.
//!
//! Each request is one JSON object on one line (at most [`MAX_LINE`] bytes):
//! `{"version":1,"id":7,"type":"register",...fields}`. `version` is required and must be 1; `id` is optional and
//! echoed in the reply; `type` picks the message ([`Request`]); the other fields are the message's, flattened.
//! Each reply is one line: `{"version":1,"id":7,"type":"registered",...}` ([`Response`]). A request that cannot
//! be served gets `{"type":"error","code":"invalid_request","message":"..."}` naming what was wrong, and the
//! connection stays open. Unknown fields are ignored, so a newer client can add optional fields without a
//! version bump; removing or changing a field bumps the version.
//!
//! Why JSON lines and not ttrpc: the shim calls Register with a 50 ms budget from a blocking context, which a
//! `std` Unix socket with timeouts does with no runtime and no code generation; the messages are few and small;
//! and an operator can talk to the broker with `socat` when something goes wrong.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::prediction::{Decision, Estimate, Prediction, TaskTypeSummary};
use crate::types::{
    Allocation, CgroupKind, Directive, HostCapacity, Lease, Mode, SpecLimits, TaskView,
};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u32 = 1;
/// Where `predictived` listens by default.
pub const DEFAULT_SOCKET: &str = "/run/predictive/broker.sock";
/// Longest accepted line, bytes (including the newline).
pub const MAX_LINE: usize = 1 << 20;

/// containerd's namespace whose containers the broker names by their bare id (`ctr`'s and nerdctl's default).
pub const DEFAULT_NAMESPACE: &str = "default";

/// The broker's name for container `id` of containerd namespace `namespace`: `<namespace>/<id>`, or the bare id
/// in containerd's `default` namespace (or none). Ids are unique only within a namespace, and one broker serves
/// every namespace (and every containerd) on the host; containerd allows no `/` in either part, so the name is
/// unambiguous. A shim names its containers so in every message.
pub fn broker_id(namespace: &str, id: &str) -> String {
    if namespace.is_empty() || namespace == DEFAULT_NAMESPACE {
        id.to_owned()
    } else {
        format!("{namespace}/{id}")
    }
}

/// The namespace part of a [`broker_id`] with its `/` (`"a/"` of `"a/web"`), empty for a bare id: what the
/// container's own references to other containers (`io.predictive.depends-on`) and its pipeline are qualified
/// with, so they stay inside its namespace.
pub fn namespace_prefix(container_id: &str) -> &str {
    container_id.rfind('/').map_or("", |i| &container_id[..=i])
}

/// Most bytes of a command a Register carries, each argument counted with [`ARG_OVERHEAD`] for its quotes and
/// separator. A command line is the pod's to choose (the kernel execs up to ~2 MiB of it), and a Register must
/// fit in [`MAX_LINE`] even with every byte escaped (six times its size): a shim sends and a broker derives task
/// types from [`bounded_command`]`(args, MAX_COMMAND_BYTES)`.
pub const MAX_COMMAND_BYTES: usize = 64 << 10;
/// Most bytes of a command the broker records with each run and task type (for display): a crash-looping pod
/// with a 400 KB command line would otherwise have stored 400 KB per run, up to `max_runs_per_task` of them.
pub const RECORDED_COMMAND_BYTES: usize = 1 << 10;
/// What [`bounded_command`] counts for each argument besides its bytes.
pub const ARG_OVERHEAD: usize = 8;
/// What [`bounded_command`] keeps free for the argument that stands for the whole command.
const SUMMARY_ARG_BYTES: usize = 96;

/// `command` within `max` bytes (each argument's length plus [`ARG_OVERHEAD`]): unchanged when it fits.
/// Otherwise the leading arguments that fit (the last of them cut at a character boundary), then one argument
/// that stands for the whole command, `...(<n> args, <b> bytes, fnv1a <hash>)`: two commands cut alike stay
/// apart (a task type derived from the command is still its own), and bounding the result again changes nothing.
pub fn bounded_command(command: &[String], max: usize) -> std::borrow::Cow<'_, [String]> {
    let cost = |args: &[String]| -> usize {
        args.iter()
            .map(|a| a.len().saturating_add(ARG_OVERHEAD))
            .fold(0, usize::saturating_add)
    };
    if cost(command) <= max {
        return std::borrow::Cow::Borrowed(command);
    }
    let mut room = max.saturating_sub(SUMMARY_ARG_BYTES + ARG_OVERHEAD);
    let mut kept = Vec::new();
    for arg in command {
        if room <= ARG_OVERHEAD {
            break;
        }
        let take = arg.len().min(room - ARG_OVERHEAD);
        let end = (0..=take)
            .rev()
            .find(|&i| arg.is_char_boundary(i))
            .unwrap_or(0);
        if end < arg.len() {
            if end > 0 {
                kept.push(arg[..end].to_owned());
            }
            break;
        }
        kept.push(arg.clone());
        room -= end + ARG_OVERHEAD;
    }
    kept.push(format!(
        "...({} args, {} bytes, fnv1a {:016x})",
        command.len(),
        command
            .iter()
            .map(String::len)
            .fold(0, usize::saturating_add),
        command_hash(command)
    ));
    std::borrow::Cow::Owned(kept)
}

/// 64-bit FNV-1a over each argument's length and bytes: stable across builds and hosts (task types are
/// derived from it and stored).
fn command_hash(command: &[String]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for arg in command {
        for &b in (arg.len() as u64)
            .to_le_bytes()
            .iter()
            .chain(arg.as_bytes())
        {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// A container starts: what the broker needs to predict and allocate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Register {
    /// The container, as [`broker_id`] names it (a shim older than that sends the bare id).
    pub container_id: String,
    /// containerd namespace.
    #[serde(default)]
    pub namespace: String,
    /// OCI annotations (the `io.predictive.*` ones are read).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// Process args.
    #[serde(default)]
    pub command: Vec<String>,
    /// The spec's limits and requests.
    #[serde(default)]
    pub limits: SpecLimits,
    /// OCI `linux.cgroupsPath`.
    #[serde(default)]
    pub cgroup_path: String,
    /// Init pid, once known.
    #[serde(default)]
    pub pid: Option<i32>,
    /// The cgroup interface (`v1` or `v2`); the broker's host default when absent.
    #[serde(default)]
    pub cgroup: Option<CgroupKind>,
    /// The container already runs with this allocation (a shim registering again after the broker restarted,
    /// or late after a fail-open Create): the broker takes it over as is and answers with no directives.
    #[serde(default)]
    pub adopt: Option<Allocation>,
    /// The cgroups above the container that have a hard limit (its pod's, `kubepods`'), nearest first: the
    /// containers under one share its limit. Absent from older shims.
    #[serde(default)]
    pub parents: Vec<ParentLimit>,
    /// Whether the container has its own network namespace (the spec lists one): only those get an egress limit.
    /// Absent (older shims): assumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_netns: Option<bool>,
    /// The shim applies [`crate::types::Action::SetNetIngress`]. Absent (older shims, which cannot parse that
    /// action): the broker sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_ingress: Option<bool>,
    /// The shim reads [`Response::Poke`] lines on the connection its reports arrive on, between its requests, and
    /// reports at once on one: the broker then pokes it when it has directives for the container, and may ask
    /// a longer heartbeat of it (`Registered::heartbeat_ms`). Absent (older shims): never poked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pokes: Option<bool>,
    /// When the shim took the container's Create, CLOCK_MONOTONIC nanoseconds (since boot): names this run of
    /// the container in every Register (a late one, an `adopt` one) and in its Finish, and orders the runs of one
    /// id, since every shim on a host reads the same clock. The broker refuses a Register of a run whose Finish
    /// it has taken (a shim's retry that queued up behind it) or of a run older than the one registered. Absent
    /// (older shims): runs of one id are told apart by arrival alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ns: Option<u64>,
}

/// Most ancestors a Register or Update may name.
pub const MAX_PARENTS: usize = 32;

/// A cgroup above a container with a hard limit, as the shim read it (`runtime_hooks::ancestor_limits`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ParentLimit {
    /// The cgroup, a path from the hierarchy root (`/kubepods/burstable/pod<uid>`).
    pub path: String,
    /// CPU quota over period, cores (`null`: no quota).
    #[serde(default)]
    pub cpu_limit_cores: Option<f64>,
    /// Memory limit, bytes (`null`: no limit).
    #[serde(default)]
    pub memory_limit_bytes: Option<u64>,
}

/// The user resized a running container (CRI `UpdateContainerResources`, `docker update`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Update {
    /// Container id.
    pub container_id: String,
    /// The new limits and requests, complete (a field left `null` has no limit), as in Register.
    #[serde(default)]
    pub limits: SpecLimits,
    /// The limited ancestors read again at the Update (a pod resize changes the pod's cgroup too); absent: as
    /// registered.
    #[serde(default)]
    pub parents: Option<Vec<ParentLimit>>,
}

/// Telemetry of a running container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Container id.
    pub container_id: String,
    /// Raw samples since the last report, oldest first (`runtime_hooks::Sample`).
    #[serde(default)]
    pub samples: Vec<runtime_hooks::Sample>,
    /// OOM kills since the last report the broker took (the cgroup's `oom_kill` counter in the samples the shim
    /// reads anyway); more than 0 marks the interval under OOM.
    #[serde(default)]
    pub oom_events: u64,
    /// Set (with why: "signal 15", "exec e1", "delete") once the container's owner is stopping it or acting on
    /// it; the shim then sends it with every report. The shim has thawed any freeze and refuses Freeze from then
    /// on; the broker never pauses the task again, ends a pause in force and drops a Freeze not yet delivered.
    /// Absent: not stopping (older shims never send it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopping: Option<String>,
}

/// Most reports one [`Reports`] batch may carry: a pod's containers, which share one shim (Kubernetes caps a pod's
/// containers well below this). A shim with more due at one wake-up sends several batches.
pub const MAX_BATCH: usize = 64;

/// The reports of several containers of one shim, due at the same wake-up (a pod's containers share one shim),
/// in one message: the broker applies them in one pass and records them in one commit. Each entry is checked as
/// a single [`Report`] is, and one that fails is answered with its own error while the others are applied. An
/// older broker answers the whole request with [`ErrorCode::InvalidRequest`] (an unknown `type`); the shim then
/// sends single Reports.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Reports {
    /// At most [`MAX_BATCH`], at least one, each container at most once.
    pub reports: Vec<Report>,
}

/// What became of one entry of a [`Reports`] batch.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcome {
    /// The entry's container id.
    pub container_id: String,
    /// The directives for it, as a single Report's reply carries them (empty when `error` is set).
    #[serde(default)]
    pub directives: Vec<Directive>,
    /// Why this entry was not applied (`not_found`: the broker does not know the container, register again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
}

/// The answer to [`Reports`]: one outcome per entry, in the batch's order.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ReportOutcomes {
    /// In the order of the batch's entries.
    pub results: Vec<ReportOutcome>,
}

/// A container exited.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Finish {
    /// Container id.
    pub container_id: String,
    /// Exit code of the init process.
    #[serde(default)]
    pub exit_code: i32,
    /// Whether the OOM killer fired.
    #[serde(default)]
    pub oom_killed: bool,
    /// Peak memory if the shim read it (`memory.peak` / `max_usage_in_bytes`), bytes.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    /// CPU time the container used over its life, read from its cgroup at exit (`cpuacct.usage` / `cpu.stat`
    /// `usage_usec`), seconds: the run's CPU even when it ended before its first sample. Absent from older shims.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_seconds: Option<f64>,
    /// How long the container ran, from its Create to its init's exit, by the shim's monotonic clock,
    /// milliseconds (at most [`MAX_RAN_MS`]): the run's duration even when its Register reached the broker late
    /// (a broker that stalled) or after this Finish. Absent from older shims and from the `delete` action of a
    /// shim that died: the broker then measures from the Register it took to this Finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ran_ms: Option<u64>,
    /// The run's [`Register::created_ns`]: the Finish ends that run only. Absent (older shims, the `delete` action
    /// of a shim that died): it ends whichever run of the container is registered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_ns: Option<u64>,
}

/// Most milliseconds a [`Finish`] may say its container ran: 10 years.
pub const MAX_RAN_MS: u64 = 10 * 366 * 86_400_000;

/// Which decisions to explain.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Explain {
    /// Only this container.
    #[serde(default)]
    pub container_id: Option<String>,
    /// At most this many, newest last (default 100, at most [`MAX_PAGE`] per request; [`crate::client::Client`]
    /// pages through larger ones).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only decisions older than this sequence number (the previous page's `next_before_seq`): pages backwards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before_seq: Option<u64>,
}

/// Most tasks, task types or decisions one reply carries (`status`, `models`, `explain`).
pub const MAX_PAGE: usize = 1000;
/// Most points one `history` reply carries.
pub const MAX_HISTORY_POINTS: usize = 4096;

/// A page of `status` (tasks in container id order) or `models` (task types in key order).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Page {
    /// Skip this many (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// At most this many (default and most: [`MAX_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// Most runs one `export` reply carries (a reply also stops at [`EXPORT_PAGE_BYTES`] of runs).
pub const MAX_EXPORT_PAGE: usize = 1000;
/// Bytes of encoded runs after which an `export` reply ends its page (well inside [`MAX_LINE`]).
pub const EXPORT_PAGE_BYTES: usize = 768 << 10;
/// Most runs per task type an export may ask for.
pub const MAX_EXPORT_RUNS_PER_TYPE: usize = 100_000;
/// `newest_per_type` when an `export` does not say.
pub const DEFAULT_EXPORT_RUNS_PER_TYPE: usize = 500;

/// Where an `export` page starts: after this run (exclusive). The previous page's `next`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportCursor {
    /// Task type.
    pub task_key: String,
    /// Local run id in the exporting broker's store.
    pub run_id: u64,
}

/// One page of the broker's run history, for another node (`predictivectl export`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportQuery {
    /// Start after this run (default: at the beginning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<ExportCursor>,
    /// Per task type, only its newest this many runs (default [`DEFAULT_EXPORT_RUNS_PER_TYPE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest_per_type: Option<usize>,
    /// At most this many runs in the reply (default and most: [`MAX_EXPORT_PAGE`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Include each run's network rates ([`ExportedRun::net`]). A caller that does not ask (an older
    /// `predictivectl`, whose reader refuses fields it does not know) gets runs without them; an older broker
    /// ignores the field and sends none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_network: Option<bool>,
}

/// A run as it travels between nodes: identity, task type, what was known at start (the command is left out: it
/// may hold secrets and no model reads it) and how it ended. The same shape in an `export` reply and in an
/// export file (the broker's `transfer` module).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedRun {
    /// Node id (16 hex digits) of the broker that recorded the run first.
    pub node: String,
    /// The run's id on that node. (node, run) identifies the run everywhere.
    pub run: u64,
    /// Task type.
    pub task_key: String,
    /// Start, ms since the epoch.
    pub started_at_ms: u64,
    /// Image reference.
    #[serde(default)]
    pub image: String,
    /// `io.predictive.input-bytes`.
    #[serde(default)]
    pub input_bytes: u64,
    /// Declared dependencies.
    #[serde(default)]
    pub dependencies: u32,
    /// The spec's CPU limit, cores.
    #[serde(default)]
    pub requested_cpu_cores: Option<f64>,
    /// The spec's memory limit, bytes.
    #[serde(default)]
    pub requested_memory_bytes: Option<u64>,
    /// Host load at start.
    #[serde(default)]
    pub host_load: f64,
    /// Lifetime, seconds.
    pub duration_s: f64,
    /// Peak memory, bytes.
    pub peak_memory_bytes: u64,
    /// CPU time, seconds.
    #[serde(default)]
    pub cpu_seconds: f64,
    /// Median CPU, cores.
    #[serde(default)]
    pub cpu_p50_cores: f64,
    /// 95th percentile CPU, cores.
    #[serde(default)]
    pub cpu_p95_cores: f64,
    /// Bytes read and written.
    #[serde(default)]
    pub io_bytes: u64,
    /// Exit code.
    #[serde(default)]
    pub exit_code: i32,
    /// Killed by the OOM killer.
    #[serde(default)]
    pub oom_killed: bool,
    /// Time throttled, seconds.
    #[serde(default)]
    pub throttled_s: f64,
    /// Lifetime profile (20 buckets per series, each a share of the run's peak), when the run had samples.
    #[serde(default)]
    pub profile: Option<ExportedProfile>,
    /// Network rates, when the run had its own network namespace and reported counters (export file version 2;
    /// absent in version 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net: Option<ExportedNet>,
}

/// A run's network rates in an export, bytes/s: the mean over its life and the highest between two samples,
/// each way. A direction the run did not measure is absent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedNet {
    /// Mean egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes_per_s: Option<f64>,
    /// Peak egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_peak_bytes_per_s: Option<f64>,
    /// Mean ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes_per_s: Option<f64>,
    /// Peak ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_peak_bytes_per_s: Option<f64>,
}

/// A run's lifetime profile in an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportedProfile {
    /// CPU per bucket over the run's CPU peak.
    pub cpu: Vec<f32>,
    /// Memory per bucket over the run's memory peak.
    pub memory: Vec<f32>,
    /// IO rate per bucket over the run's IO-rate peak.
    pub io: Vec<f32>,
}

/// The answer to `export`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ExportPage {
    /// The exporting broker's node id (16 hex digits).
    pub node_id: String,
    /// Runs, by task type then local run id.
    pub runs: Vec<ExportedRun>,
    /// Where the next page starts (absent on the last page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<ExportCursor>,
}

/// A request.
#[allow(clippy::large_enum_variant)] // one per line on a socket; boxing buys nothing
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// → [`Response::Registered`].
    Register(Register),
    /// → [`Response::Directives`].
    Report(Report),
    /// → [`Response::Reports`].
    Reports(Reports),
    /// → [`Response::Finished`].
    Finish(Finish),
    /// → [`Response::Directives`].
    Update(Update),
    /// → [`Response::Status`].
    Status(#[serde(default)] Page),
    /// → [`Response::Models`].
    Models(#[serde(default)] Page),
    /// → [`Response::Decisions`].
    Explain(Explain),
    /// → [`Response::History`].
    History(HistoryQuery),
    /// → [`Response::Export`].
    Export(#[serde(default)] ExportQuery),
}

impl Request {
    /// Whether the request changes the broker's state (what a read-only peer may not send, and what is answered
    /// only once it is durable).
    pub fn writes(&self) -> bool {
        matches!(
            self,
            Request::Register(_)
                | Request::Report(_)
                | Request::Reports(_)
                | Request::Update(_)
                | Request::Finish(_)
        )
    }
}

/// The answer to Register.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// Task type key.
    pub task_key: String,
    /// Mode from the annotations.
    pub mode: Mode,
    /// No usable history: the allocation is the spec's.
    pub cold_start: bool,
    /// The allocation to write into the spec before the container is created (mode enforce).
    pub allocation: Allocation,
    /// The same allocation as directives, with reasons (marked not applied in mode observe or off).
    pub directives: Vec<Directive>,
    /// The prediction behind it (absent on a cold start or in mode off).
    #[serde(default)]
    pub prediction: Option<Prediction>,
    /// Report at least this often (ms) even when nothing changed: a heartbeat well inside the broker's
    /// `stale_after_ms`, so an idle container that reports only on change is never taken for gone (to a shim
    /// that takes pokes, the broker's `idle_heartbeat_ms`, and the task counts as fresh for two of them). Absent
    /// (an older broker): report every tick.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<u64>,
}

/// Directives for one container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Directives {
    /// Oldest first; apply those with `applied: true`.
    pub directives: Vec<Directive>,
}

/// The answer to Finish.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finished {
    /// Lifetime the broker saw, seconds.
    pub duration_s: f64,
    /// Samples the run summary was built from.
    pub samples: u64,
}

/// The answer to Status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Broker version.
    pub broker_version: String,
    /// Tick, ms.
    pub tick_ms: u64,
    /// Host capacity the controller works with.
    pub host: HostCapacity,
    /// Model set in force.
    pub model_version: u64,
    /// Registered tasks.
    pub tasks: Vec<TaskView>,
    /// Live leases.
    pub leases: Vec<Lease>,
    /// Per task: its type and what was predicted at Register (absent for tasks registered before the
    /// broker kept them).
    #[serde(default)]
    pub predictions: Vec<TaskPrediction>,
    /// Where `host` comes from: `host` (detected or configured) or `kubepods` (node allocatable).
    #[serde(default)]
    pub pool: String,
    /// Registered tasks in all pages (`tasks` is one page of them).
    #[serde(default)]
    pub total_tasks: Option<u64>,
    /// The `offset` of the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

/// What a task was predicted to use, for `predictivectl status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskPrediction {
    /// Container id.
    pub container_id: String,
    /// Task type.
    pub task_key: String,
    /// Registered at, ms.
    pub started_at_ms: u64,
    /// p95 CPU, cores (absent on a cold start).
    #[serde(default)]
    pub cpu_cores: Option<Estimate>,
    /// Peak memory, bytes (absent on a cold start).
    #[serde(default)]
    pub memory_bytes: Option<Estimate>,
    /// Lifetime, seconds (absent on a cold start).
    #[serde(default)]
    pub duration_s: Option<Estimate>,
    /// Mean network egress, bytes/s (absent on a cold start, when the type's runs never measured egress, and
    /// from an older broker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes_per_s: Option<Estimate>,
    /// Mean network ingress, bytes/s (absent as `net_tx_bytes_per_s` is, for ingress).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes_per_s: Option<Estimate>,
}

/// The answer to Models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Models {
    /// Model set in force.
    pub model_version: u64,
    /// Known task types, by key (one page of them).
    pub task_types: Vec<TaskTypeSummary>,
    /// Task types in all pages.
    #[serde(default)]
    pub total: Option<u64>,
    /// The `offset` of the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

/// The answer to Explain: the decision log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decisions {
    /// Oldest first.
    pub decisions: Vec<Decision>,
    /// More (older) decisions may match: ask again with `before_seq` set to this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before_seq: Option<u64>,
}

/// Whose history to return: exactly one of the two.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// A live or recently finished container.
    #[serde(default)]
    pub container_id: Option<String>,
    /// A task type: its latest recorded run and its prediction now.
    #[serde(default)]
    pub task_key: Option<String>,
    /// Skip this many points (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    /// At most this many points (default and most: [`MAX_HISTORY_POINTS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// One observation of a container: what it used and what it was allowed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct HistoryPoint {
    /// When, ms since the epoch.
    pub at_ms: u64,
    /// CPU used, cores.
    pub cpu_cores: f64,
    /// Memory charged, bytes.
    pub memory_bytes: u64,
    /// CPU allocation, cores (`None` = unlimited or unknown).
    #[serde(default)]
    pub cpu_alloc_cores: Option<f64>,
    /// Memory allocation, bytes (`None` = unlimited or unknown).
    #[serde(default)]
    pub memory_alloc_bytes: Option<u64>,
    /// Share of CFS periods throttled (0..=1).
    #[serde(default)]
    pub cpu_throttled_fraction: f64,
    /// Paused by the controller.
    #[serde(default)]
    pub frozen: bool,
}

/// The answer to History: usage and allocation over time, and the prediction they are measured against.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// Task type.
    pub task_key: String,
    /// The container (for a task type: absent).
    #[serde(default)]
    pub container_id: Option<String>,
    /// The container is registered now.
    #[serde(default)]
    pub live: bool,
    /// Start of the run the points belong to, ms (the predicted profile starts here).
    #[serde(default)]
    pub started_at_ms: Option<u64>,
    /// Oldest first; downsampled (every other point dropped) once a container has many.
    pub points: Vec<HistoryPoint>,
    /// The prediction (absent on a cold start): its `profile` spreads over `duration_s.point` from
    /// `started_at_ms`.
    #[serde(default)]
    pub prediction: Option<Prediction>,
    /// Points in all pages.
    #[serde(default)]
    pub total_points: Option<u64>,
    /// The `offset` of the next page of points; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_offset: Option<u64>,
}

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not an object.
    BadJson,
    /// Line longer than [`MAX_LINE`].
    TooLong,
    /// `version` missing or not [`PROTOCOL_VERSION`].
    UnsupportedVersion,
    /// Unknown `type`, missing or mistyped field.
    InvalidRequest,
    /// An `io.predictive.*` annotation has a bad value.
    InvalidAnnotation,
    /// The container is not registered (re-register after a broker restart).
    NotFound,
    /// The peer may not talk to the broker, or (a read-only peer) may not send this request.
    PermissionDenied,
    /// The broker serves its maximum of connections and none could be closed to make room (the connection is
    /// closed).
    TooManyConnections,
    /// The broker failed (store error).
    Internal,
}

/// An error reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ErrorReply {
    /// Machine-readable code.
    pub code: ErrorCode,
    /// What was wrong, naming the field or value.
    pub message: String,
}

impl ErrorReply {
    /// An error with `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A reply.
// One reply per request, moved once: boxing the larger variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// To Register.
    Registered(Registered),
    /// To Report.
    Directives(Directives),
    /// To Reports.
    Reports(ReportOutcomes),
    /// To Finish.
    Finished(Finished),
    /// To Status.
    Status(Status),
    /// To Models.
    Models(Models),
    /// To Explain.
    Decisions(Decisions),
    /// To History.
    History(History),
    /// To Export.
    Export(ExportPage),
    /// To anything that failed.
    Error(ErrorReply),
    /// To no request: sent unasked, between replies, to a shim that registered with `pokes`, when the broker has
    /// directives for one of its containers. The shim answers with a report, which carries them back. A client
    /// waiting for a reply skips it.
    Poke,
}

/// Encoding a message failed (a non-finite float, which JSON cannot carry).
#[derive(Debug, thiserror::Error)]
#[error("encoding a {what} message")]
pub struct EncodeError {
    what: &'static str,
    #[source]
    source: serde_json::Error,
}

fn envelope<T: Serialize>(
    what: &'static str,
    id: Option<u64>,
    msg: &T,
) -> Result<String, EncodeError> {
    let mut v = serde_json::to_value(msg).map_err(|source| EncodeError { what, source })?;
    if let Value::Object(m) = &mut v {
        m.insert("version".to_owned(), Value::from(PROTOCOL_VERSION));
        if let Some(id) = id {
            m.insert("id".to_owned(), Value::from(id));
        }
    }
    let mut line = serde_json::to_string(&v).map_err(|source| EncodeError { what, source })?;
    line.push('\n');
    Ok(line)
}

/// One request line (with its newline).
pub fn encode_request(id: Option<u64>, req: &Request) -> Result<String, EncodeError> {
    envelope("request", id, req)
}

/// One reply line (with its newline).
pub fn encode_response(id: Option<u64>, resp: &Response) -> Result<String, EncodeError> {
    envelope("response", id, resp)
}

/// Checks the envelope of a line and returns its `id` (when readable) and the message object.
fn open_envelope(line: &str) -> (Option<u64>, Result<Value, ErrorReply>) {
    let v: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return (
                None,
                Err(ErrorReply::new(
                    ErrorCode::BadJson,
                    format!("not JSON: {e}"),
                )),
            );
        }
    };
    let Value::Object(mut m) = v else {
        return (
            None,
            Err(ErrorReply::new(
                ErrorCode::BadJson,
                "a message is a JSON object",
            )),
        );
    };
    let id = m.remove("id").and_then(|v| v.as_u64());
    match m.remove("version") {
        None => (
            id,
            Err(ErrorReply::new(
                ErrorCode::UnsupportedVersion,
                "field `version` is missing",
            )),
        ),
        Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => (id, Ok(Value::Object(m))),
        Some(v) => (
            id,
            Err(ErrorReply::new(
                ErrorCode::UnsupportedVersion,
                format!("field `version` is {v}; this broker speaks {PROTOCOL_VERSION}"),
            )),
        ),
    }
}

/// Parses one request line. On error, the id is still returned when it was readable, so the reply can echo it.
pub fn parse_request(line: &str) -> (Option<u64>, Result<Request, ErrorReply>) {
    if let Some(fast) = parse_request_fast(line) {
        return fast;
    }
    let (id, v) = open_envelope(line);
    let req = v.and_then(|v| {
        serde_json::from_value::<Request>(v)
            .map_err(|e| ErrorReply::new(ErrorCode::InvalidRequest, e.to_string()))
    });
    let req = req.and_then(|r| {
        let id = match &r {
            Request::Register(x) => Some(&x.container_id),
            Request::Report(x) => Some(&x.container_id),
            Request::Finish(x) => Some(&x.container_id),
            Request::Update(x) => Some(&x.container_id),
            _ => None,
        };
        if id.is_some_and(|c| c.trim().is_empty()) {
            return Err(ErrorReply::new(
                ErrorCode::InvalidRequest,
                "field `container_id` is empty",
            ));
        }
        Ok(r)
    });
    (id, req)
}

/// The messages a shim sends all the time (Register, Report, Finish), read straight into their struct: one
/// scan for the envelope and the type, one for the message, no intermediate tree (an internally tagged enum
/// buffers the whole object first). `None` for anything else or anything wrong, which
/// [`parse_request`]'s general path then reports precisely.
fn parse_request_fast(line: &str) -> Option<(Option<u64>, Result<Request, ErrorReply>)> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        version: Option<u64>,
        id: Option<u64>,
        #[serde(rename = "type", borrow)]
        kind: Option<std::borrow::Cow<'a, str>>,
    }
    let env: Envelope<'_> = serde_json::from_str(line).ok()?;
    if env.version != Some(u64::from(PROTOCOL_VERSION)) {
        return None;
    }
    let (req, container_id) = match env.kind.as_deref()? {
        "report" => {
            let r: Report = serde_json::from_str(line).ok()?;
            let id = r.container_id.clone();
            (Request::Report(r), id)
        }
        "register" => {
            let r: Register = serde_json::from_str(line).ok()?;
            let id = r.container_id.clone();
            (Request::Register(r), id)
        }
        "finish" => {
            let r: Finish = serde_json::from_str(line).ok()?;
            let id = r.container_id.clone();
            (Request::Finish(r), id)
        }
        // Its entries are checked one by one by the broker (`validate::report`), each answered on its own.
        "reports" => {
            let r: Reports = serde_json::from_str(line).ok()?;
            return Some((env.id, Ok(Request::Reports(r))));
        }
        _ => return None,
    };
    if container_id.trim().is_empty() {
        return None;
    }
    Some((env.id, Ok(req)))
}

/// Parses one reply line; an error reply comes back as `Ok(Response::Error(..))`.
pub fn parse_response(line: &str) -> (Option<u64>, Result<Response, ErrorReply>) {
    let (id, v) = open_envelope(line);
    (
        id,
        v.and_then(|v| {
            serde_json::from_value::<Response>(v)
                .map_err(|e| ErrorReply::new(ErrorCode::InvalidRequest, e.to_string()))
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Action;

    #[test]
    fn a_container_outside_the_default_namespace_is_named_with_it() {
        assert_eq!(broker_id("default", "web"), "web");
        assert_eq!(broker_id("", "web"), "web");
        assert_eq!(broker_id("k8s.io", "3f2a"), "k8s.io/3f2a");
        assert_eq!(namespace_prefix("k8s.io/3f2a"), "k8s.io/");
        assert_eq!(namespace_prefix("web"), "");
    }

    #[test]
    fn a_batch_of_reports_and_its_outcomes_round_trip() {
        let req = Request::Reports(Reports {
            reports: vec![
                Report {
                    container_id: "a".to_owned(),
                    samples: vec![runtime_hooks::Sample::default()],
                    oom_events: 1,
                    stopping: None,
                },
                Report {
                    container_id: "b".to_owned(),
                    stopping: Some("signal 15".to_owned()),
                    ..Report::default()
                },
            ],
        });
        let line = encode_request(Some(3), &req).expect("encodes");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["type"], "reports");
        assert_eq!(v["reports"][1]["container_id"], "b");
        assert!(req.writes());
        assert_eq!(parse_request(&line), (Some(3), Ok(req)));
        let resp = Response::Reports(ReportOutcomes {
            results: vec![
                ReportOutcome {
                    container_id: "a".to_owned(),
                    ..ReportOutcome::default()
                },
                ReportOutcome {
                    container_id: "b".to_owned(),
                    directives: Vec::new(),
                    error: Some(ErrorReply::new(
                        ErrorCode::NotFound,
                        "container b is not registered",
                    )),
                },
            ],
        });
        let line = encode_response(Some(3), &resp).expect("encodes");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert!(v["results"][0].get("error").is_none(), "{line}");
        assert_eq!(v["results"][1]["error"]["code"], "not_found");
        assert_eq!(parse_response(&line), (Some(3), Ok(resp)));
    }

    #[test]
    fn request_round_trips_with_version_and_id() {
        let req = Request::Register(Register {
            container_id: "c1".to_owned(),
            namespace: "default".to_owned(),
            image: "busybox".to_owned(),
            command: vec!["sleep".to_owned(), "1".to_owned()],
            limits: SpecLimits {
                memory_limit_bytes: Some(1 << 30),
                ..SpecLimits::default()
            },
            ..Register::default()
        });
        let line = encode_request(Some(7), &req).expect("encodes");
        assert!(line.ends_with('\n') && !line.trim_end().contains('\n'));
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(
            (v["version"].as_u64(), v["id"].as_u64()),
            (Some(1), Some(7))
        );
        assert_eq!(v["type"], "register");
        assert_eq!(v["container_id"], "c1");
        let (id, back) = parse_request(&line);
        assert_eq!((id, back), (Some(7), Ok(req)));
        for req in [
            Request::Status(Page::default()),
            Request::Models(Page {
                offset: Some(3),
                limit: Some(10),
            }),
            Request::Explain(Explain::default()),
            Request::History(HistoryQuery {
                container_id: Some("c".to_owned()),
                ..HistoryQuery::default()
            }),
            Request::Update(Update {
                container_id: "c".to_owned(),
                limits: SpecLimits {
                    cpu_limit_cores: Some(0.5),
                    ..SpecLimits::default()
                },
                parents: Some(vec![ParentLimit {
                    path: "/kubepods/pod1".to_owned(),
                    cpu_limit_cores: Some(1.0),
                    memory_limit_bytes: None,
                }]),
            }),
        ] {
            let (_, back) = parse_request(&encode_request(None, &req).expect("encodes"));
            assert_eq!(back, Ok(req));
        }
    }

    #[test]
    fn register_without_parents_and_update_without_limits_parse() {
        let (_, r) = parse_request(r#"{"version":1,"type":"register","container_id":"c"}"#);
        assert!(matches!(r, Ok(Request::Register(ref x)) if x.parents.is_empty()));
        let (_, r) = parse_request(r#"{"version":1,"type":"update","container_id":"c"}"#);
        assert_eq!(
            r,
            Ok(Request::Update(Update {
                container_id: "c".to_owned(),
                ..Update::default()
            }))
        );
        let (_, r) = parse_request(r#"{"version":1,"type":"update","container_id":""}"#);
        assert_eq!(r.expect_err("empty id").code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn minimal_messages_use_defaults() {
        let (_, r) =
            parse_request(r#"{"version":1,"type":"report","container_id":"c","future_field":3}"#);
        assert_eq!(
            r,
            Ok(Request::Report(Report {
                container_id: "c".to_owned(),
                ..Report::default()
            }))
        );
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let cases: &[(&str, ErrorCode, &str)] = &[
            ("not json", ErrorCode::BadJson, "not JSON"),
            ("[1,2]", ErrorCode::BadJson, "object"),
            (
                r#"{"type":"status"}"#,
                ErrorCode::UnsupportedVersion,
                "`version` is missing",
            ),
            (
                r#"{"version":2,"type":"status"}"#,
                ErrorCode::UnsupportedVersion,
                "is 2",
            ),
            (r#"{"version":1}"#, ErrorCode::InvalidRequest, "type"),
            (
                r#"{"version":1,"type":"launch"}"#,
                ErrorCode::InvalidRequest,
                "launch",
            ),
            (
                r#"{"version":1,"type":"register"}"#,
                ErrorCode::InvalidRequest,
                "container_id",
            ),
            (
                r#"{"version":1,"type":"register","container_id":" "}"#,
                ErrorCode::InvalidRequest,
                "container_id",
            ),
            (
                r#"{"version":1,"type":"finish","container_id":"c","exit_code":"zero"}"#,
                ErrorCode::InvalidRequest,
                "invalid type",
            ),
            (
                r#"{"version":1,"type":"report","container_id":"c","samples":[{"unix_ns":"x"}]}"#,
                ErrorCode::InvalidRequest,
                "invalid type",
            ),
        ];
        for (line, code, needle) in cases {
            let (_, r) = parse_request(line);
            let e = r.expect_err(line);
            assert_eq!(e.code, *code, "{line}: {e}");
            assert!(e.message.contains(needle), "{line}: {}", e.message);
        }
        let (id, _) = parse_request(r#"{"version":9,"id":4,"type":"status"}"#);
        assert_eq!(id, Some(4), "the id is echoed even on error");
    }

    #[test]
    fn responses_round_trip() {
        let d = Directive {
            container_id: "c".to_owned(),
            action: Action::SetMemoryLimit {
                limit_bytes: Some(5),
                oom_kill_disabled: true,
            },
            reason: "r".to_owned(),
            applied: true,
            old_value: None,
        };
        let resp = Response::Directives(Directives {
            directives: vec![d],
        });
        let (_, status) = parse_request(r#"{"version":1,"type":"status"}"#);
        assert_eq!(
            status,
            Ok(Request::Status(Page::default())),
            "status without paging fields"
        );
        let line = encode_response(Some(1), &resp).expect("encodes");
        let v: Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["directives"][0]["action"], "set_memory_limit");
        assert_eq!(v["directives"][0]["limit_bytes"], 5);
        assert_eq!(parse_response(&line), (Some(1), Ok(resp)));
        let err = Response::Error(ErrorReply::new(
            ErrorCode::NotFound,
            "container c is not registered",
        ));
        let line = encode_response(None, &err).expect("encodes");
        assert!(line.contains(r#""code":"not_found""#));
        assert_eq!(parse_response(&line).1, Ok(err));
    }

    /// An action from a newer broker is read as `unknown` (the shim logs and skips it) and the others of the same
    /// reply still come through; `set_net_ingress` is on the wire as `{"action":"set_net_ingress",...}`.
    #[test]
    fn unknown_actions_do_not_lose_the_reply() {
        let line = r#"{"version":1,"type":"directives","directives":[
            {"container_id":"c","action":"set_net_teleport","warp":9,"reason":"r","applied":true},
            {"container_id":"c","action":"set_net_ingress","rate_bytes_per_sec":1048576,"reason":"r","applied":true}]}"#
            .replace('\n', "");
        let (_, resp) = parse_response(&line);
        let Ok(Response::Directives(ds)) = resp else {
            panic!("{resp:?}")
        };
        let actions: Vec<&Action> = ds.directives.iter().map(|d| &d.action).collect();
        assert_eq!(
            actions,
            vec![
                &Action::Unknown,
                &Action::SetNetIngress {
                    rate_bytes_per_sec: Some(1 << 20)
                }
            ]
        );
        let r: Register = serde_json::from_str(r#"{"container_id":"c"}"#).expect("old shim");
        assert_eq!(r.net_ingress, None);
    }

    /// A command line is the pod's: at the kernel's ~2 MiB a Register still fits in a line with every byte
    /// escaped, commands that fit are carried whole, cut ones stay apart by their tails, and cutting is stable.
    #[test]
    fn a_command_is_carried_within_its_bound_and_told_apart_by_its_tail() {
        let ordinary: Vec<String> = [
            "/bin/sh",
            "-c",
            "exec etl --input s3://bucket/day=2026-12-05",
        ]
        .map(str::to_owned)
        .into();
        assert_eq!(
            bounded_command(&ordinary, RECORDED_COMMAND_BYTES),
            &ordinary[..]
        );
        // 2 MiB: 10,000 arguments of ~200 control characters (each escaped as six bytes in JSON).
        let huge = |tail: &str| -> Vec<String> {
            let mut args: Vec<String> = (0..10_000)
                .map(|i| format!("{i:05}{}", "\u{1}".repeat(200)))
                .collect();
            args.push(tail.to_owned());
            args
        };
        let (a, b) = (huge("a"), huge("b"));
        for max in [MAX_COMMAND_BYTES, RECORDED_COMMAND_BYTES] {
            let (ca, cb) = (bounded_command(&a, max), bounded_command(&b, max));
            let cost: usize = ca.iter().map(|s| s.len() + ARG_OVERHEAD).sum();
            assert!(cost <= max, "{cost} bytes counted, at most {max}");
            assert_ne!(ca, cb, "two commands that differ in their last argument");
            assert_eq!(ca[0], a[0], "the leading arguments are kept");
            assert!(
                ca.last().is_some_and(|s| s.starts_with("...(10001 args, ")),
                "{:?}",
                ca.last()
            );
            assert_eq!(
                bounded_command(&ca, max),
                ca,
                "bounding again changes nothing"
            );
        }
        let register = Register {
            container_id: "c".to_owned(),
            command: bounded_command(&a, MAX_COMMAND_BYTES).into_owned(),
            ..Register::default()
        };
        let line = encode_request(Some(1), &Request::Register(register)).expect("encoded");
        assert!(
            line.len() < MAX_LINE / 2,
            "a Register of {} bytes",
            line.len()
        );
        // One argument longer than the bound, of multi-byte characters: cut at a character boundary.
        let wide = vec!["\u{e9}".repeat(MAX_COMMAND_BYTES)];
        let cut = bounded_command(&wide, MAX_COMMAND_BYTES);
        assert_eq!(cut.len(), 2);
        assert!(cut[0].len() > MAX_COMMAND_BYTES / 2 && cut[0].chars().all(|c| c == '\u{e9}'));
    }
}
