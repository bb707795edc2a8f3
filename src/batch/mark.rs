//! Per-item marks a batch buffer keeps while failure policies are on: what
//! the handler decided for each item.

/// Nothing special: pending, or completed through its origin.
pub(crate) const NONE: u8 = 0;
/// To be retried.
pub(crate) const RETRY: u8 = 1;
/// To be retried after the maximum delay.
pub(crate) const RATE_LIMITED: u8 = 2;
/// Failed for good: its ticket has its error; the item goes to the
/// dead-letter handler.
pub(crate) const DEAD: u8 = 3;
