"""Pretraining (chapter 5): the loss on the book's examples, data order, checkpoints and exact resumption."""

from __future__ import annotations

import json
import math
import os
import random

import pytest
import torch
from torch.utils.data import DistributedSampler

from buildllm.model import GPT_CONFIG_124M, GPTModel
from buildllm.tokenizer import get_gpt2_tokenizer
from buildllm.checkpoints import (
    ModelFileError,
    get_rng_states,
    load_checkpoint,
    load_model,
    save_checkpoint,
    save_model,
    set_rng_states,
)
from buildllm.files import atomic_write_json
from buildllm.trainer import EpochShuffleSampler, TrainingState, TrainRun, create_pretraining_dataloaders, train_model
from buildllm.training import calc_loss_batch, calc_loss_loader, train_model_simple

# The book's two examples (section 5.1): inputs and the same texts shifted by one token.
INPUTS = torch.tensor([[16833, 3626, 6100],  # "every effort moves"
                       [40, 1107, 588]])  # "I really like"
TARGETS = torch.tensor([[3626, 6100, 345],  # " effort moves you"
                        [1107, 588, 11311]])  # " really like chocolate"


class ByteTokenizer:
    """A 256-token tokenizer (one token per UTF-8 byte): keeps training tests fast with a tiny vocabulary."""

    def encode(self, text: str, allowed_special=None) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


TINY_CFG = {**GPT_CONFIG_124M, "vocab_size": 256, "context_length": 16, "emb_dim": 16, "n_heads": 2,
            "n_layers": 1, "drop_rate": 0.1}


@pytest.fixture(scope="module")
def gpt_124m_seed123():
    """The book's model of chapter 5: GPT_CONFIG_124M with context 256, seed 123, in eval mode."""
    torch.manual_seed(123)
    return GPTModel({**GPT_CONFIG_124M, "context_length": 256}).eval()


def test_book_example_token_ids():
    tokenizer = get_gpt2_tokenizer()
    assert [tokenizer.encode(t) for t in ("every effort moves", "I really like")] == INPUTS.tolist()
    assert [tokenizer.encode(t) for t in (" effort moves you", " really like chocolate")] == TARGETS.tolist()


def test_loss_and_perplexity_of_the_book_examples(gpt_124m_seed123):
    with torch.no_grad():
        logits = gpt_124m_seed123(INPUTS)  # (2, 3, 50257)
    probas = torch.softmax(logits, dim=-1)
    assert probas.argmax(-1).tolist() == [[16657, 339, 42826], [49906, 29669, 41751]]
    target_probas = torch.stack([probas[i, torch.arange(3), TARGETS[i]] for i in range(2)])
    expected = torch.tensor([[7.4540446803e-05, 3.1060579204e-05, 1.1562790860e-05],
                             [1.0336665582e-05, 5.6775919802e-05, 4.7559328777e-06]])
    torch.testing.assert_close(target_probas, expected, rtol=1e-4, atol=0)
    avg_log_prob = torch.log(target_probas).mean()
    assert avg_log_prob.item() == pytest.approx(-10.7939644, abs=1e-4)
    loss = calc_loss_batch(INPUTS, TARGETS, gpt_124m_seed123, "cpu")
    assert loss.item() == pytest.approx(10.7939653, abs=1e-4)
    assert loss.item() == pytest.approx(-avg_log_prob.item(), abs=1e-5)  # cross entropy = mean negative log prob
    assert torch.exp(loss).item() == pytest.approx(48725.867, rel=1e-4)  # perplexity


def test_untrained_validation_loss_on_the_verdict(gpt_124m_seed123, verdict_text):
    _, val_loader = create_pretraining_dataloaders(verdict_text, get_gpt2_tokenizer(), 256, 2, seed=123)
    with torch.no_grad():
        val_loss = calc_loss_loader(val_loader, gpt_124m_seed123, "cpu")
    assert val_loss == pytest.approx(10.9811058, abs=1e-4)
    # A model that has learned nothing is about as unsure as a uniform guess over the vocabulary.
    assert abs(val_loss - math.log(50257)) < 0.2


def test_verdict_loaders_have_the_books_sizes(verdict_text):
    train_loader, val_loader = create_pretraining_dataloaders(verdict_text, get_gpt2_tokenizer(), 256, 2)
    assert (len(train_loader), len(val_loader)) == (9, 1)
    assert (len(train_loader.dataset), len(val_loader.dataset)) == (18, 2)
    inputs, targets = next(iter(val_loader))
    assert inputs.shape == targets.shape == (2, 256)
    assert torch.equal(inputs[:, 1:], targets[:, :-1])


def test_epoch_order_depends_only_on_seed_and_epoch():
    sampler = EpochShuffleSampler(range(10), seed=5)
    sampler.set_epoch(3)
    order = list(sampler)
    assert sorted(order) == list(range(10))
    assert order == torch.randperm(10, generator=torch.Generator().manual_seed(8)).tolist()
    assert list(sampler) == order  # the same every time
    sampler.set_epoch(4)
    assert list(sampler) != order
    # On one process it is the same order as DistributedSampler's (which multi-GPU training uses).
    dist = DistributedSampler(range(10), num_replicas=1, rank=0, shuffle=True, seed=5)
    dist.set_epoch(3)
    assert list(dist) == order
    assert list(EpochShuffleSampler(range(4), shuffle=False)) == [0, 1, 2, 3]


def test_iterating_the_loaders_leaves_the_global_rng_alone(verdict_text):
    train_loader, val_loader = create_pretraining_dataloaders(verdict_text, ByteTokenizer(), 64, 4)
    before = torch.get_rng_state()
    for loader in (train_loader, val_loader):
        for _ in loader:
            pass
    assert torch.equal(torch.get_rng_state(), before)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"context_length": 64, "batch_size": 2, "text": "a" * 300}, "validation part of the text"),
     ({"context_length": 16, "batch_size": 40, "text": "a" * 400}, "no complete batch"),
     ({"context_length": 16, "batch_size": 2, "text": "a" * 400, "train_ratio": 1.0}, "train_ratio")],
)
def test_loader_bad_input(kwargs, message):
    text = kwargs.pop("text")
    with pytest.raises(ValueError, match=message):
        create_pretraining_dataloaders(text, ByteTokenizer(), **kwargs)


def test_rng_states_round_trip_through_weights_only_load(tmp_path):
    random.seed(1)
    torch.manual_seed(1)
    states = get_rng_states()
    expected = (random.random(), torch.rand(3))
    torch.save(states, tmp_path / "rng.pt")
    random.seed(99)
    torch.manual_seed(99)
    set_rng_states(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert random.random() == expected[0]
    assert torch.equal(torch.rand(3), expected[1])


def _tiny_setup(text: str, seed: int = 123):
    torch.manual_seed(seed)
    model = GPTModel(TINY_CFG)
    train_loader, val_loader = create_pretraining_dataloaders(text, ByteTokenizer(), 16, 4, seed=123)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.1)
    return model, train_loader, val_loader, optimizer


def _train(model, train_loader, val_loader, optimizer, state=None, **kwargs) -> TrainingState:
    run = TrainRun(device=torch.device("cpu"), num_epochs=3, eval_freq=3, eval_iter=2, progress=False, **kwargs)
    return train_model(model, train_loader, val_loader, optimizer, run, state)


@pytest.fixture(scope="module")
def short_text(verdict_text) -> str:
    return verdict_text[:900]  # 900 bytes: 50 training windows of 16 tokens -> 12 batches per epoch


@pytest.fixture(scope="module")
def uninterrupted(short_text):
    model, train_loader, val_loader, optimizer = _tiny_setup(short_text)
    assert len(train_loader) == 12
    state = _train(model, train_loader, val_loader, optimizer, max_steps=30)
    return model, optimizer, state


@pytest.mark.parametrize("stop_at", [7, 12])  # in the middle of epoch 1, and exactly at its end
def test_resumed_training_equals_uninterrupted_training(uninterrupted, short_text, tmp_path, stop_at, capsys):
    model_a, optimizer_a, state_a = uninterrupted
    assert state_a.global_step == 30 and (state_a.epoch, state_a.step_in_epoch) == (2, 6)

    model_b, train_loader, val_loader, optimizer_b = _tiny_setup(short_text)
    ckpt = tmp_path / "checkpoint.pth"
    stopped = _train(model_b, train_loader, val_loader, optimizer_b, max_steps=stop_at, checkpoint_path=ckpt)
    assert stopped.global_step == stop_at

    # A fresh process: different initial weights and RNG; everything comes from the checkpoint.
    model_c, train_loader, val_loader, optimizer_c = _tiny_setup(short_text, seed=7)
    state, _ = load_checkpoint(ckpt, model_c, optimizer_c)
    assert state == stopped
    resumed = _train(model_c, train_loader, val_loader, optimizer_c, state=state, max_steps=30)

    assert resumed.step_losses == state_a.step_losses
    assert resumed.train_losses == state_a.train_losses and resumed.val_losses == state_a.val_losses
    assert resumed == state_a
    for (name, p_a), p_c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(p_a, p_c), name
    assert torch.equal(optimizer_a.state_dict()["state"][0]["exp_avg"], optimizer_c.state_dict()["state"][0]["exp_avg"])


def test_train_model_records_book_style_evaluations(short_text, capsys):
    model, train_loader, val_loader, optimizer = _tiny_setup(short_text)
    state = _train(model, train_loader, val_loader, optimizer, max_steps=7)
    assert state.eval_steps == [0, 3, 6]  # after steps 1, 4, 7 (printed 0-based, as the book does)
    assert len(state.train_losses) == len(state.val_losses) == len(state.track_tokens_seen) == 3
    assert state.track_tokens_seen == [64, 256, 448]  # 4 sequences x 16 tokens per step
    assert len(state.step_losses) == 7
    assert (state.epoch, state.step_in_epoch, state.tokens_seen) == (0, 7, 448)
    assert "에포크 1/3 | 스텝     6 | 훈련 손실" in capsys.readouterr().out


def test_only_the_main_process_prints_and_saves(short_text, tmp_path, capsys):
    model, train_loader, val_loader, optimizer = _tiny_setup(short_text)
    _train(model, train_loader, val_loader, optimizer, max_steps=4, checkpoint_path=tmp_path / "c.pth",
           start_context="Every", tokenizer=ByteTokenizer(), is_main_process=False)
    assert capsys.readouterr().out == ""
    assert not (tmp_path / "c.pth").exists()


def test_train_run_rejects_bad_settings():
    with pytest.raises(ValueError, match="eval_freq must be at least 1"):
        TrainRun(device=torch.device("cpu"), num_epochs=1, eval_freq=0)
    with pytest.raises(ValueError, match="checkpoint_every must be at least 1"):
        TrainRun(device=torch.device("cpu"), num_epochs=1, checkpoint_every=0)


def test_checkpoints_every_n_steps_resume_exactly(uninterrupted, short_text, tmp_path):
    """Killed after step 10 (checkpoints every 4 steps: the last one after step 8), the run resumes exactly."""
    model_a, _, state_a = uninterrupted
    model_b, train_loader, val_loader, optimizer_b = _tiny_setup(short_text)
    ckpt = tmp_path / "checkpoint.pth"

    def kill_at_step_10(name, value, step):  # called after every step: stands in for kill -9
        if step == 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(model_b, train_loader, val_loader, optimizer_b, checkpoint_path=ckpt, checkpoint_every=4,
               log_scalar=kill_at_step_10)
    model_c, train_loader, val_loader, optimizer_c = _tiny_setup(short_text, seed=7)
    state, _ = load_checkpoint(ckpt, model_c, optimizer_c)
    assert state.global_step == 8
    resumed = _train(model_c, train_loader, val_loader, optimizer_c, state=state, max_steps=30)
    assert resumed.step_losses == state_a.step_losses
    for p_a, p_c in zip(model_a.state_dict().values(), model_c.state_dict().values()):
        assert torch.equal(p_a, p_c)


def test_train_model_simple_runs_the_books_loop(short_text, capsys):
    model, train_loader, val_loader, optimizer = _tiny_setup(short_text)
    train_losses, val_losses, tokens = train_model_simple(
        model, train_loader, val_loader, optimizer, "cpu", num_epochs=1, eval_freq=5, eval_iter=1,
        start_context="Every", tokenizer=ByteTokenizer())
    assert tokens == [64, 384, 704]  # evaluations after steps 1, 6 and 11 of 12
    assert len(train_losses) == len(val_losses) == 3
    assert all(math.isfinite(x) for x in train_losses + val_losses)
    out = capsys.readouterr().out
    assert "에포크 1/1 | 스텝    10 | 훈련 손실" in out and "샘플: Every" in out


def test_checkpoint_holds_plain_types_and_also_loads_as_a_model(short_text, tmp_path):
    model, train_loader, val_loader, optimizer = _tiny_setup(short_text)
    state = _train(model, train_loader, val_loader, optimizer, max_steps=2)
    save_checkpoint(tmp_path / "checkpoint.pth", model, optimizer, state, extra={"seed": 123})
    payload = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    assert payload["training_state"]["global_step"] == 2
    assert payload["extra"] == {"seed": 123}
    assert payload["config"] == {**TINY_CFG, "padded_vocab_size": None, "num_classes": None, "tie_weights": False,
                                 "fast": False}
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pth"]  # no temporary file left behind
    rebuilt = load_model(tmp_path / "checkpoint.pth")
    for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(a, b)


def test_save_and_load_model_round_trip(tmp_path):
    torch.manual_seed(0)
    model = GPTModel(TINY_CFG)
    save_model(model, tmp_path / "model.pth")
    rebuilt = load_model(tmp_path / "model.pth")
    assert rebuilt.cfg == model.cfg and rebuilt.cfg["emb_dim"] == TINY_CFG["emb_dim"]
    x = torch.randint(0, 256, (2, 16))
    assert torch.equal(model.eval()(x), rebuilt.eval()(x))


def test_checkpoint_of_a_different_architecture_is_refused(short_text, tmp_path):
    model, _, _, optimizer = _tiny_setup(short_text)
    save_checkpoint(tmp_path / "checkpoint.pth", model, optimizer, TrainingState())
    other = GPTModel({**TINY_CFG, "emb_dim": 32, "n_layers": 2})
    with pytest.raises(ModelFileError, match=r"different architecture \(emb_dim 16 vs 32, n_layers 1 vs 2"):
        load_checkpoint(tmp_path / "checkpoint.pth", other)


def test_model_file_cannot_resume_training(tmp_path):
    model = GPTModel(TINY_CFG)
    save_model(model, tmp_path / "model.pth")
    with pytest.raises(ModelFileError, match="not a training checkpoint"):
        load_checkpoint(tmp_path / "model.pth", model)
    with pytest.raises(ModelFileError, match="No training checkpoint at"):
        load_checkpoint(tmp_path / "missing.pth", model)


def test_load_model_rejects_other_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ModelFileError, match="not a model file"):
        load_model(tmp_path / "other.pth")


def test_atomic_write_json(tmp_path):
    atomic_write_json({"loss": 1.5, "steps": [1, 2]}, tmp_path / "sub" / "metrics.json")
    assert json.loads((tmp_path / "sub" / "metrics.json").read_text()) == {"loss": 1.5, "steps": [1, 2]}
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["metrics.json"]


def test_saved_files_get_the_usual_permissions(tmp_path):
    """Atomic writes go through mkstemp (mode 0o600); the final files get the mode a plain open() would give."""
    umask = os.umask(0o022)
    try:
        atomic_write_json({}, tmp_path / "metrics.json")
        save_model(GPTModel(TINY_CFG), tmp_path / "model.pth")
    finally:
        os.umask(umask)
    for name in ("metrics.json", "model.pth"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name
