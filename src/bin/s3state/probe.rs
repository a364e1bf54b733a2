//! `s3state probe`: runs the library's safety check of the configured endpoint and bucket
//! (`S3Backend::probe`) and prints its checks and verdict, with an exit code per verdict.

use crate::error::CliError;
use crate::settings;
use crate::ui::{self, Style};
use s3state::s3::{CheckLevel, ProbeReport, Verdict};
use std::io::Write;

/// The verdict "safe only under the lock" (after the CLI's error codes 1–4 in `ui.rs`).
pub const EXIT_SAFE_ONLY_UNDER_LOCK: u8 = 5;
/// The verdict "unsafe".
pub const EXIT_UNSAFE: u8 = 6;
/// The verdict "safe, with limits": every guarantee holds, some features fail with an error.
pub const EXIT_SAFE_WITH_LIMITS: u8 = 7;

/// `s3state probe`'s flags.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Print one JSON document (every check, the verdict, the cleanup) instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Runs the probe; `Ok` carries the exit code of the verdict.
pub async fn run(mut flags: settings::Flags, args: ProbeArgs) -> Result<u8, CliError> {
    // The probe writes under its own prefix, so it needs no state key: without one, any
    // placeholder lets the other settings (the backend block's included) resolve.
    let resolved = match settings::resolve(&flags) {
        Err(CliError::Usage(message)) if flags.key.is_none() && message.contains("no key") => {
            flags.key = Some("s3state-probe.tfstate".into());
            settings::resolve(&flags)?
        }
        other => other?,
    };
    // The probe reports versioning rather than refusing an unversioned bucket.
    let builder = resolved.builder.with_versioning_required(false);
    let backend = builder.build_backend().await?;
    let spinner = ui::progress(
        &format!(
            "probing s3://{} (writes under .s3state-probe/ and removes it)",
            backend.bucket()
        ),
        None,
    );
    let report = backend.probe().await;
    spinner.finish_and_clear();
    let report = report?;
    let text = if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|err| CliError::Other(format!("cannot encode the report: {err}")))?;
        format!("{json}\n")
    } else {
        render(&report, Style::stdout())
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|err| CliError::Other(format!("cannot write to stdout: {err}")))?;
    if !report.cleanup.left_behind.is_empty() {
        eprintln!(
            "{}: the probe could not remove everything it wrote; delete these versions by hand: {}",
            Style::stderr().yellow("warning"),
            report.cleanup.left_behind.join(", ")
        );
    }
    Ok(exit_code(&report.verdict))
}

/// The exit code of a verdict: 0 safe, 7 safe with limits, 5 safe only under the lock,
/// 6 unsafe.
pub fn exit_code(verdict: &Verdict) -> u8 {
    match verdict {
        Verdict::Safe => 0,
        Verdict::SafeWithLimits { .. } => EXIT_SAFE_WITH_LIMITS,
        Verdict::SafeOnlyUnderLock { .. } => EXIT_SAFE_ONLY_UNDER_LOCK,
        _ => EXIT_UNSAFE,
    }
}

/// The table of checks, one line each with its explanation below, then the verdict.
/// A verdict line (`label`, then what it means) and the list of what led to it, one item a line.
fn verdict_with_list(out: &mut String, label: &str, meaning: &str, items: &[String]) {
    out.push_str(&format!("Verdict: {label}: {meaning}\n"));
    for line in items {
        out.push_str(&format!("  - {line}\n"));
    }
}

fn render(report: &ProbeReport, style: Style) -> String {
    let mut out = format!(
        "Probed s3://{} (scratch prefix {}, removed afterwards)\n\n",
        report.bucket, report.prefix
    );
    let width = report
        .checks
        .iter()
        .map(|check| check.title.len())
        .max()
        .unwrap_or(0);
    for check in &report.checks {
        let mark = match check.level {
            CheckLevel::Pass => style.green("ok    "),
            CheckLevel::Info => "info  ".to_owned(),
            CheckLevel::Limited => style.yellow("limit "),
            CheckLevel::UnderLock => style.yellow("lock  "),
            _ => style.red("UNSAFE"),
        };
        out.push_str(&format!(
            "{mark} {:<width$}  {}\n       {:<width$}  {}\n",
            check.title, check.result, "", check.explanation
        ));
    }
    out.push('\n');
    match &report.verdict {
        Verdict::Safe => out.push_str(&format!(
            "Verdict: {}: every guarantee s3state relies on holds.\n",
            style.green("safe for s3state")
        )),
        Verdict::SafeWithLimits { limits } => verdict_with_list(
            &mut out,
            &style.green("safe, with limits"),
            "every guarantee holds; these fail here with an error instead of working:",
            limits,
        ),
        Verdict::SafeOnlyUnderLock { missing } => verdict_with_list(
            &mut out,
            &style.yellow("safe only under the lock"),
            "keep the lock on for every write (s3state's default; Terraform always locks). Missing:",
            missing,
        ),
        Verdict::Unsafe { reasons } => verdict_with_list(
            &mut out,
            &style.red("UNSAFE"),
            "do not keep Terraform state here with s3state. What fails:",
            reasons,
        ),
        other => out.push_str(&format!("Verdict: {other:?}\n")),
    }
    out.push_str(&format!(
        "Cleanup: {} versions and delete markers removed{}.\n",
        report.cleanup.removed,
        if report.cleanup.left_behind.is_empty() {
            ", nothing left behind"
        } else {
            "; some are left (see the warning)"
        }
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verdict_has_its_own_exit_code_apart_from_the_error_codes() {
        let codes = [
            exit_code(&Verdict::Safe),
            exit_code(&Verdict::SafeOnlyUnderLock { missing: vec![] }),
            exit_code(&Verdict::Unsafe { reasons: vec![] }),
            exit_code(&Verdict::SafeWithLimits { limits: vec![] }),
        ];
        assert_eq!(
            codes,
            [
                0,
                EXIT_SAFE_ONLY_UNDER_LOCK,
                EXIT_UNSAFE,
                EXIT_SAFE_WITH_LIMITS
            ]
        );
        for error_code in [
            ui::EXIT_ERROR,
            ui::EXIT_USAGE,
            ui::EXIT_CONFLICT,
            ui::EXIT_LOCKED,
        ] {
            assert!(!codes.contains(&error_code), "{error_code}");
        }
    }
}
