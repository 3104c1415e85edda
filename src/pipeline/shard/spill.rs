//! A shard's raw samples on their way to the archive: spills mid-epoch
//! (at most a few in flight) and the epoch's spool at the seal.

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{ShardCtx, ShardState};
use crate::archive::ArchiveSample;

/// Spills a shard may have on their way to the spool before it waits.
pub(super) const MAX_SPILLS_IN_FLIGHT: usize = 2;

/// Collects the answers of this epoch's spills (`all`: every one, else
/// those in), letting go of their bytes.
pub(super) fn settle_spills(st: &mut ShardState, all: bool) {
    let mut answers = Vec::new();
    st.spills.retain_mut(|(rx, _)| {
        answers.push(match rx.try_recv() {
            Ok(r) => r,
            Err(oneshot::error::TryRecvError::Empty) if !all => return true,
            Err(oneshot::error::TryRecvError::Empty) => Err("a spill was not answered before its seal".into()),
            Err(oneshot::error::TryRecvError::Closed) => Err("the archive spooler stopped".into()),
        });
        false
    });
    for r in answers {
        settle_spill(st, r);
    }
}

pub(super) fn settle_spill(st: &mut ShardState, r: Result<u64, String>) {
    match r {
        Ok(n) => st.spilled += n,
        Err(e) => {
            st.spill_error.get_or_insert(e);
        }
    }
}

/// Bytes of raw samples counted in the body budget, let go when dropped
/// (spooled, discarded, or the shard gone with a pipeline restart).
pub(super) struct RawHeld(pub(super) Arc<crate::telemetry::Stats>, pub(super) u64);

impl Drop for RawHeld {
    fn drop(&mut self) {
        self.0.bodies.let_go(self.1);
    }
}

/// The memory a raw sample holds for the archive, estimated.
pub(super) fn raw_size(s: &crate::decode::Sample, source: &compact_str::CompactString) -> u64 {
    (std::mem::size_of::<ArchiveSample>() + std::mem::size_of_val(&s.readings[..]) + s.vin.len() + source.len()) as u64
}

/// Hands the raw samples of the epoch to the archive spooler; their bytes
/// stay counted until it has written them (`seal` lets go).
pub(super) fn spool_raw(
    ctx: &ShardCtx,
    st: &mut ShardState,
    epoch: u64,
) -> Option<oneshot::Receiver<Result<u64, String>>> {
    let a = ctx.archive.as_ref()?;
    // A spill of this epoch needs the seal (it numbers the spilled frames),
    // even with nothing left to spool.
    let spilled = !st.spills.is_empty() || st.spilled > 0 || st.spill_error.is_some();
    if st.raw.is_empty() && !spilled {
        return None;
    }
    Some(a.spool(ctx.k, epoch, std::mem::take(&mut st.raw), ctx.catalog.clone()))
}
