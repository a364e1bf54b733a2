//! The commands. Each one opens the configured state, does one thing, and prints for people
//! on stdout (or JSON with --json); diagnostics go to stderr.

use crate::error::CliError;
use crate::ui::{self, Style};
use crate::{Cli, Command, LockFlags, WorkspaceCommand, settings};
use futures::StreamExt;
use s3state::state::{ChangeKind, StateDiff};
use s3state::{
    Error, HistoryEntry, HistoryOptions, LockInfo, Locker, OutputReader, PersistentMeta, Refresher,
    RemoteState, S3Store, State, Store, Transient, VersionSelector, VersionedStore, s3::S3Backend,
    store::Fetched,
};
use std::io::{Read, Write};

type Result<T = ()> = std::result::Result<T, CliError>;

struct Context {
    backend: S3Backend,
    workspace: String,
}

impl Context {
    fn manager(&self) -> Result<RemoteState<S3Store>> {
        Ok(self.backend.manager(&self.workspace)?)
    }
}

pub async fn run(cli: Cli) -> Result {
    let resolved = settings::resolve(&cli.settings)?;
    let context = Context {
        backend: resolved.builder.build_backend().await?,
        workspace: resolved.workspace,
    };
    match cli.command {
        Command::Pull { version_id } => pull(&context, version_id).await,
        Command::Serve(_) => unreachable!("`s3state serve` is run by main"),
        Command::Tool(_) => unreachable!("the address commands are run by main"),
        Command::Push { file, force, lock } => push(&context, &file, force, &lock).await,
        Command::Outputs {
            name,
            json,
            raw,
            show_sensitive,
        } => outputs(&context, name, json, raw, show_sensitive).await,
        Command::Meta { json } => meta(&context, json).await,
        Command::History {
            details,
            limit,
            json,
        } => history(&context, details, limit, json).await,
        Command::Diff { a, b, json } => diff(&context, &a, &b, json).await,
        Command::Restore {
            target,
            force,
            yes,
            lock,
        } => restore(&context, &target, force, yes, &lock).await,
        Command::Lock {
            operation,
            info,
            timeout,
        } => lock(&context, operation, info, timeout).await,
        Command::Unlock { id } => {
            context.manager()?.unlock(&id).await?;
            eprintln!("Released lock {id}.");
            Ok(())
        }
        Command::ForceUnlock { id } => {
            context.manager()?.locker().force_unlock(&id).await?;
            eprintln!("Removed lock {id}.");
            Ok(())
        }
        Command::LockInfo { json } => lock_info(&context, json).await,
        Command::Prune {
            keep,
            newer_than,
            yes,
        } => prune(&context, keep, newer_than, yes).await,
        Command::Workspace(command) => workspace(&context, command).await,
        Command::Digest(command) => {
            crate::digest::run(&context.backend, &context.workspace, command).await
        }
    }
}

fn print_stdout(bytes: &[u8]) -> Result {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|err| CliError::Other(format!("cannot write to stdout: {err}")))
}

fn json_line(value: &impl serde::Serialize) -> Result {
    let mut text = serde_json::to_string_pretty(value).expect("serialisable");
    text.push('\n');
    print_stdout(text.as_bytes())
}

async fn pull(context: &Context, version_id: Option<String>) -> Result {
    let store = context.backend.store(&context.workspace)?;
    let spinner = ui::progress(&format!("pulling {}", store.location()), None);
    let body = match version_id {
        Some(id) => store.get_version(&id).await?.body,
        None => match store.get(None).await? {
            Fetched::Found(object) => object.body,
            _ => {
                spinner.finish_and_clear();
                return Err(CliError::Other(format!(
                    "there is no state at {}",
                    store.location()
                )));
            }
        },
    };
    spinner.finish_and_clear();
    print_stdout(&body)
}

async fn push(context: &Context, file: &std::path::Path, force: bool, lock: &LockFlags) -> Result {
    let bytes = if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::stdin()
            .read_to_end(&mut bytes)
            .map_err(|err| CliError::Other(format!("cannot read stdin: {err}")))?;
        bytes
    } else {
        std::fs::read(file)
            .map_err(|err| CliError::Other(format!("cannot read {}: {err}", file.display())))?
    };
    let state = State::from_slice(&bytes).map_err(|source| Error::Decode {
        location: file.display().to_string(),
        source,
    })?;
    drop(bytes); // large states: do not hold the file and its parsed form at once
    let manager = context.manager()?;
    let info = LockInfo::new("state-push").with_info("s3state push");
    under_lock(&manager, lock, info, "push", async {
        let spinner = ui::progress(&format!("pushing to {}", manager.store().location()), None);
        let pushed = async {
            // Read first to tell "nothing to push" from a write; push_state's own refresh is
            // then a conditional GET answered 304, without a body.
            manager.refresh_state().await?;
            let before = manager.persisted_object();
            let meta = manager.push_state(state, force).await?;
            Ok::<_, Error>((before != manager.persisted_object(), meta))
        }
        .await;
        spinner.finish_and_clear();
        let (written, after) = pushed?;
        if written {
            eprintln!(
                "Pushed serial {} of lineage {}.",
                after.serial, after.lineage
            );
        } else {
            eprintln!(
                "Nothing to push: the state already has this content (serial {}).",
                after.serial
            );
        }
        Ok(())
    })
    .await
}

/// Runs `step` under the state's lock, as Terraform runs `state push`: lock (waiting up to
/// `--lock-timeout`), the step, unlock, also when the step failed. With `--lock=false` the
/// step runs alone.
pub(crate) async fn under_lock<T>(
    manager: &RemoteState<S3Store>,
    flags: &LockFlags,
    info: LockInfo,
    what: &str,
    step: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    if !flags.lock {
        return step.await;
    }
    // Ctrl-C releases the lock before exiting, as Terraform does, instead of leaving it for
    // someone to force-unlock. A write already sent is conditional, so stopping is safe. The
    // handler is in place before the lock is taken, so no interrupt can slip between the two.
    let interrupt = interrupt_signal();
    let id = take_lock(manager, &info, Some(flags.lock_timeout)).await?;
    let result = tokio::select! {
        result = step => result,
        _ = interrupt => Err(CliError::Other(format!(
            "interrupted; the {what} may or may not have been written (check with: s3state meta)"
        ))),
    };
    match (release_lock(manager, &id).await, result) {
        (Ok(()), result) => result,
        (Err(err), Ok(_)) => Err(CliError::Other(format!(
            "the {what} succeeded, but releasing the lock {} failed: {err}\n\
             hint: nobody holds that lock now; remove it with: s3state force-unlock {id}",
            manager.locker().location()
        ))),
        (Err(err), Err(failed)) => {
            ui::report(&CliError::Other(format!(
                "releasing the lock {} failed: {err}; nobody holds it now, remove it with: \
                 s3state force-unlock {id}",
                manager.locker().location()
            )));
            Err(failed)
        }
    }
}

/// Resolves at the first Ctrl-C (SIGINT); the handler is installed when this is called, not
/// when it is first polled.
fn interrupt_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let installed = signal(SignalKind::interrupt());
        async move {
            match installed {
                Ok(mut interrupt) => {
                    interrupt.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Takes the lock at once, or waiting up to `timeout` on Terraform's back-off.
async fn take_lock(
    manager: &RemoteState<S3Store>,
    info: &LockInfo,
    timeout: Option<std::time::Duration>,
) -> Result<String> {
    match timeout {
        Some(timeout) if !timeout.is_zero() => {
            let spinner = ui::progress("waiting for the lock", None);
            let id = manager.locker().lock_with_timeout(info, timeout).await;
            spinner.finish_and_clear();
            Ok(id?)
        }
        _ => Ok(manager.lock(info).await?),
    }
}

/// Releases a lock this process took, trying again a few times when the store fails, so that
/// a passing fault does not leave it behind.
async fn release_lock(manager: &RemoteState<S3Store>, id: &str) -> std::result::Result<(), Error> {
    let mut wait = std::time::Duration::from_millis(100);
    for _ in 0..3 {
        match manager.unlock(id).await {
            Err(Error::Store { .. }) => {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
            other => return other,
        }
    }
    manager.unlock(id).await
}

async fn outputs(
    context: &Context,
    name: Option<String>,
    json: bool,
    raw: bool,
    show_sensitive: bool,
) -> Result {
    let outputs = context.manager()?.root_output_values().await?;
    let shown = |output: &s3state::OutputValue| -> serde_json::Value {
        if output.sensitive && !show_sensitive {
            serde_json::Value::Null
        } else {
            output.to_value()
        }
    };
    if let Some(name) = name {
        let output = outputs.get(&name).ok_or_else(|| {
            CliError::Other(format!(
                "no output named {name:?} (there are: {})",
                names(&outputs)
            ))
        })?;
        if output.sensitive && !show_sensitive {
            if raw || json {
                return Err(CliError::usage(format!(
                    "output {name:?} is sensitive; add --show-sensitive to print it"
                )));
            }
            return print_stdout(b"<sensitive>\n");
        }
        let value = output.to_value();
        if raw {
            let text = match &value {
                serde_json::Value::String(text) => text.clone(),
                serde_json::Value::Number(_) | serde_json::Value::Bool(_) => value.to_string(),
                _ => {
                    return Err(CliError::usage(format!(
                        "--raw prints strings, numbers and bools; {name:?} is {}",
                        output.value_type
                    )));
                }
            };
            return print_stdout(text.as_bytes());
        }
        if json {
            return json_line(&value);
        }
        return print_stdout(
            format!("{}\n", serde_json::to_string_pretty(&value).expect("json")).as_bytes(),
        );
    }
    if json {
        let object: serde_json::Map<String, serde_json::Value> = outputs
            .iter()
            .map(|(name, output)| {
                let entry = serde_json::json!({
                    "sensitive": output.sensitive,
                    "type": output.value_type.to_value(),
                    "value": shown(output),
                });
                (name.clone(), entry)
            })
            .collect();
        return json_line(&object);
    }
    let mut text = String::new();
    for (name, output) in &outputs {
        let value = if output.sensitive && !show_sensitive {
            "<sensitive>".to_owned()
        } else {
            output.value.to_string()
        };
        text.push_str(&format!("{name} = {value}\n"));
    }
    print_stdout(text.as_bytes())
}

fn names(outputs: &std::collections::BTreeMap<String, s3state::OutputValue>) -> String {
    if outputs.is_empty() {
        return "none".into();
    }
    outputs.keys().cloned().collect::<Vec<_>>().join(", ")
}

async fn meta(context: &Context, json: bool) -> Result {
    let manager = context.manager()?;
    manager.refresh_state().await?;
    let (Some(meta), Some(object)) = (manager.state_snapshot_meta(), manager.persisted_object())
    else {
        return Err(CliError::Other(format!(
            "there is no state at {}",
            manager.store().location()
        )));
    };
    if json {
        return json_line(&serde_json::json!({
            "location": manager.store().location(),
            "lineage": meta.lineage,
            "serial": meta.serial,
            "terraform_version": meta.terraform_version.to_string(),
            "etag": object.etag.as_str(),
            "version_id": object.version_id,
            "size": object.size,
        }));
    }
    let text = format!(
        "location:          {}\nlineage:           {}\nserial:            {}\nterraform_version: {}\netag:              {}\nversion_id:        {}\nsize:              {} ({} bytes)\n",
        manager.store().location(),
        meta.lineage,
        meta.serial,
        meta.terraform_version,
        object.etag,
        object.version_id.as_deref().unwrap_or("-"),
        ui::size(object.size),
        object.size,
    );
    print_stdout(text.as_bytes())
}

async fn history(context: &Context, details: bool, limit: Option<usize>, json: bool) -> Result {
    let manager = context.manager()?;
    let mut entries = manager.history(&HistoryOptions::default()).await?;
    if let Some(limit) = limit {
        entries.truncate(limit);
    }
    if details {
        let bar = ui::progress("reading versions", Some(entries.len() as u64));
        let metas: Vec<_> = futures::stream::iter(entries.iter())
            .map(|entry| {
                let manager = &manager;
                let bar = &bar;
                async move {
                    let meta = manager.version_meta(&entry.version).await;
                    bar.inc(1);
                    meta
                }
            })
            .buffered(8)
            .collect()
            .await;
        bar.finish_and_clear();
        for (entry, meta) in entries.iter_mut().zip(metas) {
            entry.meta = meta?;
        }
    }
    if json {
        let rows: Vec<_> = entries.iter().map(history_json).collect();
        return json_line(&rows);
    }
    let style = Style::stdout();
    let mut text = String::new();
    let header = if details {
        format!(
            "{:<34} {:<24} {:>10} {:>7} {:<36} {}\n",
            "VERSION ID", "LAST MODIFIED (UTC)", "SIZE", "SERIAL", "LINEAGE", "TERRAFORM"
        )
    } else {
        format!(
            "{:<34} {:<24} {:>10}\n",
            "VERSION ID", "LAST MODIFIED (UTC)", "SIZE"
        )
    };
    text.push_str(&style.bold(&header));
    for entry in &entries {
        let version = &entry.version;
        let marker = if version.is_latest { "*" } else { " " };
        let when = version
            .last_modified
            .format(&time::macros::format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]"
            ))
            .unwrap_or_default();
        let size = if version.is_delete_marker {
            style.yellow("(deleted)")
        } else {
            ui::size(version.size)
        };
        let mut row = format!(
            "{marker}{:<33} {:<24} {:>10}",
            version.version_id, when, size
        );
        if details {
            match &entry.meta {
                Some(meta) => row.push_str(&format!(
                    " {:>7} {:<36} {}",
                    meta.serial, meta.lineage, meta.terraform_version
                )),
                None => row.push_str(&format!(" {:>7}", "-")),
            }
        }
        text.push_str(&row);
        text.push('\n');
    }
    print_stdout(text.as_bytes())
}

fn history_json(entry: &HistoryEntry) -> serde_json::Value {
    let version = &entry.version;
    serde_json::json!({
        "version_id": version.version_id,
        "last_modified": version.last_modified.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "size": version.size,
        "etag": version.etag.as_ref().map(|e| e.as_str().to_owned()),
        "is_latest": version.is_latest,
        "is_delete_marker": version.is_delete_marker,
        "serial": entry.meta.as_ref().map(|m| m.serial),
        "lineage": entry.meta.as_ref().map(|m| m.lineage.clone()),
        "terraform_version": entry.meta.as_ref().map(|m| m.terraform_version.to_string()),
    })
}

/// `current`, `previous`, `~N`, or a version id.
fn selector(text: &str) -> Result<VersionSelector> {
    Ok(match text {
        "current" => VersionSelector::Current,
        "previous" => VersionSelector::Back(1),
        _ => match text.strip_prefix('~') {
            Some(n) => VersionSelector::Back(n.parse().map_err(|_| {
                CliError::usage(format!(
                    "{text:?}: after ~ comes a number of versions back, such as ~3"
                ))
            })?),
            None => VersionSelector::Id(text.to_owned()),
        },
    })
}

async fn diff(context: &Context, a: &str, b: &str, json: bool) -> Result {
    let manager = context.manager()?;
    let diff = manager.diff_versions(&selector(a)?, &selector(b)?).await?;
    if json {
        return json_line(&diff);
    }
    print_stdout(render_diff(&diff, Style::stdout()).as_bytes())
}

fn render_diff(diff: &StateDiff, style: Style) -> String {
    let mut text = String::new();
    let lineage = if diff.from.lineage == diff.to.lineage {
        format!("lineage {}", diff.to.lineage)
    } else {
        style.red(&format!(
            "lineage {} → {} (unrelated states)",
            diff.from.lineage, diff.to.lineage
        ))
    };
    text.push_str(&format!(
        "serial {} → {}, {lineage}\n",
        diff.from.serial, diff.to.serial
    ));
    if diff.outputs.is_empty() && diff.resources.is_empty() {
        text.push_str("no changes in outputs or resources\n");
        return text;
    }
    let sign = |kind: ChangeKind| match kind {
        ChangeKind::Added => style.green("+"),
        ChangeKind::Removed => style.red("-"),
        ChangeKind::Changed => style.yellow("~"),
    };
    let show = |value: &Option<serde_json::Value>| {
        value.as_ref().map_or_else(String::new, |v| v.to_string())
    };
    if !diff.outputs.is_empty() {
        text.push_str(&style.bold("outputs:\n"));
        for change in &diff.outputs {
            let detail = match (change.kind, change.sensitive) {
                (_, true) => " (sensitive value changed)".to_owned(),
                (ChangeKind::Added, _) => format!(" = {}", show(&change.after)),
                (ChangeKind::Removed, _) => format!(" (was {})", show(&change.before)),
                (ChangeKind::Changed, _) => {
                    format!(": {} → {}", show(&change.before), show(&change.after))
                }
            };
            text.push_str(&format!(
                "  {} {}{detail}\n",
                sign(change.kind),
                change.name
            ));
        }
    }
    if !diff.resources.is_empty() {
        text.push_str(&style.bold("resources:\n"));
        for change in &diff.resources {
            text.push_str(&format!("  {} {}\n", sign(change.kind), change.address));
        }
    }
    text
}

async fn restore(
    context: &Context,
    version: &str,
    force: bool,
    yes: bool,
    lock: &LockFlags,
) -> Result {
    let selector = selector(version)?;
    let manager = context.manager()?;
    let info = LockInfo::new("state-restore").with_info(format!("s3state restore {version}"));
    // The preview and the question come before the lock, so nobody waits on an operator
    // reading a diff; the restore is conditional on the snapshot the preview showed, so a
    // change made meanwhile is a conflict, not overwritten.
    let version_id = manager.resolve_version(&selector).await?;
    let target = manager.snapshot_at(&version_id).await?;
    manager.refresh_state().await?;
    match manager.state() {
        Some(current) => {
            // Preview what will be written, numbered by the library as the restore numbers
            // it (nothing, when the content is already there).
            let preview = manager
                .restore_preview(target.state.clone())
                .await?
                .unwrap_or_else(|| current.clone());
            let diff = StateDiff::between(&current, &preview);
            eprint!(
                "Restoring version {version_id} changes the current state as follows:\n{}",
                render_diff(&diff, Style::stderr())
            );
        }
        None => {
            eprintln!("The state is deleted; restoring version {version_id} brings it back.")
        }
    }
    if !yes && !ui::confirm("Restore it?")? {
        return Err(CliError::Other(
            "restore cancelled; nothing was written".into(),
        ));
    }
    under_lock(&manager, lock, info, "restore", async {
        let restored = manager.restore(&version_id, force).await?;
        if restored.written {
            eprintln!(
                "Restored version {version_id} as serial {} of lineage {}.",
                restored.meta.serial, restored.meta.lineage
            );
        } else {
            eprintln!("The current state already has that content; nothing was written.");
        }
        Ok(())
    })
    .await
}

async fn lock(
    context: &Context,
    operation: String,
    info: String,
    timeout: Option<std::time::Duration>,
) -> Result {
    let manager = context.manager()?;
    let lock_info = LockInfo::new(operation).with_info(info);
    let id = take_lock(&manager, &lock_info, timeout).await?;
    eprintln!(
        "Locked {} (release with: s3state unlock {id})",
        manager.store().location()
    );
    print_stdout(format!("{id}\n").as_bytes())
}

async fn lock_info(context: &Context, json: bool) -> Result {
    let manager = context.manager()?;
    let current = manager.locker().current().await?;
    if json {
        return json_line(&current);
    }
    match current {
        None => print_stdout(format!("{} is not locked\n", manager.store().location()).as_bytes()),
        Some(info) => {
            let created = info
                .created
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            let age = humantime::format_duration(std::time::Duration::from_secs(
                (time::OffsetDateTime::now_utc() - info.created)
                    .whole_seconds()
                    .max(0) as u64,
            ));
            print_stdout(
                format!(
                    "ID:        {}\nOperation: {}\nWho:       {}\nCreated:   {created} ({age} ago)\nVersion:   {}\nPath:      {}\nInfo:      {}\n",
                    info.id, info.operation, info.who, info.version, info.path, info.info
                )
                .as_bytes(),
            )
        }
    }
}

async fn prune(
    context: &Context,
    keep: Option<usize>,
    newer_than: Option<std::time::Duration>,
    yes: bool,
) -> Result {
    if keep.is_none() && newer_than.is_none() {
        return Err(CliError::usage(
            "say what to keep: --keep N and/or --newer-than AGE",
        ));
    }
    let options = s3state::PruneOptions {
        keep_newest: keep,
        keep_since: newer_than.map(|age| time::OffsetDateTime::now_utc() - age),
        dry_run: !yes,
    };
    let manager = context.manager()?;
    let spinner = ui::progress(
        if yes {
            "removing versions"
        } else {
            "listing versions"
        },
        None,
    );
    let removed = manager.prune(&options).await;
    spinner.finish_and_clear();
    let removed = removed?;
    let mut text = String::new();
    for version in &removed {
        let when = version
            .last_modified
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let what = if version.is_delete_marker {
            "delete marker".to_owned()
        } else {
            ui::size(version.size)
        };
        text.push_str(&format!("{} {when} {what}\n", version.version_id));
    }
    print_stdout(text.as_bytes())?;
    if yes {
        eprintln!("Removed {} versions permanently.", removed.len());
    } else {
        eprintln!(
            "Would remove {} versions (nothing was deleted). Run again with --yes to delete them permanently.",
            removed.len()
        );
    }
    Ok(())
}

async fn workspace(context: &Context, command: WorkspaceCommand) -> Result {
    match command {
        WorkspaceCommand::List => {
            let current = &context.workspace;
            // Terraform always lists `default`, even before its state exists; the library
            // lists only workspaces that have a state.
            let mut names = context.backend.workspaces().await?;
            if names.first().map(String::as_str) != Some("default") {
                names.insert(0, "default".to_owned());
            }
            let mut text = String::new();
            for name in names {
                let marker = if &name == current { "*" } else { " " };
                text.push_str(&format!("{marker} {name}\n"));
            }
            print_stdout(text.as_bytes())
        }
        WorkspaceCommand::New { name } => {
            let manager = context.backend.create_workspace(&name).await?;
            eprintln!(
                "Created workspace {name:?} at {}.",
                manager.store().location()
            );
            Ok(())
        }
        WorkspaceCommand::Delete { name } => {
            context.backend.delete_workspace(&name).await?;
            eprintln!("Deleted workspace {name:?}; its history is kept in the bucket's versions.");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_selectors_read_as_documented() {
        assert_eq!(selector("current").unwrap(), VersionSelector::Current);
        assert_eq!(selector("previous").unwrap(), VersionSelector::Back(1));
        assert_eq!(selector("~3").unwrap(), VersionSelector::Back(3));
        assert_eq!(selector("abc").unwrap(), VersionSelector::Id("abc".into()));
        assert!(matches!(selector("~x"), Err(CliError::Usage(_))));
    }
}
