//! CPU use between two scans: each scan records every process's CPU ticks; the next one turns
//! the difference into millicores.

use std::collections::HashMap;
use std::time::Instant;

use crate::parse::stat::PidStat;

#[derive(Debug)]
pub(super) struct CpuSample {
    at: Instant,
    /// (pid, start ticks) → CPU ticks used so far; the start time tells a reused pid apart.
    ticks: HashMap<(i32, u64), u64>,
}

impl CpuSample {
    pub(super) fn now() -> Self {
        CpuSample {
            at: Instant::now(),
            ticks: HashMap::new(),
        }
    }

    pub(super) fn record(&mut self, stat: &PidStat) {
        self.ticks
            .insert((stat.pid, stat.start_ticks), stat.cpu_ticks());
    }

    /// CPU ticks the process used since this sample; `None` when it was not in it.
    fn used_since(&self, stat: &PidStat) -> Option<u64> {
        let before = self.ticks.get(&(stat.pid, stat.start_ticks))?;
        Some(stat.cpu_ticks().saturating_sub(*before))
    }

    /// The process's CPU use from this (earlier) sample to `later`, in millicores; `None` when
    /// it was not in this sample.
    pub(super) fn millicores_until(
        &self,
        later: &CpuSample,
        stat: &PidStat,
        ticks_per_second: u64,
    ) -> Option<u64> {
        let used = self.used_since(stat)?;
        let elapsed_ms = later.at.duration_since(self.at).as_millis() as u64;
        Some(millicores(used, ticks_per_second, elapsed_ms))
    }
}

/// `used_ticks` of CPU over `elapsed_ms` of wall time, in thousandths of a CPU; 0 when no time
/// passed.
fn millicores(used_ticks: u64, ticks_per_second: u64, elapsed_ms: u64) -> u64 {
    let used_ms = used_ticks * 1000 / ticks_per_second;
    (used_ms * 1000).checked_div(elapsed_ms).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use procwatch_crds::ProcessState;

    use super::*;

    fn stat(pid: i32, start_ticks: u64, cpu_ticks: u64) -> PidStat {
        PidStat {
            pid,
            comm: "sh".into(),
            state: ProcessState::Sleeping,
            ppid: 1,
            utime_ticks: cpu_ticks,
            stime_ticks: 0,
            threads: 1,
            start_ticks,
            rss_pages: 1,
        }
    }

    #[test]
    fn millicores_from_ticks_and_wall_time() {
        // 50 ticks at 100 Hz is half a second: over one second, half a CPU.
        assert_eq!(millicores(50, 100, 1000), 500);
        // Two full CPUs over 200 ms.
        assert_eq!(millicores(40, 100, 200), 2000);
        assert_eq!(millicores(10, 100, 0), 0, "no time passed");
    }

    #[test]
    fn cpu_used_between_two_samples() {
        let mut earlier = CpuSample::now();
        earlier.record(&stat(7, 1000, 100));
        let mut later = CpuSample::now();
        later.at = earlier.at + Duration::from_secs(1);
        let busy = stat(7, 1000, 150);
        later.record(&busy);
        assert_eq!(earlier.millicores_until(&later, &busy, 100), Some(500));
    }

    #[test]
    fn a_reused_pid_or_a_new_process_has_no_figure() {
        let mut earlier = CpuSample::now();
        earlier.record(&stat(7, 1000, 100));
        let later = CpuSample::now();
        // Same pid, started later: another process.
        assert_eq!(
            earlier.millicores_until(&later, &stat(7, 2000, 150), 100),
            None
        );
        assert_eq!(
            earlier.millicores_until(&later, &stat(8, 1000, 1), 100),
            None
        );
    }

    #[test]
    fn ticks_never_run_backwards() {
        let mut earlier = CpuSample::now();
        earlier.record(&stat(7, 1000, 100));
        assert_eq!(earlier.used_since(&stat(7, 1000, 90)), Some(0));
    }
}
