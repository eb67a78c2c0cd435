//! The postings index (label name → value → ascending series ids) and selection by matchers.
//!
//! Lists are kept sorted. Creating or removing many series at once (a batch of new request
//! shapes, a maintenance pass) merges each touched list once, instead of shifting a list of
//! every series once per new series: the lists of `reporter` or `le` hold most of the store.

use std::borrow::Cow;

use promql_parser::label::{MatchOp, Matcher};
use rustc_hash::{FxHashMap, FxHashSet};

use super::{SeriesId, Store};

#[derive(Debug, Default)]
pub(super) struct Postings {
    map: FxHashMap<u32, FxHashMap<u32, Vec<SeriesId>>>,
}

impl Postings {
    pub(super) fn values(&self, name: u32) -> Option<&FxHashMap<u32, Vec<SeriesId>>> {
        self.map.get(&name)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u32, &FxHashMap<u32, Vec<SeriesId>>)> {
        self.map.iter()
    }

    /// Adds `(name, value, id)` entries, merging each touched list once.
    pub(super) fn add(&mut self, mut entries: Vec<(u32, u32, SeriesId)>) {
        entries.sort_unstable();
        let mut i = 0;
        while i < entries.len() {
            let (n, v, _) = entries[i];
            let j = i + entries[i..].partition_point(|e| e.0 == n && e.1 == v);
            let new = entries[i..j].iter().map(|e| e.2);
            let list = self.map.entry(n).or_default().entry(v).or_default();
            if list.last().is_none_or(|last| entries[i].2 > *last) {
                list.extend(new);
            } else {
                let mut merged = Vec::with_capacity(list.len() + (j - i));
                let mut old = std::mem::take(list).into_iter().peekable();
                for id in new {
                    while let Some(o) = old.next_if(|o| *o < id) {
                        merged.push(o);
                    }
                    if old.peek() != Some(&id) {
                        merged.push(id);
                    }
                }
                merged.extend(old);
                *list = merged;
            }
            i = j;
        }
    }

    /// Removes `(name, value, id)` entries, filtering each touched list once; empty lists go.
    pub(super) fn remove(&mut self, entries: Vec<(u32, u32, SeriesId)>) {
        let mut by_list: FxHashMap<(u32, u32), FxHashSet<SeriesId>> = FxHashMap::default();
        for (n, v, id) in entries {
            by_list.entry((n, v)).or_default().insert(id);
        }
        for ((n, v), dead) in by_list {
            let Some(values) = self.map.get_mut(&n) else {
                continue;
            };
            if let Some(list) = values.get_mut(&v) {
                list.retain(|id| !dead.contains(id));
                if list.is_empty() {
                    values.remove(&v);
                }
            }
            if values.is_empty() {
                self.map.remove(&n);
            }
        }
    }

    /// Heap bytes of the lists and maps, roughly.
    pub(super) fn bytes(&self) -> usize {
        self.map
            .values()
            .map(|vs| 48 + vs.values().map(|l| 40 + l.capacity() * 4).sum::<usize>())
            .sum()
    }
}

impl Store {
    /// Series ids matching every matcher, ascending. A missing label matches as "".
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        // A matcher that rejects the empty value selects through the postings: the union of
        // the lists of the label values it accepts (one list for `=`, a few for a regex). The
        // lists are intersected smallest first; matchers that accept "" filter what is left.
        let mut lists: Vec<Cow<'_, [SeriesId]>> = Vec::new();
        for m in matchers.iter().filter(|m| !m.is_match("")) {
            let Some(values) = self
                .symbols
                .get(&m.name)
                .and_then(|n| self.postings.values(n))
            else {
                return Vec::new();
            };
            let list: Cow<'_, [SeriesId]> = match &m.op {
                MatchOp::Equal => match self.symbols.get(&m.value).and_then(|v| values.get(&v)) {
                    Some(ids) => Cow::Borrowed(ids.as_slice()),
                    None => return Vec::new(),
                },
                _ => {
                    let mut ids: Vec<SeriesId> = values
                        .iter()
                        .filter(|(v, _)| m.is_match(self.symbols.str(**v)))
                        .flat_map(|(_, ids)| ids.iter().copied())
                        .collect();
                    ids.sort_unstable();
                    Cow::Owned(ids)
                }
            };
            if list.is_empty() {
                return Vec::new();
            }
            lists.push(list);
        }
        lists.sort_by_key(|l| l.len());
        let mut candidates: Option<Vec<SeriesId>> = None;
        for ids in lists {
            candidates = Some(match candidates {
                None => ids.into_owned(),
                Some(c) => c
                    .into_iter()
                    .filter(|id| ids.binary_search(id).is_ok())
                    .collect(),
            });
        }
        let candidates = candidates.unwrap_or_else(|| {
            let mut all: Vec<SeriesId> = self.index.values().copied().collect();
            all.sort_unstable();
            all
        });
        let filters: Vec<(&Matcher, Option<u32>)> = matchers
            .iter()
            .filter(|m| m.is_match(""))
            .map(|m| (m, self.symbols.get(&m.name)))
            .collect();
        candidates
            .into_iter()
            .filter(|&id| {
                let Some(s) = self.get(id) else { return false };
                filters.iter().all(|(m, name)| {
                    let value = name
                        .and_then(|n| s.labels.iter().find(|(k, _)| *k == n))
                        .map_or("", |&(_, v)| &**self.symbols.str(v));
                    m.is_match(value)
                })
            })
            .collect()
    }

    /// All label names, sorted.
    pub fn label_names(&self, ids: Option<&[SeriesId]>) -> Vec<String> {
        let mut names: Vec<String> = match ids {
            None => self
                .postings
                .iter()
                .filter(|(_, vs)| vs.values().any(|ids| !ids.is_empty()))
                .map(|(n, _)| self.symbols.str(*n).to_string())
                .collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.get(*id))
                .flat_map(|s| {
                    s.labels
                        .iter()
                        .map(|(n, _)| self.symbols.str(*n).to_string())
                })
                .collect(),
        };
        names.sort();
        names.dedup();
        names
    }

    /// All values of one label, sorted.
    pub fn label_values(&self, name: &str, ids: Option<&[SeriesId]>) -> Vec<String> {
        let Some(n) = self.symbols.get(name) else {
            return Vec::new();
        };
        let mut values: Vec<String> = match ids {
            None => self
                .postings
                .values(n)
                .map(|vs| {
                    vs.iter()
                        .filter(|(_, ids)| !ids.is_empty())
                        .map(|(v, _)| self.symbols.str(*v).to_string())
                        .collect()
                })
                .unwrap_or_default(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| self.get(*id))
                .filter_map(|s| {
                    s.labels
                        .iter()
                        .find(|(k, _)| *k == n)
                        .map(|(_, v)| self.symbols.str(*v).to_string())
                })
                .collect(),
        };
        values.sort();
        values.dedup();
        values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_adds_merge_and_removes_filter() {
        let mut p = Postings::default();
        p.add(vec![(1, 1, 5), (1, 1, 9), (1, 2, 3)]);
        p.add(vec![(1, 1, 7), (1, 1, 1), (1, 1, 12), (1, 1, 9)]);
        assert_eq!(p.values(1).unwrap()[&1], [1, 5, 7, 9, 12]);
        p.remove(vec![(1, 1, 5), (1, 1, 12), (1, 2, 3)]);
        assert_eq!(p.values(1).unwrap()[&1], [1, 7, 9]);
        assert!(
            !p.values(1).unwrap().contains_key(&2),
            "empty lists are dropped"
        );
        p.remove(vec![(1, 1, 1), (1, 1, 7), (1, 1, 9)]);
        assert!(p.values(1).is_none());
    }
}
