//! `keel.v1.ModelService`: picks the provider, takes a capacity slot, loads
//! the conversation from the blob store, runs the call, and appends input
//! and outputs to the conversation only once the response completed — a
//! failed or cut stream leaves the conversation as it was.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt as _, TryStreamExt as _};
use keel_blobstore::{BlobStore, conversation, validate_digest};
use keel_proto::v1::model_service_server::{ModelService, ModelServiceServer};
use keel_proto::v1::stream_response_response::Event;
use keel_proto::v1::{
    CallPrefix, DescribeDefaultsRequest, DescribeDefaultsResponse, OutputItemDone,
    ResponseCompleted, StreamResponseRequest, StreamResponseResponse, ToolSpec, item_input,
};
use prost::Message as _;
use reqwest::Url;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::Instrument as _;

use crate::call::{Call, Sampled, Sender, send};
use crate::capacity::{Capacity, Limiter};
use crate::config::{Config, Provider};
use crate::controls::{CallControls, RequestedControls};
use crate::error::ProxyError;
use crate::http::{VendorClient, endpoint};
use crate::items;
use crate::metrics::Metrics;
use crate::wire::{self, Prompt};
use crate::{catalog, compact};

/// The name grpc.health.v1 reports SERVING.
pub const SERVICE_NAME: &str = "keel.v1.ModelService";

/// Items fetched from the blob store at once while loading a conversation.
const FETCH_CONCURRENCY: usize = 16;

/// The gRPC service; cheap to clone.
#[derive(Debug, Clone)]
pub struct ModelProxy {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    providers: BTreeMap<String, Route>,
    client: VendorClient,
    blobs: BlobStore,
    metrics: Arc<Metrics>,
}

/// A provider with what calling it needs.
#[derive(Debug)]
struct Route {
    provider: Provider,
    url: Url,
    limiter: Arc<Limiter>,
}

impl ModelProxy {
    pub fn new(config: Config, blobs: BlobStore) -> Result<Self, ProxyError> {
        let metrics = Metrics::new().map_err(|e| ProxyError::Setup(e.to_string()))?;
        Self::with_metrics(config, blobs, Arc::new(metrics))
    }

    /// With a metrics registry the caller also serves.
    pub fn with_metrics(
        config: Config,
        blobs: BlobStore,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ProxyError> {
        let capacity = Capacity::new(config.providers.keys().map(String::as_str), config.limits);
        let mut providers = BTreeMap::new();
        for (id, provider) in &config.providers {
            let limiter = capacity
                .limiter(id)
                .ok_or_else(|| ProxyError::Setup(format!("no limiter for {id}")))?;
            let route = Route {
                url: endpoint(provider)?,
                provider: provider.clone(),
                limiter,
            };
            providers.insert(id.clone(), route);
            metrics.provider(id);
        }
        if !providers.contains_key(&config.default_provider) {
            return Err(ProxyError::Setup(format!(
                "the default provider {:?} is not configured",
                config.default_provider
            )));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client: VendorClient::new()?,
                config,
                providers,
                blobs,
                metrics,
            }),
        })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// The gRPC service. Requests carry the instructions, tool specs and
    /// ephemeral items (an image the model viewed travels inline, resized to
    /// at most 2048 px a side), so the decoding limit is well above tonic's
    /// 4 MiB default.
    pub fn into_server(self) -> ModelServiceServer<Self> {
        ModelServiceServer::new(self).max_decoding_message_size(32 * 1024 * 1024)
    }
}

#[tonic::async_trait]
impl ModelService for ModelProxy {
    type StreamResponseStream = ReceiverStream<Result<StreamResponseResponse, Status>>;

    async fn describe_defaults(
        &self,
        request: Request<DescribeDefaultsRequest>,
    ) -> Result<Response<DescribeDefaultsResponse>, Status> {
        let req = request.into_inner();
        let route = self
            .inner
            .route(&req.provider)
            .map_err(|e| self.inner.status(e))?;
        let config = &self.inner.config;
        let d = &config.defaults;
        Ok(Response::new(DescribeDefaultsResponse {
            provider: route.provider.id.clone(),
            model: config.default_model.clone(),
            reasoning_effort: d
                .reasoning_effort
                .map(|e| e.as_str().to_string())
                .unwrap_or_default(),
            reasoning_summary: d
                .reasoning_summary
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            personality: d
                .personality
                .map(|p| p.as_str().to_string())
                .unwrap_or_default(),
            wire_api: route.provider.wire_api.as_str().to_string(),
            model_info: Some(catalog::describe(
                if req.model.is_empty() {
                    &config.default_model
                } else {
                    &req.model
                },
                config.catalog,
            )),
        }))
    }

    async fn stream_response(
        &self,
        request: Request<StreamResponseRequest>,
    ) -> Result<Response<Self::StreamResponseStream>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let route = self
            .inner
            .route(&req.provider)
            .map_err(|e| self.inner.status(e))?;
        let provider_id = route.provider.id.clone();
        if route.provider.missing_key() {
            self.inner.metrics.error(&provider_id, "unauthenticated");
            return Err(self.inner.status(ProxyError::NoApiKey {
                env_key: route.provider.env_key.clone().unwrap_or_default(),
                instructions: route.provider.env_key_instructions.clone(),
            }));
        }
        let model = if req.model.is_empty() {
            self.inner.config.default_model.clone()
        } else {
            req.model.clone()
        };
        // A span of its own in the caller's trace: the model call, with
        // OpenTelemetry's GenAI attribute names.
        let span = tracing::info_span!(
            "stream_response",
            otel.name = format!("model call {model}"),
            session_id = %req.session_id,
            provider = %provider_id,
            %model,
            gen_ai.system = %provider_id,
            gen_ai.request.model = %model,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            keel.model.cached_input_tokens = tracing::field::Empty,
            keel.model.time_to_first_byte_ms = tracing::field::Empty,
            keel.model.retries = tracing::field::Empty,
            keel.model.outcome = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        let (tx, rx) = mpsc::channel(64);
        let inner = Arc::clone(&self.inner);
        tokio::spawn(
            async move {
                // Dropping `run` when the client goes away drops the vendor
                // connection too, so nothing keeps reading for nobody.
                let result = tokio::select! {
                    r = inner.run(req, &provider_id, &model, started, &tx) => r,
                    () = tx.closed() => Err(ProxyError::ClientGone),
                };
                let outcome = match &result {
                    Ok(()) => "ok",
                    Err(e) => e.class(),
                };
                inner.metrics.call(&provider_id, &model, outcome, started.elapsed());
                let span = tracing::Span::current();
                span.record("keel.model.outcome", outcome);
                if !matches!(result, Ok(()) | Err(ProxyError::ClientGone)) {
                    span.record("otel.status_code", "ERROR");
                }
                match result {
                    Ok(()) => {}
                    Err(ProxyError::ClientGone) => {
                        tracing::info!("client went away; stopped the model call");
                    }
                    Err(e) => {
                        inner.metrics.error(&provider_id, e.class());
                        let status = inner.status(e);
                        tracing::warn!(code = ?status.code(), error = status.message(), "model call failed");
                        let _ = tx.send(Err(status)).await;
                    }
                }
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl Inner {
    fn route(&self, provider: &str) -> Result<&Route, ProxyError> {
        let id = if provider.is_empty() {
            self.config.default_provider.as_str()
        } else {
            provider
        };
        self.providers
            .get(id)
            .ok_or_else(|| ProxyError::UnknownProvider {
                id: id.to_string(),
                known: self
                    .providers
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    async fn run(
        &self,
        req: StreamResponseRequest,
        provider_id: &str,
        model: &str,
        started: Instant,
        tx: &Sender,
    ) -> Result<(), ProxyError> {
        let route = self.route(provider_id)?;
        if req.session_id.is_empty() {
            return Err(ProxyError::InvalidRequest("session_id is required".into()));
        }
        // Everything the call reads and writes is the session's.
        let blobs = &self.blobs.for_session(&req.session_id)?;
        let schema = self
            .inline_or_stored(
                blobs,
                ("final_output_json_schema", &req.final_output_json_schema),
                &req.final_output_json_schema_digest,
            )
            .await?;
        let instructions = self
            .inline_or_stored(
                blobs,
                ("instructions", &req.instructions),
                &req.instructions_digest,
            )
            .await?;
        let controls = CallControls::resolve(
            RequestedControls {
                reasoning_effort: &req.reasoning_effort,
                reasoning_summary: &req.reasoning_summary,
                verbosity: &req.verbosity,
                service_tier: &req.service_tier,
                final_output_json_schema: &schema,
                personality: &req.personality,
            },
            &self.config.defaults,
        )?;
        let prefix = self.prefix(blobs, &req).await?;
        // A compaction summarises; it must not call tools.
        let tools = if req.compact {
            Vec::new()
        } else {
            parse_tools(&prefix.tools)?
        };
        let mut input = self
            .load_items(blobs, &prefix.ephemeral_item_digests)
            .await?;
        for (i, json) in prefix.ephemeral_items_json.iter().enumerate() {
            let item = items::parse_item(json, &format!("ephemeral_items_json[{i}]"))?;
            input.push(Value::Object(items::strip_id(item)));
        }

        let _slot = route
            .limiter
            .acquire_noting_wait(|| self.metrics.queued(provider_id))
            .await?;
        let _in_flight = self.metrics.in_flight(provider_id);

        let conversation = req.conversation.unwrap_or_default();
        let head = Some(conversation.head.as_str()).filter(|h| !h.is_empty());
        let appended = self.store_appends(blobs, conversation.append).await?;
        let mut digests = conversation::item_digests(blobs, head).await?;
        digests.extend(appended.iter().cloned());
        let loaded = self.load_items(blobs, &digests).await?;
        let kept = if req.compact {
            compact::kept_user_messages(&digests, &loaded)
        } else {
            Vec::new()
        };
        input.extend(loaded);
        if req.compact {
            input.push(compact::prompt_item());
        }
        tracing::info!(
            wire_api = route.provider.wire_api.as_str(),
            items = digests.len(),
            appended = appended.len(),
            tools = tools.len(),
            "calling the model"
        );
        let prompt = Prompt {
            session_id: req.session_id.clone(),
            model: model.to_string(),
            instructions: if instructions.is_empty() {
                crate::prompt::base_instructions(controls.personality)
            } else {
                instructions
            },
            input,
            tools,
            parallel_tool_calls: req.parallel_tool_calls,
            controls,
        };
        let body: Bytes = wire::body(route.provider.wire_api, prompt)?;

        let call = Call {
            config: &self.config,
            provider: &route.provider,
            url: &route.url,
            client: &self.client,
            blobs,
            metrics: &self.metrics,
            session_id: &req.session_id,
            model,
            started,
        };
        let sampled = call.run(body, tx).await?;
        if req.compact {
            let summary = compact::summary_text(blobs, &sampled).await?;
            let summary_item = compact::summary_item(&summary);
            let mut items = kept;
            items.push(blobs.put_json(&summary_item).await?);
            let new_head = conversation::append(blobs, None, items).await?;
            return self
                .announce(
                    new_head.unwrap_or_default(),
                    sampled,
                    provider_id,
                    model,
                    tx,
                )
                .await;
        }
        self.complete(blobs, head, appended, sampled, provider_id, model, tx)
            .await
    }

    /// Appends the input and outputs to the conversation, then announces the
    /// items and `completed`.
    #[allow(clippy::too_many_arguments)]
    async fn complete(
        &self,
        blobs: &BlobStore,
        head: Option<&str>,
        appended: Vec<String>,
        sampled: Sampled,
        provider_id: &str,
        model: &str,
        tx: &Sender,
    ) -> Result<(), ProxyError> {
        let new_items = appended
            .into_iter()
            .chain(sampled.outputs.iter().map(|(d, _)| d.clone()))
            .collect();
        let head = conversation::append(blobs, head, new_items)
            .await?
            .unwrap_or_default();
        self.announce(head, sampled, provider_id, model, tx).await
    }

    /// Announces the output items and `completed` with the new `head`.
    async fn announce(
        &self,
        head: String,
        sampled: Sampled,
        provider_id: &str,
        model: &str,
        tx: &Sender,
    ) -> Result<(), ProxyError> {
        let Sampled {
            response_id,
            model: answered_by,
            usage,
            outputs,
            rate_limits,
        } = sampled;
        tracing::info!(
            response_id,
            outputs = outputs.len(),
            input_tokens = usage.input_tokens,
            cached_input_tokens = usage.cached_input_tokens,
            output_tokens = usage.output_tokens,
            "model response completed"
        );
        self.metrics.tokens(provider_id, model, &usage);
        self.metrics
            .cost(provider_id, model, &usage, self.config.price(model));
        let span = tracing::Span::current();
        if let Some(answered_by) = &answered_by {
            span.record("gen_ai.response.model", answered_by.as_str());
        }
        span.record("gen_ai.usage.input_tokens", usage.input_tokens);
        span.record("gen_ai.usage.output_tokens", usage.output_tokens);
        span.record("keel.model.cached_input_tokens", usage.cached_input_tokens);
        for (digest, item) in outputs {
            let done = OutputItemDone {
                digest,
                item: Some(item),
            };
            send(tx, Event::OutputItemDone(done)).await?;
        }
        let done = ResponseCompleted {
            head,
            response_id,
            usage: Some(usage),
            model: answered_by.unwrap_or_else(|| model.to_string()),
            rate_limits,
        };
        send(tx, Event::Completed(done)).await
    }

    /// Stores inline items and checks digests; returns the digests in order.
    async fn store_appends(
        &self,
        blobs: &BlobStore,
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
                    digests.push(blobs.put_json(&item).await?);
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

    /// The call's tools and ephemeral items: sent inline (and stored when
    /// `store_prefix` asks), or read from the blob store by `prefix_digest`.
    async fn prefix(
        &self,
        blobs: &BlobStore,
        req: &StreamResponseRequest,
    ) -> Result<CallPrefix, ProxyError> {
        let inline = CallPrefix {
            tools: req.tools.clone(),
            ephemeral_item_digests: req.ephemeral_item_digests.clone(),
            ephemeral_items_json: req.ephemeral_items_json.clone(),
        };
        if req.store_prefix {
            if req.prefix_digest.is_empty() {
                return Err(ProxyError::InvalidRequest(
                    "store_prefix needs the prefix_digest to store the prefix under".into(),
                ));
            }
            let bytes = inline.encode_to_vec();
            let digest = keel_blobstore::digest(&bytes);
            if digest != req.prefix_digest {
                return Err(ProxyError::InvalidRequest(format!(
                    "prefix_digest {:?} does not match the tools and items sent (their digest is {digest})",
                    req.prefix_digest
                )));
            }
            blobs.put(bytes).await?;
            return Ok(inline);
        }
        if req.prefix_digest.is_empty() {
            return Ok(inline);
        }
        if inline != CallPrefix::default() {
            return Err(ProxyError::InvalidRequest(
                "with prefix_digest (and no store_prefix), tools and ephemeral items come from the stored prefix; send none".into(),
            ));
        }
        let bytes = match blobs.get(&req.prefix_digest).await {
            Ok(b) => b,
            Err(keel_blobstore::BlobError::NotFound(d)) => {
                return Err(ProxyError::PrefixMissing(d));
            }
            Err(e) => return Err(e.into()),
        };
        CallPrefix::decode(bytes).map_err(|e| {
            ProxyError::InvalidRequest(format!(
                "blob {} is not a call prefix: {e}",
                req.prefix_digest
            ))
        })
    }

    /// Fetches items in order, a few at a time.
    /// A text the request gives inline or names by its blob digest (never
    /// both); empty when it gives neither.
    async fn inline_or_stored(
        &self,
        blobs: &BlobStore,
        (field, inline): (&str, &str),
        digest: &str,
    ) -> Result<String, ProxyError> {
        if digest.is_empty() {
            return Ok(inline.to_string());
        }
        if !inline.is_empty() {
            return Err(ProxyError::InvalidRequest(format!(
                "{field} and {field}_digest are exclusive"
            )));
        }
        let bytes = blobs.get(digest).await?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            ProxyError::InvalidRequest(format!("{field}_digest: blob {digest} is not UTF-8 text"))
        })
    }

    async fn load_items(
        &self,
        blobs: &BlobStore,
        digests: &[String],
    ) -> Result<Vec<Value>, ProxyError> {
        // Owned values: borrowed ones in `buffered` trip a compiler limitation
        // (`FnOnce` not general enough) once the future is spawned.
        let blobs = blobs.clone();
        futures::stream::iter(digests.to_vec())
            .map(move |digest| load_item(blobs.clone(), digest))
            .buffered(FETCH_CONCURRENCY)
            .try_collect()
            .await
    }

    /// The status for `e`, with every configured secret scrubbed from its
    /// message in case a vendor echoed one.
    fn status(&self, e: ProxyError) -> Status {
        let status = e.into_status();
        let message = self.config.redact(status.message());
        // Built again rather than copied: the encoded details repeat the
        // message. The ErrorInfo (what the worker decides retries by) stays.
        match keel_proto::v1::ErrorInfo::from_status(&status) {
            Some(info) => info.into_status(status.code(), message),
            None => Status::new(status.code(), message),
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
