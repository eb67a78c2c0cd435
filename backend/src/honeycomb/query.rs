//! The Honeycomb query mode behind `/honeycomb/api/v1/query`: a translated query is run as a
//! Honeycomb query (create the query, create its result, poll until complete, all within a
//! deadline inside Flagger's 5 s), identical queries share one result for a while, and the
//! Query Data API's budget of 10 results a minute is kept: when it is spent, the answer is an
//! error that says so, never an old value passed off as new.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::client::{path_segment, USER_AGENT};
use super::settings::KeySource;
use super::translate::{translate, Finish, Labels, Plan};
use crate::config::{parse_duration, ConfigError};

#[derive(Debug, Clone, Default, clap::Args)]
pub struct QueryArgs {
    /// Honeycomb configuration key with Manage Queries and Columns and Run Queries, for the
    /// query mode (prefer --honeycomb-query-key-file). Never the ingest key.
    #[arg(long, env = "HONEYCOMB_QUERY_KEY", hide_env_values = true)]
    pub honeycomb_query_key: Option<String>,
    /// File holding the query key (the `honeycomb-query` Secret).
    #[arg(long, env = "HONEYCOMB_QUERY_KEY_FILE")]
    pub honeycomb_query_key_file: Option<PathBuf>,
    /// Dataset the query mode reads, or __all__ [default: $HONEYCOMB_DATASET or flagger-metrics].
    #[arg(long, env = "WAGGLE_HONEYCOMB_QUERY_DATASET")]
    pub honeycomb_query_dataset: Option<String>,
    /// single, or per-service (the dataset is the service.name the query filters on) [default: single].
    #[arg(long, env = "WAGGLE_HONEYCOMB_QUERY_DATASET_MODE")]
    pub honeycomb_query_dataset_mode: Option<String>,
    /// How long identical queries share one Honeycomb result [default: 60s].
    #[arg(long, env = "WAGGLE_HONEYCOMB_QUERY_CACHE_TTL")]
    pub honeycomb_query_cache_ttl: Option<String>,
    /// Query results created per minute at most (Honeycomb allows 10) [default: 10].
    #[arg(long, env = "WAGGLE_HONEYCOMB_QUERY_BUDGET")]
    pub honeycomb_query_budget: Option<usize>,
    /// Longest a query may take, polling included; keep it under Flagger's 5 s [default: 4s].
    #[arg(long, env = "WAGGLE_HONEYCOMB_QUERY_DEADLINE")]
    pub honeycomb_query_deadline: Option<String>,
    /// Label mappings beyond the built-ins: `label=column`, or `label=-` to ignore a label.
    #[arg(long, env = "WAGGLE_HONEYCOMB_QUERY_LABEL", value_delimiter = ',')]
    pub honeycomb_query_label: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct QuerySettings {
    pub key: KeySource,
    pub base_url: String,
    pub dataset: String,
    pub per_service: bool,
    pub cache_ttl: Duration,
    pub budget: usize,
    pub deadline: Duration,
    pub labels: Labels,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl QueryArgs {
    /// `None` when no query key is configured: the mode is off.
    pub fn resolve(
        &self,
        base_url: &str,
        export_dataset: Option<&str>,
    ) -> Result<Option<QuerySettings>, ConfigError> {
        let key = match (&self.honeycomb_query_key, &self.honeycomb_query_key_file) {
            (Some(k), _) => KeySource::Literal(k.clone()),
            (None, Some(p)) => KeySource::File(p.clone()),
            (None, None) => return Ok(None),
        };
        key.read().map_err(|r| invalid("honeycomb_query_key", r))?;
        let dataset = self
            .honeycomb_query_dataset
            .clone()
            .or_else(|| export_dataset.map(str::to_owned))
            .unwrap_or_else(|| "flagger-metrics".into());
        let per_service = match self
            .honeycomb_query_dataset_mode
            .as_deref()
            .unwrap_or("single")
        {
            "single" => false,
            "per-service" => true,
            other => {
                return Err(invalid(
                    "honeycomb_query_dataset_mode",
                    format!("{other:?} is neither single nor per-service"),
                ))
            }
        };
        let dur = |field, v: &Option<String>, d: &str| {
            parse_duration(v.as_deref().unwrap_or(d)).map_err(|r| invalid(field, r))
        };
        let budget = self.honeycomb_query_budget.unwrap_or(10);
        if budget == 0 {
            return Err(invalid("honeycomb_query_budget", "must be at least 1"));
        }
        Ok(Some(QuerySettings {
            key,
            base_url: base_url.trim_end_matches('/').to_owned(),
            dataset,
            per_service,
            cache_ttl: dur(
                "honeycomb_query_cache_ttl",
                &self.honeycomb_query_cache_ttl,
                "60s",
            )?,
            budget,
            deadline: dur(
                "honeycomb_query_deadline",
                &self.honeycomb_query_deadline,
                "4s",
            )?,
            labels: Labels::new(&self.honeycomb_query_label)
                .map_err(|r| invalid("honeycomb_query_label", r))?,
        }))
    }
}

/// Why a query could not be answered; each maps to a Prometheus error type.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Budget(String),
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Honeycomb(String),
}

/// A number (or nothing, when Honeycomb had no matching events) and notes for `warnings`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub value: Option<f64>,
    pub warnings: Vec<String>,
}

struct Cached {
    at: Instant,
    result: Value,
}

#[derive(Default)]
struct State {
    /// Query ids by (dataset, spec): creating a query does not count against the budget.
    queries: HashMap<(String, String), String>,
    results: HashMap<(String, String), Cached>,
    created: VecDeque<Instant>,
}

pub struct HoneycombQuery {
    s: QuerySettings,
    http: reqwest::Client,
    state: Mutex<State>,
}

impl HoneycombQuery {
    pub fn new(s: QuerySettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(s.deadline)
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            s,
            http,
            state: Mutex::new(State::default()),
        })
    }

    pub async fn query(&self, promql: &str) -> Result<Answer, QueryError> {
        let plan = self.plan(promql)?;
        self.run(plan).await
    }

    /// Parses and translates a query (CPU only: callers run it off the async workers).
    pub fn plan(&self, promql: &str) -> Result<Plan, QueryError> {
        let expr = crate::promql::parse(promql).map_err(QueryError::Unsupported)?;
        translate(&expr, &self.s.labels).map_err(QueryError::Unsupported)
    }

    /// Answers a translated query from Honeycomb.
    pub async fn run(&self, plan: Plan) -> Result<Answer, QueryError> {
        if let Finish::Constant(v) = plan.finish {
            return Ok(Answer {
                value: Some(v),
                warnings: vec![],
            });
        }
        let dataset = if self.s.per_service {
            plan.service.clone().ok_or_else(|| {
                QueryError::Unsupported(
                    "per-service datasets need the query to select one service (service.name =)"
                        .into(),
                )
            })?
        } else {
            self.s.dataset.clone()
        };
        let deadline = Instant::now() + self.s.deadline;
        let result = self.result(&dataset, &plan, deadline).await?;
        let mut warnings = Vec::new();
        if plan.range_s != plan.window_s {
            warnings.push(format!(
                "Honeycomb rounds time ranges to the minute: the {}s window was queried as {}s",
                plan.window_s, plan.range_s
            ));
        }
        let value = finish(&plan, &result).map(|v| v * plan.scale);
        if value.is_none_or(f64::is_nan) {
            warnings.push(format!(
                "Honeycomb dataset {dataset:?} has no events matching {} in the last {}s",
                plan.spec["filters"], plan.range_s
            ));
        }
        Ok(Answer { value, warnings })
    }

    fn key(&self) -> Result<String, QueryError> {
        self.s.key.read().map_err(QueryError::Refused)
    }

    async fn result(
        &self,
        dataset: &str,
        plan: &Plan,
        deadline: Instant,
    ) -> Result<Value, QueryError> {
        let mut spec = plan.spec.clone();
        spec["time_range"] = json!(plan.range_s);
        let spec_text = spec.to_string();
        let cache_key = (dataset.to_owned(), spec_text.clone());
        let mut st = self.state.lock().await;
        if let Some(c) = st.results.get(&cache_key) {
            if c.at.elapsed() < self.s.cache_ttl {
                return Ok(c.result.clone());
            }
        }
        st.results.retain(|_, c| c.at.elapsed() < self.s.cache_ttl);
        while st
            .created
            .front()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
        {
            st.created.pop_front();
        }
        if st.created.len() >= self.s.budget {
            let wait = st
                .created
                .front()
                .map_or(60, |t| 60u64.saturating_sub(t.elapsed().as_secs()));
            return Err(QueryError::Budget(format!(
                "Honeycomb query budget spent: {} query results per minute (the Query Data API allows 10); the next is possible in {wait}s, and no earlier answer for this query is fresh enough to reuse",
                self.s.budget
            )));
        }
        let key = self.key()?;
        let ds = path_segment(dataset);
        let query_id = match st.queries.get(&cache_key) {
            Some(id) => id.clone(),
            None => {
                let created = self
                    .call(
                        &key,
                        reqwest::Method::POST,
                        &format!("/1/queries/{ds}"),
                        Some(&spec),
                        deadline,
                    )
                    .await?;
                let id = created["id"]
                    .as_str()
                    .ok_or_else(|| {
                        QueryError::Honeycomb(format!(
                            "POST /1/queries answered without an id: {created}"
                        ))
                    })?
                    .to_owned();
                st.queries.insert(cache_key.clone(), id.clone());
                id
            }
        };
        st.created.push_back(Instant::now());
        let body = json!({"query_id": query_id, "disable_series": true, "limit": 1000});
        let mut r = self
            .call(
                &key,
                reqwest::Method::POST,
                &format!("/1/query_results/{ds}"),
                Some(&body),
                deadline,
            )
            .await?;
        let id = r["id"]
            .as_str()
            .ok_or_else(|| {
                QueryError::Honeycomb(format!("POST /1/query_results answered without an id: {r}"))
            })?
            .to_owned();
        let mut pause = Duration::from_millis(100);
        while r["complete"] != json!(true) {
            if Instant::now() + pause >= deadline {
                return Err(QueryError::Timeout(format!(
                    "Honeycomb query result {id} was not complete within {:?}",
                    self.s.deadline
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            r = self
                .call(
                    &key,
                    reqwest::Method::GET,
                    &format!("/1/query_results/{ds}/{id}"),
                    None,
                    deadline,
                )
                .await?;
        }
        st.results.insert(
            cache_key,
            Cached {
                at: Instant::now(),
                result: r.clone(),
            },
        );
        Ok(r)
    }

    async fn call(
        &self,
        key: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        deadline: Instant,
    ) -> Result<Value, QueryError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(QueryError::Timeout(format!(
                "no time left for {method} {path} within {:?}",
                self.s.deadline
            )));
        }
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.s.base_url))
            .header("X-Honeycomb-Team", key)
            .timeout(left);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            if e.is_timeout() {
                QueryError::Timeout(format!(
                    "{method} {path} timed out within {:?}",
                    self.s.deadline
                ))
            } else {
                QueryError::Honeycomb(format!("{method} {path}: {e}"))
            }
        })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match status {
            200..=299 => serde_json::from_str(&text).map_err(|e| QueryError::Honeycomb(format!("{method} {path}: unreadable answer: {e}"))),
            401 => Err(QueryError::Refused("Honeycomb refused the query key (401): the query mode needs a configuration key with the Manage Queries and Columns and Run Queries permissions (not the ingest key)".into())),
            403 => Err(QueryError::Refused(format!("Honeycomb forbade the query (403): the key lacks Run Queries, or the team has no Query Data API (Enterprise plan): {}", text.trim()))),
            429 => Err(QueryError::Budget(format!("Honeycomb rate-limited {method} {path} (429): {}", text.trim()))),
            s => Err(QueryError::Honeycomb(format!("{method} {path} answered {s}: {}", text.trim()))),
        }
    }
}

/// The PromQL value from a complete query result.
fn finish(plan: &Plan, r: &Value) -> Option<f64> {
    let rows: Vec<&Value> = r["data"]["results"]
        .as_array()
        .map(|a| a.iter().map(|x| &x["data"]).collect())
        .unwrap_or_default();
    match &plan.finish {
        Finish::Constant(v) => Some(*v),
        Finish::Rate => {
            let count: f64 = rows.iter().filter_map(|d| d["COUNT"].as_f64()).sum();
            if rows.is_empty() {
                None
            } else {
                Some(count / plan.range_s as f64)
            }
        }
        Finish::Ratio { column, numerator } => {
            if rows.is_empty() {
                return None;
            }
            let (mut num, mut den) = (0.0, 0.0);
            for d in &rows {
                let c = d["COUNT"].as_f64().unwrap_or(0.0);
                let v = match &d[column] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => String::new(),
                };
                den += c;
                if numerator.iter().all(|m| m.is_match(&v)) {
                    num += c;
                }
            }
            Some(num / den)
        }
        Finish::Quantile { key, divisor } => rows
            .first()
            .and_then(|d| d[key.as_str()].as_f64())
            .map(|v| v / divisor),
    }
}
