//! Who froze a container, and what thaws it: the user's pause (Task.Pause) and the broker's freeze (directive
//! Freeze under memory pressure) hold the same cgroup freezer, and a container runs only when neither holds it.
//!
//! - The user's pause behaves as under runc: Kill thaws it for SIGKILL only, Exec fails at once (`task.rs`), and a
//!   broker Thaw leaves it paused. Resume ends it; a broker freeze still in force is then put back.
//! - The broker's freeze is invisible to the task's owner (the task reports RUNNING), so nothing the owner does
//!   may hang on it: a signal to the container, an exec into it and a delete of it thaw it first ([`Freezer::hold`]).
//!   A signal to the init (or to all processes: Kubernetes' StopContainer, `docker stop`, `ctr t kill`) and a
//!   force-delete mark the container *stopping* even when it is not frozen; an exec, or a signal to an exec, does
//!   when it had to thaw. From then on
//!   the shim refuses every Freeze for it, and every Report tells the broker (`stopping`, docs/BROKER-API.md),
//!   which never pauses it again.
//! - While a [`FreezeHold`] lives (an exec or a start being set up) no Freeze is applied: a process frozen half-way
//!   through libcontainer's exec would hang the request.
//!
//! The broker's Freeze runs on the monitor's blocking thread and waits (up to runtime-hooks' `FREEZE_TIMEOUT`) for
//! the kernel; the lock is not held during that wait, so a Kill never waits for a freeze: it marks the container
//! stopping and thaws, and the monitor thaws again if its freeze completes afterwards.

use std::sync::OnceLock;

use predictive_api::types::{Action, Directive};
use runtime_hooks::{ActuateError, ContainerCgroup};
use tokio::sync::{Mutex, MutexGuard, Notify};

#[derive(Debug, Default)]
struct State {
    /// The broker's Freeze is in force (or being applied).
    by_broker: bool,
    /// The user paused the container.
    by_user: bool,
    /// Why the container is stopping; never frozen by the broker again once set.
    stopping: Option<String>,
}

/// The freezer state of one container with a broker (mode observe or enforce).
#[derive(Debug, Default)]
pub struct Freezer {
    state: Mutex<State>,
    cgroup: OnceLock<ContainerCgroup>,
    /// Wakes the monitor to report at once (the container just became stopping).
    kick: Notify,
}

/// Keeps the broker from freezing the container until dropped.
pub struct FreezeHold<'a> {
    _state: MutexGuard<'a, State>,
}

impl Freezer {
    /// The container's cgroup, once created.
    pub fn set_cgroup(&self, cg: ContainerCgroup) {
        let _ = self.cgroup.set(cg);
    }

    /// Resolves when the monitor should report now rather than at its next tick.
    pub async fn kicked(&self) {
        self.kick.notified().await
    }

    /// Why the container is stopping, if it is. Blocking: call from the monitor's thread.
    pub fn stopping_blocking(&self) -> Option<String> {
        self.state.blocking_lock().stopping.clone()
    }

    /// Neither frozen by the broker nor stopping, as far as a look that must not block can tell (`false` while
    /// the state is held).
    pub fn at_rest(&self) -> bool {
        self.state
            .try_lock()
            .is_ok_and(|s| !s.by_broker && s.stopping.is_none())
    }

    /// Whether the broker's freeze is in force. Blocking: call from a blocking thread.
    pub fn frozen_by_broker_blocking(&self) -> bool {
        self.state.blocking_lock().by_broker
    }

    /// Before acting on the container (`why`: "signal 15", "exec e1", "delete"): thaws a broker freeze in force
    /// and, when it did or `stop` is set, marks the container stopping. The broker cannot freeze it again until
    /// the returned hold is dropped (nor ever, once stopping).
    pub async fn hold(&self, why: &str, stop: bool) -> FreezeHold<'_> {
        let mut st = self.state.lock().await;
        if (stop || st.by_broker) && st.stopping.is_none() {
            st.stopping = Some(why.to_owned());
            tracing::info!(
                reason = why,
                "stopping: the broker will not pause this container again"
            );
            self.kick.notify_one();
        }
        if st.by_broker {
            st.by_broker = false;
            if st.by_user {
                tracing::debug!(reason = why, "broker freeze ended; the user's pause stays");
            } else if let Some(cg) = self.cgroup.get().cloned() {
                let result = tokio::task::spawn_blocking(move || cg.thaw()).await;
                match result {
                    Ok(Ok(())) => tracing::info!(reason = why, "thawed the broker's freeze first"),
                    Ok(Err(e)) => tracing::warn!(reason = why, "thawing the broker's freeze: {e}"),
                    Err(e) => tracing::warn!(reason = why, "thawing the broker's freeze: {e}"),
                }
            }
        }
        FreezeHold { _state: st }
    }

    /// The user paused (`true`) or resumed the container. `change` is the libcontainer pause or resume; after a
    /// resume a broker freeze still in force (not stopping) is put back.
    pub async fn by_user<T, E>(
        &self,
        paused: bool,
        change: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let mut st = self.state.lock().await;
        let out = change.await?;
        st.by_user = paused;
        if !paused
            && st.by_broker
            && st.stopping.is_none()
            && let Some(cg) = self.cgroup.get().cloned()
        {
            match tokio::task::spawn_blocking(move || cg.freeze()).await {
                Ok(Ok(())) => {
                    tracing::info!("resumed by the user; the broker's freeze is put back")
                }
                Ok(Err(e)) => {
                    st.by_broker = false;
                    tracing::warn!("putting the broker's freeze back after a resume: {e}")
                }
                Err(e) => tracing::warn!("putting the broker's freeze back after a resume: {e}"),
            }
        }
        Ok(out)
    }

    /// Applies the broker's Freeze or Thaw (any other directive: `apply` as is). Blocking: the monitor's thread.
    /// `Ok(false)`: nothing was written (stopping, held, or the user's pause stays).
    pub fn apply_broker(
        &self,
        d: &Directive,
        cg: &ContainerCgroup,
        apply: impl Fn(&Directive, &ContainerCgroup) -> Result<bool, ActuateError>,
    ) -> Result<bool, ActuateError> {
        match d.action {
            Action::Freeze => {
                {
                    let mut st = self.state.blocking_lock();
                    if let Some(why) = &st.stopping {
                        tracing::info!(reason = %d.reason, "broker freeze refused: the container is stopping ({why})");
                        return Ok(false);
                    }
                    st.by_broker = true;
                }
                let result = apply(d, cg);
                let mut st = self.state.blocking_lock();
                if st.stopping.is_some() {
                    // Released while it froze: the release's thaw may have come before the freeze landed.
                    st.by_broker = false;
                    if !st.by_user {
                        let _ = cg.thaw();
                    }
                    return Ok(false);
                }
                if result.is_err() {
                    st.by_broker = false;
                }
                result
            }
            Action::Thaw => {
                let mut st = self.state.blocking_lock();
                st.by_broker = false;
                if st.by_user {
                    tracing::info!(reason = %d.reason, "broker thaw: the user's pause stays");
                    return Ok(false);
                }
                apply(d, cg)
            }
            _ => apply(d, cg),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_hooks::CgroupDirs;

    /// A fake cgroup2 directory whose freezer reports whatever is written to it (the kernel's outcome at once).
    fn fake() -> (tempfile::TempDir, ContainerCgroup) {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cgroup.freeze"), "0\n").expect("fixture");
        std::fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 0\n")
            .expect("fixture");
        let cg = ContainerCgroup::new(
            CgroupDirs::V2(runtime_hooks::v2::Dirs {
                dir: dir.path().to_owned(),
            }),
            dir.path().join("proc"),
        );
        (dir, cg)
    }

    fn directive(action: Action) -> Directive {
        Directive {
            container_id: "c".into(),
            action,
            reason: "test".into(),
            applied: true,
            old_value: None,
        }
    }

    /// Records what would have been written instead of waiting for a fake kernel.
    fn recorder(
        log: &std::sync::Mutex<Vec<String>>,
    ) -> impl Fn(&Directive, &ContainerCgroup) -> Result<bool, ActuateError> + '_ {
        move |d, _| {
            log.lock().expect("log").push(format!("{:?}", d.action));
            Ok(true)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_signal_marks_stopping_and_freezes_are_refused_after() {
        let (_dir, cg) = fake();
        let f = std::sync::Arc::new(Freezer::default());
        f.set_cgroup(cg.clone());
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        {
            let (f, cg, log) = (f.clone(), cg.clone(), log.clone());
            tokio::task::spawn_blocking(move || {
                f.apply_broker(&directive(Action::Freeze), &cg, recorder(&log))
            })
            .await
            .expect("join")
            .expect("freeze");
        }
        assert!(
            tokio::task::spawn_blocking({
                let f = f.clone();
                move || f.frozen_by_broker_blocking()
            })
            .await
            .expect("join")
        );
        drop(f.hold("signal 15", true).await);
        let (stopping, wrote) = {
            let (f, cg, log) = (f.clone(), cg.clone(), log.clone());
            tokio::task::spawn_blocking(move || {
                let wrote = f
                    .apply_broker(&directive(Action::Freeze), &cg, recorder(&log))
                    .expect("refused, not failed");
                (f.stopping_blocking(), wrote)
            })
            .await
            .expect("join")
        };
        assert_eq!(stopping.as_deref(), Some("signal 15"));
        assert!(!wrote, "a stopping container was frozen again");
        assert_eq!(
            log.lock().expect("log").len(),
            1,
            "only the first freeze was written"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exec_marks_stopping_only_when_it_had_to_thaw() {
        let f = Freezer::default();
        drop(f.hold("exec e1", false).await);
        assert!(f.state.lock().await.stopping.is_none());
        f.state.lock().await.by_broker = true;
        drop(f.hold("exec e2", false).await);
        let st = f.state.lock().await;
        assert_eq!(st.stopping.as_deref(), Some("exec e2"));
        assert!(!st.by_broker);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_users_pause_outlives_a_broker_thaw() {
        let (_dir, cg) = fake();
        let f = std::sync::Arc::new(Freezer::default());
        f.by_user(true, async { Ok::<(), ()>(()) })
            .await
            .expect("pause");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let wrote = {
            let (f, log) = (f.clone(), log.clone());
            tokio::task::spawn_blocking(move || {
                f.apply_broker(&directive(Action::Thaw), &cg, recorder(&log))
            })
            .await
            .expect("join")
            .expect("thaw")
        };
        assert!(!wrote);
        assert!(
            log.lock().expect("log").is_empty(),
            "the user's pause was thawed"
        );
    }
}
