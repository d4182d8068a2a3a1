//! How many CPUs this process may use, for `--workers auto`: the CPUs of its affinity mask,
//! capped by a cgroup CPU quota (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` /
//! `cpu.cfs_period_us`), as a container runtime or systemd sets it.

use std::path::Path;

/// What the CPU count was made of.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct CpuBudget {
    /// CPUs in this process's affinity mask.
    pub affinity: usize,
    /// CPUs' worth of time the cgroup quota allows (e.g. 1.5), if there is a quota.
    pub quota: Option<f64>,
}

impl CpuBudget {
    /// The CPUs this process may use: its affinity mask and its cgroup quota, read now.
    pub fn of_this_process() -> Self {
        let affinity = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                    .count()
            })
            .unwrap_or(0);
        let affinity = if affinity == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            affinity
        };
        let cgroups = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        Self {
            affinity,
            quota: cgroup_quota(&cgroups, Path::new("/sys/fs/cgroup")),
        }
    }

    /// Whole CPUs to use: the affinity count, lowered to the quota rounded up, at least 1.
    pub fn workers(&self) -> usize {
        let by_quota = self
            .quota
            .map_or(usize::MAX, |q| (q.ceil() as usize).max(1));
        self.affinity.min(by_quota).max(1)
    }

    /// In words, for the start-up log.
    pub fn describe(&self) -> String {
        let quota = match self.quota {
            Some(q) => format!("a CPU quota of {q:.2}"),
            None => "no CPU quota".into(),
        };
        let plural = |n: usize, word: &str| format!("{n} {word}{}", if n == 1 { "" } else { "s" });
        format!(
            "{} ({} in the affinity mask, {quota})",
            plural(self.workers(), "worker"),
            plural(self.affinity, "CPU")
        )
    }
}

/// The CPU quota of this process's cgroup, in CPUs: v2 first (the `0::PATH` line and
/// `cpu.max` under it), then v1 (the `cpu` controller's line and its cfs files).
fn cgroup_quota(proc_self_cgroup: &str, root: &Path) -> Option<f64> {
    for line in proc_self_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let dir = root.join(path.trim_start_matches('/'));
        if controllers.is_empty() {
            if let Ok(text) = std::fs::read_to_string(dir.join("cpu.max")) {
                if let Some(q) = parse_cpu_max(&text) {
                    return Some(q);
                }
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            let v1 = root.join("cpu").join(path.trim_start_matches('/'));
            let quota = std::fs::read_to_string(v1.join("cpu.cfs_quota_us")).ok();
            let period = std::fs::read_to_string(v1.join("cpu.cfs_period_us")).ok();
            if let (Some(q), Some(p)) = (quota, period) {
                if let Some(q) = parse_cfs(&q, &p) {
                    return Some(q);
                }
            }
        }
    }
    None
}

/// cgroup v2 `cpu.max`: `max 100000` (no quota) or `150000 100000` (1.5 CPUs).
fn parse_cpu_max(text: &str) -> Option<f64> {
    let mut fields = text.split_whitespace();
    let quota: f64 = fields.next()?.parse().ok()?;
    let period: f64 = fields.next()?.parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

/// cgroup v1: `cpu.cfs_quota_us` (`-1`: no quota) over `cpu.cfs_period_us`.
fn parse_cfs(quota: &str, period: &str) -> Option<f64> {
    let quota: f64 = quota.trim().parse().ok()?;
    let period: f64 = period.trim().parse().ok()?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_cap_the_affinity_and_round_up() {
        let budget = |affinity, quota| CpuBudget { affinity, quota };
        assert_eq!(budget(8, None).workers(), 8);
        assert_eq!(budget(8, Some(1.5)).workers(), 2);
        assert_eq!(budget(2, Some(4.0)).workers(), 2);
        assert_eq!(budget(4, Some(0.2)).workers(), 1);
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("150000 100000\n"), Some(1.5));
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("50000\n", "100000\n"), Some(0.5));
    }

    #[test]
    fn the_cgroup_of_the_process_is_found_for_v1_and_v2() {
        let root = std::env::temp_dir().join(format!("cpus-test-{}", std::process::id()));
        let v2 = root.join("system.slice/app.service");
        std::fs::create_dir_all(&v2).expect("temp dir");
        std::fs::write(v2.join("cpu.max"), "250000 100000\n").expect("write");
        assert_eq!(
            cgroup_quota("0::/system.slice/app.service\n", &root),
            Some(2.5)
        );
        let v1 = root.join("cpu/docker/abc");
        std::fs::create_dir_all(&v1).expect("temp dir");
        std::fs::write(v1.join("cpu.cfs_quota_us"), "100000\n").expect("write");
        std::fs::write(v1.join("cpu.cfs_period_us"), "100000\n").expect("write");
        let v1_lines = "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n";
        assert_eq!(cgroup_quota(v1_lines, &root), Some(1.0));
        assert_eq!(cgroup_quota("0::/nowhere\n", &root), None);
        let _ = std::fs::remove_dir_all(&root);
    }
}
