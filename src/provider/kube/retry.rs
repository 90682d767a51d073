//! How a Kubernetes request answered "busy" (429, 503, 504) is tried again:
//! a few times, soon, and never for longer than a run can wait unseen.
//!
//! kube's own retry (`Config::default_retry`) tries 15 times with a backoff
//! that grows to 1000 s; against an API server answering 503 without
//! `Retry-After` (an aggregated API that is down, a server starting up) one
//! call could block for many minutes, and a deadline or Ctrl-C was noticed
//! only afterwards. This policy gives up after [`MAX_RETRIES`] tries or
//! [`BUDGET`] since the first busy answer, whichever comes first (a 504 is
//! tried again only for reads: a write it cut off may have landed), and the answer goes to
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
/// The longest time from a request's first busy answer to its last try.
pub const BUDGET: Duration = Duration::from_secs(5);

/// The retry policy of one request (tower clones it for each).
#[derive(Clone, Default)]
pub struct Busy {
    retries: u32,
    /// When the first busy answer came.
    first: Option<Instant>,
}

impl Busy {
    /// The pause before the next try, or `None` to give up and pass the
    /// answer on. `waited` is the time since the first busy answer.
    fn pause(
        &self,
        method: &http::Method,
        status: StatusCode,
        retry_after: Option<Duration>,
        waited: Duration,
    ) -> Option<Duration> {
        let busy = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => true,
            // A gateway timeout comes after the server's own timeout (a
            // minute, by default), and a write it cut off may have landed:
            // only reads are tried again.
            StatusCode::GATEWAY_TIMEOUT => {
                matches!(*method, http::Method::GET | http::Method::HEAD)
            }
            _ => false,
        };
        if !busy || self.retries >= MAX_RETRIES {
            return None;
        }
        let backoff = FIRST_PAUSE
            .saturating_mul(1 << self.retries.min(16))
            .min(MAX_PAUSE);
        // The server's `Retry-After` when it asks for longer; a pause
        // longer than a run should sit unseen is not taken at all.
        let pause = retry_after.map_or(backoff, |asked| asked.max(backoff));
        (pause <= MAX_PAUSE && waited + pause <= BUDGET).then_some(pause)
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
        req: &mut Request<Body>,
        result: &mut Result<Response<Res>, BoxError>,
    ) -> Option<Self::Future> {
        // A failed connection is not retried here: the request may have
        // landed, and the caller knows whether trying again is safe.
        let response = result.as_ref().ok()?;
        let now = Instant::now();
        let first = *self.first.get_or_insert(now);
        let pause = self.pause(
            req.method(),
            response.status(),
            retry_after(response),
            now - first,
        )?;
        self.retries += 1;
        Some(tokio::time::sleep_until(now + pause))
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
    use http::Method;

    #[test]
    fn busy_answers_are_retried_a_few_times_within_the_budget() {
        let mut p = Busy::default();
        let mut pauses = Vec::new();
        let mut waited = Duration::ZERO;
        while let Some(pause) = p.pause(
            &Method::PATCH,
            StatusCode::SERVICE_UNAVAILABLE,
            None,
            waited,
        ) {
            pauses.push(pause);
            p.retries += 1;
            waited += pause;
        }
        assert_eq!(
            pauses,
            [100, 200, 400, 800].map(Duration::from_millis).to_vec()
        );
        // The budget is wall time since the first busy answer: slow
        // answers use it up too.
        assert_eq!(
            Busy::default().pause(
                &Method::GET,
                StatusCode::SERVICE_UNAVAILABLE,
                None,
                Duration::from_millis(4950)
            ),
            None
        );
    }

    #[test]
    fn only_busy_statuses_are_retried_and_long_retry_afters_are_not_waited_for() {
        let p = Busy::default();
        let zero = Duration::ZERO;
        for status in [
            StatusCode::OK,
            StatusCode::NOT_FOUND,
            StatusCode::CONFLICT,
            StatusCode::INTERNAL_SERVER_ERROR,
        ] {
            assert_eq!(p.pause(&Method::GET, status, None, zero), None, "{status}");
        }
        assert_eq!(
            p.pause(
                &Method::POST,
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(1)),
                zero
            ),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            p.pause(
                &Method::GET,
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(60)),
                zero
            ),
            None
        );
        // A gateway timeout: reads are tried again, writes are not (they
        // may have landed).
        assert!(
            p.pause(&Method::GET, StatusCode::GATEWAY_TIMEOUT, None, zero)
                .is_some()
        );
        for m in [Method::POST, Method::PATCH, Method::PUT, Method::DELETE] {
            assert_eq!(p.pause(&m, StatusCode::GATEWAY_TIMEOUT, None, zero), None);
        }
    }
}
