//! How long something waits: not at all, until woken, or until a deadline.

use std::time::Instant;

/// How long a producer waits for room, or the drainer holds off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waits {
    /// Not at all.
    No,
    /// Until woken.
    Indefinitely,
    /// Until woken or this instant.
    Until(Instant),
}

impl Waits {
    /// A wait until `deadline`, or until woken if there is none.
    #[inline(always)]
    pub(crate) fn until(deadline: Option<Instant>) -> Self {
        deadline.map_or(Self::Indefinitely, Self::Until)
    }

    /// Whether it waits at all.
    #[inline(always)]
    pub(crate) fn waits(self) -> bool {
        self != Self::No
    }

    /// The deadline, if it waits until one.
    #[inline(always)]
    pub(crate) fn deadline(self) -> Option<Instant> {
        match self {
            Self::Until(deadline) => Some(deadline),
            Self::No | Self::Indefinitely => None,
        }
    }
}
