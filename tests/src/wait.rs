//! Polling with a deadline that says what it saw last.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// One observation of a condition being waited for.
#[derive(Debug)]
pub enum Wait<T> {
    /// The condition holds; `wait_for` returns this value.
    Done(T),
    /// Not yet; the text describes what was seen (shown if the wait times out).
    NotYet(String),
    /// The condition can no longer hold (an image that no pull brings, a failed Job):
    /// `wait_for` returns this error at once instead of waiting out its timeout.
    Fail(anyhow::Error),
}

impl<T> Wait<T> {
    /// `NotYet` with anything printable as the description of what was seen.
    pub fn not_yet(seen: impl Display) -> Self {
        Wait::NotYet(seen.to_string())
    }
}

/// Polls `check` until it returns `Wait::Done`, at most `timeout` long.
///
/// An `Err` from `check` counts as "not yet" (API servers and pods have transient failures);
/// on timeout the error names `desc`, the time waited and the last observation or error.
/// `Wait::Fail` ends the wait at once with its error.
pub async fn wait_for<T, F, Fut>(desc: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Wait<T>>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(100);
    let mut last_seen = String::from("(nothing yet)");
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = timeout.saturating_sub(start.elapsed());
        // A hanging check must not outlive the deadline either.
        match tokio::time::timeout(remaining.max(Duration::from_millis(1)), check()).await {
            Ok(Ok(Wait::Done(value))) => {
                // Shown with a failing test's output: how close each earlier wait came to its limit.
                eprintln!(
                    "procwatch-e2e: {desc}: after {:.1}s (limit {:.0}s)",
                    start.elapsed().as_secs_f64(),
                    timeout.as_secs_f64()
                );
                return Ok(value);
            }
            Ok(Ok(Wait::NotYet(seen))) => last_seen = seen,
            Ok(Ok(Wait::Fail(err))) => {
                return Err(err.context(format!(
                    "gave up waiting for {desc} after {:.1}s",
                    start.elapsed().as_secs_f64()
                )));
            }
            Ok(Err(err)) => last_seen = format!("error: {err:#}"),
            Err(_) => {
                last_seen = format!("check still running at the deadline; before: {last_seen}")
            }
        }
        if start.elapsed() >= timeout {
            anyhow::bail!(
                "timed out after {:.1}s ({attempts} checks) waiting for {desc}; last seen: {last_seen}",
                start.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(delay.min(timeout.saturating_sub(start.elapsed()))).await;
        delay = (delay * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_done() {
        let mut n = 0;
        let v = wait_for("n to reach 3", Duration::from_secs(5), || {
            n += 1;
            let n = n;
            async move {
                Ok(if n >= 3 {
                    Wait::Done(n)
                } else {
                    Wait::not_yet(format!("n={n}"))
                })
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn timeout_names_the_last_observation() {
        let err = wait_for::<(), _, _>("the impossible", Duration::from_millis(300), || async {
            Ok(Wait::not_yet("phase=Pending"))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("the impossible"), "{err}");
        assert!(err.contains("last seen: phase=Pending"), "{err}");
    }

    #[tokio::test]
    async fn fail_ends_the_wait_at_once() {
        let start = Instant::now();
        let err = wait_for::<(), _, _>("a lost cause", Duration::from_secs(30), || async {
            Ok(Wait::Fail(anyhow::anyhow!("image missing")))
        })
        .await
        .unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(5));
        let text = format!("{err:#}");
        assert!(
            text.contains("a lost cause") && text.contains("image missing"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn errors_are_retried_and_reported() {
        let err = wait_for::<(), _, _>("a flaky thing", Duration::from_millis(300), || async {
            Err(anyhow::anyhow!("connection refused"))
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("error: connection refused"), "{err}");
    }
}
