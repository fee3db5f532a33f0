"""Rebuild ditfuse_core/assets/phi3_tokenizer/tokenizer.json from llama.cpp's Phi-3 vocabulary.

OmniGen-v1 uses Phi-3's tokenizer. No hub is reachable in CI, so we ship a converted copy of the MIT-licensed
`vendor/llama.cpp/models/ggml-vocab-phi-3.gguf` from the llama-cpp-python==0.3.36 sdist:

    pip download --no-deps --no-binary :all: llama-cpp-python==0.3.36
    tar xzf llama_cpp_python-0.3.36.tar.gz '*/ggml-vocab-phi-3.gguf'
    python scripts/make_phi3_tokenizer.py path/to/ggml-vocab-phi-3.gguf   # needs `pip install gguf`

The GGUF file does not carry the `rstrip` flags of Phi-3's chat tokens. Phi-3's own tokenizer.json marks
<|assistant|>, <|placeholderN|>, <|system|>, <|end|>, <|user|> (32001-32010) and </s> as rstrip=True, which
swallows the newline after them: "<|user|>\\nGenerate" → <|user|> ▁Gener ate, the ids OmniGen was trained on.
"""
import json
import sys
import tempfile
from pathlib import Path

from transformers import AutoTokenizer

OUT = Path(__file__).resolve().parents[1] / "ditfuse_core" / "assets" / "phi3_tokenizer"


def main(gguf: str) -> None:
    gguf = Path(gguf)
    with tempfile.TemporaryDirectory() as tmp:
        AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(tmp)
        data = json.loads((Path(tmp) / "tokenizer.json").read_text())
    for tok in data["added_tokens"]:
        if 32001 <= tok["id"] <= 32010 or tok["id"] == 2:
            tok["rstrip"] = True
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False))
    print("wrote", OUT / "tokenizer.json")


if __name__ == "__main__":
    main(sys.argv[1])
