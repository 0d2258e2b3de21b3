//! Signalling frames on DHT connections (spec/05-nat.md §4.3): one frame per stream in
//! each direction, bounded far below the DHT's frame limit.

use std::time::Duration;

use bytes::BytesMut;

use crate::wire::{encode_frame, FrameLimits, HeaderView, MessageType, SIGNALLING_RANGE};

/// Largest signalling frame (a signed signal with 16 candidates is ≈ 5.7 KB).
pub(crate) const MAX_SIGNAL_FRAME: usize = 16 * 1024;
/// How long a rendezvous node waits for the callee's answer.
pub(crate) const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

pub(crate) fn limits() -> FrameLimits {
    FrameLimits {
        max_payload: MAX_SIGNAL_FRAME as u32,
    }
}

pub(crate) fn frame(t: MessageType, payload: &[u8]) -> BytesMut {
    let mut out = BytesMut::new();
    // Signals are bounded by their own limits, far below the frame limit.
    let _ = encode_frame(t, 0, payload, &limits(), &mut out);
    out
}

/// Whether a stream's frame belongs to signalling rather than to the DHT.
pub(crate) fn is_signalling(bytes: &[u8]) -> bool {
    HeaderView::new_checked(bytes).is_ok_and(|h| SIGNALLING_RANGE.contains(&h.msg_type()))
}

/// Our clock for signal timestamps.
pub(crate) fn now_ms() -> u64 {
    super::os::unix_ms()
}
