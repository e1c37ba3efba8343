use super::tasks::Throttle;
use super::wire::{
    MAX_ORDER_BYTES, MAX_POOL_INDEX, OrderAction, changed, fnv1a, marks_of, order_action,
};
use super::*;
use std::collections::HashSet;

const NOW_MS: u64 = 1_796_000_000_000;

/// A miner as a large site would publish it: a pool account and a long rig name, an IPv4
/// address, a few TH/s, a day connected.
fn realistic(i: u64) -> WireMiner {
    WireMiner {
        conn: 1_000_000 + i,
        worker: Some(format!("siteaccount.hall3-rack{:02}-s19xp-{i:05}", i % 64)),
        peer: format!(
            "10.{}.{}.{}:4{:04}",
            i % 250,
            (i / 250) % 250,
            i % 200,
            i % 9999
        )
        .parse()
        .unwrap(),
        pool: (i % 3) as usize,
        hashrate: 140_123_456_789_012.0,
        difficulty: 65_536.0,
        last_share_unix_ms: NOW_MS - i % 30_000,
        accepted: 123_456,
        rejected: 123,
        connected_secs: 86_400 + i,
    }
}

#[test]
fn encode_then_decode_gives_the_miners_back_sorted_by_worker() {
    let mut a = realistic(2);
    a.worker = Some("b.rig".into());
    let mut b = realistic(1);
    b.worker = Some("a.rig".into());
    let mut c = realistic(3);
    c.worker = None;
    let enc = encode(vec![c.clone(), a.clone(), b.clone()], NOW_MS, 10_000, 10);
    assert_eq!((enc.included, enc.total), (3, 3));
    let d = decode(&enc.bytes, NOW_MS).unwrap();
    assert_eq!(d.miners, vec![b, a, c]);
    assert_eq!((d.declared, d.skipped, d.published_unix_ms), (3, 0, NOW_MS));
    // Rows without field names: the value's size is what bounds a site.
    let text = String::from_utf8(enc.bytes).unwrap();
    let first = r#"{"v":1,"t":1796000000000,"n":3,"m":[[1000001,"a.rig","10.1.0.1:40001",1,140123456789012,65536.0,1,123456,123,86401],"#;
    assert!(text.starts_with(first), "{text}");
}

#[test]
fn a_list_too_large_for_one_value_keeps_the_first_by_worker() {
    let per = row(&realistic(12_345)).to_string().len() + 1;
    let fit = MAX_PUBLISH_BYTES / per;
    println!(
        "inventory: {per} bytes per miner; about {fit} miners fit in {MAX_PUBLISH_BYTES} bytes"
    );
    let miners: Vec<WireMiner> = (0..MAX_PUBLISHED as u64).rev().map(realistic).collect();
    let enc = encode(miners, NOW_MS, MAX_PUBLISH_BYTES, MAX_PUBLISHED);
    assert!(enc.bytes.len() <= MAX_PUBLISH_BYTES);
    assert_eq!(enc.total, MAX_PUBLISHED);
    assert!(
        enc.included < enc.total && enc.included + 200 >= fit,
        "{}",
        enc.included
    );
    let d = decode(&enc.bytes, NOW_MS).unwrap();
    assert_eq!(d.miners.len(), enc.included);
    assert_eq!(d.declared, MAX_PUBLISHED as u64);
    let workers: Vec<_> = d.miners.iter().map(|m| m.worker.clone().unwrap()).collect();
    let mut sorted = workers.clone();
    sorted.sort();
    assert_eq!(workers, sorted);
    // The count cap holds too.
    let enc = encode(
        (0..10).map(realistic).collect(),
        NOW_MS,
        MAX_PUBLISH_BYTES,
        4,
    );
    assert_eq!((enc.included, enc.total), (4, 10));
    // Nothing fits: still a valid, empty list.
    let enc = encode((0..10).map(realistic).collect(), NOW_MS, 40, 10);
    assert_eq!(enc.included, 0);
    assert!(decode(&enc.bytes, NOW_MS).unwrap().miners.is_empty());
}

fn row(m: &WireMiner) -> serde_json::Value {
    serde_json::to_value(m.row(NOW_MS)).unwrap()
}

#[test]
fn hostile_entries_are_skipped_one_by_one() {
    let good = row(&realistic(1));
    let with = |i: usize, v: serde_json::Value| {
        let mut e = good.clone();
        e[i] = v;
        e
    };
    let mut short = good.clone();
    short.as_array_mut().unwrap().pop();
    let mut longer = row(&realistic(2));
    longer
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"later": "field"}));
    let mut never = realistic(3);
    never.last_share_unix_ms = 0;
    let list = serde_json::json!({"v": 1, "t": NOW_MS, "n": 15, "m": [
        good,
        with(4, serde_json::json!(-1)),
        with(4, serde_json::json!(1.5)),
        with(5, serde_json::json!(1e300)),
        with(5, serde_json::json!("x")),
        with(1, serde_json::json!("x".repeat(MAX_WORKER_BYTES + 1))),
        with(1, serde_json::json!("bad\nname")),
        with(1, serde_json::json!("")),
        with(2, serde_json::json!("not an address")),
        with(0, serde_json::json!(-5)),
        with(3, serde_json::json!(MAX_POOL_INDEX + 1)),
        short,
        {"c": 1},
        [[["deep"]]],
        good.clone(),
        longer,
        row(&never),
    ]});
    let d = decode(list.to_string().as_bytes(), NOW_MS).unwrap();
    assert_eq!(d.miners, vec![realistic(1), realistic(2), never]);
    assert_eq!(d.skipped, 14);
}

#[test]
fn times_from_another_clock_are_clamped() {
    // Published "in the future" (the other host's clock is ahead): shares are placed no later
    // than now, so a skewed clock cannot make a rig look alive for ever.
    let later = NOW_MS + 3_600_000;
    let mut m = realistic(0);
    m.last_share_unix_ms = later - 1_000;
    let enc = encode(vec![m], later, 10_000, 10);
    let d = decode(&enc.bytes, NOW_MS).unwrap();
    assert_eq!(d.published_unix_ms, NOW_MS);
    assert_eq!(d.miners[0].last_share_unix_ms, NOW_MS - 1_000);
    // A share "before 1970" is no share.
    let mut v: serde_json::Value = serde_json::from_slice(&enc.bytes).unwrap();
    v["m"][0][6] = serde_json::json!(u64::MAX);
    let d = decode(v.to_string().as_bytes(), NOW_MS).unwrap();
    assert_eq!(d.miners[0].last_share_unix_ms, 0);
}

#[test]
fn malformed_values_are_errors_not_panics() {
    for bad in [
        &b""[..],
        b"null",
        b"[]",
        b"{\"m\":[]}",
        b"{\"v\":1,\"m\":[]}",
        b"{\"v\":1,\"m\":{}}",
        b"{\"v\":1,\"m\":[",
        b"\xff\xfe",
    ] {
        assert!(
            matches!(decode(bad, NOW_MS), Err(DecodeError::Malformed(_))),
            "{bad:?}"
        );
    }
    assert_eq!(
        decode(b"{\"v\":2,\"t\":0,\"m\":[]}", NOW_MS).unwrap_err(),
        DecodeError::Version(2)
    );
    let deep = format!(
        "{{\"v\":1,\"m\":[{}{}]}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    assert!(decode(deep.as_bytes(), NOW_MS).is_err());
    // Fields this build does not know are ignored (a newer instance may add some).
    let newer = format!("{{\"v\":1,\"t\":{NOW_MS},\"x\":7,\"m\":[]}}");
    assert!(decode(newer.as_bytes(), NOW_MS).unwrap().miners.is_empty());
}

#[test]
fn entries_past_the_per_instance_cap_are_skipped() {
    let one = row(&realistic(1)).to_string();
    let mut text = format!("{{\"v\":1,\"t\":{NOW_MS},\"m\":[");
    for i in 0..MAX_REMOTE_PER_INSTANCE + 10 {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&one.replacen("[1000001,", &format!("[{i},"), 1));
    }
    text.push_str("]}");
    let d = decode(text.as_bytes(), NOW_MS).unwrap();
    assert_eq!(d.miners.len(), MAX_REMOTE_PER_INSTANCE);
    assert_eq!(d.skipped, 10);
}

#[test]
fn remote_ids_never_meet_local_ones_and_are_stable() {
    let a = remote_conn_id("p1", 7);
    assert!(is_remote(a));
    assert_eq!(a & 0xFFFF_FFFF, 7);
    assert_eq!(a, remote_conn_id("p1", 7));
    assert_ne!(a, remote_conn_id("p2", 7));
    assert_ne!(a, remote_conn_id("p1", 8));
    // FNV-1a, fixed: ids must not change between builds.
    assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    for local in [0, 1, u64::from(u32::MAX), (1 << 62) + 5] {
        assert!(!is_remote(local));
    }
}

#[test]
fn only_changes_that_matter_cost_a_write() {
    let cur: Vec<WireMiner> = (0..3).map(realistic).collect();
    let marks = marks_of(&cur);
    assert!(!changed(&marks, &cur));
    let mut m = cur.clone();
    m[0].hashrate *= 1.04;
    m[1].accepted += 10;
    m[1].difficulty *= 2.0;
    m[2].connected_secs += 60;
    assert!(!changed(&marks, &m), "small moves and counters alone");
    let mut m = cur.clone();
    m[0].hashrate *= 1.06;
    assert!(changed(&marks, &m));
    let mut m = cur.clone();
    m[1].last_share_unix_ms += 1;
    assert!(changed(&marks, &m));
    let mut m = cur.clone();
    m[2].worker = Some("other".into());
    assert!(changed(&marks, &m));
    let mut m = cur.clone();
    m[2].pool = 9;
    assert!(changed(&marks, &m));
    assert!(changed(&marks, &cur[..2]));
    let mut m = cur.clone();
    m[2].conn = 99;
    assert!(changed(&marks, &m));
    assert!(changed(&HashMap::new(), &cur[..1]));
    assert!(!changed(&HashMap::new(), &[]));
}

fn decoded(miners: Vec<WireMiner>, published: u64) -> Decoded {
    Decoded {
        miners,
        published_unix_ms: published,
        ..Decoded::default()
    }
}

#[test]
fn records_are_reused_while_the_connection_is_the_same() {
    let now = Instant::now() + Duration::from_secs(100_000);
    let first = build_instance(
        "p2",
        5,
        decoded(vec![realistic(1)], NOW_MS),
        None,
        now,
        NOW_MS,
        10,
    );
    let (conn, r) = &first.entries[0];
    assert_eq!(*conn, realistic(1).conn);
    assert_eq!(r.shared.id, remote_conn_id("p2", *conn));
    assert_eq!(r.shared.worker(), realistic(1).worker);
    assert_eq!(r.shared.peer, realistic(1).peer);
    assert_eq!(r.shared.pool(), Some(realistic(1).pool));
    assert_eq!(r.shared.difficulty.get(), 65_536.0);
    assert_eq!(
        r.shared.last_share_unix_ms(),
        realistic(1).last_share_unix_ms
    );
    assert_eq!(r.shared.counters.accepted.load(Relaxed), 123_456);
    assert_eq!(r.hashrate, realistic(1).hashrate);
    assert_eq!(now - r.shared.connected_at, Duration::from_secs(86_401));

    // Published 2 s later, read 3 s later: same record, new figures.
    let mut again = realistic(1);
    again.connected_secs += 2;
    again.last_share_unix_ms = NOW_MS + 2_000;
    again.worker = Some("renamed".into());
    let later = now + Duration::from_secs(3);
    let second = build_instance(
        "p2",
        6,
        decoded(vec![again.clone()], NOW_MS + 2_000),
        Some(&first),
        later,
        NOW_MS + 3_000,
        10,
    );
    let r2 = &second.entries[0].1;
    assert!(Arc::ptr_eq(&r.shared, &r2.shared));
    assert_eq!(r2.shared.last_share_unix_ms(), NOW_MS + 2_000);
    assert_eq!(r2.shared.worker().as_deref(), Some("renamed"));

    // Same id, another address: another connection.
    let mut moved = again.clone();
    moved.peer = "10.9.9.9:1".parse().unwrap();
    let third = build_instance(
        "p2",
        7,
        decoded(vec![moved], NOW_MS + 3_000),
        Some(&second),
        later,
        NOW_MS + 3_000,
        10,
    );
    assert!(!Arc::ptr_eq(&r.shared, &third.entries[0].1.shared));
    // Same id and address but connected since just now (the instance restarted).
    let mut fresh = again;
    fresh.connected_secs = 1;
    let fourth = build_instance(
        "p2",
        8,
        decoded(vec![fresh], NOW_MS + 3_000),
        Some(&second),
        later,
        NOW_MS + 3_000,
        10,
    );
    assert!(!Arc::ptr_eq(&r.shared, &fourth.entries[0].1.shared));
    // The room left over all instances caps what is kept.
    let capped = build_instance(
        "p2",
        9,
        decoded((0..5).map(realistic).collect(), NOW_MS),
        None,
        now,
        NOW_MS,
        3,
    );
    assert_eq!(capped.entries.len(), 3);
}

#[test]
fn the_view_holds_every_id_once() {
    let now = Instant::now();
    let mut a = realistic(1);
    a.conn = 5;
    let mut b = realistic(2);
    b.conn = 5 + (1 << 32); // same low 32 bits: same local id
    let mut c = realistic(3);
    c.conn = 6;
    let p2 = build_instance(
        "p2",
        1,
        decoded(vec![a, b, c], NOW_MS),
        None,
        now,
        NOW_MS,
        10,
    );
    let p3 = build_instance(
        "p3",
        1,
        decoded(vec![realistic(4)], NOW_MS),
        None,
        now,
        NOW_MS,
        10,
    );
    let mut instances = BTreeMap::new();
    instances.insert("p2".to_owned(), Arc::new(p2));
    instances.insert("p3".to_owned(), Arc::new(p3));
    let (view, collisions) = assemble(instances);
    assert_eq!(collisions, 1);
    assert_eq!(view.reports.len(), 3);
    let ids: HashSet<_> = view.reports.iter().map(|r| r.shared.id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(
        view.owners.get(&remote_conn_id("p2", 5)),
        Some(&("p2".to_owned(), 5))
    );
    assert_eq!(
        view.owners.get(&remote_conn_id("p3", realistic(4).conn)),
        Some(&("p3".to_owned(), realistic(4).conn))
    );
}

#[test]
fn orders_are_carried_out_only_while_fresh() {
    let order = |conn, at| {
        serde_json::to_vec(&Order {
            conn,
            at_unix_ms: at,
        })
        .unwrap()
    };
    assert_eq!(
        order_action(&order(7, NOW_MS - 1_000), NOW_MS),
        OrderAction::Kick(7)
    );
    assert_eq!(
        order_action(&order(7, NOW_MS - ORDER_MAX_AGE_MS - 1), NOW_MS),
        OrderAction::Drop("expired")
    );
    assert_eq!(
        order_action(&order(7, NOW_MS + ORDER_MAX_AGE_MS + 1), NOW_MS),
        OrderAction::Drop("expired")
    );
    assert_eq!(
        order_action(b"{\"conn\":-1}", NOW_MS),
        OrderAction::Drop("malformed")
    );
    assert_eq!(
        order_action(&vec![b' '; MAX_ORDER_BYTES + 1], NOW_MS),
        OrderAction::Drop("too large")
    );
}

#[test]
fn warnings_are_throttled() {
    let mut t = Throttle::default();
    assert_eq!(t.ready(), Some(0));
    assert_eq!(t.ready(), None);
    assert_eq!(t.ready(), None);
    t.next = Some(Instant::now());
    assert_eq!(t.ready(), Some(2));
}

/// Against a real etcd (the whole module needs the `etcd` feature).
mod with_etcd;
