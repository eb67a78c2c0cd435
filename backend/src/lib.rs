//! waggle's backend: ingests request events from sidecars and Prometheus remote write, keeps
//! them as time series in memory, and answers the Prometheus HTTP API with a PromQL engine.

pub mod labels;
pub mod store;
pub mod families;
pub mod mesh;
pub mod promql;
