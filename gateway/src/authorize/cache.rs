//! Cached verdicts that are never stale.
//!
//! Most deliveries in a chat ask the same question again: may this identity see a row of
//! this table with these values in the columns its policies read? The answer is cached,
//! keyed by (table, role and claims, those values), with the tables it may have been read
//! from: the relations the policies and the functions they call name (`plan::CacheSpec`:
//! `pg_depend`, and relation names in the bodies, followed by name; bodies that read what
//! they do not name are not cached). Observing scans instead (`pg_stat_xact_all_tables`)
//! was tried and dropped: on reused connections it came back empty. Each table has a
//! generation that the pump bumps, in commit order, whenever the stream shows a change to
//! it; an answer is used only while every table it was read from is at the generation it
//! was read at. Answers that read a table outside the publication (whose changes the
//! stream cannot show) are not kept, nor are those of policies that depend on time or
//! randomness (`plan::CacheSpec`).

use std::collections::{HashMap, HashSet};

use crate::change::Row;

/// What identifies a question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VerdictKey {
    pub table: u32,
    /// Role and claims (`Identity::key`).
    pub identity: String,
    /// The policy-read columns' values, as JSON text.
    pub values: String,
}

impl VerdictKey {
    pub fn new(table: u32, identity: String, columns: &[String], row: &Row) -> Self {
        let mut values = String::new();
        for c in columns {
            match row.get(c) {
                Some(v) => values.push_str(&v.to_string()),
                None => values.push('\u{1}'), // absent (unchanged TOAST): not null
            }
            values.push('\u{0}');
        }
        Self {
            table,
            identity,
            values,
        }
    }
}

struct Entry {
    visible: bool,
    /// (table, generation) it was read at.
    read_from: Vec<(u32, u64)>,
}

/// Hit, miss and staleness counts since the last call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub invalidated: u64,
}

pub struct VerdictCache {
    entries: HashMap<VerdictKey, Entry>,
    generations: HashMap<u32, u64>,
    /// Tables in the publication, loaded on first need; `None` when unknown.
    published: Option<HashSet<u32>>,
    max_entries: usize,
    stats: CacheStats,
}

impl VerdictCache {
    pub fn new(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            generations: HashMap::new(),
            published: None,
            max_entries,
            stats: CacheStats::default(),
        }
    }

    fn generation(&self, table: u32) -> u64 {
        self.generations.get(&table).copied().unwrap_or(0)
    }

    /// The stream showed a change to `table`: every answer read from it is stale.
    pub fn table_changed(&mut self, table: u32) {
        *self.generations.entry(table).or_default() += 1;
    }

    /// Policies, grants or the publication changed: forget everything.
    pub fn clear(&mut self) {
        self.stats.invalidated += self.entries.len() as u64;
        self.entries.clear();
        self.published = None;
    }

    pub fn published_known(&self) -> bool {
        self.published.is_some()
    }

    pub fn set_published(&mut self, tables: HashSet<u32>) {
        self.published = Some(tables);
    }

    pub fn get(&mut self, key: &VerdictKey) -> Option<bool> {
        let fresh = match self.entries.get(key) {
            None => {
                self.stats.misses += 1;
                return None;
            }
            Some(e) => e
                .read_from
                .iter()
                .all(|&(t, g)| self.generations.get(&t).copied().unwrap_or(0) == g),
        };
        if fresh {
            self.stats.hits += 1;
            self.entries.get(key).map(|e| e.visible)
        } else {
            self.stats.invalidated += 1;
            self.stats.misses += 1;
            self.entries.remove(key);
            None
        }
    }

    /// Would an answer read from `tables` be kept (are they all in the publication)?
    pub fn keeps(&self, tables: &[u32]) -> bool {
        self.published
            .as_ref()
            .is_some_and(|p| tables.iter().all(|t| p.contains(t)))
    }

    /// The question `get` just missed, of a kind that is kept, is being asked in the same
    /// batch already: it is answered without asking, so it counts as a hit.
    pub fn asked_in_batch(&mut self) {
        self.stats.misses = self.stats.misses.saturating_sub(1);
        self.stats.hits += 1;
    }

    /// Keeps an answer read from `tables` (at their current generations), unless one of
    /// them is outside the publication.
    pub fn put(&mut self, key: VerdictKey, visible: bool, tables: &HashSet<u32>) {
        let Some(published) = &self.published else {
            return;
        };
        if !tables.iter().all(|t| published.contains(t)) {
            return;
        }
        if self.entries.len() >= self.max_entries {
            // Bounded: start again rather than track recency on the hot path.
            self.stats.invalidated += self.entries.len() as u64;
            self.entries.clear();
        }
        let read_from = tables.iter().map(|&t| (t, self.generation(t))).collect();
        self.entries.insert(key, Entry { visible, read_from });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The counts since the last call.
    pub fn take_stats(&mut self) -> CacheStats {
        std::mem::take(&mut self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(conv: &str) -> VerdictKey {
        let row = json!({"conversation_id": conv, "body": "x"});
        VerdictKey::new(
            1,
            "authenticated\0{}".into(),
            &["conversation_id".into()],
            &Row::from(row.as_object().unwrap().clone()),
        )
    }

    #[test]
    fn an_answer_lives_until_a_table_it_was_read_from_changes() {
        let mut c = VerdictCache::new(100);
        c.set_published([1, 2, 3].into_iter().collect());
        let read: HashSet<u32> = [2].into_iter().collect();
        c.put(key("a"), true, &read);
        assert_eq!(c.get(&key("a")), Some(true));
        assert_eq!(c.get(&key("b")), None, "other values are another question");
        c.table_changed(3);
        assert_eq!(c.get(&key("a")), Some(true), "an unrelated table changed");
        c.table_changed(2);
        assert_eq!(c.get(&key("a")), None, "stale once its table changed");
        let s = c.take_stats();
        assert_eq!((s.hits, s.invalidated), (2, 1));
    }

    #[test]
    fn answers_read_from_unpublished_tables_or_before_the_publication_is_known_are_not_kept() {
        let mut c = VerdictCache::new(100);
        let read: HashSet<u32> = [2].into_iter().collect();
        c.put(key("a"), true, &read);
        assert_eq!(c.get(&key("a")), None, "publication unknown");
        c.set_published([1].into_iter().collect());
        c.put(key("a"), true, &read);
        assert_eq!(c.get(&key("a")), None, "table 2 is not published");
    }

    #[test]
    fn the_body_is_not_part_of_the_question_but_the_keyed_columns_are() {
        let cols = vec!["conversation_id".to_string()];
        let a = VerdictKey::new(
            1,
            "r".into(),
            &cols,
            &Row::from(
                json!({"conversation_id": "c", "body": "1"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        );
        let b = VerdictKey::new(
            1,
            "r".into(),
            &cols,
            &Row::from(
                json!({"conversation_id": "c", "body": "2"})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        );
        let n = VerdictKey::new(
            1,
            "r".into(),
            &cols,
            &Row::from(
                json!({"conversation_id": null})
                    .as_object()
                    .unwrap()
                    .clone(),
            ),
        );
        let missing = VerdictKey::new(1, "r".into(), &cols, &Row::default());
        assert_eq!(a, b);
        assert_ne!(n, missing);
    }

    #[test]
    fn it_is_bounded() {
        let mut c = VerdictCache::new(2);
        c.set_published([1].into_iter().collect());
        let none = HashSet::new();
        for k in ["a", "b", "c"] {
            c.put(key(k), false, &none);
        }
        assert!(c.len() <= 2);
    }
}
