//! Pressure stall information: `cpu.pressure`, `memory.pressure`, `io.pressure` of a cgroup2 directory
//! (the container's own on v2, its controller-less twin under `unified/` on a hybrid host).
//!
//! Limit: absent when the kernel runs without PSI (`psi=0`) or predates 4.20; the fields stay `None`.

use std::path::Path;

use crate::parse;
use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct Psi;

impl Controller for Psi {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        let mut read = |name: &str| files.read(&dir.join(name)).and_then(parse::pressure);
        sample.pressure.cpu = read("cpu.pressure");
        sample.pressure.memory = read("memory.pressure");
        sample.pressure.io = read("io.pressure");
    }
}
