//! What a command can fail with. Its own file, so that the commands, the settings and the
//! terminal output (which maps it to exit codes and hints) all use it without importing one
//! another.

use s3state::Error;

/// What a command can fail with.
#[derive(Debug)]
pub enum CliError {
    /// The command line or configuration is wrong; nothing was sent.
    Usage(String),
    /// The library refused or failed.
    State(Error),
    /// Anything else (I/O on local files, a terminal).
    Other(String),
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> Self {
        CliError::Usage(message.into())
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Usage(message) | CliError::Other(message) => f.write_str(message),
            CliError::State(err) => write!(f, "{err}"),
        }
    }
}

impl From<Error> for CliError {
    fn from(err: Error) -> Self {
        CliError::State(err)
    }
}
