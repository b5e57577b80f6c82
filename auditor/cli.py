"""Command line: ``auditor run``, ``auditor demo`` and ``auditor profile``.

The CLI only parses and formats: a user mistake (:class:`~auditor.errors.AuditError`)
is printed as one ``Error: …`` line on stderr with exit code 1; usage errors exit 2
(click's convention). The run folder's path is the last line of stdout.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from auditor import __version__
from auditor.errors import AuditError

F = TypeVar("F", bound=Callable[..., Any])


def _user_errors(function: F) -> F:
    """Turn AuditError into click's ``Error: …`` line: exit 1, or 2 for a usage error."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except AuditError as error:
            if error.exit_code == 2:
                raise click.UsageError(str(error)) from None
            raise click.ClickException(str(error)) from None

    return wrapper  # type: ignore[return-value]


_PATH = click.Path(path_type=Path)


@click.group()
@click.version_option(__version__, prog_name="auditor")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """Audit a TorchScript image classifier into an HTML and PDF report."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def _setting_flags(function: F) -> F:
    """One ``--key`` option per setting declared with ``flag=True`` (see auditor.settings)."""
    from auditor.config import SETTINGS
    from auditor.settings import display

    types = {"int": int, "float": float}  # paths stay text: click reads "" as "."
    for spec in reversed(SETTINGS.values()):
        if not spec.setting.flag:
            continue
        default = spec.setting.default_text or display(spec.default)
        unit = f" ({spec.setting.unit})" if spec.setting.unit else ""
        extra = f"  [default: {default}]" if default else ""
        function = click.option(
            f"--{spec.key}",
            spec.name,
            type=types.get(spec.kind, str),
            help=spec.setting.help + unit + extra,
        )(function)
    return function


def _unchanged(config: Any) -> bool:
    """Print and exit with an earlier run's policy result when it audited the same model,
    data and configuration; ``False`` when there is none."""
    from auditor.events import emit
    from auditor.history.runs import unchanged_run

    same = unchanged_run(config)
    if same is None:
        return False
    emit("run_skipped", folder=same.folder, history_run=same.id)
    click.echo(
        f"Unchanged: run {same.id} of {same.started[:16]} audited the same model, data and "
        f"configuration; no new run",
        err=True,
    )
    _finish(Path(same.folder))
    return True


def _finish(folder: Path) -> None:
    """Print the report and the run folder (last line); exit 3 when its policy failed."""
    documents = ("report.pdf", "report.html", "summary.md")
    report = next((folder / d for d in documents if (folder / d).is_file()), folder)
    click.echo(f"Report: {report}")
    click.echo(str(folder))
    policy = json.loads((folder / "policy.json").read_text(encoding="utf-8"))
    if not policy["passed"]:
        click.echo(
            f"Policy: {policy['failed']} of {policy['declared']} acceptance criteria not met "
            f"(see {folder / 'policy.json'})",
            err=True,
        )
        sys.exit(policy["exit_code"])


@cli.command()
@click.option("--config", "config_file", type=_PATH, help="TOML config file; flags override it.")
@click.option(
    "--skip-if-unchanged",
    is_flag=True,
    help="Run nothing when the history has a run of the same model file, data and "
    "configuration: print its folder and exit with its policy result.",
)
@click.option(
    "--log-json",
    metavar="FILE",
    help="Append each stage's start and end as JSON lines to FILE (- for stderr).",
)
@click.option(
    "--resume",
    type=_PATH,
    metavar="FOLDER",
    help="Go on with the interrupted run whose hidden .<name>.partial folder this is "
    "(the same command finds it by itself in --out).",
)
@_setting_flags
@_user_errors
def run(
    config_file: Path | None,
    skip_if_unchanged: bool,
    log_json: str | None,
    resume: Path | None,
    **flags: Any,
) -> None:
    """Audit MODEL on DATA and write a report folder."""
    from auditor.checkpoint import Terminated, terminated_as_exit
    from auditor.config import resolve_config
    from auditor.events import close_events, configure_events, emit
    from auditor.pipeline import run_audit

    config = resolve_config(config_file, flags)
    given = {"config": config_file, **flags}
    words = [f"--{k.replace('_', '-')}={v}" for k, v in given.items() if v is not None]
    configure_events(json_path=log_json)
    try:
        with terminated_as_exit():
            if skip_if_unchanged and _unchanged(config):
                return
            folder = run_audit(config, shlex.join(["auditor", "run", *words]), resume)
    except BaseException as error:  # a scheduler's log says how the run ended, always
        if not isinstance(error, SystemExit) or isinstance(error, Terminated):
            emit("run_failed", error=str(error) or error.__class__.__name__)
        raise
    finally:
        close_events()
    if folder is not None:  # None: a rank other than 0 of a sharded run, which writes nothing
        _finish(folder)


@cli.command()
@click.option(
    "--out", type=_PATH, default=Path("reports"), show_default=True, help="Folder for run folders."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@_user_errors
def demo(out: Path, device: str) -> None:
    """Audit the bundled sample model on its synthetic dermoscopy validation set."""
    from auditor.demo import run_demo
    from auditor.events import close_events, configure_events

    configure_events()
    try:
        folder = run_demo(out, device)
    finally:
        close_events()
    policy = json.loads((folder / "policy.json").read_text(encoding="utf-8"))
    click.echo(f"Report: {folder / 'report.pdf'}")
    click.echo(
        f"Policy: {policy['failed']} of {policy['declared']} acceptance criteria not met (the "
        "demo model is flawed on purpose; `auditor run` would exit 3 on it)"
    )
    click.echo(str(folder))


def _history_rows(runs: list[Any]) -> list[str]:
    """``auditor history``'s table: one line per run, oldest first."""
    header = f"{'id':>4}  {'model':<20} {'version':<10} {'started':<16}  {'accuracy':<22} policy"
    lines = [header]
    for run in runs:
        value, low, high = run.metrics.get("accuracy", (None, None, None))
        accuracy = "" if value is None else f"{value:.3f}"
        if value is not None and low is not None and high is not None:
            accuracy += f" ({low:.3f}-{high:.3f})"
        policy = "passed" if run.policy_passed else f"{run.policy_failed} failed"
        folder = f"missing: {run.folder}" if run.missing else run.folder
        lines.append(
            f"{run.id:>4}  {run.model_name[:20]:<20} {run.model_version[:10]:<10} "
            f"{run.started[:16]:<16}  {accuracy:<22} {policy:<9} {folder}"
        )
    return lines


@cli.command()
@click.option("--history", "location", help="SQLite file or SQLAlchemy URL of the history.")
@click.option(
    "--out", type=_PATH, default=Path("reports"), show_default=True,
    help="Run folders' folder, whose history.sqlite is read when --history is not given.",
)  # fmt: skip
@click.option("--model", "model_name", help="Only the runs of this model name.")
@click.option("--json", "as_json", is_flag=True, help="Print the runs as JSON.")
@click.option("--add", type=_PATH, help="Record this complete run folder first.")
@click.option(
    "--html", type=_PATH, help="Write the history page here (default: beside a SQLite history)."
)
@_user_errors
def history(
    location: str | None,
    out: Path,
    model_name: str | None,
    as_json: bool,
    add: Path | None,
    html: Path | None,
) -> None:
    """List the recorded runs, oldest first (a deleted run folder shows as missing); with
    --add or --html, rewrite the history page."""
    from auditor.errors import ConfigError
    from auditor.history.page import write_history_page
    from auditor.history.runs import page_path
    from auditor.history.store import open_history

    found = open_history(location, out, create=add is not None)
    if found is None:
        raise ConfigError(
            f"no history at {location or str(out / 'history.sqlite')!r}; run an audit with "
            f"--out {out} first, or pass --history"
        )
    if add is not None:
        found.record(add)
    page = html or (page_path(found) if add is not None else None)
    if page is not None:
        write_history_page(found, page)
    runs = found.runs(model_name)
    if as_json:
        click.echo(json.dumps([run.as_dict() for run in runs], indent=2))
        return
    for line in _history_rows(runs):
        click.echo(line)


def _audit_at(which: str, location: str | None, out: Path) -> Any:
    """A run folder, or the run with that id in the history."""
    from auditor.compare import read_audit
    from auditor.errors import ConfigError
    from auditor.history.store import open_history

    if not which.isdigit():
        return read_audit(Path(which))
    found = open_history(location, out, create=False)
    if found is None:
        raise ConfigError(
            f"{which!r} is a history id, but there is no history at "
            f"{location or str(out / 'history.sqlite')!r}; pass run folders or --history"
        )
    run = found.get(int(which))
    if run.missing:
        raise ConfigError(
            f"run {run.id}'s folder {run.folder!r} is not here (deleted, moved, or on "
            f"another machine); pass the run folder's path instead of its id"
        )
    return read_audit(Path(run.folder), f"run {run.id}")


@cli.command()
@click.argument("old")
@click.argument("new")
@click.option(
    "--out", type=_PATH, default=Path("reports"), show_default=True,
    help="Folder for the comparison folder (and whose history.sqlite resolves ids).",
)  # fmt: skip
@click.option("--history", "location", help="SQLite file or SQLAlchemy URL of the history.")
@click.option("--bootstrap", type=click.IntRange(100), default=1000, show_default=True)
@click.option("--seed", type=click.IntRange(0), default=0, show_default=True)
@click.option(
    "--alpha", type=click.FloatRange(0, 0.5, min_open=True, max_open=True), default=0.05,
    show_default=True, help="Significance level (compare-alpha).",
)  # fmt: skip
@_user_errors
def compare(
    old: str, new: str, out: Path, location: str | None, bootstrap: int, seed: int, alpha: float
) -> None:
    """Compare the audit NEW with OLD (run folders or history ids): metrics with the
    interval of their change (paired on the same images), McNemar's test and drift."""
    from auditor.compare.report import write_comparison
    from auditor.history.settings import PeriodicSettings

    before, after = _audit_at(old, location, out), _audit_at(new, location, out)
    settings = PeriodicSettings(compare_alpha=alpha, seed=seed)
    folder = write_comparison(before, after, out, settings, bootstrap)
    document = json.loads((folder / "comparison.json").read_text(encoding="utf-8"))
    for finding in document["findings"]:
        click.echo(f"Finding: {finding}", err=True)
    click.echo(f"Report: {folder / 'comparison.pdf'}")
    click.echo(str(folder))


@cli.command()
@click.argument("path", type=_PATH, default=Path("audit.toml"))
@_user_errors
def init(path: Path) -> None:
    """Write a commented audit config (default audit.toml) with every setting's default."""
    from auditor.template import write_template

    write_template(path)
    click.echo(str(path))


@cli.command()
def methods() -> None:
    """List the explanation methods (keys for --methods), in report order."""
    from auditor.explain import METHODS

    for key, cls in METHODS.items():
        click.echo(f"{key:<22} {cls.title} — {cls.paper}")


@cli.command()
@click.option(
    "--model", type=_PATH, required=True, help="TorchScript or torch.export (.pt2) model file."
)
@click.option(
    "--image-size", type=int, default=224, show_default=True, help="Square input size in px."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=32, show_default=True, help="Batch for throughput.")
@_user_errors
def profile(model: Path, image_size: int, device: str, batch_size: int) -> None:
    """Print the module table and totals of MODEL."""
    from auditor.architecture import layers_frame, profile_model
    from auditor.errors import ConfigError
    from auditor.load import load_model, resolve_device
    from auditor.report.format import binary_size, si

    if image_size < 8 or batch_size < 1:
        raise ConfigError("--image-size must be at least 8 and --batch-size at least 1")
    loaded = load_model(model, resolve_device(device))
    result = profile_model(loaded, (loaded.in_channels, image_size, image_size), batch_size)
    table = layers_frame(result)
    click.echo(table.to_string(index=False))
    click.echo("")
    click.echo(f"input               {loaded.in_channels}x{image_size}x{image_size}")
    click.echo(f"parameters          {result.parameters:,}")
    click.echo(f"FLOPs per image     {si(result.flops_per_image, 'FLOPs')}")
    click.echo(f"file                {result.file_format}, {binary_size(result.file_size)}")
    click.echo(f"SHA-256             {result.sha256}")
    click.echo(f"latency (1 image)   {result.latency_ms:.2f} ms on {result.device}")
    click.echo(f"throughput          {result.throughput:.1f} images/s at batch {batch_size}")
    click.echo(
        f"peak memory         {binary_size(result.peak_memory_bytes)} ({result.peak_memory_kind})"
    )


def main() -> None:
    """Entry point of the ``auditor`` command."""
    cli()


if __name__ == "__main__":
    main()
