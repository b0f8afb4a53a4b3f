"""Read ``configs/`` outside a Hydra app: the composed values of one option of a config group.

Every default is written once, in ``configs/`` (Hydra YAML). Hydra composes them for the command-line
apps; library code and tests that build a typed object without a Hydra app (``losses.build_algorithm``,
the tiny model spec, the eval and serve configs) read the same files here. :func:`compose_option`
follows an option's ``defaults:`` list the way Hydra does for entries of the same group
(``- base``, ``- eapo``, ``- base@algorithm`` from a ``# @package _global_`` file, ``- _self_``);
``tests/test_config_files.py`` proves it equals Hydra's composition for every option it is used on.
"""
from __future__ import annotations

import functools
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
GLOBAL_HEADER = "# @package _global_"


def merge(base: dict, over: dict) -> dict:
    """Hydra/OmegaConf merge: mappings merge key by key, anything else (lists included) is replaced."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _nest(package: str, tree: dict) -> dict:
    for part in reversed([p for p in package.split(".") if p]):
        tree = {part: tree}
    return tree


def _read(path: Path) -> tuple[dict, bool]:
    """(content, is_global) of one YAML file, parsed as Hydra parses it (OmegaConf's loader)."""
    from omegaconf import OmegaConf

    if not path.is_file():
        raise FileNotFoundError(f"no config file {path}")
    text = path.read_text()
    is_global = any(line.strip() == GLOBAL_HEADER for line in text.splitlines() if line.startswith("#"))
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    return content, is_global


def _compose(group: str, option: str, package: str) -> dict:
    """The global tree one option contributes when its package is ``package`` (dotted; "" = global)."""
    content, is_global = _read(CONFIG_DIR / group / f"{option}.yaml")
    if is_global:
        package = ""
    defaults = content.pop("defaults", [])
    if "_self_" not in defaults:
        defaults = [*defaults, "_self_"]
    tree: dict = {}
    for entry in defaults:
        if entry == "_self_":
            tree = merge(tree, _nest(package, content))
            continue
        if not isinstance(entry, str) or entry.startswith("/") or ":" in entry or entry.startswith("override"):
            raise ValueError(f"{group}/{option}.yaml: defaults entry {entry!r} is not supported here "
                             "(only options of the same group: '- name' or '- name@package')")
        name, _, at = entry.partition("@")
        child = ".".join(p for p in (package, at) if p)
        tree = merge(tree, _compose(group, name, child))
    return tree


@functools.lru_cache(maxsize=None)
def _compose_cached(group: str, option: str) -> dict:
    return _compose(group, option, group.replace("/", "."))


def compose_option(group: str, option: str) -> dict:
    """The ``group`` subtree of what Hydra composes for ``group=option`` (a fresh copy each call).

    Keys a ``# @package _global_`` option sets outside its group (w_reinf's ``rollout.reward_wrong``)
    are left out: see :func:`compose_option_global`.
    """
    node = compose_option_global(group, option)
    for part in group.split("/"):
        node = node.get(part, {})
    return node


def compose_option_global(group: str, option: str) -> dict:
    """Everything ``group=option`` contributes to the composed config (global tree, a fresh copy)."""
    import copy

    return copy.deepcopy(_compose_cached(group, option))


def options(group: str) -> list[str]:
    """Option names of a config group (its YAML files), sorted."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def read_file(relative: str) -> dict:
    """A whole config file (``"eval/eval.yaml"``), without its ``defaults`` list and ``hydra`` section."""
    content, _ = _read(CONFIG_DIR / relative)
    content.pop("defaults", None)
    content.pop("hydra", None)
    return content
