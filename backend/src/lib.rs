//! waggle's backend: ingests request events from sidecars and Prometheus remote write, keeps
//! them as time series in memory, and answers the Prometheus HTTP API with a PromQL engine.

pub mod analyze;
pub mod api;
pub mod config;
pub mod db;
pub mod families;
pub mod honeycomb;
pub mod labels;
pub mod memory;
pub mod mesh;
pub mod prompb;
pub mod promql;
pub mod remote_write;
pub mod self_metrics;
pub mod serve;
pub mod store;
