//! Prometheus metrics of the broker, in the text exposition format (version 0.0.4, `Content-Type: text/plain;
//! version=0.0.4`), served over HTTP/1.0 on a TCP address or a Unix socket. Off by default; `[metrics] listen =
//! "127.0.0.1:9464"` (or an absolute socket path) turns it on. The `prometheus-client` crate encodes the series
//! (see [`render`]); the small HTTP responder is ours, as the crate has none.
//!
//! Per task (labels `container`, `task_type`): usage, allocation, prediction bounds, leases, frozen, and counters
//! of the controller's decisions (throttles, pauses, leases); broker-wide: host capacity, totals, requests and
//! decisions. Counters live in memory ([`crate::history`]) and restart at 0 with the broker, as Prometheus
//! counters may.
//!
//! Broker-wide latency summaries (`predictive_register_seconds`, `predictive_register_commit_wait_seconds`,
//! `predictive_tick_seconds`): quantiles over the last [`LATENCY_WINDOW`] Registers and [`TICK_WINDOW`] ticks, as
//! the broker measures them.
//!
//! Limits: at most [`MAX_SCRAPES`] scrapes at once, each on its own thread (a slow client is cut off after
//! [`IO_TIMEOUT`]); only `GET` is answered. One scrape is at most about [`MetricsConfig::max_bytes`]: per-task
//! series are written for tasks in container-id order while they fit, the rest are counted in
//! `predictive_metrics_tasks_omitted`. No TLS or auth: bind to localhost or a Unix socket (mode 0600, or
//! 0660 owned by `allowed_gid`, like the API socket).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use predictive_api::prediction::Estimate;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, EncodeMetric, GaugeValueEncoder,
    prometheus_text,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::api::{Status, TaskPrediction};
pub use crate::config::{DEFAULT_MAX_BYTES, MIN_MAX_BYTES, MetricsConfig};
use crate::history::{BrokerCounters, TaskCounters, Tracker};

/// What the endpoint reads of the running broker (`server::Broker` implements it): the server starts the endpoint,
/// and this module does not depend on the server.
pub trait Source: Send + Sync + 'static {
    /// The daemon is shutting down.
    fn stopping(&self) -> bool;
    /// Per-container history and counters.
    fn tracker(&self) -> &Tracker;
    /// What `status` answers, every task in one.
    fn snapshot(&self) -> Status;
    /// Register and tick latencies.
    fn latencies(&self) -> &Latencies;
    /// `[metrics] max_bytes`.
    fn max_bytes(&self) -> usize;
}

/// How long a scraper may take to send its request or read the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks for a stop.
const POLL: Duration = Duration::from_millis(100);
/// The longest request head read.
const MAX_REQUEST: usize = 8192;

/// Registers a latency summary's quantiles are computed over (the most recent ones).
pub const LATENCY_WINDOW: usize = 4096;
/// Ticks the tick summary's quantiles are computed over: the last minute at the default 1 s tick, so they
/// describe the node as it is now.
pub const TICK_WINDOW: usize = 60;
/// Per-task sample lines written for one task at most (gauges, lease figures, 8 prediction bounds, counters).
const LINES_PER_TASK: usize = 32;
/// Bytes of one per-task sample line besides its labels: the longest metric name, braces, value, newline.
const LINE_OVERHEAD: usize = 72;

/// One latency summary: the last `window` observations, their count and sum since start.
#[derive(Debug)]
pub struct Latency {
    window: usize,
    inner: std::sync::Mutex<LatencyInner>,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new(LATENCY_WINDOW)
    }
}

#[derive(Debug, Default)]
struct LatencyInner {
    ring: Vec<f64>,
    next: usize,
    count: u64,
    sum: f64,
}

/// What a scrape shows of a [`Latency`]: quantiles of the window, count and sum since start (seconds).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySnapshot {
    /// (quantile, seconds) for 0.5, 0.9, 0.99 and 1 (the window's maximum); empty before the first observation.
    pub quantiles: Vec<(f64, f64)>,
    /// Observations since start.
    pub count: u64,
    /// Their sum, seconds.
    pub sum: f64,
}

impl Latency {
    /// A summary over the last `window` observations (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            inner: std::sync::Mutex::default(),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let v = d.as_secs_f64();
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.ring.len() < self.window {
            g.ring.push(v);
        } else {
            let i = g.next;
            g.ring[i] = v;
        }
        g.next = (g.next + 1) % self.window;
        g.count += 1;
        g.sum += v;
    }

    /// Quantiles of the window (nearest rank), count and sum.
    pub fn snapshot(&self) -> LatencySnapshot {
        let (mut v, count, sum) = {
            let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            (g.ring.clone(), g.count, g.sum)
        };
        v.sort_by(f64::total_cmp);
        let quantiles = if v.is_empty() {
            Vec::new()
        } else {
            [0.5, 0.9, 0.99, 1.0]
                .into_iter()
                .map(|q| {
                    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
                    (q, v[rank - 1])
                })
                .collect()
        };
        LatencySnapshot {
            quantiles,
            count,
            sum,
        }
    }
}

/// The broker's latency summaries.
#[derive(Debug)]
pub struct Latencies {
    /// A Register as the broker serves it: from the request parsed to the reply ready (its group commit included).
    pub register: Latency,
    /// The part of a Register spent waiting for its group commit.
    pub register_commit_wait: Latency,
    /// One controller tick (decisions computed, queued and handed to the journal).
    pub tick: Latency,
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            register: Latency::new(LATENCY_WINDOW),
            register_commit_wait: Latency::new(LATENCY_WINDOW),
            tick: Latency::new(TICK_WINDOW),
        }
    }
}

impl Latencies {
    fn snapshots(&self) -> Vec<(&'static str, &'static str, LatencySnapshot)> {
        vec![
            (
                "predictive_register_seconds",
                "Register served, from the request read to the reply ready (its group commit included).",
                self.register.snapshot(),
            ),
            (
                "predictive_register_commit_wait_seconds",
                "Part of a Register spent waiting for the group commit holding its records.",
                self.register_commit_wait.snapshot(),
            ),
            (
                "predictive_tick_seconds",
                "One controller tick.",
                self.tick.snapshot(),
            ),
        ]
    }
}

/// Errors starting the endpoint.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `listen` is neither `host:port` nor an absolute path.
    #[error("[metrics] listen = {0:?} is neither host:port nor an absolute socket path")]
    BadListen(String),
    /// Binding failed.
    #[error("binding the metrics endpoint {listen}")]
    Bind {
        /// The configured address.
        listen: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The thread could not start.
    #[error("starting the metrics thread")]
    Spawn(#[source] std::io::Error),
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

/// Binds `cfg.metrics.listen` and starts the responder thread; `Ok(None)` when metrics are off. The thread ends
/// once the broker is stopping.
pub fn start<B: Source>(
    cfg: &MetricsConfig,
    allowed_gid: Option<u32>,
    broker: Arc<B>,
) -> Result<Option<JoinHandle<()>>, MetricsError> {
    let Some(listen) = cfg.listen.clone() else {
        return Ok(None);
    };
    let bind = |source| MetricsError::Bind {
        listen: listen.clone(),
        source,
    };
    let listener = if listen.starts_with('/') {
        let path = PathBuf::from(&listen);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(bind(e)),
        }
        let l = UnixListener::bind(&path).map_err(bind)?;
        let mode = match allowed_gid {
            Some(gid) => {
                nix::unistd::chown(&path, None, Some(nix::unistd::Gid::from_raw(gid)))
                    .map_err(|e| bind(e.into()))?;
                0o660
            }
            None => 0o600,
        };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(bind)?;
        l.set_nonblocking(true).map_err(bind)?;
        Listener::Unix(l, path)
    } else {
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| MetricsError::BadListen(listen.clone()))?;
        let l = TcpListener::bind(addr).map_err(bind)?;
        l.set_nonblocking(true).map_err(bind)?;
        Listener::Tcp(l)
    };
    tracing::info!(%listen, "metrics endpoint serving");
    let handle = std::thread::Builder::new()
        .name("predictived-metrics".to_owned())
        .spawn(move || serve(listener, &broker))
        .map_err(MetricsError::Spawn)?;
    Ok(Some(handle))
}

/// Scrapes answered at once; one more is closed unanswered (a scraper retries). Each has its own thread, so a
/// slow client delays nobody else's scrape.
const MAX_SCRAPES: usize = 16;

/// Answers `s` on a thread of its own (at most [`MAX_SCRAPES`] at once).
fn respond_apart<S: Read + Write + Send + 'static, B: Source>(
    s: S,
    broker: &Arc<B>,
    busy: &Arc<AtomicUsize>,
) {
    if busy.fetch_add(1, Ordering::Relaxed) >= MAX_SCRAPES {
        busy.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let (b, n) = (Arc::clone(broker), Arc::clone(busy));
    let started = std::thread::Builder::new()
        .name("predictived-scrape".to_owned())
        .stack_size(256 << 10)
        .spawn(move || {
            respond(s, &*b);
            n.fetch_sub(1, Ordering::Relaxed);
        });
    if started.is_err() {
        busy.fetch_sub(1, Ordering::Relaxed);
    }
}

fn serve<B: Source>(listener: Listener, broker: &Arc<B>) {
    let busy = Arc::new(AtomicUsize::new(0));
    while !broker.stopping() {
        let r = match &listener {
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                respond_apart(s, broker, &busy)
            }),
            Listener::Unix(l, _) => l.accept().map(|(s, _)| {
                let _ = s.set_nonblocking(false);
                let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                let _ = s.set_write_timeout(Some(IO_TIMEOUT));
                respond_apart(s, broker, &busy)
            }),
        };
        match r {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(e) => {
                tracing::warn!(error = %e, "accepting a metrics connection");
                std::thread::sleep(POLL);
            }
        }
    }
    if let Listener::Unix(_, path) = &listener {
        let _ = std::fs::remove_file(path);
    }
}

/// Reads the request head and answers it; errors end the connection quietly (a scraper retries).
fn respond(mut s: impl Read + Write, broker: &impl Source) {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    // The whole head within IO_TIMEOUT: a client trickling a byte at a time is cut off, not waited for.
    let until = std::time::Instant::now() + IO_TIMEOUT;
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        if std::time::Instant::now() >= until {
            return;
        }
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => return,
        }
        if head.len() > MAX_REQUEST {
            break;
        }
    }
    let line = String::from_utf8_lossy(&head);
    let mut parts = line.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics" | "/") => {
            let (tasks, counters) = broker.tracker().counters();
            let scrape = Scrape {
                status: broker.snapshot(),
                tasks,
                counters,
                latencies: broker.latencies().snapshots(),
                max_bytes: broker.max_bytes(),
            };
            ("200 OK", prometheus_text::CONTENT_TYPE, render(scrape))
        }
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "only /metrics is served\n".to_owned(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "only GET is served\n".to_owned(),
        ),
    };
    let reply = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(reply.as_bytes());
}

/// What one scrape shows, taken from the broker when the request is read.
#[derive(Debug)]
pub struct Scrape {
    /// What `status` answers, every task in one.
    pub status: Status,
    /// Per-container counters, live and finished.
    pub tasks: Vec<TaskCounters>,
    /// Broker-wide counters.
    pub counters: BrokerCounters,
    /// (name, help, snapshot) of each latency summary.
    pub latencies: Vec<(&'static str, &'static str, LatencySnapshot)>,
    /// `[metrics] max_bytes`.
    pub max_bytes: usize,
}

/// The exposition text for one scrape: the broker-wide series, then per-task series for the tasks (in container-id
/// order) whose series fit in `max_bytes` (at least [`MIN_MAX_BYTES`]).
///
/// prometheus-client encodes every family but the latency summaries, which it has no type for: those three are
/// written by [`summary`], between the broker-wide and the per-task families. Each scrape builds its own registry
/// around a collector that reads the [`Scrape`] (collector style): nothing is kept between scrapes, so a series is
/// there exactly while the broker's state has it.
pub fn render(scrape: Scrape) -> String {
    let scrape = Arc::new(scrape);
    let mut out = String::new();
    encode(&mut out, BrokerWide(Arc::clone(&scrape)));
    for (name, help, snap) in &scrape.latencies {
        summary(&mut out, name, help, snap);
    }
    encode(&mut out, PerTask(scrape));
    out
}

/// Appends `collector`'s families to `out` in the text format 0.0.4.
fn encode(out: &mut String, collector: impl Collector) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    prometheus_text::encode(out, &registry).expect("writing to a String does not fail");
}

/// The broker-wide families before the summaries.
#[derive(Debug)]
struct BrokerWide(Arc<Scrape>);

impl Collector for BrokerWide {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        broker_gauges(&mut e, &self.0.status, &self.0.counters)?;
        broker_counters(&mut e, &self.0.counters)
    }
}

/// How many tasks were left out, then the per-task families.
#[derive(Debug)]
struct PerTask(Arc<Scrape>);

impl Collector for PerTask {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        let s = &*self.0;
        let shown = Shown::pick(&s.status, &s.tasks, s.max_bytes);
        one(
            &mut e,
            "predictive_metrics_tasks_omitted",
            "Tasks left out of this scrape's per-task series ([metrics] max_bytes).",
            gauge(shown.omitted as f64),
        )?;
        task_gauges(&mut e, &s.status, &shown)?;
        task_leases(&mut e, &s.status, &shown)?;
        task_predictions(&mut e, &s.status, &shown)?;
        task_counters(&mut e, &s.tasks, &shown)
    }
}

/// A gauge value written as the hand-written exposition before prometheus-client wrote it: a whole number as an
/// integer (`2`, not `2.0`; an empty sum's -0.0 as `0`), any other as the shortest float that reads back the same.
#[derive(Debug, Clone, Copy)]
struct Num(f64);

impl EncodeGaugeValue for Num {
    fn encode(&self, e: &mut GaugeValueEncoder) -> fmt::Result {
        // Below 2^53 every whole f64 is an exact i64.
        if self.0.fract() == 0.0 && self.0.abs() < 9_007_199_254_740_992.0 {
            (self.0 as i64).encode(e)
        } else {
            self.0.encode(e)
        }
    }
}

fn gauge(v: f64) -> ConstGauge<Num> {
    ConstGauge::new(Num(v))
}

/// prometheus-client appends `_total` to a counter's name and `_info` to an info's: `name` is the name exposed, and
/// the suffix is taken off before it is handed over.
fn registered(name: &str, kind: MetricType) -> &str {
    let suffix = match kind {
        MetricType::Counter => "_total",
        MetricType::Info => "_info",
        _ => "",
    };
    name.strip_suffix(suffix).unwrap_or(name)
}

/// One metric family without labels, one sample.
fn one(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    metric: impl EncodeMetric,
) -> fmt::Result {
    let kind = metric.metric_type();
    metric.encode(e.encode_descriptor(registered(name, kind), help, None, kind)?)
}

/// One metric family: `# HELP`, `# TYPE`, then one sample per (labels, metric); a family without samples is left
/// out.
fn family<L: EncodeLabelSet, M: EncodeMetric>(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, M)>,
) -> fmt::Result {
    let mut samples = samples.into_iter().peekable();
    let Some(kind) = samples.peek().map(|(_, m)| m.metric_type()) else {
        return Ok(());
    };
    let mut m = e.encode_descriptor(registered(name, kind), help, None, kind)?;
    for (labels, metric) in samples {
        metric.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// Writes one summary family (prometheus-client has no summary type).
fn summary(out: &mut String, name: &str, help: &str, s: &LatencySnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} summary");
    for (q, v) in &s.quantiles {
        let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {v}");
    }
    let _ = writeln!(out, "{name}_sum {}", s.sum);
    let _ = writeln!(out, "{name}_count {}", s.count);
}

/// A task's labels: `container`, `task_type`.
type TaskLabels<'a> = [(&'static str, &'a str); 2];

/// The tasks that get per-task series in one scrape, with their task types.
struct Shown<'a> {
    task_type: HashMap<&'a str, &'a str>,
    /// Tasks left out ([metrics] max_bytes).
    omitted: usize,
}

/// Length of `v` as a label value, escaped (backslash, double quote and newline take two bytes).
fn escaped_len(v: &str) -> usize {
    v.len()
        + v.bytes()
            .filter(|b| matches!(b, b'\\' | b'"' | b'\n'))
            .count()
}

impl<'a> Shown<'a> {
    /// Every id the scrape would name, in order, while their worst case fits in `max_bytes`.
    fn pick(status: &'a Status, tasks: &'a [TaskCounters], max_bytes: usize) -> Self {
        // Task types of every task, looked up by id (no scan per sample: 20,000 tasks stay linear).
        let mut keys: HashMap<&str, &str> = status
            .predictions
            .iter()
            .map(|p| (p.container_id.as_str(), p.task_key.as_str()))
            .collect();
        keys.extend(
            tasks
                .iter()
                .map(|t| (t.container_id.as_str(), t.task_key.as_str())),
        );
        let mut ids: Vec<&str> = status
            .tasks
            .iter()
            .map(|t| t.container_id.as_str())
            .chain(tasks.iter().map(|t| t.container_id.as_str()))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let budget = max_bytes.max(MIN_MAX_BYTES).saturating_sub(MIN_MAX_BYTES);
        let mut used = 0usize;
        let mut task_type = HashMap::new();
        let mut omitted = 0usize;
        for id in ids {
            let key = keys.get(id).copied().unwrap_or("");
            // `container="…",task_type="…"`
            let label_len =
                r#"container="",task_type="""#.len() + escaped_len(id) + escaped_len(key);
            let cost = LINES_PER_TASK * (label_len + LINE_OVERHEAD);
            if omitted == 0 && used + cost <= budget {
                used += cost;
                task_type.insert(id, key);
            } else {
                omitted += 1;
            }
        }
        Self { task_type, omitted }
    }

    /// The labels of `id`, when it is shown.
    fn labels<'s>(&'s self, id: &'s str) -> Option<TaskLabels<'s>> {
        let key = self.task_type.get(id)?;
        Some([("container", id), ("task_type", key)])
    }
}

/// The broker-wide scalars: version, host, model, tasks, leases, registrations and finishes.
fn broker_gauges(
    e: &mut DescriptorEncoder<'_>,
    status: &Status,
    b: &BrokerCounters,
) -> fmt::Result {
    one(
        e,
        "predictive_broker_info",
        "Broker version (always 1).",
        Info::new([("version", status.broker_version.as_str())]),
    )?;
    let gauges: [(&str, &str, f64); 9] = [
        (
            "predictive_host_cpu_cores",
            "CPUs the controller allocates from.",
            status.host.cpu_cores,
        ),
        (
            "predictive_host_memory_bytes",
            "Memory the controller allocates from.",
            status.host.memory_bytes as f64,
        ),
        (
            "predictive_model_version",
            "Model set in force (0: none trained yet).",
            status.model_version as f64,
        ),
        (
            "predictive_tasks",
            "Registered tasks.",
            status.tasks.len() as f64,
        ),
        (
            "predictive_tasks_frozen",
            "Tasks paused by the controller.",
            status.tasks.iter().filter(|t| t.frozen).count() as f64,
        ),
        (
            "predictive_allocated_cpu_cores",
            "Sum of the CPU allocations with a limit.",
            status
                .tasks
                .iter()
                .filter_map(|t| t.allocation.cpu_cores)
                .sum(),
        ),
        (
            "predictive_allocated_memory_bytes",
            "Sum of the memory allocations with a limit.",
            status
                .tasks
                .iter()
                .filter_map(|t| t.allocation.memory_bytes)
                .sum::<u64>() as f64,
        ),
        (
            "predictive_leases",
            "Live CPU leases.",
            status.leases.len() as f64,
        ),
        (
            "predictive_leased_cpu_cores",
            "CPU lent under live leases.",
            status.leases.iter().map(|l| l.amount).sum(),
        ),
    ];
    for (name, help, v) in gauges {
        one(e, name, help, gauge(v))?;
    }
    one(
        e,
        "predictive_registrations_total",
        "Successful Registers since the broker started.",
        ConstCounter::new(b.registered),
    )?;
    one(
        e,
        "predictive_finishes_total",
        "Successful Finishes since the broker started.",
        ConstCounter::new(b.finished),
    )?;
    one(
        e,
        "predictive_batched_reports_total",
        "Container reports that came as entries of a grouped report (one message per shim and wake-up, \
         counted as predictive_requests_total of type reports).",
        ConstCounter::new(b.batched_reports),
    )?;
    one(
        e,
        "predictive_pokes_total",
        "Pokes sent: a shim told, between its reports, that the broker has directives for one of its containers.",
        ConstCounter::new(b.pokes),
    )
}

/// The broker-wide counters by label: requests by type, decisions by resource and directive.
fn broker_counters(e: &mut DescriptorEncoder<'_>, b: &BrokerCounters) -> fmt::Result {
    family(
        e,
        "predictive_requests_total",
        "Requests served, by type.",
        b.requests
            .iter()
            .map(|(k, v)| ([("type", *k)], ConstCounter::new(*v))),
    )?;
    family(
        e,
        "predictive_decisions_total",
        "Decisions recorded, by resource and directive.",
        b.decisions.iter().map(|((r, d), v)| {
            (
                [("resource", r.as_str()), ("directive", *d)],
                ConstCounter::new(*v),
            )
        }),
    )
}

/// Per task: usage, allocation and pause gauges.
fn task_gauges(e: &mut DescriptorEncoder<'_>, status: &Status, shown: &Shown<'_>) -> fmt::Result {
    type Pick = fn(&crate::controller::TaskView) -> Option<f64>;
    let gauges: [(&str, &str, Pick); 7] = [
        (
            "predictive_task_cpu_usage_cores",
            "CPU used over the last reported interval.",
            |t| t.usage.map(|u| u.cpu_cores),
        ),
        (
            "predictive_task_cpu_throttled_ratio",
            "Share of CFS periods throttled over the last reported interval.",
            |t| t.usage.map(|u| u.cpu_throttled_fraction),
        ),
        (
            "predictive_task_memory_usage_bytes",
            "Memory charged at the last report.",
            |t| t.usage.map(|u| u.memory_bytes as f64),
        ),
        (
            "predictive_task_cpu_allocation_cores",
            "CPU quota in force (absent: unlimited).",
            |t| t.allocation.cpu_cores,
        ),
        (
            "predictive_task_memory_allocation_bytes",
            "Memory allocation in force (absent: unlimited).",
            |t| t.allocation.memory_bytes.map(|b| b as f64),
        ),
        (
            "predictive_task_memory_max_bytes",
            "Hard memory ceiling (absent: unlimited).",
            |t| t.allocation.memory_max_bytes.map(|b| b as f64),
        ),
        (
            "predictive_task_frozen",
            "1 while the controller keeps the task paused.",
            |t| Some(if t.frozen { 1.0 } else { 0.0 }),
        ),
    ];
    for (name, help, pick) in gauges {
        let samples = status
            .tasks
            .iter()
            .filter_map(|t| Some((shown.labels(&t.container_id)?, gauge(pick(t)?))));
        family(e, name, help, samples)?;
    }
    Ok(())
}

/// Per task: the leases it lends and holds.
fn task_leases(e: &mut DescriptorEncoder<'_>, status: &Status, shown: &Shown<'_>) -> fmt::Result {
    // Leases per task, summed in one pass over the leases: (lent, lent cores, borrowed, borrowed cores).
    let mut per: HashMap<&str, (usize, f64, usize, f64)> = HashMap::new();
    for l in &status.leases {
        if let Some(lender) = l.lender.as_deref() {
            let e = per.entry(lender).or_default();
            e.0 += 1;
            e.1 += l.amount;
        }
        let e = per.entry(l.holder.as_str()).or_default();
        e.2 += 1;
        e.3 += l.amount;
    }
    type Pick = fn(&(usize, f64, usize, f64)) -> f64;
    let gauges: [(&str, &str, Pick); 4] = [
        (
            "predictive_task_leases_lent",
            "Live leases the task lends.",
            |p| p.0 as f64,
        ),
        (
            "predictive_task_leases_borrowed",
            "Live leases the task holds.",
            |p| p.2 as f64,
        ),
        (
            "predictive_task_cpu_lent_cores",
            "CPU the task lends under live leases.",
            |p| p.1,
        ),
        (
            "predictive_task_cpu_borrowed_cores",
            "CPU the task borrows under live leases.",
            |p| p.3,
        ),
    ];
    for (name, help, pick) in gauges {
        let samples = status.tasks.iter().filter_map(|t| {
            let id = t.container_id.as_str();
            let p = per.get(id).copied().unwrap_or_default();
            Some((shown.labels(id)?, gauge(pick(&p))))
        });
        family(e, name, help, samples)?;
    }
    Ok(())
}

/// Per live task: its prediction at Register, every bound.
fn task_predictions(
    e: &mut DescriptorEncoder<'_>,
    status: &Status,
    shown: &Shown<'_>,
) -> fmt::Result {
    let live: std::collections::HashSet<&str> = status
        .tasks
        .iter()
        .map(|t| t.container_id.as_str())
        .collect();
    type Pick = fn(&TaskPrediction) -> Option<Estimate>;
    let families: [(&str, &str, Pick); 2] = [
        (
            "predictive_task_cpu_predicted_cores",
            "Predicted p95 CPU at Register: interval bounds, point and the allocation bound (absent on a cold start).",
            |p| p.cpu_cores,
        ),
        (
            "predictive_task_memory_predicted_bytes",
            "Predicted peak memory at Register: interval bounds, point and the allocation bound (absent on a cold start).",
            |p| p.memory_bytes,
        ),
    ];
    for (name, help, pick) in families {
        let samples = status
            .predictions
            .iter()
            .filter(|p| live.contains(p.container_id.as_str()))
            .filter_map(|p| Some((shown.labels(&p.container_id)?, pick(p)?)))
            .flat_map(|([c, k], est)| {
                [
                    ("lower", est.lower),
                    ("point", est.point),
                    ("upper", est.upper),
                    ("limit", est.limit),
                ]
                .map(|(bound, v)| ([c, k, ("bound", bound)], gauge(v)))
            });
        family(e, name, help, samples)?;
    }
    Ok(())
}

/// Per task: the decision counters.
fn task_counters(
    e: &mut DescriptorEncoder<'_>,
    tasks: &[TaskCounters],
    shown: &Shown<'_>,
) -> fmt::Result {
    type Pick = fn(&crate::history::Counters) -> u64;
    let counters: [(&str, &str, Pick); 9] = [
        (
            "predictive_task_throttles_total",
            "CPU allocation lowered by the controller (throttling an over-consumer or ending a lease).",
            |c| c.cpu_lowered,
        ),
        (
            "predictive_task_cpu_raises_total",
            "CPU allocation raised by the controller.",
            |c| c.cpu_raised,
        ),
        (
            "predictive_task_memory_lowers_total",
            "Memory allocation lowered by the controller.",
            |c| c.memory_lowered,
        ),
        (
            "predictive_task_memory_raises_total",
            "Memory allocation raised by the controller.",
            |c| c.memory_raised,
        ),
        (
            "predictive_task_pauses_total",
            "Times the controller paused the task.",
            |c| c.pauses,
        ),
        (
            "predictive_task_resumes_total",
            "Times the controller resumed the task.",
            |c| c.thaws,
        ),
        (
            "predictive_task_leases_granted_total",
            "CPU leases granted to or from the task.",
            |c| c.leases_granted,
        ),
        (
            "predictive_task_leases_revoked_total",
            "CPU leases of the task revoked or ended.",
            |c| c.leases_revoked,
        ),
        (
            "predictive_task_holds_total",
            "Changes wanted but not possible (no room).",
            |c| c.holds,
        ),
    ];
    for (name, help, pick) in counters {
        let samples = tasks.iter().filter_map(|t| {
            Some((
                shown.labels(&t.container_id)?,
                ConstCounter::new(pick(&t.counters)),
            ))
        });
        family(e, name, help, samples)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::TaskPrediction;
    use crate::controller::{Allocation, HostCapacity, Lease, Mode, ResourceKind, TaskView, Usage};
    use crate::history::Counters;

    #[test]
    fn exposition_has_help_type_and_escaped_labels() {
        let task = |id: &str| TaskView {
            container_id: id.to_owned(),
            mode: Mode::Enforce,
            priority: 0,
            critical: false,
            allocation: Allocation {
                cpu_cores: Some(0.5),
                memory_bytes: Some(1000),
                memory_max_bytes: None,
            },
            base_cpu_cores: Some(0.5),
            frozen: id == "b",
            stopping: false,
            usage: Some(Usage {
                at_ms: 1,
                cpu_cores: 0.25,
                memory_bytes: 400,
                ..Usage::default()
            }),
            limits: Default::default(),
            max_borrow_cpu: None,
            io: None,
            net: None,
            net_ingress: None,
        };
        let status = Status {
            total_tasks: None,
            next_offset: None,
            broker_version: "0.1.0".to_owned(),
            tick_ms: 1000,
            host: HostCapacity {
                cpu_cores: 2.0,
                memory_bytes: 4096,
            },
            model_version: 3,
            tasks: vec![task("a\"x"), task("b")],
            leases: vec![Lease {
                id: 1,
                resource: ResourceKind::Cpu,
                holder: "a\"x".to_owned(),
                lender: Some("b".to_owned()),
                amount: 0.3,
                granted_at_ms: 0,
                expires_at_ms: 10,
            }],
            predictions: vec![TaskPrediction {
                container_id: "b".to_owned(),
                task_key: "etl".to_owned(),
                started_at_ms: 0,
                cpu_cores: Some(predictive_api::prediction::Estimate {
                    point: 0.4,
                    lower: 0.2,
                    upper: 0.6,
                    limit: 0.7,
                    kind: None,
                }),
                memory_bytes: None,
                duration_s: None,
                net_tx_bytes_per_s: None,
                net_rx_bytes_per_s: None,
            }],
            pool: "host".to_owned(),
        };
        let tasks = vec![TaskCounters {
            container_id: "b".to_owned(),
            task_key: "etl".to_owned(),
            live: true,
            prediction: None,
            counters: Counters {
                pauses: 2,
                cpu_lowered: 1,
                ..Counters::default()
            },
        }];
        let text = render_of(
            &status,
            &tasks,
            &BrokerCounters::default(),
            &[],
            DEFAULT_MAX_BYTES,
        );
        for needle in [
            "# TYPE predictive_tasks gauge\npredictive_tasks 2\n",
            "predictive_tasks_frozen 1\n",
            "predictive_task_cpu_usage_cores{container=\"a\\\"x\",task_type=\"\"} 0.25\n",
            "predictive_task_leases_lent{container=\"b\",task_type=\"etl\"} 1\n",
            "predictive_task_cpu_borrowed_cores{container=\"a\\\"x\",task_type=\"\"} 0.3\n",
            "predictive_task_cpu_predicted_cores{container=\"b\",task_type=\"etl\",bound=\"upper\"} 0.6\n",
            "# TYPE predictive_task_pauses_total counter\npredictive_task_pauses_total{container=\"b\",task_type=\"etl\"} 2\n",
            "predictive_task_throttles_total{container=\"b\",task_type=\"etl\"} 1\n",
            "predictive_allocated_cpu_cores 1\n",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        assert!(
            !text.contains("predictive_task_memory_predicted_bytes"),
            "no sample, no family"
        );
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let v = line.rsplit(' ').next().expect("value");
            assert!(v.parse::<f64>().is_ok(), "{line}");
        }
    }

    /// A scrape of two tasks with hostile ids and task types (quote, backslash, newline), a lease, a prediction,
    /// counters of every kind and the three latency summaries: every family the endpoint writes.
    fn sample() -> String {
        let task = |id: &str, cpu: f64| TaskView {
            container_id: id.to_owned(),
            mode: Mode::Enforce,
            priority: 0,
            critical: false,
            allocation: Allocation {
                cpu_cores: Some(cpu),
                memory_bytes: Some(1 << 30),
                memory_max_bytes: Some(3 << 29),
            },
            base_cpu_cores: Some(cpu),
            frozen: cpu > 1.0,
            stopping: false,
            usage: Some(Usage {
                at_ms: 1,
                cpu_cores: cpu / 3.0,
                memory_bytes: 123_456_789,
                cpu_throttled_fraction: 0.125,
                ..Usage::default()
            }),
            limits: Default::default(),
            max_borrow_cpu: None,
            io: None,
            net: None,
            net_ingress: None,
        };
        let hostile = "q\"b\\n\nx";
        let status = Status {
            total_tasks: None,
            next_offset: None,
            broker_version: "0.1.0-\"dev\"".to_owned(),
            tick_ms: 1000,
            host: HostCapacity {
                cpu_cores: 7.5,
                memory_bytes: 16 << 30,
            },
            model_version: 3,
            tasks: vec![task(hostile, 0.3), task("plain", 1.5)],
            leases: vec![Lease {
                id: 1,
                resource: ResourceKind::Cpu,
                holder: hostile.to_owned(),
                lender: Some("plain".to_owned()),
                amount: 0.1,
                granted_at_ms: 0,
                expires_at_ms: 10,
            }],
            predictions: vec![TaskPrediction {
                container_id: hostile.to_owned(),
                task_key: "etl\\\"\n".to_owned(),
                started_at_ms: 0,
                cpu_cores: Some(predictive_api::prediction::Estimate {
                    point: 0.4,
                    lower: 0.2,
                    upper: 0.6,
                    limit: 1.0,
                    kind: None,
                }),
                memory_bytes: Some(predictive_api::prediction::Estimate {
                    point: 1e9,
                    lower: 5e8,
                    upper: 1.5e9,
                    limit: 2e9,
                    kind: None,
                }),
                duration_s: None,
                net_tx_bytes_per_s: None,
                net_rx_bytes_per_s: None,
            }],
            pool: "host".to_owned(),
        };
        let counters = Counters {
            cpu_lowered: 1,
            cpu_raised: 2,
            memory_lowered: 3,
            memory_raised: 4,
            pauses: 5,
            thaws: 6,
            leases_granted: 7,
            leases_revoked: 8,
            holds: 9,
        };
        let tasks = vec![
            TaskCounters {
                container_id: hostile.to_owned(),
                task_key: "etl\\\"\n".to_owned(),
                live: true,
                prediction: None,
                counters,
            },
            TaskCounters {
                container_id: "plain".to_owned(),
                task_key: "web".to_owned(),
                live: true,
                prediction: None,
                counters: Counters::default(),
            },
        ];
        let mut b = BrokerCounters {
            registered: 2,
            finished: 1,
            ..BrokerCounters::default()
        };
        b.requests.insert("register", 2);
        b.requests.insert("status", 11);
        b.decisions.insert(("cpu".to_owned(), "initial"), 2);
        b.decisions.insert(("memory".to_owned(), "raise"), 1);
        let lat = Latencies::default();
        for ms in [1u64, 2, 3, 250] {
            lat.register.observe(Duration::from_millis(ms));
            lat.register_commit_wait
                .observe(Duration::from_micros(ms * 100));
        }
        lat.tick.observe(Duration::from_micros(1500));
        render_of(&status, &tasks, &b, &lat.snapshots(), DEFAULT_MAX_BYTES)
    }

    /// The sample scrape is the reference exposition, byte for byte: every family's name, type, HELP text, label
    /// names and order, and the label values escaped (`broker/tests/data/metrics-sample.prom`, written by the
    /// hand-written encoder that came before prometheus-client, which dashboards and alerts were built against).
    #[test]
    fn the_sample_scrape_is_the_reference_exposition() {
        let want = include_str!("../tests/data/metrics-sample.prom");
        let got = sample();
        for (i, (w, g)) in want.lines().zip(got.lines()).enumerate() {
            assert_eq!(g, w, "line {}", i + 1);
        }
        assert_eq!(got, want);
    }

    /// Splits a sample line into its name, its label values (unescaped) and its value.
    fn parse_sample(line: &str) -> (String, Vec<(String, String)>, f64) {
        let (name, mut rest) = match line.find(['{', ' ']) {
            Some(i) => line.split_at(i),
            None => panic!("no value in {line:?}"),
        };
        let mut labels = Vec::new();
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.chars();
            loop {
                let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                assert_eq!(chars.next(), Some('"'), "{line:?}");
                let mut value = String::new();
                loop {
                    match chars.next().expect("closing quote") {
                        '"' => break,
                        '\\' => match chars.next() {
                            Some('n') => value.push('\n'),
                            Some(c @ ('\\' | '"')) => value.push(c),
                            other => panic!("bad escape {other:?} in {line:?}"),
                        },
                        '\n' => panic!("raw newline in {line:?}"),
                        c => value.push(c),
                    }
                }
                labels.push((key, value));
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    other => panic!("{other:?} after a label in {line:?}"),
                }
            }
            rest = &r[r.len() - chars.as_str().len()..];
        }
        let value = rest.strip_prefix(' ').expect("space before the value");
        (name.to_owned(), labels, value.parse().expect("a number"))
    }

    #[test]
    fn hostile_label_values_are_escaped_and_read_back_whole() {
        let text = sample();
        let hostile = "q\"b\\n\nx";
        assert!(
            text.contains(
                r#"predictive_task_frozen{container="q\"b\\n\nx",task_type="etl\\\"\n"} 0"#
            ),
            "{text}"
        );
        let mut seen = 0;
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, labels, _) = parse_sample(line);
            assert!(name.starts_with("predictive_"), "{line:?}");
            if labels.iter().any(|(k, v)| k == "container" && v == hostile) {
                assert!(
                    labels.contains(&("task_type".to_owned(), "etl\\\"\n".to_owned())),
                    "{line:?}"
                );
                seen += 1;
            }
        }
        // 7 usage and allocation gauges, 4 lease gauges, 8 prediction bounds, 9 counters.
        assert_eq!(seen, 28, "{text}");
        let (_, labels, _) = parse_sample(
            text.lines()
                .find(|l| l.starts_with("predictive_broker_info{"))
                .expect("the info line"),
        );
        assert_eq!(labels, [("version".to_owned(), "0.1.0-\"dev\"".to_owned())]);
    }

    /// A collector of one gauge per value, to see how [`Num`] writes them.
    #[derive(Debug)]
    struct Values(Vec<f64>);

    impl Collector for Values {
        fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
            let samples = self.0.iter().map(|v| ([("v", "x")], gauge(*v)));
            family(&mut e, "g", "h", samples)
        }
    }

    #[test]
    fn gauge_values_read_back_whole_and_whole_ones_are_integers() {
        let mut out = String::new();
        encode(
            &mut out,
            Values(vec![
                2.0,
                -0.0,
                0.1 + 0.2,
                1e-7,
                17179869184.0,
                1e300,
                f64::INFINITY,
                f64::NAN,
            ]),
        );
        let values: Vec<&str> = out
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' ').map(|x| x.1))
            .collect();
        // Whole numbers as integers, as before; fractions in digits that read back as the same f64 (prometheus-client's
        // dtoa: not always the digits Rust's Display picks, 0.1 + 0.2 is 0.30000000000000007 here); non-finite values
        // as the format spells them (the hand-written encoder wrote Rust's `inf`).
        assert_eq!(values.len(), 8, "{out}");
        assert_eq!(values[..2], ["2", "0"]);
        assert_eq!(values[2].parse::<f64>().ok(), Some(0.1 + 0.2), "{out}");
        assert_eq!(values[3..], ["1e-7", "17179869184", "1e300", "+Inf", "NaN"]);
        assert!(out.starts_with("# HELP g h\n# TYPE g gauge\n"), "{out}");
    }

    #[test]
    fn no_sample_no_family() {
        let mut out = String::new();
        encode(&mut out, Values(Vec::new()));
        assert_eq!(out, "");
    }

    /// [`render`] of copies of its arguments.
    fn render_of(
        status: &Status,
        tasks: &[TaskCounters],
        counters: &BrokerCounters,
        latencies: &[(&'static str, &'static str, LatencySnapshot)],
        max_bytes: usize,
    ) -> String {
        render(Scrape {
            status: status.clone(),
            tasks: tasks.to_vec(),
            counters: counters.clone(),
            latencies: latencies.to_vec(),
            max_bytes,
        })
    }

    fn many(n: usize) -> (Status, Vec<TaskCounters>) {
        let task = |i: usize| TaskView {
            container_id: format!("ctr-{i:06}"),
            mode: Mode::Enforce,
            priority: 0,
            critical: false,
            allocation: Allocation {
                cpu_cores: Some(0.5),
                memory_bytes: Some(1 << 20),
                memory_max_bytes: Some(2 << 20),
            },
            base_cpu_cores: Some(0.5),
            frozen: false,
            stopping: false,
            usage: Some(Usage {
                at_ms: 1,
                cpu_cores: 0.25,
                memory_bytes: 400,
                ..Usage::default()
            }),
            limits: Default::default(),
            max_borrow_cpu: None,
            io: None,
            net: None,
            net_ingress: None,
        };
        let status = Status {
            total_tasks: None,
            next_offset: None,
            broker_version: "0.1.0".to_owned(),
            tick_ms: 1000,
            host: HostCapacity {
                cpu_cores: 2.0,
                memory_bytes: 4096,
            },
            model_version: 1,
            tasks: (0..n).map(task).collect(),
            leases: Vec::new(),
            predictions: Vec::new(),
            pool: "host".to_owned(),
        };
        let counters = (0..n)
            .map(|i| TaskCounters {
                container_id: format!("ctr-{i:06}"),
                task_key: "batch/etl-nightly".to_owned(),
                live: true,
                prediction: None,
                counters: Counters::default(),
            })
            .collect();
        (status, counters)
    }

    fn omitted(text: &str) -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix("predictive_metrics_tasks_omitted "))
            .and_then(|v| v.parse().ok())
            .expect("the omitted gauge is always written")
    }

    #[test]
    fn a_scrape_at_20000_tasks_stays_within_max_bytes_and_counts_what_it_left_out() {
        let (status, tasks) = many(20_000);
        let text = render_of(
            &status,
            &tasks,
            &BrokerCounters::default(),
            &[],
            DEFAULT_MAX_BYTES,
        );
        assert!(
            text.len() <= DEFAULT_MAX_BYTES,
            "{} bytes > {DEFAULT_MAX_BYTES}",
            text.len()
        );
        let named = |id: &str| text.contains(&format!("container=\"{id}\""));
        assert!(named("ctr-000000"), "the first tasks in id order are shown");
        assert!(!named("ctr-019999"), "the last ones are left out");
        let shown = text
            .lines()
            .filter(|l| l.starts_with("predictive_task_frozen{"))
            .count();
        assert!(shown > 100, "only {shown} tasks shown");
        assert_eq!(shown + omitted(&text), 20_000);
        assert!(
            text.contains("predictive_tasks 20000\n"),
            "totals count every task"
        );

        // The same tasks under a cap they fit in: every one is shown, nothing omitted.
        let (status, tasks) = many(50);
        let text = render_of(&status, &tasks, &BrokerCounters::default(), &[], 1 << 20);
        assert_eq!(omitted(&text), 0);
        assert!(text.contains("container=\"ctr-000049\""));
    }

    #[test]
    fn latency_summaries_give_window_quantiles_count_and_sum() {
        let l = Latency::default();
        assert!(l.snapshot().quantiles.is_empty());
        for ms in 1..=100u64 {
            l.observe(Duration::from_millis(ms));
        }
        let s = l.snapshot();
        assert_eq!(s.count, 100);
        assert!((s.sum - 5.05).abs() < 1e-9, "{}", s.sum);
        let q = |want: f64| {
            s.quantiles
                .iter()
                .find(|(k, _)| *k == want)
                .map(|(_, v)| *v)
                .expect("quantile present")
        };
        assert!((q(0.5) - 0.050).abs() < 1e-9);
        assert!((q(0.99) - 0.099).abs() < 1e-9);
        assert!((q(1.0) - 0.100).abs() < 1e-9);
        // The window keeps the newest observations only.
        for _ in 0..LATENCY_WINDOW {
            l.observe(Duration::from_millis(2));
        }
        let s = l.snapshot();
        assert_eq!(s.count, 100 + LATENCY_WINDOW as u64);
        assert_eq!(s.quantiles.last().map(|x| x.1), Some(0.002));
        let mut text = String::new();
        summary(&mut text, "x_seconds", "h", &s);
        assert!(text.contains("# TYPE x_seconds summary\n"), "{text}");
        assert!(
            text.contains("x_seconds{quantile=\"0.99\"} 0.002\n"),
            "{text}"
        );
        assert!(
            text.contains(&format!("x_seconds_count {}\n", 100 + LATENCY_WINDOW)),
            "{text}"
        );
    }
}
