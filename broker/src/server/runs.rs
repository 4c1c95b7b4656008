//! Runs of one container told apart when a stalled broker reads its shims' requests out of order. A shim whose
//! call went unanswered in its budget drops that connection and tries again on a new one (its monitor registers
//! again, with `adopt`, every tick it is not registered; its Delete sends the Finish), so when the broker goes on
//! it may read a container's Finish before its Register, or a retry of its Register after its Finish. A run is
//! named by its shim's [`Register::created_ns`] (when the Create was taken, on the host's monotonic clock); an
//! older shim names none and its runs are told apart by arrival alone, as before.
//!
//! [`Ends`] keeps, for [`EARLY_FINISH_MS`] each and at most [`MAX_EARLY_FINISHES`] of each kind (oldest dropped
//! first, so a peer cannot grow them without bound), the Finishes that came while their run was not registered,
//! and the runs whose Finish the broker took.
//!
//! [`Register::created_ns`]: predictive_api::wire::Register::created_ns

use std::collections::HashMap;
use std::hash::Hash;

use predictive_api::wire::Finish;

use super::{EARLY_FINISH_MS, MAX_EARLY_FINISHES};

/// What the broker does with a Register, given the run of the same container it has registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Registering {
    /// A new run (or an older shim's): registered, ending any other run of the container the broker held.
    New,
    /// The run already registered, registering again with `adopt` (a retry, or after a broker restart): it carries
    /// on as the same run.
    Same,
    /// A retry of the run's first Register (no `adopt`) that arrived after one that adopted the limits in force:
    /// it carries nothing the broker does not have, and its answer's directives would never be applied.
    Repeated,
    /// A run older than the one registered (its Finish is on its way or lost): never registered over it.
    Older,
    /// A run whose Finish the broker took already: a Register that queued up behind it.
    Ended,
}

/// The Finishes that came before their Register, and the runs that ended.
#[derive(Default)]
pub(super) struct Ends {
    /// By container and run (`created_ns`), with when the broker took each.
    early: HashMap<(String, Option<u64>), (u64, Finish)>,
    /// The runs (container, `created_ns`) whose Finish the broker took, with when.
    ended: HashMap<(String, u64), u64>,
}

impl Ends {
    /// Keeps `f`, the Finish of a run that is not registered, for its Register.
    pub(super) fn keep_early(&mut self, f: Finish, now: u64) {
        let key = (f.container_id.clone(), f.created_ns);
        insert_bounded(
            &mut self.early,
            MAX_EARLY_FINISHES,
            key,
            (now, f),
            now,
            |(at, _)| *at,
        );
    }

    /// The Finish that came within [`EARLY_FINISH_MS`] for the run a Register names (`id`, `created`), with how
    /// long ago; taken out either way. `registered`: the run of `id` that is registered (`Some(None)` for an older
    /// shim's), whose own Finish never waits here; an older shim's Register finds its Finish only while its
    /// container is not registered.
    pub(super) fn take_early(
        &mut self,
        id: &str,
        created: Option<u64>,
        registered: Option<Option<u64>>,
        now: u64,
    ) -> Option<(u64, Finish)> {
        if registered == Some(created) || (created.is_none() && registered.is_some()) {
            return None;
        }
        let (at, f) = self.early.remove(&(id.to_owned(), created))?;
        let ago = now.saturating_sub(at);
        (ago < EARLY_FINISH_MS).then_some((ago, f))
    }

    /// Notes that the run `created` of `id` finished (nothing for an older shim's run, which has no name).
    pub(super) fn ended(&mut self, id: &str, created: Option<u64>, now: u64) {
        let Some(c) = created else {
            return;
        };
        let key = (id.to_owned(), c);
        insert_bounded(&mut self.ended, MAX_EARLY_FINISHES, key, now, now, |at| *at);
    }

    /// What to do with the Register of run `created` of `id`, `registered` being the run of `id` the broker holds
    /// (`Some(None)` for an older shim's), `adopt` whether it carries the limits in force.
    pub(super) fn registering(
        &self,
        id: &str,
        created: Option<u64>,
        registered: Option<Option<u64>>,
        adopt: bool,
        now: u64,
    ) -> Registering {
        let Some(c) = created else {
            return Registering::New;
        };
        if let Some(at) = self.ended.get(&(id.to_owned(), c))
            && now.saturating_sub(*at) < EARLY_FINISH_MS
        {
            return Registering::Ended;
        }
        match registered {
            Some(Some(r)) if r == c && adopt => Registering::Same,
            Some(Some(r)) if r == c => Registering::Repeated,
            Some(Some(r)) if c < r => Registering::Older,
            _ => Registering::New,
        }
    }
}

/// Inserts into a map that holds at most `max` entries: when it is full, the entries older than [`EARLY_FINISH_MS`]
/// go, then the oldest one if it is still full. Readers check an entry's age themselves, so the map is scanned only
/// when full (every Finish notes its run here, under the broker's state lock).
pub(super) fn insert_bounded<K: Eq + Hash + Clone, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    key: K,
    value: V,
    now: u64,
    at: impl Fn(&V) -> u64,
) {
    if map.len() >= max && !map.contains_key(&key) {
        map.retain(|_, v| now.saturating_sub(at(v)) < EARLY_FINISH_MS);
    }
    if map.len() >= max
        && !map.contains_key(&key)
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| at(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
    map.insert(key, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finish(id: &str, created: Option<u64>) -> Finish {
        Finish {
            container_id: id.into(),
            created_ns: created,
            ..Finish::default()
        }
    }

    #[test]
    fn an_early_finish_is_taken_only_by_its_own_runs_register() {
        let mut e = Ends::default();
        e.keep_early(finish("c", Some(10)), 1_000);
        e.keep_early(finish("c", Some(20)), 1_000);
        // Another run of the same id, and the run registered already: not this Finish's.
        assert!(e.take_early("c", Some(30), None, 1_500).is_none());
        assert!(e.take_early("c", Some(10), Some(Some(10)), 1_500).is_none());
        let (ago, f) = e
            .take_early("c", Some(10), Some(Some(20)), 1_500)
            .expect("run 10's");
        assert_eq!((ago, f.created_ns), (500, Some(10)));
        assert!(
            e.take_early("c", Some(10), None, 1_600).is_none(),
            "taken once"
        );
        // Too old to be taken.
        assert!(
            e.take_early("c", Some(20), None, 1_000 + EARLY_FINISH_MS)
                .is_none()
        );
    }

    #[test]
    fn an_older_shims_early_finish_waits_only_while_its_container_is_not_registered() {
        let mut e = Ends::default();
        e.keep_early(finish("c", None), 0);
        assert!(e.take_early("c", None, Some(None), 1).is_none());
        assert!(e.take_early("c", None, None, 2).is_some());
    }

    /// (container, run, the run registered, adopt, when, expected)
    type Case = (
        &'static str,
        u64,
        Option<Option<u64>>,
        bool,
        u64,
        Registering,
    );

    #[test]
    fn a_register_behind_its_runs_finish_or_an_older_run_is_refused() {
        use Registering::*;
        let mut e = Ends::default();
        let before: [Case; 5] = [
            ("c", 5, None, false, 0, New),
            ("c", 5, Some(Some(5)), true, 0, Same),
            ("c", 5, Some(Some(5)), false, 0, Repeated),
            ("c", 4, Some(Some(5)), true, 0, Older),
            ("c", 6, Some(Some(5)), false, 0, New),
        ];
        let after = [
            ("c", 3, None, true, 200, Ended),
            ("c", 5, Some(Some(9)), true, 200, Ended),
            // A run between two that ended, whose own Finish has not come: registered, or kept aside for its
            // Finish when a later one is registered.
            ("c", 4, None, false, 200, New),
            ("c", 4, Some(Some(9)), false, 200, Older),
            ("c", 6, None, false, 200, New),
            ("d", 5, None, false, 200, New),
            // Remembered for EARLY_FINISH_MS only.
            ("c", 5, None, true, 100 + EARLY_FINISH_MS, New),
        ];
        let check = |e: &Ends, cases: &[Case]| {
            for &(id, c, registered, adopt, now, want) in cases {
                let got = e.registering(id, Some(c), registered, adopt, now);
                assert_eq!(
                    got, want,
                    "{id} run {c}, registered {registered:?}, adopt {adopt}, at {now}"
                );
            }
        };
        check(&e, &before);
        e.ended("c", Some(5), 100);
        e.ended("c", Some(3), 150);
        check(&e, &after);
        // An older shim's runs (no name) are never refused.
        assert_eq!(e.registering("c", None, Some(None), true, 200), New);
    }

    #[test]
    fn the_sets_are_bounded_oldest_first() {
        let mut e = Ends::default();
        for i in 0..MAX_EARLY_FINISHES as u64 + 10 {
            e.keep_early(finish(&format!("c{i}"), Some(i)), i);
            e.ended(&format!("c{i}"), Some(i), i);
        }
        assert_eq!(e.early.len(), MAX_EARLY_FINISHES);
        assert_eq!(e.ended.len(), MAX_EARLY_FINISHES);
        assert!(
            e.take_early("c0", Some(0), None, 20_000).is_none(),
            "the oldest went first"
        );
        let last = MAX_EARLY_FINISHES as u64 + 9;
        assert!(
            e.take_early(&format!("c{last}"), Some(last), None, 20_000)
                .is_some()
        );
        // A full set drops what has expired before it drops a live entry.
        e.ended("late", Some(1), 5_000 + EARLY_FINISH_MS);
        assert_eq!(e.ended.len(), 1);
    }
}
