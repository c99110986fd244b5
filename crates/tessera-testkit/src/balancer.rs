//! A TCP load balancer in front of several nodes, as a deployment puts
//! one: each new connection goes to the next backend that accepts it,
//! round robin. The test may choose where the next one goes
//! ([`Balancer::steer`]), so it knows which node a client reached.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

/// Listens on 127.0.0.1:<ephemeral>; stops when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    next: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn({
            let next = Arc::clone(&next);
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let first = next.fetch_add(1, Ordering::SeqCst);
                    let backends = backends.clone();
                    tokio::spawn(async move {
                        // The first backend from `first` on that accepts.
                        for i in 0..backends.len() {
                            let to = backends[(first + i) % backends.len()];
                            if let Ok(server) = TcpStream::connect(to).await {
                                let _ = server.set_nodelay(true);
                                let _ = client.set_nodelay(true);
                                let (mut c, mut s) = (client, server);
                                let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                                return;
                            }
                        }
                    });
                }
            }
        });
        Balancer { addr, next, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The next connection goes to backend `i` (or the next that accepts).
    pub fn steer(&self, i: usize) {
        self.next.store(i, Ordering::SeqCst);
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
