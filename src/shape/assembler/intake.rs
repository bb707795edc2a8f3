//! Intake: routing items from the lanes into their groups, contained key
//! and weigher panics, expiry, and the group lists.

use crate::batch::Origin;
use crate::error::{Callback, CallbackPanic, Error};
use crate::shape::assembler::{Entry, Group, NIL, Staged};
use crate::shape::{Assembler, NEVER};
use crate::{GroupLimits, Oversize};

impl<T> Assembler<T> {
    /// Moves the intake into the groups. Returns a group to dispatch when
    /// the next item needs a group slot and none is free.
    pub(crate) fn route(
        &mut self,
        now: u64,
        complete: &mut dyn FnMut(Origin, Error),
    ) -> Option<usize> {
        while let Some(mut staged) = self.intake.pop_front() {
            if staged.expires <= now {
                self.expire(staged, complete);
                continue;
            }
            if let (Some(limit), Some(weigher)) = (self.policy.max_bytes, &self.policy.weigher) {
                staged.weight = match crate::contain::call(|| weigher(&staged.item)) {
                    Ok(weight) => weight,
                    Err(message) => {
                        self.panicked(staged, Callback::Weigher, &message, complete);
                        continue;
                    }
                };
                if staged.weight > limit && self.policy.oversize == Oversize::Fail {
                    self.tally.too_large += 1;
                    complete(
                        staged.origin,
                        Error::TooLarge {
                            // Saturates, as `Error::TooLarge` documents.
                            weight: u32::try_from(staged.weight).unwrap_or(u32::MAX),
                            // `validate` refuses limits above `u32::MAX`.
                            limit: u32::try_from(limit).unwrap_or(u32::MAX),
                        },
                    );
                    self.drop_item(staged.item);
                    continue;
                }
            }
            let group = match &self.policy.group {
                None => staged.class as usize,
                Some(keys) => {
                    let key = match keys.key_hash(&staged.item) {
                        Ok(hash) => hash ^ (u64::from(staged.class) << 61),
                        Err(message) => {
                            self.panicked(staged, Callback::GroupBy, &message, complete);
                            continue;
                        }
                    };
                    match self.index.get(&key).copied() {
                        Some(g) => {
                            let head = self.groups[g].head as usize;
                            let same = match &self.slab[head].staged {
                                Some(h) => keys.same_key(&h.item, &staged.item),
                                None => Ok(false),
                            };
                            match same {
                                Ok(true) => g,
                                Ok(false) => {
                                    // Two keys with one hash: dispatch the
                                    // group in the way first.
                                    self.intake.push_front(staged);
                                    return Some(g);
                                }
                                Err(message) => {
                                    self.panicked(staged, Callback::GroupBy, &message, complete);
                                    continue;
                                }
                            }
                        }
                        None => match self.free_groups.pop() {
                            Some(g) => {
                                let limits = match &self.policy.group_limits {
                                    None => Ok(GroupLimits::default()),
                                    Some(f) => crate::contain::call(|| f(&staged.item)),
                                };
                                let limits = match limits {
                                    Ok(limits) => limits,
                                    Err(message) => {
                                        self.free_groups.push(g);
                                        self.panicked(
                                            staged,
                                            Callback::GroupLimits,
                                            &message,
                                            complete,
                                        );
                                        continue;
                                    }
                                };
                                let group = &mut self.groups[g];
                                *group = Group::empty(staged.class);
                                group.key = key;
                                group.limits = limits;
                                group.open = true;
                                self.index.insert(key, g);
                                g
                            }
                            None => {
                                self.intake.push_front(staged);
                                return Some(self.oldest_group());
                            }
                        },
                    }
                }
            };
            self.append(group, staged);
        }
        None
    }

    /// A callback panicked on `staged` (contained): its ticket fails with
    /// [`Error::CallbackPanicked`] and the item is dropped.
    #[cold]
    #[inline(never)]
    pub(crate) fn panicked(
        &mut self,
        staged: Staged<T>,
        callback: Callback,
        message: &str,
        complete: &mut dyn FnMut(Origin, Error),
    ) {
        self.panics.callback();
        complete(
            staged.origin,
            Error::CallbackPanicked(CallbackPanic::new(callback, message)),
        );
        self.drop_item(staged.item);
    }

    /// Drops an item that leaves the staging area without reaching the
    /// handler, containing a panic of its `Drop` (counted).
    #[inline]
    pub(crate) fn drop_item(&self, item: T) {
        if !crate::contain::drop_value(item) {
            self.panics.drops(1);
        }
    }

    /// The open key group whose head is oldest.
    pub(crate) fn oldest_group(&self) -> usize {
        let mut best = None;
        for (g, group) in self.groups.iter().enumerate() {
            if group.len == 0 {
                continue;
            }
            let order = self.head_of(group).map_or(NEVER, |s| s.order);
            if best.is_none_or(|(_, o)| order < o) {
                best = Some((g, order));
            }
        }
        best.map_or(0, |(g, _)| g)
    }

    pub(crate) fn head_of(&self, group: &Group) -> Option<&Staged<T>> {
        if group.head == NIL {
            None
        } else {
            self.slab[group.head as usize].staged.as_ref()
        }
    }

    pub(crate) fn append(&mut self, g: usize, staged: Staged<T>) {
        let index = self
            .free
            .pop()
            .expect("the intake never holds more than the slab's free entries");
        let weight = staged.weight;
        self.slab[index as usize] = Entry {
            staged: Some(staged),
            next: NIL,
        };
        let group = &mut self.groups[g];
        if group.tail == NIL {
            group.head = index;
        } else {
            self.slab[group.tail as usize].next = index;
        }
        group.tail = index;
        group.len += 1;
        group.bytes += weight;
        self.staged += 1;
        self.staged_bytes += weight;
    }

    /// Removes the head of group `g`.
    pub(crate) fn pop(&mut self, g: usize) -> Option<Staged<T>> {
        let group = &mut self.groups[g];
        if group.head == NIL {
            return None;
        }
        let index = group.head;
        let entry = &mut self.slab[index as usize];
        let staged = entry.staged.take().expect("a listed entry holds an item");
        group.head = entry.next;
        if group.head == NIL {
            group.tail = NIL;
        }
        group.len -= 1;
        group.bytes -= staged.weight;
        self.staged -= 1;
        self.staged_bytes -= staged.weight;
        self.free.push(index);
        Some(staged)
    }

    pub(crate) fn expire(&mut self, staged: Staged<T>, complete: &mut dyn FnMut(Origin, Error)) {
        self.tally.expired += 1;
        complete(staged.origin, Error::Expired);
        self.drop_item(staged.item);
    }

    /// The earliest expiry among a group's items.
    pub(crate) fn earliest_expiry(&self, group: &Group) -> u64 {
        if !self.policy.stamps_expiry() {
            return NEVER;
        }
        let mut earliest = NEVER;
        let mut index = group.head;
        while index != NIL {
            let entry = &self.slab[index as usize];
            if let Some(s) = &entry.staged {
                earliest = earliest.min(s.expires);
            }
            index = entry.next;
        }
        earliest
    }
}
