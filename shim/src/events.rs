//! Task events for containerd, sent in order by one background task.
//!
//! Publishing is a ttrpc round trip to containerd. Requests used to wait for it (Create for
//! TaskCreate, Start for TaskStart, Delete for TaskDelete), which put three round trips on every
//! container's start path; runc's shim queues its events the same way. One task sends them in the
//! order they were queued, so containerd still sees TaskCreate before TaskStart before TaskExit.

use containerd_shim::event::Event;
use containerd_shim_protos::protobuf::MessageDyn;
use tokio::sync::{mpsc, oneshot};

use crate::seams::EventSink;

enum Queued {
    Event {
        topic: String,
        event: Box<dyn MessageDyn>,
    },
    /// Answered once everything queued before it was sent.
    Flush(oneshot::Sender<()>),
}

/// The queue's sending side.
pub struct Events {
    tx: mpsc::UnboundedSender<Queued>,
}

impl Events {
    /// Starts the sending task on the current tokio runtime; it hands each event to `sink`.
    pub fn start(sink: impl EventSink, namespace: String) -> Events {
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            while let Some(queued) = rx.recv().await {
                match queued {
                    Queued::Event { topic, event } => {
                        if let Err(e) = sink.publish(&topic, &namespace, event).await {
                            tracing::warn!("{}", e.chain());
                        }
                    }
                    Queued::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        });
        Events { tx }
    }

    /// Queues `event`; it is sent after every event queued before it.
    pub fn send<E: Event + MessageDyn>(&self, event: E) {
        let topic = event.topic();
        if self
            .tx
            .send(Queued::Event {
                topic: topic.clone(),
                event: Box::new(event),
            })
            .is_err()
        {
            tracing::warn!("publishing {topic}: the event task has stopped");
        }
    }

    /// Waits until every event queued so far was sent (or failed): the shim calls it before it exits.
    pub async fn flush(&self) {
        let (done, sent) = oneshot::channel();
        if self.tx.send(Queued::Flush(done)).is_ok() {
            let _ = sent.await;
        }
    }
}
