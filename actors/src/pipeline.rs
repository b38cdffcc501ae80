//! The handle the service holds on the chat pipeline: it starts the
//! supervision tree and submits turns to it.

use std::sync::Arc;

use ractor::{Actor, ActorRef};
use tokio::sync::{mpsc, oneshot};

use crate::chat_session::{PipelineDeps, TurnError, TurnEvent, TurnJob, TurnRequest};
use crate::ports::StoredMessage;
use crate::supervisor::{RootMsg, RootSupervisor};

/// A running turn: cleaned deltas as they come, then the stored reply.
pub struct TurnHandle {
    pub events: mpsc::UnboundedReceiver<TurnEvent>,
    pub reply: oneshot::Receiver<Result<StoredMessage, TurnError>>,
}

#[derive(Clone)]
pub struct ChatPipeline {
    root: ActorRef<RootMsg>,
}

impl ChatPipeline {
    pub async fn start(deps: PipelineDeps) -> Result<Self, ractor::SpawnErr> {
        let (root, _) = Actor::spawn(None, RootSupervisor, Arc::new(deps)).await?;
        Ok(Self { root })
    }

    /// Submits a turn; the reply arrives on the handle.
    pub fn submit(&self, request: TurnRequest) -> Result<TurnHandle, TurnError> {
        let (events_tx, events) = mpsc::unbounded_channel();
        let (reply_tx, reply) = oneshot::channel();
        let job = TurnJob {
            request,
            events: events_tx,
            reply: reply_tx,
        };
        self.root
            .send_message(RootMsg::Turn(job))
            .map_err(|_| TurnError::Unavailable("the pipeline has stopped".into()))?;
        Ok(TurnHandle { events, reply })
    }

    pub async fn active_tenants(&self) -> usize {
        let (tx, rx) = oneshot::channel();
        if self.root.send_message(RootMsg::ActiveTenants(tx)).is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Stops the tree; in-flight turns finish or their callers see an error.
    pub fn stop(&self) {
        self.root.stop(Some("shutdown".into()));
    }
}
