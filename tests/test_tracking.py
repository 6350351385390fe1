"""Experiment tracking in ch05/gpt_train.py: Weights & Biases in offline mode (no network, no login) logs what
TensorBoard logs; a missing wandb package is a clear error."""

from __future__ import annotations

import json
import re
import struct
import sys

import pytest
from conftest import REPO, run_script

from buildllm.cli import UserError
from buildllm.speed import make_lr_schedule
from buildllm.tracking import log_to_all, start_wandb

TRAIN = str(REPO / "ch05" / "gpt_train.py")
TINY = ["--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "32", "--batch-size", "4",
        "--epochs", "1", "--eval-freq", "2", "--eval-iter", "1", "--max-steps", "3", "--no-checkpoint"]
# Every connection goes to a closed local port: a machine without network, whatever this one has.
NO_NETWORK = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9",
              "HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9", "no_proxy": "", "NO_PROXY": ""}


def read_wandb_records(path) -> list:
    """The protobuf records of a wandb run file (run-ID.wandb): a 7-byte header, then LevelDB-style log blocks."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a wandb run file"
    block, pos, pieces, records = 32 * 1024, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room for a chunk header: the rest of the block is padding
            pos += block - pos % block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 2):  # a whole record, or the first piece of one
            pieces = chunk
        elif kind in (3, 4):  # a middle or the last piece
            pieces += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
    return records


@pytest.mark.script
def test_wandb_offline_run_logs_the_same_metrics_without_network(tmp_path):
    pytest.importorskip("wandb", reason="wandb is in requirements.txt; pip install wandb")
    env = {**NO_NETWORK, "WANDB_API_KEY": "", "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
           "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"), "WANDB_DATA_DIR": str(tmp_path / "wandb-data")}
    proc = run_script([TRAIN, *TINY, "--output-dir", "run", "--wandb", "--wandb-mode", "offline",
                       "--wandb-run-name", "tiny", "--lr-schedule", "cosine"],
                      cwd=tmp_path, env=env)
    assert "wandb sync" in proc.stdout + proc.stderr  # wandb tells how to upload it later
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, "the offline run goes under --output-dir/wandb/"
    records = read_wandb_records(next(runs[0].glob("run-*.wandb")))

    history = {}  # step -> {metric: value}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            items = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                     for item in record.history.item}
            history[items["_step"]] = {k: v for k, v in items.items() if not k.startswith("_")}
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert sorted(history) == [1, 2, 3]
    assert [history[s]["loss/train_step"] for s in (1, 2, 3)] == pytest.approx(metrics["step_losses"], rel=1e-12)
    # The evaluations (0-based steps 0 and 2, printed as "스텝 0" and "스텝 2") are logged at optimizer steps 1 and 3.
    printed = re.findall(r"스텝 +(\d+) \| 훈련 손실 ([\d.]+) \| 검증 손실 ([\d.]+)", proc.stdout)
    assert [int(step) for step, _, _ in printed] == [0, 2]
    for step, train_loss, val_loss in printed:
        logged = history[int(step) + 1]
        assert (logged["loss/train"], logged["loss/val"]) == pytest.approx((float(train_loss), float(val_loss)),
                                                                         abs=5e-4)
    # The same names TensorBoard gets (one log_scalar feeds both), and the cosine schedule's rates.
    assert set().union(*history.values()) == {"loss/train_step", "lr", "loss/train", "loss/val"}
    schedule = make_lr_schedule(4e-4, 3, 0, 0.0, "cosine")
    assert [history[s]["lr"] for s in (1, 2, 3)] == pytest.approx([schedule(s - 1) for s in (1, 2, 3)])

    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.display_name == "tiny" and run_record.project == "buildllm-ch05"
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["emb_dim"] == 32 and config["lr_schedule"] == "cosine" and config["wandb_mode"] == "offline"
    assert config["model"]["emb_dim"] == 32 and config["world_size"] == 1
    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update({item.key: json.loads(item.value_json) for item in record.summary.update})
    assert summary["final_val_loss"] == pytest.approx(metrics["final_val_loss"], rel=1e-12)
    assert summary["global_steps"] == 3


@pytest.mark.script
def test_wandb_from_a_config_file_with_wandb_mode_from_the_environment(tmp_path):
    pytest.importorskip("wandb", reason="wandb is in requirements.txt; pip install wandb")
    env = {**NO_NETWORK, "WANDB_API_KEY": "", "WANDB_MODE": "offline", "WANDB_CONFIG_DIR": str(tmp_path / "cfg"),
           "WANDB_CACHE_DIR": str(tmp_path / "cache"), "WANDB_DATA_DIR": str(tmp_path / "data")}
    (tmp_path / "tracked.yaml").write_text("wandb: true\nwandb_project: my-experiments\n", encoding="utf-8")
    run_script([TRAIN, *TINY, "--max-steps", "1", "--config", "tracked.yaml", "--output-dir", "run"],
               cwd=tmp_path, env=env)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    records = read_wandb_records(next(runs[0].glob("run-*.wandb")))
    run_record = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run_record.project == "my-experiments"
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["wandb"] is True and config["wandb_mode"] is None and config["max_steps"] == 1


def test_wandb_missing_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(UserError, match=r"--wandb needs the wandb package: pip install wandb"):
        start_wandb("p", None, "offline", tmp_path, config={})


def test_wandb_bad_mode_is_refused(tmp_path):
    with pytest.raises(UserError, match="wandb mode must be one of online, offline, disabled"):
        start_wandb("p", None, "sometimes", tmp_path, config={})


def test_log_to_all_calls_every_logger():
    seen_a, seen_b = [], []
    both = log_to_all(lambda *a: seen_a.append(a), None, lambda *a: seen_b.append(a))
    both("loss/train", 1.5, 7)
    assert seen_a == seen_b == [("loss/train", 1.5, 7)]
    assert log_to_all(None, None) is None
