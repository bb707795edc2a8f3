//! The load feedback a handler reports with a batch.

/// Load feedback a handler reports for a batch ([`Batch::report_load`](crate::Batch::report_load)):
/// each figure from 0 (idle) to 1 (saturated).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LoadFeedback {
    /// The sink's CPU load.
    pub cpu: f64,
    /// The share of recent requests that failed.
    pub error_rate: f64,
    /// How full the sink's own queue is.
    pub queue_depth: f64,
    /// Lock or resource contention in the sink.
    pub contention: f64,
}
