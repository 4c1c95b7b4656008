//! A container whose cgroup systemd owns (the systemd cgroup driver: a transient `<prefix>-<id>.scope`, made by
//! libcontainer's systemd manager at Create): every limit the shim later writes into that cgroup — a broker
//! directive, a user's Update — is also set on the unit (D-Bus `SetUnitProperties`, runtime), as runc does for
//! `runc update`. Otherwise systemd keeps the values the unit was started with and writes them back into the
//! cgroup whenever it applies the unit's properties again (at a property change; at a `daemon-reload` in the pods
//! test's sequence, below), undoing the rewrite.
//!
//! Each such change makes systemd write every cgroup file it has a property for, from the unit's value or its
//! default: `memory.oom.group` 0, `io.weight` 100, `memory.swap.max` and `memory.high` `max` where the unit has no
//! value (measured in the cgroup v2 guest, systemd 257: a scope's `memory.oom.group` 1 became 0 at a `systemctl
//! set-property ... CPUWeight=`). So what the cgroup holds without a unit property — the spec's and Updates'
//! resources systemd has none for (kubelet's `memory.oom.group` on v2, the block I/O weight, CPU idle; see
//! [`crate::fidelity::not_for_systemd`]) and the broker's CPU and I/O weights — is kept here and written again
//! after each change of the unit's properties, as runc writes every resource after setting them.
//!
//! A `daemon-reload` can write them all again too: systemd marks every realized unit's cgroup settings invalid as
//! it deserializes the unit at a reload (`unit_deserialize_state`), and writes them at its next turn. In the pods
//! test (guest, systemd 257) the reload right after an Update put `memory.oom.group` back to 0 in four runs of four,
//! and the broker's I/O weight back to `default 100` (docs/BENCHMARKS.md); `systemd-run` scopes with the same
//! files written by hand kept them, for reasons not found. So what the cgroup holds without a unit property, and
//! systemd has a setting for, is given to the unit as the shim's runtime drop-ins ([`Scope::write_drop_ins`]):
//! `OOMPolicy=kill` for kubelet's group OOM kill (runc sets it at the unit's start since opencontainers/cgroups'
//! 2025 change; libcgroups starts the unit with a fixed set, and systemd refuses it on a running scope),
//! `IOWeight=` for the broker's I/O weight or the spec's block I/O weight, `CPUWeight=` for the broker's CPU weight
//! (libcgroups' systemd manager has no I/O weight; the broker's CPU weight changes often, a file write is cheaper
//! than two D-Bus round trips). systemd reads them at its next reload, and from then on writes these values itself.
//! With `OOMPolicy=kill` an OOM kill fails the unit; the same drop-in's `CollectMode=inactive-or-failed` lets
//! systemd remove it at once (runc resets it at its Delete) instead of listing it failed. The shim removes its
//! drop-ins at Delete ([`Scope::forget`]).
//!
//! Blocking (a D-Bus round trip per call): call from tokio's blocking pool.

use std::sync::{Arc, Mutex};

use libcgroups::common::{CgroupManager, ControllerOpt};
use oci_spec::runtime::LinuxResources;
use predictive_api::types::{Action, Directive};
use runtime_hooks::ContainerCgroup;

/// How long libcgroups waits for a process to appear in a unit's cgroup (unused here: the unit exists).
const WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// Where the system manager keeps its transient units and their runtime drop-ins.
const TRANSIENT_DIR: &str = "/run/systemd/transient";
/// The shim's drop-ins in a unit's `<unit>.d`, one per setting ([`Scope::write_drop_ins`]). systemd names the
/// drop-ins of a property change `50-<Property>.conf` (in `/run/systemd/system.control`); these sort after them,
/// so a reload reads the shim's value of a setting last.
const OOM_POLICY_DROP_IN: &str = "50-predictive-OOMPolicy.conf";
const IO_WEIGHT_DROP_IN: &str = "50-predictive-IOWeight.conf";
const CPU_WEIGHT_DROP_IN: &str = "50-predictive-CPUWeight.conf";
const DROP_INS: [&str; 3] = [OOM_POLICY_DROP_IN, IO_WEIGHT_DROP_IN, CPU_WEIGHT_DROP_IN];
/// The first lines of each: nothing of the request's in them (the unit's own file names the container).
const DROP_IN_HEADER: &str = "# Written by containerd-shim-predictive-v2: what the container's cgroup holds that the unit was not\n\
     # started with, for systemd to write itself when it applies the unit's settings again (a daemon-reload).\n\
     # Removed at the container's Delete.\n";

/// A systemd-owned container cgroup. Clones share what is kept.
#[derive(Debug, Clone)]
pub struct Scope {
    /// The spec's `slice:prefix:name`.
    cgroups_path: String,
    /// The container id (libcgroups names the unit's description after it).
    container: String,
    /// The unit's name (`<prefix>-<name>.scope`), as the placement found it; `None` for one that is no scope.
    unit: Option<String>,
    /// What the cgroup holds that the unit has no property for.
    kept: Arc<Mutex<Kept>>,
    /// The spec asks for `memory.oom.group` 1 (kubelet on cgroup v2): the unit's `OOMPolicy=kill`.
    oom_kill: bool,
    /// Where systemd keeps transient units ([`TRANSIENT_DIR`]; a temporary directory in unit tests).
    transient: std::path::PathBuf,
}

/// What a change of the unit's properties would undo in the cgroup, to be written again after it.
#[derive(Debug, Default)]
struct Kept {
    /// The spec's resources systemd has no property for, one kind per piece, as the Updates since changed them.
    pieces: Vec<LinuxResources>,
    /// The broker's last CPU weight and I/O weight directives (written into the cgroup only), one of each.
    directives: Vec<Action>,
    /// The text of each of [`DROP_INS`] as last written (`None`: not there).
    written: [Option<String>; 3],
}

/// Which kind of resource a piece of [`crate::fidelity::not_for_systemd`] is (each piece holds one): a later
/// piece of the same kind replaces it.
fn kind(piece: &LinuxResources) -> String {
    if piece.cpu().is_some() {
        "cpu".into()
    } else if piece.block_io().is_some() {
        "blkio".into()
    } else if piece.hugepage_limits().is_some() {
        "hugepages".into()
    } else {
        piece
            .unified()
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .next()
            .unwrap_or_default()
    }
}

impl Kept {
    /// Takes in the pieces of `resources` systemd has no property for; a CPU weight or a block I/O weight in
    /// them (a user's Update) replaces the broker's last one of that kind, as its write into the cgroup would.
    fn take(&mut self, resources: &LinuxResources) {
        for piece in crate::fidelity::not_for_systemd(resources) {
            let k = kind(&piece);
            self.pieces.retain(|p| kind(p) != k);
            self.pieces.push(piece);
        }
        let shares = resources.cpu().as_ref().and_then(|c| c.shares()).is_some();
        let weight = resources
            .block_io()
            .as_ref()
            .and_then(|b| b.weight())
            .is_some();
        self.directives.retain(|a| match a {
            Action::SetCpuWeight { .. } => !shares,
            Action::SetIoWeight { .. } => !weight,
            _ => true,
        });
    }

    /// Keeps the broker's `action` if it is a weight (the last of each kind).
    fn keep(&mut self, action: &Action) {
        if !matches!(
            action,
            Action::SetCpuWeight { .. } | Action::SetIoWeight { .. }
        ) {
            return;
        }
        self.directives
            .retain(|a| std::mem::discriminant(a) != std::mem::discriminant(action));
        self.directives.push(action.clone());
    }

    /// The v2 `io.weight` the cgroup holds without a unit property: the broker's last I/O weight, else the spec's
    /// (or an Update's) block I/O weight.
    fn io_weight(&self) -> Option<u64> {
        let broker = self.directives.iter().find_map(|a| match a {
            Action::SetIoWeight { weight, .. } => Some(*weight),
            _ => None,
        });
        broker
            .or_else(|| {
                self.pieces
                    .iter()
                    .find_map(|p| p.block_io().as_ref().and_then(|b| b.weight()))
            })
            .map(runtime_hooks::actuate::blkio_weight_to_io_weight)
    }

    /// The v2 `cpu.weight` of the broker's last CPU weight directive (the spec's and Updates' CPU weight is a unit
    /// property already).
    fn cpu_weight(&self) -> Option<u64> {
        self.directives.iter().find_map(|a| match a {
            Action::SetCpuWeight { shares } => {
                Some(runtime_hooks::actuate::shares_to_weight(*shares))
            }
            _ => None,
        })
    }

    /// What each of [`DROP_INS`] should say now (`None`: no such file), for a spec with the OOM group `oom_kill`.
    fn drop_ins(&self, oom_kill: bool) -> [Option<String>; 3] {
        [
            // With the OOM group an OOM kill fails the unit: collected at once, as runc resets it at its Delete.
            oom_kill.then(|| {
                format!("{DROP_IN_HEADER}[Unit]\nCollectMode=inactive-or-failed\n[Scope]\nOOMPolicy=kill\n")
            }),
            self.io_weight()
                .map(|w| format!("{DROP_IN_HEADER}[Scope]\nIOWeight={w}\n")),
            self.cpu_weight()
                .map(|w| format!("{DROP_IN_HEADER}[Scope]\nCPUWeight={w}\n")),
        ]
    }

    /// Writes what is kept into `cg`; what could not be written, in words.
    fn rewrite(&self, cg: &ContainerCgroup, container: &str) -> Vec<String> {
        let mut problems = crate::fidelity::write_pieces(cg, &self.pieces);
        for action in &self.directives {
            let d = Directive {
                container_id: container.to_owned(),
                action: action.clone(),
                reason: "kept across a change of the unit's properties".into(),
                applied: true,
                old_value: None,
            };
            if let Err(e) = predictive_api::apply::apply(&d, cg) {
                problems.push(format!("{action:?}: {e}"));
            }
        }
        problems
    }
}

/// Why the unit could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// Connecting to systemd over D-Bus, or naming the unit, failed.
    #[error("reaching systemd for the unit of {cgroups_path}")]
    Connect {
        /// The spec's path.
        cgroups_path: String,
        /// libcgroups' error.
        #[source]
        source: libcgroups::systemd::manager::SystemdManagerError,
    },
    /// systemd refused the properties.
    #[error("setting the unit properties of {cgroups_path}")]
    Apply {
        /// The spec's path.
        cgroups_path: String,
        /// libcgroups' error.
        #[source]
        source: libcgroups::systemd::manager::SystemdManagerError,
    },
}

impl Scope {
    /// The unit `unit` (the placement's, `runtime_hooks::placement::Placement::unit`) of a container created with
    /// the systemd driver from `cgroups_path` (`slice:prefix:name`), whose spec asks for `resources`.
    pub fn new(
        cgroups_path: &str,
        unit: Option<&str>,
        container: &str,
        resources: Option<&LinuxResources>,
    ) -> Scope {
        let mut kept = Kept::default();
        if let Some(r) = resources {
            kept.take(r);
        }
        let oom_kill = resources
            .and_then(|r| r.unified().as_ref())
            .and_then(|u| u.get("memory.oom.group"))
            .is_some_and(|v| v.trim() == "1");
        // It names a file below: a scope's plain name only.
        let unit = unit
            .filter(|u| u.ends_with(".scope") && !u.contains('/') && !u.starts_with('.'))
            .map(str::to_owned);
        Scope {
            cgroups_path: cgroups_path.to_owned(),
            container: container.to_owned(),
            unit,
            kept: Arc::new(Mutex::new(kept)),
            oom_kill,
            transient: TRANSIENT_DIR.into(),
        }
    }

    /// Whether [`Scope::write_drop_ins`] has anything to write or remove.
    pub fn drop_ins_pending(&self) -> bool {
        let kept = self.kept();
        self.unit.is_some() && kept.drop_ins(self.oom_kill) != kept.written
    }

    /// Brings the shim's runtime drop-ins of the container's transient unit in line with what the cgroup holds
    /// without a unit property (see the module's doc): `OOMPolicy=kill` for a spec with `memory.oom.group` 1,
    /// `IOWeight=` for the broker's I/O weight or the spec's block I/O weight, `CPUWeight=` for the broker's CPU
    /// weight; a file whose setting is gone is removed. systemd reads them at its next reload and from then on
    /// writes these values itself. Only files that change are touched, each atomically (a reload reads a whole
    /// file or none); nothing for a unit systemd has no transient file for.
    pub fn write_drop_ins(&self) -> std::io::Result<()> {
        let transient = &self.transient;
        let Some(unit) = self.unit.as_deref() else {
            return Ok(());
        };
        let mut kept = self.kept();
        let want = kept.drop_ins(self.oom_kill);
        if want == kept.written || !transient.join(unit).is_file() {
            return Ok(());
        }
        let dir = transient.join(format!("{unit}.d"));
        for (i, name) in DROP_INS.iter().enumerate() {
            if want[i] == kept.written[i] {
                continue;
            }
            match &want[i] {
                Some(text) => {
                    std::fs::create_dir_all(&dir)?;
                    let tmp = dir.join(format!(".{name}.tmp"));
                    std::fs::write(&tmp, text)?;
                    std::fs::rename(&tmp, dir.join(name))?;
                }
                None => remove_if_there(&dir.join(name))?,
            }
            kept.written[i] = want[i].clone();
        }
        Ok(())
    }

    /// At Delete: removes the shim's drop-ins, and the unit's drop-in directory when that leaves it empty (systemd
    /// removes the drop-ins it has read with the unit, not one it never read).
    pub fn forget(&self) -> std::io::Result<()> {
        let transient = &self.transient;
        let Some(unit) = self.unit.as_deref() else {
            return Ok(());
        };
        let mut kept = self.kept();
        if kept.written.iter().all(Option::is_none) {
            return Ok(());
        }
        let dir = transient.join(format!("{unit}.d"));
        for (i, name) in DROP_INS.iter().enumerate() {
            if kept.written[i].is_some() {
                remove_if_there(&dir.join(name))?;
                kept.written[i] = None;
            }
        }
        // Only when empty: systemd's own drop-ins of a unit it still has stay.
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the broker's directive `action`, applied to the cgroup only, for [`Scope::sync`] to write again, and
    /// a weight in the unit's drop-ins for systemd's next reload ([`Scope::write_drop_ins`]).
    pub fn keep(&self, action: &Action) -> std::io::Result<()> {
        self.kept().keep(action);
        self.write_drop_ins()
    }

    /// Sets the unit's properties for the limits in `resources` (CPU quota and weight, memory max/high/low, pids;
    /// `unified` entries such as `memory.high` included; fields left out are left as they are), then writes into
    /// the container's cgroup `cg` again what systemd has just put back to the unit's values or its defaults (see
    /// the module's doc). What of that could not be written is returned, in words, for the caller to log.
    pub fn sync(
        &self,
        resources: &LinuxResources,
        cg: &ContainerCgroup,
    ) -> Result<Vec<String>, ScopeError> {
        self.set_properties(resources)?;
        let mut problems = {
            let mut kept = self.kept();
            kept.take(resources);
            kept.rewrite(cg, &self.container)
        };
        // An Update's weights replace the broker's, and its block I/O weight the spec's.
        if let Err(e) = self.write_drop_ins() {
            problems.push(format!("the unit's drop-ins: {e}"));
        }
        Ok(problems)
    }

    fn set_properties(&self, resources: &LinuxResources) -> Result<(), ScopeError> {
        let manager = libcgroups::systemd::manager::Manager::new(
            std::path::PathBuf::from(runtime_hooks::discovery::DEFAULT_CGROUP_ROOT),
            std::path::PathBuf::from(&self.cgroups_path),
            self.container.clone(),
            true,
            WAIT,
        )
        .map_err(|source| ScopeError::Connect {
            cgroups_path: self.cgroups_path.clone(),
            source,
        })?;
        let opt = ControllerOpt {
            resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        };
        manager.apply(&opt).map_err(|source| ScopeError::Apply {
            cgroups_path: self.cgroups_path.clone(),
            source,
        })?;
        // systemd answers SetUnitProperties before it writes the cgroup files (its manager loop realizes the
        // unit's cgroup at its next turn), so files written now could be overwritten after. It takes each turn's
        // queued cgroup work before the next D-Bus message: one more round trip on the connection (libcgroups'
        // apply asks for systemd's version first, and with no resources sets nothing) orders what follows after
        // systemd's writes. Without it the guest's scope had `memory.oom.group` 0 after an Update.
        let none = LinuxResources::default();
        let barrier = ControllerOpt {
            resources: &none,
            ..opt
        };
        manager.apply(&barrier).map_err(|source| ScopeError::Apply {
            cgroups_path: self.cgroups_path.clone(),
            source,
        })
    }
}

/// Removes `path`; one that is gone already is no error.
fn remove_if_there(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBlockIo, LinuxCpu};
    use runtime_hooks::CgroupDirs;
    use runtime_hooks::actuate::{blkio_weight_to_io_weight, shares_to_weight};

    /// A fake cgroup2 directory with the files a property change makes systemd write, at systemd's defaults.
    fn fake() -> (tempfile::TempDir, ContainerCgroup) {
        let dir = tempfile::tempdir().expect("tempdir");
        reset(dir.path());
        let cg = ContainerCgroup::new(
            CgroupDirs::V2(runtime_hooks::v2::Dirs {
                dir: dir.path().to_owned(),
            }),
            dir.path().join("proc"),
        );
        (dir, cg)
    }

    /// What systemd writes at a change of a unit without properties for these files.
    fn reset(dir: &std::path::Path) {
        for (f, v) in [
            ("memory.oom.group", "0\n"),
            ("io.weight", "default 100\n"),
            ("cpu.weight", "100\n"),
        ] {
            std::fs::write(dir.join(f), v).expect("fixture");
        }
    }

    fn read(dir: &std::path::Path, f: &str) -> String {
        std::fs::read_to_string(dir.join(f))
            .expect("read")
            .trim()
            .to_owned()
    }

    /// A spec's resources as kubelet on v2 sends them: a CPU weight systemd has a property for, the OOM group and
    /// a block I/O weight it has none for.
    fn kubelet_like(shares: u64, blkio: u16) -> LinuxResources {
        let mut r = LinuxResources::default();
        r.set_cpu(Some(LinuxCpu::default().set_shares(Some(shares)).clone()))
            .set_block_io(Some(
                LinuxBlockIo::default().set_weight(Some(blkio)).clone(),
            ))
            .set_unified(Some(
                [
                    ("memory.oom.group".to_owned(), "1".to_owned()),
                    ("memory.high".to_owned(), "104857600".to_owned()),
                ]
                .into(),
            ));
        r
    }

    #[test]
    fn what_the_unit_has_no_property_for_is_written_again_broker_weights_last() {
        let (dir, cg) = fake();
        let mut kept = Kept::default();
        kept.take(&kubelet_like(512, 500));
        // memory.high has a property (MemoryHigh): not kept; CPU shares neither.
        assert_eq!(kept.pieces.len(), 2, "{:?}", kept.pieces);
        kept.keep(&Action::SetCpuWeight { shares: 2048 });
        kept.keep(&Action::SetIoWeight {
            weight: 300,
            ioprio: None,
        });
        kept.keep(&Action::SetIoWeight {
            weight: 200,
            ioprio: None,
        });
        kept.keep(&Action::SetCpu { cores: Some(1.0) });
        assert_eq!(
            kept.directives.len(),
            2,
            "one of each weight: {:?}",
            kept.directives
        );

        assert!(kept.rewrite(&cg, "c").is_empty());
        assert_eq!(read(dir.path(), "memory.oom.group"), "1");
        assert_eq!(
            read(dir.path(), "cpu.weight"),
            shares_to_weight(2048).to_string()
        );
        // The spec's block I/O weight first, the broker's last one over it.
        assert_eq!(
            read(dir.path(), "io.weight"),
            format!("default {}", blkio_weight_to_io_weight(200))
        );
    }

    #[test]
    fn an_updates_weights_replace_the_brokers_and_its_pieces_the_specs() {
        let (dir, cg) = fake();
        let mut kept = Kept::default();
        kept.take(&kubelet_like(512, 500));
        kept.keep(&Action::SetCpuWeight { shares: 2048 });
        kept.keep(&Action::SetIoWeight {
            weight: 300,
            ioprio: None,
        });
        // A user's Update with both weights: its own are in force now, the broker's are not written again.
        let mut update = LinuxResources::default();
        update
            .set_cpu(Some(LinuxCpu::default().set_shares(Some(256)).clone()))
            .set_block_io(Some(LinuxBlockIo::default().set_weight(Some(100)).clone()));
        kept.take(&update);
        assert!(kept.directives.is_empty(), "{:?}", kept.directives);
        assert_eq!(
            kept.pieces.len(),
            2,
            "one block I/O piece, the OOM group: {:?}",
            kept.pieces
        );
        assert!(kept.rewrite(&cg, "c").is_empty());
        assert_eq!(read(dir.path(), "memory.oom.group"), "1");
        assert_eq!(
            read(dir.path(), "io.weight"),
            format!("default {}", blkio_weight_to_io_weight(100))
        );
        // The CPU weight has a unit property (CPUWeight): systemd writes it, nothing here does.
        assert_eq!(read(dir.path(), "cpu.weight"), "100");
    }

    #[test]
    fn a_file_that_cannot_be_written_is_reported_and_the_rest_still_written() {
        let (dir, cg) = fake();
        std::fs::remove_file(dir.path().join("io.weight")).expect("fixture");
        let mut kept = Kept::default();
        kept.take(&kubelet_like(512, 500));
        let problems = kept.rewrite(&cg, "c");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(read(dir.path(), "memory.oom.group"), "1");
    }

    #[test]
    fn clones_of_a_scope_share_what_is_kept() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let scope = scope_in(tmp.path(), "p-c.scope", &kubelet_like(512, 500));
        let other = scope.clone();
        other
            .keep(&Action::SetCpuWeight { shares: 2048 })
            .expect("keeping");
        assert_eq!(scope.kept().directives.len(), 1);
        // What was written is shared too: nothing left for the other clone to write.
        assert!(!scope.drop_ins_pending());
        assert_eq!(scope.kept().pieces.len(), 2);
    }

    fn with_oom_group(value: &str) -> LinuxResources {
        let mut r = LinuxResources::default();
        r.set_unified(Some(
            [("memory.oom.group".to_owned(), value.to_owned())].into(),
        ));
        r
    }

    /// A scope of unit `unit` for a spec with `resources`, whose transient units are in `tmp` (a transient file
    /// for `unit` there).
    fn scope_in(tmp: &std::path::Path, unit: &str, resources: &LinuxResources) -> Scope {
        std::fs::write(tmp.join(unit), "[Scope]\n").expect("the unit's transient file");
        let mut scope = Scope::new(
            "kubepods-pod1.slice:cri-containerd:c1",
            Some(unit),
            "c1",
            Some(resources),
        );
        scope.transient = tmp.to_owned();
        scope
    }

    /// The settings of each of the shim's drop-ins in `dir` (comment lines left out).
    fn drop_ins(dir: &std::path::Path) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = std::fs::read_dir(dir)
            .map(|d| {
                d.map(|e| {
                    let e = e.expect("entry");
                    let text = std::fs::read_to_string(e.path()).expect("a drop-in");
                    let lines = text
                        .lines()
                        .filter(|l| !l.starts_with('#'))
                        .map(str::to_owned)
                        .collect();
                    (e.file_name().to_string_lossy().into_owned(), lines)
                })
                .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }

    /// kubelet's `memory.oom.group` 1 becomes the transient unit's `OOMPolicy=kill` drop-in (and the failed unit
    /// an OOM kill leaves is collected); Delete removes the drop-in, and the directory only once it is empty.
    #[test]
    fn the_oom_group_becomes_the_units_oom_policy_until_delete() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let unit = "cri-containerd-c1.scope";
        let scope = scope_in(tmp.path(), unit, &with_oom_group("1"));
        assert!(scope.drop_ins_pending());
        scope.write_drop_ins().expect("writing");
        assert!(!scope.drop_ins_pending());
        let dir = tmp.path().join(format!("{unit}.d"));
        assert_eq!(
            drop_ins(&dir),
            [(
                OOM_POLICY_DROP_IN.to_owned(),
                vec![
                    "[Unit]".to_owned(),
                    "CollectMode=inactive-or-failed".to_owned(),
                    "[Scope]".to_owned(),
                    "OOMPolicy=kill".to_owned()
                ]
            )],
            "one drop-in, no temporary file left"
        );
        // systemd's own drop-in of a property change stays, and so does the directory.
        std::fs::write(dir.join("50-MemoryMax.conf"), "[Scope]\nMemoryMax=1\n").expect("systemd's");
        scope.forget().expect("forgetting");
        assert!(!dir.join(OOM_POLICY_DROP_IN).exists());
        assert!(dir.join("50-MemoryMax.conf").exists());
        std::fs::remove_file(dir.join("50-MemoryMax.conf")).expect("rm");
        scope.write_drop_ins().expect("writing again");
        // Gone already (systemd removed a drop-in it read with the unit): not an error.
        std::fs::remove_file(dir.join(OOM_POLICY_DROP_IN)).expect("rm");
        scope.forget().expect("forgetting what is gone");
        assert!(!dir.exists(), "the emptied drop-in directory is left");
    }

    /// The broker's I/O and CPU weights, kept in the cgroup only, become the unit's `IOWeight=` and `CPUWeight=`
    /// drop-ins (the spec's block I/O weight before any); an Update's weights replace them, and Delete removes
    /// them all.
    #[test]
    fn the_weights_the_cgroup_holds_become_the_units_drop_ins() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_cgdir, cg) = fake();
        let unit = "cri-containerd-c1.scope";
        let dir = tmp.path().join(format!("{unit}.d"));
        let scope = scope_in(tmp.path(), unit, &kubelet_like(512, 500));
        scope.write_drop_ins().expect("writing");
        let io = |w: u16| format!("IOWeight={}", blkio_weight_to_io_weight(w));
        let settings = |dir: &std::path::Path| -> Vec<String> {
            drop_ins(dir)
                .into_iter()
                .map(|(name, lines)| {
                    format!("{name}: {}", lines.last().cloned().unwrap_or_default())
                })
                .collect()
        };
        assert_eq!(
            settings(&dir),
            [
                format!("{IO_WEIGHT_DROP_IN}: {}", io(500)),
                format!("{OOM_POLICY_DROP_IN}: OOMPolicy=kill"),
            ]
        );
        scope
            .keep(&Action::SetIoWeight {
                weight: 200,
                ioprio: None,
            })
            .expect("keeping");
        scope
            .keep(&Action::SetCpuWeight { shares: 2048 })
            .expect("keeping");
        // A directive with a unit property of its own is no drop-in's.
        scope
            .keep(&Action::SetCpu { cores: Some(1.0) })
            .expect("keeping");
        assert_eq!(
            settings(&dir),
            [
                format!("{CPU_WEIGHT_DROP_IN}: CPUWeight={}", shares_to_weight(2048)),
                format!("{IO_WEIGHT_DROP_IN}: {}", io(200)),
                format!("{OOM_POLICY_DROP_IN}: OOMPolicy=kill"),
            ]
        );
        // A user's Update with both weights: its CPU weight is the unit's property now, its block I/O weight the
        // drop-in's. (The unit's properties cannot be set here: the test stands in for `Scope::sync`'s part.)
        let mut update = LinuxResources::default();
        update
            .set_cpu(Some(LinuxCpu::default().set_shares(Some(256)).clone()))
            .set_block_io(Some(LinuxBlockIo::default().set_weight(Some(100)).clone()));
        scope.kept().take(&update);
        assert!(scope.kept().rewrite(&cg, "c1").is_empty());
        scope.write_drop_ins().expect("writing");
        assert_eq!(
            settings(&dir),
            [
                format!("{IO_WEIGHT_DROP_IN}: {}", io(100)),
                format!("{OOM_POLICY_DROP_IN}: OOMPolicy=kill"),
            ]
        );
        scope.forget().expect("forgetting");
        assert!(!dir.exists(), "drop-ins left: {:?}", drop_ins(&dir));
    }

    /// No drop-in for a spec without the OOM group or a weight, for a unit with no transient file, or for a slice.
    #[test]
    fn no_drop_ins_without_a_setting_or_a_transient_scope() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::write(tmp.path().join("cri-containerd-c1.scope"), "").expect("unit");
        for (path, resources) in [
            ("pod.slice:cri-containerd:c1", Some(with_oom_group("0"))),
            (
                "pod.slice:cri-containerd:c1",
                Some(LinuxResources::default()),
            ),
            ("pod.slice:cri-containerd:c1", None),
            ("pod.slice:other:c1", Some(with_oom_group("1"))),
            (
                "pod.slice:cri-containerd:c1.slice",
                Some(with_oom_group("1")),
            ),
            ("malformed", Some(with_oom_group("1"))),
        ] {
            // The unit as the shim's Create finds it.
            let host = runtime_hooks::placement::SystemdHost {
                booted: true,
                unified: true,
            };
            let unit = runtime_hooks::placement::place(path, true, host)
                .ok()
                .and_then(|p| p.unit);
            let mut scope = Scope::new(path, unit.as_deref(), "c1", resources.as_ref());
            scope.transient = tmp.path().to_owned();
            scope.write_drop_ins().expect("writing nothing");
            let entries: Vec<_> = std::fs::read_dir(tmp.path())
                .expect("dir")
                .map(|e| e.expect("entry").file_name())
                .collect();
            assert_eq!(entries.len(), 1, "{path} {resources:?}: {entries:?}");
        }
        assert!(
            !Scope::new(
                "a:b/../x:c",
                Some("b/../x-c.scope"),
                "c",
                Some(&with_oom_group("1"))
            )
            .drop_ins_pending()
        );
    }
}
