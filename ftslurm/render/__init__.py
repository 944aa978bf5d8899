"""JobSpec -> script text: the sbatch script, the local backend's script, and shell quoting.

`script` (templates from `sbatch_templates/` and their placeholders), `local_script` (the same
attempt as a plain bash script for the local backend), `hooks` (the chain-start/chain-end lines
every script carries) and `quoting` (the one place values are quoted for bash and for sbatch).
`quoting` imports nothing from ftslurm, so the spec validator can ask it what a value can hold.
"""

from ftslurm.render.script import (
    PLACEHOLDERS,
    ScriptTemplate,
    TemplateError,
    ft_config_text,
    launcher_command,
    prepare_run_dir,
    render,
    srun_options,
)

__all__ = [
    "PLACEHOLDERS",
    "ScriptTemplate",
    "TemplateError",
    "ft_config_text",
    "launcher_command",
    "prepare_run_dir",
    "render",
    "srun_options",
]
