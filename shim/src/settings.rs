//! What the shim reads from the configuration file (the broker's TOML), read once per shim process.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use predictive_api::settings::{DEFAULT_CONFIG, ShimSettings};

/// Environment variable naming the configuration file (default [`DEFAULT_CONFIG`]): the broker's TOML, whose
/// `socket`, `state_dir`, `tick_ms`, `register_budget_ms` and `autostart` the shim reads too
/// (`predictive_api::settings`). containerd passes its environment to its shims.
pub const CONFIG_ENV: &str = "PREDICTIVE_CONFIG";

/// What the shim reads from the configuration file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The file, when one exists (passed on to an embedded broker).
    pub config_file: Option<PathBuf>,
    /// The broker's socket.
    pub socket: PathBuf,
    /// The broker's state directory (its lock file tells whether one runs).
    pub state_dir: PathBuf,
    /// Monitor period.
    pub tick: Duration,
    /// Bound on Register at Create (the config's `register_budget_ms`, default 50 ms).
    pub register_budget: Duration,
    /// `false` when `$PREDICTIVE_CONFIG` names a file that cannot be read: the broker it describes is unknown,
    /// so the shim neither contacts nor starts one (it never falls back to the host's default broker).
    pub enabled: bool,
    /// Start a broker when none answers (the configuration's `autostart`).
    pub autostart: bool,
}

impl Settings {
    fn load() -> Settings {
        let explicit = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let path = explicit
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let mut enabled = true;
        let (cfg, file) = match ShimSettings::load(&path, explicit.is_some()) {
            Ok(cfg) => (cfg, path.exists().then_some(path)),
            Err(e) => {
                // A broken file is not a reason to manage containers with settings nobody chose.
                tracing::error!(
                    "{}; containers start with their spec's limits and no broker is contacted",
                    predictive_api::error_chain(&e)
                );
                enabled = false;
                (ShimSettings::default(), None)
            }
        };
        Settings {
            config_file: file,
            socket: cfg.socket,
            state_dir: cfg.state_dir,
            tick: Duration::from_millis(cfg.tick_ms.max(50)),
            register_budget: Duration::from_millis(cfg.register_budget_ms.clamp(1, 10_000)),
            enabled,
            autostart: cfg.autostart,
        }
    }

    /// The settings of this shim process, read once.
    pub fn get() -> &'static Settings {
        static S: OnceLock<Settings> = OnceLock::new();
        S.get_or_init(Settings::load)
    }
}
