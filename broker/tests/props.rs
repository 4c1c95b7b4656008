//! Property tests (proptest, stable) on everything that parses what a peer or a file hands the broker: the request
//! parser and its range checks, the `io.predictive.*` annotations, the daemon's TOML, and the cgroup files the shim
//! samples (read through runtime-hooks' public `ContainerCgroup` over a fake v2 directory). The properties: no input
//! panics; what is accepted round-trips; what is refused says which field.

use std::collections::BTreeMap;
use std::path::Path;

use broker::annotations::{self, Annotations};
use broker::api::{self, ErrorCode, Request};
use broker::config::Config;
use proptest::prelude::*;

/// Any line of up to 512 chars, JSON-ish or not.
fn any_line() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,512}",
        // Mostly-valid requests with one field replaced by something arbitrary.
        (
            prop_oneof![
                Just("register"),
                Just("report"),
                Just("finish"),
                Just("update"),
                Just("status"),
                Just("explain"),
                Just("history"),
                Just("models")
            ],
            ".{0,40}",
            any::<f64>(),
            any::<i64>(),
        )
            .prop_map(|(t, id, f, n)| format!(
                r#"{{"version":1,"type":"{t}","container_id":{},"limits":{{"cpu_limit_cores":{f},"memory_limit_bytes":{n}}},"limit":{n},"offset":{n},"samples":[]}}"#,
                serde_json::to_string(&id).expect("a string encodes")
            )),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn the_request_parser_and_validation_never_panic_and_refusals_name_a_field(line in any_line()) {
        let (_, parsed) = api::parse_request(&line);
        match parsed {
            Ok(req) => {
                if let Err(e) = broker::validate::request(&req) {
                    prop_assert_eq!(e.code, ErrorCode::InvalidRequest);
                    prop_assert!(e.message.contains('`'), "names a field: {}", e.message);
                    prop_assert!(!e.message.chars().any(|c| c.is_control()), "{:?}", e.message);
                }
            }
            Err(e) => prop_assert!(!e.message.is_empty()),
        }
    }

    #[test]
    fn a_valid_register_round_trips_and_passes_validation(
        id in "[a-z0-9][a-z0-9._-]{0,60}",
        cpu in 0.001f64..1024.0,
        mem in 1u64..(1u64 << 50),
        prio in -1000i32..=1000,
    ) {
        let req = Request::Register(api::Register {
            container_id: id,
            annotations: BTreeMap::from([(annotations::PRIORITY.to_owned(), prio.to_string())]),
            limits: broker::controller::SpecLimits {
                cpu_limit_cores: Some(cpu),
                memory_limit_bytes: Some(mem),
                ..Default::default()
            },
            ..api::Register::default()
        });
        let line = api::encode_request(Some(3), &req).expect("encodes");
        let (id, back) = api::parse_request(&line);
        prop_assert_eq!(id, Some(3));
        let back = back.expect("parses");
        prop_assert_eq!(&back, &req);
        prop_assert!(broker::validate::request(&back).is_ok());
    }

    #[test]
    fn out_of_range_cores_are_refused_naming_the_field(cpu in prop_oneof![
        -1e300f64..=0.0,
        65_536.001f64..1e300,
    ]) {
        let req = Request::Update(api::Update {
            container_id: "c".to_owned(),
            limits: broker::controller::SpecLimits {
                cpu_limit_cores: Some(cpu),
                ..Default::default()
            },
            ..api::Update::default()
        });
        let e = broker::validate::request(&req).expect_err("out of range");
        prop_assert!(e.message.contains("`limits.cpu_limit_cores`"), "{}", e.message);
    }

    #[test]
    fn ids_with_control_characters_are_refused(prefix in "[a-z]{0,10}", c in prop::char::range('\u{0}', '\u{1f}'), suffix in "[a-z]{0,10}") {
        let req = Request::Finish(api::Finish {
            container_id: format!("{prefix}{c}{suffix}"),
            ..api::Finish::default()
        });
        let e = broker::validate::request(&req).expect_err("control character");
        prop_assert!(e.message.contains("`container_id`"), "{}", e.message);
        prop_assert!(!e.message.chars().any(|c| c.is_control()), "{:?}", e.message);
    }

    #[test]
    fn annotations_never_panic_and_errors_name_the_annotation(
        entries in prop::collection::btree_map(
            prop_oneof![
                Just(annotations::MODE.to_owned()),
                Just(annotations::PRIORITY.to_owned()),
                Just(annotations::DEPENDS_ON.to_owned()),
                Just(annotations::PIPELINE.to_owned()),
                Just(annotations::MAX_BORROW.to_owned()),
                Just(annotations::INPUT_BYTES.to_owned()),
                Just(annotations::ALLOW_BELOW_REQUEST.to_owned()),
                "io\\.predictive\\.[a-z-]{1,12}",
            ],
            ".{0,80}",
            0..6,
        )
    ) {
        match Annotations::parse(&entries) {
            Ok(a) => {
                prop_assert!((-1000..=1000).contains(&a.priority));
                prop_assert!(a.depends_on.len() <= 64);
                prop_assert!(a.max_borrow_cpu.is_none_or(|c| c.is_finite() && c >= 0.0));
            }
            Err(e) => prop_assert!(e.to_string().contains("io.predictive."), "{}", e),
        }
    }

    #[test]
    fn priorities_in_range_round_trip(p in -1000i32..=1000) {
        let m = BTreeMap::from([(annotations::PRIORITY.to_owned(), p.to_string())]);
        prop_assert_eq!(Annotations::parse(&m).expect("valid").priority, p);
    }

    #[test]
    fn the_config_parser_never_panics_and_accepts_what_it_documents(
        text in ".{0,200}",
        tick in 1u64..1_000_000,
        conns in 1usize..1_000_000,
    ) {
        let _ = Config::parse(&text, Path::new("fuzz.toml"));
        let cfg = Config::parse(
            &format!("tick_ms = {tick}\nmax_connections = {conns}\n"),
            Path::new("p.toml"),
        )
        .expect("valid");
        prop_assert_eq!((cfg.tick_ms, cfg.max_connections), (tick, conns));
        let e = Config::parse("tick_ms = 0\n", Path::new("p.toml")).expect_err("zero tick");
        prop_assert!(e.to_string().contains("p.toml"));
    }
}

/// One fake cgroup v2 directory with arbitrary contents in the files the sampler reads.
fn cgroup_file() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,120}",
        "([a-z_]{1,16} [0-9]{1,20}\n){0,8}",
        "(some|full) avg10=[0-9.]{1,8} avg60=[0-9.]{1,8} avg300=[0-9.]{1,8} total=[0-9]{1,20}\n",
        "[0-9]{1,25}\n",
        Just("max\n".to_owned()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_cgroup_file_parsers_never_panic(
        files in prop::collection::vec(cgroup_file(), 9),
        usage_usec in 0u64..(u64::MAX / 1000),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let names = [
            "cpu.stat", "memory.current", "memory.stat", "memory.peak", "memory.max", "io.stat",
            "cpu.pressure", "memory.pressure", "pids.current",
        ];
        for (n, body) in names.iter().zip(&files) {
            std::fs::write(dir.path().join(n), body).expect("write");
        }
        let cg = runtime_hooks::ContainerCgroup::new(
            runtime_hooks::cgroup::CgroupDirs::V2(runtime_hooks::v2::Dirs {
                dir: dir.path().to_owned(),
            }),
            dir.path().join("proc"),
        );
        let s = cg.sample();
        prop_assert!(s.pressure.cpu.is_none_or(|p| p.some.avg10.is_finite()));
        // A well-formed cpu.stat is read exactly.
        std::fs::write(
            dir.path().join("cpu.stat"),
            format!("usage_usec {usage_usec}\nuser_usec 0\nsystem_usec 0\nnr_periods 0\nnr_throttled 0\nthrottled_usec 0\n"),
        )
        .expect("write");
        prop_assert_eq!(cg.sample().cpu.usage_ns, Some(usage_usec * 1000));
    }
}
