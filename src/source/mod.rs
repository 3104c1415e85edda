//! Sources hand the pipeline raw messages.

pub mod kafka;
pub mod mqtt;
