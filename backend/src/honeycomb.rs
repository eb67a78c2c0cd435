//! Honeycomb: export of every ingested mesh event to the Events API (batched, compressed,
//! retried, through a bounded queue that never slows ingest), and the query mode that answers
//! Flagger's PromQL from Honeycomb's Query Data API.

pub mod client;
pub mod columns;
pub mod exporter;
pub mod query;
pub mod queue;
pub mod settings;
pub mod stats;
pub mod translate;

pub use exporter::Exporter;
pub use settings::{ExportSettings, HoneycombArgs};
