//! A process caught while the container runtime still sets it up. runc names the process that
//! becomes a container's command, or a `kubectl exec`'s, `runc:[0:PARENT]`, `runc:[1:CHILD]`
//! and `runc:[2:INIT]` for the milliseconds before it executes the command. A scan that catches
//! it then sees neither the command nor what it will run as. Judging it would announce a
//! violation by `runc:[2:INIT]`, and the real command's violation would then only count up that
//! Event series; counting it as started would keep the command from ever counting as started.
//! So rules and churn wait for a scan that sees what it runs.
//!
//! Only while it is young: a process can give itself any name, and one that keeps runc's for
//! longer than [`GRACE`] is judged like any other.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use procwatch_crds::ProcessInfo;

/// How long a process may carry runc's bootstrap name before it is judged by it.
pub const GRACE: Duration = Duration::from_secs(10);

/// Whether `process`, as scanned for a report received at `received_at`, is still in runc's
/// bootstrap.
pub fn in_runtime_bootstrap(process: &ProcessInfo, received_at: Timestamp) -> bool {
    let young = process
        .started_at
        .as_ref()
        .is_some_and(|started| received_at.duration_since(started.0).unsigned_abs() < GRACE);
    young && is_bootstrap_name(&process.command)
}

/// `runc:[<stage number>:<STAGE>]`.
fn is_bootstrap_name(command: &str) -> bool {
    command
        .strip_prefix("runc:[")
        .and_then(|rest| rest.strip_suffix(']'))
        .and_then(|stage| stage.split_once(':'))
        .is_some_and(|(number, name)| {
            !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
                && !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_uppercase())
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + second).unwrap()
    }

    fn process(command: &str, started: i64) -> ProcessInfo {
        ProcessInfo {
            command: command.into(),
            started_at: Some(Time(at(started))),
            ..ProcessInfo::default()
        }
    }

    #[test]
    fn runc_stages_are_bootstrap_names_and_nothing_else_is() {
        for name in ["runc:[0:PARENT]", "runc:[1:CHILD]", "runc:[2:INIT]"] {
            assert!(is_bootstrap_name(name), "{name}");
        }
        for name in [
            "runc",
            "runc:[2:init]",
            "runc:[:INIT]",
            "runc:[2:]",
            "xrunc:[2:INIT]",
            "runc:[2:INIT]x",
        ] {
            assert!(!is_bootstrap_name(name), "{name}");
        }
    }

    #[test]
    fn only_a_young_process_is_in_the_bootstrap() {
        assert!(in_runtime_bootstrap(&process("runc:[2:INIT]", 0), at(1)));
        assert!(!in_runtime_bootstrap(&process("runc:[2:INIT]", 0), at(10)));
        assert!(!in_runtime_bootstrap(&process("sleep", 0), at(1)));
        let unknown_start = ProcessInfo {
            started_at: None,
            ..process("runc:[2:INIT]", 0)
        };
        assert!(!in_runtime_bootstrap(&unknown_start, at(1)));
    }
}
