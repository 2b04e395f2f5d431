"""``BertConfig`` and the size presets, without TensorFlow (config checks and estimates stay fast).

The fields and their meaning are those of Google's ``bert_config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from bertlib.core.files import write_json

#: size -> (num_hidden_layers, hidden_size, num_attention_heads); intermediate = 4 × hidden.
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 128, 2),
    "mini": (4, 256, 4),
    "small": (4, 512, 8),
    "base": (12, 768, 12),
    "large": (24, 1024, 16),
}
#: LayerNorm epsilon of every bertlib model (Google's BERT)
LAYER_NORM_EPSILON = 1e-12


@dataclasses.dataclass
class BertConfig:
    """The fields of Google's ``bert_config.json`` (same names, same meaning)."""

    vocab_size: int
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02

    def __post_init__(self):
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads {self.num_attention_heads}"
            )
        if self.hidden_act not in ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu"):
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported (gelu, gelu_new, relu)")

    @classmethod
    def from_preset(cls, size: str, vocab_size: int, **overrides) -> "BertConfig":
        """``tiny`` / ``mini`` / ``small`` / ``base`` / ``large`` with ``intermediate = 4 × hidden``."""
        if size not in PRESETS:
            raise ValueError(f"unknown model size {size!r} (choose from {', '.join(PRESETS)})")
        layers, hidden, heads = PRESETS[size]
        values = dict(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=4 * hidden,
        )
        values.update(overrides)
        return cls(**values)

    @classmethod
    def from_dict(cls, values: dict) -> "BertConfig":
        """Build from a ``bert_config.json``-style dict; keys this config does not know are ignored
        (HF ``config.json`` carries many), missing required ones raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "vocab_size" not in values:
            raise ValueError("config has no vocab_size")
        return cls(**{k: v for k, v in values.items() if k in names})

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "BertConfig":
        """Read Google's ``bert_config.json`` (or an HF ``config.json`` of a BERT model)."""
        p = Path(path)
        try:
            values = json.loads(p.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{p}: BERT config not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{p}: not valid JSON ({e})") from None
        try:
            return cls.from_dict(values)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json_file(self, path: str | os.PathLike) -> Path:
        """Write ``bert_config.json`` atomically (temp name + rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        write_json(p, self.to_dict(), sort_keys=True)
        return p
