//! Prometheus remote write 1.0 (`prompb.WriteRequest`): a bounded zero-copy decoder for what
//! waggle receives, a direct encoder for what it sends, and `prost` message types for tests
//! and tools that build requests.

mod decode;
mod encode;

pub use decode::{decode, DecodeError, Limits, Request, SeriesView};
pub use encode::{encoded_len, Encoder};

/// The messages, declared by hand for `prost`: no protoc needed.
mod messages {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }
}

pub use messages::{Label, Sample, TimeSeries, WriteRequest};
