//! `/proc/<pid>/cmdline`: arguments separated (and usually ended) by NUL bytes.

/// The longest command line reported; longer ones end with `…`.
pub const MAX_ARGS_BYTES: usize = 4096;

/// Joins the arguments with spaces as `ps` does: trailing NULs dropped, every other NUL (also
/// the empty arguments and padding of programs that rewrite their title) a space, invalid UTF-8
/// replaced, at most [`MAX_ARGS_BYTES`] bytes of input used.
pub fn parse_cmdline(raw: &[u8]) -> String {
    let truncated = raw.len() > MAX_ARGS_BYTES;
    let raw = &raw[..raw.len().min(MAX_ARGS_BYTES)];
    let end = raw.iter().rposition(|&b| b != 0).map_or(0, |last| last + 1);
    let joined: Vec<u8> = raw[..end]
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    let mut args = String::from_utf8_lossy(&joined).into_owned();
    if truncated {
        args.push('…');
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_joined_by_spaces() {
        assert_eq!(
            parse_cmdline(b"nginx\0-g\0daemon off;\0"),
            "nginx -g daemon off;"
        );
        assert_eq!(parse_cmdline(b"sleep\x00100"), "sleep 100");
    }

    #[test]
    fn kernel_threads_and_zombies_have_none() {
        assert_eq!(parse_cmdline(b""), "");
        assert_eq!(parse_cmdline(b"\0\0"), "");
    }

    #[test]
    fn embedded_empty_arguments_and_rewritten_titles() {
        assert_eq!(parse_cmdline(b"prog\0\0x\0"), "prog  x");
        // nginx rewrites argv in place and pads with NULs.
        assert_eq!(
            parse_cmdline(b"nginx: master process nginx -g daemon off;\0\0\0\0"),
            "nginx: master process nginx -g daemon off;"
        );
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        assert_eq!(
            parse_cmdline(b"caf\xe9\0\xff\xfe\0ok\0"),
            "caf\u{fffd} \u{fffd}\u{fffd} ok"
        );
    }

    #[test]
    fn long_command_lines_are_bounded() {
        let raw = vec![b'a'; MAX_ARGS_BYTES * 3];
        let args = parse_cmdline(&raw);
        assert_eq!(args.len(), MAX_ARGS_BYTES + '…'.len_utf8());
        assert!(args.ends_with('…'));
    }
}
