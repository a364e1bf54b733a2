//! Terminal output: errors with hints, exit codes, colour and progress on a TTY only.

use crate::error::CliError;
use s3state::Error;
use std::io::{IsTerminal, Write};

pub const EXIT_ERROR: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_CONFLICT: u8 = 3;
pub const EXIT_LOCKED: u8 = 4;

pub fn init_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    // By default only s3state's own warnings: the SDK's (a region not found in IMDS, say)
    // are dumps of its internals, and s3state reports what matters as its own error.
    let default = match verbose {
        0 => "s3state=warn",
        1 => "s3state=debug,aws_smithy_runtime=debug",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default))
        // The SDK's request signer logs each request with all its headers at trace level, an
        // SSE-C key included: whatever RUST_LOG asks, it never logs below debug.
        .add_directive("aws_sigv4=debug".parse().expect("a valid directive"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose > 0)
        // Escape codes only for a terminal, never in a log file or a CI log.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// The exit code for an error: the one place errors are mapped to codes.
/// Writes `bytes` to stdout and flushes it: a command's whole answer, at once. A closed or
/// failing stdout is an error the command reports (not a panic, as `print!` would).
pub fn print_stdout(bytes: &[u8]) -> Result<(), CliError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|err| CliError::Other(format!("cannot write to stdout: {err}")))
}

pub fn exit_code(err: &CliError) -> u8 {
    match err {
        CliError::Usage(_) => EXIT_USAGE,
        CliError::Other(_) => EXIT_ERROR,
        CliError::State(err) => match err {
            // Someone else wrote first; nothing was overwritten. Re-running re-reads.
            Error::Conflict { .. } => EXIT_CONFLICT,
            // Someone else holds the lock; nothing was written.
            Error::Locked { .. } => EXIT_LOCKED,
            // Refusals: what was asked would replace a state it was not made from.
            Error::LineageMismatch { .. }
            | Error::SerialRegression { .. }
            | Error::SerialCollision { .. } => EXIT_ERROR,
            // Failed writes and locks, with or without a known outcome (the message says
            // which, and what to check).
            Error::WriteFailed { .. }
            | Error::WriteOutcomeUnknown { .. }
            | Error::WriteDiscarded { .. }
            | Error::LockOutcomeUnknown { .. }
            | Error::InvalidLockInfo { .. } => EXIT_ERROR,
            _ => EXIT_ERROR,
        },
    }
}

/// One line saying what went wrong, and one saying what to do about it.
pub fn report(err: &CliError) {
    let style = Style::stderr();
    eprintln!("{}: {err}", style.red("error"));
    if let Some(hint) = hint(err) {
        eprintln!("{}: {hint}", style.bold("hint"));
    }
}

fn hint(err: &CliError) -> Option<String> {
    let CliError::State(err) = err else {
        return None;
    };
    Some(match err {
        Error::Conflict { .. } => {
            "someone else wrote the state after it was read; run the command again (it re-reads the state), \
             or pull, re-apply your change and push"
                .into()
        }
        Error::Locked { holder: Some(holder), .. } => format!(
            "wait for the holder, or if that lock is stale: s3state force-unlock {}",
            holder.id
        ),
        Error::LineageMismatch { .. } => "this is a different state; pass --force to replace it (the old one stays in history)".into(),
        Error::SerialRegression { .. } => "the state is newer than yours; pull it first, or pass --force to replace it".into(),
        Error::SerialCollision { .. } => "your file was not made from the stored state; pull it, apply your change to it and push, \
             or pass --force to replace it (the old one stays in history)".into(),
        Error::WriteFailed { .. } => {
            "the write was not in the state's history when checked; look at the state \
             (s3state meta) before running the command again"
                .into()
        }
        Error::WriteOutcomeUnknown { .. } => "check what is stored (s3state meta, s3state history --details) before running it again".into(),
        Error::LockOutcomeUnknown { id, .. } => format!("see whether it appeared with: s3state lock-info (then: s3state force-unlock {id})"),
        Error::InvalidConfig { field, env, .. } => {
            format!("set --{} or {env}", field.replace('_', "-"))
        }
        Error::VersionNotFound { .. } => "list versions with: s3state history".into(),
        Error::LockIdMismatch { .. } | Error::NotLocked { .. } => "see who holds the lock with: s3state lock-info".into(),
        Error::BucketNotFound { .. } => "check --bucket, --region and --endpoint-url".into(),
        Error::Timeout { setting, .. } => format!(
            "the store (or a proxy in between) did not answer in time: check --endpoint-url and \
             the network; if it is only slow, raise {} (or {})",
            setting.flag(),
            setting.env()
        ),
        _ => return None,
    })
}

/// ANSI styles, or nothing when the stream is not a terminal (or NO_COLOR is set).
#[derive(Clone, Copy)]
pub struct Style {
    enabled: bool,
}

impl Style {
    pub fn stdout() -> Self {
        Style {
            enabled: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    pub fn stderr() -> Self {
        Style {
            enabled: std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(&self, style: anstyle::Style, text: &str) -> String {
        if self.enabled {
            format!("{}{text}{}", style.render(), style.render_reset())
        } else {
            text.to_owned()
        }
    }

    pub fn red(&self, text: &str) -> String {
        self.paint(anstyle::AnsiColor::Red.on_default().bold(), text)
    }

    pub fn green(&self, text: &str) -> String {
        self.paint(anstyle::AnsiColor::Green.on_default(), text)
    }

    pub fn yellow(&self, text: &str) -> String {
        self.paint(anstyle::AnsiColor::Yellow.on_default(), text)
    }

    pub fn bold(&self, text: &str) -> String {
        self.paint(anstyle::Style::new().bold(), text)
    }
}

/// A progress indicator on stderr, shown only on a terminal.
pub fn progress(message: &str, total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(total) => indicatif::ProgressBar::new(total).with_style(
            indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len}")
                .expect("a valid template")
                .progress_chars("=> "),
        ),
        None => indicatif::ProgressBar::new_spinner(),
    };
    let shown = std::io::stderr().is_terminal();
    if !shown {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message(message.to_owned());
    // The steady tick runs on a thread of its own, which a hidden spinner does not need (it
    // would only add a thread start and join to every command run by a script).
    if total.is_none() && shown {
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
    }
    bar
}

/// Asks a yes/no question on the terminal. Without a terminal there is nobody to ask.
pub fn confirm(question: &str) -> Result<bool, CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::usage(
            "refusing to go ahead without confirmation: stdin is not a terminal; pass --yes",
        ));
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(|err| CliError::Other(format!("cannot read the answer: {err}")))?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES"))
}

/// Formats a byte count for people.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_can_tell_conflicts_and_held_locks_from_other_errors() {
        let conflict = CliError::State(Error::Conflict {
            location: "s3://b/k".into(),
            remote: None,
        });
        let locked = CliError::State(Error::Locked {
            location: "s3://b/k.tflock".into(),
            holder: None,
            waited: None,
        });
        let other = CliError::State(Error::DefaultWorkspaceUndeletable);
        assert_eq!(exit_code(&conflict), EXIT_CONFLICT);
        assert_eq!(exit_code(&locked), EXIT_LOCKED);
        assert_eq!(exit_code(&other), EXIT_ERROR);
        assert_eq!(exit_code(&CliError::usage("x")), EXIT_USAGE);
        assert_ne!(EXIT_CONFLICT, EXIT_LOCKED);
    }

    #[test]
    fn a_same_serial_collision_exits_like_the_other_refusals_with_a_hint() {
        let collision = CliError::State(Error::SerialCollision {
            location: "s3://b/k".into(),
            serial: 3,
        });
        let regression = CliError::State(Error::SerialRegression {
            location: "s3://b/k".into(),
            local: 1,
            remote: 3,
        });
        assert_eq!(exit_code(&collision), exit_code(&regression));
        assert_eq!(exit_code(&collision), EXIT_ERROR);
        let hint = hint(&collision).expect("a hint");
        assert!(hint.contains("--force") && hint.contains("pull"), "{hint}");
    }

    #[test]
    fn a_failed_write_says_whether_running_again_is_safe() {
        let source = || {
            Box::new(Error::Store {
                operation: "PutObject",
                location: "s3://b/k".into(),
                message: "timeout".into(),
                source: None,
            })
        };
        let failed = CliError::State(Error::WriteFailed {
            location: "s3://b/k".into(),
            source: source(),
        });
        let unknown = CliError::State(Error::WriteOutcomeUnknown {
            location: "s3://b/k".into(),
            write_ids: vec!["w1".into()],
            source: source(),
        });
        assert_eq!(exit_code(&failed), EXIT_ERROR);
        assert_eq!(exit_code(&unknown), EXIT_ERROR);
        assert!(
            hint(&failed)
                .unwrap()
                .contains("before running the command again")
        );
        assert!(hint(&unknown).unwrap().contains("before running it again"));
    }
}
