//! `keel.v1.ModelService`: loads the conversation from the blob store, calls
//! the vendor, stores each output item, and appends input and outputs to the
//! conversation only once the response completed — a failed or cut stream
//! leaves the conversation as it was.

use std::sync::Arc;

use futures::{StreamExt as _, TryStreamExt as _};
use keel_blobstore::{BlobStore, conversation, validate_digest};
use keel_proto::v1::model_service_server::{ModelService, ModelServiceServer};
use keel_proto::v1::stream_response_response::Event;
use keel_proto::v1::{
    OutputItemDone, OutputTextDelta, ReasoningSummaryDelta, ResponseCompleted,
    StreamResponseRequest, StreamResponseResponse, ToolSpec, item_input,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::config::Config;
use crate::error::ProxyError;
use crate::items;
use crate::responses::{ResponseEvent, ResponsesClient, ResponsesRequest};

/// The name grpc.health.v1 reports SERVING.
pub const SERVICE_NAME: &str = "keel.v1.ModelService";

/// Items fetched from the blob store at once while loading a conversation.
const FETCH_CONCURRENCY: usize = 16;

type Sender = mpsc::Sender<Result<StreamResponseResponse, Status>>;

/// The gRPC service; cheap to clone.
#[derive(Debug, Clone)]
pub struct ModelProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    client: ResponsesClient,
    blobs: BlobStore,
}

impl ModelProxy {
    pub fn new(config: Config, blobs: BlobStore) -> Result<Self, ProxyError> {
        let client = ResponsesClient::new(config.clone())?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                client,
                blobs,
            }),
        })
    }

    pub fn into_server(self) -> ModelServiceServer<Self> {
        ModelServiceServer::new(self)
    }
}

#[tonic::async_trait]
impl ModelService for ModelProxy {
    type StreamResponseStream = ReceiverStream<Result<StreamResponseResponse, Status>>;

    async fn stream_response(
        &self,
        request: Request<StreamResponseRequest>,
    ) -> Result<Response<Self::StreamResponseStream>, Status> {
        let req = request.into_inner();
        if self.inner.config.api_key.is_none() {
            return Err(ProxyError::NoApiKey.into_status());
        }
        let span = tracing::info_span!("stream_response", session_id = %req.session_id);
        let (tx, rx) = mpsc::channel(64);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(
            async move {
                // Dropping `run` when the client goes away drops the vendor
                // connection too, so nothing keeps reading for nobody.
                let result = tokio::select! {
                    r = inner.run(req, &tx) => r,
                    () = tx.closed() => {
                        tracing::info!("client went away; stopped the model call");
                        return;
                    }
                };
                if let Err(e) = result {
                    let status = inner.status(e);
                    tracing::warn!(code = ?status.code(), error = status.message(), "model call failed");
                    let _ = tx.send(Err(status)).await;
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Inner {
    async fn run(&self, req: StreamResponseRequest, tx: &Sender) -> Result<(), ProxyError> {
        if req.session_id.is_empty() {
            return Err(ProxyError::InvalidRequest("session_id is required".into()));
        }
        let conversation = req.conversation.unwrap_or_default();
        let head = Some(conversation.head.as_str()).filter(|h| !h.is_empty());
        let appended = self.store_appends(conversation.append).await?;
        let mut digests = conversation::item_digests(&self.blobs, head).await?;
        digests.extend(appended.iter().cloned());

        let mut input = Vec::with_capacity(req.ephemeral_items_json.len() + digests.len());
        for (i, json) in req.ephemeral_items_json.iter().enumerate() {
            let item = items::parse_item(json, &format!("ephemeral_items_json[{i}]"))?;
            input.push(Value::Object(items::strip_id(item)));
        }
        input.extend(self.load_items(&digests).await?);
        let tools = parse_tools(&req.tools)?;
        let model = if req.model.is_empty() {
            self.config.default_model.clone()
        } else {
            req.model
        };
        tracing::info!(
            model,
            items = digests.len(),
            appended = appended.len(),
            tools = tools.len(),
            "calling the model"
        );
        let request = ResponsesRequest::new(
            &req.session_id,
            model.clone(),
            if req.instructions.is_empty() {
                crate::prompt::BASE_INSTRUCTIONS.to_string()
            } else {
                req.instructions
            },
            input,
            tools,
            req.parallel_tool_calls,
        );

        let mut stream = self.client.stream(&request).await?;
        let mut outputs = Vec::new();
        loop {
            let event = match stream.next().await? {
                ResponseEvent::OutputTextDelta { item_id, delta } => {
                    Event::OutputTextDelta(OutputTextDelta { item_id, delta })
                }
                ResponseEvent::ReasoningSummaryDelta {
                    item_id,
                    summary_index,
                    delta,
                } => Event::ReasoningSummaryDelta(ReasoningSummaryDelta {
                    item_id,
                    summary_index,
                    delta,
                }),
                ResponseEvent::OutputItemDone(item) => {
                    let item = items::strip_id(item);
                    let digest = self.blobs.put_json(&item).await?;
                    outputs.push(digest.clone());
                    Event::OutputItemDone(OutputItemDone {
                        digest,
                        item: Some(items::summarize(&item)),
                    })
                }
                ResponseEvent::Completed {
                    response_id,
                    model: answered_by,
                    usage,
                } => {
                    let outputs_len = outputs.len();
                    let new_items = appended.into_iter().chain(outputs).collect();
                    let head = conversation::append(&self.blobs, head, new_items)
                        .await?
                        .unwrap_or_default();
                    tracing::info!(
                        response_id,
                        outputs = outputs_len,
                        input_tokens = usage.input_tokens,
                        cached_input_tokens = usage.cached_input_tokens,
                        output_tokens = usage.output_tokens,
                        "model response completed"
                    );
                    let done = ResponseCompleted {
                        head,
                        response_id,
                        usage: Some(usage),
                        model: answered_by.unwrap_or(model),
                    };
                    let _ = send(tx, Event::Completed(done)).await;
                    return Ok(());
                }
            };
            if send(tx, event).await.is_err() {
                // The client went away; `run` is about to be dropped anyway.
                return Ok(());
            }
        }
    }

    /// Stores inline items and checks digests; returns the digests in order.
    async fn store_appends(
        &self,
        append: Vec<keel_proto::v1::ItemInput>,
    ) -> Result<Vec<String>, ProxyError> {
        let mut digests = Vec::with_capacity(append.len());
        for (i, input) in append.into_iter().enumerate() {
            match input.kind {
                Some(item_input::Kind::Digest(d)) => {
                    validate_digest(&d)?;
                    digests.push(d);
                }
                Some(item_input::Kind::InlineJson(json)) => {
                    let item = items::parse_item(&json, &format!("conversation.append[{i}]"))?;
                    digests.push(self.blobs.put_json(&item).await?);
                }
                None => {
                    return Err(ProxyError::InvalidRequest(format!(
                        "conversation.append[{i}] has neither a digest nor inline_json"
                    )));
                }
            }
        }
        Ok(digests)
    }

    /// Fetches items in order, a few at a time.
    async fn load_items(&self, digests: &[String]) -> Result<Vec<Value>, ProxyError> {
        // Owned values: borrowed ones in `buffered` trip a compiler limitation
        // (`FnOnce` not general enough) once the future is spawned.
        let blobs = self.blobs.clone();
        futures::stream::iter(digests.to_vec())
            .map(move |digest| load_item(blobs.clone(), digest))
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The status for `e`, with the API key scrubbed from its message in case
    /// a vendor echoed it.
    fn status(&self, e: ProxyError) -> Status {
        let status = e.into_status();
        match &self.config.api_key {
            Some(key) => Status::new(status.code(), key.redact(status.message())),
            None => status,
        }
    }
}

async fn load_item(blobs: BlobStore, digest: String) -> Result<Value, ProxyError> {
    let bytes = blobs.get(&digest).await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(item)) => Ok(Value::Object(items::strip_id(item))),
        _ => Err(ProxyError::InvalidRequest(format!(
            "blob {digest} is not a conversation item (a JSON object)"
        ))),
    }
}

fn parse_tools(tools: &[ToolSpec]) -> Result<Vec<Value>, ProxyError> {
    tools
        .iter()
        .map(|t| match serde_json::from_str::<Value>(&t.json) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(ProxyError::InvalidRequest(format!(
                "tool {:?}: json must be a JSON object",
                t.name
            ))),
        })
        .collect()
}

async fn send(tx: &Sender, event: Event) -> Result<(), ()> {
    tx.send(Ok(StreamResponseResponse { event: Some(event) }))
        .await
        .map_err(|_| ())
}
