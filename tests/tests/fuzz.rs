//! Every service's RPCs under malformed and hostile input, over real gRPC:
//! raw garbage, valid requests with mutated bytes, and well-formed protobuf
//! with random field numbers and values (huge numbers, long and non-UTF-8
//! strings, nested junk). Each answer must be a proper gRPC status (see
//! [`proper`]) — no crash, no connection torn down, no hang — and afterwards
//! the stack still serves a normal turn.
//!
//! Cases come from proptest strategies (sampled, not shrunk: the report
//! names the path and the bytes), 3000 per service, each service bounded in
//! time; the same cases every run unless KEEL_FUZZ_RANDOM is set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{Buf as _, BufMut as _};
use futures::StreamExt as _;
use keel_proto::v1 as pb;
use keel_test_support::fake_model::{FakeModel, Scripted};
use keel_test_support::session;
use keel_test_support::stack::{Stack, StackOptions};
use pb::event::Msg;
use proptest::prelude::*;
use proptest::strategy::ValueTree as _;
use proptest::test_runner::{Config, TestRunner};
use prost::Message as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Cases per service, and the most time a service's cases may take.
const CASES: usize = 3000;
const BUDGET: Duration = Duration::from_secs(60);
const CONCURRENCY: usize = 16;

// --- a codec for raw bytes ---------------------------------------------------

#[derive(Clone, Copy, Default)]
struct Raw;
struct RawEncoder;
struct RawDecoder;

impl Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDecoder {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> RawDecoder {
        RawDecoder
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Unary,
    ServerStream,
    ClientStream,
}

/// One RPC and a valid request to mutate.
struct Method {
    path: &'static str,
    kind: Kind,
    seed: Vec<u8>,
}

async fn call(
    channel: Channel,
    token: Option<&str>,
    method: &Method,
    body: Vec<u8>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("not ready: {e}")))?;
    let path = PathAndQuery::from_static(method.path);
    let authorize = |metadata: &mut tonic::metadata::MetadataMap| {
        if let Some(token) = token {
            metadata.insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
    };
    match method.kind {
        Kind::Unary => {
            let mut request = tonic::Request::new(body);
            authorize(request.metadata_mut());
            grpc.unary(request, path, Raw).await.map(drop)
        }
        Kind::ServerStream => {
            let mut request = tonic::Request::new(body);
            authorize(request.metadata_mut());
            let mut stream = grpc
                .server_streaming(request, path, Raw)
                .await?
                .into_inner();
            // A stream that follows may wait for events: its first answer
            // (or a quiet second) is enough.
            match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
                Ok(result) => result.map(drop),
                Err(_) => Ok(()),
            }
        }
        Kind::ClientStream => {
            let mut request = tonic::Request::new(futures::stream::iter([body]));
            authorize(request.metadata_mut());
            grpc.client_streaming(request, path, Raw).await.map(drop)
        }
    }
}

// --- strategies --------------------------------------------------------------

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(tag: u32, wire: u64, out: &mut Vec<u8>) {
    varint((u64::from(tag) << 3) | wire, out);
}

/// Payloads for length-delimited fields.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        4 => "\\PC{0,64}".prop_map(String::into_bytes),
        1 => (0usize..300_000).prop_map(|n| vec![b'a'; n]),
        1 => Just(b"../../../../etc/passwd".to_vec()),
        1 => Just(b"keel-session.other.x".to_vec()),
        1 => Just(vec![0xff, 0xfe, 0x00, 0xc3]),
    ]
}

/// One well-formed field with a random number and value.
fn field(depth: u32) -> BoxedStrategy<Vec<u8>> {
    let leaf = prop_oneof![
        (1u32..=24, any::<u64>()).prop_map(|(t, v)| {
            let mut out = Vec::new();
            key(t, 0, &mut out);
            varint(v, &mut out);
            out
        }),
        (1u32..=24, payload()).prop_map(|(t, p)| {
            let mut out = Vec::new();
            key(t, 2, &mut out);
            varint(p.len() as u64, &mut out);
            out.extend(p);
            out
        }),
        (1u32..=24, any::<u64>()).prop_map(|(t, v)| {
            let mut out = Vec::new();
            key(t, 1, &mut out);
            out.extend(v.to_le_bytes());
            out
        }),
        (1u32..=24, any::<u32>()).prop_map(|(t, v)| {
            let mut out = Vec::new();
            key(t, 5, &mut out);
            out.extend(v.to_le_bytes());
            out
        }),
    ];
    if depth == 0 {
        return leaf.boxed();
    }
    prop_oneof![
        3 => leaf,
        1 => (1u32..=24, proptest::collection::vec(field(depth - 1), 0..6)).prop_map(|(t, fields)| {
            let inner: Vec<u8> = fields.concat();
            let mut out = Vec::new();
            key(t, 2, &mut out);
            varint(inner.len() as u64, &mut out);
            out.extend(inner);
            out
        }),
    ]
    .boxed()
}

#[derive(Clone, Debug)]
enum Mutation {
    Flip(prop::sample::Index, u8),
    Insert(prop::sample::Index, Vec<u8>),
    Truncate(prop::sample::Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (
            any::<prop::sample::Index>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

/// A request body for `seed`'s RPC.
fn body(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let mutated = proptest::collection::vec(mutation(), 1..6).prop_map(move |mutations| {
        let mut bytes = seed.clone();
        for m in mutations {
            match m {
                Mutation::Flip(i, b) if !bytes.is_empty() => {
                    let at = i.index(bytes.len());
                    bytes[at] ^= b | 1;
                }
                Mutation::Insert(i, b) => {
                    let at = i.index(bytes.len() + 1);
                    bytes.splice(at..at, b);
                }
                Mutation::Truncate(i) if !bytes.is_empty() => {
                    bytes.truncate(i.index(bytes.len()));
                }
                _ => {}
            }
        }
        bytes
    });
    prop_oneof![
        2 => proptest::collection::vec(any::<u8>(), 0..512),
        3 => mutated,
        3 => proptest::collection::vec(field(2), 0..10).prop_map(|f| f.concat()),
    ]
}

// --- the run -----------------------------------------------------------------

/// Sends `CASES` cases spread over `methods` (within `BUDGET`); returns the
/// codes seen and the cases whose answer was not a proper status.
async fn fuzz(
    name: &str,
    channel: Channel,
    token: Option<&str>,
    methods: &[Method],
) -> (BTreeMap<String, usize>, Vec<String>) {
    // The same cases every run (a failure reproduces); KEEL_FUZZ_RANDOM=1
    // explores new ones.
    let mut runner = if std::env::var_os("KEEL_FUZZ_RANDOM").is_some() {
        TestRunner::new(Config::default())
    } else {
        TestRunner::deterministic()
    };
    let mut cases = Vec::with_capacity(CASES);
    for n in 0..CASES {
        let method = &methods[n % methods.len()];
        let tree = body(method.seed.clone()).new_tree(&mut runner).unwrap();
        cases.push((method, tree.current()));
    }
    let started = Instant::now();
    let results: Vec<(String, Result<(), Status>)> = futures::stream::iter(cases)
        .take_while(|_| std::future::ready(started.elapsed() < BUDGET))
        .map(|(method, bytes)| {
            let channel = channel.clone();
            async move {
                let shown = format!(
                    "{} {}",
                    method.path,
                    bytes
                        .iter()
                        .take(48)
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>()
                );
                let result = tokio::time::timeout(
                    Duration::from_secs(30),
                    call(channel, token, method, bytes),
                )
                .await
                .unwrap_or_else(|_| Err(Status::deadline_exceeded("no answer in 30 s")));
                (shown, result)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut codes = BTreeMap::new();
    let mut bad = Vec::new();
    for (shown, result) in &results {
        let code = match result {
            Ok(()) => Code::Ok,
            Err(status) => status.code(),
        };
        *codes.entry(format!("{code:?}")).or_insert(0) += 1;
        if let Err(status) = result
            && !proper(status)
        {
            bad.push(format!("{shown}: {status:?}"));
        }
    }
    eprintln!(
        "{name}: {} cases in {:.1} s: {codes:?}",
        results.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        results.len() >= CASES / 2,
        "{name}: only {} cases ran within {BUDGET:?}",
        results.len()
    );
    (codes, bad)
}

/// Whether `status` is an answer a client can act on. A request that is not
/// valid protobuf gets INTERNAL "failed to decode Protobuf message" from
/// tonic, as the gRPC spec prescribes for request parse errors
/// (<https://github.com/grpc/grpc/blob/master/doc/statuscodes.md>); any other
/// INTERNAL, UNKNOWN (a panic or a torn stream), UNAVAILABLE (a dead
/// server), DATA_LOSS or a hang is a defect.
fn proper(status: &Status) -> bool {
    match status.code() {
        Code::Internal => status
            .message()
            .starts_with("failed to decode Protobuf message"),
        Code::Unknown | Code::Unavailable | Code::DataLoss | Code::DeadlineExceeded => false,
        // The fuzzing client's own connection closed under it ("operation
        // was canceled"): HTTP/2 servers close a connection that keeps
        // getting streams reset, which a fuzzer does; the server itself
        // goes on (checked at the end).
        _ => true,
    }
}

fn unary(path: &'static str, seed: impl prost::Message) -> Method {
    Method {
        path,
        kind: Kind::Unary,
        seed: seed.encode_to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_service_answers_hostile_bytes_with_a_status_and_keeps_serving() {
    let fake = FakeModel::start(vec![]).await.unwrap();
    let mut options = StackOptions::new(fake.base_url());
    // Sessions the fuzzer manages to create stay few.
    options.session_api_args = ["--tenant-max-open-sessions", "20"]
        .map(String::from)
        .to_vec();
    let stack = Stack::launch(options).await.unwrap();
    let work = tempfile::tempdir().unwrap();
    let cwd = work.path().display().to_string();
    let missing = "fuzz-no-such-session".to_string();

    let session_methods = vec![
        unary(
            "/keel.v1.SessionService/CreateSession",
            pb::CreateSessionRequest {
                session_id: "fuzz-seed".into(),
                cwd: cwd.clone(),
                context: Some(pb::TurnContext {
                    approval_policy: pb::ApprovalPolicy::OnRequest as i32,
                    max_iterations: Some(3),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.SessionService/SendUserTurn",
            pb::SendUserTurnRequest {
                session_id: missing.clone(),
                text: "hello".into(),
                turn_id: "t1".into(),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.SessionService/SteerTurn",
            pb::SteerTurnRequest {
                session_id: missing.clone(),
                text: "also".into(),
                expected_turn_id: "t1".into(),
                queue_if_not_running: true,
            },
        ),
        Method {
            path: "/keel.v1.SessionService/StreamEvents",
            kind: Kind::ServerStream,
            seed: pb::StreamEventsRequest {
                session_id: missing.clone(),
                after_offset: 3,
                follow: true,
                live_deltas: true,
                ..Default::default()
            }
            .encode_to_vec(),
        },
        unary(
            "/keel.v1.SessionService/GetSession",
            pb::GetSessionRequest {
                session_id: missing.clone(),
            },
        ),
        unary(
            "/keel.v1.SessionService/ListSessions",
            pb::ListSessionsRequest {
                page_size: 3,
                page_token: "AAAA".into(),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.SessionService/Interrupt",
            pb::InterruptRequest {
                session_id: missing.clone(),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.SessionService/CloseSession",
            pb::CloseSessionRequest {
                session_id: missing.clone(),
            },
        ),
        unary(
            "/keel.v1.SessionService/OverrideTurnContext",
            pb::OverrideTurnContextRequest {
                session_id: missing.clone(),
                context: Some(pb::TurnContext {
                    model: Some("gpt-x".into()),
                    ..Default::default()
                }),
            },
        ),
        unary(
            "/keel.v1.SessionService/Respond",
            pb::RespondRequest {
                session_id: missing.clone(),
                request_id: "c1".into(),
                answer: Some(pb::respond_request::Answer::Decision(pb::ReviewDecision {
                    kind: pb::ReviewDecisionKind::Approved as i32,
                    execpolicy_amendment: vec!["ls".into()],
                })),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.SessionService/Compact",
            pb::CompactRequest {
                session_id: missing.clone(),
            },
        ),
        unary(
            "/keel.v1.SessionService/ListSessions",
            pb::ListSessionsRequest {
                page_size: 2,
                filter: Some(pb::SessionFilter {
                    statuses: vec![pb::SessionStatus::Waiting as i32],
                    cwd: cwd.clone(),
                    text: "fuzz".into(),
                    archived: pb::ArchivedFilter::Include as i32,
                }),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.SessionService/RenameSession",
            pb::RenameSessionRequest {
                session_id: "fuzz-seed".into(),
                name: "a name".into(),
            },
        ),
        unary(
            "/keel.v1.SessionService/ArchiveSession",
            pb::ArchiveSessionRequest {
                session_id: "fuzz-seed".into(),
            },
        ),
        unary(
            "/keel.v1.SessionService/UnarchiveSession",
            pb::UnarchiveSessionRequest {
                session_id: missing.clone(),
            },
        ),
        unary(
            "/keel.v1.SessionService/ForkSession",
            pb::ForkSessionRequest {
                session_id: "fuzz-seed".into(),
                turn_id: "t1".into(),
                new_session_id: "fuzz-fork".into(),
                name: "fork".into(),
            },
        ),
        unary(
            "/keel.v1.SessionService/DeleteSession",
            pb::DeleteSessionRequest {
                session_id: missing.clone(),
            },
        ),
    ];
    let tool_methods = vec![
        unary(
            "/keel.v1.ToolService/RunTool",
            pb::RunToolRequest {
                session_id: "fuzz".into(),
                call_id: "c1".into(),
                tool_name: "list_dir".into(),
                arguments: format!(r#"{{"dir_path":"{cwd}"}}"#),
                cwd: cwd.clone(),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.ToolService/CancelToolCall",
            pb::CancelToolCallRequest {
                session_id: "fuzz".into(),
                call_id: "c1".into(),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.ToolService/ListTools",
            pb::ListToolsRequest::default(),
        ),
        unary(
            "/keel.v1.ToolService/CloseToolSession",
            pb::CloseToolSessionRequest {
                session_id: "fuzz".into(),
            },
        ),
        unary(
            "/keel.v1.ToolService/GetProjectContext",
            pb::GetProjectContextRequest {
                cwd: cwd.clone(),
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.ToolService/ReviewPatch",
            pb::ReviewPatchRequest {
                cwd: cwd.clone(),
                arguments: "*** Begin Patch\n*** Add File: a.txt\n+hi\n*** End Patch\n".into(),
                custom: true,
                ..Default::default()
            },
        ),
        unary(
            "/keel.v1.ToolService/GetSandboxStatus",
            pb::GetSandboxStatusRequest {},
        ),
    ];
    let model_methods = vec![
        Method {
            path: "/keel.v1.ModelService/StreamResponse",
            kind: Kind::ServerStream,
            seed: pb::StreamResponseRequest {
                session_id: "fuzz".into(),
                model: "test-model".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        },
        unary(
            "/keel.v1.ModelService/DescribeDefaults",
            pb::DescribeDefaultsRequest::default(),
        ),
    ];
    let broker_methods = vec![
        unary(
            "/keel.v1.McpBrokerService/ListMcpTools",
            pb::ListMcpToolsRequest::default(),
        ),
        unary(
            "/keel.v1.McpBrokerService/CallMcpTool",
            pb::CallMcpToolRequest {
                session_id: "fuzz".into(),
                call_id: "c1".into(),
                server: "srv".into(),
                tool: "tool".into(),
                arguments: "{}".into(),
            },
        ),
        unary(
            "/keel.v1.McpBrokerService/ListMcpServers",
            pb::ListMcpServersRequest::default(),
        ),
        unary(
            "/keel.v1.McpBrokerService/ResumeMcpCall",
            pb::ResumeMcpCallRequest {
                session_id: "fuzz".into(),
                call_id: "c1".into(),
                action: pb::ElicitationAction::Accept as i32,
                content_json: "{}".into(),
            },
        ),
        unary(
            "/keel.v1.McpBrokerService/ListMcpResources",
            pb::ListMcpResourcesRequest::default(),
        ),
        unary(
            "/keel.v1.McpBrokerService/ReadMcpResource",
            pb::ReadMcpResourceRequest::default(),
        ),
        unary(
            "/keel.v1.McpBrokerService/ListMcpPrompts",
            pb::ListMcpPromptsRequest::default(),
        ),
        unary(
            "/keel.v1.McpBrokerService/CloseMcpSession",
            pb::CloseMcpSessionRequest {
                session_id: "fuzz".into(),
            },
        ),
    ];
    let live_methods = vec![
        Method {
            path: "/keel.v1.LiveService/Publish",
            kind: Kind::ClientStream,
            seed: pb::PublishRequest {
                session_id: missing.clone(),
                delta: Some(pb::LiveDelta::default()),
            }
            .encode_to_vec(),
        },
        unary(
            "/keel.v1.LiveService/Notify",
            pb::NotifyRequest {
                notices: vec![pb::EventsNotice {
                    session_id: missing.clone(),
                    last_offset: 9,
                    ..Default::default()
                }],
            },
        ),
    ];

    let client_port = Channel::from_shared(format!("http://{}", stack.session_api))
        .unwrap()
        .connect_lazy();
    let mut bad = Vec::new();
    // The fuzzing tenant is not the one that runs the final turn.
    for (name, channel, token, methods) in [
        (
            "session-api",
            client_port.clone(),
            Some(stack.other_token.as_str()),
            &session_methods,
        ),
        (
            "session-api without credentials",
            client_port,
            None,
            &session_methods,
        ),
        (
            "tool-runner",
            stack.worker_channel(&stack.tool_runner).unwrap(),
            None,
            &tool_methods,
        ),
        (
            "model-proxy",
            stack.worker_channel(&stack.model_proxy).unwrap(),
            None,
            &model_methods,
        ),
        (
            "mcp-broker",
            stack.worker_channel(&stack.mcp_broker).unwrap(),
            None,
            &broker_methods,
        ),
        (
            "session-api internal",
            stack
                .worker_channel(&stack.session_apis_internal[0])
                .unwrap(),
            None,
            &live_methods,
        ),
    ] {
        let (codes, found) = fuzz(name, channel, token, methods).await;

        if token.is_none() && name.starts_with("session-api without") {
            assert_eq!(
                codes.keys().collect::<Vec<_>>(),
                ["Unauthenticated"],
                "without credentials every call is refused first"
            );
        }
        bad.extend(found.into_iter().map(|b| format!("{name}: {b}")));
    }
    assert!(
        bad.is_empty(),
        "{} answers were not proper statuses:\n{}",
        bad.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );

    // Still serving: a normal turn, through every service.
    fake.push(Scripted::tool_call(
        "call_1",
        "shell",
        r#"{"command":["echo","still here"]}"#,
    ));
    fake.push(Scripted::assistant("all well"));
    let mut client = stack.connect().await.unwrap();
    let (sid, mut events) = session::open(
        &mut client,
        pb::CreateSessionRequest {
            cwd: cwd.clone(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    session::send(&mut client, &sid, "t1", "check")
        .await
        .unwrap();
    let (seen, _) = session::until(&mut events, |e| {
        matches!(e.msg, Some(Msg::TurnComplete(_) | Msg::TurnAborted(_))).then_some(())
    })
    .await
    .unwrap();
    let said: Vec<&str> = seen
        .iter()
        .filter_map(|e| match &e.msg {
            Some(Msg::AgentMessage(m)) => Some(m.message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["all well"], "{seen:?}");
    assert!(
        seen.iter().any(|e| matches!(&e.msg, Some(Msg::ExecCommandEnd(end)) if end.aggregated_output.contains("still here"))),
        "{seen:?}"
    );
}
