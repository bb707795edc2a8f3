//! Filling the batch buffer from the chosen group (or everything, on
//! flush and shutdown).

use crate::batch::{BatchBuf, Origin};
use crate::error::{Callback, Error};
use crate::shape::{Assembler, NEVER};

impl<T> Assembler<T> {
    /// Fills `buf` from group `group` (a key group), or from the class lists
    /// in order: starving classes first, then by priority.
    pub(crate) fn fill(
        &mut self,
        buf: &mut BatchBuf<T>,
        group: Option<usize>,
        now: u64,
        effective: usize,
        complete: &mut dyn FnMut(Origin, Error),
    ) {
        self.positions.clear();
        buf.meta.taken = NEVER;
        let mut bytes = 0;
        match group {
            Some(g) => {
                let limit = self.groups[g].limits.max_items(effective);
                self.fill_from(buf, g, limit, &mut bytes, now, complete);
                if self.groups[g].len == 0 {
                    let key = self.groups[g].key;
                    self.index.remove(&key);
                    self.groups[g].open = false;
                    self.free_groups.push(g);
                }
            }
            None => {
                let limit = effective;
                let mut order = [0usize; 4];
                let mut n = 0;
                for class in 1..self.classes {
                    let arrived = self
                        .head_of(&self.groups[class])
                        .map_or(NEVER, |s| s.arrived);
                    if self.starving(class, arrived, now) {
                        order[n] = class;
                        n += 1;
                    }
                }
                // The longest-waiting starving class first.
                order[..n].sort_unstable_by_key(|&class| {
                    self.head_of(&self.groups[class]).map_or(NEVER, |s| s.order)
                });
                for class in 0..self.classes {
                    if !order[..n].contains(&class) {
                        order[n] = class;
                        n += 1;
                    }
                }
                for &class in &order[..n] {
                    if !self.fill_from(buf, class, limit, &mut bytes, now, complete) {
                        break;
                    }
                }
            }
        }
        buf.meta.bytes = bytes as u64;
    }

    /// Moves items from group `g` into `buf` up to `limit` items and the
    /// byte limit, conflating and expiring on the way. Returns whether the
    /// batch has room for more (from another list).
    pub(crate) fn fill_from(
        &mut self,
        buf: &mut BatchBuf<T>,
        g: usize,
        limit: usize,
        bytes: &mut usize,
        now: u64,
        complete: &mut dyn FnMut(Origin, Error),
    ) -> bool {
        let max_bytes = self.policy.max_bytes;
        let limit = limit.min(buf.items.capacity());
        loop {
            let Some(head) = self.head_of(&self.groups[g]) else {
                return buf.len() < limit;
            };
            if head.expires <= now {
                let staged = self.pop(g).expect("a head exists");
                self.expire(staged, complete);
                continue;
            }
            // Conflation: the same key earlier in this batch is replaced.
            let mut conflation_key = None;
            if let Some(keys) = &self.policy.conflate {
                let same = keys.key_hash(&head.item).and_then(|key| {
                    conflation_key = Some(key);
                    match self.positions.get(&key) {
                        Some(&pos) => keys
                            .same_key(&buf.items[pos], &head.item)
                            .map(|same| same.then_some(pos)),
                        None => Ok(None),
                    }
                });
                let pos = match same {
                    Ok(pos) => pos,
                    Err(message) => {
                        let staged = self.pop(g).expect("a head exists");
                        self.panicked(staged, Callback::ConflateBy, &message, complete);
                        continue;
                    }
                };
                if let Some(pos) = pos {
                    // The superseded item's weight stays counted: the byte
                    // total errs on the safe side.
                    if max_bytes.is_some_and(|max| *bytes + head.weight > max) {
                        return false;
                    }
                    let staged = self.pop(g).expect("a head exists");
                    *bytes += staged.weight;
                    let (old_item, old_origin) = buf.replace(pos, staged.item, staged.origin);
                    self.tally.superseded += 1;
                    complete(old_origin, Error::Superseded);
                    self.drop_item(old_item);
                    continue;
                }
            }
            if buf.len() >= limit {
                return false;
            }
            if let Some(max) = max_bytes {
                if head.weight > max {
                    // Travels alone (`Oversize::Alone`).
                    if buf.is_empty() {
                        let staged = self.pop(g).expect("a head exists");
                        buf.note_run(staged.since, 1);
                        buf.meta.taken = buf.meta.taken.min(staged.arrived);
                        buf.push(staged.item, staged.origin);
                    }
                    return false;
                }
                if *bytes + head.weight > max {
                    return false;
                }
            }
            let staged = self.pop(g).expect("a head exists");
            *bytes += staged.weight;
            if let Some(key) = conflation_key {
                self.positions.entry(key).or_insert(buf.len());
            }
            buf.note_run(staged.since, 1);
            buf.meta.taken = buf.meta.taken.min(staged.arrived);
            buf.push(staged.item, staged.origin);
        }
    }

    /// Moves every staged item out, oldest first per list.
    pub(crate) fn take_all(&mut self, mut f: impl FnMut(T, Origin)) {
        while let Some(staged) = self.intake.pop_front() {
            f(staged.item, staged.origin);
        }
        for g in 0..self.groups.len() {
            while let Some(staged) = self.pop(g) {
                f(staged.item, staged.origin);
            }
            if self.policy.group.is_some() && self.groups[g].open {
                self.groups[g].open = false;
                self.free_groups.push(g);
            }
        }
        self.index.clear();
    }
}
