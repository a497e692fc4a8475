//! A TCP forwarder on a loopback port ([`Forwarder`]): the stand-in for a virtual IP or a DNS
//! name that an operator (or a failover manager) moves from one server to another.
//!
//! Each accepted connection is forwarded to the backend port current at its accept; moving the
//! forwarder ([`Forwarder::point_to`]) cuts the connections it forwards, as a moved address
//! does, and new connections reach the new backend. A connection whose backend does not
//! answer is closed at once. Everything stops when the handle is dropped.

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running forwarder (stopped, with its connections, on drop).
pub(crate) struct Forwarder {
    port: u16,
    backend: watch::Sender<u16>,
    accept: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on a free loopback port and forwards to `127.0.0.1:{backend}`.
    pub(crate) async fn start(backend: u16) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = watch::channel(backend);
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(forward(inbound, rx.clone()));
            }
        });
        Forwarder {
            port,
            backend: tx,
            accept,
        }
    }

    /// The port clients connect to.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// Moves the forwarder to `127.0.0.1:{backend}`, cutting the connections it forwards.
    pub(crate) fn point_to(&self, backend: u16) {
        self.backend.send_replace(backend);
    }
}

/// Copies both ways between `inbound` and the current backend until either side closes or
/// the forwarder moves (or is dropped).
async fn forward(mut inbound: TcpStream, mut backend: watch::Receiver<u16>) {
    let port = *backend.borrow_and_update();
    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", port)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = backend.changed() => {}
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.accept.abort();
    }
}
