//! Property tests: whatever bytes a peer sends into the handshake steps or the transport
//! decoder, we return a typed error or a frame, and never panic or over-allocate.

use bytes::BytesMut;
use hashshift_protocol::noise::{
    AuthorityKeypair, Initiator, NoiseCodec, Responder, ResponderConfig, SecretKey,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::codec::{Decoder, Encoder};

fn config(seed: u64) -> ResponderConfig {
    let mut rng = StdRng::seed_from_u64(seed);
    ResponderConfig::new(
        AuthorityKeypair::generate(&mut rng),
        SecretKey::generate(&mut rng),
        3600,
    )
}

fn codecs(seed: u64) -> (NoiseCodec, NoiseCodec) {
    let mut rng = StdRng::seed_from_u64(seed);
    let cfg = config(seed);
    let mut i = Initiator::new(Some(cfg.authority_public_key()), &mut rng);
    let m0 = i.step_0().unwrap();
    let (m1, rt) = Responder::new(&cfg, &mut rng).step_1(&m0, 10).unwrap();
    let (it, _) = i.step_2(&m1, 10).unwrap();
    (NoiseCodec::new(it), NoiseCodec::new(rt))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn responder_step_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..130)) {
        let cfg = config(1);
        let mut rng = StdRng::seed_from_u64(2);
        // Any 64 bytes are a valid ElligatorSwift encoding, so those succeed; the rest fail.
        let r = Responder::new(&cfg, &mut rng).step_1(&msg, 100);
        prop_assert_eq!(r.is_ok(), msg.len() == 64);
    }

    #[test]
    fn initiator_step_never_panics(
        msg in proptest::collection::vec(any::<u8>(), 0..300),
        full in proptest::collection::vec(any::<u8>(), 234),
    ) {
        let mut rng = StdRng::seed_from_u64(3);
        for m in [msg, full] {
            let mut i = Initiator::new(None, &mut rng);
            i.step_0().unwrap();
            prop_assert!(i.step_2(&m, 100).is_err());
        }
    }

    #[test]
    fn decoder_never_panics(junk in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let (_, mut b) = codecs(4);
        let mut buf = BytesMut::from(&junk[..]);
        // Random bytes never authenticate: at most "need more", then an error.
        match b.decode(&mut buf) {
            Ok(None) => prop_assert!(junk.len() < 22),
            Ok(Some(_)) => prop_assert!(false, "random bytes decoded"),
            Err(_) => prop_assert!(b.decode(&mut buf).is_err()),
        }
    }

    #[test]
    fn round_trip_any_payload(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..3000), 1..5),
        split in 1usize..500,
    ) {
        let (mut a, mut b) = codecs(5);
        let mut wire = BytesMut::new();
        let frames: Vec<_> = payloads
            .into_iter()
            .map(|p| hashshift_protocol::sv2::frame::Frame::new(3, false, 7, p.into()).unwrap())
            .collect();
        for f in &frames {
            a.encode(f.clone(), &mut wire).unwrap();
        }
        let mut rx = BytesMut::new();
        let mut got = Vec::new();
        for piece in wire.chunks(split) {
            rx.extend_from_slice(piece);
            while let Some(f) = b.decode(&mut rx).unwrap() {
                got.push(f);
            }
        }
        prop_assert_eq!(got, frames);
    }
}
