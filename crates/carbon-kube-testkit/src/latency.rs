//! A latency-injecting TCP proxy: a slow etcd for fault tests.
//!
//! kube-apiserver talks to etcd through it when
//! [`crate::ControlPlaneOptions::with_etcd_latency_proxy`] is set; a test
//! then makes etcd slow with [`crate::ControlPlane::set_etcd_latency`] and
//! fast again with zero. Each chunk of bytes, in either direction, is
//! delivered `latency` after it was read (a delay line: throughput is kept,
//! every request and answer takes `latency` longer each way), so etcd looks
//! like a member on a slow disk or far away, not like a broken one.
//!
//! The proxy runs on a thread of its own with its own tokio runtime: the
//! shared control plane outlives the runtime of the test that started it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::Error;

/// A running proxy from a local port to `upstream`; stopped on drop.
#[derive(Debug)]
pub(crate) struct LatencyProxy {
    addr: SocketAddr,
    latency_micros: Arc<AtomicU64>,
    stop: watch::Sender<bool>,
    thread: Option<JoinHandle<()>>,
}

impl LatencyProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to
    /// `upstream`, with no added latency until [`LatencyProxy::set_latency`].
    pub(crate) fn start(upstream: SocketAddr) -> Result<Self, Error> {
        let std_listener =
            std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(Error::FreePort)?;
        std_listener
            .set_nonblocking(true)
            .map_err(Error::FreePort)?;
        let addr = std_listener.local_addr().map_err(Error::FreePort)?;
        let latency_micros = Arc::new(AtomicU64::new(0));
        let (stop, stopped) = watch::channel(false);
        let latency = latency_micros.clone();
        let thread = std::thread::Builder::new()
            .name("etcd-latency-proxy".to_owned())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        eprintln!("carbon-kube-testkit: etcd latency proxy: no runtime: {e}");
                        return;
                    }
                };
                runtime.block_on(serve(std_listener, upstream, latency, stopped));
            })
            .map_err(|source| Error::Spawn {
                component: "etcd latency proxy".to_owned(),
                program: "(thread)".into(),
                source,
            })?;
        Ok(Self {
            addr,
            latency_micros,
            stop,
            thread: Some(thread),
        })
    }

    /// Where kube-apiserver connects.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Delay added to every chunk from now on, each way.
    pub(crate) fn set_latency(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency_micros.store(micros, Ordering::Relaxed);
    }

    /// The current delay each way.
    pub(crate) fn latency(&self) -> Duration {
        Duration::from_micros(self.latency_micros.load(Ordering::Relaxed))
    }
}

impl Drop for LatencyProxy {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    upstream: SocketAddr,
    latency: Arc<AtomicU64>,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("carbon-kube-testkit: etcd latency proxy: {e}");
            return;
        }
    };
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stopped.changed() => break,
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let latency = latency.clone();
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        delay_line(client_read, server_write, latency.clone()),
                        delay_line(server_read, client_write, latency),
                    );
                });
            }
        }
    }
    connections.shutdown().await;
}

/// Copies `from` to `to`, each chunk written `latency` after it was read.
async fn delay_line(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, latency: Arc<AtomicU64>) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let due =
                        Instant::now() + Duration::from_micros(latency.load(Ordering::Relaxed));
                    if tx.send((due, buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            }
        }
        // Dropping `tx` ends the writer once the queued chunks are out.
    };
    let writer = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server behind the proxy: bytes come back intact, and later
    /// than the latency each way once one is set.
    #[tokio::test]
    async fn forwards_bytes_and_delays_them() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let upstream = echo.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        let proxy = LatencyProxy::start(upstream).unwrap();
        let mut conn = TcpStream::connect(proxy.addr()).await.unwrap();
        let mut back = [0u8; 5];
        conn.write_all(b"hello").await.unwrap();
        conn.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");

        proxy.set_latency(Duration::from_millis(100));
        assert_eq!(proxy.latency(), Duration::from_millis(100));
        let sent = std::time::Instant::now();
        conn.write_all(b"world").await.unwrap();
        conn.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"world");
        // Two delays: to the server and back.
        assert!(
            sent.elapsed() >= Duration::from_millis(200),
            "{:?}",
            sent.elapsed()
        );
    }
}
