"""Training settings from a YAML file: ``ch05/gpt_train.py --config FILE.yaml`` (chapter 5).

A config file is a YAML mapping whose keys are a script's option names in their
``dest`` form (``batch_size`` for ``--batch-size``)::

    data: tinyshakespeare
    epochs: 2
    lr: 1.0e-3
    fast: true

- Every value is checked by the very ``type=`` / ``choices=`` of the option it
  sets (`buildllm.cli`'s number types), so a value in a file is refused exactly
  when the same value on the command line would be. A flag (``--fast``) takes
  ``true``/``false``; ``null`` means "not set" for options without a default.
- An unknown key, a misspelt one, a key given twice or a bad value is an error
  naming the key and the file.
- Options given on the command line override the file (`parse_args_with_config`
  makes the file's values the parser's defaults, then parses the command line).
- `save_run_config` writes the settings a run really used (file + command line)
  as YAML that `--config` reads back; `config_differences` says what changed
  between two such files (``--resume`` warns about it).

Only the standard library and PyYAML are used, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import difflib
import os
from pathlib import Path

from .cli import UserError

# Options that act on one invocation rather than describe a run: never read from a file.
COMMAND_LINE_ONLY = ("config", "resume", "overwrite", "help")


class RunConfigError(UserError):
    """A config file that cannot be used (missing, not YAML, unknown key, bad value); the message names the key."""


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE.yaml`` (read by `parse_args_with_config`)."""
    parser.add_argument("--config", metavar="FILE.yaml",
                        help="read settings from this YAML file (keys are option names with _ instead of -, e.g. "
                             "batch_size: 8); options given on the command line override it")


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The parser's options by dest (the keys a config file may use), in the order of --help."""
    options = {}
    for action in parser._actions:
        if action.option_strings:
            options.setdefault(action.dest, action)  # --compile, not the --no-compile that shares its dest
    return options


def _is_flag(action: argparse.Action) -> bool:
    """True for options that take no value (store_true, --x/--no-x)."""
    return action.nargs == 0 and isinstance(action.const, bool) or isinstance(action, argparse.BooleanOptionalAction)


def _load_yaml(path: Path) -> dict:
    """The mapping in YAML file `path`; RunConfigError if it is missing, not YAML, or repeats a key."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        """yaml.safe_load, but a key given twice is an error instead of the last one silently winning."""

    def construct_mapping(loader, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if isinstance(key, (list, dict)):
                continue  # unhashable: PyYAML's own construct_mapping below says so
            if key in seen:
                raise RunConfigError(f"{path}: {key!r} is given twice (line {key_node.start_mark.line + 1}); keep one.")
            seen.add(key)
        return loader.construct_mapping(node, deep=deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_mapping)
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.load(f, Loader=UniqueKeyLoader)  # errors name the file and line
    except FileNotFoundError:
        raise RunConfigError(f"--config {path}: no such file.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RunConfigError(f"--config {path}: cannot read it ({exc}).") from None
    except yaml.YAMLError as exc:
        raise RunConfigError(f"{path} is not valid YAML: {exc}") from None
    if data is None:
        return {}  # an empty file (or only comments): nothing to set
    if not isinstance(data, dict):
        raise RunConfigError(f"{path}: expected a mapping of option names to values (key: value lines), "
                             f"got a {type(data).__name__}.")
    return data


def _unknown_key_message(key, options: dict, path: Path) -> str:
    if not isinstance(key, str):
        return f"{path}: key {key!r} is not an option name (keys are option names such as batch_size)."
    if key in COMMAND_LINE_ONLY:
        return f"{path}: {key} can only be given on the command line (--{key}), not in a config file."
    hint = ""
    if key.replace("-", "_") in options:
        hint = f" Write {key.replace('-', '_')} (option names with _ instead of -)."
    else:
        close = difflib.get_close_matches(key, list(options), n=1)
        if close:
            hint = f" Did you mean {close[0]}?"
    return f"{path}: unknown key {key!r}: not an option of this script.{hint} See --help for the options."


def _convert(action: argparse.Action, value, where: str):
    """`value` from YAML checked and converted as the option's own type/choices would; RunConfigError if bad."""
    if _is_flag(action):
        if not isinstance(value, bool):
            raise RunConfigError(f"{where}: a flag ({action.option_strings[0]}): write true or false, got {value!r}.")
        return value
    if value is None:
        if action.default is None:
            return None
        raise RunConfigError(f"{where}: null is not a value here; remove the line to use the default "
                             f"({action.default!r}).")
    if action.nargs == "?" and isinstance(value, bool):  # e.g. --compile [BACKEND]: true = the flag alone
        return action.const if value else None
    if isinstance(value, (bool, list, dict)):
        raise RunConfigError(f"{where}: takes one value, got {value!r}.")
    if action.type is None and not isinstance(value, str):
        raise RunConfigError(f"{where}: takes text, got the number {value!r}; put it in quotes.")
    converted = value
    if action.type is not None:
        try:
            converted = action.type(str(value))  # the very check the command line makes
        except (argparse.ArgumentTypeError, ValueError, TypeError) as exc:
            raise RunConfigError(f"{where}: {exc}") from None
    if action.choices is not None and converted not in action.choices:
        raise RunConfigError(f"{where}: must be one of {', '.join(map(str, action.choices))}; got {value!r}.")
    return converted


def read_config(path: str | os.PathLike, parser: argparse.ArgumentParser) -> dict:
    """The settings in config file `path`, checked against `parser`'s options: {dest: value}.

    Raises `RunConfigError` naming the key and the file for an unknown key, a key
    given twice, or a value the option's type or choices refuse.
    """
    path = Path(path)
    options = _options(parser)
    settings = {}
    for key, value in _load_yaml(path).items():
        if key not in options or key in COMMAND_LINE_ONLY:
            raise RunConfigError(_unknown_key_message(key, options, path))
        settings[key] = _convert(options[key], value, f"{path}: {key}")
    return settings


def parse_args_with_config(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> argparse.Namespace:
    """Parse `argv` like ``parser.parse_args``, with ``--config FILE`` supplying values the command line leaves out.

    The file's settings become the parser's defaults, so any option on the command
    line wins. A bad file ends the program like a bad option does (usage, ``error:
    ...``, status 2).
    """
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    if known.config is not None:
        try:
            parser.set_defaults(**read_config(known.config, parser))
        except RunConfigError as exc:
            parser.error(str(exc))
    return parser.parse_args(argv)


def effective_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The settings of a run (every option a config file may set) from the parsed `args`, in --help order."""
    return {dest: getattr(args, dest) for dest in _options(parser)
            if dest not in COMMAND_LINE_ONLY and hasattr(args, dest)}


def save_run_config(args: argparse.Namespace, parser: argparse.ArgumentParser, path: str | os.PathLike,
                    script: str) -> Path:
    """Write the settings a run used (config file + command line) to `path` atomically, as YAML --config reads."""
    import yaml

    from .files import atomic_write_text

    source = f"--config {args.config} and the command line" if getattr(args, "config", None) else \
        "the script's defaults and the command line"
    header = (f"# The settings of this run of {script}, from {source} (the command line wins).\n"
              f"# Run them again: python {script} --config {Path(path).name} --output-dir OTHER_FOLDER\n")
    body = yaml.safe_dump(effective_config(args, parser), sort_keys=False, allow_unicode=True,
                          default_flow_style=False)
    return atomic_write_text(header + body, path)


def read_saved_config(path: str | os.PathLike) -> dict | None:
    """The settings saved by `save_run_config` at `path`, unchecked; None if there is no such file or it is unreadable."""
    try:
        data = _load_yaml(Path(path))
    except RunConfigError:
        return None
    return data


def config_differences(old: dict, new: dict, ignore: tuple[str, ...] = ()) -> list[str]:
    """``key old -> new`` for every setting that differs between two configs (keys in `ignore` left out)."""
    missing = object()

    def show(value) -> str:
        return "(unset)" if value is missing else repr(value)

    changed = []
    for key in list(old) + [k for k in new if k not in old]:
        before, after = old.get(key, missing), new.get(key, missing)
        if key not in ignore and before != after:
            changed.append(f"{key} {show(before)} -> {show(after)}")
    return changed
