//! Intake: routing items from the lanes into their groups, contained key
//! and weigher panics, expiry, and the group lists.

use crate::batch::Origin;
use crate::error::{Callback, CallbackPanic, Error};
use crate::shape::assembler::{Entry, Group, NIL, Staged};
use crate::shape::{Assembler, NEVER};
use crate::{GroupLimits, Oversize};

/// Where [`Assembler::route`] puts an item.
enum Placed<T> {
    /// Into this group.
    In(usize, Staged<T>),
    /// Nowhere: a callback panicked on it and it was failed.
    Gone,
    /// Back into the intake: this group must be dispatched first.
    Blocked(usize),
}

impl<T> Assembler<T> {
    /// Moves the intake into the groups. Returns a group to dispatch when
    /// the next item needs a group slot and none is free.
    pub(crate) fn route(
        &mut self,
        now: u64,
        complete: &mut dyn FnMut(Origin, Error),
    ) -> Option<usize> {
        while let Some(staged) = self.intake.pop_front() {
            if staged.expires <= now {
                self.expire(staged, complete);
                continue;
            }
            let Some(staged) = self.weigh(staged, complete) else {
                continue;
            };
            match self.place(staged, complete) {
                Placed::In(group, staged) => self.append(group, staged),
                Placed::Gone => {}
                Placed::Blocked(group) => return Some(group),
            }
        }
        None
    }

    /// With a byte limit: weighs the item (a weigher panic fails it) and
    /// fails it if it is too large for any batch under `Oversize::Fail`.
    /// `None` when the item is gone.
    #[inline(always)]
    fn weigh(
        &mut self,
        mut staged: Staged<T>,
        complete: &mut dyn FnMut(Origin, Error),
    ) -> Option<Staged<T>> {
        let (Some(limit), Some(weigher)) = (self.policy.max_bytes, &self.policy.weigher) else {
            return Some(staged);
        };
        staged.weight = match crate::contain::call(|| weigher(&staged.item)) {
            Ok(weight) => weight,
            Err(message) => {
                self.panicked(staged, Callback::Weigher, &message, complete);
                return None;
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
            return None;
        }
        Some(staged)
    }

    /// The group `staged` goes to: its class without key groups, else the
    /// open group of its key, or a new one.
    #[inline(always)]
    fn place(&mut self, staged: Staged<T>, complete: &mut dyn FnMut(Origin, Error)) -> Placed<T> {
        let Some(keys) = &self.policy.group else {
            return Placed::In(staged.class as usize, staged);
        };
        let key = match keys.key_hash(&staged.item) {
            Ok(hash) => hash ^ (u64::from(staged.class) << 61),
            Err(message) => {
                self.panicked(staged, Callback::GroupBy, &message, complete);
                return Placed::Gone;
            }
        };
        let Some(g) = self.index.get(&key).copied() else {
            return self.open_group(key, staged, complete);
        };
        let head = self.groups[g].head as usize;
        let same = match &self.slab[head].staged {
            Some(h) => keys.same_key(&h.item, &staged.item),
            None => Ok(false),
        };
        match same {
            Ok(true) => Placed::In(g, staged),
            Ok(false) => {
                // Two keys with one hash: dispatch the group in the way
                // first.
                self.intake.push_front(staged);
                Placed::Blocked(g)
            }
            Err(message) => {
                self.panicked(staged, Callback::GroupBy, &message, complete);
                Placed::Gone
            }
        }
    }

    /// Opens a group for `key` with its limits (a limits panic fails the
    /// item), or, with no group slot free, dispatches the oldest group first.
    fn open_group(
        &mut self,
        key: u64,
        staged: Staged<T>,
        complete: &mut dyn FnMut(Origin, Error),
    ) -> Placed<T> {
        let Some(g) = self.free_groups.pop() else {
            self.intake.push_front(staged);
            return Placed::Blocked(self.oldest_group());
        };
        let limits = match &self.policy.group_limits {
            None => Ok(GroupLimits::default()),
            Some(f) => crate::contain::call(|| f(&staged.item)),
        };
        let limits = match limits {
            Ok(limits) => limits,
            Err(message) => {
                self.free_groups.push(g);
                self.panicked(staged, Callback::GroupLimits, &message, complete);
                return Placed::Gone;
            }
        };
        let group = &mut self.groups[g];
        *group = Group::empty(staged.class);
        group.key = key;
        group.limits = limits;
        group.open = true;
        self.index.insert(key, g);
        Placed::In(g, staged)
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
