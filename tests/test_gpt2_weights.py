"""GPT-2 weights (chapter 5): OpenAI's TF checkpoint and Hugging Face safetensors, read, downloaded, loaded.

The tests write tiny checkpoints in both real formats themselves (TensorFlow writes
the OpenAI one), serve them from a local HTTP server for the download path, and
compare our GPTModel with the reference transformers.GPT2LMHeadModel on the same weights.
"""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from pathlib import Path

import pytest
import torch

from buildllm import gpt2, sources
from buildllm.config import ConfigError
from buildllm.gpt2 import (
    download_and_load_gpt2,
    download_and_load_gpt2_safetensors,
    download_gpt2_files,
    load_openai_checkpoint,
    load_pretrained_gpt,
    openai_to_hf_name,
)
from buildllm.model import resolve_gpt2_size
from buildllm.sources import WeightsUnavailableError

transformers = pytest.importorskip("transformers")

VOCAB, CONTEXT, EMB, HEADS, LAYERS = 101, 24, 48, 3, 2
TINY = {"vocab_size": VOCAB, "context_length": CONTEXT, "emb_dim": EMB, "n_heads": HEADS, "n_layers": LAYERS,
        "drop_rate": 0.0}
TOLERANCE = 1e-5


def hf_to_openai_name(key: str) -> str:
    """The inverse naming, written independently of the code under test: "h.3.ln_1.weight" -> "model/h3/ln_1/g"."""
    if key in ("wte.weight", "wpe.weight"):
        return "model/" + key.split(".")[0]
    *path, kind = key.split(".")
    if path[0] == "h":
        path = [f"h{path[1]}"] + path[2:]
    is_norm = path[-1].startswith("ln_")
    return "model/" + "/".join(path) + "/" + {"bias": "b", "weight": "g" if is_norm else "w"}[kind]


@pytest.fixture(scope="module")
def reference():
    """A tiny transformers GPT-2 with seeded random weights (biases and LayerNorms moved off their init)."""
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=CONTEXT, n_embd=EMB, n_layer=LAYERS, n_head=HEADS,
        activation_function="gelu_new", attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0, layer_norm_epsilon=1e-5,
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn_like(param))
    return model.eval()


@pytest.fixture(scope="module")
def hf_weights(reference) -> dict[str, torch.Tensor]:
    """The reference's weights as the Hub's model.safetensors names them (no "transformer." prefix, no lm_head)."""
    return {k: v.detach().clone().contiguous() for k, v in reference.transformer.state_dict().items()
            if not k.endswith((".attn.bias", ".attn.masked_bias"))}


def write_safetensors(weights: dict[str, torch.Tensor], folder: Path) -> Path:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(folder / "model.safetensors"))
    return folder / "model.safetensors"


def write_openai_checkpoint(weights: dict[str, torch.Tensor], folder: Path) -> Path:
    """Write OpenAI's seven files: a TF1 checkpoint (Conv1D weights as (1, in, out)), hparams.json, tokenizer stubs."""
    tf = pytest.importorskip("tensorflow")
    folder.mkdir(parents=True, exist_ok=True)
    graph = tf.Graph()
    with graph.as_default():
        for key, value in weights.items():
            array = value.numpy()
            if key.endswith(".weight") and array.ndim == 2 and not key.startswith(("wte", "wpe")):
                array = array[None]  # OpenAI stores the linear layers as 1x1 convolutions: (1, in, out)
            tf.compat.v1.Variable(array, name=hf_to_openai_name(key))
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(folder / "model.ckpt"), write_meta_graph=True)
    (folder / "checkpoint").write_text('model_checkpoint_path: "model.ckpt"\n'
                                       'all_model_checkpoint_paths: "model.ckpt"\n')
    hparams = {"n_vocab": VOCAB, "n_ctx": CONTEXT, "n_embd": EMB, "n_head": HEADS, "n_layer": LAYERS}
    (folder / "hparams.json").write_text(json.dumps(hparams))
    (folder / "encoder.json").write_text("{}")
    (folder / "vocab.bpe").write_text("#version: 0.2\n")
    return folder


@pytest.fixture(scope="module")
def server_root(tmp_path_factory, hf_weights) -> Path:
    """What the local HTTP server serves: models/124M/<OpenAI files> and hf/gpt2/model.safetensors."""
    root = tmp_path_factory.mktemp("server")
    write_openai_checkpoint(hf_weights, root / "models" / "124M")
    write_safetensors(hf_weights, root / "hf" / "gpt2")
    return root


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


@pytest.fixture
def tiny_sizes(monkeypatch, server_root):
    """Make the tiny files the expected ones for gpt2-small (the real 124M sizes would reject them)."""
    sizes = file_sizes(server_root / "models" / "124M")
    monkeypatch.setitem(sources.OPENAI_CHECKS, "124M", {k: (sizes[k], None) for k in sources.OPENAI_FILES})
    hf_size = (server_root / "hf" / "gpt2" / "model.safetensors").stat().st_size
    monkeypatch.setitem(sources.HF_CHECKS, "gpt2-small", (hf_size, None))
    return sizes


@pytest.fixture
def local_dir(tmp_path, server_root, tiny_sizes):
    """A models folder that already holds both formats for 124M, as after gpt_download.py."""
    import shutil

    shutil.copytree(server_root / "models" / "124M", tmp_path / "gpt2" / "124M")
    shutil.copy(server_root / "hf" / "gpt2" / "model.safetensors", tmp_path / "gpt2" / "124M" / "model.safetensors")
    return tmp_path


@pytest.fixture
def serve(monkeypatch):
    """Start a local HTTP server for a folder and point both URL templates at it; return its base URL."""
    servers = []

    def start(root: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *args: None
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
        monkeypatch.setattr(sources, "OPENAI_URLS", (base + "/models/{folder}/{file}",))
        monkeypatch.setattr(sources, "HF_URLS", (base + "/hf/{repo}/model.safetensors",))
        monkeypatch.setattr(gpt2, "DOWNLOAD_RETRIES", 1)
        return base

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def http_server(serve, server_root) -> str:
    """The tiny checkpoints, served on 127.0.0.1."""
    return serve(server_root)


@pytest.fixture
def server_down(monkeypatch):
    """URL templates pointing at a port nobody listens on: like a machine without network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setattr(sources, "OPENAI_URLS", (base + "/models/{folder}/{file}", base + "/backup/{folder}/{file}"))
    monkeypatch.setattr(sources, "HF_URLS", (base + "/hf/{repo}/model.safetensors",))
    return base


def logits_of(model, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(idx)
    return out.logits if hasattr(out, "logits") else out


IDX = torch.tensor([[5, 17, 99, 3, 42, 0, 77, 8, 8, 64], [1, 2, 3, 4, 5, 6, 7, 8, 9, 100]])


# --- names ----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("tf_name", "hf_name"),
    [("model/wte", "wte.weight"), ("model/wpe", "wpe.weight"), ("model/h0/ln_1/g", "h.0.ln_1.weight"),
     ("model/h0/ln_1/b", "h.0.ln_1.bias"), ("model/h11/attn/c_attn/w", "h.11.attn.c_attn.weight"),
     ("model/h2/attn/c_proj/b", "h.2.attn.c_proj.bias"), ("model/h3/ln_2/g", "h.3.ln_2.weight"),
     ("model/h4/mlp/c_fc/w", "h.4.mlp.c_fc.weight"), ("model/h5/mlp/c_proj/b", "h.5.mlp.c_proj.bias"),
     ("model/ln_f/g", "ln_f.weight"), ("model/ln_f/b", "ln_f.bias")],
)
def test_openai_names_map_to_hugging_face_names(tf_name, hf_name):
    assert openai_to_hf_name(tf_name) == hf_name
    assert hf_to_openai_name(hf_name) == tf_name


@pytest.mark.parametrize("bad", ["model/foo", "global_step", "model/h1/attn/c_attn/x"])
def test_unexpected_variable_names_are_refused(bad):
    with pytest.raises(ValueError, match="not a GPT-2 weight"):
        openai_to_hf_name(bad)


@pytest.mark.parametrize(("size", "expected"), [("124M", "gpt2-small"), ("gpt2-xl", "gpt2-xl")])
def test_model_sizes_by_either_name(size, expected):
    assert resolve_gpt2_size(size) == expected
    assert gpt2.gpt2_folder(size, "m") == Path("m") / "gpt2" / sources.GPT2_FOLDERS[expected]


def test_unknown_model_size_lists_the_valid_ones(tmp_path):
    for call in (lambda: resolve_gpt2_size("gpt2-huge"), lambda: load_pretrained_gpt("7B", tmp_path),
                 lambda: download_gpt2_files("125M", tmp_path)):
        with pytest.raises(ConfigError, match=r"Unknown GPT-2 model size .*gpt2-small \(124M\).*gpt2-xl \(1558M\)"):
            call()


def test_unknown_source_is_refused(tmp_path):
    with pytest.raises(ValueError, match="Unknown source 'tf'"):
        load_pretrained_gpt("gpt2-small", tmp_path, source="tf")


# --- reading both formats ------------------------------------------------------------------

def test_openai_checkpoint_reads_as_the_hugging_face_state_dict(server_root, hf_weights):
    settings, state_dict = load_openai_checkpoint(server_root / "models" / "124M")
    assert settings == {"n_vocab": VOCAB, "n_ctx": CONTEXT, "n_embd": EMB, "n_head": HEADS, "n_layer": LAYERS}
    assert sorted(state_dict) == sorted(hf_weights)
    for key, value in hf_weights.items():
        assert torch.equal(state_dict[key], value), key  # Conv1D layout (in, out), leading 1 squeezed


@pytest.mark.parametrize("source", ["openai", "huggingface"])
def test_pretrained_gpt_matches_the_reference_gpt2(local_dir, reference, source):
    model = load_pretrained_gpt("gpt2-small", local_dir, source=source, **TINY)
    assert not model.training and model.cfg["qkv_bias"] is True
    diff = (logits_of(model, IDX) - logits_of(reference, IDX)).abs().max().item()
    assert diff < TOLERANCE


def test_both_formats_give_identical_models(local_dir):
    from_openai = load_pretrained_gpt("gpt2-small", local_dir, source="openai", **TINY)
    from_hf = load_pretrained_gpt("124M", local_dir, source="huggingface", **TINY)
    for (name, a), b in zip(from_openai.state_dict().items(), from_hf.state_dict().values()):
        assert torch.equal(a, b), name


def test_shorter_context_keeps_the_first_position_embeddings(local_dir, reference):
    model = load_pretrained_gpt("gpt2-small", local_dir, source="huggingface", **{**TINY, "context_length": 12})
    assert model.pos_emb.weight.shape == (12, EMB)
    diff = (logits_of(model, IDX) - logits_of(reference, IDX)).abs().max().item()
    assert diff < TOLERANCE


def test_auto_uses_whichever_format_is_on_disk(local_dir, reference, server_down):
    (local_dir / "gpt2" / "124M" / "model.safetensors").unlink()  # only OpenAI's files are left; no network
    model = load_pretrained_gpt("gpt2-small", local_dir, source="auto", **TINY)
    assert (logits_of(model, IDX) - logits_of(reference, IDX)).abs().max().item() < TOLERANCE


def test_weights_of_another_architecture_are_refused(local_dir):
    with pytest.raises(ValueError, match=r"Shape mismatch for 'wte.weight'.*\(101, 48\).*\(101, 64\)"):
        load_pretrained_gpt("gpt2-small", local_dir, source="huggingface", **{**TINY, "emb_dim": 64, "n_heads": 4})
    with pytest.raises(ValueError, match="n_head=3 but the config has n_heads=4"):
        load_pretrained_gpt("gpt2-small", local_dir, source="openai", **{**TINY, "n_heads": 4})


def test_openai_format_without_tensorflow_says_what_to_install(local_dir, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "tensorflow", None)  # as if TensorFlow were not installed
    with pytest.raises(ImportError, match="pip install tensorflow.*source='huggingface'"):
        load_pretrained_gpt("gpt2-small", local_dir, source="openai", **TINY)


# --- downloading ---------------------------------------------------------------------

def test_download_and_load_openai_from_a_server(tmp_path, http_server, tiny_sizes, hf_weights):
    settings, state_dict = download_and_load_gpt2("124M", tmp_path / "models")
    assert settings["n_layer"] == LAYERS
    folder = tmp_path / "models" / "gpt2" / "124M"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(sources.OPENAI_FILES)
    # Each file has its download record (size and SHA-256 of the verified download) beside it.
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == sorted(
        f".{name}.download.json" for name in sources.OPENAI_FILES)
    for key, value in hf_weights.items():
        assert torch.equal(state_dict[key], value), key


def test_download_and_load_safetensors_from_a_server(tmp_path, http_server, tiny_sizes, hf_weights):
    settings, state_dict = download_and_load_gpt2_safetensors("gpt2-small", tmp_path)
    assert settings == {"n_vocab": VOCAB, "n_ctx": CONTEXT, "n_embd": EMB, "n_head": 12, "n_layer": LAYERS}
    assert sorted(p.name for p in (tmp_path / "gpt2" / "124M").iterdir()) == [".model.safetensors.download.json",
                                                                             "model.safetensors"]
    for key, value in hf_weights.items():
        assert torch.equal(state_dict[key], value), key


def test_truncated_openai_download_is_deleted_and_not_loaded(tmp_path, http_server, tiny_sizes, monkeypatch):
    # The server's data file is shorter than the size we expect: a broken transfer.
    full = tiny_sizes["model.ckpt.data-00000-of-00001"]
    monkeypatch.setitem(sources.OPENAI_CHECKS["124M"], "model.ckpt.data-00000-of-00001", (full + 100, None))
    with pytest.raises(WeightsUnavailableError, match=r"(?s)download failed.*offers \d+ bytes, expected \d+: a truncated or different file"):
        download_and_load_gpt2("gpt2-small", tmp_path)
    names = {p.name for p in (tmp_path / "gpt2" / "124M").iterdir()}
    assert "model.ckpt.data-00000-of-00001" not in names
    assert not any(n.endswith(".part") for n in names)


def test_wrong_local_file_is_reported_and_kept(tmp_path, http_server, tiny_sizes):
    """A file we did not download (no download record) may be the user's: reported, never replaced."""
    folder = tmp_path / "gpt2" / "124M"
    folder.mkdir(parents=True)
    (folder / "model.ckpt.index").write_bytes(b"\0" * 10)
    with pytest.raises(WeightsUnavailableError, match=r"model.ckpt.index \(present, but not the expected size"):
        download_and_load_gpt2("gpt2-small", tmp_path)
    assert (folder / "model.ckpt.index").read_bytes() == b"\0" * 10


def test_damaged_download_is_replaced_by_a_good_one(tmp_path, http_server, tiny_sizes, hf_weights):
    """A file whose download record shows we fetched it, damaged since, is downloaded again."""
    download_and_load_gpt2("gpt2-small", tmp_path)
    index = tmp_path / "gpt2" / "124M" / "model.ckpt.index"
    index.write_bytes(b"\0" * 10)
    _, state_dict = download_and_load_gpt2("gpt2-small", tmp_path)
    assert index.stat().st_size == tiny_sizes["model.ckpt.index"]
    assert torch.equal(state_dict["wte.weight"], hf_weights["wte.weight"])


def test_truncated_safetensors_is_detected_and_not_loaded(tmp_path, server_root, serve, monkeypatch):
    # No size is known for this file (as for the larger models), so the reader has to notice the damage.
    monkeypatch.setitem(sources.HF_CHECKS, "gpt2-small", (None, None))
    good = (server_root / "hf" / "gpt2" / "model.safetensors").read_bytes()
    broken_root = tmp_path / "served"
    (broken_root / "hf" / "gpt2").mkdir(parents=True)
    (broken_root / "hf" / "gpt2" / "model.safetensors").write_bytes(good[: len(good) // 2])
    serve(broken_root)
    with pytest.raises(WeightsUnavailableError, match="truncated or corrupt .*Delete it and download it again"):
        download_and_load_gpt2_safetensors("gpt2-small", tmp_path / "models")


def test_server_down_says_what_is_missing_and_where_to_put_it(tmp_path, server_down):
    with pytest.raises(WeightsUnavailableError) as info:
        download_and_load_gpt2("gpt2-small", tmp_path / "models")
    message = str(info.value)
    assert "no network connection" in message
    assert f"Looked in: {(tmp_path / 'models' / 'gpt2' / '124M').resolve()}" in message
    assert "Missing: checkpoint, encoder.json, hparams.json, model.ckpt.data-00000-of-00001" in message
    assert f"{server_down}/models/124M/model.ckpt.index" in message
    assert f"backup mirror: {server_down}/backup/124M/<file>" in message
    assert "BUILDLLM_MODELS_DIR" in message


def test_wrong_size_local_file_is_reported_when_offline(tmp_path, server_down, tiny_sizes, server_root):
    import shutil

    shutil.copytree(server_root / "models" / "124M", tmp_path / "gpt2" / "124M")
    (tmp_path / "gpt2" / "124M" / "model.ckpt.index").write_bytes(b"\0" * 3)
    with pytest.raises(WeightsUnavailableError, match=r"Missing: model.ckpt.index \(present, but not the expected size"):
        download_and_load_gpt2("gpt2-small", tmp_path)


def test_auto_without_files_or_network_explains_both_sources(tmp_path, server_down):
    with pytest.raises(WeightsUnavailableError) as info:
        load_pretrained_gpt("gpt2-medium", tmp_path)
    message = str(info.value)
    assert "No GPT-2 gpt2-medium weights could be found or downloaded (tried huggingface and openai)" in message
    assert f"{server_down}/hf/gpt2-medium/model.safetensors" in message
    assert f"Looked in: {(tmp_path / 'gpt2' / '355M').resolve()}" in message
    assert "from OpenAI are not available" in message and "from Hugging Face are not available" in message
    assert isinstance(info.value, RuntimeError)


def test_known_file_sizes_of_the_real_124m_checkpoint():
    sizes = {f.relpath.rsplit("/", 1)[1]: f.size for f in sources.gpt2_files("gpt2-small", "openai")}
    assert sizes == {"checkpoint": 77, "hparams.json": 90, "model.ckpt.data-00000-of-00001": 497759232,
                     "model.ckpt.index": 5215, "model.ckpt.meta": 471155, "encoder.json": 1042301,
                     "vocab.bpe": 456318}
    hparams = next(f for f in sources.gpt2_files("gpt2-small", "openai") if f.relpath.endswith("hparams.json"))
    assert hparams.urls[0] == "https://openaipublic.blob.core.windows.net/gpt-2/models/124M/hparams.json"
    (large,) = sources.gpt2_files("gpt2-large", "huggingface")
    assert large.urls[0] == "https://huggingface.co/openai-community/gpt2-large/resolve/main/model.safetensors"
    assert large.relpath == "gpt2/774M/model.safetensors"
