"""What a job spec may not ask for, because it would break the self-chaining run.

Three lists, each entry with the reason and what to write instead: environment variables `env:`
may not set (`env_name_problem`), `sbatch:` options that stop the chain (`REFUSED_SBATCH_OPTIONS`,
with sbatch's short forms and abbreviations, `sbatch_option_problem`), and the soft bound above
which `nodes` gets a warning (`NODES_WARNING_ABOVE`). docs/job-spec.md states every rule.
"""

from __future__ import annotations

from ftslurm import env_vars

#: Above this many nodes `ftslurm validate` warns (not an error: the cluster's size is not known
#: at validate time, and a job larger than the cluster waits in the queue forever).
NODES_WARNING_ABOVE = 4096
#: A sweep of more points than this is refused: split it (each point is a run dir and a chain).
MAX_SWEEP_POINTS = 1000

_FTSLURM_SETS = "ftslurm sets this variable itself; remove it from env"
_LAUNCHER_SETS = ("ftslurm sets this variable itself (the launcher gives each rank its own); "
                  "remove it from env")

#: Variables `env:` may not set: the reason, and the key to use instead.
REFUSED_ENV: dict[str, str] = {
    env_vars.FINISHED_FLAG_FILE: f"{_FTSLURM_SETS} (the flag file is autoresume.flag_file)",
    **{name: _LAUNCHER_SETS for name in env_vars.RANK_VARIABLES},
    "PATH": "env values are literal, so this would replace PATH and hide srun, python and "
            "ftslurm from the job and the chain; put `export PATH=/my/bin:$PATH` in `setup:`, or "
            "give the interpreter with the `python:` key",
    "LD_PRELOAD": "it would be loaded into sbatch, srun, the launcher and the chain as well as "
                  "into the ranks; set it inside the program (e.g. a wrapper script as `command:`)",
    "PYTHONHOME": "it would break the interpreter that runs the launcher and the chain; choose "
                  "the interpreter with the `python:` key",
}

#: Prefixes of variables `env:` may not set: the reason, and the key to use instead.
REFUSED_ENV_PREFIXES: dict[str, str] = {
    env_vars.FTSLURM_PREFIX:
        f"{_FTSLURM_SETS} (ftslurm's variables pass the run's state to the job)",
    env_vars.SLURM_PREFIX:
        "SLURM sets SLURM_* variables for the job and srun reads them; use `sbatch:` or "
        "`srun_args:` options instead",
    "SLURMD_": "slurmd sets SLURMD_* variables for the job; remove it from env",
    "SBATCH_": "sbatch reads SBATCH_* variables as options, also when the chain submits the next "
               "attempt; use `sbatch:` options instead",
    "SRUN_": "srun reads SRUN_* variables as options of the launch step; use `srun_args:` instead",
    env_vars.TORCHELASTIC_PREFIX:
        "the launcher (torch elastic) sets TORCHELASTIC_* variables itself; use "
        "`launcher_args:` or `fault_tolerance:` instead",
}


def env_name_problem(name: str) -> str | None:
    """Why `env:` may not set the variable `name`, or None when it may."""
    if name in REFUSED_ENV:
        return REFUSED_ENV[name]
    for prefix, reason in REFUSED_ENV_PREFIXES.items():
        if name.startswith(prefix):
            return reason
    return None


_REQUEUE = ("the chain handles requeued and preempted attempts itself and manages the job's "
            "requeue setting; remove it")

#: sbatch options that would break the chain of attempts, with the reason (checked after
#: MANAGED_SBATCH_OPTIONS, the options ftslurm writes itself from a spec key).
REFUSED_SBATCH_OPTIONS: dict[str, str] = {
    "array": "an array job runs several copies of the training at once and its tasks never "
             "chain; submit one spec per run",
    "hold": "a held job never starts on its own, so the chain stalls; remove it (hold the "
            "queued attempt with `scontrol hold` if you must)",
    "dependency": "the chain submits each attempt itself, and an attempt whose dependency fails "
                  "waits in the queue forever; remove it",
    "export": "the job must see the environment the chain runs in (with NONE or a list it "
              "cannot run ftslurm or submit the next attempt); set variables with `env:`",
    "requeue": _REQUEUE,
    "no-requeue": _REQUEUE,
    "wait": "sbatch would block until the job ends, so each attempt's in-job submission of the "
            "next one would hold its allocation for the rest of the chain; remove it",
    "test-only": "nothing would be submitted, so the chain never starts; use `ftslurm submit "
                 "--dry-run` or `ftslurm render` to check a spec",
}

#: sbatch's one-letter options (`man sbatch`) and their long names; `sbatch:` takes long names.
SBATCH_SHORT_OPTIONS: dict[str, str] = {
    "A": "account", "a": "array", "B": "extra-node-info", "b": "begin", "C": "constraint",
    "c": "cpus-per-task", "D": "chdir", "d": "dependency", "e": "error", "F": "nodefile",
    "G": "gpus", "H": "hold", "h": "help", "i": "input", "J": "job-name", "k": "no-kill",
    "L": "licenses", "M": "clusters", "m": "distribution", "N": "nodes", "n": "ntasks",
    "O": "overcommit", "o": "output", "p": "partition", "Q": "quiet", "q": "qos",
    "S": "core-spec", "s": "oversubscribe", "t": "time", "V": "version", "v": "verbose",
    "W": "wait", "w": "nodelist", "x": "exclude",
}

#: Real sbatch options that are also the start of a longer managed or refused name (so they are
#: not abbreviations of it): `--gpus` is not `--gpus-per-node`.
_FULL_NAMES_THAT_ARE_PREFIXES = frozenset({"gpus"})


def sbatch_option_problem(option: str, managed: dict[str, str]) -> str | None:
    """Why the `sbatch:` option `option` (without dashes) is refused, or None.

    `managed` maps the options ftslurm writes itself to the spec key to use instead. One-letter
    options are read as sbatch's short forms (`H` is `--hold`); a prefix of a managed or refused
    name is refused because sbatch reads an unambiguous prefix as that option (`--arr` is
    `--array`).
    """
    if option in SBATCH_SHORT_OPTIONS:
        long = SBATCH_SHORT_OPTIONS[option]
        why = _long_option_problem(long, managed)
        return f"-{option} is sbatch's short form of --{long}: " + (
            why or f"write the long name `{long}:`"
        )
    if option in managed or option in REFUSED_SBATCH_OPTIONS:
        return _long_option_problem(option, managed)
    if option not in _FULL_NAMES_THAT_ARE_PREFIXES:
        for name in (*managed, *REFUSED_SBATCH_OPTIONS):
            if name.startswith(option):
                return (f"sbatch reads --{option} as an abbreviation of --{name}; write the "
                        "option's full name as in `man sbatch`")
    return None


def _long_option_problem(option: str, managed: dict[str, str]) -> str | None:
    if option in managed:
        return f"ftslurm writes --{option} itself from the spec key `{managed[option]}`; set " \
               "that instead"
    if option in REFUSED_SBATCH_OPTIONS:
        return f"--{option} breaks the chain of attempts: {REFUSED_SBATCH_OPTIONS[option]}"
    return None


__all__ = [
    "MAX_SWEEP_POINTS",
    "NODES_WARNING_ABOVE",
    "REFUSED_ENV",
    "REFUSED_ENV_PREFIXES",
    "REFUSED_SBATCH_OPTIONS",
    "SBATCH_SHORT_OPTIONS",
    "env_name_problem",
    "sbatch_option_problem",
]
