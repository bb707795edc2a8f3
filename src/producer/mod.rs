//! Producers: how items get into a lane.

mod room;

pub(crate) use room::retry_until_room;
