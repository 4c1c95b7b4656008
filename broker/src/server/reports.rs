//! The broker's side of event-driven monitoring: the heartbeat it asks of each shim (a shim whose container is
//! idle reports only on change and at this period; `shim/src/predict.rs`, `runtime_hooks::pacing`), and grouped
//! reports: the entries of one [`Reports`] batch (a shim's containers due at one wake-up) are applied under one
//! lock and their records queued as one journal submission, so the batch costs one commit.

use std::collections::HashSet;

use predictive_api::wire::{
    ErrorCode, ErrorReply, Registered, ReportOutcome, ReportOutcomes, Reports,
};

use super::{Broker, MAX_CPU_READINGS};

impl Broker {
    /// Tells the shim how often to report a container whose use is flat: half of `stale_after_ms`, so one lost
    /// heartbeat still leaves the task fresh for the controller (its leases kept, its usage trusted); to a shim
    /// that takes pokes, `idle_heartbeat_ms` (`pokes.rs`).
    pub(super) fn with_heartbeat(&self, mut r: Registered, takes_pokes: bool) -> Registered {
        let (hb, _) = super::pokes::heartbeat(
            self.lock().controller.config(),
            self.cfg.tick_ms,
            takes_pokes,
        );
        r.heartbeat_ms = Some(hb);
        r
    }

    /// Applies a batch (its size checked by `validate::request`): each entry is checked as a single Report is
    /// and answered on its own (an entry that fails, or names a container an earlier entry named, gets its error;
    /// the others are applied), all under one lock, their records queued together.
    pub(super) fn reports(
        &self,
        batch: Reports,
        peer: Option<&std::sync::Arc<super::pokes::Peer>>,
    ) -> ReportOutcomes {
        self.tracker.batched_reports(batch.reports.len());
        let mut records = Vec::new();
        let mut samples = Vec::new();
        let mut seen = HashSet::with_capacity(batch.reports.len());
        let mut guard = self.lock();
        let results = batch
            .reports
            .into_iter()
            .enumerate()
            .map(|(i, rep)| {
                let container_id = rep.container_id.clone();
                let checked = crate::validate::report(&rep)
                    .map_err(|e| ErrorReply::new(e.code, format!("reports[{i}]: {}", e.message)))
                    .and_then(|()| {
                        if seen.insert(container_id.clone()) {
                            Ok(())
                        } else {
                            Err(ErrorReply::new(
                                ErrorCode::InvalidRequest,
                                format!(
                                    "reports[{i}]: container {} is reported twice in one batch",
                                    crate::validate::shown(&container_id, 64)
                                ),
                            ))
                        }
                    });
                let r = checked.and_then(|()| {
                    self.take_report(&mut guard, rep, peer, &mut records, &mut samples)
                });
                match r {
                    Ok(d) => ReportOutcome {
                        container_id,
                        directives: d.directives,
                        error: None,
                    },
                    Err(e) => ReportOutcome {
                        container_id,
                        directives: Vec::new(),
                        error: Some(e),
                    },
                }
            })
            .collect();
        drop(guard);
        if !records.is_empty() || !samples.is_empty() {
            self.record_decisions(records, samples);
        }
        ReportOutcomes { results }
    }
}

/// The heartbeat for a staleness bound.
pub(super) fn heartbeat_ms(stale_after_ms: u64) -> u64 {
    stale_after_ms / 2
}

/// Adds the CPU use of one reported interval of `dt_s` seconds to a run's readings, once per tick it spans (at
/// most 60): an idle container reports every few ticks, and its quiet seconds must weigh in the run's
/// percentiles as much as a busy one's.
pub(super) fn push_readings(readings: &mut Vec<f64>, cores: f64, dt_s: f64, tick_ms: u64) {
    let ticks = (dt_s * 1000.0 / tick_ms.max(1) as f64)
        .round()
        .clamp(1.0, 60.0) as usize;
    let room = MAX_CPU_READINGS.saturating_sub(readings.len());
    readings.extend(std::iter::repeat_n(cores, ticks.min(room)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_interval_weighs_as_many_ticks_as_it_spans() {
        let mut r = Vec::new();
        push_readings(&mut r, 0.5, 1.0, 1000);
        push_readings(&mut r, 0.0, 3.0, 1000);
        push_readings(&mut r, 0.2, 0.4, 1000);
        assert_eq!(r, vec![0.5, 0.0, 0.0, 0.0, 0.2]);
        push_readings(&mut r, 0.0, 3600.0, 1000);
        assert_eq!(r.len(), 65, "a long gap counts 60 ticks at most");
        let mut full = vec![0.0; MAX_CPU_READINGS - 1];
        push_readings(&mut full, 1.0, 5.0, 1000);
        assert_eq!(full.len(), MAX_CPU_READINGS);
    }

    #[test]
    fn a_heartbeat_lost_still_leaves_the_task_fresh() {
        for stale in [1_000, 5_000, 60_000] {
            let hb = heartbeat_ms(stale);
            assert!(hb > 0 && 2 * hb <= stale, "{stale}: {hb}");
        }
    }
}
