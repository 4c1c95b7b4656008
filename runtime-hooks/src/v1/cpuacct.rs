//! v1 `cpuacct`: total CPU time (`cpuacct.usage`, nanoseconds).

use std::path::Path;

use crate::cgroup::{Controller, Sample};
use crate::parse;

pub(crate) struct CpuAcct;

impl Controller for CpuAcct {
    fn sample(dir: &Path, sample: &mut Sample) {
        sample.cpu.usage_ns = parse::u64_file(&dir.join("cpuacct.usage"));
    }
}
