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


@cli.command()
@click.option("--config", "config_file", type=_PATH, help="TOML config file; flags override it.")
@_setting_flags
@_user_errors
def run(config_file: Path | None, **flags: Any) -> None:
    """Audit MODEL on DATA and write a report folder."""
    from auditor.config import resolve_config
    from auditor.pipeline import run_audit

    config = resolve_config(config_file, flags)
    given = {"config": config_file, **flags}
    words = [f"--{k.replace('_', '-')}={v}" for k, v in given.items() if v is not None]
    folder = run_audit(config, command=shlex.join(["auditor", "run", *words]))
    documents = ("report.pdf", "report.html", "summary.md")
    click.echo(f"Report: {next(folder / d for d in documents if (folder / d).is_file())}")
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
@click.option(
    "--out", type=_PATH, default=Path("reports"), show_default=True, help="Folder for run folders."
)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@_user_errors
def demo(out: Path, device: str) -> None:
    """Audit the bundled sample model on its synthetic dermoscopy validation set."""
    from auditor.demo import run_demo

    folder = run_demo(out, device)
    policy = json.loads((folder / "policy.json").read_text(encoding="utf-8"))
    click.echo(f"Report: {folder / 'report.pdf'}")
    click.echo(
        f"Policy: {policy['failed']} of {policy['declared']} acceptance criteria not met (the "
        "demo model is flawed on purpose; `auditor run` would exit 3 on it)"
    )
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
@click.option("--model", type=_PATH, required=True, help="TorchScript model file.")
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
    click.echo(f"file size           {binary_size(result.file_size)}")
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
