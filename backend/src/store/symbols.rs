//! Interned label strings: each distinct name or value is held once and named by a `u32`.

use std::sync::Arc;

use rustc_hash::FxHashMap;

#[derive(Debug, Default)]
pub(super) struct Symbols {
    ids: FxHashMap<Arc<str>, u32>,
    pub(super) strs: Vec<Arc<str>>,
}

impl Symbols {
    pub(super) fn intern(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.strs.len() as u32;
        let a: Arc<str> = Arc::from(s);
        self.strs.push(a.clone());
        self.ids.insert(a, i);
        i
    }

    pub(super) fn get(&self, s: &str) -> Option<u32> {
        self.ids.get(s).copied()
    }

    pub(super) fn str(&self, i: u32) -> &Arc<str> {
        static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        self.strs
            .get(i as usize)
            .unwrap_or_else(|| EMPTY.get_or_init(|| Arc::from("")))
    }

    pub(super) fn len(&self) -> usize {
        self.strs.len()
    }

    /// Heap bytes, roughly: the strings, their two references and the map entry.
    pub(super) fn bytes(&self) -> usize {
        self.strs.iter().map(|s| s.len() + 16 + 8 + 24).sum()
    }
}
