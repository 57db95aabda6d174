"""Lightning pieces of general distillation: the module and the corpus DataModule.

:class:`GeneralDistillationModule` trains a headless student (``AutoModel``, or
``AutoModelForMaskedLM`` for ``distilbert_general``) to match a frozen teacher on raw text;
the loss terms are :class:`~litdistill.intermediate.IntermediateTerms` (the same code as task
distillation's embedding/hidden/attention/relation/cosine terms) plus, for DistilBERT, the
soft-target KL over MLM logits and the MLM loss (:mod:`litdistill.losses`). Progress is
counted in tokens: ``train/tokens`` (real tokens trained on, checkpointed) and
``train/tokens_per_s``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import datasets
import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, RandomSampler
from transformers import DataCollatorWithPadding, PreTrainedModel, PreTrainedTokenizerBase

from litdistill import losses, optim
from litdistill.batching import EpochSeededSampler, LoaderPosition, ResumableLoader
from litdistill.errors import TrainingError
from litdistill.intermediate import IntermediateTerms
from litdistill.models import freeze


@dataclass(frozen=True)
class Masking:
    """BERT's dynamic masking: ``probability`` of the real, non-special tokens are chosen
    each time a batch is seen; of those 80% become ``[MASK]``, 10% a random token, 10% stay.

    Attributes:
        mask_id: The ``[MASK]`` token id.
        vocab_size: Random replacements are drawn from ``[0, vocab_size)``.
        special_ids: Ids never chosen ([CLS], [SEP], [PAD], ...).
        probability: Share of tokens chosen (0.15 in BERT and DistilBERT).
    """

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    probability: float = 0.15


def mask_tokens(input_ids: Tensor, attention_mask: Tensor, masking: Masking,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Masked copy of ``input_ids`` (B, T) and MLM labels (B, T): the original id where a token
    was chosen, -100 elsewhere. At least one token per batch is chosen (an empty MLM batch
    would make its loss 0/0)."""
    device = input_ids.device
    candidates = attention_mask.bool() & ~torch.isin(
        input_ids, torch.tensor(masking.special_ids, device=device))
    draw = torch.rand(input_ids.shape, generator=generator, device="cpu").to(device)
    chosen = candidates & (draw < masking.probability)
    if not chosen.any() and candidates.any():
        chosen.view(-1)[candidates.view(-1).nonzero()[0]] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    kind = torch.rand(input_ids.shape, generator=generator, device="cpu").to(device)
    masked = input_ids.clone()
    masked[chosen & (kind < 0.8)] = masking.mask_id
    swap = chosen & (kind >= 0.8) & (kind < 0.9)
    random_ids = torch.randint(masking.vocab_size, input_ids.shape, generator=generator,
                               device="cpu").to(device)
    masked[swap] = random_ids[swap]
    return masked, labels


class GeneralDataModule(L.LightningDataModule):
    """Batches of a tokenized corpus (``train`` and ``heldout``), dynamically padded; the
    training order depends only on (seed, epoch) and a checkpoint taken mid-epoch resumes at
    the next batch (the task DataModule's :class:`~litdistill.batching.ResumableLoader`)."""

    def __init__(self, splits: dict[str, datasets.Dataset], tokenizer: PreTrainedTokenizerBase,
                 batch_size: int, eval_batch_size: int, seed: int) -> None:
        super().__init__()
        self.splits, self.tokenizer, self.seed = splits, tokenizer, seed
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        self.train_position = LoaderPosition()

    def train_dataloader(self) -> DataLoader:
        ds = self.splits["train"]
        sampler = EpochSeededSampler(lambda g: RandomSampler(ds, generator=g), self.seed,
                                     len(ds))
        return ResumableLoader(ds, batch_size=self.batch_size, sampler=sampler,
                               collate_fn=self.collate, position=self.train_position,
                               generator=torch.Generator().manual_seed(self.seed))

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.splits["heldout"], batch_size=self.eval_batch_size,
                          collate_fn=self.collate)

    def state_dict(self) -> dict[str, int]:
        return {"train_batches": self.train_position.done}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.train_position.skip = int(state["train_batches"])


class GeneralDistillationModule(L.LightningModule):
    """A headless student learning from a frozen teacher on raw text.

    Args:
        student: The student (``AutoModel`` or ``AutoModelForMaskedLM``), trained.
        teacher: The teacher of the same vocabulary, frozen (never checkpointed).
        objective: A :class:`~litdistill.general.GeneralObjective`.
        optimizer: Partial optimizer taking parameter groups.
        scheduler: Partial scheduler taking ``(optimizer, num_training_steps)``, or None.
        masking: Dynamic MLM masking (objectives with MLM logits only).
        seed: Seed of the held-out batches' masks (the same every validation).
    """

    def __init__(self, student: PreTrainedModel, teacher: PreTrainedModel, objective: Any,
                 optimizer: Callable[[Iterable[Any]], torch.optim.Optimizer],
                 scheduler: Callable[..., Any] | None = None, masking: Masking | None = None,
                 seed: int = 0) -> None:
        super().__init__()
        self.student, self.teacher = student.train(), freeze(teacher)
        self.objective, self.masking, self.seed = objective, masking, seed
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.terms = IntermediateTerms(objective.terms, student.config, teacher.config) \
            if objective.terms else None
        self.attentions = bool(self.terms and self.terms.needs_attentions)
        if self.attentions:
            for model in (student, self.teacher):
                model.set_attn_implementation("eager")  # sdpa returns no attention maps
        self.tokens_seen = 0  # real tokens trained on, across resumes
        self._clock: tuple[float, int] | None = None
        self.last_val_loss: float | None = None
        self.strict_loading = False  # the teacher is not in checkpoints

    def train(self, mode: bool = True) -> GeneralDistillationModule:
        super().train(mode)
        self.teacher.eval()
        return self

    def losses(self, batch: dict[str, Tensor],
               generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Unweighted terms (``loss_<term>``) and their weighted sum (``loss``)."""
        mask = batch["attention_mask"]
        inputs = {"input_ids": batch["input_ids"], "attention_mask": mask}
        labels = None
        if self.masking is not None:
            inputs["input_ids"], labels = mask_tokens(inputs["input_ids"], mask, self.masking,
                                                      generator)
        extra = {"output_hidden_states": True, "output_attentions": self.attentions}
        s_out = self.student(**inputs, **extra)
        with torch.no_grad():
            t_out = self.teacher(**inputs, **extra)
        out = self.terms(self.student, self.teacher, s_out, t_out, mask) if self.terms else {}
        w = {f"loss_{n}": o.weight for n, o in self.objective.terms.items()}
        if self.objective.alpha_kd:
            out["loss_kd"] = losses.token_kd_loss(s_out.logits, t_out.logits, mask,
                                                  self.objective.temperature)
            w["loss_kd"] = self.objective.alpha_kd
        if self.objective.alpha_mlm:
            out["loss_mlm"] = losses.mlm_loss(s_out.logits, labels)
            w["loss_mlm"] = self.objective.alpha_mlm
        out["loss"] = sum(w[k] * v for k, v in out.items())
        return out

    def on_train_start(self) -> None:
        self._clock = (time.perf_counter(), self.tokens_seen)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        out = self.losses(batch)
        if not torch.isfinite(out["loss"]):
            bad = [k for k, v in out.items() if not torch.isfinite(v)]
            raise TrainingError(f"general distillation diverged at step {self.global_step}: "
                                f"non-finite {', '.join(bad)}; lower optimizer.lr")
        self.tokens_seen += int(batch["attention_mask"].sum())
        start, tokens = self._clock or (time.perf_counter(), 0)
        rate = (self.tokens_seen - tokens) / max(time.perf_counter() - start, 1e-9)
        n = batch["input_ids"].shape[0]
        self.log_dict({f"train/{k}": v.detach() for k, v in out.items()}, batch_size=n)
        self.log_dict({"train/tokens": float(self.tokens_seen), "train/tokens_per_s": rate},
                      batch_size=n)
        return out["loss"]

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        # The same masks at every validation: comparable held-out losses.
        generator = torch.Generator().manual_seed(self.seed + batch_idx)
        out = self.losses(batch, generator)
        n = batch["input_ids"].shape[0]
        self.log_dict({f"val/{k}": v for k, v in out.items()}, batch_size=n, on_epoch=True)

    def on_validation_epoch_end(self) -> None:
        value = self.trainer.callback_metrics.get("val/loss") if self._trainer else None
        if value is not None:
            self.last_val_loss = float(value)
            if not math.isfinite(self.last_val_loss):
                raise TrainingError("held-out loss is not finite: the student diverged")

    def configure_optimizers(self) -> Any:
        named = [(n, p) for n, p in self.named_parameters()
                 if p.requires_grad and not n.startswith("teacher.")]
        optimizer = optim.build_optimizer(self.optimizer_factory, named)
        if self.scheduler_factory is None or self._trainer is None:
            return optimizer
        steps = max(int(self.trainer.estimated_stepping_batches), 1)
        scheduler = self.scheduler_factory(optimizer, num_training_steps=steps)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tokens_seen"] = self.tokens_seen
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("teacher.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.tokens_seen = int(checkpoint.get("tokens_seen", 0))
        expected = {k for k in self.state_dict() if not k.startswith("teacher.")}
        if missing := sorted(expected - set(checkpoint["state_dict"])):
            raise RuntimeError(f"checkpoint lacks student weights: {missing[:5]}")

