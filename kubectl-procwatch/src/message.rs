//! Errors as kubectl prints them: `error: ` and the API server's own message, which already
//! names the resource (`processwatches.procwatch.dev "x" not found`).

use std::error::Error;

/// The line to print for `err`: the API server's message when the cause is an API error,
/// else every cause of the chain, outermost first.
pub fn kubectl_error(err: &(dyn Error + 'static)) -> String {
    let mut cause: Option<&(dyn Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
            return format!("error: {}", status.message);
        }
        cause = e.source();
    }
    let mut text = format!("error: {err}");
    let mut cause = err.source();
    while let Some(e) = cause {
        // Some errors (kube's among them) already print their cause.
        let line = e.to_string();
        if !text.contains(&line) {
            text.push_str(&format!(": {line}"));
        }
        cause = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {0}: {1}")]
    struct Repeats(&'static str, #[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("no kubeconfig")]
    struct Wraps(#[source] Repeats);

    #[test]
    fn each_cause_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = Wraps(Repeats("/x", io()));
        assert_eq!(
            kubectl_error(&err),
            format!("error: no kubeconfig: reading /x: {}", io())
        );
    }
}
