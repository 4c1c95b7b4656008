//! The one error-chain formatter of the workspace (re-exported as `predictive_api::error_chain`): this crate is
//! the leaf every other crate links, so the hook, the shim and the broker print a chain the same way.

/// An error with its sources, `a: b: c`, for the one line a binary prints or a client receives. A source whose
/// text the line already ends with is not repeated (some libraries' Display includes their source's, as
/// libcontainer's does), and neither is an empty one.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut line = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = s.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);

    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    fn chain_of(texts: &[&'static str]) -> E {
        texts
            .iter()
            .rev()
            .fold(None, |inner, t| Some(E(t, inner.map(Box::new))))
            .expect("at least one")
    }

    #[test]
    fn every_source_after_a_colon() {
        assert_eq!(error_chain(&chain_of(&["a"])), "a");
        let e = chain_of(&["writing memory.max", "Permission denied (os error 13)"]);
        assert_eq!(
            error_chain(&e),
            "writing memory.max: Permission denied (os error 13)"
        );
        assert_eq!(error_chain(&chain_of(&["a", "b", "c"])), "a: b: c");
    }

    #[test]
    fn a_source_already_in_the_line_is_not_repeated() {
        let e = chain_of(&["create failed: no such file", "no such file", "os error 2"]);
        assert_eq!(error_chain(&e), "create failed: no such file: os error 2");
        assert_eq!(error_chain(&chain_of(&["a", "", "b"])), "a: b");
    }

    #[test]
    fn io_errors_chain_like_any_other() {
        let io = std::io::Error::other(chain_of(&["inner", "root cause"]));
        assert_eq!(error_chain(&io), "inner: root cause");
    }
}
