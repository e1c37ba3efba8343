//! Heap allocations on the share hot path, counted with a wrapping global allocator.
//!
//! One `#[test]` only: the counter is process-wide, and parallel tests would pollute it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use hashshift_protocol::sv2::*;
use tokio_util::codec::{Decoder, Encoder};

struct Counting;

static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: delegates every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCS.load(Ordering::Relaxed);
    let r = f();
    (ALLOCS.load(Ordering::Relaxed) - before, r)
}

#[test]
fn hot_path_allocations() {
    let ext = Message::from(SubmitSharesExtended {
        channel_id: 1,
        sequence_number: 2,
        job_id: 3,
        nonce: 4,
        ntime: 5,
        version: 6,
        extranonce: B032::try_from(vec![9u8; 8]).unwrap(),
    });
    let std_share = Message::from(SubmitSharesStandard {
        channel_id: 1,
        sequence_number: 2,
        job_id: 3,
        nonce: 4,
        ntime: 5,
        version: 6,
    });
    let job = Message::from(NewMiningJob {
        channel_id: 1,
        job_id: 2,
        min_ntime: Some(3),
        version: 4,
        merkle_root: [5; 32],
    });
    let prev = SetNewPrevHash {
        channel_id: 1,
        job_id: 2,
        prev_hash: [3; 32],
        min_ntime: 4,
        nbits: 5,
    };
    let ok = SubmitSharesSuccess {
        channel_id: 1,
        last_sequence_number: 2,
        new_submits_accepted_count: 3,
        new_shares_sum: 4,
    };

    // Decoding shares: no allocation at all (the extranonce is inline).
    for m in [&ext, &std_share] {
        let frame = m.to_frame();
        let (n, decoded) = allocs(|| Message::from_frame(&frame));
        assert_eq!(n, 0, "{} decode allocated", m.name());
        assert_eq!(&decoded.unwrap(), m);
    }

    // Framing a fixed-size server message: exactly one exactly-sized buffer.
    let (n, f) = allocs(|| job.to_frame());
    assert_eq!(n, 1, "NewMiningJob::to_frame");
    assert_eq!(f.payload.len(), 4 + 4 + 5 + 4 + 32);
    let (n, _) = allocs(|| Sv2Message::to_frame(&prev));
    assert_eq!(n, 1, "SetNewPrevHash::to_frame");
    let (n, _) = allocs(|| Sv2Message::to_frame(&ok));
    assert_eq!(n, 1, "SubmitSharesSuccess::to_frame");

    // Through the codec into a warm write buffer: none.
    let mut codec = Sv2Codec::new();
    let mut dst = BytesMut::with_capacity(4096);
    let (n, _) = allocs(|| {
        codec.encode(&job, &mut dst).unwrap();
        codec.encode(&Message::from(ok.clone()), &mut dst).unwrap();
    });
    assert_eq!(n, 0, "codec encode into a warm buffer");

    // Cutting frames out of a read buffer: none (payloads are split off, not copied). `src`
    // is already shared after `split()`; a fresh `BytesMut` pays one small header allocation
    // the first time a payload is split off, then none.
    let mut src = dst.split();
    let (n, frames) = allocs(|| {
        let a = codec.decode(&mut src).unwrap();
        let b = codec.decode(&mut src).unwrap();
        (a, b)
    });
    assert_eq!(n, 0, "codec decode");
    assert_eq!(Message::from_frame(&frames.0.unwrap()).unwrap(), job);
}
