//! Feeds arbitrary bytes to both Stratum V1 line codecs (miner-facing and pool-facing).
#![no_main]

use bytes::BytesMut;
use hashshift_protocol::sv1::{ClientCodec, ServerCodec};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

fn drain<D: Decoder>(mut codec: D, data: &[u8]) {
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    while let Ok(Some(_)) = codec.decode_eof(&mut buf) {}
}

fuzz_target!(|data: &[u8]| {
    drain(ServerCodec::with_max_line_len(1024), data);
    drain(ClientCodec::with_max_line_len(1024), data);
});
