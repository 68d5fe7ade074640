//! What the report endpoint takes on at once, so that beyond its capacity the operator sheds
//! load (503 with `Retry-After`, which agents follow) instead of growing until it is
//! OOM-killed: a bound on the reports being read and handled at a time (each holds its body),
//! and a bound on the pods whose findings are kept (each keeps its latest report).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Reports handled at once by default: far above what 1,000 agents on a 15 s interval need
/// (about 67 reports a second, each handled in milliseconds), and at most 16 bodies of the
/// largest size accepted in memory at once.
pub const DEFAULT_MAX_REPORTS_IN_FLIGHT: usize = 16;
/// Pods whose findings are kept by default: about 264 KiB each for reports of 3 containers of
/// 20 processes when a status lists the pod, 4.7 KiB when none does; the memory limit in
/// `config/` is sized for all of them listed.
pub const DEFAULT_MAX_REPORTING_PODS: usize = 1_000;

#[derive(Clone, Debug)]
pub struct Capacity {
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    max_pods: usize,
}

/// Why a report is shed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Overload {
    #[error("the operator handles {0} reports at once; retry")]
    Busy(usize),
    #[error("the operator keeps the findings of at most {0} pods; retry")]
    Full(usize),
}

impl Capacity {
    pub fn new(max_in_flight: usize, max_pods: usize) -> Self {
        Capacity {
            in_flight: Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            max_pods,
        }
    }

    /// A place among the reports handled now, held until dropped.
    pub fn enter(&self) -> Result<OwnedSemaphorePermit, Overload> {
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Overload::Busy(self.max_in_flight))
    }

    /// Whether the findings of a pod can be kept, with `kept` pods' findings kept already: a
    /// pod already kept is always updated, a new one only below the bound.
    pub fn keeps(&self, known: bool, kept: usize) -> Result<(), Overload> {
        if known || kept < self.max_pods {
            Ok(())
        } else {
            Err(Overload::Full(self.max_pods))
        }
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity::new(DEFAULT_MAX_REPORTS_IN_FLIGHT, DEFAULT_MAX_REPORTING_PODS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_pods_are_updated_new_ones_kept_below_the_bound() {
        let capacity = Capacity::new(1, 2);
        assert_eq!(capacity.keeps(false, 1), Ok(()));
        assert_eq!(capacity.keeps(false, 2), Err(Overload::Full(2)));
        assert_eq!(capacity.keeps(true, 2), Ok(()));
    }

    #[test]
    fn reports_beyond_the_bound_are_shed_until_one_ends() {
        let capacity = Capacity::new(2, 10);
        let first = capacity.enter().unwrap();
        let _second = capacity.enter().unwrap();
        assert!(matches!(capacity.enter(), Err(Overload::Busy(_))));
        drop(first);
        assert!(capacity.enter().is_ok());
    }
}
