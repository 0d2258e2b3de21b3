//! Keys of an application stream (spec/02-crypto.md §5.3): every QUIC stream an application
//! protocol opens beside the session stream is sealed end to end like a message — one
//! ChaCha20-Poly1305 AEAD per chunk — under keys derived from the session's key exchange
//! and the stream's QUIC ID, one per direction:
//!
//! ```text
//! S          = HKDF-Expand(session PRK, "dna/session/v1 streams", 32)
//! o2a, a2o   = HKDF(salt = stream ID u64 BE, S).Expand("dna/stream/v1 o2a" | "… a2o", 32)
//! nonce      = 4 zero bytes ‖ chunk counter u64 BE        aad = frame type u16 ‖ counter u32
//! ```
//!
//! "o2a" is the direction from the side that opened the stream to the side that accepted it.
//! A QUIC stream ID is used once per connection, and a connection carries one session: no
//! key and nonce pair repeats.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::aead::{Aead, KeySetupError, TAG_LEN};

/// AEAD tag length of a stream chunk.
pub const STREAM_TAG_LEN: usize = TAG_LEN;

/// The session's secret for its application streams (from [`Session::stream_secret`]).
///
/// [`Session::stream_secret`]: super::Session::stream_secret
#[derive(Clone)]
pub struct StreamSecret(pub(crate) Zeroizing<[u8; 32]>);

impl std::fmt::Debug for StreamSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSecret(..)")
    }
}

/// One direction of a stream: seals or opens its chunks in order.
#[derive(Clone)]
pub struct ChunkKey {
    aead: Aead,
}

impl std::fmt::Debug for ChunkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChunkKey(..)")
    }
}

fn nonce(counter: u32) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&u64::from(counter).to_be_bytes());
    n
}

fn aad(frame_type: u16, counter: u32) -> [u8; 6] {
    let mut a = [0u8; 6];
    a[..2].copy_from_slice(&frame_type.to_be_bytes());
    a[2..].copy_from_slice(&counter.to_be_bytes());
    a
}

impl ChunkKey {
    /// Encrypts `in_out` in place as chunk `counter` of a frame of `frame_type`; the tag.
    pub fn seal(
        &self,
        frame_type: u16,
        counter: u32,
        in_out: &mut [u8],
    ) -> Option<[u8; STREAM_TAG_LEN]> {
        self.aead
            .seal(nonce(counter), &aad(frame_type, counter), in_out)
    }

    /// Decrypts `in_out` in place; false if it is not chunk `counter` of a frame of
    /// `frame_type` under this key.
    pub fn open(
        &self,
        frame_type: u16,
        counter: u32,
        in_out: &mut [u8],
        tag: [u8; STREAM_TAG_LEN],
    ) -> bool {
        self.aead
            .open(nonce(counter), &aad(frame_type, counter), in_out, tag)
    }
}

impl StreamSecret {
    /// The keys of the stream with QUIC ID `stream_id`: (what we send, what we receive).
    /// `opened`: we opened it.
    pub fn keys(
        &self,
        stream_id: u64,
        opened: bool,
    ) -> Result<(ChunkKey, ChunkKey), KeySetupError> {
        let hk = Hkdf::<Sha256>::new(Some(&stream_id.to_be_bytes()), &self.0[..]);
        let mut o2a = Zeroizing::new([0u8; 32]);
        let mut a2o = Zeroizing::new([0u8; 32]);
        // 32 bytes each is far below HKDF's output limit: expand cannot fail.
        let _ = hk.expand(b"dna/stream/v1 o2a", &mut o2a[..]);
        let _ = hk.expand(b"dna/stream/v1 a2o", &mut a2o[..]);
        let (o2a, a2o) = (
            ChunkKey {
                aead: Aead::new(&o2a)?,
            },
            ChunkKey {
                aead: Aead::new(&a2o)?,
            },
        );
        Ok(if opened { (o2a, a2o) } else { (a2o, o2a) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opener_and_the_acceptor_agree_and_nothing_else_opens() {
        let s = StreamSecret(Zeroizing::new([7; 32]));
        let (o_send, o_recv) = s.keys(4, true).unwrap();
        let (a_send, a_recv) = s.keys(4, false).unwrap();
        let mut buf = *b"hello stream";
        let tag = o_send.seal(0x0B, 1, &mut buf).unwrap();
        let sealed = buf;
        assert!(a_recv.open(0x0B, 1, &mut buf, tag));
        assert_eq!(&buf, b"hello stream");
        // Another counter, another type, the other direction, another stream: refused.
        for (key, ty, n) in [(&a_recv, 0x0B, 2), (&a_recv, 0x0A, 1), (&o_recv, 0x0B, 1)] {
            let mut b = sealed;
            assert!(!key.open(ty, n, &mut b, tag));
        }
        let (_, other) = s.keys(8, false).unwrap();
        let mut b = sealed;
        assert!(!other.open(0x0B, 1, &mut b, tag));
        let mut back = *b"answer";
        let tag = a_send.seal(0x0B, 0, &mut back).unwrap();
        assert!(o_recv.open(0x0B, 0, &mut back, tag));
    }
}
