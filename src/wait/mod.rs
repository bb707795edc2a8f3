//! How threads wait: the public [`WaitStrategy`], the spin/yield/park
//! stepper that implements it, the notifier that wakes producers waiting for
//! room, the flush and exit progress that `flush` and `shutdown` wait on,
//! and how long a wait lasts.
//! Nothing here knows of rings, lanes or items.

mod backoff;
mod notifier;
mod progress;
mod waits;

pub(crate) use backoff::Backoff;
pub use backoff::WaitStrategy;
pub(crate) use notifier::Notifier;
pub(crate) use progress::Progress;
pub(crate) use waits::Waits;
