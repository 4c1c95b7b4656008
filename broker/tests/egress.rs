//! The broker learns a task type's network egress and ingress: a real `predictived` on a temp socket and state
//! dir, a fake shim's Register / Report / Finish over the socket. Finished runs of a type that reported about
//! 2 MB/s of tx (rx) give the next Register of that type an egress (ingress) share near 2 MB/s, not the equal
//! split of the link (ingress) budget; the annotation still wins; `predictivectl explain` says where the share
//! came from; an export file carries the rates to a second broker, whose first run of the type gets the same
//! share. Every wait is a poll with a generous bound, never a fixed sleep that a slow machine could miss.

mod common;
use common::{Daemon, now_ns, predictivectl, short_tempdir};

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use broker::annotations;
use broker::api::{Explain, Finish, Register, Registered, Report};
use broker::client::Client;
use broker::controller::{Action, SpecLimits};
use predictive_api::prediction::{Estimate, Prediction};
use predictive_api::types::TaskView;
use runtime_hooks::{CpuSample, MemorySample, NetDevTotals, Sample};

const WAIT: Duration = Duration::from_secs(30);
/// The link budget: an equal split between two tasks is 50 MB/s.
const BUDGET: u64 = 100_000_000;
/// The ingress budget: an equal split between two tasks is 40 MB/s.
const INGRESS_BUDGET: u64 = 80_000_000;
/// What the history's runs sent (received), bytes/s.
const RATE: f64 = 2_000_000.0;

/// Which way the history's runs moved bytes, and what the broker shapes and learns for it.
#[derive(Debug, Clone, Copy)]
enum Way {
    Egress,
    Ingress,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Egress => "egress",
            Way::Ingress => "ingress",
        }
    }

    fn budget(self) -> u64 {
        match self {
            Way::Egress => BUDGET,
            Way::Ingress => INGRESS_BUDGET,
        }
    }

    fn annotation(self) -> &'static str {
        match self {
            Way::Egress => annotations::EGRESS,
            Way::Ingress => annotations::INGRESS,
        }
    }

    /// The resource of its decisions.
    fn resource(self) -> &'static str {
        match self {
            Way::Egress => "net",
            Way::Ingress => "net-ingress",
        }
    }

    /// Samples moving `rate` bytes/s this way (nothing the other way).
    fn samples(self, rate: f64) -> Vec<Sample> {
        match self {
            Way::Egress => traffic(rate, 0.0),
            Way::Ingress => traffic(0.0, rate),
        }
    }

    /// The limit a Register directed this way.
    fn share(self, r: &Registered) -> Option<u64> {
        r.directives.iter().find_map(|d| match (self, &d.action) {
            (Way::Egress, Action::SetNetEgress { rate_bytes_per_sec })
            | (Way::Ingress, Action::SetNetIngress { rate_bytes_per_sec }) => *rate_bytes_per_sec,
            _ => None,
        })
    }

    fn estimate(self, p: &Prediction) -> Estimate {
        match self {
            Way::Egress => p.net_tx_bytes_per_s,
            Way::Ingress => p.net_rx_bytes_per_s,
        }
    }

    fn limit(self, t: &TaskView) -> Option<u64> {
        match self {
            Way::Egress => t.net.as_ref(),
            Way::Ingress => t.net_ingress.as_ref(),
        }
        .map(|n| n.limit_bytes_per_sec)
    }
}

/// A broker with a 50 ms tick, a model from 3 runs, and both network budgets; `args` as `--import FILE`.
fn start_broker(dir: &Path, args: &[&str]) -> Daemon {
    let config = format!(
        "tick_ms = 50\nretrain_check_ms = 100\nsample_flush_ms = 100\nhost_cpu_cores = 4.0\n\
         host_memory_bytes = 8589934592\ncgroup = \"v2\"\n[retrain]\nnew_runs = 1\nmin_runs = 3\n\
         [network]\nlink_budget_bytes_per_sec = {BUDGET}\n\
         ingress_budget_bytes_per_sec = {INGRESS_BUDGET}\n"
    );
    Daemon::start_with(dir, &config, args, |_| {})
}

/// Three raw samples 100 ms apart sending `tx` and receiving `rx` bytes/s (two intervals the broker rates).
fn traffic(tx: f64, rx: f64) -> Vec<Sample> {
    let t = now_ns();
    let (tx_tick, rx_tick) = ((tx / 10.0) as u64, (rx / 10.0) as u64);
    (0..3u64)
        .map(|i| Sample {
            unix_ns: t + i * 100_000_000,
            monotonic_ns: 1_000_000_000 + i * 100_000_000,
            cpu: CpuSample {
                usage_ns: Some(i * 10_000_000),
                ..CpuSample::default()
            },
            memory: MemorySample {
                usage_bytes: Some(20 << 20),
                ..MemorySample::default()
            },
            net: Some(NetDevTotals {
                tx_bytes: 5_000 + i * tx_tick,
                rx_bytes: 7_000 + i * rx_tick,
                ..NetDevTotals::default()
            }),
            ..Sample::default()
        })
        .collect()
}

/// A Register in its own network namespace whose shim applies ingress limits, with the annotation `ask`.
fn register(id: &str, task_type: &str, ask: Option<(Way, u64)>) -> Register {
    on_network(id, task_type, ask, true)
}

fn on_network(id: &str, task_type: &str, ask: Option<(Way, u64)>, own_netns: bool) -> Register {
    let mut annotations =
        BTreeMap::from([(annotations::TASK_TYPE.to_owned(), task_type.to_owned())]);
    if let Some((way, rate)) = ask {
        annotations.insert(way.annotation().to_owned(), rate.to_string());
    }
    Register {
        container_id: id.to_owned(),
        namespace: "test".to_owned(),
        annotations,
        image: "busybox".to_owned(),
        command: vec!["upload".to_owned()],
        limits: SpecLimits {
            memory_limit_bytes: Some(1 << 30),
            ..SpecLimits::default()
        },
        cgroup_path: format!("/test/{id}"),
        pid: Some(1),
        cgroup: None,
        adopt: None,
        parents: Vec::new(),
        own_netns: Some(own_netns),
        net_ingress: Some(true),
        pokes: None,
        created_ns: None,
    }
}

fn egress_of(r: &Registered) -> Option<u64> {
    Way::Egress.share(r)
}

fn finish(c: &mut Client, id: &str) {
    c.finish(&Finish {
        container_id: id.to_owned(),
        exit_code: 0,
        ..Finish::default()
    })
    .expect("finish");
}

#[test]
fn finished_runs_that_sent_two_megabytes_a_second_set_the_next_runs_share() {
    learned_share(Way::Egress);
}

#[test]
fn finished_runs_that_received_two_megabytes_a_second_set_the_next_runs_ingress_share() {
    learned_share(Way::Ingress);
}

/// Eight finished runs that moved about 2 MB/s `way` give the next Register of their type a share near it.
fn learned_share(way: Way) {
    let budget = way.budget();
    let dir = short_tempdir();
    let b = start_broker(dir.path(), &[]);
    let mut c = b.client();

    // A neighbour with no history and no annotation stays registered throughout: alone it has the whole link.
    let other = c
        .register(&register("other", "other-type", None))
        .expect("register other");
    assert_eq!(way.share(&other), Some(budget));

    // History: eight runs of "uploader" that sent about 2 MB/s (±4%). The first three are cold: each gets the
    // equal split (the broker learns from the third on, as the retrain thread gets to it).
    for i in 0..8u32 {
        let id = format!("up-{i}");
        let r = c
            .register(&register(&id, "uploader", None))
            .expect("register");
        if i < 3 {
            assert!(r.cold_start, "{r:?}");
        }
        if r.cold_start {
            assert_eq!(way.share(&r), Some(budget / 2), "cold: the equal split");
        }
        let rate = RATE * (0.96 + 0.02 * f64::from(i % 5));
        c.report(&Report {
            container_id: id.clone(),
            samples: way.samples(rate),
            ..Report::default()
        })
        .expect("report");
        finish(&mut c, &id);
    }

    // The retrain thread learns the type; a probe that is still cold is finished (it reported no egress: it
    // does not count for the network model).
    let live = b.wait_for(
        "a warm prediction with an estimate of that way",
        WAIT,
        || {
            let r = c
                .register(&register("up-live", "uploader", None))
                .expect("register");
            let learned = r
                .prediction
                .as_ref()
                .is_some_and(|p| p.runs >= 8 && way.estimate(p).kind.is_some());
            if learned {
                Some(r)
            } else {
                finish(&mut c, "up-live");
                None
            }
        },
    );
    let p = live.prediction.as_ref().expect("prediction");
    let e = way.estimate(p);
    assert!(e.point <= e.upper, "the estimate's bounds: {e:?}");
    assert!((e.point / RATE - 1.0).abs() < 0.05, "near 2 MB/s: {e:?}");
    let share = way.share(&live).expect("a directive for the learned type");
    assert!(
        (RATE as u64..=(RATE * 1.5) as u64).contains(&share),
        "the learned {} share {share} B/s is near 2 MB/s (its upper bound {}), not the equal split {}",
        way.name(),
        e.upper,
        budget / 2
    );
    assert_eq!(
        share, e.upper as u64,
        "the ask is the estimate's upper bound"
    );

    // The neighbour with no ask gets what the learned ask leaves.
    let status = c.status().expect("status");
    let other_limit = status
        .tasks
        .iter()
        .find(|t| t.container_id == "other")
        .and_then(|t| way.limit(t));
    assert_eq!(other_limit, Some(budget - share));

    // `predictivectl explain` says the share came from the prediction.
    let sock = b.socket().display().to_string();
    let out = predictivectl(vec![
        "--socket".to_owned(),
        sock.clone(),
        "explain".to_owned(),
        "up-live".to_owned(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("predicted {} of its type", way.name())),
        "explain names the source: {text}"
    );
    let decisions = c
        .explain(&Explain {
            container_id: Some("up-live".to_owned()),
            ..Explain::default()
        })
        .expect("explain");
    assert!(
        decisions
            .decisions
            .iter()
            .any(|d| d.resource == way.resource() && d.new_value == Some(share as f64)),
        "{:?}",
        decisions.decisions
    );

    // The annotation wins over the learned rate.
    let annotated = c
        .register(&register(
            "up-annotated",
            "uploader",
            Some((way, 7_000_000)),
        ))
        .expect("register annotated");
    assert_eq!(way.share(&annotated), Some(7_000_000));

    travels_to_another_node(&b, way, e);
}

/// The type's network rates travel in an export file: a second broker started with `--import` of it, which never
/// ran the type, gives its first run the same estimate and a share near the rate, not the equal split.
fn travels_to_another_node(a: &Daemon, way: Way, learned: Estimate) {
    let file = a.dir.join("history.json");
    let out = predictivectl(vec![
        "--socket".to_owned(),
        a.socket().display().to_string(),
        "export".to_owned(),
        "-o".to_owned(),
        file.display().to_string(),
    ]);
    assert!(
        out.status.success(),
        "export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(&file).expect("the export file");
    assert!(
        text.contains("\"version\":2"),
        "a file with network rates is version 2: {}",
        &text[..text.len().min(200)]
    );
    let dir = short_tempdir();
    let b = start_broker(
        dir.path(),
        &["--import", file.to_str().expect("utf-8 path")],
    );
    let mut c = b.client();
    c.register(&register("b-other", "other-type", None))
        .expect("register other");
    let first = c
        .register(&register("b-up", "uploader", None))
        .expect("register on node B");
    assert!(!first.cold_start, "node B predicts the imported type");
    let p = first.prediction.as_ref().expect("prediction");
    let e = way.estimate(p);
    assert!(
        e.kind.is_some() && (e.point / learned.point - 1.0).abs() < 0.05,
        "node B's {} estimate {e:?} is node A's {learned:?}",
        way.name()
    );
    let share = way.share(&first).expect("a directive on node B");
    assert!(
        (RATE as u64..=(RATE * 1.5) as u64).contains(&share),
        "node B's first {} share {share} B/s is near 2 MB/s, not the equal split {}",
        way.name(),
        way.budget() / 2
    );
}

/// A task on the host's network reads the host's counters: its runs teach its type no egress and no ingress.
#[test]
fn runs_on_the_host_network_teach_no_network_rate() {
    let dir = short_tempdir();
    let b = start_broker(dir.path(), &[]);
    let mut c = b.client();
    for i in 0..4 {
        let id = format!("host-{i}");
        let r = c
            .register(&on_network(&id, "hostnet", None, false))
            .expect("register");
        assert_eq!(egress_of(&r), None, "no share on the host's network");
        c.report(&Report {
            container_id: id.clone(),
            samples: traffic(RATE, RATE),
            ..Report::default()
        })
        .expect("report");
        finish(&mut c, &id);
    }
    let p = b.wait_for("a warm prediction of 4 runs", WAIT, || {
        let r = c
            .register(&register("host-live", "hostnet", None))
            .expect("register");
        finish(&mut c, "host-live");
        r.prediction.filter(|p| p.runs >= 4)
    });
    assert_eq!(
        p.net_tx_bytes_per_s.kind, None,
        "{:?}",
        p.net_tx_bytes_per_s
    );
    assert_eq!(
        p.net_rx_bytes_per_s.kind, None,
        "{:?}",
        p.net_rx_bytes_per_s
    );
    assert!(
        p.memory_bytes.kind.is_some(),
        "the other targets are learned"
    );
}
