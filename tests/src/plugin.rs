//! Running the kubectl plugin `kubectl procwatch` the way a user does: through kubectl, which
//! finds `kubectl-procwatch` on `PATH` (tests/run puts the workspace's build there).

use std::process::ExitStatus;

use anyhow::{Context, bail};

use crate::cluster::{Cluster, TestNamespace};

/// What one run printed, and how it ended.
#[derive(Debug)]
pub struct PluginRun {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Fails with the way to fix it when kubectl does not find the plugin.
pub async fn require_plugin(cluster: &Cluster) -> anyhow::Result<()> {
    let list = cluster.kubectl(&["plugin", "list", "--name-only"]).await;
    match list {
        Ok(out) if out.lines().any(|l| l.trim() == "kubectl-procwatch") => Ok(()),
        other => bail!(
            "kubectl does not find kubectl-procwatch on PATH ({other:?}); tests/run puts it there, \
             by hand: cargo build -p kubectl-procwatch && export PATH=<target dir>/debug:$PATH"
        ),
    }
}

/// `kubectl procwatch ARGS -n <namespace>`; never an error for a non-zero exit (see `status`).
pub async fn kubectl_procwatch(ns: &TestNamespace, args: &[&str]) -> anyhow::Result<PluginRun> {
    let out = ns
        .cluster()
        .kubectl_plugin_command("procwatch")
        .args(args)
        .args(["-n", ns.name()])
        .output()
        .await
        .context("running kubectl procwatch")?;
    Ok(PluginRun {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// [`kubectl_procwatch`] that must succeed; its stdout.
pub async fn kubectl_procwatch_ok(ns: &TestNamespace, args: &[&str]) -> anyhow::Result<String> {
    let run = kubectl_procwatch(ns, args).await?;
    if !run.status.success() {
        bail!(
            "kubectl procwatch {} failed ({}): {}",
            args.join(" "),
            run.status,
            run.stderr.trim()
        );
    }
    println!(
        "$ kubectl procwatch {} -n {}\n{}",
        args.join(" "),
        ns.name(),
        run.stdout
    );
    Ok(run.stdout)
}

/// The rows of a plugin table whose last column may hold spaces (COMMAND): header cell to
/// value, the last column the rest of the line.
pub fn table_rows(out: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = out.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let columns: Vec<&str> = header.split_whitespace().collect();
    lines
        // The table ends at the blank line before the notes.
        .take_while(|l| !l.trim().is_empty())
        .map(|line| {
            let mut rest = line;
            let mut row = std::collections::BTreeMap::new();
            for (i, column) in columns.iter().enumerate() {
                rest = rest.trim_start();
                let cell = if i + 1 == columns.len() {
                    rest
                } else {
                    let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                    let (cell, tail) = rest.split_at(end);
                    rest = tail;
                    cell
                };
                row.insert(column.to_string(), cell.to_string());
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_keep_the_command_whole() {
        let rows = table_rows(
            "POD   CONTAINER   PID   USER   COMMAND\n\
             web   nginx         8   root   nginx: master process nginx\n\
             web   nginx        14   www-data     \\_ nginx: worker process\n\
             \n\
             watch web: a note\n",
        );
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["COMMAND"], "nginx: master process nginx");
        assert_eq!(rows[1]["USER"], "www-data");
        assert_eq!(rows[1]["COMMAND"], "\\_ nginx: worker process");
    }
}
