//! `s3state completions` and `s3state man`: shell completion scripts and man pages, generated
//! from the clap definitions so that they never drift from the real command line. The caller
//! passes the command definition in, so this file needs nothing from the rest of the CLI.

use crate::error::CliError;
use crate::ui::print_stdout;
use std::path::{Path, PathBuf};

type Result<T = ()> = std::result::Result<T, CliError>;

/// The program name completions are registered for.
const BIN_NAME: &str = "s3state";

/// Prints the completion script for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell, mut command: clap::Command) -> Result {
    // Into a buffer first: the generator panics on a write error, and a closed pipe is an
    // error to report, not a crash.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, BIN_NAME, &mut script);
    print_stdout(&script)
}

/// Prints the main man page (roff) to stdout, or with `dir` writes one page per command and
/// subcommand there (`s3state.1`, `s3state-pull.1`, `s3state-workspace-list.1`, …) and prints
/// the paths written.
pub fn man(command: clap::Command, dir: Option<&Path>) -> Result {
    // The man pages list the commands; `help` is clap's own and has no page of its own.
    let mut command = command.disable_help_subcommand(true);
    command.build();
    let Some(dir) = dir else {
        let mut page = Vec::new();
        clap_mangen::Man::new(command)
            .render(&mut page)
            .map_err(|err| CliError::Other(format!("cannot render the man page: {err}")))?;
        return print_stdout(&page);
    };
    std::fs::create_dir_all(dir)
        .map_err(|err| CliError::Other(format!("cannot create {}: {err}", dir.display())))?;
    let mut written = Vec::new();
    write_pages(command, dir, &mut written)?;
    written.sort();
    let listing: String = written
        .iter()
        .map(|path| format!("{}\n", path.display()))
        .collect();
    print_stdout(listing.as_bytes())
}

/// Writes the page of `command` and, depth first, of each of its visible subcommands.
fn write_pages(command: clap::Command, dir: &Path, written: &mut Vec<PathBuf>) -> Result {
    for subcommand in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        write_pages(subcommand.clone(), dir, written)?;
    }
    let page = clap_mangen::Man::new(command);
    let path = dir.join(page.get_filename());
    page.generate_to(dir)
        .map_err(|err| CliError::Other(format!("cannot write {}: {err}", path.display())))?;
    written.push(path);
    Ok(())
}
