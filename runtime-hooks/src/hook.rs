//! The `predictive-hook` OCI hook: registers a container at `createRuntime` and deregisters it at
//! `poststop`, so hosts that keep runc or crun still feed the broker.
//!
//! Until the broker exists, the hook appends one JSON line per event to a record file; the broker issue
//! replaces [`append_record`] with a call to the broker and keeps the same [`HookRecord`].
//!
//! # Installing
//! In the OCI `config.json` (or via an OCI hooks.d / NRI injector):
//! ```json
//! "hooks": {
//!   "createRuntime": [{"path": "/usr/local/bin/predictive-hook", "args": ["predictive-hook", "register"]}],
//!   "poststop":      [{"path": "/usr/local/bin/predictive-hook", "args": ["predictive-hook", "deregister"]}]
//! }
//! ```
//! The runtime writes the container state JSON (`ociVersion`, `id`, `status`, `pid`, `bundle`,
//! `annotations`) to the hook's stdin.
//!
//! # Command line
//! `predictive-hook [--record FILE] [--strict] [--cgroup-root DIR] [--proc-root DIR] [--mountinfo FILE] [EVENT]`
//! - `EVENT`: `register` (aliases `createRuntime`, `create`) or `deregister` (aliases `poststop`, `stop`);
//!   without it the event follows the state's `status` (`stopped` deregisters, anything else registers).
//! - `--record FILE`, else env `PREDICTIVE_HOOK_RECORD`, else [`DEFAULT_RECORD`]. Note that a hook's
//!   environment is the hook entry's `env` list in the spec, not the runtime's.
//! - `--strict` (or env `PREDICTIVE_HOOK_STRICT=1`): exit 1 on any failure. By default the hook fails open:
//!   it reports the error on stderr and exits 0, because a failing `createRuntime` hook aborts the
//!   container and telemetry must never do that.
//!
//! # Record format (one JSON object per line, appended with a single `write(2)` under `O_APPEND`)
//! ```json
//! {"v":1,"event":"register","unix_ns":1764300000000000000,"id":"c1","status":"created","pid":4242,
//!  "bundle":"/run/containerd/.../c1","cgroups_path":"/default/c1",
//!  "cgroup":{"version":"hybrid","dirs":{"cpu":"/sys/fs/cgroup/cpu/default/c1","memory":"...","unified":"..."}},
//!  "cgroup_error":null,"annotations":{"io.kubernetes.cri.sandbox-id":"..."}}
//! ```
//! `v` is the format version. `cgroup` comes from `/proc/<pid>/cgroup` when the pid is alive, else from
//! `linux.cgroupsPath` in the bundle's `config.json`; it is `null` (and `cgroup_error` says why) when
//! neither works, e.g. at `poststop` after the cgroup is gone. `dirs` keys: `cpu`, `cpuacct`, `memory`,
//! `blkio`, `pids`, `freezer`, `unified` (v1/hybrid) or `dir` (v2).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::cgroup::{CgroupDirs, CgroupVersion, ContainerCgroup};
use crate::discovery::HostRoots;
use crate::error_chain;

/// Where records go without `--record` or `PREDICTIVE_HOOK_RECORD`.
pub const DEFAULT_RECORD: &str = "/run/predictive/hook-events.jsonl";
/// The record format version.
pub const RECORD_VERSION: u32 = 1;

/// Errors from the hook.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// A command-line argument is not understood.
    #[error("bad argument {arg:?}: {reason}")]
    Usage {
        /// The argument.
        arg: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// stdin could not be read.
    #[error("reading the container state from stdin")]
    ReadState(#[source] std::io::Error),
    /// stdin is not an OCI state document.
    #[error("parsing the container state JSON")]
    ParseState(#[source] serde_json::Error),
    /// The record could not be serialised.
    #[error("serialising the record for {id}")]
    Serialize {
        /// The container id.
        id: String,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
    /// The record file could not be written.
    #[error("appending to {path}")]
    WriteRecord {
        /// The record file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// What the hook was run for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HookEvent {
    /// `createRuntime`: the container exists and has a pid and cgroup.
    Register,
    /// `poststop`: the container is gone.
    Deregister,
}

/// The hook's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// The record file.
    pub record: PathBuf,
    /// Exit non-zero on failure.
    pub strict: bool,
    /// The event, if given on the command line.
    pub event: Option<HookEvent>,
    /// Host roots for cgroup discovery.
    pub roots: HostRoots,
}

/// A container's cgroup in a record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CgroupRecord {
    /// v1, hybrid or v2.
    pub version: CgroupVersion,
    /// Directory per controller.
    pub dirs: BTreeMap<String, PathBuf>,
}

/// One line of the record file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HookRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub v: u32,
    /// Register or deregister.
    pub event: HookEvent,
    /// When the hook ran, ns since the Unix epoch.
    pub unix_ns: u64,
    /// Container id.
    pub id: String,
    /// OCI status as the runtime reported it.
    pub status: String,
    /// Container init pid, when the runtime gave one.
    pub pid: Option<i32>,
    /// Bundle directory.
    pub bundle: PathBuf,
    /// `linux.cgroupsPath` from the bundle's config.json.
    pub cgroups_path: Option<String>,
    /// The container's cgroup directories on this host.
    pub cgroup: Option<CgroupRecord>,
    /// Why `cgroup` is null.
    pub cgroup_error: Option<String>,
    /// The state's annotations.
    pub annotations: BTreeMap<String, String>,
}

fn parse_event(arg: &str) -> Option<HookEvent> {
    match arg {
        "register" | "createRuntime" | "create" => Some(HookEvent::Register),
        "deregister" | "poststop" | "stop" => Some(HookEvent::Deregister),
        _ => None,
    }
}

/// Parses the command line (without the program name) and environment.
pub fn parse_args(
    args: impl IntoIterator<Item = OsString>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<HookConfig, HookError> {
    let mut config = HookConfig {
        record: env("PREDICTIVE_HOOK_RECORD")
            .filter(|s| !s.is_empty())
            .map_or_else(|| DEFAULT_RECORD.into(), PathBuf::from),
        strict: env("PREDICTIVE_HOOK_STRICT").is_some_and(|v| v == "1" || v == "true"),
        event: None,
        roots: HostRoots::default(),
    };
    let mut args = args.into_iter().map(|a| a.to_string_lossy().into_owned());
    while let Some(arg) = args.next() {
        let mut value = |reason| {
            args.next().ok_or(HookError::Usage {
                arg: arg.clone(),
                reason,
            })
        };
        match arg.as_str() {
            "--record" => config.record = value("needs a file")?.into(),
            "--cgroup-root" => config.roots.cgroup = value("needs a directory")?.into(),
            "--proc-root" => config.roots.proc = value("needs a directory")?.into(),
            "--mountinfo" => config.roots.mountinfo = value("needs a file")?.into(),
            "--strict" => config.strict = true,
            other => match parse_event(other) {
                Some(e) if config.event.is_none() => config.event = Some(e),
                Some(_) => {
                    return Err(HookError::Usage {
                        arg,
                        reason: "only one event",
                    });
                }
                None => {
                    return Err(HookError::Usage {
                        arg,
                        reason: "unknown argument",
                    });
                }
            },
        }
    }
    Ok(config)
}

fn cgroup_record(cg: &ContainerCgroup) -> CgroupRecord {
    let mut dirs = BTreeMap::new();
    match cg.dirs() {
        CgroupDirs::V1(d) => {
            for (name, dir) in [
                ("cpu", &d.cpu),
                ("cpuacct", &d.cpuacct),
                ("memory", &d.memory),
                ("blkio", &d.blkio),
                ("pids", &d.pids),
                ("freezer", &d.freezer),
                ("unified", &d.unified),
            ] {
                if let Some(dir) = dir {
                    dirs.insert(name.to_owned(), dir.clone());
                }
            }
        }
        CgroupDirs::V2(d) => {
            dirs.insert("dir".to_owned(), d.dir.clone());
        }
    }
    CgroupRecord {
        version: cg.version(),
        dirs,
    }
}

fn cgroups_path(bundle: &Path) -> Option<String> {
    let spec = oci_spec::runtime::Spec::load(bundle.join("config.json")).ok()?;
    spec.linux()
        .as_ref()?
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
}

/// Builds the record for a state document.
pub fn build_record(
    state: &oci_spec::runtime::State,
    event: Option<HookEvent>,
    roots: &HostRoots,
) -> HookRecord {
    let status = state.status().to_string();
    let event = event.unwrap_or(if status == "stopped" {
        HookEvent::Deregister
    } else {
        HookEvent::Register
    });
    let pid = state.pid().filter(|p| *p > 0);
    let cgroups_path = cgroups_path(state.bundle());
    let by_pid = pid.map(|p| ContainerCgroup::from_pid(roots, p));
    let found = match (by_pid, &cgroups_path) {
        (Some(Ok(cg)), _) => Ok(cg),
        (by_pid, Some(path)) => ContainerCgroup::discover(roots, path).map_err(|e| match by_pid {
            Some(Err(pid_err)) => format!("{}; {}", error_chain(&pid_err), error_chain(&e)),
            _ => error_chain(&e),
        }),
        (Some(Err(e)), None) => Err(error_chain(&e)),
        (None, None) => {
            Err("no pid in the state and no linux.cgroupsPath in the bundle".to_owned())
        }
    };
    let (cgroup, cgroup_error) = match found {
        Ok(cg) => (Some(cgroup_record(&cg)), None),
        Err(e) => (None, Some(e)),
    };
    HookRecord {
        v: RECORD_VERSION,
        event,
        unix_ns: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        id: state.id().clone(),
        status,
        pid,
        bundle: state.bundle().clone(),
        cgroups_path,
        cgroup,
        cgroup_error,
        annotations: state
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
    }
}

/// Appends `record` as one JSON line (creating the file and its directory if needed).
pub fn append_record(path: &Path, record: &HookRecord) -> Result<(), HookError> {
    let mut line = serde_json::to_vec(record).map_err(|source| HookError::Serialize {
        id: record.id.clone(),
        source,
    })?;
    line.push(b'\n');
    let write_err = |source| HookError::WriteRecord {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(write_err)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(write_err)?;
    // One write: O_APPEND keeps concurrent hooks' lines whole.
    file.write_all(&line).map_err(write_err)
}

/// Reads the state from `stdin`, builds and appends the record.
pub fn run(config: &HookConfig, mut stdin: impl Read) -> Result<HookRecord, HookError> {
    let mut text = String::new();
    stdin
        .read_to_string(&mut text)
        .map_err(HookError::ReadState)?;
    let state: oci_spec::runtime::State =
        serde_json::from_str(&text).map_err(HookError::ParseState)?;
    let record = build_record(&state, config.event, &config.roots);
    append_record(&config.record, &record)?;
    Ok(record)
}

/// The binary's entry point.
pub fn main() -> std::process::ExitCode {
    let env = |k: &str| std::env::var(k).ok();
    let strict_env = env("PREDICTIVE_HOOK_STRICT").is_some_and(|v| v == "1" || v == "true");
    let result = parse_args(std::env::args_os().skip(1), env)
        .and_then(|config| run(&config, std::io::stdin().lock()).map(|_| config.strict));
    match result {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("predictive-hook: {}", error_chain(&e));
            let strict = strict_env || std::env::args().any(|a| a == "--strict");
            if strict {
                std::process::ExitCode::FAILURE
            } else {
                std::process::ExitCode::SUCCESS
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{FakeHost, Layout};

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn arguments_and_environment() {
        let c = parse_args(args(&[]), |_| None).expect("defaults");
        assert_eq!(c.record, PathBuf::from(DEFAULT_RECORD));
        assert!(!c.strict);
        assert_eq!(c.event, None);
        assert_eq!(c.roots, HostRoots::default());
        let env = |k: &str| match k {
            "PREDICTIVE_HOOK_RECORD" => Some("/tmp/r.jsonl".to_owned()),
            "PREDICTIVE_HOOK_STRICT" => Some("1".to_owned()),
            _ => None,
        };
        let c = parse_args(args(&["poststop"]), env).expect("env");
        assert_eq!(
            (c.record.as_path(), c.strict, c.event),
            (Path::new("/tmp/r.jsonl"), true, Some(HookEvent::Deregister))
        );
        let c = parse_args(
            args(&["--record", "/x", "createRuntime", "--cgroup-root", "/c"]),
            env,
        )
        .expect("flag wins");
        assert_eq!(
            (c.record.as_path(), c.event),
            (Path::new("/x"), Some(HookEvent::Register))
        );
        assert_eq!(c.roots.cgroup, PathBuf::from("/c"));
        assert!(matches!(
            parse_args(args(&["--record"]), |_| None),
            Err(HookError::Usage { .. })
        ));
        assert!(matches!(
            parse_args(args(&["--bogus"]), |_| None),
            Err(HookError::Usage { .. })
        ));
        assert!(matches!(
            parse_args(args(&["register", "poststop"]), |_| None),
            Err(HookError::Usage { .. })
        ));
    }

    fn state(id: &str, status: &str, pid: Option<i32>, bundle: &Path) -> String {
        let mut v = serde_json::json!({
            "ociVersion": "1.0.2", "id": id, "status": status, "bundle": bundle,
            "annotations": {"io.kubernetes.cri.sandbox-id": "sb1"}
        });
        if let Some(pid) = pid {
            v["pid"] = serde_json::json!(pid);
        }
        v.to_string()
    }

    #[test]
    fn register_and_deregister_records() {
        let host = FakeHost::new(Layout::Hybrid);
        host.container("/default/c1");
        host.proc_file(
            "77/cgroup",
            "4:memory:/default/c1\n1:cpu:/default/c1\n0::/default/c1\n",
        );
        let bundle = tempfile::tempdir().expect("bundle");
        std::fs::write(
            bundle.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},"linux":{"cgroupsPath":"/default/c1"}}"#,
        )
        .expect("config");
        let record_file = bundle.path().join("out/records.jsonl");
        let config = HookConfig {
            record: record_file.clone(),
            strict: false,
            event: None,
            roots: host.roots(),
        };

        let r = run(
            &config,
            state("c1", "created", Some(77), bundle.path()).as_bytes(),
        )
        .expect("register");
        assert_eq!(r.event, HookEvent::Register);
        assert_eq!(r.pid, Some(77));
        assert_eq!(r.cgroups_path.as_deref(), Some("/default/c1"));
        let cg = r.cgroup.as_ref().expect("cgroup found via pid");
        assert_eq!(cg.version, CgroupVersion::Hybrid);
        assert_eq!(
            cg.dirs.get("memory"),
            Some(&host.root().join("memory/default/c1"))
        );
        assert!(
            !cg.dirs.contains_key("pids"),
            "pid's cgroup file lists no pids controller"
        );
        assert_eq!(
            r.annotations
                .get("io.kubernetes.cri.sandbox-id")
                .map(String::as_str),
            Some("sb1")
        );

        // Dead pid: falls back to cgroupsPath, which finds every controller.
        let r2 = run(
            &config,
            state("c1", "running", Some(99), bundle.path()).as_bytes(),
        )
        .expect("fallback");
        assert!(
            r2.cgroup
                .as_ref()
                .expect("via cgroupsPath")
                .dirs
                .contains_key("pids")
        );

        // poststop: no pid, cgroup gone.
        std::fs::remove_dir_all(host.root().join("memory/default")).expect("rm");
        for c in ["cpu", "cpuacct", "blkio", "pids", "freezer", "unified"] {
            std::fs::remove_dir_all(host.root().join(c).join("default")).expect("rm");
        }
        let r3 = run(
            &config,
            state("c1", "stopped", None, bundle.path()).as_bytes(),
        )
        .expect("deregister");
        assert_eq!(r3.event, HookEvent::Deregister);
        assert_eq!(r3.cgroup, None);
        assert!(
            r3.cgroup_error
                .as_deref()
                .is_some_and(|e| e.contains("/default/c1")),
            "{:?}",
            r3.cgroup_error
        );

        let text = std::fs::read_to_string(&record_file).expect("records");
        let lines: Vec<HookRecord> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a record"))
            .collect();
        assert_eq!(lines, vec![r, r2, r3]);
        let raw: serde_json::Value =
            serde_json::from_str(text.lines().next().expect("line")).expect("json");
        assert_eq!(raw["v"], 1);
        assert_eq!(raw["event"], "register");
        assert_eq!(raw["cgroup"]["version"], "hybrid");
    }

    #[test]
    fn bad_input_is_typed() {
        let dir = tempfile::tempdir().expect("dir");
        let config = HookConfig {
            record: dir.path().join("r.jsonl"),
            strict: true,
            event: Some(HookEvent::Register),
            roots: HostRoots::default(),
        };
        assert!(matches!(
            run(&config, &b"not json"[..]),
            Err(HookError::ParseState(_))
        ));
        assert!(matches!(
            run(&config, &b""[..]),
            Err(HookError::ParseState(_))
        ));
        // A record path under a regular file cannot be created.
        std::fs::write(dir.path().join("file"), "").expect("file");
        let config = HookConfig {
            record: dir.path().join("file/r.jsonl"),
            ..config
        };
        let state = state("x", "creating", None, dir.path());
        let err = run(&config, state.as_bytes()).expect_err("unwritable");
        assert!(matches!(err, HookError::WriteRecord { .. }));
    }
}
