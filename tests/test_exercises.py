"""The starter notebooks and their checks (buildllm.exercises).

1. Each starter as committed (blanks left): executing its code cells runs every check, and
   every check reports the blank it hit ("아직 채우지 않았습니다: <Class.method>").
2. Each starter with our solutions written into its blanks: every check passes.
3. Deliberately wrong attempts get the diagnosis meant for them (missing √d_k, mask after
   the softmax, missing transpose, future leak, wrong shape, wrong -100 masking ...).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import re
import textwrap

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from buildllm import attention, classification, data, exercises, generation, instruction, lora, model, training
from buildllm.exercises import ExerciseCheckError, run_check
from conftest import REPO

# Checks run the package's generate on a prompt longer than the context on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:The prompt has .* tokens, more than the context size")

BLANK_NODE = ast.dump(ast.parse('NotImplementedError("여기를 채우세요")', mode="eval").body)

# For each starter: the blank each check cell reports, in cell order (the innermost blank its code reaches).
BLANKS = {
    "ch02": ["SimpleTokenizerV1.encode", "GPTDatasetV1.__init__"],
    "ch03": ["SelfAttention_v2.forward", "CausalAttention.forward", "MultiHeadAttention.forward"],
    # The block and the model are built from FeedForward: its blank is the first one they hit.
    "ch04": ["LayerNorm.forward", "GELU.forward", "FeedForward.__init__", "FeedForward.__init__",
             "FeedForward.__init__"],
    "ch05": ["calc_loss_batch", "generate"],
    "ch06": ["calc_loss_batch", "calc_accuracy_loader"],
    "ch07": ["format_input", "custom_collate_fn"],
    "appendix-E": ["LoRALayer.__init__", "LoRALayer.__init__"],  # LinearWithLoRA builds a LoRALayer
}

# Our solutions, written into the blanks (keyed by the function's qualified name in the starter).
SOLUTIONS = {
    "ch02": {
        "SimpleTokenizerV1.encode": """
            pieces = [p.strip() for p in re.split(r'([,.:;?_!"()\\']|--|\\s)', text)]
            return [self.str_to_int[p] for p in pieces if p]""",
        "SimpleTokenizerV1.decode": """
            text = " ".join(self.int_to_str[i] for i in ids)
            return re.sub(r'\\s+([,.:;?!"()\\'])', r'\\1', text)""",
        "GPTDatasetV1.__init__": """
            token_ids = tokenizer.encode(txt, allowed_special={"<|endoftext|>"})
            for start in range(0, len(token_ids) - max_length, stride):
                window = token_ids[start : start + max_length + 1]
                self.input_ids.append(torch.tensor(window[:-1]))
                self.target_ids.append(torch.tensor(window[1:]))""",
    },
    "ch03": {
        "SelfAttention_v2.forward": """
            q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
            return torch.softmax(q @ k.T / k.shape[-1] ** 0.5, dim=-1) @ v""",
        "CausalAttention.forward": """
            n = x.shape[1]
            q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
            scores = (q @ k.transpose(1, 2)).masked_fill(self.mask.bool()[:n, :n], -torch.inf)
            return self.dropout(torch.softmax(scores / k.shape[-1] ** 0.5, dim=-1)) @ v""",
        "MultiHeadAttention.forward": """
            def split(t):
                return t.view(b, num_tokens, self.num_heads, self.head_dim).transpose(1, 2)
            q, k, v = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
            scores = (q @ k.transpose(2, 3)).masked_fill(self.mask.bool()[:num_tokens, :num_tokens], -torch.inf)
            weights = self.dropout(torch.softmax(scores / self.head_dim ** 0.5, dim=-1))
            context = (weights @ v).transpose(1, 2).contiguous().view(b, num_tokens, self.d_out)
            return self.out_proj(context)""",
    },
    "ch04": {
        "LayerNorm.forward": """
            centered = x - x.mean(dim=-1, keepdim=True)
            var = centered.pow(2).mean(dim=-1, keepdim=True)
            return self.scale * centered / torch.sqrt(var + self.eps) + self.shift""",
        "GELU.forward": """
            inner = (2.0 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3)
            return 0.5 * x * (1.0 + torch.tanh(inner))""",
        "FeedForward.__init__": """
            d = cfg["emb_dim"]
            self.layers = nn.Sequential(nn.Linear(d, 4 * d), GELU(), nn.Linear(4 * d, d))""",
        "TransformerBlock.forward": """
            x = x + self.drop_shortcut(self.att(self.norm1(x)))
            return x + self.drop_shortcut(self.ff(self.norm2(x)))""",
        "GPTModel.forward": """
            positions = torch.arange(num_tokens, device=in_idx.device)
            h = self.drop_emb(self.tok_emb(in_idx) + self.pos_emb(positions))
            return self.out_head(self.final_norm(self.trf_blocks(h)))""",
    },
    "ch05": {
        "calc_loss_batch": """
            logits = model(input_batch.to(device))
            return F.cross_entropy(logits.flatten(0, 1), target_batch.to(device).flatten())""",
        "generate": """
            for _ in range(max_new_tokens):
                with torch.no_grad():
                    logits = model(idx[:, -context_size:])[:, -1, :]
                if top_k is not None:
                    kth = torch.topk(logits, top_k).values[:, -1:]
                    logits = torch.where(logits < kth, torch.full_like(logits, -torch.inf), logits)
                if temperature > 0.0:
                    idx_next = torch.multinomial(torch.softmax(logits / temperature, dim=-1), num_samples=1)
                else:
                    idx_next = torch.argmax(logits, dim=-1, keepdim=True)
                if eos_id is not None and bool((idx_next == eos_id).all()):
                    break
                idx = torch.cat((idx, idx_next), dim=1)
            return idx""",
    },
    "ch06": {
        "calc_loss_batch": """
            logits = model(input_batch.to(device))[:, -1, :]
            return F.cross_entropy(logits, target_batch.to(device))""",
        "calc_accuracy_loader": """
            model.eval()
            correct = seen = 0
            with torch.no_grad():
                for i, (inputs, labels) in enumerate(data_loader):
                    if num_batches is not None and i == num_batches:
                        break
                    predicted = model(inputs.to(device))[:, -1, :].argmax(dim=-1)
                    correct += (predicted == labels.to(device)).sum().item()
                    seen += labels.shape[0]
            return correct / seen""",
    },
    "ch07": {
        "format_input": """
            preamble = ("Below is an instruction that describes a task. "
                        "Write a response that appropriately completes the request.")
            prompt = f"{preamble}\\n\\n### Instruction:\\n{entry['instruction']}"
            if entry.get("input"):
                prompt += f"\\n\\n### Input:\\n{entry['input']}"
            return prompt""",
        "custom_collate_fn": """
            longest = max(len(ids) for ids in batch) + 1
            inputs, targets = [], []
            for ids in batch:
                padded = list(ids) + [pad_token_id] * (longest - len(ids))
                x, y = torch.tensor(padded[:-1]), torch.tensor(padded[1:])
                pads = (y == pad_token_id).nonzero().flatten()
                y[pads[1:]] = ignore_index
                if allowed_max_length is not None:
                    x, y = x[:allowed_max_length], y[:allowed_max_length]
                inputs.append(x)
                targets.append(y)
            return torch.stack(inputs).to(device), torch.stack(targets).to(device)""",
    },
    "appendix-E": {
        "LoRALayer.__init__": """
            self.A = nn.Parameter(torch.empty(in_dim, rank))
            nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
            self.B = nn.Parameter(torch.zeros(rank, out_dim))
            self.scale = alpha / rank""",
        "LoRALayer.forward": """
            return self.scale * (x @ self.A @ self.B)""",
        "LinearWithLoRA.forward": """
            return self.linear(x) + self.lora(x)""",
    },
}


def _starter(chapter: str) -> list[str]:
    nb = json.loads((REPO / chapter / "starter.ipynb").read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def _blanks(source: str) -> list[tuple[str, int]]:
    """(qualified name of the enclosing function, line number) of every blank in `source`."""
    found = []

    def visit(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef)):
                visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.Raise) and ast.dump(child.exc) == BLANK_NODE:
                found.append((prefix.rstrip("."), child.lineno))
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _fill(source: str, solutions: dict[str, str]) -> str:
    lines = source.splitlines()
    for qualname, lineno in sorted(_blanks(source), key=lambda b: -b[1]):
        indent = re.match(r"\s*", lines[lineno - 1]).group(0)
        body = textwrap.indent(textwrap.dedent(solutions[qualname]).strip("\n"), indent)
        lines[lineno - 1:lineno] = body.splitlines()
    return "\n".join(lines)


def _execute(chapter: str, solutions: dict[str, str] | None = None) -> str:
    """Run the starter's code cells in one namespace (as its kernel would); return what they printed."""
    namespace: dict = {"__name__": f"starter_{chapter.replace('-', '_')}"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for source in _starter(chapter):
            exec(compile(_fill(source, solutions) if solutions else source, f"{chapter}/starter.ipynb", "exec"),
                 namespace)
    return out.getvalue()


def assert_refused(*cases):
    """Each (check, wrong attempt, phrase): the check refuses the attempt with a diagnosis containing the phrase."""
    for check, attempt, phrase in cases:
        with pytest.raises(ExerciseCheckError, match=phrase):
            check(attempt)


@pytest.mark.parametrize("chapter", sorted(BLANKS))
def test_starter_with_blanks_reports_each_blank(chapter):
    printed = _execute(chapter)
    reports = [line for line in printed.splitlines() if line.startswith("아직 아닙니다")]
    assert len(reports) == len(BLANKS[chapter]), printed
    for line, where in zip(reports, BLANKS[chapter]):
        assert f"아직 채우지 않았습니다: {where} (여기를 채우세요)" in line, line
    assert "통과" not in printed


@pytest.mark.parametrize("chapter", sorted(BLANKS))
def test_starter_with_our_solutions_passes_every_check(chapter):
    blanks = {name for source in _starter(chapter) for name, _ in _blanks(source)}
    assert blanks == set(SOLUTIONS[chapter]), "every blank has a solution here, and every solution a blank"
    printed = _execute(chapter, SOLUTIONS[chapter])
    assert "아직 아닙니다" not in printed, printed
    assert printed.count("통과: ") == len(BLANKS[chapter]), printed


@pytest.mark.parametrize("chapter", sorted(BLANKS))
def test_committed_starter_shows_what_a_learner_sees_first(chapter):
    """The committed outputs are the blank state: each check cell printed its 'not filled yet' diagnosis."""
    nb = json.loads((REPO / chapter / "starter.ipynb").read_text(encoding="utf-8"))
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] if c["cell_type"] == "code"
                      for o in c.get("outputs", []))
    for where in BLANKS[chapter]:
        assert f"아직 채우지 않았습니다: {where}" in printed
    first = next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"]
    first = "".join(first)
    note = "appendix-E.md" if chapter == "appendix-E" else f"{chapter}.md"
    assert f"한국어 노트: [../notes-ko/{note}](../notes-ko/{note})" in first
    assert f"({chapter}.ipynb)" in first  # the finished notebook


def test_run_check_prints_instead_of_raising(capsys):
    class Blank(nn.Module):
        def __init__(self, d_in, d_out):
            super().__init__()
            self.W_query, self.W_key, self.W_value = (nn.Linear(d_in, d_out, bias=False) for _ in range(3))

        def forward(self, x):
            raise NotImplementedError("여기를 채우세요")

    assert issubclass(ExerciseCheckError, AssertionError)
    assert run_check(exercises.check_self_attention, Blank) is None
    assert capsys.readouterr().out.startswith("아직 아닙니다 (check_self_attention): 아직 채우지 않았습니다: "
                                              "test_run_check_prints_instead_of_raising.<locals>.Blank.forward")
    run_check(exercises.check_self_attention, attention.SelfAttention_v2)
    assert capsys.readouterr().out.startswith("통과: SelfAttention_v2")


# --------------------------------------------------------------------------- wrong attempts: attention


class FlawedMHA(attention.MultiHeadAttention):
    """Multi-head attention with one known mistake (`flaw`); None is right."""

    flaw: str | None = None

    def forward(self, x):
        b, T, _ = x.shape
        flaw = self.flaw

        def split(t):
            t = t.view(b, T, self.num_heads, self.head_dim)
            return t.transpose(1, 2)

        q, k, v = split(self.W_query(x)), split(self.W_key(x)), split(self.W_value(x))
        scores = q @ k.transpose(2, 3)
        diagonal = {"sees_next": 2, "hides_self": 0}.get(flaw, 1)
        future = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=diagonal)
        if flaw not in ("mask_after_softmax", "no_mask"):
            scores = scores.masked_fill(future, 0.0 if flaw == "zero_fill" else -torch.inf)
        divisor = {"unscaled": 1.0, "d_out": self.d_out ** 0.5}.get(flaw, self.head_dim ** 0.5)
        weights = torch.softmax(scores / divisor, dim=-1)
        if flaw == "mask_after_softmax":
            weights = weights.masked_fill(future, 0.0)
        if flaw != "no_dropout":
            weights = self.dropout(weights)
        context = weights @ v  # (b, h, T, head_dim)
        if flaw == "merge_without_transpose":
            context = context.reshape(b, T, self.d_out)
        else:
            context = context.transpose(1, 2).reshape(b, T, self.d_out)
        if flaw == "transposed_output":
            return self.out_proj(context).transpose(1, 2)
        return context if flaw == "no_out_proj" else self.out_proj(context)


def _flawed_mha(flaw):
    return type(f"MHA_{flaw}", (FlawedMHA,), {"flaw": flaw})


def _flawed_causal(flaw):
    """A single-head CausalAttention (the ch03 signature) with the same mistake."""

    class Causal(FlawedMHA):
        def __init__(self, d_in, d_out, context_length, dropout, qkv_bias=False):
            super().__init__(d_in, d_out, context_length, dropout, 1, qkv_bias)
            del self.out_proj

        def forward(self, x):
            self.out_proj = nn.Identity()
            return super().forward(x)

    return type(f"Causal_{flaw}", (Causal,), {"flaw": flaw})


def test_flawed_attention_without_a_flaw_passes():
    exercises.check_multihead_attention(_flawed_mha(None))
    exercises.check_causal_attention(_flawed_causal(None))


@pytest.mark.parametrize("which, flaw, diagnosis", [
    ("multihead", "unscaled", "√d_k 스케일링이 빠졌습니다"),
    ("multihead", "d_out", "√d_out(√12)으로 나눴습니다"),
    ("multihead", "mask_after_softmax", "마스크를 softmax 뒤에 적용했습니다"),
    ("multihead", "zero_fill", "마스크 칸을 0으로 채웠습니다"),
    ("multihead", "no_mask", "코잘 마스크가 없습니다"),
    ("multihead", "sees_next", "미래 정보가 샙니다: 위치 3부터의 입력만 바꿨는데"),
    ("multihead", "hides_self", "NaN이나 inf가 있습니다"),
    ("multihead", "merge_without_transpose", "헤드를 합칠 때 전치가 빠졌습니다"),
    ("multihead", "no_out_proj", "out_proj를 적용하지 않았습니다"),
    ("multihead", "transposed_output", "기대 (2, 6, 12), 실제 (2, 12, 6). 같은 크기들의 순서만 바뀌었습니다"),
    ("multihead", "no_dropout", "드롭아웃이 빠졌습니다"),
    ("causal", "unscaled", "√d_k 스케일링이 빠졌습니다"),
    ("causal", "mask_after_softmax", "마스크를 softmax 뒤에 적용했습니다"),
    ("causal", "sees_next", "미래 정보가 샙니다"),
    ("causal", "no_dropout", "드롭아웃이 빠졌습니다"),
])
def test_attention_diagnoses(which, flaw, diagnosis):
    check, flawed = {"multihead": (exercises.check_multihead_attention, _flawed_mha),
                     "causal": (exercises.check_causal_attention, _flawed_causal)}[which]
    with pytest.raises(ExerciseCheckError, match=re.escape(diagnosis)):
        check(flawed(flaw))


def test_causal_attention_wrong_shape_names_expected_and_got():
    class ReturnsWeights(attention.CausalAttention):
        def forward(self, x):
            scores = self.W_query(x) @ self.W_key(x).transpose(1, 2)
            return torch.softmax(scores, dim=-1)  # (b, T, T): the weights, not the context vectors

    with pytest.raises(ExerciseCheckError, match=re.escape("출력의 모양이 틀렸습니다: 기대 (2, 6, 4), 실제 (2, 6, 6).")):
        exercises.check_causal_attention(ReturnsWeights)


def test_self_attention_diagnoses():
    class ScoresTransposed(attention.SelfAttention_v2):
        def forward(self, x):
            q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
            return torch.softmax(k @ q.T / k.shape[-1] ** 0.5, dim=-1) @ v

    class Masked(attention.SelfAttention_v2):
        def forward(self, x):
            q, k, v = self.W_query(x), self.W_key(x), self.W_value(x)
            future = torch.triu(torch.ones(len(x), len(x), dtype=torch.bool), diagonal=1)
            return torch.softmax((q @ k.T).masked_fill(future, -torch.inf) / k.shape[-1] ** 0.5, dim=-1) @ v

    class WrongNames(nn.Module):
        def __init__(self, d_in, d_out):
            super().__init__()
            self.query = nn.Linear(d_in, d_out)

    assert_refused(
        (exercises.check_self_attention, ScoresTransposed, "어텐션 점수가 전치되어 있습니다"),
        (exercises.check_self_attention, Masked, "마스크가 없어야 합니다"),
        (exercises.check_self_attention, WrongNames, "`W_query` 속성이 없습니다"),
    )


# --------------------------------------------------------------------------- wrong attempts: the GPT pieces


def test_gpt_piece_diagnoses():
    class UnbiasedNorm(model.LayerNorm):
        def forward(self, x):
            return self.scale * (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, keepdim=True) + self.eps) \
                + self.shift

    class ExactGELU(nn.Module):
        def forward(self, x):
            return F.gelu(x)

    class PostNorm(model.TransformerBlock):
        def forward(self, x):
            x = self.norm1(x + self.att(x))
            return self.norm2(x + self.ff(x))

    class NoPositions(model.GPTModel):
        def forward(self, in_idx):
            return self.out_head(self.final_norm(self.trf_blocks(self.tok_emb(in_idx))))

    class BiasedHead(model.GPTModel):
        def __init__(self, cfg):
            super().__init__(cfg)
            self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"])

    cases = [
        (exercises.check_layer_norm, UnbiasedNorm, "분산을 n-1로 나눴습니다"),
        (exercises.check_gelu, ExactGELU, "erf를 쓰는 정확한 GELU입니다"),
        (exercises.check_transformer_block, PostNorm, "층 정규화를 더한 뒤에 했습니다 (post-norm)"),
        (exercises.check_gpt_model, NoPositions, "위치 임베딩이 빠졌습니다"),
        (exercises.check_gpt_model, BiasedHead, "책에 없는 파라미터가 있습니다: ['out_head.bias']"),
    ]
    for check, attempt, diagnosis in cases:
        with pytest.raises(ExerciseCheckError, match=re.escape(diagnosis)):
            check(attempt)


def test_transformer_block_that_leaks_is_caught():
    class LeakyBlock(model.TransformerBlock):  # mixes the mean over all positions into every token
        def forward(self, x):
            return super().forward(x) + x.mean(dim=1, keepdim=True)

    with pytest.raises(ExerciseCheckError, match="미래 정보가 샙니다"):
        exercises.check_transformer_block(LeakyBlock)


# --------------------------------------------------------------------------- wrong attempts: chapters 2, 5-7, E


def test_data_diagnoses():
    class NoShift(data.GPTDatasetV1):
        def __init__(self, txt, tokenizer, max_length, stride):
            super().__init__(txt, tokenizer, max_length, stride)
            self.target_ids = list(self.input_ids)

    class IgnoresStride(data.GPTDatasetV1):
        def __init__(self, txt, tokenizer, max_length, stride):
            super().__init__(txt, tokenizer, max_length, 1)

    from buildllm.tokenizer import SimpleTokenizerV1

    class KeepsSpaces(SimpleTokenizerV1):
        def decode(self, ids):
            return " ".join(self.int_to_str[i] for i in ids)

    assert_refused(
        (exercises.check_dataset, NoShift, "타깃이 입력과 똑같습니다"),
        (exercises.check_dataset, IgnoresStride, "샘플 수가 기대 17, 실제 65입니다"),
        (exercises.check_simple_tokenizer, KeepsSpaces, "decode의 띄어쓰기가 다릅니다"),
    )


def test_loss_diagnoses():
    def summed(inputs, targets, m, device):
        return F.cross_entropy(m(inputs).flatten(0, 1), targets.flatten(), reduction="sum")

    def as_number(inputs, targets, m, device):
        return training.calc_loss_batch(inputs, targets, m, device).item()

    def first_token(inputs, labels, m, device):
        return F.cross_entropy(m(inputs)[:, 0, :], labels)

    assert_refused(
        (exercises.check_calc_loss_batch, summed, "손실을 더했습니다"),
        (exercises.check_calc_loss_batch, as_number, "텐서를 돌려줘야 합니다"),
        (exercises.check_classification_loss, first_token, "첫 토큰의 로짓을 썼습니다"),
    )


def test_accuracy_diagnoses():
    def percent(loader, m, device, num_batches=None):
        return 100 * classification.calc_accuracy_loader(loader, m, device, num_batches)

    def mean_of_batches(loader, m, device, num_batches=None):
        scores = [(m(x)[:, -1].argmax(-1) == y).float().mean().item() for x, y in loader]
        return sum(scores) / len(scores)

    assert_refused(
        (exercises.check_accuracy_loader, percent, "퍼센트로 돌려줬습니다"),
        (exercises.check_accuracy_loader, mean_of_batches, "배치별 정확도의 평균을 냈습니다"),
    )


def test_generate_diagnoses():
    def new_only(m, idx, max_new_tokens, context_size, temperature=0.0, top_k=None):
        return generation.generate(m, idx, max_new_tokens, context_size, temperature, top_k)[:, idx.shape[1]:]

    def no_crop(m, idx, max_new_tokens, context_size, temperature=0.0, top_k=None):
        for _ in range(max_new_tokens):
            idx = torch.cat((idx, m(idx)[:, -1].argmax(-1, keepdim=True)), dim=1)
        return idx

    def times_temperature(m, idx, max_new_tokens, context_size, temperature=0.0, top_k=None):
        return generation.generate(m, idx, max_new_tokens, context_size, 1 / temperature if temperature else 0.0, top_k)

    def no_top_k(m, idx, max_new_tokens, context_size, temperature=0.0, top_k=None):
        return generation.generate(m, idx, max_new_tokens, context_size, temperature, None)

    def always_argmax(m, idx, max_new_tokens, context_size, temperature=0.0, top_k=None):
        return generation.generate(m, idx, max_new_tokens, context_size, 0.0, top_k)

    def keeps_eos(m, idx, max_new_tokens, context_size, temperature=0.0, top_k=None, eos_id=None):
        out = generation.generate(m, idx, max_new_tokens, context_size, temperature, top_k, eos_id=eos_id)
        return out if eos_id is None else torch.cat([out, torch.tensor([[eos_id]])], dim=1)

    cases = [(new_only, "새 토큰만 돌려줬습니다"), (no_crop, "문맥 길이보다 긴 입력을 자르지 않았습니다"),
             (times_temperature, "로짓에 온도를 곱했습니다"), (no_top_k, "탑-k(k=3) 밖의 토큰"),
             (always_argmax, "400번 모두 같은 토큰"), (keeps_eos, "끝 토큰까지 붙인 뒤 멈췄습니다")]
    for attempt, diagnosis in cases:
        with pytest.raises(ExerciseCheckError, match=re.escape(diagnosis)):
            exercises.check_generate(attempt)


def test_instruction_diagnoses():
    def always_input(entry):
        return instruction.format_input({**entry, "input": entry["input"] or " "}).rstrip(" ")

    def unmasked(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device="cpu"):
        inputs, targets = instruction.custom_collate_fn(batch, pad_token_id, ignore_index, allowed_max_length, device)
        return inputs, torch.where(targets == ignore_index, pad_token_id, targets)

    def masks_every_pad(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device="cpu"):
        inputs, targets = instruction.custom_collate_fn(batch, pad_token_id, ignore_index, allowed_max_length, device)
        return inputs, targets.masked_fill(targets == pad_token_id, ignore_index)

    def not_shifted(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device="cpu"):
        inputs, _ = instruction.custom_collate_fn(batch, pad_token_id, ignore_index, allowed_max_length, device)
        return inputs, inputs.clone()

    def never_truncates(batch, pad_token_id=50256, ignore_index=-100, allowed_max_length=None, device="cpu"):
        return instruction.custom_collate_fn(batch, pad_token_id, ignore_index, None, device)

    with pytest.raises(ExerciseCheckError, match="'### Input:' 절을 넣었습니다"):
        exercises.check_format_input(always_input)
    for attempt, diagnosis in [(unmasked, "패딩이 -100으로 가려지지 않았습니다"),
                               (masks_every_pad, "첫 번째 끝 토큰(50256)까지 -100으로 가렸습니다"),
                               (not_shifted, "targets가 inputs와 같습니다"),
                               (never_truncates, "allowed_max_length=3의 inputs (allowed_max_length로 잘라야 합니다)의 "
                                                 "모양이 틀렸습니다: 기대 (3, 3), 실제 (3, 5)")]:
        with pytest.raises(ExerciseCheckError, match=re.escape(diagnosis)):
            exercises.check_collate(attempt)


def test_lora_diagnoses():
    class AlphaOnly(lora.LoRALayer):  # the book's scaling; this repository scales by alpha / rank
        def forward(self, x):
            return self.alpha * (x @ self.A @ self.B)

    class RandomB(lora.LoRALayer):
        def __init__(self, *args):
            super().__init__(*args)
            nn.init.normal_(self.B)

    class LoRAOnly(lora.LinearWithLoRA):
        def forward(self, x):
            return self.lora(x)

    assert_refused(
        (exercises.check_lora_layer, AlphaOnly, "alpha만 곱했습니다"),
        (exercises.check_lora_layer, RandomB, "B는 0으로 시작해야 합니다"),
        (exercises.check_linear_with_lora, LoRAOnly, "B = 0일 때는 원래 층과 출력이 같아야 합니다"),
    )
