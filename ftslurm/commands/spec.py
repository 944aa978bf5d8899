"""`ftslurm validate` and `ftslurm render`: check a job spec, print its sbatch script.

Both exit with code 2 and write nothing when the spec (or its template) is wrong; every problem
is listed at once with its file and line.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ftslurm import exit_codes
from ftslurm.atomic import write_atomic
from ftslurm.chain.outcome import RunStatus
from ftslurm.chain.run import prepare_for_sbatch
from ftslurm.errors import UsageError
from ftslurm.render.script import render
from ftslurm.spec.model import JobSpec, load_spec
from ftslurm.spec.sweep import has_sweep, plan_sweep


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the job-spec subcommands."""
    validate = subparsers.add_parser(
        "validate", help="check a job spec (and its template); print a summary or every error",
        description="Check a job spec and the sbatch script it renders to. Prints 'ok' and a "
        "short summary, or every problem with its file and line (exit code 2).",
    )
    validate.add_argument("spec", metavar="JOB_YAML", help="the job spec, e.g. job.yaml")
    validate.set_defaults(handler=run_validate)

    render_parser = subparsers.add_parser(
        "render", help="print the sbatch script of a job spec without submitting it",
        description="Render the sbatch script of a job spec to stdout, with no side effect. With "
        "-o FILE, also prepare the run directory (log folder, settings, an empty ledger) so "
        "that `sbatch FILE` starts a self-resuming run: each job submitted by hand joins the run "
        "as its next attempt, or is refused while another attempt is running or queued.",
    )
    render_parser.add_argument("spec", metavar="JOB_YAML", help="the job spec, e.g. job.yaml")
    render_parser.add_argument(
        "-o", "--output", metavar="FILE", type=Path, default=None,
        help="write the script to FILE (replaced atomically, made executable) instead of "
        "stdout, and prepare the run directory for `sbatch FILE`",
    )
    render_parser.set_defaults(handler=run_render)


def summary(spec: JobSpec) -> list[str]:
    """A few lines that say what the spec will run, for `ftslurm validate`."""
    res, launch = spec.resources, spec.launch
    limit = res.time or "the partition's default"
    place = ", ".join(
        f"{key} {value}" for key, value in
        (("partition", res.partition), ("account", res.account), ("qos", res.qos)) if value
    )
    restarts = "" if launch.launcher == "none" else f", up to {launch.max_restarts} in-job restarts"
    command = " ".join(spec.command.argv(launch.python))
    lines = [
        f"name:       {spec.name}",
        f"resources:  {res.nodes} node(s) x {res.nproc_per_node} rank(s) = {res.world_size} "
        f"rank(s); time limit {limit}" + (f"; {place}" if place else ""),
        f"launcher:   {launch.launcher}{restarts}",
        f"command:    {command}",
        f"run_dir:    {spec.run_dir}",
        f"autoresume: at most {spec.autoresume.max_failures} failure(s), "
        f"{spec.autoresume.max_attempts} attempt(s); finished when {spec.autoresume.flag_file} "
        "exists",
        f"signals:    {spec.signals.warning_signal} {spec.signals.warning_time} s before the "
        f"time limit; ranks get {spec.signals.stop_grace} s to stop",
    ]
    return lines


def run_validate(args: argparse.Namespace) -> int:
    """`ftslurm validate JOB_YAML`: a sweep's every point (docs/sweeps.md)."""
    plan = plan_sweep(args.spec) if has_sweep(args.spec) else None
    if plan is not None:
        for point in plan.points:
            render(plan.spec(point))
        print(f"ok: {args.spec}: a sweep of {len(plan.points)} points in {plan.sweep_dir}"
              + (f", at most {plan.max_parallel} at once" if plan.max_parallel else ""))
        for point in plan.points:
            print(f"  {point.number:>3}  {point.name}")
        return exit_codes.OK
    spec = load_spec(args.spec)
    render(spec)  # the template must render too
    print(f"ok: {args.spec}")
    for line in summary(spec):
        print(f"  {line}")
    return exit_codes.OK


def run_render(args: argparse.Namespace) -> int:
    """`ftslurm render JOB_YAML [-o FILE]`: to stdout, side-effect free; to FILE, also the run
    directory made ready for `sbatch FILE` (`chain.run.prepare_for_sbatch`)."""
    script = render(load_spec(args.spec))
    if args.output is None:
        sys.stdout.write(script)
        return exit_codes.OK
    if args.output.is_dir():
        raise UsageError(f"-o {args.output}: is a directory; give a file name such as job.sbatch")
    if not args.output.parent.is_dir():
        raise UsageError(f"-o {args.output}: the directory {args.output.parent} does not exist")
    # The script first (to a temporary file beside it), so a place that cannot be written
    # leaves the run directory untouched; then the run directory; then the script in place.
    staged = args.output.with_name(f".{args.output.name}.rendering")
    try:
        write_atomic(staged, script, mode=0o755)
    except OSError as error:
        raise UsageError(f"-o {args.output}: cannot write the script: {error.strerror}") from None
    try:
        prepared, state, written = prepare_for_sbatch(args.spec)
        os.replace(staged, args.output)
    except OSError as error:
        raise UsageError(f"-o {args.output}: cannot write the script: {error.strerror}") from None
    finally:
        staged.unlink(missing_ok=True)
    run_dir = prepared.settings.run_dir
    print(f"wrote {args.output}; `sbatch {args.output}` starts (or joins) the run in {run_dir}",
          file=sys.stderr)
    if not written:
        print(f"  the run directory already holds this run ({state.run_status}, "
              f"{len(state.attempts)} attempt(s)); it was left as it is"
              + ("" if state.run_status is RunStatus.RUNNING else
                 ": a job submitted now is refused; `ftslurm submit --resume` continues it"),
              file=sys.stderr)
    return exit_codes.OK


__all__ = [
    "register",
    "run_render",
    "run_validate",
    "summary",
]
