//! Priority's second half: the critical path of each pipeline (the dependency chain with the longest
//! predicted remaining duration).

use super::*;

/// Pipelines up to this many live tasks get their critical path recomputed as soon as a member comes or goes;
/// larger ones at the next tick.
pub(super) const CRITICAL_PATH_AT_ONCE: usize = 512;

/// The live members of one pipeline and, once resolved, their dependencies among each other.
#[derive(Debug, Clone, Default)]
pub(super) struct Group {
    pub(super) members: Vec<Key>,
    /// Per member (in container id order), the members it depends on; `None` after the membership changed.
    pub(super) ups: Option<Vec<Vec<usize>>>,
}

/// Appends to `path` the critical path of one pipeline's live members (none when it has fewer than two).
///
/// Iterative, never recursive: a pipeline's graph comes from its users' `depends-on` annotations, so its depth is
/// theirs to choose (a recursive walk over a 13,022-task chain overflowed the stack). Members are put in an
/// order where every dependency comes first (Kahn's algorithm over the edges that are not on a cycle; the members of
/// a cycle follow in container id order with their in-cycle edges cut), then the longest path ending at each member
/// is one pass over that order: O(members + edges).
pub(super) fn critical_path(
    g: &mut Group,
    slots: &[Option<Task>],
    index: &BTreeMap<String, Key>,
    now_ms: u64,
    path: &mut Vec<Key>,
) {
    if g.members.len() < 2 {
        return;
    }
    let task = |k: Key| slots[k].as_ref().expect("a pipeline member is live");
    let ups = match &mut g.ups {
        Some(ups) => ups,
        ups @ None => {
            // Container id order: the tie-break below, and a stable order for the cached edges.
            g.members
                .sort_by(|&a, &b| task(a).spec.container_id.cmp(&task(b).spec.container_id));
            let pos: HashMap<Key, usize> =
                g.members.iter().enumerate().map(|(i, &k)| (k, i)).collect();
            ups.insert(
                g.members
                    .iter()
                    .map(|&k| {
                        let mut d: Vec<usize> = task(k)
                            .spec
                            .depends_on
                            .iter()
                            .filter_map(|d| {
                                index.get(d.as_str()).and_then(|dk| pos.get(dk).copied())
                            })
                            .collect();
                        d.sort_unstable();
                        d.dedup();
                        d
                    })
                    .collect(),
            )
        }
    };
    let n = g.members.len();
    let weights: Vec<f64> = g
        .members
        .iter()
        .map(|&k| {
            let t = task(k);
            match t.spec.prediction.as_ref().filter(|p| !p.is_cold_start()) {
                Some(p) => {
                    let elapsed = now_ms.saturating_sub(t.spec.started_at_ms) as f64 / 1000.0;
                    (p.duration_s.point - elapsed).max(1.0)
                }
                None => 1.0,
            }
        })
        .collect();
    // Topological order (dependencies first). Members left on a cycle are appended in id order; an edge from a
    // member that comes later in this order is ignored, which cuts each cycle.
    let mut downs: Vec<Vec<usize>> = vec![Vec::new(); n];
    let mut pending: Vec<usize> = vec![0; n];
    for (i, us) in ups.iter().enumerate() {
        pending[i] = us.len();
        for &u in us {
            downs[u].push(i);
        }
    }
    let mut order: Vec<usize> = Vec::with_capacity(n);
    let mut ready: std::collections::VecDeque<usize> =
        (0..n).filter(|&i| pending[i] == 0).collect();
    let mut placed = vec![false; n];
    let mut cursor = 0;
    loop {
        while let Some(i) = ready.pop_front() {
            placed[i] = true;
            order.push(i);
            for &d in &downs[i] {
                pending[d] -= 1;
                if pending[d] == 0 {
                    ready.push_back(d);
                }
            }
        }
        // A cycle: release its first member in id order and carry on.
        while cursor < n && placed[cursor] {
            cursor += 1;
        }
        if cursor == n {
            break;
        }
        pending[cursor] = 0;
        ready.push_back(cursor);
    }
    let mut rank = vec![0usize; n];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    // Longest path ending at each member (upstream to downstream), with its predecessor.
    let mut best: Vec<(f64, Option<usize>)> = vec![(0.0, None); n];
    for &i in &order {
        let mut up: (f64, Option<usize>) = (0.0, None);
        for &d in &ups[i] {
            if rank[d] < rank[i] && best[d].0 > up.0 {
                up = (best[d].0, Some(d));
            }
        }
        best[i] = (up.0 + weights[i], up.1);
    }
    // The longest; on a tie the first in container id order.
    let mut end = (0..n).max_by(|&a, &b| best[a].0.total_cmp(&best[b].0).then(b.cmp(&a)));
    let mut steps = 0;
    while let Some(i) = end {
        path.push(g.members[i]);
        end = best[i].1;
        steps += 1;
        if steps > n {
            break;
        }
    }
}

impl Controller {
    /// Marks the tasks on the critical path of every pipeline, or only of pipeline `only` (after a task of it
    /// came or went): the dependency chain with the longest predicted remaining duration (1 s per task when
    /// unknown).
    pub(super) fn update_critical_path(&mut self, now_ms: u64, only: Option<&str>) {
        let mut path = Vec::new();
        match only {
            None => {
                for t in self.slots.iter_mut().flatten() {
                    t.critical = false;
                }
                for g in self.pipelines.values_mut() {
                    critical_path(g, &self.slots, &self.index, now_ms, &mut path);
                }
            }
            Some(p) => {
                let Some(g) = self.pipelines.get_mut(p) else {
                    return;
                };
                // A large pipeline's path is left to the next tick (which recomputes every pipeline): recomputing
                // it at each Register of a 20,000-task pipeline made registration quadratic.
                if g.members.len() > CRITICAL_PATH_AT_ONCE {
                    return;
                }
                for &k in &g.members {
                    if let Some(t) = self.slots[k].as_mut() {
                        t.critical = false;
                    }
                }
                critical_path(g, &self.slots, &self.index, now_ms, &mut path);
            }
        }
        for k in path {
            if let Some(t) = self.slots[k].as_mut() {
                t.critical = true;
            }
        }
    }

    /// `set_cpu_weight` for every member of pipeline `only` (every pipeline: `None`) whose place on the critical
    /// path changed since its weight was last set: its spec's shares x `critical_path_cpu_weight` on the path, its
    /// spec's shares off it. Tasks whose weight is not the broker's (`cpu_shares` of `None`) are left alone.
    pub(super) fn weight_directives(&mut self, only: Option<&str>, out: &mut Vec<Directive>) {
        let factor = self.cfg.critical_path_cpu_weight;
        if factor.is_nan() || factor <= 1.0 {
            return;
        }
        let keys: Vec<Key> = match only {
            Some(p) => self
                .pipelines
                .get(p)
                .map(|g| g.members.clone())
                .unwrap_or_default(),
            None => self
                .pipelines
                .values()
                .flat_map(|g| g.members.iter().copied())
                .collect(),
        };
        for k in keys {
            let Some(t) = self.slots[k].as_mut() else {
                continue;
            };
            let Some(base) = t.spec.cpu_shares else {
                continue;
            };
            if t.critical == t.weight_raised {
                continue;
            }
            let raised = ((base as f64 * factor).round() as u64).clamp(base, 262_144);
            let (shares, old, reason) = if t.critical {
                (
                    raised,
                    base,
                    format!("on its pipeline's critical path: {factor}x its {base} shares"),
                )
            } else {
                (
                    base,
                    raised,
                    "off its pipeline's critical path: its spec's shares".to_owned(),
                )
            };
            t.weight_raised = t.critical;
            out.push(Directive {
                container_id: t.spec.container_id.clone(),
                action: Action::SetCpuWeight { shares },
                reason,
                applied: t.enforce(),
                old_value: Some(old as f64),
            });
        }
    }
}
