//! How a Kubernetes request answered "busy" (429, 503, 504) is tried again:
//! a few times, soon, and never for longer than a run can wait unseen.
//!
//! kube's own retry (`Config::default_retry`) tries 15 times with a backoff
//! that grows to 1000 s; against an API server answering 503 without
//! `Retry-After` (an aggregated API that is down, a server starting up) one
//! call could block for many minutes, and a deadline or Ctrl-C was noticed
//! only afterwards. This policy gives up after [`MAX_RETRIES`] tries or
//! [`BUDGET`] of waiting, whichever comes first, and the answer goes to
//! slipway's own handling, which reports it or retries it under its own
//! deadline.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use tokio::time::Instant;
use tower::BoxError;
use tower::retry::Policy;

/// Tries after the first.
pub const MAX_RETRIES: u32 = 4;
/// The first pause; each next one doubles.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
/// The longest pause, `Retry-After` included (a longer one is not waited for).
const MAX_PAUSE: Duration = Duration::from_secs(2);
/// The most one request waits in pauses altogether.
pub const BUDGET: Duration = Duration::from_secs(5);

/// The retry policy of one request (tower clones it for each).
#[derive(Clone, Default)]
pub struct Busy {
    retries: u32,
    waited: Duration,
}

impl Busy {
    /// The pause before the next try, or `None` to give up and pass the
    /// answer on.
    fn pause(&self, status: StatusCode, retry_after: Option<Duration>) -> Option<Duration> {
        if !matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS
                | StatusCode::SERVICE_UNAVAILABLE
                | StatusCode::GATEWAY_TIMEOUT
        ) || self.retries >= MAX_RETRIES
        {
            return None;
        }
        let backoff = FIRST_PAUSE
            .saturating_mul(1 << self.retries.min(16))
            .min(MAX_PAUSE);
        // The server's `Retry-After` when it asks for longer; a pause
        // longer than a run should sit unseen is not taken at all.
        let pause = retry_after.map_or(backoff, |asked| asked.max(backoff));
        (pause <= MAX_PAUSE && self.waited + pause <= BUDGET).then_some(pause)
    }
}

/// `Retry-After` in seconds (the form API servers send).
fn retry_after<B>(response: &Response<B>) -> Option<Duration> {
    response
        .headers()
        .get(http::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl<Res> Policy<Request<Body>, Response<Res>, BoxError> for Busy {
    type Future = tokio::time::Sleep;

    fn retry(
        &mut self,
        _req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        // A failed connection is not retried here: the request may have
        // landed, and the caller knows whether trying again is safe.
        let response = result.as_ref().ok()?;
        let pause = self.pause(response.status(), retry_after(response))?;
        self.retries += 1;
        self.waited += pause;
        Some(tokio::time::sleep_until(Instant::now() + pause))
    }

    fn clone_request(&mut self, req: &Request<Body>) -> Option<Request<Body>> {
        // A streamed body cannot be sent twice; such a request is not retried.
        let body = req.body().try_clone()?;
        let mut copy = Request::builder()
            .method(req.method().clone())
            .uri(req.uri().clone())
            .version(req.version())
            .body(body)
            .ok()?;
        *copy.headers_mut() = req.headers().clone();
        *copy.extensions_mut() = req.extensions().clone();
        Some(copy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_answers_are_retried_a_few_times_within_the_budget() {
        let mut p = Busy::default();
        let mut pauses = Vec::new();
        while let Some(pause) = p.pause(StatusCode::SERVICE_UNAVAILABLE, None) {
            pauses.push(pause);
            p.retries += 1;
            p.waited += pause;
        }
        assert_eq!(
            pauses,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        assert!(pauses.iter().sum::<Duration>() <= BUDGET);
    }

    #[test]
    fn only_busy_statuses_are_retried_and_long_retry_afters_are_not_waited_for() {
        let p = Busy::default();
        for status in [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert_eq!(p.pause(status, None), None, "{status}");
        }
        assert_eq!(
            p.pause(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(1))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.pause(StatusCode::TOO_MANY_REQUESTS, Some(Duration::from_secs(60))),
            None
        );
        let spent = Busy {
            retries: 1,
            waited: Duration::from_millis(4900),
        };
        assert_eq!(spent.pause(StatusCode::GATEWAY_TIMEOUT, None), None);
    }
}
