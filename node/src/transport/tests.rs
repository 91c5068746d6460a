//! In-process tests of the transport: two real endpoints on loopback.

use super::proto::{Echo, Ping};
use super::*;
use crate::config::TlsSection;

struct Pair {
    _dir: tempfile::TempDir,
    a: Arc<Transport>,
    b: Arc<Transport>,
    _accept: Vec<crate::util::AbortOnDrop<()>>,
}

struct EchoHandler;
impl RpcHandler for EchoHandler {
    fn handle(&self, _from: NodeId, request: Request) -> BoxFuture<'static, Response> {
        Box::pin(async move {
            match request {
                Request::Echo(e) if e.payload == b"slow" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Response::Echo(e)
                }
                Request::Echo(e) => Response::Echo(e),
                Request::Ping(_) => Response::Pong(proto::Pong { members: vec![] }),
                _ => Response::Error(RpcError { code: RpcErrorCode::Refused, message: "no".into() }),
            }
        })
    }
}

fn identity(dir: &std::path::Path, id: NodeId) -> Identity {
    Identity::load(&TlsSection {
        ca_cert: dir.join("ca.pem"),
        cert: dir.join(format!("node-{id}.pem")),
        key: dir.join(format!("node-{id}.key")),
    })
    .expect("identity")
}

fn endpoint(dir: &std::path::Path, id: NodeId) -> Arc<Transport> {
    let cfg = PeerSection { listen: "127.0.0.1:0".parse().expect("addr"), ..PeerSection::default() };
    let registry = prometheus::Registry::new();
    let t =
        Transport::bind(&identity(dir, id), &cfg, TransportMetrics::new(&registry).expect("metrics")).expect("bind");
    t.set_handler(Arc::new(EchoHandler));
    t
}

fn pair() -> Pair {
    let dir = tempfile::tempdir().expect("tempdir");
    crate::certs::init(dir.path(), 3).expect("certs");
    let a = endpoint(dir.path(), 1);
    let b = endpoint(dir.path(), 2);
    a.set_peer_addr(2, &b.local_addr().expect("addr").to_string());
    b.set_peer_addr(1, &a.local_addr().expect("addr").to_string());
    let accept = vec![
        crate::util::AbortOnDrop::spawn(Arc::clone(&a).accept_loop()),
        crate::util::AbortOnDrop::spawn(Arc::clone(&b).accept_loop()),
    ];
    Pair { _dir: dir, a, b, _accept: accept }
}

#[tokio::test]
async fn echo_round_trip_both_directions_over_one_connection() {
    let p = pair();
    let reply = p.a.call(2, Echo { payload: b"hi".to_vec() }).await.expect("a->b");
    assert_eq!(reply.payload, b"hi");
    let reply = p.b.call(1, Echo { payload: vec![9; 100_000] }).await.expect("b->a");
    assert_eq!(reply.payload.len(), 100_000);
    assert_eq!(p.a.connected_peers(), vec![2]);
    assert_eq!(p.b.connected_peers(), vec![1]);
}

#[tokio::test]
async fn simultaneous_dials_converge_on_one_connection() {
    let p = pair();
    let (x, y) = tokio::join!(p.a.call(2, Ping { members: vec![] }), p.b.call(1, Ping { members: vec![] }));
    // A losing dial may fail its first call; the survivor must serve both directions.
    let _ = (x, y);
    for _ in 0..3 {
        p.a.call(2, Echo { payload: vec![1] }).await.expect("a->b after race");
        p.b.call(1, Echo { payload: vec![2] }).await.expect("b->a after race");
    }
    let ca = lock(&p.a.link(2).conn).clone().expect("a has a link");
    let cb = lock(&p.b.link(1).conn).clone().expect("b has a link");
    assert_eq!(ca.dialer, cb.dialer, "both ends keep the same connection");
}

#[tokio::test]
async fn unknown_peer_and_unreachable_peer_fail_fast() {
    let p = pair();
    let err = p.a.call(7, Echo { payload: vec![] }).await.unwrap_err();
    assert!(matches!(err, TransportError::UnknownPeer { peer: 7 }), "{err}");
    // Nothing listens here: the dial fails, then callers are told to wait for the backoff.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    p.a.set_peer_addr(3, &silent.local_addr().expect("addr").to_string());
    drop(silent);
    let err = p.a.call_with_timeout(3, Echo { payload: vec![] }, Duration::from_secs(10)).await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { peer: 3, .. }), "{err}");
    let err = p.a.call(3, Echo { payload: vec![] }).await.unwrap_err();
    assert!(matches!(err, TransportError::Unreachable { peer: 3, .. }), "{err}");
}

#[tokio::test]
async fn peer_from_another_ca_is_refused() {
    let p = pair();
    let other = tempfile::tempdir().expect("tempdir");
    crate::certs::init(other.path(), 3).expect("certs");
    let rogue = endpoint(other.path(), 3);
    let err = rogue.connect_addr(&p.a.local_addr().expect("addr").to_string()).await.unwrap_err();
    assert!(matches!(err, TransportError::Connect { .. }), "{err}");
    assert!(p.a.connected_peers().is_empty());
}

#[tokio::test]
async fn connect_addr_learns_the_peer_id() {
    let p = pair();
    let id = p.a.connect_addr(&p.b.local_addr().expect("addr").to_string()).await.expect("join dial");
    assert_eq!(id, 2);
}

/// The lane `a` holds to peer 2.
async fn lane_of(t: &Transport, peer: NodeId) -> Arc<lane::Lane> {
    t.link(peer).lane.lock().await.clone().expect("a lane")
}

#[tokio::test]
async fn concurrent_calls_share_one_lane_and_each_gets_its_own_reply() {
    let p = pair();
    p.a.call(2, Echo { payload: vec![0] }).await.expect("first call");
    let first = lane_of(&p.a, 2).await;
    let calls = (0..300u32).map(|i| {
        let a = Arc::clone(&p.a);
        async move { (i, a.call(2, Echo { payload: i.to_be_bytes().repeat(1 + (i % 7) as usize) }).await) }
    });
    for (i, reply) in futures::future::join_all(calls).await {
        assert_eq!(reply.expect("echo").payload, i.to_be_bytes().repeat(1 + (i % 7) as usize), "call {i}");
    }
    let after = lane_of(&p.a, 2).await;
    assert!(Arc::ptr_eq(&first, &after), "every call went over the lane opened first");
    assert_eq!(after.waiting(), 0);
}

#[tokio::test]
async fn a_frame_larger_than_a_lane_takes_its_own_stream() {
    let p = pair();
    let big = vec![5u8; lane::LANE_MAX_FRAME + 1];
    let reply = p.a.call(2, Echo { payload: big.clone() }).await.expect("big echo");
    assert_eq!(reply.payload, big);
    assert!(p.a.link(2).lane.lock().await.is_none(), "no lane was needed");
}

#[tokio::test]
async fn a_call_that_times_out_leaves_the_lane_serving_others() {
    let p = pair();
    let err = p.a.call_with_timeout(2, Echo { payload: b"slow".to_vec() }, Duration::from_millis(300)).await;
    assert!(matches!(err, Err(TransportError::Timeout { peer: 2, .. })), "{err:?}");
    let lane = lane_of(&p.a, 2).await;
    assert_eq!(lane.waiting(), 0, "the timed-out caller's entry is gone");
    let reply = p.a.call(2, Echo { payload: b"next".to_vec() }).await.expect("next call");
    assert_eq!(reply.payload, b"next");
    assert!(Arc::ptr_eq(&lane, &lane_of(&p.a, 2).await));
}

#[tokio::test]
async fn a_new_connection_gets_a_new_lane() {
    let p = pair();
    p.a.call(2, Echo { payload: vec![1] }).await.expect("first call");
    let old = lane_of(&p.a, 2).await;
    p.a.disconnect(2);
    // The close reaches the lane's reader; the next call dials again and opens a new lane.
    let reply = p.a.call_with_timeout(2, Echo { payload: vec![2] }, Duration::from_secs(10)).await.expect("after");
    assert_eq!(reply.payload, vec![2]);
    let new = lane_of(&p.a, 2).await;
    assert_ne!(old.conn_id, new.conn_id);
    assert!(!old.is_alive());
}
