"""The opt-in training speed settings (buildllm.speed, gpt_train.py flags): same results as the plain path, clear errors."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from conftest import REPO, load_script, run_script

from buildllm.generation import generate
from buildllm.model import GPTModel, get_gpt2_config
from buildllm.speed import (
    check_dtype_supported,
    compile_model,
    lr_at_step,
    make_adamw,
    make_lr_schedule,
    pad_vocab_size,
)
from buildllm.tokenizer import get_gpt2_tokenizer
from buildllm.checkpoints import load_model, save_model
from buildllm.trainer import TrainRun, create_pretraining_dataloaders, train_model, train_step

TRAIN = str(REPO / "ch05" / "gpt_train.py")
GENERATE = str(REPO / "ch05" / "gpt_generate.py")
BENCH = str(REPO / "benchmarks" / "bench_train.py")
CFG = get_gpt2_config("gpt2-small", emb_dim=32, n_layers=1, n_heads=2, context_length=16, drop_rate=0.0)


def _train(text: str, batch_size: int, steps: int = 4, cfg: dict = CFG, fast: bool = False,
           **options) -> list[float]:
    """The per-step losses of `steps` steps of a tiny GPT on `text`, seeded as gpt_train.py seeds it."""
    torch.manual_seed(123)
    train_loader, val_loader = create_pretraining_dataloaders(text, get_gpt2_tokenizer(), 16, batch_size, seed=123)
    model = GPTModel({**cfg, "fast": fast})
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
    run = TrainRun(device=torch.device("cpu"), num_epochs=1, eval_freq=100, eval_iter=1, max_steps=steps,
                   progress=False, is_main_process=False, **options)
    return train_model(model, train_loader, val_loader, optimizer, run).step_losses


@pytest.fixture(scope="module")
def plain_losses(verdict_text) -> list[float]:
    return _train(verdict_text, batch_size=4)


# --- Learning-rate schedule -------------------------------------------------------------------------

def test_cosine_schedule_values():
    lr = [lr_at_step(step, 1e-3, total_steps=10, warmup_steps=2, min_lr=1e-4) for step in (0, 1, 2, 4, 6, 9, 10, 50)]
    # warmup 1/2, 2/2 of the peak; cosine from the peak at step 2 to min_lr at step 10; then flat.
    assert lr == pytest.approx([5e-4, 1e-3, 1e-3, 8.681980515339464e-4, 5.5e-4, 1.3425421036992097e-4, 1e-4, 1e-4],
                               rel=1e-12)


def test_constant_schedule_and_the_books_default():
    assert make_lr_schedule(4e-4, 100) is None  # no schedule: the optimizer's lr is left untouched
    schedule = make_lr_schedule(4e-4, 100, warmup_steps=4, schedule="constant")
    assert [schedule(s) for s in (0, 3, 4, 99)] == pytest.approx([1e-4, 4e-4, 4e-4, 4e-4], rel=1e-12)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"warmup_steps": -1}, "warmup_steps must be >= 0"),
    ({"min_lr": 1.0}, "min_lr must be between 0 and the learning rate"),
    ({"schedule": "linear"}, "Unknown learning-rate schedule 'linear'"),
])
def test_schedule_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_lr_schedule(4e-4, 100, **kwargs)


def test_schedule_sets_the_optimizer_rate_each_step(verdict_text):
    torch.manual_seed(0)
    model = GPTModel(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4)
    train_loader, _ = create_pretraining_dataloaders(verdict_text, get_gpt2_tokenizer(), 16, 2)
    rates = []
    for step, batch in zip(range(3), train_loader):
        train_step(model, [batch], optimizer, "cpu", lr=lr_at_step(step, 4e-4, 10, warmup_steps=2))
        rates.append(optimizer.param_groups[0]["lr"])
    assert rates == pytest.approx([2e-4, 4e-4, 4e-4], rel=1e-12)


# --- Gradient accumulation, clipping, fast attention, bfloat16 ------------------------------------

def test_grad_accumulation_equals_a_batch_twice_as_large(verdict_text, plain_losses):
    accumulated = _train(verdict_text, batch_size=2, grad_accum_steps=2)
    assert accumulated == pytest.approx(plain_losses, abs=1e-5)


def test_train_model_rejects_bad_accumulation(verdict_text):
    with pytest.raises(ValueError, match="grad_accum_steps must be at least 1"):
        _train(verdict_text, batch_size=2, grad_accum_steps=0)
    with pytest.raises(ValueError, match="fewer than grad_accum_steps=1000"):
        _train(verdict_text, batch_size=2, grad_accum_steps=1000)


def test_grad_clip_caps_the_gradient_norm(verdict_text):
    torch.manual_seed(0)
    model = GPTModel(CFG)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4)
    batch = next(iter(create_pretraining_dataloaders(verdict_text, get_gpt2_tokenizer(), 16, 2)[0]))
    train_step(model, [batch], optimizer, "cpu", grad_clip=1e-3)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters()]))
    assert norm.item() == pytest.approx(1e-3, rel=1e-4)  # the unclipped norm is far larger


def test_fast_config_trains_like_the_plain_model(verdict_text, plain_losses):
    assert _train(verdict_text, batch_size=4, fast=True) == pytest.approx(plain_losses, abs=1e-4)


def test_bfloat16_autocast_trains_on_cpu(verdict_text, plain_losses):
    losses = _train(verdict_text, batch_size=4, amp_dtype=torch.bfloat16)
    assert losses == pytest.approx(plain_losses, abs=1e-2)  # bfloat16 keeps ~3 significant digits


def test_bfloat16_on_a_gpu_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    with pytest.raises(ValueError, match="does not support bfloat16 .* Use float32 instead"):
        check_dtype_supported(torch.device("cuda"), "bfloat16")
    assert check_dtype_supported(torch.device("cuda"), "float32") is None
    assert check_dtype_supported(torch.device("cpu"), "bfloat16") is torch.bfloat16
    with pytest.raises(ValueError, match="Unknown dtype 'float16'"):
        check_dtype_supported(torch.device("cpu"), "float16")


# --- Padded vocabulary ----------------------------------------------------------------------------

def test_pad_vocab_size():
    assert [pad_vocab_size(n) for n in (1, 64, 65, 50257)] == [64, 64, 128, 50304]


def test_padded_model_computes_the_same_and_never_predicts_padding(tmp_path):
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    torch.manual_seed(0)
    padded = GPTModel({**CFG, "padded_vocab_size": 50304}).eval()
    x = torch.randint(0, 50257, (2, 10))
    before = model(x)
    assert padded.cfg["vocab_size"] == 50257 and padded.cfg["padded_vocab_size"] == 50304
    assert padded.tok_emb.weight.shape == (50304, 32) and padded.out_head.weight.shape == (50304, 32)
    after = padded(x)  # (2, 10, 50304)
    torch.testing.assert_close(after[..., :50257], before, atol=1e-6, rtol=0)
    assert torch.isneginf(after[..., 50257:]).all()
    # The padding rows get no gradient from the loss, and sampling never picks them.
    torch.nn.functional.cross_entropy(padded(x).flatten(0, 1), x.flatten()).backward()
    assert padded.out_head.weight.grad[50257:].abs().max() == 0
    sampled = generate(padded, x[:1, :3], max_new_tokens=12, context_size=16, temperature=50.0)
    assert sampled.max() < 50257
    # model.pth records the padding in the config; load_model rebuilds the same model.
    save_model(padded, tmp_path / "model.pth")
    rebuilt = load_model(tmp_path / "model.pth").eval()
    assert rebuilt.cfg == padded.cfg
    assert torch.equal(rebuilt(x), after)


def test_padded_vocab_trains_like_the_plain_model(verdict_text):
    """Zero rows for the padding, nothing random drawn: same losses as without padding, dropout included."""
    cfg = {**CFG, "drop_rate": 0.1}
    torch.manual_seed(123)
    plain = GPTModel(cfg)
    torch.manual_seed(123)
    padded = GPTModel({**cfg, "padded_vocab_size": 50304})
    losses = []
    for model in (plain, padded):
        torch.manual_seed(7)
        loader, _ = create_pretraining_dataloaders(verdict_text, get_gpt2_tokenizer(), 16, 4)
        optimizer = torch.optim.AdamW(model.parameters(), lr=4e-4, weight_decay=0.1)
        losses.append([train_step(model, [batch], optimizer, "cpu") for _, batch in zip(range(3), loader)])
    assert losses[1] == pytest.approx(losses[0], abs=1e-5)


# --- torch.compile and fused AdamW fall back with a warning ---------------------------------------

@pytest.mark.parametrize("fails_at", ["compile", "first call"])
def test_compile_falls_back_to_the_plain_model(monkeypatch, fails_at):
    def broken_compile(model, **kwargs):
        if fails_at == "compile":
            raise RuntimeError("no working C++ compiler")

        def call(*args):
            raise RuntimeError("InductorError: C++ compile error")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    model = GPTModel(CFG)
    rng = torch.get_rng_state()
    with pytest.warns(UserWarning, match=r"torch.compile \(backend 'inductor'\) does not work here .*training without"):
        result = compile_model(model, torch.zeros(2, 16, dtype=torch.long))
    assert result is model
    assert torch.equal(torch.get_rng_state(), rng)


def test_compile_with_the_eager_backend_gives_the_same_logits():
    torch.manual_seed(0)
    model = GPTModel(CFG).eval()
    x = torch.randint(0, 50257, (2, 16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback
        compiled = compile_model(model, x, backend="eager")
    assert compiled is not model
    assert all(p.grad is None for p in model.parameters())  # the compile run leaves no gradients
    torch.testing.assert_close(compiled(x), model(x), atol=1e-6, rtol=0)


def test_fused_adamw_falls_back_where_unsupported(monkeypatch):
    real_adamw = torch.optim.AdamW

    class NoFusedAdamW(real_adamw):
        def __init__(self, params, fused=None, **kwargs):
            if fused:
                raise RuntimeError("`fused=True` requires all the params to be on a supported device")
            super().__init__(params, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", NoFusedAdamW)
    with pytest.warns(UserWarning, match="Fused AdamW is not available"):
        optimizer = make_adamw(GPTModel(CFG).parameters(), lr=4e-4, weight_decay=0.1, fused=True)
    assert isinstance(optimizer, NoFusedAdamW) and not optimizer.defaults.get("fused")


# --- The flags of ch05/gpt_train.py ---------------------------------------------------------------

@pytest.fixture(scope="module")
def gpt_train():
    return load_script(TRAIN, "gpt_train")


def test_speed_flags_default_to_the_book(gpt_train):
    args = gpt_train.build_parser().parse_args([])
    assert (args.dtype, args.compile, args.fused_adamw, args.fast, args.pad_vocab, args.tie_weights) == (
        "float32", None, False, False, False, False)
    assert (args.grad_accum_steps, args.lr_schedule, args.warmup_steps, args.min_lr, args.grad_clip) == (
        1, "constant", 0, 0.0, None)
    assert gpt_train.build_parser().parse_args(["--compile"]).compile == "inductor"


@pytest.mark.parametrize(("flags", "message"), [
    (["--grad-accum-steps", "0"], "argument --grad-accum-steps: must be a whole number >= 1, got 0"),
    (["--warmup-steps", "-1"], "argument --warmup-steps: must be a whole number >= 0, got -1"),
    (["--grad-clip", "0"], "argument --grad-clip: must be a finite number > 0, got 0"),
    (["--lr", "nan"], "argument --lr: must be a finite number > 0, got nan"),
    (["--dtype", "float16"], "invalid choice: 'float16'"),
])
def test_gpt_train_rejects_bad_speed_flags(gpt_train, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        gpt_train.main(flags)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_gpt_train_rejects_a_min_lr_above_the_lr(gpt_train, capsys, tmp_path):
    assert gpt_train.main(["--min-lr", "0.1", "--output-dir", str(tmp_path)]) == 2
    assert "--min-lr must be between 0 and --lr (0.0004), got 0.1" in capsys.readouterr().err


def test_gpt_train_refuses_more_accumulation_steps_than_batches(gpt_train, capsys, tmp_path):
    assert gpt_train.main(["--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "16",
                           "--grad-accum-steps", "1000", "--output-dir", str(tmp_path)]) == 2
    assert "--grad-accum-steps 1000 is more than the 144 batches per epoch" in capsys.readouterr().err


def test_gpt_train_refuses_bfloat16_on_a_gpu_without_it(gpt_train, monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: False)
    assert gpt_train.main(["--device", "cuda", "--dtype", "bfloat16", "--output-dir", str(tmp_path)]) == 2
    assert "does not support bfloat16" in capsys.readouterr().err


@pytest.mark.script
def test_gpt_train_with_every_speed_option(tmp_path):
    """All options together on a tiny model; the padded model.pth then generates through gpt_generate.py."""
    run_script([TRAIN, "--emb-dim", "32", "--n-layers", "1", "--n-heads", "2", "--context-length", "16",
                "--batch-size", "2", "--epochs", "1", "--eval-freq", "2", "--eval-iter", "1", "--max-steps", "3",
                "--dtype", "bfloat16", "--compile", "eager", "--fused-adamw", "--fast", "--pad-vocab", "--tie-weights",
                "--grad-accum-steps", "2", "--lr-schedule", "cosine", "--warmup-steps", "1", "--min-lr", "1e-5",
                "--grad-clip", "1.0", "--output-dir", "run"], cwd=tmp_path)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["config"]["vocab_size"], metrics["config"]["padded_vocab_size"]) == (50257, 50304)
    assert metrics["config"]["fast"] and metrics["config"]["tie_weights"]
    assert (metrics["global_batch_size"], metrics["global_steps"], metrics["tokens_seen"]) == (4, 3, 3 * 4 * 16)
    assert len(metrics["step_losses"]) == 3 and all(10 < loss < 12 for loss in metrics["step_losses"])
    out = run_script([GENERATE, "--weights", str(tmp_path / "run" / "model.pth"), "--max-new-tokens", "5"],
                     cwd=tmp_path).stdout
    assert out.startswith("Every effort moves you")


@pytest.mark.script
def test_bench_train_quick(tmp_path):
    proc = run_script([BENCH, "--quick", "--variants", "plain,fast,hf-sdpa", "--compile-backend", "eager",
                       "--output-dir", str(tmp_path)])
    assert "variant" in proc.stdout and "tokens/s" in proc.stdout and "peak MiB" in proc.stdout
    for name in ("plain", "fast", "hf-sdpa"):
        assert f"\n{name} " in proc.stdout, name
    assert "failed" not in proc.stdout
    assert "max |diff| vs plain" in proc.stdout
    assert (tmp_path / "train_convergence.png").stat().st_size > 0
    report = json.loads((tmp_path / "train_speed.json").read_text())
    assert [row["variant"] for row in report["speed"]] == ["plain", "fast", "hf-sdpa"]
    assert set(report["convergence"]) == {"plain", "fast"}


@pytest.mark.script
def test_bench_train_curves_only_and_bad_step_counts(tmp_path):
    proc = run_script([BENCH, "--quick", "--steps", "0", "--variants", "plain,hf-eager-tied", "--output-dir",
                       str(tmp_path)])
    assert "tokens/s" not in proc.stdout and "Convergence on the-verdict" in proc.stdout
    report = json.loads((tmp_path / "train_speed.json").read_text())
    assert report["speed"] == [] and set(report["convergence"]) == {"plain"}  # HF variants only in the speed table
    bad = run_script([BENCH, "--quick", "--steps", "0", "--converge-steps", "0"], check=False)
    assert bad.returncode == 2 and "must not both be 0" in bad.stderr
