//! The contract every collector implements, alone in its module so that a collector
//! imports only this (and the writers of `family`), never the table that lists the
//! collectors ([`crate::collector::COLLECTORS`]) or the wrapper that runs them.

use prometheus::core::Desc;
use prometheus::proto::MetricFamily;

use crate::family::TextOut;

/// A collector could not produce its metrics this scrape.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CollectError(pub String);

/// One pluggable source of metric families.
pub trait Collect: Send + Sync {
    /// The families this collector exports whatever its state, with their label names:
    /// a registry rejects a collector whose families clash with another's (see
    /// [`crate::family::describe`]). The default, none, leaves the collector unchecked,
    /// as the Prometheus client guidelines allow for dynamic metrics.
    fn describe(&self) -> Vec<Desc> {
        Vec::new()
    }

    /// Appends this collector's families to `out`.
    fn collect(&self, out: &mut Vec<MetricFamily>) -> Result<(), CollectError>;

    /// Writes this collector's families in the text format (the scrape path): the bytes
    /// `TextEncoder` writes for what `collect` gives, series sorted as `Registry::gather`
    /// sorts them. The default does exactly that; a collector with many series writes
    /// them directly, without building protobuf structures.
    fn write_text(&self, out: &mut TextOut) -> Result<(), CollectError> {
        let mut families = Vec::new();
        self.collect(&mut families)?;
        for family in families {
            out.push_family(family)
                .map_err(|e| CollectError(format!("cannot encode: {e}")))?;
        }
        Ok(())
    }
}
