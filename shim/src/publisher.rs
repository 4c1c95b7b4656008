//! The shim's events to containerd: one `Events.Forward` at a time over containerd's ttrpc socket, reconnecting
//! after any failure.
//!
//! containerd restarted (a crash, an upgrade, `systemctl restart containerd`) leaves the shim's connection dead.
//! containerd-shim's `RemotePublisher` (0.12) reconnects only on ttrpc's `RemoteClosed`/`LocalClosed`, and a dead
//! connection fails with `Others("reserve channel capacity failed: channel closed")`: every event after the restart
//! was retried on the dead connection and dropped, so containerd (and the CRI plugin, which learns of exits only
//! from `/tasks/exit`) never saw a container exit again (`e2e::containerd_restart_finds_the_running_containers`).
//! Here any failure drops the connection and the next attempt connects afresh. As runc's shim: an event is tried
//! again up to [`RETRIES`] times, waiting 1, 2, ... s, then dropped; the events after it wait, so the order holds.

use std::time::Duration;

use async_trait::async_trait;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use containerd_shim_protos::ttrpc;
use tokio::sync::Mutex;

use crate::error::{Result, ShimError};
use crate::seams::EventSink;

/// How many times a failed event is sent again (runc's shim: 5).
pub const RETRIES: u64 = 5;
/// How long one forward may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// containerd's event service at its ttrpc address.
pub struct Publisher {
    address: String,
    client: Mutex<Option<EventsClient>>,
}

impl Publisher {
    /// Connects to `address` (containerd's `TTRPC_ADDRESS`); failing here fails the shim's start, as before.
    pub async fn connect(address: &str) -> Result<Publisher> {
        let client = connect(address).await?;
        Ok(Publisher {
            address: address.to_owned(),
            client: Mutex::new(Some(client)),
        })
    }

    /// One attempt: connects when there is no connection, forwards, and drops the connection on a failure.
    async fn forward(&self, req: &ForwardRequest) -> Result<()> {
        let mut guard = self.client.lock().await;
        let client = match guard.as_ref() {
            Some(c) => c.clone(),
            None => {
                let c = connect(&self.address).await?;
                *guard = Some(c.clone());
                c
            }
        };
        let ctx = ttrpc::context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
        match client.forward(ctx, req).await {
            Ok(_) => Ok(()),
            Err(e) => {
                *guard = None;
                Err(ShimError::Shim {
                    context: format!("forwarding an event to {}", self.address),
                    source: containerd_shim::Error::Ttrpc(e),
                })
            }
        }
    }
}

async fn connect(address: &str) -> Result<EventsClient> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let stream = tokio::net::UnixStream::connect(path)
        .await
        .and_then(|s| s.into_std())
        .map_err(ShimError::io(format!(
            "connecting to containerd at {address}"
        )))?;
    let fd = std::os::fd::IntoRawFd::into_raw_fd(stream);
    // SAFETY: a connected unix socket whose ownership passes to the client.
    let client = unsafe { ttrpc::r#async::Client::from_raw_unix_socket_fd(fd) };
    Ok(EventsClient::new(client))
}

#[async_trait]
impl EventSink for Publisher {
    async fn publish(&self, topic: &str, namespace: &str, event: Any) -> Result<()> {
        let shim_err = |what: &str| {
            let context = format!("publishing {topic}: {what}");
            move |source| ShimError::Shim { context, source }
        };
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_owned());
        envelope.set_namespace(namespace.to_owned());
        envelope.set_timestamp(containerd_shim::util::timestamp().map_err(shim_err("timestamp"))?);
        envelope.set_event(event);
        let mut req = ForwardRequest::new();
        req.set_envelope(envelope);
        let mut attempt = 0;
        loop {
            match self.forward(&req).await {
                Ok(()) => return Ok(()),
                Err(ShimError::Shim { context, source }) if attempt == RETRIES => {
                    return Err(ShimError::Shim {
                        context: format!(
                            "{topic} dropped after {} attempts: {context}",
                            RETRIES + 1
                        ),
                        source,
                    });
                }
                Err(e) if attempt == RETRIES => return Err(e),
                Err(e) => {
                    attempt += 1;
                    tracing::debug!("publishing {topic}, attempt {attempt}: {}", e.chain());
                    tokio::time::sleep(Duration::from_secs(attempt)).await;
                }
            }
        }
    }
}
