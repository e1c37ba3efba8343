//! Feeds arbitrary bytes to the plaintext SV2 frame codec and decodes every frame it yields
//! into a typed message. Whatever decodes must re-encode to bytes that decode and re-encode to
//! the same bytes (decoding normalises, e.g. a BOOL byte of 3 reads as true, so the first
//! re-encoding may differ from the input, but never the second).
#![no_main]

use bytes::BytesMut;
use hashshift_protocol::sv2::{Message, Sv2Codec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = Sv2Codec::with_max_payload_len(64 * 1024);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        if let Ok(message) = Message::from_frame(&frame) {
            let once = message.to_frame();
            let again = Message::from_frame(&once).expect("our own encoding decodes");
            assert_eq!(again.to_frame(), once);
        }
    }
});
