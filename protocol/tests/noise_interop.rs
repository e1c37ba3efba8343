//! Interoperability of `hashshift_protocol::noise` with the Stratum Reference Implementation's
//! published crates (`noise_sv2` 2.0.0 for the handshake, `codec_sv2` 7.0.0 for encrypted
//! framing), in both directions. SRI is the reference every pool and miner firmware is tested
//! against, so byte-level agreement with it is the definition of "correct" here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use codec_sv2::{Decrypted, Handshake, NoiseDecoder, NoiseEncoder, Transport};
use hashshift_protocol::noise::{
    AuthorityKeypair, AuthorityPublicKey, CertError, HandshakeError, INITIATOR_MESSAGE_LEN,
    Initiator, NoiseCodec, RESPONDER_MESSAGE_LEN, Responder, ResponderConfig, SecretKey,
};
use hashshift_protocol::sv2::frame::Frame;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::codec::{Decoder, Encoder};

const CERT_VALIDITY: u32 = 3600;

fn unix_now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn authority(rng: &mut StdRng) -> AuthorityKeypair {
    AuthorityKeypair::generate(rng)
}

/// SRI's responder for an authority key pair (it draws its own static key and uses the clock).
fn sri_responder(auth: &AuthorityKeypair) -> Handshake<noise_sv2::Responder> {
    let resp = noise_sv2::Responder::from_authority_kp(
        &auth.public_key().to_bytes(),
        &auth.secret_key().to_bytes(),
        Duration::from_secs(CERT_VALIDITY as u64),
    )
    .unwrap();
    Handshake::responder(resp)
}

fn sri_initiator(pinned: &AuthorityPublicKey) -> Handshake<noise_sv2::Initiator> {
    Handshake::initiator(noise_sv2::Initiator::from_raw_k(pinned.to_bytes()).unwrap())
}

/// Our initiator against SRI's responder: returns our codec and SRI's transport.
fn ours_to_sri(
    rng: &mut StdRng,
    auth: &AuthorityKeypair,
    pinned: AuthorityPublicKey,
    now: impl FnOnce(u32) -> u32,
) -> Result<(NoiseCodec, Transport), HandshakeError> {
    let mut ours = Initiator::new(Some(pinned), rng);
    let hello = ours.step_0()?;
    assert_eq!(hello.len(), INITIATOR_MESSAGE_LEN);
    let (reply, sri) = sri_responder(auth).step_1(hello).unwrap();
    assert_eq!(reply.payload().len(), RESPONDER_MESSAGE_LEN);
    let (transport, cert) = ours.step_2(reply.payload(), now(unix_now()))?;
    assert_eq!(cert.not_valid_after - cert.valid_from, CERT_VALIDITY);
    Ok((NoiseCodec::new(transport), sri))
}

/// SRI's initiator against our responder, with the certificate made at `server_now` and
/// checked by SRI at `client_now`.
fn sri_to_ours(
    rng: &mut StdRng,
    cfg: &ResponderConfig,
    pinned: &AuthorityPublicKey,
    server_now: u32,
    client_now: u32,
) -> Result<(Transport, NoiseCodec), codec_sv2::Error> {
    let (hello, sri) = sri_initiator(pinned).step_0().unwrap();
    assert_eq!(hello.payload().len(), INITIATOR_MESSAGE_LEN);
    let (reply, transport) = Responder::new(cfg, rng)
        .step_1(hello.payload(), server_now)
        .unwrap();
    let sri = sri.step_2_with_now(reply, client_now)?;
    Ok((sri, NoiseCodec::new(transport)))
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

fn our_frame(len: usize, seed: u8) -> Frame {
    Frame::new(0, true, 0x1b, payload(len, seed).into()).unwrap()
}

/// Feeds `wire` to SRI's decoder the way its own tests do, one read window at a time.
fn sri_decode(
    decoder: &mut NoiseDecoder,
    mut state: codec_sv2::TransportDecryptState,
    wire: &[u8],
) -> (codec_sv2::SerializedFrame, codec_sv2::TransportDecryptState) {
    let mut offset = 0;
    loop {
        let writable = decoder.writable();
        let n = writable.len().min(wire.len() - offset);
        writable[..n].copy_from_slice(&wire[offset..offset + n]);
        offset += n;
        match decoder
            .next_transport_frame(state)
            .expect("SRI failed to decrypt our frame")
        {
            Decrypted::Frame(frame, state) => {
                assert_eq!(offset, wire.len(), "SRI consumed a different length");
                return (frame, state);
            }
            Decrypted::Incomplete(_, next) => state = next,
        }
    }
}

/// Sends frames of several sizes both ways between our codec and SRI's transport halves.
fn exchange_frames(mut ours: NoiseCodec, sri: Transport) {
    let (mut sri_enc, mut sri_dec) = sri.split();
    let mut sri_decoder = NoiseDecoder::new();
    let mut sri_encoder = NoiseEncoder::new();
    for (i, len) in [0usize, 1, 100, 65_519, 65_520, 200_000]
        .into_iter()
        .enumerate()
    {
        // Ours → SRI.
        let frame = our_frame(len, i as u8);
        let mut wire = BytesMut::new();
        ours.encode(frame.clone(), &mut wire).unwrap();
        let (mut got, next) = sri_decode(&mut sri_decoder, sri_dec, &wire);
        sri_dec = next;
        let h = got.header();
        assert_eq!(h.msg_type(), 0x1b);
        assert!(h.channel_msg());
        assert_eq!(h.payload_length(), len);
        assert_eq!(got.payload(), &frame.payload[..], "len {len}");

        // SRI → ours.
        let mut raw = our_frame(len, 0x80 | i as u8).header.encode().to_vec();
        raw.extend_from_slice(&payload(len, 0x80 | i as u8));
        let sri_frame = codec_sv2::SerializedFrame::from_bytes(raw).unwrap();
        let wire = sri_encoder
            .encode_transport(sri_frame, &mut sri_enc)
            .unwrap();
        let mut rx = BytesMut::from(wire.as_slice());
        let got = ours.decode(&mut rx).unwrap().expect("whole frame buffered");
        assert!(rx.is_empty());
        assert_eq!(got, our_frame(len, 0x80 | i as u8), "len {len}");
    }
}

#[test]
fn our_initiator_with_sri_responder() {
    let mut rng = StdRng::seed_from_u64(1);
    let auth = authority(&mut rng);
    let (ours, sri) = ours_to_sri(&mut rng, &auth, auth.public_key(), |now| now).unwrap();
    exchange_frames(ours, sri);
}

#[test]
fn sri_initiator_with_our_responder() {
    let mut rng = StdRng::seed_from_u64(2);
    let cfg = ResponderConfig::new(
        authority(&mut rng),
        SecretKey::generate(&mut rng),
        CERT_VALIDITY,
    );
    let now = 1_700_000_000;
    let (sri, ours) = sri_to_ours(&mut rng, &cfg, &cfg.authority_public_key(), now, now).unwrap();
    exchange_frames(ours, sri);
}

#[test]
fn sri_example_config_keys_work_end_to_end() {
    // The authority pair from SRI's pool-config-example.toml, parsed from its config form.
    let secret: SecretKey = "mkDLTBBRxdBv998612qipDYoTK3YUrqLe8uWw7gu3iXbSrn2n"
        .parse()
        .unwrap();
    let public: AuthorityPublicKey = "9auqWEzQDVyd2oe1JVGFLMLHZtCo2FFqZwtKA5gd9xbuEu7PH72"
        .parse()
        .unwrap();
    let auth = AuthorityKeypair::from_parts(&secret, &public).unwrap();
    let mut rng = StdRng::seed_from_u64(3);
    assert!(ours_to_sri(&mut rng, &auth, public, |now| now).is_ok());
    let cfg = ResponderConfig::new(auth, SecretKey::generate(&mut rng), CERT_VALIDITY);
    assert!(sri_to_ours(&mut rng, &cfg, &public, 1_000, 1_000).is_ok());
}

#[test]
fn our_initiator_rejects_bad_sri_certificates() {
    let mut rng = StdRng::seed_from_u64(4);
    let auth = authority(&mut rng);
    let other = authority(&mut rng);
    assert_eq!(
        ours_to_sri(&mut rng, &auth, other.public_key(), |now| now).err(),
        Some(HandshakeError::Certificate(CertError::BadSignature))
    );
    // Our clock far ahead of the certificate's window: expired.
    assert!(matches!(
        ours_to_sri(&mut rng, &auth, auth.public_key(), |now| now
            + CERT_VALIDITY
            + 100)
        .err(),
        Some(HandshakeError::Certificate(CertError::Expired { .. }))
    ));
    // Our clock behind the certificate's start: not yet valid.
    assert!(matches!(
        ours_to_sri(&mut rng, &auth, auth.public_key(), |now| now - 100).err(),
        Some(HandshakeError::Certificate(CertError::NotYetValid { .. }))
    ));
}

#[test]
fn sri_initiator_rejects_our_bad_certificates() {
    let mut rng = StdRng::seed_from_u64(5);
    let cfg = ResponderConfig::new(
        authority(&mut rng),
        SecretKey::generate(&mut rng),
        CERT_VALIDITY,
    );
    let pinned = cfg.authority_public_key();
    let wrong = authority(&mut rng).public_key();
    let now = 1_700_000_000;
    let rejected = |r: Result<_, codec_sv2::Error>| r.is_err();
    assert!(rejected(sri_to_ours(&mut rng, &cfg, &wrong, now, now)));
    assert!(rejected(sri_to_ours(
        &mut rng,
        &cfg,
        &pinned,
        now,
        now + CERT_VALIDITY + 11
    )));
    assert!(rejected(sri_to_ours(
        &mut rng,
        &cfg,
        &pinned,
        now,
        now - 11
    )));
    // And the edges of SRI's ±10 s leeway are accepted, as ours accepts them.
    assert!(sri_to_ours(&mut rng, &cfg, &pinned, now, now + CERT_VALIDITY + 10).is_ok());
    assert!(sri_to_ours(&mut rng, &cfg, &pinned, now, now - 10).is_ok());
}

#[test]
fn tampered_frame_from_sri_is_a_decrypt_error() {
    let mut rng = StdRng::seed_from_u64(6);
    let auth = authority(&mut rng);
    let (mut ours, sri) = ours_to_sri(&mut rng, &auth, auth.public_key(), |now| now).unwrap();
    let (mut sri_enc, _) = sri.split();
    let mut raw = our_frame(50, 1).header.encode().to_vec();
    raw.extend_from_slice(&payload(50, 1));
    let wire = NoiseEncoder::new()
        .encode_transport(
            codec_sv2::SerializedFrame::from_bytes(raw).unwrap(),
            &mut sri_enc,
        )
        .unwrap();
    let mut rx = BytesMut::from(wire.as_slice());
    rx[30] ^= 0x40;
    assert!(matches!(
        ours.decode(&mut rx),
        Err(hashshift_protocol::noise::NoiseCodecError::Decrypt)
    ));
}
