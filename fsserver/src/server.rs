//! Server lifecycle: accept connections on an already-bound listener until `shutdown`
//! resolves (each admitted as `admission` decides: a connection over its source's share of
//! pre-auth slots is closed at once); then stop accepting, tell every connection to stop
//! reading, let in-flight requests finish and wait for the connections.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};
use tracing::{debug, error, info, warn};

use crate::pipeline::connection;
use crate::Shared;

/// Serves every listener until `shutdown` resolves, then drains.
pub async fn run(listeners: Vec<TcpListener>, shared: Arc<Shared>, shutdown: impl Future) {
    let (notify_shutdown, _) = broadcast::channel::<()>(1);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);

    let expiry = {
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            loop {
                tick.tick().await;
                let gone = shared.sessions.expire();
                if gone > 0 {
                    info!("{gone} session(s) ended: no reconnection within the grace period");
                }
            }
        })
    };
    let accept_loop = futures::future::join_all(
        listeners
            .iter()
            .map(|l| accept_from(l, &shared, &notify_shutdown, &done_tx)),
    );
    tokio::select! {
        _ = accept_loop => {}
        _ = shutdown => info!("shutting down: no new connections, finishing in-flight requests"),
    }
    drop(listeners);
    expiry.abort();
    drop(notify_shutdown);
    drop(done_tx);
    let drain = shared.config.drain_timeout;
    if tokio::time::timeout(drain, done_rx.recv()).await.is_err() {
        warn!("connections still open after {drain:?}; exiting anyway");
    }
}

/// Accepts connections on `listener` for ever, each admitted as `admission` decides.
async fn accept_from(
    listener: &TcpListener,
    shared: &Arc<Shared>,
    notify_shutdown: &broadcast::Sender<()>,
    done_tx: &mpsc::Sender<()>,
) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // EMFILE and the like: back off instead of spinning.
                error!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(pending) = shared.admission.pending(peer.ip()) else {
            // Over its source's (or the total) share of unauthenticated connections.
            debug!(%peer, "too many connections in their handshake; closed");
            continue;
        };
        let (shared, rx, done) = (shared.clone(), notify_shutdown.subscribe(), done_tx.clone());
        tokio::spawn(async move {
            connection::serve(socket, peer, shared, rx, pending).await;
            drop(done);
        });
    }
}
