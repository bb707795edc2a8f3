//! One batch buffer: the items, where each result goes, and what the
//! handler and the policies note per batch and per item; the appender that
//! fills it.

/// Where an item's result goes: packed `(lane, completion slot index)`, or
/// one of the two sentinels.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub(crate) struct Origin(u64);

impl Origin {
    /// A fire-and-forget item: nobody waits for its result.
    pub(crate) const NONE: Origin = Origin(u64::MAX);
    /// The item's result was already delivered.
    pub(crate) const DONE: Origin = Origin(u64::MAX - 1);
    /// (`inline_when_idle`) The submitter runs this one-item batch itself:
    /// the result goes to the batch's direct cell, not to a slot.
    pub(crate) const DIRECT: Origin = Origin(u64::MAX - 2);

    /// Completion slot `index` of lane `lane` (`lane` is below
    /// [`MAX_LANES`](crate::MAX_LANES) and `index` below
    /// [`MAX_CAPACITY`](crate::MAX_CAPACITY), both checked by the
    /// configuration, so the pair never meets a sentinel).
    #[inline(always)]
    pub(crate) fn ticket(lane: usize, index: usize) -> Origin {
        Origin(((lane as u64) << 32) | (index as u32 as u64))
    }

    /// `(lane, completion slot index)` for a pending ticket (not for a
    /// [`DIRECT`](Self::DIRECT) item).
    #[inline(always)]
    pub(crate) fn pending(self) -> Option<(usize, usize)> {
        if self.0 >= Origin::DIRECT.0 {
            None
        } else {
            Some(((self.0 >> 32) as usize, self.0 as u32 as usize))
        }
    }

    /// Whether somebody waits for this item's result (a ticket or the
    /// submitter running it directly).
    #[inline(always)]
    pub(crate) fn wants_result(self) -> bool {
        self != Origin::NONE && self != Origin::DONE
    }
}

/// One batch buffer: the items and, in parallel, where each result goes.
#[derive(Debug)]
pub(crate) struct BatchBuf<T> {
    pub(crate) items: Vec<T>,
    pub(crate) origins: Vec<Origin>,
    /// Items with a ticket (an origin other than `NONE`): when there are
    /// none, nothing has to be delivered after the handler returns.
    pub(crate) tickets: usize,
    /// Items the handler has completed (tickets or not).
    pub(crate) completed: usize,
    /// Load feedback the handler reported for this batch.
    pub(crate) feedback: Option<crate::batch::LoadFeedback>,
    /// Items completed with an error (counted in `Stats::items_failed`).
    pub(crate) failed: usize,
    /// With histograms: `(since, count)` runs, `since` being the time (ns
    /// since the batcher's epoch) each run's items were known to be
    /// published after.
    pub(crate) runs: Vec<(u64, u64)>,
    /// With failure policies: per-item marks (`batch::mark`) and errors,
    /// sized to the batch just before the handler runs.
    pub(crate) marks: Vec<u8>,
    pub(crate) errors: Vec<Option<crate::error::Error>>,
    /// Why the batch was dispatched, for its span (zero-sized without the
    /// `tracing` feature); it stays with the buffer through retries.
    pub(crate) tag: crate::trace::BatchTag,
    /// What the handler can read about the batch (`Batch::id` and the
    /// rest), set at dispatch and kept through retries.
    pub(crate) meta: BatchMeta,
    /// (feature `durable`) The items' ids in the store, once written, and
    /// why the batch is not durable if a write failed.
    #[cfg(feature = "durable")]
    pub(crate) durable: DurableMarks,
}

/// A batch's place in the durable store.
#[cfg(feature = "durable")]
#[derive(Debug, Default)]
pub(crate) struct DurableMarks {
    /// Per item, in the items' order; empty until the batch is written (a
    /// replayed batch has them from the start). Failure policies keep them
    /// in step with the items; the items done are the ones past `len()`.
    pub(crate) ids: Vec<crate::durable::ItemId>,
    /// Why the batch could not be written.
    pub(crate) error: Option<crate::durable::StoreError>,
}

/// A batch's identity and history, as the handler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    /// The batcher's dispatch sequence number of the batch (from 1).
    pub(crate) id: u64,
    /// The handler's call on this batch (1 for the first, 2 for the first
    /// retry...).
    pub(crate) attempt: u32,
    /// When its oldest item was accepted, as far as the drainer knows.
    pub(crate) oldest: Option<std::time::Instant>,
    /// Shaping: the earliest take time (ns since the epoch) of the items
    /// filled in, or `NEVER`.
    pub(crate) taken: u64,
    /// With a weigher: the batch's weight.
    pub(crate) bytes: u64,
    /// With `group_by`: the hash of the batch's key.
    pub(crate) group: Option<u64>,
}

impl BatchMeta {
    pub(crate) const NEW: BatchMeta = BatchMeta {
        id: 0,
        attempt: 1,
        oldest: None,
        taken: u64::MAX,
        bytes: 0,
        group: None,
    };
}

/// Most runs a batch buffer keeps apart (later ones merge into the last).
const RUNS: usize = 32;

impl<T> BatchBuf<T> {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            items: Vec::with_capacity(capacity),
            origins: Vec::with_capacity(capacity),
            tickets: 0,
            completed: 0,
            feedback: None,
            failed: 0,
            runs: Vec::new(),
            marks: Vec::new(),
            errors: Vec::new(),
            tag: crate::trace::BatchTag::new(),
            meta: BatchMeta::NEW,
            #[cfg(feature = "durable")]
            durable: DurableMarks::default(),
        }
    }

    #[inline(always)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    #[inline(always)]
    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Appends an item; the caller keeps `len() < capacity`, so this never
    /// reallocates.
    #[inline(always)]
    pub(crate) fn push(&mut self, item: T, origin: Origin) {
        debug_assert!(self.items.len() < self.items.capacity());
        self.items.push(item);
        self.origins.push(origin);
        self.tickets += usize::from(origin != Origin::NONE);
    }

    /// An [`Appender`] for up to `room` more items (fewer if the buffer has
    /// less spare capacity): the drainer's fast way to fill the buffer from
    /// a ring, one capacity check for the run instead of two per item.
    #[inline(always)]
    pub(crate) fn appender(&mut self, room: usize) -> Appender<'_, T> {
        let room = room
            .min(self.items.capacity() - self.items.len())
            .min(self.origins.capacity() - self.origins.len());
        let items = self.items.spare_capacity_mut().as_mut_ptr().cast::<T>();
        let origins = self
            .origins
            .spare_capacity_mut()
            .as_mut_ptr()
            .cast::<Origin>();
        Appender {
            buf: self,
            items,
            origins,
            len: 0,
            room,
            tickets: 0,
        }
    }

    /// Replaces the item at `index` (conflation), returning the old item and
    /// its origin.
    pub(crate) fn replace(&mut self, index: usize, item: T, origin: Origin) -> (T, Origin) {
        let old_item = core::mem::replace(&mut self.items[index], item);
        let old_origin = core::mem::replace(&mut self.origins[index], origin);
        self.tickets -= usize::from(old_origin != Origin::NONE);
        self.tickets += usize::from(origin != Origin::NONE);
        (old_item, old_origin)
    }

    /// Empties the buffer, keeping its allocation. Returns how many items'
    /// `Drop` panicked (each contained: see [`contain::clear_vec`]).
    ///
    /// [`contain::clear_vec`]: crate::contain::clear_vec
    #[must_use = "drop panics are counted in the statistics"]
    #[inline]
    pub(crate) fn clear(&mut self) -> usize {
        let panics = crate::contain::clear_vec(&mut self.items);
        self.origins.clear();
        self.tickets = 0;
        self.completed = 0;
        self.feedback = None;
        self.failed = 0;
        // What a dispatch may not set again (a batch of the shutdown path
        // is not filled by the assembler); `id` and `attempt` it always sets.
        self.meta.oldest = None;
        self.meta.taken = u64::MAX;
        self.meta.bytes = 0;
        self.meta.group = None;
        // Empty unless histograms or failure policies are on: skip the calls.
        if !self.runs.is_empty() {
            self.runs.clear();
        }
        if !self.marks.is_empty() {
            self.marks.clear();
        }
        if !self.errors.is_empty() {
            self.errors.clear();
        }
        #[cfg(feature = "durable")]
        {
            self.durable.ids.clear();
            self.durable.error = None;
        }
        panics
    }

    /// With failure policies: makes room for the marks (at build time).
    pub(crate) fn with_marks(mut self) -> Self {
        let capacity = self.items.capacity();
        self.marks.reserve_exact(capacity);
        self.errors.reserve_exact(capacity);
        self
    }

    /// With failure policies: one clear mark per item, before the handler.
    pub(crate) fn prepare_marks(&mut self) {
        self.marks.clear();
        self.marks
            .resize(self.items.len(), crate::batch::mark::NONE);
        self.errors.clear();
        self.errors.resize_with(self.items.len(), || None);
    }

    /// Whether per-item marks are kept (failure policies on).
    #[inline]
    pub(crate) fn marking(&self) -> bool {
        !self.marks.is_empty()
    }

    /// With histograms: makes room for the runs (at build time).
    pub(crate) fn with_runs(mut self) -> Self {
        self.runs.reserve_exact(RUNS);
        self
    }

    /// With histograms: `count` more items known published after `since`.
    #[inline]
    pub(crate) fn note_run(&mut self, since: u64, count: u64) {
        if self.runs.capacity() == 0 {
            // Not recording (no room was made at build time).
            return;
        }
        let full = self.runs.len() == RUNS;
        match self.runs.last_mut() {
            Some(last) if last.0 == since => last.1 += count,
            Some(last) if full => {
                // Full: merge, keeping the earlier time (a longer wait).
                last.0 = last.0.min(since);
                last.1 += count;
            }
            _ => self.runs.push((since, count)),
        }
    }
}

/// Appends items with their origins to a [`BatchBuf`], writing into its
/// spare capacity and keeping the count in a register; the buffer's lengths
/// and ticket count are brought up to date when the appender is dropped
/// (so a panic loses nothing appended before it).
pub(crate) struct Appender<'a, T> {
    buf: &'a mut BatchBuf<T>,
    /// The first spare item and origin places of `buf` when this was made.
    items: *mut T,
    origins: *mut Origin,
    /// Items appended so far.
    len: usize,
    /// Items this appender may append (at most the spare capacity).
    room: usize,
    /// Appended items with a ticket.
    tickets: usize,
}

impl<T> Appender<'_, T> {
    /// Items this appender may append in all.
    #[inline(always)]
    pub(crate) fn room(&self) -> usize {
        self.room
    }

    /// Appends `item`, whose result goes to `origin`.
    ///
    /// More than [`room`](Self::room) items is a bug of the caller's (a
    /// lane run takes at most `room`): it aborts the process rather than
    /// unwind, so that a lane run appending through here calls nothing
    /// that can unwind (its guard then costs nothing: see
    /// `ring::CommitOnUnwind`).
    #[inline(always)]
    pub(crate) fn push(&mut self, item: T, origin: Origin) {
        if self.len == self.room {
            appender_full();
        }
        // `room` is at most the spare capacity of both vectors when the
        // appender was made, and the appender borrows the buffer mutably,
        // so nothing changed them since; the lengths are set on drop.
        // SAFETY: `len < room`: places `len` of the spare room, uninitialised.
        unsafe {
            self.items.add(self.len).write(item);
            self.origins.add(self.len).write(origin);
        }
        self.len += 1;
        self.tickets += usize::from(origin != Origin::NONE);
    }
}

impl<T> Drop for Appender<'_, T> {
    #[inline(always)]
    fn drop(&mut self) {
        let buf = &mut *self.buf;
        // SAFETY: `push` initialised the `len` places after each vector's
        // length (at most their spare capacity, see `push`).
        unsafe {
            buf.items.set_len(buf.items.len() + self.len);
            buf.origins.set_len(buf.origins.len() + self.len);
        }
        buf.tickets += self.tickets;
    }
}

#[cold]
#[inline(never)]
fn appender_full() -> ! {
    // An invariant of ours broken: no unwinding through a lane run.
    eprintln!("ringbatch: a batch appender was given more items than its room; aborting");
    std::process::abort()
}
