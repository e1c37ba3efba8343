//! Wire-level helpers for tests that misbehave on purpose: raw lines, pipelined submits,
//! floods read back concurrently, and checks that a connection is alive or closed.
#![allow(dead_code)]

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::BytesMut;
use hashshift_protocol::sv1::{ClientMessage, ClientRequest, Id, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder};

use super::miner::{Miner, Share, within};

/// Polls `done` until it holds (bounded by the usual step timeout).
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    within(what, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

/// Reads until the proxy closes the connection; returns the responses seen on the way.
pub async fn closed(m: &mut Miner, what: &str) -> Result<usize> {
    within(what, async {
        let mut responses = 0;
        loop {
            match m.recv().await? {
                None => return Ok(responses),
                Some(ServerMessage::Response(_)) => responses += 1,
                Some(ServerMessage::Notification { .. }) => {}
            }
        }
    })
    .await?
}

/// The connection still works: a harmless request is answered.
pub async fn alive(m: &mut Miner) -> Result<()> {
    let r = m.call(ClientRequest::ExtranonceSubscribe).await?;
    ensure!(r.as_bool()?, "mining.extranonce.subscribe answered {r:?}");
    Ok(())
}

/// The next responses, skipping notifications: `(id, error code)`.
pub async fn responses(m: &mut Miner, n: usize) -> Result<Vec<(Id, Option<i64>)>> {
    within(&format!("{n} responses"), async {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match m
                .recv()
                .await?
                .context("closed while waiting for responses")?
            {
                ServerMessage::Response(r) => out.push((r.id, r.error.map(|e| e.code))),
                ServerMessage::Notification { .. } => {}
            }
        }
        Ok(out)
    })
    .await?
}

/// `{"id":ID,"method":"mining.submit","params":["aaa…"]}` padded to exactly `len` bytes,
/// then `\n`: well-formed JSON with the wrong params (one instead of five).
pub fn padded_request(id: u64, len: usize) -> Vec<u8> {
    let head = format!("{{\"id\":{id},\"method\":\"mining.submit\",\"params\":[\"");
    let tail = "\"]}";
    let mut line = head.into_bytes();
    line.resize(len - tail.len(), b'a');
    line.extend_from_slice(tail.as_bytes());
    assert_eq!(line.len(), len);
    line.push(b'\n');
    line
}

/// Encodes `count` submits of `shares` (cycled) for `worker` into one buffer; returns it
/// with the ids used.
pub fn submits(
    m: &mut Miner,
    shares: &[Share],
    worker: &str,
    count: usize,
) -> Result<(BytesMut, Vec<Id>)> {
    let mut out = BytesMut::new();
    let mut ids = Vec::with_capacity(count);
    for share in shares.iter().cycle().take(count) {
        let id = Id::from(m.next_id);
        m.next_id += 1;
        m.codec.encode(
            ClientMessage::Request {
                id: id.clone(),
                request: share.request(worker),
            },
            &mut out,
        )?;
        ids.push(id);
    }
    Ok((out, ids))
}

/// Writes `bytes` while reading responses, as fast as both go, until the proxy closes the
/// connection or `stop_after` responses arrived. Returns `(id, error code)` per response and
/// whether the connection was closed. Write errors (the proxy hung up) are expected.
pub async fn blast(
    m: &mut Miner,
    bytes: &[u8],
    stop_after: usize,
) -> Result<(Vec<(Id, Option<i64>)>, bool)> {
    let Miner {
        stream, codec, buf, ..
    } = m;
    let (mut rd, mut wr) = stream.split();
    let write = async {
        let _ = wr.write_all(bytes).await;
    };
    let read = async {
        let mut got = Vec::new();
        loop {
            if got.len() >= stop_after {
                return Ok::<_, anyhow::Error>((got, false));
            }
            if let Some(item) = codec.decode(buf)? {
                if let ServerMessage::Response(r) = item? {
                    got.push((r.id, r.error.map(|e| e.code)));
                }
                continue;
            }
            match rd.read_buf(buf).await {
                Ok(0) => return Ok((got, true)),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    return Ok((got, true));
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let ((), read) = within("flood", async { tokio::join!(write, read) }).await?;
    read
}

/// A share on a job id the proxy never issued.
pub fn unknown_job(share: &Share) -> Share {
    Share {
        job_id: "ffffff".into(),
        ..share.clone()
    }
}
