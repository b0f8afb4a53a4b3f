"""The command line of every Hydra app (``pipeline.run``, ``pipeline.study``, ``pipeline.bench``, ``serve.run``,
``evaluation.run``): a configuration mistake ends the process with one line ``error: ...`` on stderr and exit
code 2, before anything starts.

Hydra reports a misspelt key (``trainer.totl_steps=5``), an unknown option of a config group
(``algorithm=nope``) or an override that does not parse with several lines and exit code 1, and an optional
group (``preset=papr_qwen``) silently composes without the missing option. :func:`app` (used instead of
``hydra.main``) first composes the command line's overrides with Hydra's compose API on the same config
(~0.2 s) and turns each of those into one line that names the key and the closest valid ones, or, for a
renamed key, what it became (``core.typed.RENAMED_KEYS``). Everything else is Hydra's as before
(``--cfg job``, ``--help``, multirun). :func:`fail` is the one way an app ends on bad input.
"""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable

from core.typed import closest, unknown_key_message

#: Options of a config group that are not meant to be selected (``algorithm/base.yaml``: the shared keys).
NOT_OPTIONS = ("base",)


def fail(message: str) -> None:
    """End the process on bad input: ``error: <message>`` (its last line) on stderr, exit code 2."""
    lines = str(message).strip().splitlines()
    print(f"error: {lines[-1] if lines else message}", file=sys.stderr, flush=True)
    sys.exit(2)


def app(config_dir: str, config_name: str) -> Callable:
    """``hydra.main`` for ``config_dir``/``config_name`` (an absolute directory), with the command line checked
    first (:func:`command_line_problem`): a problem ends the process through :func:`fail`."""
    import hydra

    def decorate(task: Callable) -> Callable:
        hydra_main = hydra.main(config_path=config_dir, config_name=config_name, version_base=None)(task)

        @functools.wraps(task)
        def main():
            problem = command_line_problem(config_dir, config_name, sys.argv[1:])
            if problem:
                fail(problem)
            return hydra_main()

        return main

    return decorate


def command_line_problem(config_dir: str, config_name: str, argv: list[str]) -> str | None:
    """What is wrong with the overrides in ``argv`` (Hydra's command-line syntax) for this config, in one line
    naming the key, or None. Not checked: help/info/completion requests, multirun sweeps and another config
    (``--config-name``/``--config-path``/``--config-dir``), which Hydra handles as before."""
    from hydra._internal.utils import get_args_parser

    args, _ = get_args_parser().parse_known_args(argv)
    if (args.help or args.hydra_help or args.info or args.shell_completion or args.multirun
            or args.config_name or args.config_path or args.config_dir):
        return None
    overrides = list(args.overrides)
    return _parse_problem(overrides) or _group_problem(config_dir, overrides) or \
        _compose_problem(config_dir, config_name, overrides)


def _parse(override: str):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides([override])[0]


def _parse_problem(overrides: list[str]) -> str | None:
    from hydra.errors import OverrideParseException

    for override in overrides:
        try:
            _parse(override)
        except OverrideParseException as err:
            return f"{override}: not a valid override ({str(err).splitlines()[0]})"
    return None


def group_options(config_dir: str, group: str) -> list[str]:
    """Option names of config group ``group`` (its YAML files), :data:`NOT_OPTIONS` left out."""
    folder = os.path.join(config_dir, group)
    return sorted(name[:-5] for name in os.listdir(folder) if name.endswith(".yaml") and name[:-5] not in NOT_OPTIONS)


def _group_problem(config_dir: str, overrides: list[str]) -> str | None:
    """``group=option`` whose option does not exist (Hydra skips a missing ``optional`` one without a word)."""
    for override in overrides:
        parsed = _parse(override)
        group, value = parsed.key_or_group, parsed.value()
        if parsed.is_delete() or group.startswith("hydra") or not isinstance(value, str):
            continue
        if os.path.isdir(os.path.join(config_dir, group)) and not os.path.isfile(
                os.path.join(config_dir, group, f"{value}.yaml")):
            options = group_options(config_dir, group)
            near = closest(value, options)
            hint = f"did you mean {' or '.join(near)}? " if near else ""
            return f"{group}={value}: no such option of {group}; {hint}options: {', '.join(options)}"
    return None


def _compose(config_dir: str, config_name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir, version_base=None):
        return compose(config_name=config_name, overrides=overrides)


def _keys_under(tree: dict, parent: str) -> list[str] | None:
    """Dotted keys of the mapping at ``parent`` ("" = the top) of ``tree``, or None if it is not a mapping."""
    node = tree
    for part in [p for p in parent.split(".") if p]:
        node = node.get(part) if isinstance(node, dict) else None
    if not isinstance(node, dict):
        return None
    return [f"{parent}.{k}" if parent else str(k) for k in node]


def _compose_problem(config_dir: str, config_name: str, overrides: list[str]) -> str | None:
    """Compose; an unknown key names itself and the closest valid keys (composed without it)."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf

    try:
        _compose(config_dir, config_name, overrides)
        return None
    except HydraException as err:
        key = getattr(err.__cause__, "full_key", None) or _culprit(config_dir, config_name, overrides)
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        if not key:
            return " ".join(lines)
        others = [o for o in overrides if _parse(o).key_or_group != key]
        try:
            tree = OmegaConf.to_container(_compose(config_dir, config_name, others), resolve=False)
        except HydraException:
            tree = OmegaConf.to_container(_compose(config_dir, config_name, []), resolve=False)
        tree.pop("hydra", None)
        siblings = _keys_under(tree, key.rsplit(".", 1)[0] if "." in key else "")
        if siblings is None or key in siblings:
            return f"{key}: {' '.join(lines)}"
        return f"{key}: {unknown_key_message(key, siblings)}"


def _culprit(config_dir: str, config_name: str, overrides: list[str]) -> str | None:
    """Key of the first override whose addition makes composition fail (error path only: one compose each)."""
    from hydra.errors import HydraException

    for i in range(len(overrides)):
        try:
            _compose(config_dir, config_name, overrides[: i + 1])
        except HydraException:
            return _parse(overrides[i]).key_or_group
    return None
