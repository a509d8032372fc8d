//! An error and its causes on one line, for logs, status reports and the CLI.
//!
//! Every error type of this crate says only its own context in its message and
//! keeps what caused it as `source()` (`#[source]`/`#[from]`), so `{}` of an error
//! prints its top level alone. Wherever a person reads an error, print
//! `causes(&error)`: `reading names file /run/x.json: No such file or directory`.

use std::{error::Error, fmt};

/// `error` and each of its sources, outermost first, joined with ": ".
pub fn causes<'a>(error: &'a (dyn Error + 'static)) -> Causes<'a> {
    Causes(error)
}

/// What `causes` returns: displays the chain (a `tracing` field takes it as
/// `error = %causes(&error)`).
#[derive(Clone, Copy)]
pub struct Causes<'a>(&'a (dyn Error + 'static));

impl fmt::Display for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        while let Some(cause) = next {
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Causes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::causes;

    #[derive(Debug, thiserror::Error)]
    #[error("reading {path}")]
    struct Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    enum Outer {
        #[error(transparent)]
        Read(#[from] Read),
    }

    #[test]
    fn each_cause_is_printed_once_after_its_context() {
        let read = Read {
            path: "x.yaml",
            source: std::io::Error::other("disk on fire"),
        };
        assert_eq!(causes(&read).to_string(), "reading x.yaml: disk on fire");
        let outer = Outer::from(read);
        assert_eq!(causes(&outer).to_string(), "reading x.yaml: disk on fire");
    }
}
