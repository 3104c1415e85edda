//! The metric catalog: metric names interned to small integer ids, once.
//!
//! The hot path carries `MetricId`s, never names; a name is hashed only at
//! the catalog lookup of each decoded key. The catalog is bounded
//! (`max_metrics`): a stream that invents unbounded metric names (a bug or an
//! attack) gets its readings dead-lettered instead of growing memory.

use std::collections::HashMap;

use crate::util::hash::FastHash;

/// A metric's id in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MetricId(pub u32);

#[derive(Debug)]
pub struct MetricCatalog {
    ids: HashMap<Box<str>, MetricId, FastHash>,
    names: Vec<Box<str>>,
    max: usize,
    /// The metric seen at each position of the previous wide sample. A fleet
    /// sends its metrics in a stable order, so comparing the name at the same
    /// position (a short memcmp) usually replaces the hash lookup.
    order: Vec<MetricId>,
}

/// The catalog is full; the metric is new.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "metric '{name}' is not admitted: the catalog is full ({max} metrics), or the name is empty, too long or has control characters"
)]
pub struct CatalogFull {
    pub name: String,
    pub max: usize,
}

/// Longest metric name accepted (it becomes a VARCHAR(128) key column).
pub const MAX_METRIC_NAME: usize = 128;

impl MetricCatalog {
    pub fn new(max_metrics: usize) -> Self {
        MetricCatalog { ids: HashMap::default(), names: Vec::new(), max: max_metrics, order: Vec::new() }
    }

    /// The id of `name`, interning it on first sight.
    pub fn intern(&mut self, name: &str) -> Result<MetricId, CatalogFull> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        if self.names.len() >= self.max
            || name.is_empty()
            || name.len() > MAX_METRIC_NAME
            || name.chars().any(char::is_control)
            || name == "\\N"
        {
            return Err(CatalogFull { name: name.chars().take(MAX_METRIC_NAME).collect(), max: self.max });
        }
        let id = MetricId(self.names.len() as u32);
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        Ok(id)
    }

    /// Like [`MetricCatalog::intern`] for the metric at position `pos` of a
    /// wide sample, predicting it from the previous sample's order.
    pub fn intern_at(&mut self, pos: usize, name: &str) -> Result<MetricId, CatalogFull> {
        if let Some(&id) = self.order.get(pos)
            && &*self.names[id.0 as usize] == name
        {
            return Ok(id);
        }
        let id = self.intern(name)?;
        if pos < self.order.len() {
            self.order[pos] = id;
        } else if pos == self.order.len() && pos < 65_536 {
            self.order.push(id);
        }
        Ok(id)
    }

    pub fn name(&self, id: MetricId) -> &str {
        &self.names[id.0 as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_intern_to_stable_ids_and_the_catalog_is_bounded() {
        let mut c = MetricCatalog::new(2);
        let a = c.intern("speed").unwrap();
        assert_eq!(c.intern("speed").unwrap(), a);
        let b = c.intern("rpm").unwrap();
        assert_ne!(a, b);
        assert_eq!(c.name(b), "rpm");
        assert!(c.intern("soc").is_err());
        assert_eq!(c.intern("speed").unwrap(), a, "known names still resolve when full");
        assert!(MetricCatalog::new(10).intern(&"x".repeat(129)).is_err());
        assert!(MetricCatalog::new(10).intern("bad\x01name").is_err());
        assert!(MetricCatalog::new(10).intern("line\nbreak").is_err());
    }

    #[test]
    fn positional_prediction_agrees_with_the_hash_lookup() {
        let mut c = MetricCatalog::new(100);
        let order1 = ["a", "b", "c"];
        let ids1: Vec<MetricId> = order1.iter().enumerate().map(|(i, n)| c.intern_at(i, n).unwrap()).collect();
        // Same order: predicted; shuffled order: still the same ids.
        let again: Vec<MetricId> = order1.iter().enumerate().map(|(i, n)| c.intern_at(i, n).unwrap()).collect();
        assert_eq!(ids1, again);
        for (i, n) in ["c", "a", "d", "b"].iter().enumerate() {
            assert_eq!(c.intern_at(i, n).unwrap(), c.intern(n).unwrap());
        }
    }
}
