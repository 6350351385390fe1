"""ch03 bonus: why attention replaced RNNs -- a GRU encoder-decoder with and without attention.

A toy task makes the point of chapter 3's opening: reverse (or copy) a sequence of random
symbols. The plain encoder-decoder squeezes the whole input into the encoder's last hidden
state, one fixed vector, and its accuracy falls as the input grows. The same model with
scaled dot-product attention over all encoder states (a query from the decoder, keys and
values from the encoder: chapter 3's Q, K, V in miniature) looks up the symbol it needs at
each step and keeps its accuracy. Used by ``ch03/why-attention.ipynb``.

Token IDs: 0 = padding, 1 = start of the output (BOS), 2 = end of the output (EOS), and the
``num_symbols`` symbols are 3, 4, ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
NUM_SPECIAL = 3  # the IDs of the symbols start after the special tokens
TASKS = ("reverse", "copy")


def vocab_size_for(num_symbols: int) -> int:
    """Return the vocabulary size for `num_symbols` symbols plus the three special tokens."""
    return num_symbols + NUM_SPECIAL


@dataclass
class Seq2SeqBatch:
    """One padded batch of the toy task; every sequence ends where its length says."""

    src: torch.Tensor  # (b, max_len) symbol IDs, PAD_ID after each sequence's end
    src_lengths: torch.Tensor  # (b,) number of real symbols in each row
    tgt_in: torch.Tensor  # (b, max_len + 1) decoder input: BOS, y_1 ... y_L, PAD ...
    tgt_out: torch.Tensor  # (b, max_len + 1) what the decoder must predict: y_1 ... y_L, EOS, PAD ...


def make_batch(batch_size: int, min_len: int, max_len: int, num_symbols: int = 10, task: str = "reverse",
               generator: torch.Generator | None = None) -> Seq2SeqBatch:
    """Draw `batch_size` random symbol sequences with lengths in [min_len, max_len] and their targets."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; choose one of {TASKS}.")
    if not 1 <= min_len <= max_len:
        raise ValueError(f"Need 1 <= min_len <= max_len, got min_len={min_len}, max_len={max_len}.")
    if num_symbols < 2:
        raise ValueError(f"num_symbols must be at least 2 (got {num_symbols}).")
    lengths = torch.randint(min_len, max_len + 1, (batch_size,), generator=generator)
    symbols = torch.randint(NUM_SPECIAL, NUM_SPECIAL + num_symbols, (batch_size, max_len), generator=generator)
    positions = torch.arange(max_len)
    real = positions[None, :] < lengths[:, None]  # (b, max_len) True on real symbols
    src = symbols.masked_fill(~real, PAD_ID)

    if task == "reverse":
        # Row i: src[i, L-1], ..., src[i, 0]; index L-1-t for t < L (clamped to 0 on the padding).
        index = (lengths[:, None] - 1 - positions[None, :]).clamp(min=0)
        target = torch.gather(src, 1, index).masked_fill(~real, PAD_ID)
    else:
        target = src.clone()

    tgt_out = torch.full((batch_size, max_len + 1), PAD_ID, dtype=torch.long)
    tgt_out[:, :max_len] = target
    tgt_out[torch.arange(batch_size), lengths] = EOS_ID  # EOS right after the last symbol
    tgt_in = torch.full_like(tgt_out, PAD_ID)
    tgt_in[:, 0] = BOS_ID
    tgt_in[:, 1:] = target  # the decoder sees the previous correct symbol (teacher forcing)
    return Seq2SeqBatch(src, lengths, tgt_in, tgt_out)


class Encoder(nn.Module):
    """Embedding + bidirectional GRU; returns every position's state (both directions side by side)
    and the fixed summary vector: the forward state after the last symbol with the backward state after
    the first."""

    def __init__(self, vocab_size: int, emb_dim: int, hidden_dim: int):
        super().__init__()
        if hidden_dim % 2:
            raise ValueError(f"hidden_dim must be even (half per direction); got {hidden_dim}.")
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD_ID)
        self.rnn = nn.GRU(emb_dim, hidden_dim // 2, batch_first=True, bidirectional=True)

    def forward(self, src: torch.Tensor, src_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Packing makes each direction stop at the row's real length: the backward GRU starts at the last
        # real symbol, not in the padding.
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(src), src_lengths.cpu(), batch_first=True, enforce_sorted=False)
        packed_states, final = self.rnn(packed)  # final: (2, b, hidden_dim // 2), one per direction
        states, _ = nn.utils.rnn.pad_packed_sequence(packed_states, batch_first=True, total_length=src.shape[1])
        last = torch.cat([final[0], final[1]], dim=-1)  # (b, hidden_dim): the whole input in one vector
        return states, last  # states: (b, S, hidden_dim), zeros on the padding


class DotProductAttention(nn.Module):
    """Scaled dot-product attention of decoder states (queries) over encoder states (keys and values)."""

    def __init__(self, hidden_dim: int):
        super().__init__()
        self.W_query = nn.Linear(hidden_dim, hidden_dim, bias=False)
        self.W_key = nn.Linear(hidden_dim, hidden_dim, bias=False)

    def forward(
        self, dec_states: torch.Tensor, enc_states: torch.Tensor, src_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        queries = self.W_query(dec_states)  # (b, T, hidden_dim)
        keys = self.W_key(enc_states)  # (b, S, hidden_dim)
        scores = queries @ keys.transpose(1, 2) / math.sqrt(keys.shape[-1])  # (b, T, S)
        scores = scores.masked_fill(~src_mask[:, None, :], float("-inf"))  # never look at padding
        weights = torch.softmax(scores, dim=-1)  # each row sums to 1 over the real input positions
        context = weights @ enc_states  # (b, T, hidden_dim): the values are the encoder states themselves
        return context, weights


class Seq2Seq(nn.Module):
    """GRU encoder-decoder. Without attention the decoder's context is always the encoder's last state;
    with attention it is a new weighted average of all encoder states at every output step."""

    def __init__(self, vocab_size: int, emb_dim: int = 32, hidden_dim: int = 128, attention: bool = False):
        super().__init__()
        self.encoder = Encoder(vocab_size, emb_dim, hidden_dim)
        self.embedding = nn.Embedding(vocab_size, emb_dim, padding_idx=PAD_ID)
        self.decoder_rnn = nn.GRU(emb_dim, hidden_dim, batch_first=True)
        self.attention = DotProductAttention(hidden_dim) if attention else None
        self.out = nn.Linear(2 * hidden_dim, vocab_size)  # reads [decoder state; context]

    def _step_outputs(
        self, dec_states: torch.Tensor, enc_states: torch.Tensor, last: torch.Tensor, src_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (b, T, vocab) and attention weights (b, T, S) (None without attention) for decoder states."""
        if self.attention is None:
            context = last[:, None, :].expand_as(dec_states)  # the same fixed vector at every step
            weights = None
        else:
            context, weights = self.attention(dec_states, enc_states, src_mask)
        return self.out(torch.cat([dec_states, context], dim=-1)), weights

    def forward(
        self, src: torch.Tensor, src_lengths: torch.Tensor, tgt_in: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Teacher-forced pass: logits (b, T, vocab) for every target position, and the attention weights."""
        _check_lengths(src, src_lengths)
        enc_states, last = self.encoder(src, src_lengths)
        src_mask = torch.arange(src.shape[1], device=src.device)[None, :] < src_lengths[:, None]  # (b, S)
        dec_states, _ = self.decoder_rnn(self.embedding(tgt_in), last.unsqueeze(0))  # (b, T, hidden_dim)
        return self._step_outputs(dec_states, enc_states, last, src_mask)

    @torch.no_grad()
    def greedy_decode(
        self, src: torch.Tensor, src_lengths: torch.Tensor, max_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Generate `max_steps` tokens one at a time, feeding back the most likely token (b, max_steps),
        with the attention weights of each step (b, max_steps, S) or None."""
        _check_lengths(src, src_lengths)
        enc_states, last = self.encoder(src, src_lengths)
        src_mask = torch.arange(src.shape[1], device=src.device)[None, :] < src_lengths[:, None]
        hidden = last.unsqueeze(0)  # (1, b, hidden_dim)
        token = torch.full((src.shape[0], 1), BOS_ID, dtype=torch.long, device=src.device)
        tokens, weights = [], []
        for _ in range(max_steps):
            dec_state, hidden = self.decoder_rnn(self.embedding(token), hidden)  # (b, 1, hidden_dim)
            logits, step_weights = self._step_outputs(dec_state, enc_states, last, src_mask)
            token = logits.argmax(dim=-1)  # (b, 1)
            tokens.append(token)
            if step_weights is not None:
                weights.append(step_weights)
        return torch.cat(tokens, dim=1), (torch.cat(weights, dim=1) if weights else None)


def _check_lengths(src: torch.Tensor, src_lengths: torch.Tensor) -> None:
    if src_lengths.min() < 1 or src_lengths.max() > src.shape[1]:
        raise ValueError(
            f"src_lengths must lie in [1, {src.shape[1]}] (the padded width of src); "
            f"got {src_lengths.min().item()}..{src_lengths.max().item()}."
        )


def sequence_loss(model: Seq2Seq, batch: Seq2SeqBatch) -> torch.Tensor:
    """Cross entropy of the teacher-forced predictions, averaged over the real target tokens (EOS included)."""
    logits, _ = model(batch.src, batch.src_lengths, batch.tgt_in)
    return F.cross_entropy(logits.flatten(0, 1), batch.tgt_out.flatten(), ignore_index=PAD_ID)


def train_seq2seq(model: Seq2Seq, num_steps: int, batch_size: int = 64, min_len: int = 5, max_len: int = 40,
                  num_symbols: int = 10, task: str = "reverse", lr: float = 3e-3, seed: int = 123,
                  grad_clip: float = 1.0, log_every: int = 0) -> list[float]:
    """Train `model` on fresh random batches for `num_steps` Adam steps; return the loss of every step."""
    generator = torch.Generator().manual_seed(seed)  # the data order depends on the seed only
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for step in range(1, num_steps + 1):
        batch = make_batch(batch_size, min_len, max_len, num_symbols, task, generator)
        optimizer.zero_grad()
        loss = sequence_loss(model, batch)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)  # RNN gradients can spike on long inputs
        optimizer.step()
        losses.append(loss.item())
        if log_every and (step % log_every == 0 or step == num_steps):
            recent = losses[-log_every:]
            print(f"스텝 {step:5d}/{num_steps}  손실(최근 {len(recent)}스텝 평균) {sum(recent) / len(recent):.4f}")
    return losses


def score_predictions(pred: torch.Tensor, batch: Seq2SeqBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example: the fraction of the L target symbols predicted right, and whether the whole output
    (L symbols, then EOS) is exact."""
    width = batch.tgt_out.shape[1]
    if pred.shape[1] < width:  # fewer steps than the longest target: the missing ones are wrong
        pred = F.pad(pred, (0, width - pred.shape[1]), value=PAD_ID)
    pred = pred[:, :width]
    correct = pred == batch.tgt_out
    positions = torch.arange(width)[None, :]
    symbols = positions < batch.src_lengths[:, None]  # the L symbol positions
    token_acc = (correct & symbols).sum(dim=1) / batch.src_lengths
    exact = (correct | (positions > batch.src_lengths[:, None])).all(dim=1)  # symbols and EOS all right
    return token_acc, exact


@torch.no_grad()
def accuracy_by_length(model: Seq2Seq, lengths: list[int], num_examples: int = 200, num_symbols: int = 10,
                       task: str = "reverse", seed: int = 2024) -> list[dict]:
    """Greedy-decode `num_examples` new sequences of each length; return rows
    {"length", "token_accuracy", "sequence_accuracy"} (fractions in [0, 1])."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    rows = []
    for length in lengths:
        batch = make_batch(num_examples, length, length, num_symbols, task, generator)
        pred, _ = model.greedy_decode(batch.src, batch.src_lengths, max_steps=length + 1)
        token_acc, exact = score_predictions(pred, batch)
        rows.append({"length": length, "token_accuracy": token_acc.mean().item(),
                     "sequence_accuracy": exact.float().mean().item()})
    return rows


@torch.no_grad()
def accuracy_by_position(model: Seq2Seq, length: int, num_examples: int = 200, num_symbols: int = 10,
                         task: str = "reverse", seed: int = 2024) -> torch.Tensor:
    """For inputs of one `length`: the fraction of right outputs at each output position, shape (length,)."""
    generator = torch.Generator().manual_seed(seed)
    model.eval()
    batch = make_batch(num_examples, length, length, num_symbols, task, generator)
    pred, _ = model.greedy_decode(batch.src, batch.src_lengths, max_steps=length)
    return (pred == batch.tgt_out[:, :length]).float().mean(dim=0)
