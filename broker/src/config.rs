//! `predictived`'s configuration file (TOML, default [`DEFAULT_CONFIG`]). Every key is optional; an unknown key
//! or a mistyped value is an error that names it.
//!
//! ```toml
//! state_dir = "/var/lib/predictive"        # predictor.redb and predictived.lock live here
//! socket = "/run/predictive/broker.sock"  # the API socket (mode 0600, or 0660 with allowed_gid)
//! allowed_gid = 1001                       # peers with this gid may connect (root and our uid always may)
//! tick_ms = 1000                           # controller period
//! register_budget_ms = 50                  # how long a shim's Create waits for Register (then: the spec's limits)
//! retrain_check_ms = 30000                 # how often the retrain thread asks the predictor if a retrain is due
//! sample_flush_ms = 10000                  # ignored (kept for old files): samples are committed with their Report
//! host_cpu_cores = 8.0                     # default: the CPUs online
//! host_memory_bytes = 17179869184          # default: MemTotal
//! cgroup = "v2"                            # default for a Register without `cgroup`: detected
//! autostart = true                         # a shim that finds no broker starts one (false: a service runs it)
//!
//! [controller]                             # see broker::controller::ControllerConfig for every key
//! host_reserve_cpu = 0.5
//! host_reserve_memory_bytes = 268435456
//!
//! [retrain]
//! interval_ms = 600000                     # retrain when this long passed and a run was recorded
//! new_runs = 200                           # or when this many runs were recorded
//! min_runs = 5                             # runs a task type needs before it gets predictions
//! refit_growth = 0.1                       # refit a type when its new runs reach this share of its fitted runs
//!
//! [import]                                 # run histories of other nodes (broker::transfer)
//! dir = "/var/lib/predictive/import"       # every *.json export here is merged when new or changed (default: none)
//! files = ["/srv/etl-history.json"]        # merged once at start (also: predictived --import FILE)
//! max_file_bytes = 67108864                # a bigger file is refused
//!
//! [policy]                                 # what a Kubernetes pod may ask for through its annotations
//! max_priority = 0                         # highest io.predictive.priority a pod may give itself
//! max_borrow_cpu = 1.0                     # most CPU a pod may borrow (default: controller.max_borrow_cpu)
//!
//! [network]                                # egress/ingress limits (broker::controller::net); off when absent
//! link_budget_bytes_per_sec = 125000000    # what the managed containers may send together (1 Gbit/s)
//! ingress_budget_bytes_per_sec = 125000000 # what they may receive together (absent: no ingress limits)
//!
//! [metrics]                                # Prometheus text exposition over HTTP/1.0; off when absent
//! listen = "127.0.0.1:9464"                # host:port, or an absolute Unix socket path
//! max_bytes = 4194304                      # one scrape at most (per-task series while they fit)
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::controller::net::NetConfig;
use crate::controller::{CgroupKind, ControllerConfig};

/// Default of [`MetricsConfig::max_bytes`]: about 1,000 tasks with ordinary ids and task types.
pub const DEFAULT_MAX_BYTES: usize = 4 << 20;
/// Smallest [`MetricsConfig::max_bytes`] taken (smaller values are raised to it): room for the broker-wide series.
pub const MIN_MAX_BYTES: usize = 64 << 10;

/// `[metrics]` in the broker's configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `host:port` for HTTP over TCP, or an absolute path for HTTP over a Unix socket. Absent: no metrics.
    pub listen: Option<String>,
    /// Most bytes of one scrape's body (about: the broker-wide series always come, per-task series while they
    /// fit). Default [`DEFAULT_MAX_BYTES`]; at least [`MIN_MAX_BYTES`].
    pub max_bytes: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: None,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Default configuration file and state directory: the shim reads the same file (its few keys, through
/// `predictive_api::settings`).
pub use predictive_api::settings::{DEFAULT_CONFIG, DEFAULT_STATE_DIR};

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TOML is invalid; the message names the key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// toml's message, which names the key and the line.
        message: String,
    },
}

/// Retraining cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetrainConfig {
    /// See [`predictor::RetrainPolicy::interval_ms`] (default 10 min).
    pub interval_ms: u64,
    /// See [`predictor::RetrainPolicy::new_runs`] (default 200).
    pub new_runs: u64,
    /// Runs before a task type gets a model (default: the predictor's).
    pub min_runs: Option<usize>,
    /// See [`predictor::RetrainPolicy::refit_growth`] (default 0.1; 0: a type is fitted only by the retrain).
    pub refit_growth: f64,
}

impl Default for RetrainConfig {
    fn default() -> Self {
        let p = predictor::RetrainPolicy::default();
        Self {
            interval_ms: p.interval_ms,
            new_runs: p.new_runs,
            min_runs: None,
            refit_growth: p.refit_growth,
        }
    }
}

/// Run histories exported by other nodes' brokers (`predictivectl export`), merged into this one's store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImportConfig {
    /// A directory scanned every `retrain_check_ms`: each `*.json` file (not a dot-file) is merged when it is new
    /// or changed (default: none). On Kubernetes, a volume every node's broker exports to.
    pub dir: Option<PathBuf>,
    /// Files merged once at start, before the socket serves (`predictived --import FILE` adds to them); a bad one
    /// stops the start.
    pub files: Vec<PathBuf>,
    /// Largest file read, bytes (default 64 MiB).
    pub max_file_bytes: u64,
}

impl Default for ImportConfig {
    fn default() -> Self {
        Self {
            dir: None,
            files: Vec::new(),
            max_file_bytes: crate::transfer::DEFAULT_MAX_FILE_BYTES,
        }
    }
}

/// What a Kubernetes pod (a container the CRI plugin created) may ask for through its `io.predictive.*`
/// annotations: anyone who may create a pod controls them, so the operator bounds them. Other containers (ctr,
/// Docker: created by someone with the containerd socket, i.e. root) are not capped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Highest `io.predictive.priority` a pod may give itself, -1000..=1000 (default 0: a pod may lower its
    /// priority, not raise it above an unannotated one's, so it cannot make itself the last one paused).
    pub max_priority: i32,
    /// Most CPU a pod may borrow, cores, whatever its `io.predictive.max-borrow` says (default:
    /// `controller.max_borrow_cpu`, unlimited when that is unset).
    pub max_borrow_cpu: Option<f64>,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// State directory (default [`DEFAULT_STATE_DIR`]).
    pub state_dir: PathBuf,
    /// API socket (default [`crate::api::DEFAULT_SOCKET`]).
    pub socket: PathBuf,
    /// Group allowed to connect besides root and the broker's own uid.
    pub allowed_gid: Option<u32>,
    /// Controller period, ms (default 1000).
    pub tick_ms: u64,
    /// How long a shim's Create waits for the broker's answer to Register before it starts the container with
    /// its spec's limits, ms (default 50; the shims read this key).
    pub register_budget_ms: u64,
    /// Retrain check period, ms (default 30000).
    pub retrain_check_ms: u64,
    /// Ignored, accepted for older files (samples are committed with their Report).
    pub sample_flush_ms: u64,
    /// Host CPUs (default: online CPUs).
    pub host_cpu_cores: Option<f64>,
    /// Host memory (default: MemTotal).
    pub host_memory_bytes: Option<u64>,
    /// Cgroup interface for Registers that do not say (default: detected from /sys/fs/cgroup).
    pub cgroup: Option<CgroupKind>,
    /// Whether a shim that finds no broker on the socket starts `predictived` itself (default true). False where
    /// something else runs the broker (the systemd unit, the Kubernetes DaemonSet): a shim then never starts a
    /// second one that would hold the lock against it, and fails open until the broker is back.
    pub autostart: bool,
    /// Controller tuning.
    pub controller: ControllerConfig,
    /// Caps on what pods ask for.
    pub policy: PolicyConfig,
    /// Retraining.
    pub retrain: RetrainConfig,
    /// Importing other nodes' run histories.
    pub import: ImportConfig,
    /// The Prometheus endpoint (off by default).
    pub metrics: MetricsConfig,
    /// Network egress and ingress limits (off by default: no budgets, no directives).
    pub network: NetConfig,
    /// Most connections served at once (default 16384); one more is answered `too_many_connections` and closed.
    pub max_connections: usize,
    /// A connection that has sent no Register, Report, Update or Finish (not a shim: `predictivectl`, a stray
    /// client) is closed after this long without a request, ms (default 60000; 0: never).
    pub idle_timeout_ms: u64,
    /// redb's page cache for the predictor store, bytes (default 64 MiB).
    pub store_cache_bytes: usize,
    /// Decisions kept in the store (default 1,000,000; the oldest go first; 0: no cap).
    pub max_decisions: u64,
    /// Decisions older than this are deleted, days (default 30; 0: kept for ever).
    pub decision_retention_days: u64,
    /// Task types kept (default 10,000; those seen least recently go first, with their runs; 0: no cap).
    pub max_task_types: usize,
    /// A task type not seen for this long (since its latest run ended; never while one of its containers runs)
    /// is deleted with its runs, days (default 90; 0: kept for ever).
    pub task_type_retention_days: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            socket: PathBuf::from(crate::api::DEFAULT_SOCKET),
            allowed_gid: None,
            tick_ms: 1000,
            register_budget_ms: 50,
            retrain_check_ms: 30_000,
            sample_flush_ms: 10_000,
            host_cpu_cores: None,
            host_memory_bytes: None,
            cgroup: None,
            autostart: true,
            controller: ControllerConfig::default(),
            policy: PolicyConfig::default(),
            retrain: RetrainConfig::default(),
            import: ImportConfig::default(),
            metrics: MetricsConfig::default(),
            network: NetConfig::default(),
            max_connections: 16_384,
            idle_timeout_ms: 60_000,
            store_cache_bytes: 64 << 20,
            max_decisions: 1_000_000,
            decision_retention_days: 30,
            max_task_types: 10_000,
            task_type_retention_days: 90,
        }
    }
}

impl Config {
    /// Parses TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        let bad = |message: &str| ConfigError::Parse {
            path: path.to_owned(),
            message: message.to_owned(),
        };
        if cfg.tick_ms == 0 {
            return Err(bad("key `tick_ms` must be at least 1"));
        }
        if !cfg.retrain.refit_growth.is_finite() || cfg.retrain.refit_growth < 0.0 {
            return Err(bad(
                "key `retrain.refit_growth` must be a non-negative number (0: no refits)",
            ));
        }
        if cfg.import.max_file_bytes == 0 || cfg.import.max_file_bytes > 1 << 30 {
            return Err(bad("key `import.max_file_bytes` must be in 1..=1073741824"));
        }
        if cfg.max_connections == 0 {
            return Err(bad("key `max_connections` must be at least 1"));
        }
        if cfg.store_cache_bytes < 1 << 20 {
            return Err(bad("key `store_cache_bytes` must be at least 1048576"));
        }
        let w = cfg.controller.critical_path_cpu_weight;
        if !(1.0..=256.0).contains(&w) {
            return Err(bad(
                "key `controller.critical_path_cpu_weight` must be a number in 1..=256 (1: never)",
            ));
        }
        cfg.network.check().map_err(|m| bad(&m))?;
        if !(-1000..=1000).contains(&cfg.policy.max_priority) {
            return Err(bad("key `policy.max_priority` must be in -1000..=1000"));
        }
        if cfg
            .policy
            .max_borrow_cpu
            .is_some_and(|c| !c.is_finite() || c < 0.0)
        {
            return Err(bad(
                "key `policy.max_borrow_cpu` must be a non-negative number of cores",
            ));
        }
        Ok(cfg)
    }

    /// Reads `path`; a missing file at the default path means the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The predictor's database file.
    pub fn database(&self) -> PathBuf {
        self.state_dir.join("predictor.redb")
    }

    /// Where the live leases are persisted between runs.
    pub fn leases_file(&self) -> PathBuf {
        self.state_dir.join("leases.json")
    }

    /// The lock file that keeps a second broker from starting on the same state directory.
    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("predictived.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let c = parse("").expect("empty is fine");
        assert_eq!(c, Config::default());
        assert_eq!(c.tick_ms, 1000);
        assert_eq!(
            c.database(),
            Path::new("/var/lib/predictive/predictor.redb")
        );
        assert_eq!(c.socket, Path::new("/run/predictive/broker.sock"));
    }

    #[test]
    fn keys_are_read() {
        let c = parse(
            "tick_ms = 250\nallowed_gid = 5\ncgroup = \"v1\"\nautostart = false\n[controller]\nhost_reserve_cpu = 1.5\n[retrain]\nmin_runs = 3\n",
        )
        .expect("valid");
        assert_eq!(
            (c.tick_ms, c.allowed_gid, c.cgroup),
            (250, Some(5), Some(CgroupKind::V1))
        );
        assert!(!c.autostart);
        assert!(Config::default().autostart);
        assert_eq!(c.controller.host_reserve_cpu, 1.5);
        assert_eq!(
            c.controller.min_cpu_cores,
            ControllerConfig::default().min_cpu_cores
        );
        assert_eq!(c.retrain.min_runs, Some(3));
        assert_eq!(c.policy, PolicyConfig::default());
        assert!(!c.controller.quota_unlimited_cpu);
        assert_eq!(c.network.ingress_budget_bytes_per_sec, None);
        let c = parse("[network]\ningress_budget_bytes_per_sec = 2000000\n").expect("valid");
        assert_eq!(
            (
                c.network.link_budget_bytes_per_sec,
                c.network.ingress_budget_bytes_per_sec
            ),
            (None, Some(2_000_000))
        );
        let c = parse(
            "[policy]\nmax_priority = 10\nmax_borrow_cpu = 0.5\n[controller]\nquota_unlimited_cpu = true\nmemory_stall_ms = 2000\n",
        )
        .expect("valid");
        assert_eq!(
            (c.policy.max_priority, c.policy.max_borrow_cpu),
            (10, Some(0.5))
        );
        assert!(c.controller.quota_unlimited_cpu);
        assert_eq!(c.controller.memory_stall_ms, 2000);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("tick_ms = \"fast\"", "tick_ms"),
            ("tick_ms = 0", "tick_ms"),
            ("tick = 5", "tick"),
            ("[controller]\nheadroom = \"lots\"", "headroom"),
            ("[controller]\nhedroom = 1.0", "hedroom"),
            ("cgroup = \"v3\"", "v3"),
            ("[retrain]\nnew_runs = -1", "new_runs"),
            ("[policy]\nmax_priority = 5000", "max_priority"),
            (
                "[controller]\ncritical_path_cpu_weight = 0.5",
                "critical_path_cpu_weight",
            ),
            ("[policy]\nmax_borrow_cpu = -1.0", "max_borrow_cpu"),
            ("[policy]\nmax_prio = 1", "max_prio"),
            ("[retrain]\nrefit_growth = -0.5", "refit_growth"),
            ("[import]\nmax_file_bytes = 0", "max_file_bytes"),
            ("[import]\ndirectory = \"/x\"", "directory"),
            (
                "[controller]\nquota_unlimited_cpu = \"yes\"",
                "quota_unlimited_cpu",
            ),
            (
                "[network]\ningress_budget_bytes_per_sec = 100",
                "network.ingress_budget_bytes_per_sec",
            ),
            (
                "[network]\ningress_budget_bytes_per_sec = \"1G\"",
                "ingress_budget_bytes_per_sec",
            ),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(key) && e.contains("test.toml"), "{text}: {e}");
        }
    }

    /// The shim reads this file with `predictive_api::settings`, which knows the top-level keys by name: the
    /// list is this `Config`'s, and both read the shim's keys alike.
    #[test]
    fn the_shims_reader_knows_every_key_and_agrees_on_its_own() {
        use predictive_api::settings::{BROKER_TOP_LEVEL_KEYS, ShimSettings};
        let all = Config {
            allowed_gid: Some(1),
            host_cpu_cores: Some(1.0),
            host_memory_bytes: Some(1),
            cgroup: Some(CgroupKind::V1),
            metrics: MetricsConfig {
                listen: Some("127.0.0.1:9464".to_owned()),
                ..MetricsConfig::default()
            },
            ..Config::default()
        };
        let table: toml::Table = toml::to_string(&all)
            .expect("encodes")
            .parse()
            .expect("parses");
        let mut ours: Vec<&str> = BROKER_TOP_LEVEL_KEYS.to_vec();
        let mut theirs: Vec<&str> = table.keys().map(String::as_str).collect();
        ours.sort_unstable();
        theirs.sort_unstable();
        assert_eq!(ours, theirs);
        for text in [
            "",
            "socket = \"/tmp/s.sock\"\nstate_dir = \"/tmp/st\"\ntick_ms = 250\nregister_budget_ms = 7\nautostart = false\n",
            "tick_ms = 1_000 # ms\ncgroup = \"v2\"\n[controller]\nhost_reserve_cpu = 1.5\n[import]\nfiles = [\n  \"/a\",\n]\n",
        ] {
            let c = parse(text).expect(text);
            let s = ShimSettings::parse(text, Path::new("test.toml")).expect(text);
            assert_eq!(
                (
                    s.socket,
                    s.state_dir,
                    s.tick_ms,
                    s.register_budget_ms,
                    s.autostart
                ),
                (
                    c.socket,
                    c.state_dir,
                    c.tick_ms,
                    c.register_budget_ms,
                    c.autostart
                ),
                "{text}"
            );
        }
        for text in [
            "tick_ms = 0",
            "tick_ms = \"fast\"",
            "autostart = 1",
            "socket = 5",
            "tick = 5",
            "tick_ms = 5\ntick_ms = 6",
            "[controller\n",
        ] {
            assert!(parse(text).is_err(), "{text}");
            let e = ShimSettings::parse(text, Path::new("test.toml")).expect_err(text);
            assert!(e.to_string().starts_with("test.toml: "), "{text}: {e}");
        }
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("none.toml");
        assert_eq!(
            Config::load(&p, false).expect("defaults"),
            Config::default()
        );
        assert!(
            Config::load(&p, true)
                .expect_err("required")
                .to_string()
                .contains("none.toml")
        );
    }
}
