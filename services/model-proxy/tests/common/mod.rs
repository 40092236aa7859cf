//! The model-proxy over real gRPC on loopback, against the scripted fake
//! model API, with an on-disk blob store.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_blobstore::BlobStore;
use keel_model_proxy::config::{Limits, RetryTiming};
use keel_model_proxy::{ApiKey, Config, Metrics, ModelProxy, WireApi};
use keel_proto::v1::model_service_client::ModelServiceClient;
use keel_proto::v1::output_item_done::Item;
use keel_proto::v1::stream_response_response::Event;
use keel_proto::v1::{ConversationInput, ItemInput, StreamResponseRequest, item_input};
use keel_test_support::fake_model::{FakeModel, Scripted};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::Channel;
use tonic::transport::server::TcpIncoming;

pub(crate) const KEY: &str = "sk-test-SECRET-4242";
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct Harness {
    pub fake: FakeModel,
    pub blobs: BlobStore,
    pub blob_dir: PathBuf,
    pub client: ModelServiceClient<Channel>,
    pub metrics: Arc<Metrics>,
    _tmp: tempfile::TempDir,
}

/// Changes a configuration, given the fake's base URL.
pub(crate) type Configure = Box<dyn FnOnce(&mut Config, &str)>;

pub(crate) struct Setup {
    pub key: Option<&'static str>,
    pub idle_timeout: Duration,
    pub base_url: Option<String>,
    pub wire_api: WireApi,
    pub request_max_retries: u32,
    pub stream_max_retries: u32,
    pub limits: Limits,
    /// Further changes, given the fake's base URL.
    pub configure: Option<Configure>,
}

impl Default for Setup {
    /// Codex's retry limits, with 1 ms backoff so retries are quick.
    fn default() -> Self {
        Self {
            key: Some(KEY),
            idle_timeout: WAIT,
            base_url: None,
            wire_api: WireApi::Responses,
            request_max_retries: 4,
            stream_max_retries: 5,
            limits: Limits::default(),
            configure: None,
        }
    }
}

impl Setup {
    /// Every failure surfaces at once.
    pub(crate) fn no_retries() -> Self {
        Self {
            request_max_retries: 0,
            stream_max_retries: 0,
            ..Self::default()
        }
    }

    pub(crate) fn chat() -> Self {
        Self {
            wire_api: WireApi::Chat,
            ..Self::default()
        }
    }
}

/// The session of [`request`].
pub(crate) const SESSION: &str = "sess-1";

pub(crate) async fn harness(script: Vec<Scripted>) -> Harness {
    harness_with(script, Setup::default()).await
}

pub(crate) async fn harness_with(script: Vec<Scripted>, setup: Setup) -> Harness {
    let fake = FakeModel::start(script).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let blob_dir = tmp.path().join("blobs");
    let blobs = BlobStore::open(&format!("file://{}", blob_dir.display())).unwrap();
    let base_url = setup.base_url.unwrap_or_else(|| fake.base_url());
    let mut config = Config::single(&base_url, setup.key.and_then(ApiKey::new), "gpt-test");
    config.retry = RetryTiming {
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_secs(5),
    };
    config.limits = setup.limits;
    let p = config.default_provider_mut().unwrap();
    p.stream_idle_timeout = setup.idle_timeout;
    p.wire_api = setup.wire_api;
    p.request_max_retries = setup.request_max_retries;
    p.stream_max_retries = setup.stream_max_retries;
    if let Some(configure) = setup.configure {
        configure(&mut config, &fake.base_url());
    }
    let proxy = ModelProxy::new(config, blobs.clone()).unwrap();
    let metrics = proxy.metrics();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proxy.into_server())
            .serve_with_incoming(TcpIncoming::from(listener).with_nodelay(Some(true))),
    );
    let client = ModelServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    Harness {
        fake,
        // What calls of [`request`]'s session read and write.
        blobs: blobs.for_session(SESSION).unwrap(),
        blob_dir,
        client,
        metrics,
        _tmp: tmp,
    }
}

impl Harness {
    /// Every event of one call, then the error that ended it (if any).
    pub(crate) async fn call(
        &mut self,
        req: StreamResponseRequest,
    ) -> (Vec<Event>, Option<Status>) {
        call_on(&mut self.client, req).await
    }

    pub(crate) async fn call_ok(&mut self, req: StreamResponseRequest) -> Vec<Event> {
        let (events, err) = self.call(req).await;
        assert!(err.is_none(), "{err:?}\n{events:#?}");
        events
    }

    pub(crate) async fn call_err(&mut self, req: StreamResponseRequest) -> Status {
        let (_, err) = self.call(req).await;
        err.expect("the call must fail")
    }

    /// Every conversation segment in the store (a segment names `prev`).
    /// The store must hold something, so an empty walk cannot pass vacuously.
    pub(crate) fn segments(&self) -> Vec<Value> {
        fn walk(dir: &Path, out: &mut Vec<Value>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap());
                }
            }
        }
        let mut blobs = Vec::new();
        walk(&self.blob_dir, &mut blobs);
        assert!(!blobs.is_empty(), "the blob store is empty");
        blobs
            .into_iter()
            .filter(|v| v.get("prev").is_some() && v.get("items").is_some())
            .collect()
    }
}

/// Every event of one call on `client`, then the error that ended it.
pub(crate) async fn call_on(
    client: &mut ModelServiceClient<Channel>,
    req: StreamResponseRequest,
) -> (Vec<Event>, Option<Status>) {
    tokio::time::timeout(WAIT, async {
        let mut stream = match client.stream_response(req).await {
            Ok(r) => r.into_inner(),
            Err(status) => return (vec![], Some(status)),
        };
        let mut events = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(msg)) => events.push(msg.event.unwrap()),
                Ok(None) => return (events, None),
                Err(status) => return (events, Some(status)),
            }
        }
    })
    .await
    .expect("the call must finish")
}

pub(crate) fn request(append: Vec<ItemInput>) -> StreamResponseRequest {
    StreamResponseRequest {
        session_id: SESSION.into(),
        instructions: "You are a coding agent.".into(),
        conversation: Some(ConversationInput {
            head: String::new(),
            append,
        }),
        ..StreamResponseRequest::default()
    }
}

pub(crate) fn user_message(text: &str) -> Value {
    json!({"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]})
}

pub(crate) fn inline(item: &Value) -> ItemInput {
    ItemInput {
        kind: Some(item_input::Kind::InlineJson(item.to_string())),
    }
}

pub(crate) fn digest(d: &str) -> ItemInput {
    ItemInput {
        kind: Some(item_input::Kind::Digest(d.into())),
    }
}

pub(crate) fn item_done(event: &Event) -> (&str, &Item) {
    match event {
        Event::OutputItemDone(done) => (&done.digest, done.item.as_ref().unwrap()),
        other => panic!("expected output_item_done, got {other:?}"),
    }
}

/// The items of the `output_item_done` events, in order.
pub(crate) fn items(events: &[Event]) -> Vec<&Item> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::OutputItemDone(d) => d.item.as_ref(),
            _ => None,
        })
        .collect()
}

/// The `stream_error` events.
pub(crate) fn stream_errors(events: &[Event]) -> Vec<(String, u32)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::StreamError(s) => Some((s.message.clone(), s.attempt)),
            _ => None,
        })
        .collect()
}

pub(crate) fn completed(events: &[Event]) -> &keel_proto::v1::ResponseCompleted {
    match events.last() {
        Some(Event::Completed(c)) => c,
        other => panic!("the last event must be completed, got {other:?}"),
    }
}
