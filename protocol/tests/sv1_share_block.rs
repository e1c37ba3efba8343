//! Stratum V1 lines, as a pool and a miner would write them, carried through the SV1 codecs
//! into the share validator: mainnet block 100,000 must come out as a found block.
//!
//! This ties the two modules' conventions together (stratum's word-swapped prevhash,
//! big-endian hex for version/nbits/ntime/nonce, raw-order merkle branch and coinbase parts).
//! The JSON literals were written independently of our encoders (the prevhash word swap and
//! merkle branch computed with Python's hashlib from the block's published data).

use bytes::BytesMut;
use hashshift_protocol::share::{
    ExtendedJob, Job, Rejection, ShareValidator, Submission, SubmittedVersion, Target,
    ValidatorConfig,
};
use hashshift_protocol::sv1::{
    ClientCodec, ClientMessage, ClientRequest, ServerCodec, ServerMessage, ServerNotification,
};
use tokio_util::codec::Decoder;

const NOTIFY: &str = concat!(
    r#"{"id":null,"method":"mining.notify","params":["186a0","#,
    r#""1901125004612a1701c3a621d930d31d36b607df1fccc2160002d01c00000000","#,
    r#""01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff0804","#,
    r#""02ffffffff0100f2052a010000004341041b0e8c2567c12536aa13357b79a073dc4444acb83c4ec7a0e2f99dd7457516c5817242da796924ca4e99947d087fedf9ce467cb9f7c6287078f801df276fdf84ac00000000","#,
    r#"["c40297f730dd7b5a99567eb8d27b78758f607507c52292d02d4031895b52f2ff","#,
    r#""49aef42d78e3e9999c9e6ec9e1dddd6cb880bf3b076a03be1318ca789089308e"],"#,
    r#""00000001","1b04864c","4d1b2237",true]}"#,
    "\n"
);
const SUBMIT: &str = concat!(
    r#"{"params":["farm.s19-042","186a0","0206","4d1b2237","10572b0f"],"id":7,"method":"mining.submit"}"#,
    "\r\n"
);
const BLOCK_HASH: &str = "000000000003ba27aa200b1cecaad478d2b00432346c3f1f3986da1afd33e506";

fn parse_notify() -> hashshift_protocol::sv1::Notify {
    let mut buf = BytesMut::from(NOTIFY);
    match ClientCodec::new().decode(&mut buf).unwrap() {
        Some(Ok(ServerMessage::Notification {
            notification: ServerNotification::Notify(n),
            ..
        })) => n,
        other => panic!("not a notify: {other:?}"),
    }
}

fn parse_submit() -> hashshift_protocol::sv1::Submit {
    let mut buf = BytesMut::from(SUBMIT);
    match ServerCodec::new().decode(&mut buf).unwrap() {
        Some(Ok(ClientMessage::Request {
            request: ClientRequest::Submit(s),
            ..
        })) => s,
        other => panic!("not a submit: {other:?}"),
    }
}

fn validator_for(
    notify: &hashshift_protocol::sv1::Notify,
    miner_difficulty: f64,
) -> ShareValidator {
    let config = ValidatorConfig {
        extranonce_size: 2,
        ..ValidatorConfig::default()
    };
    let extranonce1 = hex::decode("4c86041b").unwrap();
    let mut v = ShareValidator::new(
        config,
        extranonce1,
        Target::from_difficulty(miner_difficulty).unwrap(),
    );
    let job = ExtendedJob {
        version: notify.version,
        prev_hash: notify.prev_hash,
        coinbase_prefix: notify.coinb1.clone(),
        coinbase_suffix: notify.coinb2.clone(),
        merkle_branch: notify.merkle_branch.clone(),
        nbits: notify.nbits,
        ntime: notify.ntime,
    };
    let id = u32::from_str_radix(&notify.job_id, 16).unwrap();
    v.add_job(id, Job::from(job), notify.clean_jobs).unwrap();
    v
}

fn submission(s: &hashshift_protocol::sv1::Submit) -> Submission<'_> {
    Submission {
        job_id: u32::from_str_radix(&s.job_id, 16).unwrap(),
        extranonce: &s.extranonce2,
        ntime: s.ntime,
        nonce: s.nonce,
        version: s
            .version_bits
            .map_or(SubmittedVersion::Job, SubmittedVersion::RolledBits),
    }
}

#[test]
fn block_100000_found_through_stratum_lines() {
    let notify = parse_notify();
    let submit = parse_submit();
    assert_eq!(submit.worker, "farm.s19-042");
    let mut v = validator_for(&notify, 1.0);
    let accepted = v
        .validate(&submission(&submit))
        .expect("the real block is a valid share");
    let mut display = accepted.hash;
    display.reverse();
    assert_eq!(hex::encode(display), BLOCK_HASH);
    assert!(accepted.is_block, "meets nbits 0x1b04864c");
    assert!(accepted.meets_upstream);
    assert_eq!(v.validate(&submission(&submit)), Err(Rejection::Duplicate));
}

#[test]
fn one_flipped_nonce_bit_is_low_difficulty() {
    let notify = parse_notify();
    let mut submit = parse_submit();
    submit.nonce ^= 1;
    let mut v = validator_for(&notify, 1.0);
    assert!(matches!(
        v.validate(&submission(&submit)),
        Err(Rejection::LowDifficulty { .. })
    ));
}
