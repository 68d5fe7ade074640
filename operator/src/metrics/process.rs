//! The standard Prometheus process metrics of the operator itself, read from `/proc/self` on
//! each scrape: `process_cpu_seconds_total`, `process_resident_memory_bytes` and
//! `process_open_fds`. prometheus-client has no process collector of its own.

use std::io;

use procfs_core::FromRead;
use procfs_core::process::Stat;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// What a scrape shows of the process.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessFigures {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
}

impl ProcessFigures {
    /// From `/proc/<pid>/stat` (CPU in clock ticks, RSS in pages) and the number of open fds.
    pub fn from_stat(stat: &Stat, ticks_per_second: u64, page_size: u64, open_fds: u64) -> Self {
        ProcessFigures {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks_per_second.max(1) as f64,
            resident_bytes: stat.rss.saturating_mul(page_size),
            open_fds,
        }
    }

    /// This process's figures now.
    pub fn of_self() -> io::Result<Self> {
        let stat = Stat::from_file("/proc/self/stat").map_err(io::Error::other)?;
        let open_fds = std::fs::read_dir("/proc/self/fd")?.count() as u64;
        Ok(Self::from_stat(
            &stat,
            rustix::param::clock_ticks_per_second(),
            rustix::param::page_size() as u64,
            open_fds,
        ))
    }
}

#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        // A scrape without these is better than a failed scrape.
        let figures = match ProcessFigures::of_self() {
            Ok(figures) => figures,
            Err(error) => {
                tracing::debug!(%error, "cannot read /proc/self for the process metrics");
                return Ok(());
            }
        };
        let cpu = ConstCounter::new(figures.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                figures.resident_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                figures.open_fds,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn figures_from_a_stat_line() {
        // utime 250, stime 50 ticks; rss 1000 pages.
        let line = "4242 (procwatch-operator) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 9 0 100 300000000 1000 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
        let stat = Stat::from_read(line.as_bytes()).unwrap();
        let figures = ProcessFigures::from_stat(&stat, 100, 4096, 12);
        assert_eq!(
            figures,
            ProcessFigures {
                cpu_seconds: 3.0,
                resident_bytes: 4_096_000,
                open_fds: 12,
            }
        );
    }

    #[test]
    fn scrape_shows_this_process() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains("# TYPE process_cpu_seconds counter"),
            "{text}"
        );
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        let value = |name: &str| -> f64 {
            text.lines()
                .find_map(|line| line.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {text}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 1_000_000.0);
        assert!(value("process_open_fds") >= 3.0);
    }
}
