//! v1 `cpuacct`: total CPU time (`cpuacct.usage`, nanoseconds).

use std::path::Path;

use crate::parse::Files;
use crate::sample::{Controller, Sample};

pub(crate) struct CpuAcct;

impl Controller for CpuAcct {
    fn sample(dir: &Path, files: &mut Files, sample: &mut Sample) {
        sample.cpu.usage_ns = files.u64(&dir.join("cpuacct.usage"));
    }
}
