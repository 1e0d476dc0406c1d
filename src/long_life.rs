//! A backend connection's life: a million messages through one shared `by_id` connection to
//! a real backend, with the connection's per-message state checked as it goes. It may hold
//! what is outstanding (and the bounded tombstones), never what it has served.
//!
//! A test of the client and backend sides together over the demo backend, so it sits at the
//! top of the crate, above every module it uses.

use crate::backend::{Pool, PoolTarget, Upstream};
use crate::client::Client;
use crate::demo::backend::TestBackend;
use crate::demo::proto;
use crate::registry::{Registry, Shared};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;
use switchyard_core::{Cluster, ReplySink};
use switchyard_proto::Span;
use tokio::io::AsyncReadExt;

const MESSAGES: u64 = 1_000_000;
const DEPTH: usize = 64;

#[test]
fn a_million_messages_through_one_by_id_connection_leave_nothing_behind() {
    let backend = TestBackend::start("b1", false).unwrap();
    let text = format!(
        "[[listener]]\nname = \"l\"\nlisten = \"127.0.0.1:0\"\ncluster = \"c\"\ncorrelation = \"by_id\"\n\
         [listener.codec]\nkind = \"length_field\"\nlength_width = 4\nkey = {{ offset = 4, width = 8 }}\nid = {{ offset = 12, width = 4 }}\n\
         [[cluster]]\nname = \"c\"\nbackends = [{{ address = \"{}\" }}]\npool = {{ connections_per_backend = 1 }}\n",
        backend.addr
    );
    let config = crate::config::parse(&text, std::path::Path::new("t.toml")).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let (_stop, shutdown) = tokio::sync::watch::channel(false);
        let shared = Arc::new(Shared::new(Vec::new(), 1 << 30, Default::default()));
        let registry = Rc::new(Registry::new(0, shared, shutdown));
        let upstream = Upstream {
            cluster: Arc::new(Cluster::new(config.clusters[0].balance.clone())),
            config: Arc::new(config.clusters[0].clone()),
        };
        let listener_config = &config.listeners[0];
        let pool = Pool::start(listener_config, &upstream, &registry);
        // The client's socket: the handle writes answers into it, a task reads them here.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (near, peer) = listener.accept().await.unwrap();
        let client = Rc::new(Client::new(
            1,
            peer,
            listener_config.protocols.requests.clone(),
            (switchyard_proto::Correlation::ById, true),
            64 << 20,
            Default::default(),
        ));
        let sink: Rc<dyn ReplySink> = client.clone();
        client.attach(Rc::new(crate::transport::Stream::plain(near)));
        let answered = Rc::new(Cell::new(0u64));
        let counted = answered.clone();
        tokio::task::spawn_local(async move {
            let mut far = far;
            let mut buf = Vec::with_capacity(1 << 16);
            loop {
                match far.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let mut at = 0;
                while buf.len() - at >= 4 {
                    let len = 4 + u32::from_be_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
                    if buf.len() - at < len {
                        break;
                    }
                    counted.set(counted.get() + 1);
                    at += len;
                }
                buf.drain(..at);
            }
        });
        let id = Span { offset: 12, len: 4 };
        let mut frame = Vec::new();
        let mut most = (0, 0);
        for n in 0..MESSAGES {
            // Wait for answers (and room) before sending more.
            loop {
                let room = client.inflight() < DEPTH;
                if room {
                    if let PoolTarget::Conn(conn) = pool.target(0, client.gid) {
                        frame.clear();
                        proto::write_request(&mut frame, n % 16, n as u32, b"payload");
                        let ticket = client.ticket(None, Some(&frame[12..16]), None);
                        conn.send(
                            &frame,
                            crate::backend::MsgId::Rewrite(id),
                            Some(ticket),
                            crate::backend::Sending {
                                retry: false,
                                ends: None,
                            },
                            &sink,
                            Instant::now(),
                        );
                        if n % 10_000 == 0 {
                            let (f, oneway) = conn.footprint();
                            let outstanding = conn.outstanding();
                            assert!(f.ids <= DEPTH && f.order == f.ids, "{n}: {f:?}");
                            assert_eq!(f.ids, outstanding, "{n}");
                            assert_eq!(
                                (f.fifo, f.tombstones, f.tombstone_order, oneway),
                                (0, 0, 0, 0)
                            );
                            most = (most.0.max(f.ids), most.1.max(f.order));
                        }
                        break;
                    }
                }
                client.set_waiting(true, false);
                client.changed().await;
            }
        }
        while answered.get() < MESSAGES {
            client.set_waiting(true, false);
            tokio::select! {
                _ = client.changed() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(10)) => {}
            }
        }
        assert!(client.failure().is_none(), "{:?}", client.failure());
        let PoolTarget::Conn(conn) = pool.target(0, client.gid) else {
            panic!("the connection is gone")
        };
        let (f, _) = conn.footprint();
        assert_eq!((f.ids, f.order), (0, 0), "all answered, nothing kept");
        assert!(most.0 > 0, "the checks saw requests in flight");
    });
    assert_eq!(backend.messages(), MESSAGES);
}
