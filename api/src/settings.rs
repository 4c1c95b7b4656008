//! What a shim reads of predictived's configuration file (default [`DEFAULT_CONFIG`]): the broker's `socket` and
//! `state_dir`, its `tick_ms`, `register_budget_ms` and `autostart`. One file configures both, so an operator
//! sets the socket once.
//!
//! The shim links no TOML library for five keys: [`ShimSettings::parse`] reads the file's top-level keys with
//! [`crate::toml_keys`], which checks the whole file lexically. The shim's own keys are checked as strictly as
//! the broker checks them (type, `tick_ms` at least 1), and a top-level key the broker does not know is an error
//! too ([`BROKER_TOP_LEVEL_KEYS`]), so a typo such as `autostrat = false` stops the shim as it stops the broker.
//! The broker's other keys are the broker's to check (predictived names a bad one when it starts). Every error
//! names the file, the line and the key.

use std::path::{Path, PathBuf};

use crate::toml_keys::{self, Value};

/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/predictive/predictived.toml";
/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/predictive";

/// Every top-level key and table of predictived's configuration (the broker's tests check this list against its
/// `Config`).
pub const BROKER_TOP_LEVEL_KEYS: &[&str] = &[
    "state_dir",
    "socket",
    "allowed_gid",
    "tick_ms",
    "register_budget_ms",
    "retrain_check_ms",
    "sample_flush_ms",
    "host_cpu_cores",
    "host_memory_bytes",
    "cgroup",
    "autostart",
    "controller",
    "policy",
    "retrain",
    "import",
    "metrics",
    "network",
    "max_connections",
    "idle_timeout_ms",
    "store_cache_bytes",
    "max_decisions",
    "decision_retention_days",
    "max_task_types",
    "task_type_retention_days",
];

/// The configuration file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or a key the shim reads is wrong; the message names the line and the key.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The keys of predictived's configuration that a shim uses, with the broker's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShimSettings {
    /// API socket (default [`crate::wire::DEFAULT_SOCKET`]).
    pub socket: PathBuf,
    /// State directory (default [`DEFAULT_STATE_DIR`]).
    pub state_dir: PathBuf,
    /// Controller period, ms (default 1000, at least 1).
    pub tick_ms: u64,
    /// How long a Create waits for Register, ms (default 50).
    pub register_budget_ms: u64,
    /// Whether a shim that finds no broker starts one (default true).
    pub autostart: bool,
}

impl Default for ShimSettings {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(crate::wire::DEFAULT_SOCKET),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            tick_ms: 1000,
            register_budget_ms: 50,
            autostart: true,
        }
    }
}

impl ShimSettings {
    /// Reads the shim's keys from TOML text; `path` is only used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, SettingsError> {
        let bad = |message: String| SettingsError::Parse {
            path: path.to_owned(),
            message,
        };
        let entries = toml_keys::top_level(text).map_err(|e| bad(e.to_string()))?;
        let mut s = Self::default();
        for e in entries {
            let top = e.key.split('.').next().unwrap_or_default();
            if !BROKER_TOP_LEVEL_KEYS.contains(&top) {
                return Err(bad(format!("line {}: unknown key `{}`", e.line, e.key)));
            }
            let wrong = |what: &str| {
                bad(format!(
                    "line {}: key `{}` must be {what}, not {}",
                    e.line, e.key, e.raw
                ))
            };
            let count = |v: &Value| match v {
                Value::Integer(n) if *n >= 0 => Ok(*n as u64),
                _ => Err(wrong("a non-negative integer")),
            };
            match e.key.as_str() {
                "socket" | "state_dir" => {
                    let Value::String(p) = &e.value else {
                        return Err(wrong("a string"));
                    };
                    if e.key == "socket" {
                        s.socket = PathBuf::from(p);
                    } else {
                        s.state_dir = PathBuf::from(p);
                    }
                }
                "tick_ms" => {
                    s.tick_ms = count(&e.value)?;
                    if s.tick_ms == 0 {
                        return Err(bad(format!(
                            "line {}: key `tick_ms` must be at least 1",
                            e.line
                        )));
                    }
                }
                "register_budget_ms" => s.register_budget_ms = count(&e.value)?,
                "autostart" => {
                    let Value::Boolean(b) = e.value else {
                        return Err(wrong("true or false"));
                    };
                    s.autostart = b;
                }
                _ => {}
            }
        }
        Ok(s)
    }

    /// Reads `path`; a missing file that is not `required` (the default path) means the defaults.
    pub fn load(path: &Path, required: bool) -> Result<Self, SettingsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(source) => Err(SettingsError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<ShimSettings, SettingsError> {
        ShimSettings::parse(s, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_is_the_defaults() {
        let s = parse("").expect("empty is fine");
        assert_eq!(s, ShimSettings::default());
        assert_eq!(s.socket, Path::new("/run/predictive/broker.sock"));
        assert_eq!(s.state_dir, Path::new("/var/lib/predictive"));
        assert_eq!(
            (s.tick_ms, s.register_budget_ms, s.autostart),
            (1000, 50, true)
        );
    }

    #[test]
    fn the_shims_keys_are_read_and_the_brokers_skipped() {
        let s = parse(
            "socket = \"/tmp/b.sock\" # here\nstate_dir = '/tmp/st'\ntick_ms = 250\nregister_budget_ms = 20\nautostart = false\nallowed_gid = 5\ncgroup = \"v1\"\n[controller]\nhost_reserve_cpu = 1.5\ntick_ms = \"not ours\"\n[import]\nfiles = [\n  \"/a\",\n]\n",
        )
        .expect("valid");
        assert_eq!(
            s,
            ShimSettings {
                socket: PathBuf::from("/tmp/b.sock"),
                state_dir: PathBuf::from("/tmp/st"),
                tick_ms: 250,
                register_budget_ms: 20,
                autostart: false,
            }
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        for (text, key) in [
            ("tick_ms = \"fast\"", "tick_ms"),
            ("tick_ms = 0", "tick_ms"),
            ("tick_ms = -5", "tick_ms"),
            ("register_budget_ms = 1.5", "register_budget_ms"),
            ("autostart = \"no\"", "autostart"),
            ("socket = 5", "socket"),
            ("state_dir = [\"/x\"]", "state_dir"),
            ("autostrat = false", "autostrat"),
            ("tick = 5", "tick"),
            ("tick_ms = 5\ntick_ms = 6", "tick_ms"),
            ("tick_ms = 5 6", "tick_ms"),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.contains(key) && e.contains("test.toml"), "{text}: {e}");
        }
        let e = parse("[controller\n").expect_err("not TOML").to_string();
        assert!(e.starts_with("test.toml: line 1: "), "{e}");
    }

    #[test]
    fn missing_default_file_is_fine_but_a_named_one_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("none.toml");
        assert_eq!(
            ShimSettings::load(&p, false).expect("defaults"),
            ShimSettings::default()
        );
        let e = ShimSettings::load(&p, true).expect_err("required");
        assert!(e.to_string().contains("none.toml"), "{e}");
    }
}
