//! The demo's reusable parts. [`load`] holds the load simulator: the four
//! patterns that move a backend's background load, and with it the rate
//! producers offer, over a run.

pub mod load;
