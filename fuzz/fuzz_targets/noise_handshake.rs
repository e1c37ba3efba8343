//! The Noise handshake and transport under hostile bytes: arbitrary first messages into a
//! responder, arbitrary second messages into an initiator, and arbitrary ciphertext into the
//! transport codec of a completed handshake. None may panic.
#![no_main]

use std::sync::OnceLock;

use bytes::BytesMut;
use hashshift_protocol::noise::{
    AuthorityKeypair, Initiator, NoiseCodec, Responder, ResponderConfig, SecretKey,
};
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::codec::Decoder;

const NOW: u32 = 1_800_000_000;

fn config() -> &'static ResponderConfig {
    static CONFIG: OnceLock<ResponderConfig> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let mut rng = StdRng::seed_from_u64(1);
        ResponderConfig::new(AuthorityKeypair::generate(&mut rng), SecretKey::generate(&mut rng), 3600)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut rng = StdRng::seed_from_u64(2);
    let Some((&selector, rest)) = data.split_first() else { return };
    match selector % 3 {
        0 => {
            let _ = Responder::new(config(), &mut rng).step_1(rest, NOW);
        }
        1 => {
            let mut initiator = Initiator::new(Some(config().authority_public_key()), &mut rng);
            if initiator.step_0().is_ok() {
                let _ = initiator.step_2(rest, NOW);
            }
        }
        _ => {
            let mut initiator = Initiator::new(Some(config().authority_public_key()), &mut rng);
            let Ok(hello) = initiator.step_0() else { return };
            let Ok((reply, _server)) = Responder::new(config(), &mut rng).step_1(&hello, NOW) else { return };
            let Ok((client, _cert)) = initiator.step_2(&reply, NOW) else { return };
            let mut codec = NoiseCodec::new(client).with_max_payload(1 << 16);
            let mut buf = BytesMut::from(rest);
            while let Ok(Some(_)) = codec.decode(&mut buf) {}
        }
    }
});
