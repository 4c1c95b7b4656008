//! The predictor's values as the protocol's types ([`predictive_api::prediction`]). Functions rather than `From`
//! impls: both sides are other crates' types, which the orphan rule keeps this crate from joining with `From`.
//!
//! The tests pin the JSON: each converted value serialises exactly as the predictor's own type did when the
//! wire embedded it (docs/BROKER-API.md is the contract), so a change to either side shows up here.

use predictive_api::prediction as wire;

/// A confidence level.
pub fn confidence(c: predictor::Confidence) -> wire::Confidence {
    match c {
        predictor::Confidence::None => wire::Confidence::None,
        predictor::Confidence::Low => wire::Confidence::Low,
        predictor::Confidence::Medium => wire::Confidence::Medium,
        predictor::Confidence::High => wire::Confidence::High,
    }
}

/// A model kind.
pub fn model_kind(k: predictor::ModelKind) -> wire::ModelKind {
    match k {
        predictor::ModelKind::Baseline => wire::ModelKind::Baseline,
        predictor::ModelKind::Regression => wire::ModelKind::Regression,
        predictor::ModelKind::Seasonal => wire::ModelKind::Seasonal,
        predictor::ModelKind::Last => wire::ModelKind::Last,
        predictor::ModelKind::Ewma => wire::ModelKind::Ewma,
        predictor::ModelKind::RecentMax => wire::ModelKind::RecentMax,
    }
}

/// A prediction target.
pub fn resource(r: predictor::Resource) -> wire::Resource {
    match r {
        predictor::Resource::Duration => wire::Resource::Duration,
        predictor::Resource::Cpu => wire::Resource::Cpu,
        predictor::Resource::Memory => wire::Resource::Memory,
        predictor::Resource::Io => wire::Resource::Io,
        predictor::Resource::Net => wire::Resource::Net,
        predictor::Resource::NetRx => wire::Resource::NetRx,
    }
}

/// An estimate of one target.
pub fn estimate(e: &predictor::Estimate) -> wire::Estimate {
    wire::Estimate {
        point: e.point,
        lower: e.lower,
        upper: e.upper,
        limit: e.limit,
        kind: e.kind.map(model_kind),
    }
}

fn band(b: &predictor::Band) -> wire::Band {
    wire::Band {
        point: b.point,
        lower: b.lower,
        upper: b.upper,
    }
}

/// A prediction.
pub fn prediction(p: &predictor::Prediction) -> wire::Prediction {
    wire::Prediction {
        task_key: p.task_key.to_string(),
        confidence: confidence(p.confidence),
        level: p.level,
        model_version: p.model_version,
        runs: p.runs,
        duration_s: estimate(&p.duration_s),
        cpu_cores: estimate(&p.cpu_cores),
        memory_bytes: estimate(&p.memory_bytes),
        io_bytes_per_s: estimate(&p.io_bytes_per_s),
        net_tx_bytes_per_s: estimate(&p.net_tx_bytes_per_s),
        net_rx_bytes_per_s: estimate(&p.net_rx_bytes_per_s),
        profile: p
            .profile
            .iter()
            .map(|x| wire::ProfilePoint {
                cpu_cores: band(&x.cpu_cores),
                memory_bytes: band(&x.memory_bytes),
                io_bytes_per_s: band(&x.io_bytes_per_s),
            })
            .collect(),
    }
}

/// A task type's line of `models`.
pub fn task_type(t: &predictor::TaskTypeSummary) -> wire::TaskTypeSummary {
    wire::TaskTypeSummary {
        task_key: t.task_key.to_string(),
        runs_seen: t.runs_seen,
        image: t.image.clone(),
        model_version: t.model_version,
        targets: t
            .targets
            .iter()
            .map(|x| wire::TargetSummary {
                resource: resource(x.resource),
                kind: model_kind(x.kind),
                error: x.error,
            })
            .collect(),
    }
}

/// What a decision did.
pub fn decision_kind(d: predictor::Directive) -> wire::DecisionKind {
    match d {
        predictor::Directive::Initial => wire::DecisionKind::Initial,
        predictor::Directive::Raise => wire::DecisionKind::Raise,
        predictor::Directive::Lower => wire::DecisionKind::Lower,
        predictor::Directive::Hold => wire::DecisionKind::Hold,
        predictor::Directive::Fallback => wire::DecisionKind::Fallback,
    }
}

/// A decision of the log.
pub fn decision(d: &predictor::Decision) -> wire::Decision {
    wire::Decision {
        seq: d.seq,
        at_ms: d.at_ms,
        container_id: d.container_id.clone(),
        task_key: d.task_key.to_string(),
        directive: decision_kind(d.directive),
        resource: d.resource.clone(),
        reason: d.reason.clone(),
        old_value: d.old_value,
        new_value: d.new_value,
        model_version: d.model_version,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use predictor::{Band, Confidence, Estimate, ModelKind, ProfilePoint, Resource, TaskKey};
    use serde::Serialize;

    /// The converted value's JSON is the predictor value's JSON, field for field and number for number.
    fn same_json<A: Serialize, B: Serialize>(old: &A, new: &B) {
        let (o, n) = (
            serde_json::to_string(old).expect("old encodes"),
            serde_json::to_string(new).expect("new encodes"),
        );
        assert_eq!(o, n);
    }

    fn est(x: f64, kind: Option<ModelKind>) -> Estimate {
        Estimate {
            point: x,
            lower: x * 0.5,
            upper: x * 1.5,
            limit: x * 2.0,
            kind,
        }
    }

    fn prediction_value() -> predictor::Prediction {
        let b = |x: f64| Band {
            point: x,
            lower: x - 0.25,
            upper: x + 0.25,
        };
        predictor::Prediction {
            task_key: TaskKey::new("default/etl@1a2b"),
            confidence: Confidence::Medium,
            level: 0.9,
            model_version: 7,
            runs: 23,
            duration_s: est(12.5, Some(ModelKind::Regression)),
            cpu_cores: est(1.25, Some(ModelKind::Baseline)),
            memory_bytes: est(1.5e9, Some(ModelKind::Seasonal)),
            io_bytes_per_s: est(0.0, None),
            net_tx_bytes_per_s: est(2.0e6, Some(ModelKind::Ewma)),
            net_rx_bytes_per_s: est(3.0e6, Some(ModelKind::Baseline)),
            profile: vec![
                ProfilePoint {
                    cpu_cores: b(1.0),
                    memory_bytes: b(3.0e8),
                    io_bytes_per_s: b(0.1),
                };
                3
            ],
        }
    }

    #[test]
    fn a_prediction_and_its_estimates_keep_their_json() {
        let p = prediction_value();
        same_json(&p, &prediction(&p));
        same_json(&p.cpu_cores, &estimate(&p.cpu_cores));
        same_json(&p.io_bytes_per_s, &estimate(&p.io_bytes_per_s));
        for c in [
            Confidence::None,
            Confidence::Low,
            Confidence::Medium,
            Confidence::High,
        ] {
            same_json(&c, &confidence(c));
        }
        let cold = predictor::Prediction::cold(&TaskKey::new("t"));
        same_json(&cold, &prediction(&cold));
        let v = serde_json::to_value(prediction(&p)).expect("encodes");
        assert_eq!(v["confidence"], "medium");
        assert_eq!(v["cpu_cores"]["kind"], "baseline");
        assert_eq!(v["task_key"], "default/etl@1a2b");
        assert_eq!(v["net_tx_bytes_per_s"]["point"], 2.0e6);
        assert_eq!(v["net_rx_bytes_per_s"]["point"], 3.0e6);
        // An older broker's prediction has no egress estimate: it still reads, as none.
        let mut old = v.clone();
        old.as_object_mut()
            .expect("object")
            .remove("net_tx_bytes_per_s");
        old.as_object_mut()
            .expect("object")
            .remove("net_rx_bytes_per_s");
        let old: wire::Prediction = serde_json::from_value(old).expect("an older prediction reads");
        assert_eq!(old.net_tx_bytes_per_s, wire::Estimate::default());
        assert_eq!(old.net_rx_bytes_per_s, wire::Estimate::default());
    }

    #[test]
    fn every_model_kind_keeps_its_json_and_name() {
        use predictor::ModelKind as K;
        for k in [
            K::Baseline,
            K::Regression,
            K::Seasonal,
            K::Last,
            K::Ewma,
            K::RecentMax,
        ] {
            same_json(&k, &model_kind(k));
            assert_eq!(k.name(), model_kind(k).name());
        }
    }

    #[test]
    fn a_task_type_summary_keeps_its_json() {
        let t = predictor::TaskTypeSummary {
            task_key: TaskKey::new("default/etl@1a2b"),
            runs_seen: 40,
            image: "busybox".to_owned(),
            model_version: Some(3),
            targets: Resource::ALL
                .iter()
                .zip([
                    ModelKind::Baseline,
                    ModelKind::Regression,
                    ModelKind::Seasonal,
                    ModelKind::Baseline,
                    ModelKind::Ewma,
                    ModelKind::Baseline,
                ])
                .map(|(r, kind)| predictor::TargetSummary {
                    resource: *r,
                    kind,
                    error: 0.125,
                })
                .collect(),
        };
        same_json(&t, &task_type(&t));
        let cold = predictor::TaskTypeSummary {
            model_version: None,
            targets: Vec::new(),
            ..t
        };
        same_json(&cold, &task_type(&cold));
    }

    #[test]
    fn a_decision_keeps_its_json() {
        for (directive, old, model) in [
            (predictor::Directive::Initial, None, Some(2)),
            (predictor::Directive::Raise, Some(1.0), None),
            (predictor::Directive::Lower, Some(2.0), Some(1)),
            (predictor::Directive::Hold, None, None),
            (predictor::Directive::Fallback, None, None),
        ] {
            let d = predictor::Decision {
                seq: 9,
                at_ms: 1_700_000_000_000,
                container_id: "c1".to_owned(),
                task_key: TaskKey::new("default/etl@1a2b"),
                directive,
                resource: "memory".to_owned(),
                reason: "predicted p99.8 peak".to_owned(),
                old_value: old,
                new_value: Some(5.0e8),
                model_version: model,
            };
            same_json(&d, &decision(&d));
        }
    }

    #[test]
    fn the_annotation_constants_are_the_predictors() {
        assert_eq!(
            predictive_api::annotations::TASK_TYPE,
            predictor::TASK_TYPE_ANNOTATION
        );
        assert_eq!(
            predictive_api::annotations::MAX_TASK_TYPE_LEN,
            predictor::key::MAX_EXPLICIT_LEN
        );
        assert_eq!(
            predictive_api::annotations::CRI_CONTAINER_TYPE,
            predictor::CRI_CONTAINER_TYPE_ANNOTATION
        );
    }
}
