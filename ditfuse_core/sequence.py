"""One branch's token sequence: text ids with image placeholders, its attention mask and positions.

Layout (OmniGen): [condition tokens: text with each `<|image_k|>` replaced by that image's patch tokens]
[time token] [output latent tokens]. Text is causal, each input image attends within itself, the time
token sees the condition and itself, output tokens see everything. Condition tokens never see the time or
output tokens, which is what makes caching their keys/values exact.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch

IMAGE_TAG = re.compile(r"<\|image_\d+\|>")


@dataclass
class Branch:
    """Condition tokens of one guidance branch (no padding, one sample)."""

    input_ids: torch.Tensor  # [L] long; 0 where image tokens go
    image_spans: list[tuple[int, int]] = field(default_factory=list)  # [start, end) per placeholder
    image_order: list[int] = field(default_factory=list)  # which input image (0-based) fills each span

    @property
    def length(self) -> int:
        return int(self.input_ids.numel())


def build_branch(tokenizer, text: str, image_token_counts: list[int]) -> Branch:
    """Tokenise `text` (already wrapped) like OmniGen's processor: each chunk between image tags is tokenised
    on its own (so each gets SentencePiece's leading "▁"), chunks after the first lose their BOS, and each
    tag becomes `image_token_counts[k-1]` placeholder ids."""
    chunks = [tokenizer.encode(c) for c in IMAGE_TAG.split(text)]
    for i in range(1, len(chunks)):
        if chunks[i] and chunks[i][0] == 1:
            chunks[i] = chunks[i][1:]
    tags = [int(t[len("<|image_"):-2]) for t in IMAGE_TAG.findall(text)]
    if tags:
        uniq = sorted(set(tags))
        if uniq != list(range(1, len(uniq) + 1)):
            raise ValueError(f"image tags must be <|image_1|> … <|image_k|> without gaps, got {uniq}")
        if len(uniq) != len(image_token_counts):
            raise ValueError(f"prompt has {len(uniq)} image tags but {len(image_token_counts)} images were given")
    ids: list[int] = []
    spans, order = [], []
    for i, chunk in enumerate(chunks):
        ids.extend(chunk)
        if i < len(tags):
            k = tags[i] - 1
            n = image_token_counts[k]
            spans.append((len(ids), len(ids) + n))
            order.append(k)
            ids.extend([0] * n)
    return Branch(torch.tensor(ids, dtype=torch.long), spans, order)


def condition_mask(branch: Branch) -> torch.Tensor:
    """[L, L] bool: causal, plus full attention inside each image span."""
    n = branch.length
    mask = torch.ones(n, n, dtype=torch.bool).tril_()
    for s, e in branch.image_spans:
        mask[s:e, s:e] = True
    return mask


def full_mask(branch: Branch, num_output_tokens: int) -> torch.Tensor:
    """[L+1+N, L+1+N] bool mask of the whole sequence (what the model was trained with)."""
    lc, n = branch.length, num_output_tokens
    total = lc + 1 + n
    mask = torch.zeros(total, total, dtype=torch.bool)
    mask[:lc, :lc] = condition_mask(branch)
    mask[lc, : lc + 1] = True  # time token: condition + itself
    mask[lc + 1 :, :] = True  # output tokens: everything
    return mask


def positions(total_length: int) -> torch.Tensor:
    return torch.arange(total_length, dtype=torch.long)
