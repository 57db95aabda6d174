"""Model folders on disk: resolving names, loading tokenizers, checking files before
transformers reads them (its errors are tracebacks that do not name the damaged file).

:mod:`litdistill.models` re-exports the public names (``load_tokenizer``, ``resolve_path``,
``char_tokenizer``).
"""

from __future__ import annotations

import json
import string
import zipfile
from functools import lru_cache
from pathlib import Path

from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer
from transformers import AutoTokenizer, BertTokenizer, PreTrainedTokenizerBase

from litdistill.errors import ConfigError
from litdistill.network import offline, reachable


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


def fix_hint(folder: Path) -> str:
    """How to replace a damaged model folder: rebuild a zoo asset, else export it again."""
    from litdistill import zoo

    folder = folder.resolve()
    if folder.parent == (zoo.home() / "zoo").resolve() and zoo.is_zoo_name(folder.name):
        return f"run `litdistill-zoo fetch {folder.name} --force` to rebuild it"
    return "re-export the model with save_pretrained() (or copy the folder again)"


def _damaged(file: Path, why: str) -> ConfigError:
    return ConfigError(f"{file} is truncated or corrupt ({why}); {fix_hint(file.parent)}")


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


def config_problem(file: Path, error: Exception) -> str:
    """What is wrong with a config.json that AutoConfig refused with ``error``."""
    try:
        parsed = json.loads(file.read_bytes())
    except (OSError, ValueError) as e:
        return f"not valid JSON: {_first_line(e)}"
    if not isinstance(parsed, dict) or "model_type" not in parsed:
        return "not a JSON object with a model_type"
    return _first_line(error)  # parses, but transformers refuses a field or the model type


def check_weight_files(folder: Path) -> None:
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
                          f"{fix_hint(folder)}")
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


def size_mb(path: str | Path | None) -> float | None:
    """A model's weights on disk in MiB: an exported graph file, or the safetensors/bin files
    of a save_pretrained folder (None: no such file or no weights in the folder)."""
    path = Path(path) if path else None
    if path is None or not path.exists():
        return None
    files = [path] if path.is_file() else [*path.glob("*.safetensors"), *path.glob("*.bin")]
    return sum(f.stat().st_size for f in files) / 2**20 if files else None
