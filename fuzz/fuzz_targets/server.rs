//! The broker as a shim and `predictivectl` reach it: a real `Server` (its redb store, its recorder, its journal)
//! on a temporary state directory, fed a sequence of requests (registrations, single and batched reports, resizes,
//! finishes, the read-only queries, controller ticks and restarts of the whole server on the same directory). Each
//! request is encoded and parsed as on the socket, and each answer too. Asserted:
//! - every answer encodes and parses back (no NaN or infinity a client could not read), and an error holds no
//!   control character;
//! - every acknowledged Finish recorded a run, and every run the broker recorded is still there after a restart;
//! - what the broker exports, another node imports: `predictivectl export`'s file of this node's runs is accepted
//!   by `predictived --import` whole (a run a hostile container shaped must not cost a node its history).
#![no_main]
use std::collections::BTreeMap;
use std::path::PathBuf;

use broker::api::{
    self, Explain, ExportQuery, Finish, HistoryQuery, Page, ParentLimit, Register, Report, Reports,
    Request, Response, Update,
};
use broker::config::Config;
use broker::controller::{Allocation, CgroupKind, SpecLimits};
use broker::server::Daemon as Server;
use broker::transfer;
use broker::validate::{MAX_BYTES, MAX_CORES};
use libfuzzer_sys::fuzz_target;
use predictive_api::history_file::{self, HistoryFile};
use runtime_hooks::{CpuSample, IoSample, MemorySample, NetDevTotals, PidsSample, Sample};

mod common;
use common::Bytes;

/// Containers a sequence names (two namespaces, so that qualified references are exercised).
const IDS: [&str; 5] = ["a", "b", "web", "k8s.io/p1", "k8s.io/p2"];
/// Task types (`io.predictive.task-type`); `None`: derived from image and command.
const TYPES: [Option<&str>; 4] = [Some("etl"), Some("etl"), Some("web"), None];
/// Most steps of one input.
const STEPS: u8 = 48;

fn id(b: &mut Bytes) -> String {
    match b.u8() % 16 {
        // A hostile id: whatever bytes come next, up to 12 of them.
        0 => {
            let n = usize::from(b.u8() % 12);
            (0..n).map(|_| char::from(b.u8())).collect()
        }
        i => IDS[usize::from(i) % IDS.len()].to_owned(),
    }
}

fn cores(b: &mut Bytes) -> f64 {
    match b.u8() % 5 {
        0 => 0.001,
        1 => MAX_CORES,
        2 => f64::from(b.u8() % 16 + 1) / 4.0,
        // Out of range now and then: refused, naming the field.
        3 if b.u8() % 8 == 0 => [0.0, -1.0, f64::NAN, MAX_CORES * 2.0][usize::from(b.u8() % 4)],
        _ => b.num(MAX_CORES).max(1e-6),
    }
}

fn bytes(b: &mut Bytes) -> u64 {
    match b.u8() % 4 {
        0 => 1,
        1 => MAX_BYTES,
        2 => u64::from(b.u8() % 64 + 1) << 24,
        _ => b.u64() % MAX_BYTES + 1,
    }
}

fn limits(b: &mut Bytes) -> SpecLimits {
    SpecLimits {
        cpu_limit_cores: b.opt(cores),
        cpu_request_cores: b.opt(cores),
        memory_limit_bytes: b.opt(bytes),
        memory_request_bytes: b.opt(bytes),
    }
}

fn parents(b: &mut Bytes) -> Vec<ParentLimit> {
    let paths = [
        "/kubepods/burstable/pod1",
        "/kubepods/burstable",
        "/kubepods",
        "/kubepods.slice",
    ];
    (0..b.u8() % 3)
        .map(|i| ParentLimit {
            path: paths[usize::from(b.u8().wrapping_add(i) % 4)].to_owned(),
            cpu_limit_cores: b.opt(cores),
            memory_limit_bytes: b.opt(bytes),
        })
        .collect()
}

/// An annotation value: a sensible one, an edge, or raw bytes.
fn value(b: &mut Bytes, sensible: &[&str]) -> String {
    match b.u8() % 4 {
        0 => (0..b.u8() % 10).map(|_| char::from(b.u8())).collect(),
        1 => b.int(u64::MAX).to_string(),
        _ => sensible[usize::from(b.u8()) % sensible.len()].to_owned(),
    }
}

fn annotations(b: &mut Bytes, task_type: Option<&str>) -> BTreeMap<String, String> {
    use broker::annotations as a;
    let mut m = BTreeMap::new();
    if let Some(t) = task_type {
        m.insert(a::TASK_TYPE.to_owned(), t.to_owned());
    }
    for _ in 0..b.u8() % 4 {
        let (k, v) = match b.u8() % 10 {
            0 => (a::MODE, value(b, &["enforce", "observe", "off"])),
            1 => (
                a::INPUT_BYTES,
                value(b, &["0", "1048576", "18446744073709551615"]),
            ),
            2 => (a::PRIORITY, value(b, &["0", "1000", "-1000", "5"])),
            3 => (a::DEPENDS_ON, value(b, &["a", "b,web", "p1", "a,a"])),
            4 => (a::PIPELINE, value(b, &["nightly", "p"])),
            5 => (a::MAX_BORROW, value(b, &["0", "0.5", "65536", "1e-9"])),
            6 => (a::ALLOW_BELOW_REQUEST, value(b, &["true", "false"])),
            7 => (a::EGRESS, value(b, &["1000000", "125000000", "1"])),
            8 => (a::INGRESS, value(b, &["1000000", "125000000"])),
            _ => (
                a::CRI_CONTAINER_TYPE,
                value(b, &["container", "container", "sandbox"]),
            ),
        };
        m.insert(k.to_owned(), v);
    }
    m
}

fn register(b: &mut Bytes, created: &mut u64) -> Register {
    let container_id = id(b);
    let task_type = TYPES[usize::from(b.u8()) % TYPES.len()];
    *created += 1 + b.int(1 << 40);
    Register {
        namespace: if container_id.contains('/') {
            "k8s.io".to_owned()
        } else {
            String::new()
        },
        annotations: annotations(b, task_type),
        image: ["busybox", "docker.io/library/app:1", ""][usize::from(b.u8() % 3)].to_owned(),
        command: vec![
            "sh".to_owned(),
            ["-c", "true", "sleep 1"][usize::from(b.u8() % 3)].to_owned(),
        ],
        limits: limits(b),
        cgroup_path: format!("/default/{container_id}"),
        pid: b.opt(|b| i32::from(b.u8()) + 1),
        cgroup: b.opt(|b| {
            if b.bit() {
                CgroupKind::V1
            } else {
                CgroupKind::V2
            }
        }),
        adopt: (b.u8() % 6 == 0).then(|| Allocation {
            cpu_cores: b.opt(cores),
            memory_bytes: b.opt(bytes),
            memory_max_bytes: b.opt(bytes),
        }),
        parents: parents(b),
        own_netns: b.opt(Bytes::bit),
        net_ingress: b.opt(Bytes::bit),
        pokes: b.opt(Bytes::bit),
        created_ns: b.opt(|_| *created),
        container_id,
    }
}

/// Raw samples as a shim reads them: counters that mostly grow, with an edge value now and then.
fn samples(b: &mut Bytes, clock: &mut Clock) -> Vec<Sample> {
    (0..b.u8() % 6)
        .map(|_| {
            clock.step(b);
            let grow = |b: &mut Bytes, c: &mut u64| {
                *c = match b.u8() % 8 {
                    0 => b.u64(),
                    1 => 0,
                    _ => c.saturating_add(b.int(1 << 34)),
                };
                *c
            };
            Sample {
                unix_ns: clock.unix_ns,
                monotonic_ns: clock.mono_ns,
                cpu: CpuSample {
                    usage_ns: b.opt(|b| grow(b, &mut clock.cpu_ns)),
                    nr_periods: b.opt(|b| grow(b, &mut clock.periods)),
                    nr_throttled: b.opt(|b| grow(b, &mut clock.throttled)),
                    throttled_ns: b.opt(|b| grow(b, &mut clock.throttled_ns)),
                },
                memory: MemorySample {
                    usage_bytes: b.opt(|b| b.int(MAX_BYTES)),
                    working_set_bytes: b.opt(|b| b.int(MAX_BYTES)),
                    peak_bytes: b.opt(|b| b.int(MAX_BYTES)),
                    limit_bytes: b.opt(|b| b.int(u64::MAX)),
                    oom_events: b.opt(|b| b.int(8)),
                    ..MemorySample::default()
                },
                io: IoSample {
                    read_bytes: b.opt(|b| grow(b, &mut clock.io)),
                    write_bytes: b.opt(|b| grow(b, &mut clock.io)),
                    ..IoSample::default()
                },
                net: b.opt(|b| NetDevTotals {
                    tx_bytes: grow(b, &mut clock.net),
                    rx_bytes: grow(b, &mut clock.net),
                    ..NetDevTotals::default()
                }),
                pids: PidsSample {
                    current: b.opt(|b| b.int(1 << 22)),
                    limit: b.opt(|b| b.int(1 << 22)),
                },
                frozen: b.opt(Bytes::bit),
                ..Sample::default()
            }
        })
        .collect()
}

/// The sequence's clocks and counters (shared by its containers: hostile enough).
struct Clock {
    unix_ns: u64,
    mono_ns: u64,
    cpu_ns: u64,
    periods: u64,
    throttled: u64,
    throttled_ns: u64,
    io: u64,
    net: u64,
}

impl Clock {
    fn step(&mut self, b: &mut Bytes) {
        let dt = match b.u8() % 6 {
            0 => 0,
            1 => 1,
            2 => b.u64(),
            _ => b.int(10_000_000_000),
        };
        self.unix_ns = self.unix_ns.saturating_add(dt);
        self.mono_ns = if b.u8() % 16 == 0 {
            b.u64()
        } else {
            self.mono_ns.saturating_add(dt)
        };
    }
}

fn report(b: &mut Bytes, clock: &mut Clock) -> Report {
    Report {
        container_id: id(b),
        samples: samples(b, clock),
        oom_events: if b.u8() % 8 == 0 { b.int(3) } else { 0 },
        stopping: (b.u8() % 8 == 0).then(|| "signal 15".to_owned()),
    }
}

fn finish(b: &mut Bytes, created: u64) -> Finish {
    Finish {
        container_id: id(b),
        exit_code: i32::from(b.u8()) - 128,
        oom_killed: b.u8() % 8 == 0,
        peak_memory_bytes: b.opt(|b| b.int(MAX_BYTES)),
        cpu_seconds: b.opt(|b| b.num(broker::validate::MAX_CPU_SECONDS)),
        ran_ms: b.opt(|b| b.int(api::MAX_RAN_MS)),
        created_ns: b.opt(|b| created.saturating_sub(b.int(3))),
    }
}

fn page(b: &mut Bytes) -> Page {
    Page {
        offset: b.opt(|b| b.int(4)),
        limit: b.opt(|b| b.int(4).max(1)),
    }
}

fn request(b: &mut Bytes, clock: &mut Clock, created: &mut u64) -> Request {
    match b.u8() % 16 {
        0..=3 => Request::Register(register(b, created)),
        4..=6 => Request::Report(report(b, clock)),
        7 => Request::Reports(Reports {
            reports: (0..1 + b.u8() % 3).map(|_| report(b, clock)).collect(),
        }),
        8 => Request::Update(Update {
            container_id: id(b),
            limits: limits(b),
            parents: b.opt(parents),
        }),
        9..=11 => Request::Finish(finish(b, *created)),
        12 => Request::Status(page(b)),
        13 => Request::Models(page(b)),
        14 => Request::Explain(Explain {
            container_id: b.opt(id),
            limit: b.opt(|b| usize::from(b.u8() % 4).max(1)),
            before_seq: b.opt(|b| b.int(64)),
        }),
        _ => Request::History(HistoryQuery {
            container_id: b.opt(id),
            task_key: b.opt(|b| ["etl", "web"][usize::from(b.u8() % 2)].to_owned()),
            offset: b.opt(|b| b.int(8)),
            limit: b.opt(|b| b.int(8).max(1)),
        }),
    }
}

/// Serves `req` as a line off the socket is served, and checks the answer as a client reads it.
fn serve(s: &Server, req: &Request) -> Response {
    let line = api::encode_request(Some(1), req).expect("a request encodes");
    let (_, parsed) = api::parse_request(&line);
    let resp = match parsed {
        Ok(r) => s.broker().handle(r),
        Err(e) => Response::Error(e),
    };
    let line = api::encode_response(Some(1), &resp).expect("an answer encodes");
    let (_, back) = api::parse_response(&line);
    match back {
        Ok(r) => assert_eq!(
            std::mem::discriminant(&r),
            std::mem::discriminant(&resp),
            "the answer to {req:?} read back as another kind"
        ),
        // An error answer parses as the error.
        Err(e) => {
            assert!(
                matches!(&resp, Response::Error(x) if x == &e),
                "the answer to {req:?} does not parse: {e:?}\n{line}"
            );
        }
    }
    let errors: Vec<&api::ErrorReply> = match &resp {
        Response::Error(e) => vec![e],
        Response::Reports(o) => o.results.iter().filter_map(|r| r.error.as_ref()).collect(),
        _ => Vec::new(),
    };
    for e in errors {
        assert!(
            !e.message.chars().any(char::is_control),
            "unescaped error: {:?}",
            e.message
        );
    }
    resp
}

/// Every run the broker holds, as `predictivectl export` pages through them.
fn export(s: &Server) -> HistoryFile {
    history_file::collect(now_ms(), |after| {
        let q = Request::Export(ExportQuery {
            after,
            newest_per_type: Some(1000),
            limit: Some(7),
            with_network: Some(true),
        });
        match serve(s, &q) {
            Response::Export(p) => Ok::<_, ()>(p),
            other => panic!("export answered {other:?}"),
        }
    })
    .expect("pages")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn start(cfg: &Config) -> Server {
    Server::start(cfg.clone()).expect("the broker starts on its own state directory")
}

fuzz_target!(|data: &[u8]| {
    let mut b = Bytes(data);
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "tick_ms = 3600000\nretrain_check_ms = 3600000\nhost_cpu_cores = 4\nhost_memory_bytes = 8589934592\n\
         cgroup = \"{}\"\n[retrain]\nnew_runs = 1\nmin_runs = 2\n{}",
        if b.bit() { "v2" } else { "v1" },
        if b.bit() {
            "[network]\nlink_budget_bytes_per_sec = 125000000\ningress_budget_bytes_per_sec = 125000000\n"
        } else {
            ""
        }
    );
    let mut cfg = Config::parse(&toml, &PathBuf::from("fuzz.toml")).expect("the target's config");
    cfg.state_dir = dir.path().join("state");
    cfg.socket = dir.path().join("s.sock");
    cfg.autostart = false;
    let mut server = start(&cfg);
    let mut clock = Clock {
        unix_ns: now_ms() * 1_000_000,
        mono_ns: 1 << 40,
        cpu_ns: 0,
        periods: 0,
        throttled: 0,
        throttled_ns: 0,
        io: 0,
        net: 0,
    };
    let mut created = 1u64 << 40;
    // Finishes answered `finished`: each recorded a run.
    let mut finished = 0;
    for _ in 0..STEPS {
        if b.0.is_empty() {
            break;
        }
        match b.u8() % 16 {
            0 => server.broker().tick(),
            1 => {
                // A restart: every run recorded before it is there after it.
                let before = export(&server);
                server.shutdown();
                server = start(&cfg);
                let after = export(&server);
                assert_eq!(before.node_id, after.node_id, "the node's id changed");
                assert_eq!(
                    before.runs, after.runs,
                    "the runs recorded before a restart differ after it"
                );
            }
            _ => {
                let req = request(&mut b, &mut clock, &mut created);
                if let Response::Finished(f) = serve(&server, &req) {
                    assert!(
                        f.duration_s.is_finite() && f.duration_s >= 0.0,
                        "a run of {} s",
                        f.duration_s
                    );
                    finished += 1;
                }
            }
        }
    }
    // What this node exports, another node imports whole.
    let file = export(&server);
    server.shutdown();
    assert!(
        file.runs.len() >= finished,
        "{finished} finishes acknowledged, {} runs exported",
        file.runs.len()
    );
    let json = serde_json::to_vec(&file).expect("an export file serialises");
    match transfer::parse(&json, "export.json", now_ms()) {
        Ok(runs) => assert_eq!(runs.len(), file.runs.len(), "runs lost at import"),
        Err(e) => panic!(
            "another node refuses this node's export: {}",
            broker::error_chain(&e)
        ),
    }
});
