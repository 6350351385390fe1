"""ch04 bonus: images are tokens too -- a tiny vision-language model built from chapter 4's blocks.

An 8x8 handwritten digit (scikit-learn's bundled ``load_digits``, no download) is cut into
square patches; a linear layer turns each patch into an embedding, exactly as
``nn.Embedding`` turns a token ID into one. The patch embeddings go in front of the caption's
token embeddings, position embeddings are added to the whole sequence, and the usual
``TransformerBlock`` stack learns to continue it with the caption "숫자 7". The captions use a
tiny character vocabulary (``CharTokenizer``). Used by ``ch04/images-as-tokens.ipynb``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from .model import LayerNorm, TransformerBlock

CAPTION_TEMPLATE = "숫자 {}"
BOS_TOKEN = "<|caption|>"  # "the caption starts here": the first input after the image
EOS_TOKEN = "<|endoftext|>"  # the model writes it when the caption is done


def caption_for(label: int) -> str:
    """Return the caption of a digit label, e.g. 7 -> "숫자 7"."""
    return CAPTION_TEMPLATE.format(label)


@dataclass
class DigitSplit:
    """Images (N, 8, 8) in [0, 1] and labels (N,) of a training and a held-out (test) part."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_digit_split(test_fraction: float = 0.25, seed: int = 123) -> DigitSplit:
    """Load scikit-learn's 1,797 8x8 digits (bundled, offline), scale to [0, 1], split at random by `seed`."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie strictly between 0 and 1 (got {test_fraction}).")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("The digits come with scikit-learn: pip install scikit-learn") from exc
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32) / 16.0  # pixel values 0..16 -> 0..1
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(len(labels) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return DigitSplit(images[train], labels[train], images[test], labels[test])


def image_to_patches(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Cut images (N, H, W) into square patches, row by row: (N, num_patches, patch_size * patch_size)."""
    if images.dim() != 3:
        raise ValueError(f"Expected images of shape (N, H, W), got {tuple(images.shape)}.")
    n, height, width = images.shape
    if patch_size < 1 or height % patch_size or width % patch_size:
        raise ValueError(f"patch_size {patch_size} must divide the image size {height}x{width} (e.g. 1, 2, 4).")
    rows, cols = height // patch_size, width // patch_size
    patches = images.reshape(n, rows, patch_size, cols, patch_size)  # split both axes into (grid, in-patch)
    patches = patches.permute(0, 1, 3, 2, 4)  # (N, rows, cols, patch_size, patch_size)
    return patches.reshape(n, rows * cols, patch_size * patch_size)


def patches_to_image(patches: torch.Tensor, patch_size: int, image_size: int = 8) -> torch.Tensor:
    """Put patches (N, num_patches, patch_size**2) back together into images (N, image_size, image_size)."""
    grid = image_size // patch_size
    if patches.shape[1:] != (grid * grid, patch_size * patch_size):
        raise ValueError(f"Expected patches of shape (N, {grid * grid}, {patch_size * patch_size}) for "
                         f"{image_size}x{image_size} images, got {tuple(patches.shape)}.")
    n = patches.shape[0]
    images = patches.reshape(n, grid, grid, patch_size, patch_size).permute(0, 1, 3, 2, 4)
    return images.reshape(n, image_size, image_size)


class CharTokenizer:
    """A character vocabulary for the captions: two special tokens, then every character of `texts`."""

    def __init__(self, texts: list[str]):
        chars = sorted(set("".join(texts)))
        vocab = [BOS_TOKEN, EOS_TOKEN, *chars]
        self.str_to_int = {s: i for i, s in enumerate(vocab)}
        self.int_to_str = dict(enumerate(vocab))
        self.bos_id = self.str_to_int[BOS_TOKEN]
        self.eos_id = self.str_to_int[EOS_TOKEN]

    @property
    def vocab_size(self) -> int:
        return len(self.str_to_int)

    def encode(self, text: str) -> list[int]:
        """Return one ID per character of `text`."""
        unknown = sorted({c for c in text if c not in self.str_to_int})
        if unknown:
            raise ValueError(f"Characters {unknown} are not in the vocabulary, which was built from the captions "
                             f"given to CharTokenizer; build it from texts that contain them.")
        return [self.str_to_int[c] for c in text]

    def decode(self, ids: list[int]) -> str:
        """Return the text of `ids`, leaving out the special tokens."""
        specials = (self.bos_id, self.eos_id)
        return "".join(self.int_to_str[int(i)] for i in ids if int(i) not in specials)


def digit_tokenizer() -> CharTokenizer:
    """The vocabulary of the ten digit captions "숫자 0" ... "숫자 9"."""
    return CharTokenizer([caption_for(d) for d in range(10)])


def caption_batch(labels: torch.Tensor, tokenizer: CharTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """Caption inputs [BOS, c_1 ... c_n] and targets [c_1 ... c_n, EOS] for `labels`: two (N, n + 1) tensors."""
    rows = [tokenizer.encode(caption_for(int(label))) for label in labels]
    if len({len(r) for r in rows}) > 1:
        raise ValueError("caption_batch needs captions of one length (the digit captions all have 4 characters).")
    ids = torch.tensor(rows, dtype=torch.long)  # (N, n)
    bos = torch.full((len(rows), 1), tokenizer.bos_id, dtype=torch.long)
    eos = torch.full((len(rows), 1), tokenizer.eos_id, dtype=torch.long)
    return torch.cat([bos, ids], dim=1), torch.cat([ids, eos], dim=1)


class TinyVLM(nn.Module):
    """A GPT whose first tokens are image patches: [patch_1 ... patch_P, BOS, caption ...] -> next caption token.

    `cfg` is a chapter 4 config dict (vocab_size, context_length, emb_dim, n_heads, n_layers, drop_rate,
    qkv_bias); context_length must hold the patches and the caption together.
    """

    def __init__(self, cfg: dict, num_patches: int, patch_dim: int):
        super().__init__()
        if cfg["context_length"] <= num_patches:
            raise ValueError(f"context_length ({cfg['context_length']}) must exceed num_patches ({num_patches}): "
                             f"the caption tokens come after the patches.")
        self.cfg = dict(cfg)
        self.num_patches = num_patches
        self.patch_emb = nn.Linear(patch_dim, cfg["emb_dim"])  # the "embedding layer" of the image tokens
        self.tok_emb = nn.Embedding(cfg["vocab_size"], cfg["emb_dim"])
        self.pos_emb = nn.Embedding(cfg["context_length"], cfg["emb_dim"])  # patches and caption, one sequence
        self.drop_emb = nn.Dropout(cfg["drop_rate"])
        self.trf_blocks = nn.Sequential(*[TransformerBlock(cfg) for _ in range(cfg["n_layers"])])
        self.final_norm = LayerNorm(cfg["emb_dim"])
        self.out_head = nn.Linear(cfg["emb_dim"], cfg["vocab_size"], bias=False)

    def embed(self, patches: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
        """The input sequence of the blocks: (b, num_patches + caption length, emb_dim)."""
        if patches.dim() != 3 or patches.shape[1] != self.num_patches:
            raise ValueError(f"Expected patches of shape (b, {self.num_patches}, patch_dim), got "
                             f"{tuple(patches.shape)}; cut the images with image_to_patches first.")
        seq_len = self.num_patches + caption_ids.shape[1]
        if seq_len > self.cfg["context_length"]:
            raise ValueError(f"{self.num_patches} patches + {caption_ids.shape[1]} caption tokens exceed "
                             f"context_length {self.cfg['context_length']}; raise context_length in the config.")
        image_tokens = self.patch_emb(patches)  # (b, num_patches, emb_dim)
        text_tokens = self.tok_emb(caption_ids)  # (b, T, emb_dim)
        x = torch.cat([image_tokens, text_tokens], dim=1)  # (b, num_patches + T, emb_dim)
        x = x + self.pos_emb(torch.arange(seq_len, device=x.device))
        return self.drop_emb(x)

    def forward(self, patches: torch.Tensor, caption_ids: torch.Tensor) -> torch.Tensor:
        """Logits (b, T, vocab_size) at the caption positions: position t predicts caption token t + 1."""
        x = self.trf_blocks(self.embed(patches, caption_ids))
        x = self.final_norm(x)
        return self.out_head(x[:, self.num_patches:])  # the image positions predict nothing


def train_vlm(
    model: TinyVLM,
    patches: torch.Tensor,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    num_epochs: int,
    batch_size: int = 64,
    lr: float = 1e-3,
    seed: int = 123,
    log_every: int = 0,
) -> list[float]:
    """Train on (patches, caption inputs, caption targets) with AdamW; return the mean loss of each epoch."""
    generator = torch.Generator().manual_seed(seed)  # the batch order depends on the seed only
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    epoch_losses = []
    for epoch in range(1, num_epochs + 1):
        model.train()
        total, count = 0.0, 0
        for idx in torch.randperm(len(patches), generator=generator).split(batch_size):
            optimizer.zero_grad()
            logits = model(patches[idx], inputs[idx])  # (b, T, vocab)
            loss = F.cross_entropy(logits.flatten(0, 1), targets[idx].flatten())
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
            count += len(idx)
        epoch_losses.append(total / count)
        if log_every and (epoch % log_every == 0 or epoch == num_epochs):
            print(f"에포크 {epoch:3d}/{num_epochs}  훈련 손실 {epoch_losses[-1]:.4f}")
    return epoch_losses


@torch.no_grad()
def generate_captions(model: TinyVLM, patches: torch.Tensor, tokenizer: CharTokenizer,
                      max_new_tokens: int = 8) -> list[str]:
    """Greedy decoding from [patches, BOS] until EOS (or `max_new_tokens`); return one caption per image."""
    model.eval()
    max_new_tokens = min(max_new_tokens, model.cfg["context_length"] - model.num_patches - 1)
    ids = torch.full((len(patches), 1), tokenizer.bos_id, dtype=torch.long)
    done = torch.zeros(len(patches), dtype=torch.bool)
    for _ in range(max_new_tokens):
        next_id = model(patches, ids)[:, -1].argmax(dim=-1, keepdim=True)  # (b, 1)
        ids = torch.cat([ids, next_id], dim=1)
        done |= next_id.squeeze(1) == tokenizer.eos_id
        if done.all():
            break
    captions = []
    for row in ids[:, 1:].tolist():
        if tokenizer.eos_id in row:
            row = row[: row.index(tokenizer.eos_id)]
        captions.append(tokenizer.decode(row))
    return captions


def caption_accuracy(model: TinyVLM, patches: torch.Tensor, labels: torch.Tensor,
                     tokenizer: CharTokenizer) -> tuple[float, list[str]]:
    """Fraction of images whose generated caption is exactly caption_for(label), and the captions."""
    captions = generate_captions(model, patches, tokenizer)
    hits = sum(c == caption_for(int(label)) for c, label in zip(captions, labels))
    return hits / len(captions), captions


@torch.no_grad()
def attention_maps(model: TinyVLM, patches: torch.Tensor, caption_ids: torch.Tensor) -> list[torch.Tensor]:
    """Attention weights of every block, one (b, num_heads, seq_len, seq_len) tensor per block
    (row = the attending token, column = the token attended to; sequence = patches, then caption)."""
    model.eval()
    inputs = []  # what each block's attention module receives (the output of norm1)
    hooks = [block.att.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
             for block in model.trf_blocks]
    try:
        model(patches, caption_ids)
    finally:
        for hook in hooks:
            hook.remove()
    maps = []
    for block, x in zip(model.trf_blocks, inputs):
        att = block.att
        n = x.shape[1]
        queries, keys = _split_heads(att.W_query(x), att.num_heads), _split_heads(att.W_key(x), att.num_heads)
        scores = queries @ keys.transpose(2, 3)  # (b, num_heads, n, n)
        causal = torch.triu(torch.ones(n, n, dtype=torch.bool, device=x.device), diagonal=1)
        scores = scores.masked_fill(causal, float("-inf"))
        maps.append(torch.softmax(scores / att.head_dim**0.5, dim=-1))
    return maps


def _split_heads(t: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(b, n, d_out) -> (b, num_heads, n, d_out // num_heads), as MultiHeadAttention splits its projections."""
    b, n, d_out = t.shape
    return t.view(b, n, num_heads, d_out // num_heads).transpose(1, 2)
