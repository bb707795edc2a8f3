//! Completion slots and tickets: how each item's result gets back to the
//! thread or task that submitted it.
//!
//! Every lane has a table of completion slots. A producer that wants the
//! result takes a free slot of its lane (a CAS from `FREE` to `ARMED`,
//! scanning from its private cursor), claims the item's sequence in the ring,
//! and publishes the slot's index in the item's stamp; it gets a [`Ticket`]
//! naming the slot. The drainer writes the result into the slot and wakes
//! the ticket's waker if one is registered; the ticket takes the result and
//! frees the slot. A ticket may be dropped at any moment: whoever of the two
//! comes second frees the slot.
//!
//! Slots are not tied to sequence numbers, so a ticket held for a long time
//! blocks nobody but the count of free slots: a lane has `result_slots`
//! tickets outstanding at most.
//!
//! One waker per slot serves both a thread blocked in [`Ticket::wait`] (a
//! waker that unparks it) and a task awaiting the ticket.
//!
//! Tickets hold raw pointers into the table instead of a reference count, so a
//! submission pays no shared-counter RMW. The table outlives the batcher: when
//! the batcher's state is dropped, every slot still owned by a ticket is marked
//! `ORPHANED` and counted, and the ticket that frees the last such slot frees
//! the table.

mod slot;
mod table;
mod ticket;

pub(crate) use slot::CompletionSlot;
pub(crate) use table::{LaneCompletions, Table, TableOwner};
pub use ticket::Ticket;
#[cfg(all(loom, test))]
pub(crate) use ticket::thread_waker;

use slot::*;
use ticket::*;
