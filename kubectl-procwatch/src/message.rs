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
        text.push_str(&format!(": {e}"));
        cause = e.source();
    }
    text
}
