//! How errors are shown. Each error's Display says only what failed at its own level; the
//! cause is its `source()`. [`Chain`] prints the whole chain, each cause once, for logs and
//! for the binary's final error.

use std::error::Error;
use std::fmt;

/// An error and its causes, joined by ": " (as anyhow's `{:#}` shows them). A cause that the
/// level above already quotes is not printed again: kube's errors quote their source.
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut shown = self.0.to_string();
        f.write_str(&shown)?;
        let mut cause = self.0.source();
        while let Some(error) = cause {
            let text = error.to_string();
            if !shown.contains(&text) {
                write!(f, ": {text}")?;
                shown = text;
            }
            cause = error.source();
        }
        Ok(())
    }
}

/// Asserts that no level of `error`'s chain repeats its cause: printed as anyhow's `{:#}`
/// prints it (every level, nothing skipped), each cause shows exactly once.
#[cfg(test)]
pub fn assert_each_cause_once(error: &(dyn Error + 'static)) {
    let mut rendered = error.to_string();
    let mut causes = Vec::new();
    let mut cause = error.source();
    while let Some(error) = cause {
        let text = error.to_string();
        rendered = format!("{rendered}: {text}");
        causes.push(text);
        cause = error.source();
    }
    assert!(!causes.is_empty(), "{rendered:?} has no cause to check");
    for text in causes {
        assert_eq!(
            rendered.matches(&text).count(),
            1,
            "cause {text:?} is not shown exactly once in {rendered:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot start")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the file")]
    struct Middle(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read the file: {0}")]
    struct Repeating(#[source] std::io::Error);

    fn denied() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::PermissionDenied, "permission denied")
    }

    #[test]
    fn chain_joins_every_level() {
        let error = Outer(Middle(denied()));
        assert_eq!(
            Chain(&error).to_string(),
            "cannot start: cannot read the file: permission denied"
        );
        assert_each_cause_once(&error);
    }

    #[test]
    #[should_panic(expected = "not shown exactly once")]
    fn a_message_that_repeats_its_source_is_caught() {
        assert_each_cause_once(&Repeating(denied()));
    }

    #[test]
    fn chain_skips_a_cause_the_level_above_quotes() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot watch")]
        struct Watching(#[source] kube::Error);

        let error = Watching(kube::Error::ReadEvents(denied()));
        assert_eq!(
            Chain(&error).to_string(),
            "cannot watch: Error reading events stream: permission denied"
        );
    }
}
