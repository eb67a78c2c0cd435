//! The values PromQL expressions evaluate to.

use crate::labels::Labels;

/// One element of an instant vector. `t` is the sample's own timestamp for a plain selector
/// (what `timestamp()` reports) and the evaluation time for anything computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
}

/// One series of a range vector (matrix).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    String(String),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
}

impl Value {
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// What a query evaluation can fail with; maps to Prometheus's `errorType`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("{0}")]
    Execution(String),
    #[error("query timed out in {0}")]
    Timeout(String),
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(String),
    #[error("{0}")]
    BadData(String),
}

pub type Result<T> = std::result::Result<T, EvalError>;

pub fn exec<T>(msg: impl Into<String>) -> Result<T> {
    Err(EvalError::Execution(msg.into()))
}
