//! The `exec` sink passes coffer's sink conformance kit, storing through
//! plain shell commands in a directory.

use coffer_sink_exec::{ExecSink, ExecSinkConfig};

/// Commands that keep objects as files under the working directory.
pub fn directory_commands(dir: &std::path::Path) -> ExecSinkConfig {
    ExecSinkConfig {
        put: r#"mkdir -p "$(dirname "./$COFFER_KEY")" && cat > "./$COFFER_KEY""#.into(),
        get: r#"cat "./$COFFER_KEY""#.into(),
        list: r#"find . -ignore_readdir_race -type f -printf '%s;%P\n'"#.into(),
        rename: r#"mv -f "./$COFFER_FROM" "./$COFFER_TO""#.into(),
        delete: r#"rm -f "./$COFFER_KEY""#.into(),
        timeout: Some(60),
        dir: Some(dir.to_path_buf()),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exec_sink_passes_the_sink_suite() {
    let dir = tempfile::tempdir().unwrap();
    let sink = ExecSink::new("test", directory_commands(dir.path()));
    coffer_core::testkit::sink_suite(&sink).await;
    // Failed and dropped uploads left no temporary object behind (their
    // deletes run in the background: give them a moment).
    let mut left = Vec::new();
    for _ in 0..50 {
        left = files(dir.path());
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_command_is_an_error_that_names_it() {
    use coffer_core::Sink;
    let dir = tempfile::tempdir().unwrap();
    let mut config = directory_commands(dir.path());
    config.list = "echo 'remote not configured' >&2; exit 3".into();
    let sink = ExecSink::new("offsite", config);
    let err = sink.list("").await.unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("`list` command failed") && text.contains("remote not configured"),
        "{text}"
    );
}
