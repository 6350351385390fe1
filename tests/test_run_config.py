"""ch05/gpt_train.py --config FILE.yaml: presets, command-line overrides, clear errors, the saved run config."""

from __future__ import annotations

import argparse
import json

import pytest
import yaml
from conftest import REPO, load_script

from buildllm.run_config import (
    RunConfigError,
    config_differences,
    effective_config,
    parse_args_with_config,
    read_config,
    save_run_config,
)

CONFIGS = REPO / "ch05" / "configs"
PRESETS = sorted(CONFIGS.glob("*.yaml"))
TINY = {"emb_dim": 32, "n_layers": 1, "n_heads": 2, "context_length": 32, "batch_size": 4, "epochs": 1,
        "eval_freq": 2, "eval_iter": 1}


@pytest.fixture(scope="module")
def gpt_train():
    return load_script(REPO / "ch05" / "gpt_train.py", "gpt_train_for_configs")


def parse(gpt_train, argv: list[str]) -> argparse.Namespace:
    return parse_args_with_config(gpt_train.build_parser(), argv)


def write_yaml(path, settings: dict):
    path.write_text(yaml.safe_dump(settings), encoding="utf-8")
    return path


# --- The presets ------------------------------------------------------------------------------------------

def test_the_three_presets_are_there_and_documented():
    assert [p.name for p in PRESETS] == ["gpt2-124m-gpu.yaml", "the-verdict-book.yaml", "tinyshakespeare-cpu.yaml"]
    readme = (CONFIGS / "README.md").read_text(encoding="utf-8")
    for preset in PRESETS:
        assert preset.name in readme


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_every_preset_loads_and_every_key_is_an_option(gpt_train, preset):
    raw = yaml.safe_load(preset.read_text(encoding="utf-8"))
    settings = read_config(preset, gpt_train.build_parser())
    assert set(settings) == set(raw) and len(settings) >= 10
    args = parse(gpt_train, ["--config", str(preset)])
    for key, value in settings.items():
        assert getattr(args, key) == value, key


def test_book_preset_is_exactly_the_scripts_defaults(gpt_train):
    defaults = vars(gpt_train.build_parser().parse_args([]))
    book = vars(parse(gpt_train, ["--config", str(CONFIGS / "the-verdict-book.yaml")]))
    assert book.pop("config").endswith("the-verdict-book.yaml")
    defaults.pop("config")
    assert book == defaults
    # ... and it spells out the book's training settings rather than relying on them silently.
    listed = read_config(CONFIGS / "the-verdict-book.yaml", gpt_train.build_parser())
    assert {"data", "epochs", "lr", "weight_decay", "batch_size", "context_length", "model_size", "drop_rate",
            "train_ratio", "seed", "eval_freq", "eval_iter"} <= set(listed)


def test_cpu_preset_is_a_small_tinyshakespeare_run(gpt_train):
    args = parse(gpt_train, ["--config", str(CONFIGS / "tinyshakespeare-cpu.yaml")])
    assert args.data == "tinyshakespeare"
    model = gpt_train.build_model(args)
    non_embedding = sum(p.numel() for name, p in model.named_parameters() if "emb" not in name)
    assert non_embedding < 2_000_000  # the blocks are tiny; the tied 50304 x 128 embedding dominates
    assert args.max_steps * args.batch_size * args.context_length <= 400_000  # about one pass over the text
    assert (args.dtype, args.compile) == ("float32", None)  # nothing a CPU might lack
    assert "README.md" in (CONFIGS / "tinyshakespeare-cpu.yaml").read_text(encoding="utf-8")  # points at figures


def test_gpu_preset_is_gpt2_small_with_every_speed_option_and_says_it_is_unmeasured(gpt_train):
    args = parse(gpt_train, ["--config", str(CONFIGS / "gpt2-124m-gpu.yaml")])
    assert (args.model_size, args.emb_dim, args.n_layers, args.n_heads, args.context_length) == (
        "gpt2-small", None, None, None, 1024)
    assert args.fast and args.fused_adamw and args.dtype == "bfloat16" and args.compile == "inductor"
    assert args.lr_schedule == "cosine" and args.warmup_steps > 0 and 0 < args.min_lr < args.lr
    assert args.grad_clip == 1.0
    assert "측정하지 않았습니다" in (CONFIGS / "gpt2-124m-gpu.yaml").read_text(encoding="utf-8")


# --- Command line over file ------------------------------------------------------------------------------

def test_command_line_overrides_the_file(gpt_train, tmp_path):
    config = write_yaml(tmp_path / "run.yaml", {**TINY, "lr": "4e-4", "fast": True, "compile": True,
                                                "grad_clip": 1.0})
    args = parse(gpt_train, ["--config", str(config)])
    assert (args.lr, args.fast, args.compile, args.grad_clip, args.emb_dim) == (4e-4, True, "inductor", 1.0, 32)
    args = parse(gpt_train, ["--lr", "0.001", "--config", str(config), "--no-fast", "--no-compile", "--emb-dim", "64"])
    assert (args.lr, args.fast, args.compile, args.grad_clip, args.emb_dim) == (0.001, False, None, 1.0, 64)
    assert args.epochs == 1 and args.data == "the-verdict"  # from the file, and the default for what neither sets


def test_an_empty_config_changes_nothing(gpt_train, tmp_path):
    (tmp_path / "empty.yaml").write_text("# nothing yet\n", encoding="utf-8")
    args = vars(parse(gpt_train, ["--config", str(tmp_path / "empty.yaml")]))
    defaults = vars(gpt_train.build_parser().parse_args([]))
    assert {k: v for k, v in args.items() if k != "config"} == {k: v for k, v in defaults.items() if k != "config"}


# --- Clear errors --------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "message"), [
    ("batch_sise: 4\n", "unknown key 'batch_sise': not an option of this script. Did you mean batch_size?"),
    ("batch-size: 4\n", "unknown key 'batch-size': not an option of this script. Write batch_size"),
    ("learning_rate: 0.1\n", "unknown key 'learning_rate'"),
    ("resume: run/checkpoint.pth\n", "resume can only be given on the command line (--resume)"),
    ("overwrite: true\n", "overwrite can only be given on the command line"),
    ("lr: 0.1\nlr: 0.2\n", "'lr' is given twice (line 2); keep one."),
    ("fast: 1\n", "fast: a flag (--fast): write true or false, got 1."),
    ("epochs: null\n", "epochs: null is not a value here; remove the line to use the default (10)."),
    ("data: 2024\n", "data: takes text, got the number 2024; put it in quotes."),
    ("batch_size: true\n", "batch_size: takes one value, got True."),
    ("- lr\n", "expected a mapping of option names to values"),
    ("lr: [0.1\n", "is not valid YAML"),
])
def test_bad_config_files_name_the_key_and_the_file(gpt_train, tmp_path, capsys, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        parse(gpt_train, ["--config", str(config)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage:") and f"error: {config}" in err
    assert message in err
    with pytest.raises(RunConfigError, match="bad.yaml"):  # the reusable reader raises a UserError
        read_config(config, gpt_train.build_parser())


def test_a_missing_config_file(gpt_train, tmp_path, capsys):
    with pytest.raises(SystemExit):
        parse(gpt_train, ["--config", str(tmp_path / "nowhere.yaml")])
    assert f"--config {tmp_path / 'nowhere.yaml'}: no such file." in capsys.readouterr().err


@pytest.mark.parametrize(("key", "value", "flag_value"), [
    ("batch_size", 0, "0"), ("lr", -1.0, "-1.0"), ("lr", ".nan", "nan"), ("epochs", 2.5, "2.5"),
    ("train_ratio", 1.0, "1.0"), ("drop_rate", 1, "1"), ("device", "gpu", "gpu"), ("dtype", "float16", "float16"),
    ("lr_schedule", "linear", "linear"), ("min_lr", "-1e-3", "-1e-3"),
])
def test_a_bad_value_is_refused_like_the_same_flag(gpt_train, tmp_path, capsys, key, value, flag_value):
    config = tmp_path / "bad.yaml"
    config.write_text(f"{key}: {value}\n", encoding="utf-8")
    with pytest.raises(SystemExit):
        parse(gpt_train, [f"--{key.replace('_', '-')}={flag_value}"])
    flag_error = capsys.readouterr().err.strip().splitlines()[-1]
    with pytest.raises(SystemExit):
        parse(gpt_train, ["--config", str(config)])
    file_error = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{config}: {key}: " in file_error
    # The same check: argparse says "must be a whole number >= 1, got 0" for both (choices are worded by us).
    reason = flag_error.split(f"argument --{key.replace('_', '-')}: ", 1)[-1]
    if "invalid choice" not in reason:
        assert file_error.endswith(reason), (flag_error, file_error)
    else:
        assert "must be one of" in file_error


def test_a_yaml_float_without_a_dot_still_reads_as_a_number(gpt_train, tmp_path):
    # YAML 1.1 reads 4e-4 as text; the option's own type turns it into the number, as on the command line.
    config = tmp_path / "lr.yaml"
    config.write_text("lr: 4e-4\nmin_lr: 1.0e-5\n", encoding="utf-8")
    assert read_config(config, gpt_train.build_parser()) == {"lr": 4e-4, "min_lr": 1e-5}


# --- The saved run config and --resume -----------------------------------------------------------------------

def test_saved_run_config_reads_back_as_the_same_settings(gpt_train, tmp_path):
    config = write_yaml(tmp_path / "run.yaml", {**TINY, "fast": True, "compile": "aot_eager", "tensorboard": "tb"})
    args = parse(gpt_train, ["--config", str(config), "--lr", "0.002"])
    saved = save_run_config(args, gpt_train.build_parser(), tmp_path / "out" / "run_config.yaml",
                            "ch05/gpt_train.py")
    text = saved.read_text(encoding="utf-8")
    assert text.startswith("# The settings of this run of ch05/gpt_train.py, from --config")
    assert not list((tmp_path / "out").glob(".*.tmp"))  # written atomically
    again = parse(gpt_train, ["--config", str(saved)])
    assert effective_config(again, gpt_train.build_parser()) == effective_config(args, gpt_train.build_parser())
    assert again.lr == 0.002 and again.compile == "aot_eager"
    assert "resume" not in yaml.safe_load(text) and "config" not in yaml.safe_load(text)


def test_config_differences():
    assert config_differences({"lr": 0.1, "epochs": 2}, {"lr": 0.2, "epochs": 3, "fast": True}, ignore=("epochs",)) \
        == ["lr 0.1 -> 0.2", "fast (unset) -> True"]
    assert config_differences({"lr": 0.1}, {"lr": 0.1}) == []


@pytest.fixture(scope="module")
def config_run(gpt_train, tmp_path_factory):
    """A tiny run of 2 steps from a config file, in-process; its folder and what it printed."""
    folder = tmp_path_factory.mktemp("config_run")
    config = write_yaml(folder / "tiny.yaml", {**TINY, "max_steps": 2, "output_dir": str(folder / "run")})
    assert gpt_train.main(["--config", str(config), "--lr", "0.0005"]) == 0
    return folder, config


def test_a_run_saves_its_effective_config(config_run, gpt_train):
    folder, config = config_run
    saved = yaml.safe_load((folder / "run" / "run_config.yaml").read_text(encoding="utf-8"))
    assert saved["emb_dim"] == 32 and saved["max_steps"] == 2  # from the file
    assert saved["lr"] == 0.0005  # the command line won
    assert saved["data"] == "the-verdict" and saved["seed"] == 123  # defaults, written out
    metrics = json.loads((folder / "run" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["args"]["config"] == str(config) and metrics["global_steps"] == 2
    assert saved == effective_config(argparse.Namespace(**metrics["args"]), gpt_train.build_parser())


def test_resume_warns_when_the_settings_differ(config_run, gpt_train, capsys):
    folder, config = config_run
    checkpoint = str(folder / "run" / "checkpoint.pth")
    capsys.readouterr()
    # Longer training only (max_steps) is what resuming is for: no warning.
    assert gpt_train.main(["--config", str(config), "--lr", "0.0005", "--max-steps", "3", "--resume", checkpoint]) == 0
    assert "Warning" not in capsys.readouterr().err
    # Another learning rate and clipping: named, with the file they differ from.
    assert gpt_train.main(["--config", str(config), "--lr", "0.001", "--grad-clip", "0.5", "--max-steps", "4",
                           "--resume", checkpoint]) == 0
    err = capsys.readouterr().err
    assert f"Warning: resuming with settings that differ from {folder / 'run' / 'run_config.yaml'}" in err
    assert "lr 0.0005 -> 0.001; grad_clip None -> 0.5" in err
    # The folder's run_config.yaml now holds the settings of the latest part of the run.
    assert yaml.safe_load((folder / "run" / "run_config.yaml").read_text(encoding="utf-8"))["lr"] == 0.001


def test_an_existing_run_config_alone_counts_as_a_run(config_run, gpt_train, tmp_path, capsys):
    (tmp_path / "run_config.yaml").write_text("lr: 0.1\n", encoding="utf-8")  # a run killed before its checkpoint
    assert gpt_train.main(["--output-dir", str(tmp_path), "--max-steps", "1"]) == 2
    assert "already holds a run (run_config.yaml)" in capsys.readouterr().err
