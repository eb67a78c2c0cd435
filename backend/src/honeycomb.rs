//! Honeycomb export: every ingested mesh event, batched, compressed and delivered to the
//! Events API with retries, through a bounded queue that never slows ingest.

pub mod client;
pub mod columns;
pub mod exporter;
pub mod queue;
pub mod settings;
pub mod stats;

pub use exporter::Exporter;
pub use settings::{ExportSettings, HoneycombArgs};
