"""Phi-3 tokenizer with the ids OmniGen-v1 was trained on.

transformers 5.x `AutoTokenizer` re-derives the normaliser of OmniGen's Phi-3 files and drops the
SentencePiece "▁" prefix ("Gener" instead of "▁Gener"); `tokenizers.Tokenizer.from_file` reads the
tokenizer.json as written, which is what the authors' transformers 4.4x did.
"""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

from tokenizers import Tokenizer

log = logging.getLogger(__name__)

BUNDLED = Path(__file__).resolve().parent / "assets" / "phi3_tokenizer" / "tokenizer.json"
BOS_ID = 1


class PhiTokenizer:
    """Callable like a HF tokenizer (`tok(text).input_ids`), so diffusers' OmniGen processor can use it too."""

    def __init__(self, path: str | Path = BUNDLED):
        self.path = Path(path)
        self._tok = Tokenizer.from_file(str(self.path))
        self.vocab_size = self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        """Token ids with the leading BOS, as `LlamaTokenizerFast(text).input_ids`."""
        return self._tok.encode(text).ids

    def pieces(self, text: str) -> list[str]:
        """The token strings of `encode(text)` ("<s>", "▁warm", …): where a word's token sits in a prompt."""
        return self._tok.encode(text).tokens

    def __call__(self, text: str):
        return SimpleNamespace(input_ids=self.encode(text))

    def __len__(self) -> int:
        return self.vocab_size


def find_tokenizer(model_dir: str | Path | None) -> Path:
    """tokenizer.json in the model folder (root or tokenizer/), else the bundled Phi-3 one."""
    if model_dir is not None:
        for cand in (Path(model_dir) / "tokenizer.json", Path(model_dir) / "tokenizer" / "tokenizer.json"):
            if cand.is_file():
                return cand
        log.info("no tokenizer.json in %s; using the bundled Phi-3 tokenizer (same vocabulary as OmniGen)", model_dir)
    return BUNDLED


def load_tokenizer(model_dir: str | Path | None = None) -> PhiTokenizer:
    return PhiTokenizer(find_tokenizer(model_dir))
