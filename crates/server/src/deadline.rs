//! Per-call deadlines on the server side: a call whose handler has not
//! answered within its deadline is answered DEADLINE_EXCEEDED, and the
//! handler's future is dropped (which cancels what it was waiting on). For a
//! streaming answer the deadline covers the handler up to the start of the
//! stream; the stream itself runs on. A client's own `grpc-timeout` is
//! honoured by tonic as well (tonic answers CANCELLED "Timeout expired"
//! when that shorter deadline passes).

use std::convert::Infallible;
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::http::{Request, Response};
use tonic::codegen::{BoxFuture, Service};
use tonic::server::NamedService;

/// Wraps a tonic service: each call of it gets `limit`.
#[derive(Clone)]
pub struct Deadline<S> {
    inner: S,
    limit: Duration,
}

impl<S> Deadline<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<S: NamedService> NamedService for Deadline<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Deadline<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let limit = self.limit;
        let path = request.uri().path().to_string();
        let answer = self.inner.call(request);
        Box::pin(async move {
            match tokio::time::timeout(limit, answer).await {
                Ok(answer) => answer,
                Err(_) => {
                    tracing::warn!(%path, limit_secs = limit.as_secs_f64(), "call cut at its deadline");
                    // Retryable: the same call may well be answered in time later.
                    Ok(keel_proto::v1::ErrorInfo::new("deadline_exceeded", true)
                        .into_status(
                            tonic::Code::DeadlineExceeded,
                            format!(
                                "{path} did not answer within {}s (the server's --request-timeout-secs)",
                                limit.as_secs_f64()
                            ),
                        )
                        .into_http())
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use tonic::Status;

    use super::*;

    /// A service that answers after `delay`.
    #[derive(Clone)]
    struct Slow(Duration);

    impl Service<Request<Body>> for Slow {
        type Response = Response<Body>;
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Infallible>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _: Request<Body>) -> Self::Future {
            let delay = self.0;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(Status::ok("").into_http())
            })
        }
    }

    fn status(response: &Response<Body>) -> Status {
        Status::from_header_map(response.headers()).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_is_cut_at_its_deadline() {
        let mut svc = Deadline::new(Slow(Duration::from_secs(10)), Duration::from_secs(2));
        let request = Request::builder()
            .uri("/keel.v1.X/Slow")
            .body(Body::empty())
            .unwrap();
        let response = svc.call(request).await.unwrap();
        let status = status(&response);
        assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
        let info = keel_proto::v1::ErrorInfo::from_status(&status).unwrap();
        assert_eq!(
            (info.class.as_str(), info.retryable),
            ("deadline_exceeded", true)
        );
        assert!(status.message().contains("/keel.v1.X/Slow"), "{status:?}");
        assert!(status.message().contains("2s"), "{status:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_within_its_deadline_is_answered() {
        let mut svc = Deadline::new(Slow(Duration::from_secs(1)), Duration::from_secs(2));
        let request = Request::builder().uri("/x").body(Body::empty()).unwrap();
        let response = svc.call(request).await.unwrap();
        assert_eq!(status(&response).code(), tonic::Code::Ok);
    }
}
