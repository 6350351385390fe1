"""Fault injection for every loader: truncated, corrupt, wrong-format, malicious, missing-key, extra-key, unreadable.

Loaders: model files and training checkpoints (`buildllm.checkpoints`, also through
`load_classifier`, `load_base_model` and the scripts), Hugging Face safetensors and
OpenAI's TensorFlow checkpoint (`buildllm.gpt2`), and GGUF (`buildllm.gguf_llama`).
Each must raise its one documented error type with a message that names the file and
says what to do, never PyTorch's advice to pass ``weights_only=False`` (which would run
the attacker's code), and a malicious pickle must never run. Names follow the classes of
issue 15: ``test_traceback__*`` (a crash instead of a clear error) and ``test_silent__*``
(a wrong model accepted).
"""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import pytest
import torch
from conftest import REPO, load_script, make_unreadable

from buildllm import gpt2, sources
from buildllm.checkpoints import (
    ModelFileError,
    load_checkpoint,
    read_model_file,
    save_checkpoint,
    save_model,
)
from buildllm.classification import load_classifier
from buildllm.gguf_llama import GGUFError, read_llama_gguf
from buildllm.llama import LlamaModel, load_weights_into_llama
from buildllm.model import GPTModel
from buildllm.pretrained import load_base_model
from buildllm.sources import WeightsError
from buildllm.trainer import TrainingState

TINY = {"vocab_size": 50257, "context_length": 8, "emb_dim": 8, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
        "qkv_bias": True}
KINDS = ("truncated", "corrupt", "wrong_format", "malicious_pickle", "missing_key", "extra_key", "unreadable")
MARKER = "buildllm-pwned-marker"


class Payload:
    """A pickle that would create MARKER (in the current folder) if it were ever unpickled with code execution."""

    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def unreadable_link(folder: Path, name: str, good: Path) -> Path:
    """A path to a copy of `good` that exists but cannot be opened."""
    path = folder / name
    path.write_bytes(good.read_bytes())
    return make_unreadable(path)


def spoil(path: Path, kind: str, seed: int, keep: int = 0) -> Path:
    """Damage the file at `path` as `kind` says; return the path to load (another one for "unreadable").

    "corrupt" keeps the first `keep` bytes (a valid header) and replaces the rest with random bytes;
    "wrong_format" and "malicious_pickle" replace the file with a pickle; key kinds leave it as written.
    """
    data = path.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        path.write_bytes(data[:keep] + random.Random(seed).randbytes(len(data) - keep))
    elif kind in ("wrong_format", "malicious_pickle"):
        path.write_bytes(pickle.dumps(Payload() if kind == "malicious_pickle" else {"not": "a weights file"}))
    elif kind == "unreadable":
        good = path.with_name("good" + path.suffix)
        path.rename(good)
        return unreadable_link(path.parent, path.name, good)
    return path


def check_clear(exc: BaseException, path: Path) -> str:
    """The message names the file, says something to do, and carries no unsafe advice or traceback."""
    message = str(exc)
    assert path.name in message, message
    assert "weights_only=False" not in message and "weights_only" not in message.replace("weights_only=True", "")
    assert "Traceback" not in message
    assert not Path(MARKER).exists()
    return message


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a malicious pickle would drop its marker


# --- model files and checkpoints (torch.load with weights_only=True) --------------------------------


@pytest.fixture(scope="module")
def good_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("good")
    torch.manual_seed(0)
    model = GPTModel(TINY)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.zeros(1, 4, dtype=torch.long)).sum().backward()
    optimizer.step()
    save_model(model, folder / "model.pth", meta={"tokenizer": "gpt2"})
    classifier = GPTModel({**TINY, "num_classes": 2})
    save_model(classifier, folder / "classifier.pth", meta={"tokenizer": "gpt2", "max_length": 8})
    save_checkpoint(folder / "checkpoint.pth", model, optimizer, TrainingState())
    return folder


def bad_torch_file(kind: str, good: Path, folder: Path) -> Path:
    path = folder / good.name
    data = good.read_bytes()
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif kind == "corrupt":
        path.write_bytes(random.Random(0).randbytes(len(data)))
    elif kind == "wrong_format":
        path.write_text('{"this": "is JSON, not a model"}', encoding="utf-8")
    elif kind == "malicious_pickle":
        torch.save({"config": TINY, "model_state_dict": Payload()}, path)
    elif kind in ("missing_key", "extra_key"):
        payload = torch.load(good, weights_only=True)
        state = payload["model_state_dict"]
        if kind == "missing_key":
            state.pop(min(state))
        else:
            state["trf_blocks.7.extra.weight"] = torch.zeros(3)
        torch.save(payload, path)
    elif kind == "unreadable":
        return unreadable_link(folder, good.name, good)
    return path


def fresh_model_and_optimizer():
    model = GPTModel(TINY)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


LOADERS = {
    "model_file": ("model.pth", ModelFileError, lambda p: read_model_file(p)),
    "checkpoint": ("checkpoint.pth", ModelFileError, lambda p: load_checkpoint(p, *fresh_model_and_optimizer())),
    "classifier": ("classifier.pth", ModelFileError, lambda p: load_classifier(p)),
    "base_model": ("model.pth", WeightsError, lambda p: load_base_model(str(p), verbose=False)),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("loader", LOADERS)
def test_traceback__torch_file_loaders(loader, kind, good_files, tmp_path):
    name, error, load = LOADERS[loader]
    path = bad_torch_file(kind, good_files / name, tmp_path)
    with pytest.raises(error) as info:
        load(path)
    message = check_clear(info.value, path)
    if kind == "malicious_pickle":
        assert "could run code from the file" in message
    if kind == "unreadable":
        assert "permission denied" in message


@pytest.mark.parametrize("field, value", [
    ("training_state", {"epoch": 1}),  # fields missing
    ("training_state", "extra"),  # an unknown field added (see below)
    ("optimizer_state_dict", {"state": {}, "param_groups": []}),  # another optimizer's state
    ("rng_states", {"python": "nonsense"}),
    ("optimizer_state_dict", None),  # the field removed
])
def test_traceback__malformed_resume_checkpoint(good_files, tmp_path, field, value):
    payload = torch.load(good_files / "checkpoint.pth", weights_only=True)
    if value is None:
        del payload[field]
    elif value == "extra":
        payload[field] = {**payload[field], "surprise": 1}
    else:
        payload[field] = value
    path = tmp_path / "checkpoint.pth"
    torch.save(payload, path)
    with pytest.raises(ModelFileError) as info:
        load_checkpoint(path, *fresh_model_and_optimizer())
    check_clear(info.value, path)


@pytest.mark.parametrize("script, args", [
    ("ch05/gpt_generate.py", ["--weights", "{path}", "--max-new-tokens", "1"]),
    ("ch06/classify.py", ["--weights", "{path}", "hello"]),
    ("ch07/chat.py", ["--weights", "{path}"]),
])
@pytest.mark.parametrize("kind", ["truncated", "malicious_pickle", "unreadable"])
def test_traceback__scripts_report_bad_model_files(script, args, kind, good_files, tmp_path, capsys):
    good = good_files / ("classifier.pth" if "classify" in script else "model.pth")
    path = bad_torch_file(kind, good, tmp_path)
    module = load_script(REPO / script, f"faults_{Path(script).stem}")
    status = module.main([a.format(path=path) for a in args] + ["--device", "cpu"])
    err = capsys.readouterr().err
    assert status == 2 and err.startswith("error: ")
    check_clear(err, path)


# --- Hugging Face safetensors (GPT-2) ---------------------------------------------------------------


def hf_weights(cfg: dict) -> dict[str, torch.Tensor]:
    """A GPT-2 state dict in Hugging Face's names for the tiny config (random numbers)."""
    g = torch.Generator().manual_seed(0)
    e, v, c = cfg["emb_dim"], cfg["vocab_size"], cfg["context_length"]

    def r(*shape):
        return torch.randn(*shape, generator=g)
    weights = {"wte.weight": r(v, e), "wpe.weight": r(c, e), "ln_f.weight": r(e), "ln_f.bias": r(e)}
    for i in range(cfg["n_layers"]):
        h = f"h.{i}."
        weights.update({h + "ln_1.weight": r(e), h + "ln_1.bias": r(e), h + "ln_2.weight": r(e), h + "ln_2.bias": r(e),
                        h + "attn.c_attn.weight": r(e, 3 * e), h + "attn.c_attn.bias": r(3 * e),
                        h + "attn.c_proj.weight": r(e, e), h + "attn.c_proj.bias": r(e),
                        h + "mlp.c_fc.weight": r(e, 4 * e), h + "mlp.c_fc.bias": r(4 * e),
                        h + "mlp.c_proj.weight": r(4 * e, e), h + "mlp.c_proj.bias": r(e)})
    return weights


@pytest.fixture
def gpt2_small_is_tiny(monkeypatch):
    """Pretend gpt2-small is the tiny config, with no pinned checksums and no network."""
    from buildllm import model as model_module

    monkeypatch.setitem(model_module.GPT2_SIZES, "gpt2-small", {"emb_dim": 8, "n_layers": 1, "n_heads": 2})
    monkeypatch.setitem(sources.HF_CHECKS, "gpt2-small", (None, None))
    monkeypatch.setitem(sources.OPENAI_CHECKS, "124M", {})
    monkeypatch.setattr(gpt2, "_reachable", lambda *a, **k: False)


def bad_safetensors(kind: str, folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "model.safetensors"
    weights = hf_weights({**TINY, "context_length": 1024})
    if kind == "missing_key":
        del weights["h.0.ln_1.weight"]
    if kind == "extra_key":
        weights["h.1.ln_1.weight"] = torch.zeros(8)
    save_file(weights, str(path))
    return spoil(path, kind, seed=1)


@pytest.mark.parametrize("kind", KINDS)
def test_traceback__safetensors_loader(kind, tmp_path, gpt2_small_is_tiny):
    models = tmp_path / "models"
    path = bad_safetensors(kind, models / "gpt2" / "124M")
    with pytest.raises(WeightsError) as info:
        load_base_model("gpt2-small", models_root=models, verbose=False)
    message = check_clear(info.value, path)
    assert "GPT-2" in message or "safetensors" in message


# --- OpenAI's TensorFlow checkpoint -------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_folder(tmp_path_factory):
    pytest.importorskip("tensorflow")
    from test_gpt2_weights import write_openai_checkpoint

    weights = hf_weights({**TINY, "context_length": 1024})
    good = write_openai_checkpoint(weights, tmp_path_factory.mktemp("openai") / "good")
    (good / "hparams.json").write_text(json.dumps({"n_vocab": 50257, "n_ctx": 1024, "n_embd": 8, "n_head": 2,
                                                   "n_layer": 1}))
    missing = write_openai_checkpoint({k: v for k, v in weights.items() if k != "h.0.ln_2.bias"},
                                      tmp_path_factory.mktemp("openai") / "missing")
    extra = write_openai_checkpoint({**weights, "h.1.ln_2.bias": torch.zeros(8)},
                                    tmp_path_factory.mktemp("openai") / "extra")
    return {"good": good, "missing_key": missing, "extra_key": extra}


@pytest.mark.parametrize("kind", ["truncated", "corrupt", "wrong_format", "missing_key", "extra_key", "unreadable"])
def test_traceback__openai_checkpoint_loader(kind, openai_folder, tmp_path, gpt2_small_is_tiny):
    import shutil

    models = tmp_path / "models"
    folder = models / "gpt2" / "124M"
    shutil.copytree(openai_folder.get(kind, openai_folder["good"]), folder)
    (folder / "hparams.json").write_text(json.dumps({"n_vocab": 50257, "n_ctx": 1024, "n_embd": 8, "n_head": 2,
                                                     "n_layer": 1}))
    data = folder / "model.ckpt.data-00000-of-00001"
    path = data
    if kind == "truncated":
        data.write_bytes(data.read_bytes()[:100])
    elif kind == "corrupt":
        index = folder / "model.ckpt.index"
        index.write_bytes(random.Random(2).randbytes(index.stat().st_size))
        path = index
    elif kind == "wrong_format":
        path = folder / "hparams.json"
        path.write_text("this is not JSON", encoding="utf-8")
    elif kind == "unreadable":
        good = folder / "hparams.good"
        (folder / "hparams.json").rename(good)
        path = unreadable_link(folder, "hparams.json", good)
    with pytest.raises(WeightsError) as info:
        load_base_model("gpt2-small", models_root=models, verbose=False)
    message = str(info.value)
    assert str(folder.resolve()) in message or path.name in message, message
    assert "weights_only" not in message and "Traceback" not in message


# --- GGUF -----------------------------------------------------------------------------------------------


def bad_gguf(kind: str, folder: Path, monkeypatch) -> Path:
    import tiny_gguf

    path = folder / "model.gguf"
    if kind in ("missing_key", "extra_key"):
        original = tiny_gguf._hf_weights

        def changed(cfg, seed):
            weights = original(cfg, seed)
            if kind == "missing_key":
                del weights["model.layers.1.mlp.up_proj.weight"]
            else:
                weights["model.layers.9.mlp.up_proj.weight"] = weights["model.layers.1.mlp.up_proj.weight"]
            return weights
        monkeypatch.setattr(tiny_gguf, "_hf_weights", changed)
    tiny_gguf.write_tiny_llama_gguf(path)
    return spoil(path, kind, seed=3, keep=64)


@pytest.mark.parametrize("kind", KINDS)
def test_traceback__gguf_loader(kind, tmp_path, monkeypatch):
    path = bad_gguf(kind, tmp_path, monkeypatch)
    with pytest.raises(GGUFError) as info:
        gguf = read_llama_gguf(path)
        load_weights_into_llama(LlamaModel(gguf.config), gguf.state_dict)
    message = check_clear(info.value, path)
    if kind == "unreadable":
        assert "permission denied" in message
