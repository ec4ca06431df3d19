//! The `process` collector: CPU, memory, file descriptors and threads of this process,
//! from the prometheus crate's process collector.

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

use crate::collect::{Collect, CollectError};

/// The prometheus crate's process collector (Linux `/proc/self`).
pub(crate) struct ProcessMetrics(pub(crate) prometheus::process_collector::ProcessCollector);

impl Collect for ProcessMetrics {
    fn describe(&self) -> Vec<Desc> {
        self.0.desc().into_iter().cloned().collect()
    }

    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError> {
        let families = self.0.collect();
        if families.is_empty() {
            return Err(CollectError("cannot read /proc/self".into()));
        }
        out.extend(families);
        Ok(())
    }
}
