//! Finding or creating a group of series that share all labels but the metric name and one
//! more (a histogram's `le`): the shared labels are interned and ordered once for the group,
//! so each series costs one hash lookup, not a sort and a string hash per label.

use std::sync::Arc;

use super::{Data, Kind, Refused, SeriesId, Store};
use crate::labels::METRIC_NAME;

/// One series of a group: its metric name, the extra label's value (if any), and its kind.
#[derive(Debug, Clone, Copy)]
pub struct Member<'a> {
    pub name: &'a str,
    pub extra: Option<&'a str>,
    pub kind: Kind,
}

impl Store {
    /// Finds or creates every member of the group `base` (shared labels, any order, empty
    /// values dropped) with `extra_name` as the per-member label. Results are in member order.
    pub fn series_group(
        &mut self,
        base: &[(&str, &str)],
        extra_name: &str,
        members: &[Member<'_>],
    ) -> Vec<Result<SeriesId, Refused>> {
        let mut pending = Vec::new();
        let base: Vec<(&str, &str)> = base
            .iter()
            .filter(|(n, v)| !v.is_empty() && *n != METRIC_NAME && *n != extra_name)
            .copied()
            .collect();
        // Interning is for series about to be created: at the limit, look up only, so refused
        // label sets never grow the symbol table.
        let full = self.index.len() >= self.limits.max_series;
        let ids: Option<Vec<(u32, u32)>> = if full {
            base.iter()
                .map(|(n, v)| Some((self.symbols.get(n)?, self.symbols.get(v)?)))
                .collect()
        } else {
            Some(
                base.iter()
                    .map(|(n, v)| (self.symbols.intern(n), self.symbols.intern(v)))
                    .collect(),
            )
        };
        let Some(mut key) = ids else {
            self.stats.series_refused += members.len() as u64;
            return vec![Err(Refused::SeriesLimit(self.limits.max_series)); members.len()];
        };
        self.sort_key(&mut key);
        key.dedup_by_key(|p| p.0);
        let out = members
            .iter()
            .map(|m| self.group_member(&key, extra_name, m, &mut pending))
            .collect();
        self.postings.add(pending);
        out
    }

    fn group_member(
        &mut self,
        base: &[(u32, u32)],
        extra_name: &str,
        m: &Member<'_>,
        pending: &mut Vec<(u32, u32, SeriesId)>,
    ) -> Result<SeriesId, Refused> {
        let full = self.index.len() >= self.limits.max_series;
        let sym = |s: &mut Self, x: &str| {
            if full {
                s.symbols.get(x)
            } else {
                Some(s.symbols.intern(x))
            }
        };
        let refused = |s: &mut Self| {
            s.stats.series_refused += 1;
            Err(Refused::SeriesLimit(s.limits.max_series))
        };
        let mut key = Vec::with_capacity(base.len() + 2);
        key.extend_from_slice(base);
        let (Some(n), Some(v)) = (sym(self, METRIC_NAME), sym(self, m.name)) else {
            return refused(self);
        };
        self.insert_sorted(&mut key, (n, v));
        if let Some(extra) = m.extra.filter(|e| !e.is_empty()) {
            let (Some(n), Some(v)) = (sym(self, extra_name), sym(self, extra)) else {
                return refused(self);
            };
            self.insert_sorted(&mut key, (n, v));
        }
        if let Some(&id) = self.index.get(key.as_slice()) {
            return match (self.kind_of(id), m.kind) {
                (Some(Kind::Raw), Kind::Counter { .. }) => {
                    Err(Refused::RawSeries(self.labels(id).to_string()))
                }
                (Some(Kind::Counter { .. }), Kind::Raw) => {
                    Err(Refused::KindMismatch(self.labels(id).to_string()))
                }
                _ => Ok(id),
            };
        }
        if full {
            return refused(self);
        }
        let data = self.empty_data(m.kind);
        Ok(self.insert(Arc::from(key), data, pending))
    }

    /// Puts `pair` into a key sorted by label name (replacing a pair of the same name).
    fn insert_sorted(&self, key: &mut Vec<(u32, u32)>, pair: (u32, u32)) {
        let name = self.symbols.str(pair.0);
        match key.binary_search_by(|p| self.symbols.str(p.0).cmp(name)) {
            Ok(i) => key[i] = pair,
            Err(i) => key.insert(i, pair),
        }
    }

    pub(super) fn empty_data(&self, kind: Kind) -> Data {
        match kind {
            Kind::Counter { per_unit } => {
                let stale = (self.limits.stale_after_ms / self.limits.resolution_ms).max(1);
                Data::Grid {
                    grid: super::grid::Grid::new(stale),
                    per_unit,
                }
            }
            Kind::Raw => Data::Raw(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Limits;

    #[test]
    fn groups_find_what_single_lookups_create_and_the_other_way_round() {
        let mut s = Store::new(Limits::default());
        let counter = Kind::Counter { per_unit: 1.0 };
        let single = s
            .series(
                &[
                    ("b", "2"),
                    ("__name__", "x_bucket"),
                    ("a", "1"),
                    ("le", "5"),
                ],
                counter,
            )
            .unwrap();
        let members = [
            Member {
                name: "x_bucket",
                extra: Some("5"),
                kind: counter,
            },
            Member {
                name: "x_bucket",
                extra: Some("+Inf"),
                kind: counter,
            },
            Member {
                name: "x_sum",
                extra: None,
                kind: counter,
            },
        ];
        let ids: Vec<SeriesId> = s
            .series_group(&[("a", "1"), ("b", "2"), ("c", "")], "le", &members)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            ids[0], single,
            "the same label set, whichever way it was made"
        );
        assert_eq!(
            s.labels(ids[1]).to_string(),
            r#"x_bucket{a="1", b="2", le="+Inf"}"#
        );
        assert_eq!(
            s.lookup(&[("__name__", "x_sum"), ("b", "2"), ("a", "1")]),
            Some(ids[2])
        );
        assert_eq!(s.series_count(), 3);
    }

    #[test]
    fn at_the_limit_groups_only_look_up() {
        let mut s = Store::new(Limits {
            max_series: 2,
            ..Limits::default()
        });
        let counter = Kind::Counter { per_unit: 1.0 };
        let m = |name| Member {
            name,
            extra: None,
            kind: counter,
        };
        let got = s.series_group(&[("a", "1")], "le", &[m("x"), m("y"), m("z")]);
        assert!(got[0].is_ok() && got[1].is_ok());
        assert_eq!(got[2], Err(Refused::SeriesLimit(2)));
        let symbols = s.symbols_len();
        let got = s.series_group(&[("a", "new-value")], "le", &[m("x")]);
        assert_eq!(got[0], Err(Refused::SeriesLimit(2)));
        assert_eq!(
            s.symbols_len(),
            symbols,
            "nothing interned for refused series"
        );
        assert!(
            s.series_group(&[("a", "1")], "le", &[m("y")])[0].is_ok(),
            "existing ones are found"
        );
    }
}
