"""``--weights qwen3-0.6b``: Hugging Face's Qwen3 files -> Qwen3Model + Qwen3Tokenizer, offline errors, bad files.

The real Qwen/Qwen3-0.6B (1.5 GB) is never fetched here: the tests write a tiny Qwen3
checkpoint folder themselves (transformers' Qwen3ForCausalLM with random weights, saved
as bfloat16 safetensors like the published file; a small byte-level BPE tokenizer trained
with the `tokenizers` library, with Qwen's special tokens) and point the models folder at it.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, load_script, run_script

import buildllm.download as download
from buildllm.checkpoints import save_model
from buildllm.pretrained import load_base_model
from buildllm.qwen3 import EMPTY_THINK, Qwen3Model, Qwen3Tokenizer, fetch_qwen3
from buildllm.sources import WeightsError, WeightsUnavailableError, qwen3_hf_files

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

GENERATE = REPO / "ch05" / "gpt_generate.py"
CHAT = REPO / "ch07" / "chat.py"
NO_NETWORK = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
              "http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9", "NO_PROXY": "", "no_proxy": "",
              "OMP_NUM_THREADS": "1"}
SENTENCES = ["the cat sat on the mat", "every effort moves you", "what is the capital of France?",
             "Paris is the capital of France.", "hello world, hello model", "a small tokenizer for a tiny test"]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: threads only wait on each other


def write_tiny_qwen3(folder: Path) -> transformers.Qwen3ForCausalLM:
    """Write Hugging Face's four Qwen3 files for a tiny random model into `folder`; return the reference model."""
    folder.mkdir(parents=True)
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=300, show_progress=False,
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(SENTENCES * 3, trainer)
    # As in Qwen's tokenizer.json: the special tokens after the BPE vocabulary, <think> and </think> added but
    # not special.
    tok.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    tok.add_tokens([tokenizers.AddedToken(t, special=False, normalized=False) for t in ("<think>", "</think>")])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>", "pad_token": SPECIALS[0]}))

    vocab = (tok.get_vocab_size() + 63) // 64 * 64  # Qwen pads its vocabulary beyond the tokenizer's, too
    torch.manual_seed(0)
    hf_cfg = transformers.Qwen3Config(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=True,
        initializer_range=0.1, attn_implementation="eager")
    model = transformers.Qwen3ForCausalLM(hf_cfg).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.2 * torch.randn_like(param))
            param.copy_(param.to(torch.bfloat16).float())  # the file holds bfloat16: make the reference equal to it
    (folder / "config.json").write_text(hf_cfg.to_json_string())
    from safetensors.torch import save_file

    # Tied: the published file has no lm_head.weight.
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in model.state_dict().items() if k != "lm_head.weight"},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A models folder holding the tiny checkpoint where qwen3-0.6b's files go, and the reference model."""
    models = tmp_path_factory.mktemp("qwen3-models")
    folder = models / Path(qwen3_hf_files("qwen3-0.6b")[0].relpath).parent
    reference = write_tiny_qwen3(folder)
    return {"models": models, "folder": folder, "reference": reference}


@pytest.fixture
def copy_of(tiny, tmp_path):
    """A fresh copy of the tiny models folder (for tests that damage files)."""
    models = tmp_path / "models"
    shutil.copytree(tiny["models"], models)
    return models, models / tiny["folder"].relative_to(tiny["models"])


@pytest.fixture
def offline(monkeypatch):
    """Hugging Face cannot be reached (in this process)."""
    monkeypatch.setattr(download, "reachable", lambda urls, timeout=10.0: False)


def _max_logit_diff(model, reference, idx) -> tuple[float, float]:
    with torch.no_grad():
        expected = reference(idx).logits
        return (model(idx) - expected).abs().max().item(), expected.abs().max().item()


# --- Loading ----------------------------------------------------------------------------------------------


def test_qwen3_by_name_equals_transformers(tiny, offline):
    base = load_base_model("qwen3-0.6b", models_root=tiny["models"])
    model = base.model
    assert isinstance(model, Qwen3Model) and not model.training
    assert isinstance(base.tokenizer, Qwen3Tokenizer) and base.tokenizer_name == "qwen3-0.6b"
    assert base.chat_format == "chat-template"
    assert model.tok_emb.weight.dtype == torch.float32 and model.out_head.weight is model.tok_emb.weight
    assert "Qwen/Qwen3-0.6B" in model.weights_source and "bfloat16" in model.weights_source
    idx = torch.randint(0, model.cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(1))
    diff, scale = _max_logit_diff(model, tiny["reference"], idx)
    print(f"tiny Qwen3 from safetensors vs transformers: max |logit diff| {diff:.2e} (logits up to {scale:.2f})")
    assert diff < 1e-4 and scale > 0.5


def test_a_folder_path_loads_the_same(tiny):
    base = load_base_model(str(tiny["folder"]))
    assert isinstance(base.model, Qwen3Model) and base.chat_format == "chat-template"
    idx = torch.randint(0, base.model.cfg.vocab_size, (1, 12), generator=torch.Generator().manual_seed(2))
    assert _max_logit_diff(base.model, tiny["reference"], idx)[0] < 1e-4


def test_a_folder_that_is_not_qwen3_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(WeightsError, match="not one of Hugging Face Qwen3 files"):
        load_base_model(str(tmp_path))


def test_a_saved_qwen3_model_file_finds_its_tokenizer(tiny, offline, tmp_path):
    base = load_base_model("qwen3-0.6b", models_root=tiny["models"])
    path = save_model(base.model, tmp_path / "model.pth", meta={"tokenizer": base.tokenizer_name})
    again = load_base_model(str(path), models_root=tiny["models"])
    assert isinstance(again.model, Qwen3Model) and isinstance(again.tokenizer, Qwen3Tokenizer)
    assert again.tokenizer.encode("the cat") == base.tokenizer.encode("the cat")


# --- The tokenizer and the chat format ------------------------------------------------------------------


def test_tokenizer_equals_the_library_and_treats_special_tokens_like_tiktoken(tiny):
    ours = Qwen3Tokenizer.from_file(tiny["folder"] / "tokenizer.json")
    library = tokenizers.Tokenizer.from_file(str(tiny["folder"] / "tokenizer.json"))
    prompt = ours.apply_chat_template([{"role": "user", "content": "what is the capital of France?"}])
    for text in [*SENTENCES, "héllo 😀 wörld\n\n\tx", prompt, ""]:
        ids = ours.encode(text, allowed_special="all")
        assert ids == library.encode(text, add_special_tokens=False).ids, repr(text)
        assert ours.decode(ids) == text
    with pytest.raises(ValueError, match="<|im_end|>"):
        ours.encode("stop <|im_end|> here")
    assert ours.encode("<|im_end|>", allowed_special={"<|im_end|>"}) == [ours.im_end_id]
    # Neither allowed nor disallowed: plain text, as in tiktoken.
    plain = ours.encode("<|im_end|>", disallowed_special=())
    assert len(plain) > 1 and ours.decode(plain) == "<|im_end|>"
    assert ours.eot_token == library.token_to_id("<|endoftext|>")
    assert ours.n_vocab == library.get_vocab_size()
    with pytest.raises(ValueError, match="not in Qwen3's vocabulary"):
        ours.decode([ours.n_vocab])
    ours.padded_vocab = ours.n_vocab + 10  # the model's padding rows (as the loader sets it): no text
    assert ours.decode([*ours.encode("the cat"), ours.n_vocab + 9]) == "the cat"
    with pytest.raises(ValueError, match="not in Qwen3's vocabulary"):
        ours.decode([ours.n_vocab + 10])


def test_chat_template_is_qwen3s_without_thinking(tiny):
    tok = Qwen3Tokenizer.from_file(tiny["folder"] / "tokenizer.json")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "<think>\nsay hello\n</think>\n\nHello!"},
                {"role": "user", "content": "Capital of France?"}]
    assert EMPTY_THINK == "<think>\n\n</think>\n\n"
    assert tok.apply_chat_template(messages) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nCapital of France?<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert tok.apply_chat_template(messages[1:2], add_generation_prompt=False) == "<|im_start|>user\nHi<|im_end|>\n"
    ids = tok.apply_chat_template(messages[1:2], tokenize=True)
    assert ids[0] == tok.im_start_id and ids.count(tok.im_end_id) == 1
    assert tok.hf.token_to_id("<think>") in ids  # the think block is one token each way, as in Qwen's tokenizer
    for bad in ([{"role": "tool", "content": "x"}], [{"role": "user"}],
                [{"role": "user", "content": "a"}, {"role": "system", "content": "b"}]):
        with pytest.raises(ValueError):
            tok.apply_chat_template(bad)


# --- The scripts ----------------------------------------------------------------------------------------------


def test_gpt_generate_chat_end_to_end(tiny):
    proc = run_script([str(GENERATE), "--weights", "qwen3-0.6b", "--models-dir", str(tiny["models"]), "--chat",
                       "--prompt", "what is the capital of France?", "--max-new-tokens", "3", "--temperature", "0",
                       "--top-k", "5"], env=NO_NETWORK, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr


def test_gpt_generate_continues_text_and_chat_script_answers(tiny, offline, capsys, monkeypatch):
    generate = load_script(GENERATE, "gpt_generate_qwen3")
    assert generate.main(["--weights", str(tiny["folder"]), "--prompt", "the cat", "--max-new-tokens", "3",
                          "--top-k", "5"]) == 0
    assert capsys.readouterr().out.startswith("the cat")
    chat = load_script(CHAT, "chat_qwen3")
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n/quit\n"))
    assert chat.main(["--weights", "qwen3-0.6b", "--models-dir", str(tiny["models"]), "--max-new-tokens", "3"]) == 0
    out = capsys.readouterr().out
    assert "chat-template prompts" in out and "You: hello" in out and "Model: " in out


# --- Offline, missing and damaged files --------------------------------------------------------------------


def test_missing_files_offline_is_a_clear_error_without_traceback(tmp_path):
    empty = tmp_path / "models"
    proc = run_script([str(GENERATE), "--weights", "qwen3-0.6b", "--models-dir", str(empty), "--max-new-tokens", "3"],
                      env=NO_NETWORK, check=False, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    folder = (empty / "qwen3" / "Qwen3-0.6B").resolve()
    assert "Hugging Face cannot be reached" in proc.stderr and str(folder) in proc.stderr
    for file in ("config.json", "tokenizer.json", "tokenizer_config.json", "model.safetensors"):
        assert f"https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main/{file}" in proc.stderr
    assert "about 1.5 GB" in proc.stderr and "BUILDLLM_MODELS_DIR" in proc.stderr
    assert not empty.exists() or not any(empty.rglob("*.safetensors"))


def test_one_missing_file_is_named(copy_of, offline):
    models, folder = copy_of
    (folder / "tokenizer_config.json").unlink()
    with pytest.raises(WeightsUnavailableError) as info:
        load_base_model("qwen3-0.6b", models_root=models)
    message = str(info.value)
    assert "Missing or unusable: tokenizer_config.json" in message
    assert "resolve/main/tokenizer_config.json" in message and "resolve/main/model.safetensors" not in message


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors_names_the_file(copy_of, offline, damage):
    models, folder = copy_of
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"not a safetensors file" * 10)
    with pytest.raises(WeightsError) as info:
        load_base_model("qwen3-0.6b", models_root=models)
    assert not isinstance(info.value, WeightsUnavailableError)
    assert str(weights) in str(info.value) and "truncated or corrupt" in str(info.value)


def test_a_downloaded_file_damaged_later_is_caught_by_its_download_record(copy_of, offline):
    models, folder = copy_of
    weights = folder / "model.safetensors"
    download.write_record(weights, weights.stat().st_size, download.sha256_of(weights), "https://example", False)
    assert load_base_model("qwen3-0.6b", models_root=models).model is not None  # the record matches: used
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(WeightsUnavailableError) as info:
        load_base_model("qwen3-0.6b", models_root=models)
    assert "model.safetensors (about 1.5 GB, bfloat16): present but damaged" in str(info.value)


def test_where_hugging_face_is_reachable_the_missing_files_are_downloaded(tiny, tmp_path, monkeypatch):
    calls = []

    def fake_download(urls, dest, size=None, sha256=None, retries=3, progress=True):
        calls.append((urls, size, sha256))
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny["folder"] / urls[0].rsplit("/", 1)[1], dest)
        return dest

    monkeypatch.setattr(download, "reachable", lambda urls, timeout=10.0: True)
    monkeypatch.setattr(download, "download_file", fake_download)
    folder = fetch_qwen3("qwen3-0.6b", tmp_path / "models", progress=False)
    assert folder == tmp_path / "models" / "qwen3" / "Qwen3-0.6B"
    assert [c[0][0].rsplit("/", 2)[-1] for c in calls] == ["config.json", "tokenizer.json", "tokenizer_config.json",
                                                           "model.safetensors"]
    assert all(c[0][0].startswith("https://huggingface.co/Qwen/Qwen3-0.6B/resolve/main/") for c in calls)
    assert all(size is None and sha is None for _, size, sha in calls)  # unpinned: verified by download records
    base = load_base_model("qwen3-0.6b", models_root=tmp_path / "models")
    assert isinstance(base.model, Qwen3Model) and len(calls) == 4  # nothing fetched twice
