//! Task events for containerd, sent in order by one background task.
//!
//! Publishing is a ttrpc round trip to containerd. Requests used to wait for it (Create for
//! TaskCreate, Start for TaskStart, Delete for TaskDelete), which put three round trips on every
//! container's start path; runc's shim queues its events the same way. One task sends them in the
//! order they were queued, so containerd still sees TaskCreate before TaskStart before TaskExit.
//!
//! Each event reaches containerd as a protobuf `Any` whose type URL is the message's full name. It is encoded
//! when queued, through the concrete type: its name is a constant of the type ([`TypeName`]) and its bytes come
//! from `Message::write_to_bytes`. Neither asks protobuf's reflection, which containerd-shim's `convert_to_any`
//! did (`descriptor_dyn()` for the name, and `write_to_bytes_dyn`, which looks the descriptor up for an error
//! message it may never need): the first descriptor of a shim process parses the event's `.proto` file and every
//! file it imports (containerd's `fieldpath.proto` imports `google/protobuf/descriptor.proto`, comments
//! included), CPU and heap that the first event of every container, its TaskCreate, spent on the runtime's
//! thread before Create's reply went out (docs/BENCHMARKS.md, "An event's descriptor on the start path").

use containerd_shim::event::Event;
use containerd_shim_protos::cgroups::metrics::Metrics as MetricsV1;
use containerd_shim_protos::cgroups_v2::metrics::Metrics as MetricsV2;
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::shim::oci::ProcessDetails;
use tokio::sync::{mpsc, oneshot};

use crate::seams::EventSink;

/// A message's protobuf full name: the type URL containerd's `typeurl` reads from an `Any` (no
/// `type.googleapis.com/` prefix, as containerd-shim's `convert_to_any` sends it).
pub trait TypeName {
    /// `<package>.<message>`, as in the `.proto` file.
    const TYPE_NAME: &'static str;
}

macro_rules! type_names {
    ($($package:literal => $($t:ty = $name:literal),+;)+) => {
        $($(impl TypeName for $t {
            const TYPE_NAME: &'static str = concat!($package, ".", $name);
        })+)+
    };
}

type_names! {
    "containerd.events" => TaskCreate = "TaskCreate", TaskStart = "TaskStart", TaskExit = "TaskExit",
        TaskDelete = "TaskDelete", TaskExecAdded = "TaskExecAdded", TaskExecStarted = "TaskExecStarted",
        TaskPaused = "TaskPaused", TaskResumed = "TaskResumed", TaskOOM = "TaskOOM";
    "io.containerd.cgroups.v1" => MetricsV1 = "Metrics";
    "io.containerd.cgroups.v2" => MetricsV2 = "Metrics";
    "containerd.runc.v1" => ProcessDetails = "ProcessDetails";
}

/// `message` in an `Any` under its [`TypeName`], without protobuf's reflection: every `Any` the shim sends (events,
/// Stats' metrics, Pids' process details).
pub fn to_any<M: TypeName + Message>(message: &M) -> containerd_shim_protos::protobuf::Result<Any> {
    let mut any = Any::new();
    any.type_url = M::TYPE_NAME.to_owned();
    any.value = message.write_to_bytes()?;
    Ok(any)
}

enum Queued {
    Event {
        topic: String,
        event: Any,
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
    pub fn send<E: Event + Message + TypeName>(&self, event: E) {
        let topic = event.topic();
        let event = match to_any(&event) {
            Ok(any) => any,
            Err(e) => {
                tracing::warn!("publishing {topic}: encoding: {e}");
                return;
            }
        };
        if self
            .tx
            .send(Queued::Event {
                topic: topic.clone(),
                event,
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

#[cfg(test)]
mod tests {
    use containerd_shim_protos::protobuf::MessageFull;

    use super::*;

    fn named_as_its_descriptor<M: TypeName + MessageFull>() {
        assert_eq!(M::TYPE_NAME, M::descriptor().full_name());
    }

    #[test]
    fn every_type_name_is_the_messages_protobuf_name() {
        named_as_its_descriptor::<TaskCreate>();
        named_as_its_descriptor::<TaskStart>();
        named_as_its_descriptor::<TaskExit>();
        named_as_its_descriptor::<TaskDelete>();
        named_as_its_descriptor::<TaskExecAdded>();
        named_as_its_descriptor::<TaskExecStarted>();
        named_as_its_descriptor::<TaskPaused>();
        named_as_its_descriptor::<TaskResumed>();
        named_as_its_descriptor::<TaskOOM>();
        named_as_its_descriptor::<MetricsV1>();
        named_as_its_descriptor::<MetricsV2>();
        named_as_its_descriptor::<ProcessDetails>();
    }

    #[test]
    fn an_any_carries_the_name_and_the_message_as_containerd_shims_did() {
        let exit = TaskExit {
            container_id: "c1".into(),
            pid: 42,
            exit_status: 137,
            ..Default::default()
        };
        let any = to_any(&exit).expect("encodes");
        let theirs =
            containerd_shim::util::convert_to_any(Box::new(exit.clone())).expect("encodes");
        assert_eq!(any, theirs);
        assert_eq!(
            TaskExit::parse_from_bytes(&any.value).expect("decodes"),
            exit
        );
    }
}
