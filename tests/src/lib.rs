//! End-to-end test harness: a private containerd driven through ctr.
