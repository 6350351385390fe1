"""Checks for the starter notebooks (``chNN/starter.ipynb``): a learner writes a piece, a check says what is wrong.

Every ``check_*`` function takes the learner's class or function, runs it on small
inputs with fixed seeds and compares it with this package's implementation (the
learner's module gets the same weights, through the book's attribute names
``W_query``, ``W_key``, ``W_value``, ``out_proj``, ``scale``, ``shift`` ...). It
prints one Korean "통과" line, or raises `ExerciseCheckError` whose Korean message
says exactly what is wrong: a body still blank ("아직 채우지 않았습니다: ..."), a
wrong shape (expected against got), a future leak (changing a later token changed
an earlier output), a missing $\\sqrt{d_k}$, a mask applied after the softmax, a
missing transpose, padding not masked with -100 ...

The diagnoses come from computing the usual mistakes ourselves on the same weights
(the attention without scaling, with the mask after the softmax, ...) and naming
the one the learner's output equals. In a notebook, `run_check` prints the message
instead of raising, so a notebook with blanks still runs to the end.

Chapters: ch02 (tokenizer, dataset), ch03 (attention), ch04 (GPT pieces), ch05
(loss, generation), ch06 (classification loss and accuracy), ch07 (prompt format,
collate function), appendix E (LoRA).
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

_SEED = 123
_ATOL, _RTOL = 1e-5, 1e-4


class ExerciseCheckError(AssertionError):
    """The learner's attempt does not do what the exercise asks; the message (Korean) says what is wrong."""


def run_check(check_fn: Callable, *args, **kwargs) -> None:
    """Run ``check_fn(*args, **kwargs)``; print its diagnosis instead of raising (a notebook keeps running).

    Returns nothing, so a notebook cell shows only the printed line; call the check
    function itself to get the `ExerciseCheckError`.
    """
    try:
        check_fn(*args, **kwargs)
    except ExerciseCheckError as exc:
        print(f"아직 아닙니다 ({check_fn.__name__}): {exc}")


def _passed(message: str) -> None:
    print(f"통과: {message}")


# --------------------------------------------------------------------------- calling the learner's code


def _name(obj) -> str:
    return getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None) or type(obj).__name__


def _call(what: str, fn: Callable, *args, **kwargs):
    """Call the learner's `fn`; turn a blank or a crash into an ExerciseCheckError that says where."""
    try:
        return fn(*args, **kwargs)
    except ExerciseCheckError:
        raise
    except NotImplementedError as exc:
        raise ExerciseCheckError(f"아직 채우지 않았습니다: {_raised_in(exc, what)} ({exc or 'NotImplementedError'})") from None
    except Exception as exc:  # the learner's code crashed: say where and what, with a hint for the usual causes
        text = str(exc)
        hint = ""
        if any(s in text for s in ("must match the size", "size mismatch", "cannot be multiplied",
                                   "shape", "dimension")):
            hint = (" 행렬 곱이나 마스크의 모양이 서로 맞지 않습니다: 각 단계에서 .shape를 출력해 보세요 "
                    "(전치 transpose의 축, 마스크를 [:num_tokens, :num_tokens]로 잘랐는지).")
        raise ExerciseCheckError(f"{what} 실행 중 오류가 났습니다: {type(exc).__name__}: {text}.{hint}") from exc


def _raised_in(exc: BaseException, default: str) -> str:
    """Qualified name of the function that raised `exc` (the innermost blank), e.g. "LoRALayer.__init__"."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None:
        return default
    code = tb.tb_frame.f_code
    if code.co_name == "<module>":
        return default
    if hasattr(code, "co_qualname"):  # Python 3.11+
        return code.co_qualname
    owner = tb.tb_frame.f_locals.get("self")
    return f"{type(owner).__name__}.{code.co_name}" if owner is not None else code.co_name


def _construct(cls, *args, **kwargs):
    return _call(f"{_name(cls)}.__init__", cls, *args, **kwargs)


def _as_tensor(got, what: str) -> torch.Tensor:
    if not isinstance(got, torch.Tensor):
        raise ExerciseCheckError(f"{what}은(는) 텐서를 돌려줘야 합니다. 실제로 돌려준 것: {type(got).__name__}.")
    return got


def _check_shape(got, expected: tuple, what: str) -> torch.Tensor:
    got = _as_tensor(got, what)
    actual = tuple(got.shape)
    if actual != tuple(expected):
        message = f"{what}의 모양이 틀렸습니다: 기대 {tuple(expected)}, 실제 {actual}."
        if sorted(actual) == sorted(expected):
            message += " 같은 크기들의 순서만 바뀌었습니다: 전치(transpose)나 view/reshape의 축 순서를 확인하세요."
        raise ExerciseCheckError(message)
    return got


def _close(a: torch.Tensor, b: torch.Tensor, atol: float = _ATOL, rtol: float = _RTOL) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=atol, rtol=rtol))


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def _match_variant(got: torch.Tensor, variants: list[tuple[torch.Tensor, str]]) -> None:
    """Raise the message of the first known mistake whose output equals `got`."""
    for output, message in variants:
        if _close(got, output, atol=1e-4, rtol=1e-3):
            raise ExerciseCheckError(message)


def _no_nan(got: torch.Tensor, what: str, hint: str) -> None:
    if not torch.isfinite(got).all():
        raise ExerciseCheckError(f"{what}에 NaN이나 inf가 있습니다. {hint}")


def _generator(seed: int = _SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(*shape, seed: int = _SEED, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=_generator(seed)) * scale


def _module_param(module: nn.Module, name: str, owner: str, expected: str):
    if not hasattr(module, name):
        raise ExerciseCheckError(
            f"{owner}에 `{name}` 속성이 없습니다. 책의 이름을 그대로 쓰세요: {expected}.")
    return getattr(module, name)


@torch.no_grad()
def _set_projection(module: nn.Module, name: str, weight: torch.Tensor, owner: str,
                    bias: torch.Tensor | None = None) -> None:
    """Copy `weight` (nn.Linear layout: out x in) into the learner's `name`: an nn.Linear or a raw (in x out) matrix."""
    layer = _module_param(module, name, owner, "W_query, W_key, W_value (멀티 헤드라면 out_proj도)")
    if isinstance(layer, nn.Linear):
        if tuple(layer.weight.shape) != tuple(weight.shape):
            raise ExerciseCheckError(
                f"{owner}.{name}의 가중치 모양이 기대 {tuple(weight.shape)} (nn.Linear(입력 차원, 출력 차원)), "
                f"실제 {tuple(layer.weight.shape)}입니다.")
        layer.weight.copy_(weight)
        if layer.bias is not None:
            layer.bias.copy_(bias if bias is not None else torch.zeros_like(layer.bias))
    elif isinstance(layer, torch.Tensor):
        if tuple(layer.shape) != tuple(weight.T.shape):
            raise ExerciseCheckError(
                f"{owner}.{name}의 모양이 기대 {tuple(weight.T.shape)} (d_in, d_out), 실제 {tuple(layer.shape)}입니다.")
        layer.copy_(weight.T)
    else:
        raise ExerciseCheckError(f"{owner}.{name}은(는) nn.Linear나 nn.Parameter여야 합니다 "
                                 f"(실제: {type(layer).__name__}).")


def _future_leak(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, changed: torch.Tensor) -> tuple[int, float]:
    """(first changed position, largest change of the outputs before it) when the inputs from that position change."""
    p = x.shape[1] // 2
    x2 = x.clone()
    x2[:, p:] = changed[:, p:]
    before, after = run(x), run(x2)
    return p, _max_diff(before[:, :p], after[:, :p])


def _leak_message(p: int, diff: float) -> str:
    return (f"미래 정보가 샙니다: 위치 {p}부터의 입력만 바꿨는데 그 앞 위치 0-{p - 1}의 출력이 바뀌었습니다 "
            f"(최대 차이 {diff:.2e}). 코잘 마스크가 softmax 전에, 대각선 위(미래) 칸에 -inf로 들어가야 합니다.")


# --------------------------------------------------------------------------- chapter 2


_SAMPLE_TEXT = ('"Is the lantern lit?" she asked -- twice. Nobody answered; the wind, cold and loud, '
                'rattled the door. She lit it herself: one match, then another!')


def check_simple_tokenizer(cls) -> None:
    """ch02: a SimpleTokenizerV1-style class (vocab dict -> encode/decode) gives the package's IDs and text back."""
    from .tokenizer import SimpleTokenizerV1, build_vocab, split_text

    vocab = build_vocab(_SAMPLE_TEXT, special_tokens=("<|endoftext|>", "<|unk|>"))
    ref = SimpleTokenizerV1(vocab)
    tok = _construct(cls, vocab)
    name = _name(cls)
    got_ids = _call(f"{name}.encode", tok.encode, _SAMPLE_TEXT)
    want_ids = ref.encode(_SAMPLE_TEXT)
    if not isinstance(got_ids, (list, tuple)) or not all(isinstance(i, int) for i in got_ids):
        raise ExerciseCheckError(f"encode는 정수 ID의 리스트를 돌려줘야 합니다 (실제: {type(got_ids).__name__}).")
    if list(got_ids) != want_ids:
        tokens = split_text(_SAMPLE_TEXT)
        inverse = {i: s for s, i in vocab.items()}
        if len(got_ids) != len(want_ids):
            extra = " 공백이 토큰으로 남았다면 strip()한 뒤 빈 문자열을 버리세요." if len(got_ids) > len(want_ids) else ""
            raise ExerciseCheckError(
                f"encode가 만든 토큰 수가 기대 {len(want_ids)}, 실제 {len(got_ids)}입니다: 텍스트를 나누는 "
                f"정규 표현식이 구두점 ,.:;?_!\"()' 와 --, 공백에서 나누는지 확인하세요.{extra}")
        i = next(k for k, (a, b) in enumerate(zip(got_ids, want_ids)) if a != b)
        raise ExerciseCheckError(
            f"encode의 {i}번째 ID가 다릅니다: 토큰 {tokens[i]!r}의 ID는 {want_ids[i]}인데 {got_ids[i]}"
            f"({inverse.get(got_ids[i], '?')!r}의 ID)를 냈습니다. vocab[토큰]으로 찾으세요.")
    text = _call(f"{name}.decode", tok.decode, want_ids)
    want_text = ref.decode(want_ids)
    if text != want_text:
        if isinstance(text, str) and text.replace(" ", "") == want_text.replace(" ", ""):
            raise ExerciseCheckError(
                "decode의 띄어쓰기가 다릅니다: 토큰을 공백으로 이은 뒤 구두점 앞의 공백을 지우세요 "
                f"(예: 'asked ,' -> 'asked,'). 기대 {want_text[:60]!r}..., 실제 {str(text)[:60]!r}...")
        raise ExerciseCheckError(f"decode 결과가 다릅니다: 기대 {want_text[:60]!r}..., 실제 {str(text)[:60]!r}...")
    _passed(f"{name} — encode {len(want_ids)}개 ID, decode가 원문으로 돌아옵니다")


def check_dataset(cls) -> None:
    """ch02: a GPTDatasetV1-style dataset (txt, tokenizer, max_length, stride) gives the sliding-window pairs."""
    from .data import GPTDatasetV1
    from .tokenizer import get_gpt2_tokenizer

    tokenizer = get_gpt2_tokenizer()
    text = _SAMPLE_TEXT * 2
    max_length, stride = 6, 4
    ref = GPTDatasetV1(text, tokenizer, max_length, stride)
    name = _name(cls)
    ds = _construct(cls, text, tokenizer, max_length, stride)
    n = _call(f"{name}.__len__", len, ds)
    if n != len(ref):
        hint = (" stride만큼 창을 옮기세요: range(0, len(token_ids) - max_length, stride)."
                if n > len(ref) else " 마지막 창까지 만들었는지 확인하세요 (range의 끝: len(token_ids) - max_length).")
        raise ExerciseCheckError(f"샘플 수가 기대 {len(ref)}, 실제 {n}입니다 (max_length={max_length}, "
                                 f"stride={stride}).{hint}")
    for index in range(len(ref)):
        item = _call(f"{name}.__getitem__", ds.__getitem__, index)
        if not (isinstance(item, tuple) and len(item) == 2):
            raise ExerciseCheckError("한 샘플은 (입력, 타깃) 두 텐서의 튜플이어야 합니다.")
        inp = _check_shape(item[0], (max_length,), f"샘플 {index}의 입력")
        tgt = _check_shape(item[1], (max_length,), f"샘플 {index}의 타깃")
        want_in, want_tgt = ref[index]
        if not torch.equal(inp, want_in):
            raise ExerciseCheckError(f"샘플 {index}의 입력이 다릅니다: 기대 {want_in.tolist()}, 실제 {inp.tolist()}. "
                                     f"i번째 샘플은 token_ids[i*stride : i*stride + max_length]입니다.")
        if not torch.equal(tgt, want_tgt):
            if torch.equal(tgt, inp):
                raise ExerciseCheckError("타깃이 입력과 똑같습니다: 타깃은 입력을 한 토큰 오른쪽으로 민 것입니다 "
                                         "(token_ids[i+1 : i+max_length+1]). 각 위치의 정답은 다음 토큰입니다.")
            if torch.equal(tgt[1:], inp[:-1]):
                raise ExerciseCheckError("타깃을 반대 방향(왼쪽)으로 밀었습니다: 타깃의 j번째는 입력의 j+1번째 "
                                         "토큰이어야 합니다.")
            raise ExerciseCheckError(f"샘플 {index}의 타깃이 다릅니다: 기대 {want_tgt.tolist()}, 실제 {tgt.tolist()}.")
    _passed(f"{name} — 샘플 {len(ref)}개, 타깃이 입력보다 한 토큰 뒤 (max_length={max_length}, stride={stride})")


# --------------------------------------------------------------------------- chapter 3


def _attention_variant(x: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, *, num_heads: int = 1,
                       causal: bool = True, out_proj: tuple[torch.Tensor, torch.Tensor] | None = None,
                       scale: str = "head_dim", mask: str = "before", scores_transposed: bool = False,
                       softmax_dim: int = -1, merge_transposed: bool = True) -> torch.Tensor:
    """Attention of x (b, T, d_in) with Linear-layout weights, right or with one known mistake (for diagnoses)."""
    b, T, _ = x.shape
    d_out = wq.shape[0]
    head_dim = d_out // num_heads

    def heads(t):  # (b, T, d_out) -> (b, h, T, head_dim)
        return t.view(b, T, num_heads, head_dim).transpose(1, 2)

    q, k, v = heads(x @ wq.T), heads(x @ wk.T), heads(x @ wv.T)
    scores = k @ q.transpose(-2, -1) if scores_transposed else q @ k.transpose(-2, -1)  # (b, h, T, T)
    divisor = {"head_dim": head_dim ** 0.5, "none": 1.0, "d_k": float(head_dim), "d_out": d_out ** 0.5}[scale]
    future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    if causal and mask == "before":
        scores = scores.masked_fill(future, -torch.inf)
    elif causal and mask == "zero_fill":
        scores = scores.masked_fill(future, 0.0)
    weights = torch.softmax(scores / divisor, dim=softmax_dim)
    if causal and mask == "after_softmax":
        weights = weights.masked_fill(future, 0.0)
    context = weights @ v  # (b, h, T, head_dim)
    context = context.transpose(1, 2).reshape(b, T, d_out) if merge_transposed else context.reshape(b, T, d_out)
    if out_proj is not None:
        context = context @ out_proj[0].T + out_proj[1]
    return context


_MSG_UNSCALED = ("√d_k 스케일링이 빠졌습니다: 어텐션 점수를 softmax에 넣기 전에 keys.shape[-1] ** 0.5로 나누세요. "
                 "나누지 않으면 차원이 클수록 점수가 커져 softmax가 한 토큰에 쏠립니다.")
_MSG_DK = "점수를 d_k로 나눴습니다: √d_k(keys.shape[-1] ** 0.5)로 나눠야 합니다."
_MSG_AFTER = ("마스크를 softmax 뒤에 적용했습니다 (다시 정규화하지 않고 0으로만 가림): 미래 위치의 점수가 softmax 분모에 "
              "들어가 미래 정보가 새고, 각 행의 합도 1이 아닙니다. softmax 전에 masked_fill(mask, -torch.inf)로 가리세요.")
_MSG_ZERO = ("마스크 칸을 0으로 채웠습니다: exp(0) = 1이라 미래 토큰이 여전히 가중치를 받습니다 (미래 정보 누출). "
             "-torch.inf로 채워야 softmax 뒤에 정확히 0이 됩니다.")
_MSG_NOMASK = "코잘 마스크가 없습니다: 각 토큰이 미래 토큰까지 봅니다. 대각선 위를 -torch.inf로 가리세요."
_MSG_SCORES_T = ("어텐션 점수가 전치되어 있습니다: queries @ keys.T (행 = 쿼리)여야 하는데 keys @ queries.T를 계산했습니다.")
_MSG_SOFTMAX_DIM = "softmax를 잘못된 축으로 계산했습니다: 각 쿼리의 행(마지막 축, dim=-1)의 합이 1이 되어야 합니다."


def _attention_variants(x, wq, wk, wv, *, causal: bool, num_heads: int = 1, out_proj=None) -> list:
    common = {"num_heads": num_heads, "causal": causal, "out_proj": out_proj}
    variants = [
        (_attention_variant(x, wq, wk, wv, scale="none", **common), _MSG_UNSCALED),
        (_attention_variant(x, wq, wk, wv, scale="d_k", **common), _MSG_DK),
        (_attention_variant(x, wq, wk, wv, scores_transposed=True, **common), _MSG_SCORES_T),
        (_attention_variant(x, wq, wk, wv, softmax_dim=-2, **common), _MSG_SOFTMAX_DIM),
    ]
    if causal:
        variants += [
            (_attention_variant(x, wq, wk, wv, mask="after_softmax", **common), _MSG_AFTER),
            (_attention_variant(x, wq, wk, wv, mask="zero_fill", **common), _MSG_ZERO),
            (_attention_variant(x, wq, wk, wv, mask="none", **common), _MSG_NOMASK),
        ]
    else:
        variants.append((_attention_variant(x, wq, wk, wv, num_heads=num_heads, causal=True, out_proj=out_proj),
                         "이 단계의 셀프 어텐션에는 마스크가 없어야 합니다: 모든 토큰이 모든 토큰을 봅니다 "
                         "(코잘 마스크는 다음 단계 CausalAttention에서 넣습니다)."))
    if num_heads > 1:
        d_out = wq.shape[0]
        variants += [
            (_attention_variant(x, wq, wk, wv, scale="d_out", **common),
             f"점수를 √d_out(√{d_out})으로 나눴습니다: 헤드마다 √head_dim(√{d_out // num_heads})으로 나눠야 합니다."),
            (_attention_variant(x, wq, wk, wv, merge_transposed=False, **common),
             "헤드를 합칠 때 전치가 빠졌습니다: (b, num_heads, num_tokens, head_dim)을 바로 view하면 토큰과 헤드가 "
             "섞입니다. 먼저 .transpose(1, 2)로 (b, num_tokens, num_heads, head_dim)을 만든 뒤 "
             ".contiguous().view(b, num_tokens, d_out)하세요."),
            (_attention_variant(x, wq, wk, wv, num_heads=num_heads, causal=causal),
             "out_proj를 적용하지 않았습니다: 헤드들을 이어 붙인 문맥 벡터를 마지막에 self.out_proj에 통과시키세요."),
        ]
    return variants


def _attention_check(cls, args: tuple, x: torch.Tensor, ref: nn.Module, *, causal: bool, num_heads: int = 1,
                     out_proj: bool = False, two_d: bool = False, dropout_index: int | None = None) -> tuple:
    """Shared steps of the attention checks: build, copy weights, shape, NaN, equality with diagnoses, leak."""
    name = _name(cls)
    d_in = x.shape[-1]
    d_out = args[1]
    module = _construct(cls, *args)
    wq, wk, wv = (_randn(d_out, d_in, seed=_SEED + i) for i in range(3))
    proj = (_randn(d_out, d_out, seed=_SEED + 3, scale=0.5), _randn(d_out, seed=_SEED + 4, scale=0.1)) if out_proj else None
    for target in (module, ref):
        for attr, w in (("W_query", wq), ("W_key", wk), ("W_value", wv)):
            _set_projection(target, attr, w, name if target is module else "reference")
        if out_proj:
            _set_projection(target, "out_proj", proj[0], name if target is module else "reference", bias=proj[1])
    module.eval()
    ref.eval()

    def run(inp):
        out = _call(f"{name}.forward", module, inp[0] if two_d else inp)
        return _as_tensor(out, f"{name}의 출력").unsqueeze(0) if two_d else _as_tensor(out, f"{name}의 출력")

    with torch.no_grad():
        want = ref(x[0] if two_d else x)
        want = want.unsqueeze(0) if two_d else want
        got = run(x)
    expected_shape = tuple(want.shape[1:]) if two_d else tuple(want.shape)
    _check_shape(got[0] if two_d else got, expected_shape, f"{name}의 출력")
    _no_nan(got, f"{name}의 출력", "어떤 행의 점수가 전부 -inf가 되면 softmax가 0/0을 계산합니다: 마스크는 "
            "torch.triu(..., diagonal=1)처럼 대각선 위만 가려야 합니다 (각 토큰은 자기 자신을 볼 수 있어야 합니다).")
    variants = _attention_variants(x, wq, wk, wv, causal=causal, num_heads=num_heads, out_proj=proj)
    if not _close(got, want):
        _match_variant(got, variants)
        if causal:
            with torch.no_grad():
                p, leak = _future_leak(run, x, _randn(*x.shape, seed=_SEED + 9))
            if leak > 1e-6:
                raise ExerciseCheckError(_leak_message(p, leak))
        raise ExerciseCheckError(
            f"{name}의 출력 모양은 맞지만 값이 다릅니다 (최대 차이 {_max_diff(got, want):.3g}). 점검할 것: "
            f"queries @ keys의 전치, √d_k로 나누기, softmax(dim=-1), 가중치 @ values의 순서.")
    summary = f"모양 {expected_shape}"
    if causal:
        with torch.no_grad():
            p, leak = _future_leak(run, x, _randn(*x.shape, seed=_SEED + 9))
        if leak > 1e-6:  # cannot happen when the values equal the reference; kept as an independent check
            raise ExerciseCheckError(_leak_message(p, leak))
        summary += ", 미래 정보 누출 없음"
    if dropout_index is not None:
        with_dropout = list(args)
        with_dropout[dropout_index] = 0.5
        dropped = _construct(cls, *with_dropout)
        dropped.load_state_dict(module.state_dict())
        dropped.train()
        torch.manual_seed(_SEED)
        with torch.no_grad():
            out = _call(f"{name}.forward", dropped, x)
        if _close(out, got):
            raise ExerciseCheckError(
                "값은 맞지만 드롭아웃이 빠졌습니다: dropout=0.5, 훈련 모드에서도 출력이 그대로입니다. "
                "softmax 뒤의 어텐션 가중치에 self.dropout을 적용하세요.")
        summary += ", 드롭아웃 적용"
    return summary, _max_diff(got, want)


def check_self_attention(cls) -> None:
    """ch03: SelfAttention_v1/v2-style class (d_in, d_out), input (num_tokens, d_in): scaled dot-product attention."""
    from .attention import SelfAttention_v2

    d_in, d_out = 3, 4
    x = _randn(1, 6, d_in, seed=_SEED + 7)
    summary, diff = _attention_check(cls, (d_in, d_out), x, SelfAttention_v2(d_in, d_out), causal=False, two_d=True)
    _passed(f"{_name(cls)} — {summary}, buildllm.attention.SelfAttention_v2와 같은 값 (최대 차이 {diff:.1e})")


def check_causal_attention(cls) -> None:
    """ch03: CausalAttention-style class (d_in, d_out, context_length, dropout), input (b, num_tokens, d_in)."""
    from .attention import CausalAttention

    d_in, d_out, context_length = 3, 4, 8
    x = _randn(2, 6, d_in, seed=_SEED + 7)
    summary, diff = _attention_check(cls, (d_in, d_out, context_length, 0.0), x,
                                     CausalAttention(d_in, d_out, context_length, 0.0), causal=True, dropout_index=3)
    _passed(f"{_name(cls)} — {summary}, buildllm.attention.CausalAttention과 같은 값 (최대 차이 {diff:.1e})")


def check_multihead_attention(cls) -> None:
    """ch03: MultiHeadAttention-style class (d_in, d_out, context_length, dropout, num_heads) with out_proj."""
    from .attention import MultiHeadAttention

    d_in, d_out, context_length, num_heads = 5, 12, 8, 3
    x = _randn(2, 6, d_in, seed=_SEED + 7)
    summary, diff = _attention_check(
        cls, (d_in, d_out, context_length, 0.0, num_heads), x,
        MultiHeadAttention(d_in, d_out, context_length, 0.0, num_heads), causal=True, num_heads=num_heads,
        out_proj=True, dropout_index=3)
    _passed(f"{_name(cls)} — {summary}, 헤드 {num_heads}개, buildllm.attention.MultiHeadAttention과 같은 값 "
            f"(최대 차이 {diff:.1e})")


# --------------------------------------------------------------------------- chapter 4

_SMALL_CFG = {"vocab_size": 50, "context_length": 8, "emb_dim": 12, "n_heads": 3, "n_layers": 2,
              "drop_rate": 0.0, "qkv_bias": False}


@torch.no_grad()
def _randomize(module: nn.Module, seed: int = _SEED) -> None:
    """Give every parameter distinct values (norm scales near 1), so swapped or missing pieces show."""
    g = _generator(seed)
    for name, p in module.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        p.copy_(1 + 0.2 * noise if name.endswith("scale") else 0.3 * noise)


@torch.no_grad()
def _copy_parameters(ref: nn.Module, module: nn.Module, owner: str, names_hint: str) -> None:
    """Copy the reference's parameters into the learner's module by name (the book's names)."""
    theirs = dict(module.named_parameters())
    ours = dict(ref.named_parameters())
    missing = [n for n in ours if n not in theirs]
    if missing:
        extra = [n for n in theirs if n not in ours]
        raise ExerciseCheckError(
            f"{owner}의 파라미터 이름이 책과 다릅니다: 없는 것 {missing[:4]}{' ...' if len(missing) > 4 else ''}"
            + (f", 대신 있는 것 {extra[:4]}" if extra else "") + f". 책의 이름을 쓰세요: {names_hint}.")
    for n, p in ours.items():
        if theirs[n].shape != p.shape:
            raise ExerciseCheckError(f"{owner}의 `{n}` 모양이 기대 {tuple(p.shape)}, 실제 {tuple(theirs[n].shape)}입니다.")
        theirs[n].copy_(p)
    extra = [n for n in theirs if n not in ours]
    if extra:
        raise ExerciseCheckError(f"{owner}에 책에 없는 파라미터가 있습니다: {extra[:4]}. 예: 출력 층은 bias=False입니다.")


def check_layer_norm(cls) -> None:
    """ch04: LayerNorm-style class (emb_dim) with `scale` and `shift`: mean 0, variance 1 (biased), eps."""
    from .model import LayerNorm

    emb_dim = 5
    name = _name(cls)
    module = _construct(cls, emb_dim)
    for attr, value in (("scale", 1.0), ("shift", 0.0)):
        p = _module_param(module, attr, name, "scale (1로 시작), shift (0으로 시작)")
        if not isinstance(p, nn.Parameter):
            raise ExerciseCheckError(f"{name}.{attr}은(는) 훈련되는 nn.Parameter여야 합니다.")
        _check_shape(p.data, (emb_dim,), f"{name}.{attr}")
        if not torch.all(p == value):
            raise ExerciseCheckError(f"{name}.{attr}은(는) {value:g}로 시작해야 합니다 (처음에는 정규화한 값을 그대로 둠).")
    x = _randn(2, 3, emb_dim, seed=_SEED + 1, scale=3.0) + 2.0
    module.eval()
    got = _check_shape(_call(f"{name}.forward", module, x), tuple(x.shape), f"{name}의 출력")
    mean, var = got.mean(dim=-1), got.var(dim=-1, unbiased=False)
    ref = LayerNorm(emb_dim)
    _randomize(ref)
    with torch.no_grad():
        module.scale.copy_(ref.scale)
        module.shift.copy_(ref.shift)
    got = _call(f"{name}.forward", module, x)
    want = ref(x).detach()
    if not _close(got, want):
        m, v = x.mean(dim=-1, keepdim=True), x.var(dim=-1, keepdim=True, unbiased=False)
        normalized = (x - m) / torch.sqrt(v + ref.eps)
        variants = [
            (ref.scale * (x - m) / torch.sqrt(x.var(dim=-1, keepdim=True) + ref.eps) + ref.shift,
             "분산을 n-1로 나눴습니다 (unbiased=True가 기본값): GPT-2처럼 x.var(dim=-1, keepdim=True, "
             "unbiased=False)를 쓰세요."),
            (normalized, "scale과 shift를 적용하지 않았습니다: 마지막에 self.scale * norm_x + self.shift를 돌려주세요."),
            (ref.scale * (x - x.mean(dim=0, keepdim=True)) / torch.sqrt(x.var(dim=0, keepdim=True, unbiased=False)
                                                                     + ref.eps) + ref.shift,
             "배치 축(dim=0)으로 정규화했습니다: 층 정규화는 토큰마다 마지막 축(dim=-1, 임베딩 차원)으로 합니다."),
            (ref.scale * (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False)
                                                                     + ref.eps) + ref.shift,
             "토큰 축(dim=1)으로 정규화했습니다: 층 정규화는 토큰마다 마지막 축(dim=-1, 임베딩 차원)으로 합니다."),
        ]
        _match_variant(got.detach(), variants)
        raise ExerciseCheckError(f"{name}의 출력 값이 다릅니다 (최대 차이 {_max_diff(got, want):.3g}). "
                                 f"(x - 평균) / sqrt(분산 + eps)를 마지막 축으로 계산했는지 확인하세요.")
    if not (mean.abs().max() < 1e-4 and (var - 1).abs().max() < 1e-3):
        raise ExerciseCheckError("scale=1, shift=0일 때 출력의 평균이 0, 분산이 1이 아닙니다.")
    constant = torch.full((1, 2, emb_dim), 3.0)
    out = _call(f"{name}.forward", module, constant)
    if not torch.isfinite(out).all():
        raise ExerciseCheckError("모든 값이 같은 입력(분산 0)에서 NaN이 나옵니다: 분산에 self.eps를 더한 뒤 "
                                 "제곱근을 구하세요.")
    _passed(f"{name} — 평균 0, 분산 1, scale/shift 적용, buildllm.model.LayerNorm과 같은 값")


def check_gelu(cls) -> None:
    """ch04: GELU-style module in GPT-2's tanh approximation."""
    from .model import GELU

    name = _name(cls)
    module = _construct(cls)
    x = torch.linspace(-4, 4, 81)
    got = _check_shape(_call(f"{name}.forward", module, x), tuple(x.shape), f"{name}의 출력")
    want = GELU()(x)
    if not _close(got, want):
        c = math.sqrt(2.0 / math.pi)
        variants = [
            (F.gelu(x), "erf를 쓰는 정확한 GELU입니다: GPT-2는 tanh 근사식 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))"
                        "으로 훈련되었습니다."),
            (torch.relu(x), "ReLU처럼 동작합니다: 음수 입력에서도 작은 음수 값을 내는 GELU의 식을 쓰세요."),
            (2 * want, "0.5가 빠졌습니다: 0.5 * x * (1 + tanh(...))"),
            (0.5 * x * (1 + torch.tanh(c * x)), "tanh 안의 0.044715 * x**3 항이 빠졌습니다."),
            (0.5 * x * (1 + torch.tanh(x + 0.044715 * x ** 3)), "tanh 안의 √(2/π) 배가 빠졌습니다."),
        ]
        _match_variant(got, variants)
        raise ExerciseCheckError(f"{name}의 값이 다릅니다 (최대 차이 {_max_diff(got, want):.3g}).")
    _passed(f"{name} — tanh 근사 GELU, buildllm.model.GELU와 같은 값")


def check_feed_forward(cls) -> None:
    """ch04: FeedForward-style class (cfg): Linear(emb, 4*emb) -> GELU -> Linear(4*emb, emb)."""
    from .model import FeedForward

    cfg = dict(_SMALL_CFG)
    emb = cfg["emb_dim"]
    name = _name(cls)
    module = _construct(cls, cfg)
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    shapes = [tuple(m.weight.shape) for m in linears]
    if shapes != [(4 * emb, emb), (emb, 4 * emb)]:
        raise ExerciseCheckError(
            f"{name}에는 nn.Linear가 두 개 필요합니다: emb_dim -> 4*emb_dim ({emb} -> {4 * emb}), 그다음 4*emb_dim -> "
            f"emb_dim. 실제 가중치 모양(출력, 입력): {shapes}.")
    ref = FeedForward(cfg)
    _randomize(ref)
    with torch.no_grad():
        for mine, theirs in zip(linears, (ref.layers[0], ref.layers[2])):
            mine.weight.copy_(theirs.weight)
            if mine.bias is None:
                raise ExerciseCheckError("두 nn.Linear 모두 bias가 있어야 합니다 (기본값 bias=True).")
            mine.bias.copy_(theirs.bias)
    module.eval()
    x = _randn(2, 3, emb, seed=_SEED + 1)
    got = _check_shape(_call(f"{name}.forward", module, x), (2, 3, emb), f"{name}의 출력").detach()
    want = ref(x).detach()
    if not _close(got, want):
        first, last = ref.layers[0], ref.layers[2]
        variants = [
            (last(first(x)).detach(), "두 선형 층 사이에 GELU가 빠졌습니다: 활성화 함수 없이는 두 층이 하나의 선형 층과 같습니다."),
            (last(torch.relu(first(x))).detach(), "ReLU를 썼습니다: GPT-2는 GELU를 씁니다."),
            (last(F.gelu(first(x))).detach(), "정확한(erf) GELU를 썼습니다: GPT-2의 tanh 근사 GELU를 쓰세요."),
        ]
        _match_variant(got, variants)
        raise ExerciseCheckError(f"{name}의 값이 다릅니다 (최대 차이 {_max_diff(got, want):.3g}): "
                                 f"Linear -> GELU -> Linear 순서인지 확인하세요.")
    _passed(f"{name} — {emb} -> {4 * emb} -> {emb}, GELU, buildllm.model.FeedForward와 같은 값")


def _learner_and_reference(cls, reference_cls, parameter_names: str):
    """The learner's `cls` and the package's `reference_cls`, both built from the small config, in eval mode.

    The reference gets random parameters and the learner's module a copy of them (by the book's names,
    `parameter_names`), so any difference in output comes from the forward pass. Returns (cfg, name, module, ref).
    """
    cfg = dict(_SMALL_CFG)
    name = _name(cls)
    module = _construct(cls, cfg)
    ref = reference_cls(cfg)
    _randomize(ref)
    _copy_parameters(ref, module, name, parameter_names)
    module.eval()
    ref.eval()
    return cfg, name, module, ref


_BLOCK_NAMES = ("att (W_query, W_key, W_value, out_proj), ff (layers.0, layers.2), norm1, norm2 (scale, shift)")


def check_transformer_block(cls) -> None:
    """ch04: TransformerBlock-style class (cfg): pre-norm attention and feed forward, each with a shortcut."""
    from .model import TransformerBlock

    cfg, name, module, ref = _learner_and_reference(cls, TransformerBlock, _BLOCK_NAMES)
    x = _randn(2, 6, cfg["emb_dim"], seed=_SEED + 1)

    def run(inp):
        return _as_tensor(_call(f"{name}.forward", module, inp), f"{name}의 출력")

    with torch.no_grad():
        got = _check_shape(run(x), tuple(x.shape), f"{name}의 출력")
        want = ref(x)
        if not _close(got, want):
            att, ff, n1, n2 = ref.att, ref.ff, ref.norm1, ref.norm2
            h = x + att(n1(x))
            post = n1(x + att(x))
            no_att_short = att(n1(x))
            variants = [
                (n2(post + ff(post)), "층 정규화를 더한 뒤에 했습니다 (post-norm): GPT-2는 각 하위 층 앞에서 정규화합니다: "
                                      "x = x + att(norm1(x)), x = x + ff(norm2(x))."),
                (no_att_short + ff(n2(no_att_short)), "어텐션 둘레의 숏컷 연결이 빠졌습니다: 어텐션 출력에 입력 x를 더하세요."),
                (ff(n2(h)), "피드 포워드 둘레의 숏컷 연결이 빠졌습니다: 피드 포워드 출력에 그 입력을 더하세요."),
                (ff(n2(no_att_short)), "숏컷 연결이 둘 다 빠졌습니다: 각 하위 층의 출력에 그 입력을 더하세요."),
                ((x + att(n2(x))) + ff(n1(x + att(n2(x)))), "norm1과 norm2를 바꿔 썼습니다: norm1은 어텐션 앞, norm2는 "
                                                           "피드 포워드 앞입니다."),
                (h + ff(n1(h)), "norm1을 두 번 썼습니다: 피드 포워드 앞에는 norm2를 쓰세요."),
            ]
            _match_variant(got, variants)
            p, leak = _future_leak(run, x, _randn(*x.shape, seed=_SEED + 9))
            if leak > 1e-6:
                raise ExerciseCheckError(_leak_message(p, leak))
            raise ExerciseCheckError(f"{name}의 값이 다릅니다 (최대 차이 {_max_diff(got, want):.3g}).")
        p, leak = _future_leak(run, x, _randn(*x.shape, seed=_SEED + 9))
    if leak > 1e-6:
        raise ExerciseCheckError(_leak_message(p, leak))
    _passed(f"{name} — 모양 {tuple(x.shape)}, 미래 정보 누출 없음, buildllm.model.TransformerBlock과 같은 값")


def check_gpt_model(cls) -> None:
    """ch04: GPTModel-style class (cfg): embeddings, blocks, final norm, output head; logits (b, T, vocab)."""
    from .model import GPTModel

    cfg, name, module, ref = _learner_and_reference(
        cls, GPTModel, "tok_emb, pos_emb, trf_blocks.0.att..., final_norm, out_head (bias=False)")
    idx = torch.randint(0, cfg["vocab_size"], (2, 6), generator=_generator(_SEED + 1))
    changed = torch.randint(0, cfg["vocab_size"], (2, 6), generator=_generator(_SEED + 2))

    def run(inp):
        return _as_tensor(_call(f"{name}.forward", module, inp), f"{name}의 출력")

    with torch.no_grad():
        got = _check_shape(run(idx), (2, 6, cfg["vocab_size"]), f"{name}의 출력(로짓)")
        want = ref(idx)
        if not _close(got, want):
            tok = ref.tok_emb(idx)
            pos = ref.pos_emb(torch.arange(idx.shape[1]))
            variants = [
                (ref.out_head(ref.final_norm(ref.trf_blocks(tok))), "위치 임베딩이 빠졌습니다: tok_emb(idx)에 "
                                                                     "pos_emb(torch.arange(num_tokens))를 더하세요."),
                (ref.out_head(ref.trf_blocks(tok + pos)), "마지막 층 정규화(final_norm)가 빠졌습니다: out_head 앞에 "
                                                          "self.final_norm을 적용하세요."),
            ]
            _match_variant(got, variants)
            p, leak = _future_leak(run, idx, changed)
            if leak > 1e-6:
                raise ExerciseCheckError(_leak_message(p, leak))
            raise ExerciseCheckError(f"{name}의 로짓이 다릅니다 (최대 차이 {_max_diff(got, want):.3g}): 순서는 "
                                     f"임베딩 합 -> drop_emb -> trf_blocks -> final_norm -> out_head입니다.")
        p, leak = _future_leak(run, idx, changed)
    if leak > 1e-6:
        raise ExerciseCheckError(_leak_message(p, leak))
    _passed(f"{name} — 로짓 (2, 6, {cfg['vocab_size']}), 미래 정보 누출 없음, buildllm.model.GPTModel과 같은 값")


# --------------------------------------------------------------------------- chapter 5


def _tiny_model(num_classes: int | None = None, seed: int = _SEED) -> nn.Module:
    from .model import GPTModel

    torch.manual_seed(seed)
    cfg = dict(_SMALL_CFG, n_layers=1)
    if num_classes is not None:
        cfg["num_classes"] = num_classes
    model = GPTModel(cfg)
    model.eval()
    return model


def _check_loss_value(got, what: str) -> torch.Tensor:
    got = _as_tensor(got, what)
    if got.numel() != 1:
        raise ExerciseCheckError(f"{what}은(는) 값 하나(스칼라)여야 합니다. 실제 모양 {tuple(got.shape)}: "
                                 f"cross_entropy의 기본값 reduction='mean'으로 평균을 내세요.")
    if not got.requires_grad:
        raise ExerciseCheckError(f"{what}에서 역전파할 수 없습니다 (requires_grad=False): .item()이나 torch.no_grad() "
                                 f"없이 텐서 그대로 돌려주세요.")
    return got.detach().reshape(())


def check_calc_loss_batch(fn) -> None:
    """ch05: calc_loss_batch(input_batch, target_batch, model, device) -> mean next-token cross entropy."""
    from .training import calc_loss_batch

    model = _tiny_model()
    vocab = model.cfg["vocab_size"]
    inputs = torch.randint(0, vocab, (2, 6), generator=_generator(_SEED + 1))
    targets = torch.randint(0, vocab, (2, 6), generator=_generator(_SEED + 2))
    name = _name(fn)
    got = _check_loss_value(_call(name, fn, inputs, targets, model, torch.device("cpu")), f"{name}의 결과")
    with torch.no_grad():
        want = calc_loss_batch(inputs, targets, model, "cpu")
        if not _close(got, want):
            logits = model(inputs)
            variants = [
                (F.cross_entropy(logits[:, -1], targets[:, -1]), "마지막 위치의 손실만 계산했습니다: 사전 훈련에서는 모든 "
                                                                "위치가 다음 토큰을 예측합니다. logits.flatten(0, 1)과 "
                                                                "target_batch.flatten()을 쓰세요."),
                (F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum"),
                 "손실을 더했습니다 (reduction='sum'): 평균(기본값 'mean')을 내세요."),
                (F.cross_entropy(torch.softmax(logits, -1).flatten(0, 1), targets.flatten()),
                 "softmax를 한 번 더 적용했습니다: F.cross_entropy는 로짓을 받아 안에서 log-softmax를 계산합니다."),
                (F.cross_entropy(model(targets).flatten(0, 1), inputs.flatten()),
                 "입력과 타깃을 바꿨습니다: 모델에는 input_batch를 넣고 target_batch와 비교하세요."),
                (F.cross_entropy(logits[:, :-1].flatten(0, 1), targets[:, 1:].flatten()),
                 "타깃을 한 번 더 밀었습니다: 데이터 로더의 타깃은 이미 한 토큰 밀려 있습니다."),
            ]
            _match_variant(got, variants)
            raise ExerciseCheckError(f"{name}의 손실이 기대 {float(want):.4f}, 실제 {float(got):.4f}입니다.")
    _passed(f"{name} — 손실 {float(want):.4f} (buildllm.training.calc_loss_batch와 같음), 역전파 가능")


class _ContextTooLong(ValueError):
    pass


class _BigramLogits(nn.Module):
    """A fixed stand-in for a GPT in generation checks: logits at each position depend on that position's token."""

    def __init__(self, vocab_size: int = 20, context_length: int = 6, seed: int = _SEED):
        super().__init__()
        self.table = nn.Parameter(_randn(vocab_size, vocab_size, seed=seed, scale=2.0), requires_grad=False)
        self.context_length = context_length

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        if idx.shape[1] > self.context_length:
            raise _ContextTooLong(f"입력 {idx.shape[1]}개 토큰이 문맥 길이 {self.context_length}보다 깁니다")
        return self.table[idx]  # (b, T, vocab)


def check_generate(fn) -> None:
    """ch05: generate(model, idx, max_new_tokens, context_size, temperature=0.0, top_k=None[, eos_id]) -> (b, T + new)."""
    from .generation import generate

    name = _name(fn)
    model = _BigramLogits()
    prompt = torch.tensor([[3, 7, 1]])
    max_new, context_size = 5, model.context_length
    want = generate(model, prompt, max_new, context_size)

    def call(idx, new, **options):
        try:
            return _call(name, fn, model, idx, new, context_size, **options)
        except ExerciseCheckError as exc:
            if isinstance(exc.__cause__, _ContextTooLong):
                raise ExerciseCheckError(
                    "문맥 길이보다 긴 입력을 자르지 않았습니다: 모델에는 idx[:, -context_size:]만 넣으세요.") from None
            raise

    got = _as_tensor(call(prompt, max_new, temperature=0.0, top_k=None), f"{name}의 결과")
    if tuple(got.shape) == (1, max_new) and torch.equal(got, want[:, prompt.shape[1]:]):
        raise ExerciseCheckError("새 토큰만 돌려줬습니다: 입력 idx 뒤에 새 토큰을 이어 붙인 전체 (b, 입력 길이 + 새 토큰 수)를 "
                                 "돌려주세요 (torch.cat((idx, idx_next), dim=1)).")
    _check_shape(got, tuple(want.shape), f"{name}의 결과 (temperature=0)")
    if not torch.equal(got, want):
        first = torch.cat([prompt, model.table[prompt[:, :1]].argmax(-1).repeat(1, max_new)], dim=1)
        if torch.equal(got, first):
            raise ExerciseCheckError("첫 위치의 로짓으로 다음 토큰을 골랐습니다: 다음 토큰은 마지막 위치의 로짓 "
                                     "logits[:, -1, :]에서 고릅니다.")
        raise ExerciseCheckError(f"temperature=0 (그리디 디코딩) 결과가 다릅니다: 기대 {want.tolist()}, "
                                 f"실제 {got.tolist()}. argmax(logits[:, -1, :], dim=-1)을 고르세요.")
    long_prompt = torch.tensor([[3, 7, 1, 4, 4, 9, 2, 0]])  # longer than the context: must be cropped
    got_long = call(long_prompt, 2, temperature=0.0, top_k=None)
    with warnings.catch_warnings():  # the package warns that it crops; the learner's function need not
        warnings.simplefilter("ignore")
        want_long = generate(model, long_prompt, 2, context_size)
    if not torch.equal(_as_tensor(got_long, f"{name}의 결과"), want_long):
        raise ExerciseCheckError("문맥 길이보다 긴 입력의 결과가 다릅니다: idx[:, -context_size:]로 자른 뒤 예측하세요.")

    # top-k: 400 samples of one token; every one must be among the k most likely.
    k = 3
    batch = prompt.repeat(400, 1)
    torch.manual_seed(_SEED)
    sampled = _as_tensor(call(batch, 1, temperature=1.0, top_k=k), f"{name}의 결과")
    _check_shape(sampled, (400, prompt.shape[1] + 1), f"{name}의 결과 (배치 400)")
    logits = model.table[prompt[0, -1]]
    allowed = set(torch.topk(logits, k).indices.tolist())
    new_tokens = sampled[:, -1].tolist()
    outside = sorted(set(new_tokens) - allowed)
    if outside:
        raise ExerciseCheckError(f"탑-k(k={k}) 밖의 토큰 {outside}이(가) 뽑혔습니다: 큰 로짓 k개만 남기고 나머지는 "
                                 f"-torch.inf로 바꾼 뒤 softmax하세요 (허용: {sorted(allowed)}).")
    if len(set(new_tokens)) == 1:
        raise ExerciseCheckError("temperature > 0인데 400번 모두 같은 토큰이 나왔습니다: argmax 대신 "
                                 "torch.multinomial(probs, num_samples=1)로 샘플링하세요.")

    # temperature: the frequencies of 4000 samples follow softmax(logits / T).
    temperature, n = 2.0, 4000
    torch.manual_seed(_SEED)
    sampled = _as_tensor(call(prompt.repeat(n, 1), 1, temperature=temperature, top_k=None), f"{name}의 결과")
    freq = torch.bincount(sampled[:, -1], minlength=logits.numel()).double() / n
    candidates = {
        "right": torch.softmax(logits / temperature, -1),
        "times": torch.softmax(logits * temperature, -1),
        "ignored": torch.softmax(logits, -1),
    }
    distance = {key: float((freq - p.double()).abs().sum() / 2) for key, p in candidates.items()}
    closest = min(distance, key=distance.get)
    if closest == "times":
        raise ExerciseCheckError("로짓에 온도를 곱했습니다: logits / temperature로 나눠야 온도가 높을수록 분포가 평평해집니다.")
    if closest == "ignored":
        raise ExerciseCheckError("온도를 적용하지 않았습니다: softmax(logits / temperature)에서 샘플링하세요.")
    if distance["right"] > 0.08:
        raise ExerciseCheckError(f"temperature={temperature}에서 뽑힌 토큰의 빈도가 softmax(logits / temperature)와 "
                                 f"다릅니다 (총변동 거리 {distance['right']:.3f}).")
    summary = "그리디, 문맥 자르기, 탑-k, 온도"

    if "eos_id" in inspect.signature(fn).parameters:
        new = want[0, prompt.shape[1]:].tolist()
        stop_at = next(i for i in range(1, len(new)) if new[i] not in new[:i])
        eos_id = new[stop_at]
        expected = generate(model, prompt, max_new, context_size, eos_id=eos_id)
        got = _as_tensor(call(prompt, max_new, temperature=0.0, top_k=None, eos_id=eos_id), f"{name}의 결과")
        if not torch.equal(got, expected):
            if torch.equal(got, want):
                raise ExerciseCheckError(f"eos_id={eos_id}가 나와도 멈추지 않았습니다: 다음 토큰이 eos_id이면 루프를 끝내세요.")
            if got.shape[1] == expected.shape[1] + 1 and int(got[0, -1]) == eos_id:
                raise ExerciseCheckError("끝 토큰까지 붙인 뒤 멈췄습니다: 책처럼 eos_id가 나오면 붙이지 않고 멈추세요.")
            raise ExerciseCheckError(f"eos_id가 있을 때의 결과가 다릅니다: 기대 {expected.tolist()}, 실제 {got.tolist()}.")
        summary += ", eos_id에서 멈춤"
    _passed(f"{name} — {summary} (buildllm.generation.generate와 같은 규칙)")


# --------------------------------------------------------------------------- chapter 6


def check_classification_loss(fn) -> None:
    """ch06: calc_loss_batch for a classifier: cross entropy of the last token's class logits against labels (b,)."""
    from .classification import calc_class_loss_batch

    model = _tiny_model(num_classes=2)
    inputs = torch.randint(0, model.cfg["vocab_size"], (4, 6), generator=_generator(_SEED + 1))
    labels = torch.tensor([0, 1, 1, 0])
    name = _name(fn)
    got = _check_loss_value(_call(name, fn, inputs, labels, model, torch.device("cpu")), f"{name}의 결과")
    with torch.no_grad():
        want = calc_class_loss_batch(inputs, labels, model, "cpu")
        if not _close(got, want):
            logits = model(inputs)  # (b, T, 2)
            T = inputs.shape[1]
            variants = [
                (F.cross_entropy(logits[:, 0], labels), "첫 토큰의 로짓을 썼습니다: 코잘 어텐션에서는 마지막 토큰만 모든 "
                                                        "토큰을 봅니다. logits[:, -1, :]을 쓰세요."),
                (F.cross_entropy(logits.flatten(0, 1), labels.repeat_interleave(T)),
                 "모든 위치의 로짓으로 손실을 냈습니다: 분류에는 마지막 토큰의 로짓 logits[:, -1, :]만 씁니다."),
                (F.cross_entropy(torch.softmax(logits[:, -1], -1), labels),
                 "softmax를 한 번 더 적용했습니다: F.cross_entropy에는 로짓을 그대로 넣으세요."),
                (F.cross_entropy(logits[:, -1], labels, reduction="sum"), "손실을 더했습니다: 평균을 내세요."),
            ]
            _match_variant(got, variants)
            raise ExerciseCheckError(f"{name}의 손실이 기대 {float(want):.4f}, 실제 {float(got):.4f}입니다.")
    _passed(f"{name} — 마지막 토큰의 로짓으로 손실 {float(want):.4f} (buildllm.classification.calc_class_loss_batch와 같음)")


def check_accuracy_loader(fn) -> None:
    """ch06: calc_accuracy_loader(data_loader, model, device, num_batches=None) -> fraction of correct examples."""
    from torch.utils.data import DataLoader, TensorDataset

    from .classification import calc_accuracy_loader

    model = _tiny_model(num_classes=2)
    inputs = torch.randint(0, model.cfg["vocab_size"], (10, 6), generator=_generator(_SEED + 1))
    with torch.no_grad():
        predicted = model(inputs)[:, -1].argmax(-1)
    # Right on 1 of the first 4, 2 of the next 4, both of the last 2: 5/10 overall, but batch means differ.
    right = torch.tensor([1, 0, 0, 0, 1, 1, 0, 0, 1, 1], dtype=torch.bool)
    labels = torch.where(right, predicted, 1 - predicted)
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=4, shuffle=False)
    name = _name(fn)
    device = torch.device("cpu")
    want = calc_accuracy_loader(loader, model, device)
    got = _call(name, fn, loader, model, device)
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if not isinstance(got, (int, float)):
        raise ExerciseCheckError(f"{name}은(는) 숫자 하나(정확도)를 돌려줘야 합니다 (실제: {type(got).__name__}).")
    if abs(got - want) > 1e-9:
        with torch.no_grad():
            first = (model(inputs)[:, 0].argmax(-1) == labels).double().mean().item()
        batch_means = sum((right[i:i + 4].double().mean().item() for i in range(0, 10, 4))) / 3
        if abs(got - 100 * want) < 1e-6:
            raise ExerciseCheckError("퍼센트로 돌려줬습니다: 0과 1 사이의 비율(맞힌 수 / 예시 수)을 돌려주세요.")
        if abs(got - batch_means) < 1e-6:
            raise ExerciseCheckError("배치별 정확도의 평균을 냈습니다: 마지막 배치가 작으면 틀립니다. 맞힌 개수를 모두 "
                                     "더해 본 예시 수로 나누세요.")
        if abs(got - first) < 1e-6 and abs(first - want) > 1e-6:
            raise ExerciseCheckError("첫 토큰의 로짓으로 예측했습니다: logits[:, -1, :]의 argmax를 쓰세요.")
        raise ExerciseCheckError(f"정확도가 기대 {want:.2f}, 실제 {got:.2f}입니다 (예시 10개, 배치 크기 4).")
    want2 = calc_accuracy_loader(loader, model, device, num_batches=2)
    got2 = _call(name, fn, loader, model, device, num_batches=2)
    got2 = got2.item() if isinstance(got2, torch.Tensor) else got2
    if abs(got2 - want2) > 1e-9:
        raise ExerciseCheckError(f"num_batches=2에서 정확도가 기대 {want2:.3f}, 실제 {got2:.3f}입니다: 처음 num_batches개 "
                                 f"배치만 세세요.")
    _passed(f"{name} — 정확도 {want:.2f} (예시 10개), num_batches=2에서 {want2:.3f} "
            f"(buildllm.classification.calc_accuracy_loader와 같음)")


# --------------------------------------------------------------------------- chapter 7

_ENTRIES = [
    {"instruction": "Rewrite the sentence in the past tense.", "input": "The kettle boils.", "output": "The kettle boiled."},
    {"instruction": "Name a color of the sky at noon.", "input": "", "output": "Blue."},
]


def check_format_input(fn) -> None:
    """ch07: format_input(entry) -> the Alpaca-style prompt (preamble, instruction, optional input)."""
    from .instruction import ALPACA_PREAMBLE, format_input

    name = _name(fn)
    for entry in _ENTRIES:
        got = _call(name, fn, entry)
        want = format_input(entry)
        if got == want:
            continue
        if not isinstance(got, str):
            raise ExerciseCheckError(f"{name}은(는) 문자열을 돌려줘야 합니다 (실제: {type(got).__name__}).")
        if ALPACA_PREAMBLE not in got:
            raise ExerciseCheckError(f"머리말이 빠졌거나 다릅니다: 프롬프트는 {ALPACA_PREAMBLE!r}로 시작합니다.")
        if "### Response" in got:
            raise ExerciseCheckError("응답 부분(### Response:)은 넣지 마세요: format_input은 지시와 입력까지만 만듭니다.")
        if not entry["input"] and "### Input" in got:
            raise ExerciseCheckError("입력이 빈 문자열인데 '### Input:' 절을 넣었습니다: 입력이 있을 때만 넣으세요.")
        if entry["input"] and entry["input"] not in got:
            raise ExerciseCheckError("입력이 있는 항목인데 입력 텍스트가 프롬프트에 없습니다: '\\n\\n### Input:\\n' 뒤에 넣으세요.")
        i = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise ExerciseCheckError(f"프롬프트가 {i}번째 글자부터 다릅니다: 기대 {want[max(0, i - 15):i + 25]!r}, "
                                 f"실제 {got[max(0, i - 15):i + 25]!r} (줄바꿈 수를 확인하세요).")
    _passed(f"{name} — 입력이 있을 때와 없을 때 모두 buildllm.instruction.format_input과 같은 프롬프트")


def check_collate(fn) -> None:
    """ch07: custom_collate_fn(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device="cpu")."""
    from .instruction import custom_collate_fn

    name = _name(fn)
    batch = [[11, 12, 13, 14, 15], [21, 22], [31, 32, 33]]
    pad, ignore = 50256, -100
    result = _call(name, fn, batch, pad_token_id=pad, ignore_index=ignore, allowed_max_length=None, device="cpu")
    if not (isinstance(result, tuple) and len(result) == 2):
        raise ExerciseCheckError(f"{name}은(는) (inputs, targets) 두 텐서를 돌려줘야 합니다.")
    want_in, want_tgt = custom_collate_fn(batch, pad, ignore, None, "cpu")
    inputs = _check_shape(result[0], tuple(want_in.shape), "inputs")
    targets = _check_shape(result[1], tuple(want_tgt.shape), "targets")
    if (inputs == ignore).any():
        raise ExerciseCheckError("inputs에 -100이 있습니다: -100은 손실에서 뺄 타깃에만 씁니다. 입력은 pad_token_id로 채우세요.")
    if not torch.equal(inputs, want_in):
        raise ExerciseCheckError(f"inputs가 다릅니다: 기대 {want_in.tolist()}, 실제 {inputs.tolist()}. 각 시퀀스를 "
                                 f"pad_token_id로 (가장 긴 길이 + 1)까지 채운 뒤 마지막 토큰을 빼세요.")
    if not torch.equal(targets, want_tgt):
        unmasked = torch.where(want_tgt == ignore, torch.full_like(want_tgt, pad), want_tgt)
        all_masked = torch.where(unmasked == pad, torch.full_like(want_tgt, ignore), unmasked)
        if torch.equal(targets, inputs):
            raise ExerciseCheckError("targets가 inputs와 같습니다: 타깃은 한 토큰 왼쪽으로 민 것입니다 (padded[1:]).")
        if torch.equal(targets, unmasked):
            raise ExerciseCheckError("패딩이 -100으로 가려지지 않았습니다: 각 타깃에서 첫 번째 패딩 토큰 뒤의 패딩을 "
                                     "ignore_index(-100)로 바꾸세요 (cross_entropy가 그 위치를 건너뜁니다).")
        if torch.equal(targets, all_masked):
            raise ExerciseCheckError("첫 번째 끝 토큰(50256)까지 -100으로 가렸습니다: 첫 번째 것은 타깃으로 남겨야 "
                                     "모델이 응답을 끝내는 법을 배웁니다. 그 뒤의 패딩만 가리세요.")
        raise ExerciseCheckError(f"targets가 다릅니다: 기대 {want_tgt.tolist()}, 실제 {targets.tolist()}.")
    short = _call(name, fn, batch, pad_token_id=pad, ignore_index=ignore, allowed_max_length=3, device="cpu")
    _check_shape(short[0], (3, 3), "allowed_max_length=3의 inputs (allowed_max_length로 잘라야 합니다)")
    _check_shape(short[1], (3, 3), "allowed_max_length=3의 targets (allowed_max_length로 잘라야 합니다)")
    _passed(f"{name} — 모양 {tuple(want_in.shape)}, 타깃 한 칸 밀기, 첫 끝 토큰만 남기고 -100 마스킹, allowed_max_length")


# --------------------------------------------------------------------------- appendix E


def check_lora_layer(cls) -> None:
    """Appendix E: LoRALayer(in_dim, out_dim, rank, alpha): A (in, rank) random, B (rank, out) zero, x @ A @ B * alpha/rank."""
    from .lora import LoRALayer

    in_dim, out_dim, rank, alpha = 6, 4, 2, 4.0
    name = _name(cls)
    module = _construct(cls, in_dim, out_dim, rank, alpha)
    A = _module_param(module, "A", name, "A (in_dim, rank), B (rank, out_dim)")
    B = _module_param(module, "B", name, "A (in_dim, rank), B (rank, out_dim)")
    for label, p, shape in (("A", A, (in_dim, rank)), ("B", B, (rank, out_dim))):
        if not isinstance(p, nn.Parameter):
            raise ExerciseCheckError(f"{name}.{label}은(는) 훈련되는 nn.Parameter여야 합니다.")
        _check_shape(p.data, shape, f"{name}.{label}")
    if not torch.all(B == 0):
        raise ExerciseCheckError("B는 0으로 시작해야 합니다: 그래야 처음에는 LoRA가 원래 모델의 출력을 바꾸지 않습니다.")
    if torch.all(A == 0):
        raise ExerciseCheckError("A도 0이면 A와 B 모두 그레이디언트가 0이라 훈련이 시작되지 않습니다: A는 무작위로 "
                                 "초기화하세요 (예: nn.init.kaiming_uniform_(A, a=math.sqrt(5))).")
    x = _randn(3, in_dim, seed=_SEED + 1)
    start = _check_shape(_call(f"{name}.forward", module, x), (3, out_dim), f"{name}의 출력").detach()
    if not torch.all(start == 0):
        raise ExerciseCheckError("B = 0인데 출력이 0이 아닙니다: 출력은 x @ A @ B에 배율을 곱한 것뿐이어야 합니다.")
    ref = LoRALayer(in_dim, out_dim, rank, alpha)
    with torch.no_grad():
        ref.A.copy_(_randn(in_dim, rank, seed=_SEED + 2))
        ref.B.copy_(_randn(rank, out_dim, seed=_SEED + 3))
        A.copy_(ref.A)
        B.copy_(ref.B)
        got = _call(f"{name}.forward", module, x)
        want = ref(x)
        if not _close(got, want):
            update = x @ ref.A @ ref.B
            variants = [
                (alpha * update, f"alpha만 곱했습니다 (책의 코드): 이 저장소는 alpha / rank = {alpha / rank:g}를 곱합니다 "
                                 f"(rank를 바꿔도 업데이트 크기가 비슷하게 유지되도록, 부록 E 참고)."),
                (update, f"배율이 빠졌습니다: x @ A @ B에 alpha / rank = {alpha / rank:g}를 곱하세요."),
                (rank / alpha * update, "rank / alpha를 곱했습니다: alpha / rank입니다."),
            ]
            _match_variant(got, variants)
            raise ExerciseCheckError(f"{name}의 출력이 다릅니다 (최대 차이 {_max_diff(got, want):.3g}): "
                                     f"(alpha / rank) * (x @ self.A @ self.B)를 계산하세요.")
    _passed(f"{name} — A {tuple(A.shape)}, B {tuple(B.shape)}가 0에서 시작, 배율 alpha/rank = {alpha / rank:g} "
            f"(buildllm.lora.LoRALayer와 같음)")


def check_linear_with_lora(cls) -> None:
    """Appendix E: LinearWithLoRA(linear, rank, alpha): linear(x) + lora(x), with `linear` and `lora` attributes."""
    in_dim, out_dim, rank, alpha = 6, 4, 2, 4.0
    torch.manual_seed(_SEED)
    linear = nn.Linear(in_dim, out_dim)
    name = _name(cls)
    module = _construct(cls, linear, rank, alpha)
    _module_param(module, "linear", name, "linear (원래 nn.Linear), lora (LoRALayer)")
    lora = _module_param(module, "lora", name, "linear (원래 nn.Linear), lora (LoRALayer)")
    x = _randn(3, in_dim, seed=_SEED + 1)
    with torch.no_grad():
        got = _check_shape(_call(f"{name}.forward", module, x), (3, out_dim), f"{name}의 출력")
        if not _close(got, linear(x)):
            raise ExerciseCheckError("B = 0일 때는 원래 층과 출력이 같아야 합니다: self.linear(x) + self.lora(x)를 돌려주세요.")
        lora.B.copy_(_randn(*lora.B.shape, seed=_SEED + 3))
        got = _call(f"{name}.forward", module, x)
        want = linear(x) + (alpha / rank) * (x @ lora.A @ lora.B)
        if not _close(got, want):
            if _close(got, linear(x)):
                raise ExerciseCheckError("LoRA 업데이트를 더하지 않았습니다: self.linear(x) + self.lora(x)입니다.")
            if _close(got, want - linear(x)):
                raise ExerciseCheckError("원래 층의 출력이 빠졌습니다: self.linear(x) + self.lora(x)입니다.")
            raise ExerciseCheckError(f"{name}의 출력이 다릅니다 (최대 차이 {_max_diff(got, want):.3g}).")
    _passed(f"{name} — 처음에는 원래 층과 같고, B가 바뀌면 linear(x) + lora(x)")
