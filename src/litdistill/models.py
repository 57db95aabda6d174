"""Teachers and students: pretrained, built from sizes, or cut from a teacher's layers.

Each model config group file names one of the classes below with ``_target_``. Building is
two-phase: instantiating a spec reads only small files (config.json, tokenizer), so train()
can validate vocabularies and label counts before :meth:`ModelSpec.build` loads any weights.
"""

from __future__ import annotations

import json
import logging
import re
import string
import zipfile
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    BertConfig,
    BertTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from litdistill.errors import ConfigError
from litdistill.network import offline, reachable

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def char_tokenizer() -> PreTrainedTokenizerBase:
    """A ~140-piece character WordPiece tokenizer that needs no file.

    Tiny test/smoke models use it so that ``teacher=tiny student=tiny`` runs anywhere.
    """
    chars = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *(f"##{c}" for c in chars)]
    tokenizer = BertTokenizer(vocab={p: i for i, p in enumerate(pieces)})
    tokenizer.name_or_path = "litdistill/char-wordpiece"
    return tokenizer


def _first_line(error: BaseException) -> str:
    """The error's message on one line (some span several), cut to 200 characters."""
    return " ".join(str(error).split())[:200] or type(error).__name__


def _fix_hint(folder: Path) -> str:
    """How to replace a damaged model folder: rebuild a zoo asset, else export it again."""
    from litdistill import zoo

    folder = folder.resolve()
    if folder.parent == (zoo.home() / "zoo").resolve() and zoo.is_zoo_name(folder.name):
        return f"run `litdistill-zoo fetch {folder.name} --force` to rebuild it"
    return "re-export the model with save_pretrained() (or copy the folder again)"


def _damaged(file: Path, why: str) -> ConfigError:
    return ConfigError(f"{file} is truncated or corrupt ({why}); {_fix_hint(file.parent)}")


# The small JSON files AutoTokenizer reads; each must hold a JSON object.
_TOKENIZER_JSON = ("config.json", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json")


def _check_tokenizer_files(folder: Path) -> None:
    """Raises a ConfigError naming a damaged tokenizer file before transformers reads it: its
    own errors are KeyError/TypeError/plain Exception tracebacks that do not name the file."""
    for name in _TOKENIZER_JSON:
        if (file := folder / name).is_file():
            try:
                parsed = json.loads(file.read_bytes())
            except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
                raise _damaged(file, f"not valid JSON: {_first_line(e)}") from e
            if not isinstance(parsed, dict):
                raise _damaged(file, "not a JSON object")
    if (file := folder / "tokenizer.json").is_file():
        try:
            Tokenizer.from_str(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as e:
            raise _damaged(file, f"unreadable: {_first_line(e)}") from e
        except Exception as e:
            if type(e) is not Exception:  # tokenizers reports every parse error as a plain
                raise  # Exception; anything more specific is not about the file
            raise _damaged(file, _first_line(e)) from e
    for name in ("vocab.txt", "merges.txt"):
        if (file := folder / name).is_file():
            try:
                text = file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as e:
                raise _damaged(file, f"unreadable: {_first_line(e)}") from e
            if not text.strip():
                raise _damaged(file, "empty")


def _config_problem(file: Path, error: Exception) -> str:
    """What is wrong with a config.json that AutoConfig refused with ``error``."""
    try:
        parsed = json.loads(file.read_bytes())
    except (OSError, ValueError) as e:
        return f"not valid JSON: {_first_line(e)}"
    if not isinstance(parsed, dict) or "model_type" not in parsed:
        return "not a JSON object with a model_type"
    return _first_line(error)  # parses, but transformers refuses a field or the model type


def _check_weights(folder: Path) -> None:
    """Raises a ConfigError naming a truncated or corrupt weight file before transformers
    reads it (its errors are tracebacks that do not name the file).

    Safetensors headers are parsed and must cover the file (0.2 ms); the CRC32 of every
    member of a ``torch.save`` zip archive is checked (0.02 s for 90 MB). A byte flipped inside
    safetensors data has no checksum to fail: only the zoo's recorded sha256 notices that.
    """
    for index in sorted(folder.glob("*.index.json")):  # sharded checkpoints
        try:
            if not isinstance(json.loads(index.read_bytes()), dict):
                raise _damaged(index, "not a JSON object")
        except (OSError, ValueError) as e:
            raise _damaged(index, f"not valid JSON: {_first_line(e)}") from e
    # The files transformers loads: safetensors when there are any, else the torch pickles.
    files = sorted(folder.glob("model*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise ConfigError(f"{folder} holds no weights (model.safetensors or pytorch_model.bin); "
                          f"{_fix_hint(folder)}")
    for file in files:
        try:
            if file.suffix == ".safetensors":
                with safe_open(file, framework="pt"):  # reads and validates only the header
                    pass
            elif zipfile.is_zipfile(file):
                with zipfile.ZipFile(file) as archive:
                    if (bad := archive.testzip()) is not None:
                        raise _damaged(file, f"CRC mismatch in {bad}")
            else:
                with file.open("rb") as fh:
                    head = fh.read(2)
                if head == b"PK":
                    raise _damaged(file, "a zip archive without its end: cut short")
                if head != b"\x80\x02":  # torch.save's pre-1.6 pickles pass (no checksum)
                    raise _damaged(file, "neither a zip archive nor a pickle")
        except (SafetensorError, zipfile.BadZipFile, OSError, EOFError) as e:
            raise _damaged(file, _first_line(e)) from e


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` that refuses the empty tokenizer offline loads give.

    Raises:
        ConfigError: A tokenizer file of a local folder is corrupt (named in the message), or
            the tokenizer has (almost) no vocabulary, which is what transformers returns for
            a hub name it could not reach instead of raising.
    """
    if Path(name_or_path).is_dir():
        _check_tokenizer_files(Path(name_or_path))
    tokenizer = AutoTokenizer.from_pretrained(name_or_path)
    if len(tokenizer) <= 10:
        raise ConfigError(f"tokenizer {name_or_path!r} loaded with only {len(tokenizer)} tokens; "
                          "point it at a folder with tokenizer.json or vocab.txt")
    return tokenizer


def resolve_path(name_or_path: str, need_config: bool = True) -> str:
    """Turn a zoo name, local folder or hub name into something ``from_pretrained`` loads.

    Args:
        name_or_path: Zoo name, local folder or hub id.
        need_config: The folder must hold a model (config.json), not just a tokenizer.

    Raises:
        ConfigError: A missing folder, or a hub name while offline (or with no route to it).
    """
    from litdistill import zoo  # the zoo imports heavy nothing, but keep models importable alone

    if zoo.is_zoo_name(name_or_path):
        return str(zoo.resolve(name_or_path))
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if need_config and not (path / "config.json").is_file():
            raise ConfigError(f"{path} has no config.json; is it a save_pretrained() folder?")
        return str(path)
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1
    if looks_local:
        raise ConfigError(f"model folder {name_or_path!r} does not exist")
    # A fast probe, so a hub name without network fails now, not after minutes of retries.
    if offline() or not reachable("huggingface.co"):
        raise ConfigError(
            f"{name_or_path!r} is not a local folder or zoo name and the Hugging Face Hub is "
            "offline; use a local save_pretrained() folder or a zoo name "
            f"({', '.join(zoo.ASSETS)}; see litdistill-zoo list)"
        )
    return name_or_path


class ModelSpec:
    """What a model will be, known cheaply; :meth:`build` makes it.

    Attributes:
        name: Human-readable name for logs and results.json.
    """

    name: str

    def hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig | None:
        """The transformers config the model will have (None when not known up front)."""
        raise NotImplementedError

    def tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        """The tokenizer matching the model's vocabulary."""
        raise NotImplementedError

    def build(self, num_labels: int, regression: bool, teacher: ModelSpec | None = None,
              teacher_model: PreTrainedModel | None = None) -> PreTrainedModel:
        """Create the model with its weights.

        Args:
            num_labels: Outputs of the classification head (1 for regression).
            regression: Whether the task is regression.
            teacher: The run's teacher spec (students may take its tokenizer or layers).
            teacher_model: The teacher, already loaded, so its weights are not read twice.
        """
        raise NotImplementedError

    @property
    def has_classifier(self) -> bool:
        """Whether the weights include a trained sequence-classification head."""
        return False


def _problem_type(regression: bool) -> str:
    return "regression" if regression else "single_label_classification"


class Pretrained(ModelSpec):
    """A local folder, zoo name or hub name loaded with ``AutoModelForSequenceClassification``.

    Args:
        name_or_path: Folder with config.json + weights, a zoo name, or a hub id.
        attn_implementation: ``sdpa`` (fast) or ``eager`` (needed to return attention maps).
    """

    def __init__(self, name_or_path: str, attn_implementation: str | None = None,
                 name: str | None = None) -> None:
        if not name_or_path:
            raise ConfigError("set the model's name_or_path (a folder, zoo name or hub id)")
        self.name_or_path = str(name_or_path)
        self.name = name or self.name_or_path
        self.attn_implementation = attn_implementation

    @cached_property
    def path(self) -> str:
        return resolve_path(self.name_or_path)

    @cached_property
    def _config(self) -> PretrainedConfig:
        try:
            return AutoConfig.from_pretrained(self.path)
        # TypeError: transformers < 5.18 indexes a config.json that holds a JSON list.
        except (OSError, ValueError, TypeError, StrictDataclassError) as e:
            folder = Path(self.path)
            if not folder.is_dir():
                raise  # a hub id: transformers' message names the repository
            file = folder / "config.json"
            raise ConfigError(f"{file} is not a usable model config "
                              f"({_config_problem(file, e)}); {_fix_hint(folder)}") from e

    def hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig:
        return self._config

    def tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        return self._tokenizer

    @cached_property
    def _tokenizer(self) -> PreTrainedTokenizerBase:
        return load_tokenizer(self.path)

    @property
    def has_classifier(self) -> bool:
        return any(a.endswith("ForSequenceClassification")
                   for a in self._config.architectures or ())

    def build(self, num_labels: int, regression: bool, teacher: ModelSpec | None = None,
              teacher_model: PreTrainedModel | None = None) -> PreTrainedModel:
        kwargs = {"attn_implementation": self.attn_implementation} if self.attn_implementation \
            else {}
        if not self.has_classifier:
            log.info("%s has no sequence-classification head: adding a freshly initialised "
                     "one with %d output(s) (fine-tune it before using it as a teacher)",
                     self.name, num_labels)
        if Path(self.path).is_dir():
            _check_weights(Path(self.path))
        # fp32 master weights whatever the checkpoint's dtype (transformers 5 would keep an
        # fp16/bf16 checkpoint in half precision); autocast handles mixed precision.
        model = AutoModelForSequenceClassification.from_pretrained(
            self.path, num_labels=num_labels, problem_type=_problem_type(regression),
            dtype=torch.float32, **kwargs)
        return model


class Sized(ModelSpec):
    """A randomly initialised BERT of the given size (BertConfig fields).

    Args:
        num_layers: Transformer layers.
        hidden: Hidden width.
        heads: Attention heads (must divide ``hidden``).
        intermediate: FFN width.
        tokenizer_name: Tokenizer folder/zoo/hub name; None uses the teacher's tokenizer, or
            the built-in character tokenizer when there is no teacher.
        max_position: Maximum sequence length.
        name: Display name.
        attn_implementation: ``sdpa`` or ``eager``.
    """

    def __init__(self, num_layers: int, hidden: int, heads: int, intermediate: int,
                 tokenizer_name: str | None = None, max_position: int = 512,
                 name: str | None = None, attn_implementation: str | None = None) -> None:
        if hidden % heads:
            raise ConfigError(f"hidden size {hidden} is not divisible by {heads} heads")
        self.sizes = dict(num_hidden_layers=num_layers, hidden_size=hidden,
                          num_attention_heads=heads, intermediate_size=intermediate,
                          max_position_embeddings=max_position)
        self.tokenizer_name = tokenizer_name
        self.attn_implementation = attn_implementation
        self.name = name or f"bert-{num_layers}x{hidden}"

    def tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        if self.tokenizer_name:
            return load_tokenizer(resolve_path(self.tokenizer_name, need_config=False))
        if teacher is not None:
            return teacher.tokenizer(None)
        return char_tokenizer()

    def hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig:
        tokenizer = self.tokenizer(teacher)
        base = teacher.hf_config(None) if teacher is not None and not self.tokenizer_name \
            else None
        if base is None:
            return BertConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                              **self.sizes)
        # Keep the teacher's architecture (BERT, MPNet, ...) and vocabulary; change the sizes.
        config = base.__class__.from_dict(base.to_dict())
        for key, value in self.sizes.items():
            if key != "max_position_embeddings":  # MPNet's positions are offset by its pad id
                setattr(config, key, value)
        config.architectures = None
        return config

    def build(self, num_labels: int, regression: bool, teacher: ModelSpec | None = None,
              teacher_model: PreTrainedModel | None = None) -> PreTrainedModel:
        config = self.hf_config(teacher)
        config.num_labels = num_labels
        config.problem_type = _problem_type(regression)
        if self.attn_implementation:
            config._attn_implementation = self.attn_implementation
        return AutoModelForSequenceClassification.from_config(config)


def layer_list_name(model: nn.Module, num_layers: int) -> str:
    """Dotted name of the model's ``ModuleList`` of transformer layers.

    Works across BERT (``bert.encoder.layer``), MPNet, RoBERTa and DistilBERT
    (``distilbert.transformer.layer``) without a per-architecture table.
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == num_layers and name:
            return name
    raise ConfigError(f"could not find the {num_layers} transformer layers of "
                      f"{type(model).__name__}; from_teacher supports BERT-like encoders")


class FromTeacher(ModelSpec):
    """DistilBERT-style student: the teacher's embeddings, head and a subset of its layers.

    Args:
        layers: Teacher layer indices (0-based) copied in order, e.g. ``[0, 2, 4]``.
        source: Model to cut from; defaults to the run's teacher. Needed with ``teacher=none``
            (the no-KD baseline of the same student).
    """

    def __init__(self, layers: Sequence[int], source: str | None = None) -> None:
        self.layers = [int(i) for i in layers]
        if not self.layers:
            raise ConfigError("student=from_teacher needs a non-empty student.layers list")
        self.source = Pretrained(source) if source else None
        self.name = f"{source or 'teacher'}[layers={','.join(map(str, self.layers))}]"

    def _origin(self, teacher: ModelSpec | None) -> ModelSpec:
        origin = self.source or teacher
        if origin is None:
            raise ConfigError("student=from_teacher needs a teacher, or student.source=<model> "
                              "when teacher=none (the no-KD baseline)")
        return origin

    def tokenizer(self, teacher: ModelSpec | None) -> PreTrainedTokenizerBase:
        return self._origin(teacher).tokenizer(None)

    def hf_config(self, teacher: ModelSpec | None) -> PretrainedConfig | None:
        origin = self._origin(teacher)
        config = origin.hf_config(None)
        if config is None:
            return None
        if bad := [i for i in self.layers if not 0 <= i < config.num_hidden_layers]:
            n = config.num_hidden_layers
            raise ConfigError(f"student.layers {bad} out of range: the source has {n} layers "
                              f"(0..{n - 1})")
        config = config.__class__.from_dict(config.to_dict())
        config.num_hidden_layers = len(self.layers)
        return config

    def build(self, num_labels: int, regression: bool, teacher: ModelSpec | None = None,
              teacher_model: PreTrainedModel | None = None) -> PreTrainedModel:
        if self.source is None and teacher_model is not None:
            source = teacher_model
        else:
            source = self._origin(teacher).build(num_labels, regression)
        return cut_layers(source, self.layers)


def cut_layers(source: PreTrainedModel, layers: Sequence[int]) -> PreTrainedModel:
    """A new model with ``source``'s weights but only the given transformer layers.

    Student layer ``i`` gets teacher layer ``layers[i]``; embeddings, pooler and the
    classification head are copied as they are (HF's DistilBERT extraction keeps them too).
    """
    config = source.config.__class__.from_dict(source.config.to_dict())
    config.num_hidden_layers = len(layers)
    student = AutoModelForSequenceClassification.from_config(config)
    prefix = layer_list_name(source, source.config.num_hidden_layers)
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.*)$")
    new_index = {t: s for s, t in enumerate(layers)}
    state = {}
    for key, value in source.state_dict().items():
        if m := pattern.match(key):
            teacher_layer = int(m.group(1))
            if teacher_layer not in new_index:
                continue
            key = f"{prefix}.{new_index[teacher_layer]}.{m.group(2)}"
        state[key] = value.detach().clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    # Buffers such as position_ids may be non-persistent; anything else missing is a bug.
    if real := [k for k in missing if not k.endswith("position_ids")] + list(unexpected):
        raise RuntimeError(f"layer cut left weights unmatched: {real[:5]}")
    return student


def count_params(model: nn.Module) -> int:
    """Parameters of a model (all of them, trainable or not)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def freeze(model: nn.Module) -> nn.Module:
    """Make a teacher read-only: no gradients, eval mode (dropout off)."""
    model.requires_grad_(False)
    return model.eval()
