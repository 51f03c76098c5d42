"""Task router: learned per-task, per-layer logits choosing each task's top-k legos.

Routing depends on the task only, never on the data: task `t` at layer `l` has logits
`α_{t,l} ∈ R^N` (one `nn.Parameter` of shape [num_layers, N] per task, so each task's router row
is a separately identifiable task-specific parameter).

Selection and gates (training):
- scores `s = (α + a·γ) / τ` where during the Gumbel warm-up `γ` is Gumbel noise, its scale
  `a = 1 - step/W` and the temperature `τ` anneal linearly from `gumbel_tau` to 1; afterwards
  (and in eval mode) `s = α`.
- the top-k of `s` are selected; the forward gate values are the softmax over the selected scores.
- straight-through: the backward pass uses the softmax over all `N` scores, so unselected logits
  also learn (if the chosen legos hurt, the others' logits rise relative to them).
- from `freeze_after` on, the selection is fixed (stored in a buffer, so it checkpoints) and the
  gates are a plain softmax over the fixed selection.

The Gumbel noise is drawn from a `torch.Generator` seeded from (noise_seed, step, task index,
layer): identical on every process and independent of the global RNG.

Host syncs: which legos run is Python control flow, so the selection must be on the host. It is
made for every task at once from one host copy of all logits (and the noise) per step, taken
in `set_step` — before the step's first forward, right after the previous step's end-of-step
sync, when the device queue is empty — and reused by every `route()` of that step. `route()`
itself only launches device work (gather, softmax): no `.tolist()` per forward. The copy is
retaken when the step, the train/eval mode or the logits (in-place edits, `load_state_dict`)
change.

Regularizers (data-independent, router parameters only), on `p_{t,l} = softmax(α_{t,l})`:
- balance: `N · Σ_i p̄_{l,i}² - 1` with `p̄_l` the mean over tasks; 0 iff usage is uniform.
- sharing: mean over task pairs of the cosine distance between `p_{t,l}` and `p_{s,l}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gppf_dist.config.model import RouterConfig
from gppf_dist.model.lego import Route

_MASK64 = (1 << 63) - 1


def _mix_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (splitmix-style mixing)."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (p & _MASK64)) * 0xBF58476D1CE4E5B9 & _MASK64
        h ^= h >> 31
    return h & _MASK64


def _to_device(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Copy to `device` without blocking the host (pinned source on CUDA)."""
    if device.type == "cuda":
        return host.pin_memory().to(device, non_blocking=True)
    return host.to(device)


@dataclass
class _Selection:
    """One step's top-k of every task, on the host (control flow) and on the device (gates)."""

    key: tuple[int, bool, tuple[int, ...]]
    indices: list[list[list[int]]]
    """[task][layer][k] python ints."""
    index: torch.Tensor
    """[task, layer, k] the same, on the logits' device."""
    noise: torch.Tensor | None
    """[task, layer, N] Gumbel noise on the logits' device, during the warm-up."""


class TaskRouter(nn.Module):
    """Per-task routing over `num_layers` lego layers of `num_legos` legos each."""

    def __init__(
        self,
        task_names: list[str],
        num_layers: int,
        num_legos: int,
        top_k: int,
        cfg: RouterConfig,
    ) -> None:
        super().__init__()
        assert 1 <= top_k <= num_legos and task_names
        self.task_names = list(task_names)
        self.num_layers, self.num_legos, self.top_k = num_layers, num_legos, top_k
        self.cfg = cfg
        self.step = 0
        logits = {}
        for t, name in enumerate(self.task_names):
            gen = torch.Generator().manual_seed(_mix_seed(cfg.noise_seed, -1, t))
            logits[name] = nn.Parameter(0.1 * torch.randn(num_layers, num_legos, generator=gen))
        self.logits = nn.ParameterDict(logits)
        self.register_buffer(
            "frozen_index", torch.zeros(len(task_names), num_layers, top_k, dtype=torch.long)
        )
        self.register_buffer("is_frozen", torch.zeros((), dtype=torch.bool))
        self._frozen_lists: list[list[list[int]]] | None = None
        self._selection: _Selection | None = None

    # --- schedule ---------------------------------------------------------------------------
    def set_step(self, step: int) -> None:
        """Set the global step (Gumbel schedule); freezes the routes at `freeze_after`."""
        self.step = step
        after = self.cfg.freeze_after
        if after >= 0 and step >= after and self._frozen_lists is None:
            with torch.no_grad():
                for t, name in enumerate(self.task_names):
                    self.frozen_index[t] = self.logits[name].topk(self.top_k, dim=-1).indices
                self.is_frozen.fill_(True)
            self._frozen_lists = self.frozen_index.tolist()
        self._select()

    def fix_route(self, task: str, legos: list[list[int]], logits: torch.Tensor) -> None:
        """Give `task` these logits and fix its selection to `legos` ([layer][k] ids) from now
        on (a fine-tuned task's route, `finetune/backbone.py`). The router must be frozen or
        hold this task only: a frozen router fixes every task's selection at once."""
        t = self.task_names.index(task)
        if len(self.task_names) > 1 and self._frozen_lists is None:
            raise ValueError("fix_route needs a router of one task, or a frozen one")
        if [len(ids) for ids in legos] != [self.top_k] * self.num_layers:
            raise ValueError(
                f"route of {task!r} must have {self.top_k} legos at each of {self.num_layers} "
                f"layers, got {[len(ids) for ids in legos]}"
            )
        with torch.no_grad():
            self.logits[task].copy_(logits)
            self.frozen_index[t] = torch.tensor(legos, dtype=torch.long)
            self.is_frozen.fill_(True)
        self._frozen_lists = self.frozen_index.tolist()
        self._selection = None

    def _noise_schedule(self) -> tuple[float, float]:
        """(noise scale, temperature) at the current step; (0, 1) outside the warm-up."""
        warmup = self.cfg.gumbel_warmup_steps
        if not self.training or self.step >= warmup:
            return 0.0, 1.0
        frac = self.step / warmup
        return 1.0 - frac, self.cfg.gumbel_tau + (1.0 - self.cfg.gumbel_tau) * frac

    def gumbel_noise(self, task_index: int, step: int) -> torch.Tensor:
        """[num_layers, N] Gumbel noise for (step, task, layer); the same on every process."""
        rows = []
        for layer in range(self.num_layers):
            gen = torch.Generator().manual_seed(
                _mix_seed(self.cfg.noise_seed, step, task_index, layer)
            )
            u = torch.rand(self.num_legos, generator=gen, dtype=torch.float64)
            rows.append(-torch.log(-torch.log(u.clamp(1e-12, 1 - 1e-12))))
        return torch.stack(rows).float()

    # --- routing ----------------------------------------------------------------------------
    def _frozen(self) -> list[list[list[int]]] | None:
        """Python copy of the frozen selection (None while unfrozen); avoids device syncs."""
        return self._frozen_lists

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.after_load()

    def after_load(self) -> None:
        """Re-read the frozen selection from the buffers after they were loaded (by
        `load_state_dict`, or copied by name: `checkpoint/named_state.py` calls this)."""
        self._frozen_lists = self.frozen_index.tolist() if bool(self.is_frozen) else None
        self._selection = None

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> TaskRouter:
        self._selection = None  # its device copies would stay behind on the old device
        return super()._apply(fn, *args, **kwargs)

    def _selection_key(self) -> tuple[int, bool, tuple[int, ...]]:
        return (self.step, self.training, tuple(p._version for p in self.logits.values()))

    def _select(self) -> _Selection:
        """Every task's top-k at the current step, from one host copy of the logits (the one
        host sync of routing; see the module docstring)."""
        key = self._selection_key()
        if self._selection is not None and self._selection.key == key:
            return self._selection
        logits = torch.stack([self.logits[n].detach() for n in self.task_names])
        device = logits.device
        scale, tau = self._noise_schedule()
        noise = None
        scores = logits.cpu()
        if scale > 0:
            noise = torch.stack([self.gumbel_noise(t, self.step) for t in range(len(logits))])
            scores = scores + scale * noise
            noise = _to_device(noise, device)
        index = (scores / tau).topk(self.top_k, dim=-1).indices
        self._selection = _Selection(key, index.tolist(), _to_device(index, device), noise)
        return self._selection

    def route(self, task: str) -> Route:
        """The selected legos and gates of `task` at every lego layer (no host sync)."""
        t = self.task_names.index(task)
        logits = self.logits[task]
        frozen = self._frozen()
        if frozen is not None:
            index = self.frozen_index[t].to(logits.device)
            gates = torch.softmax(logits.gather(-1, index), dim=-1)
            return Route(indices=frozen[t], gates=gates)
        selection = self._select()
        scale, tau = self._noise_schedule()
        scores = logits
        if selection.noise is not None:
            scores = logits + scale * selection.noise[t]
        scores = scores / tau
        index = selection.index[t]
        hard = torch.softmax(scores.gather(-1, index), dim=-1)
        soft = torch.softmax(scores, dim=-1).gather(-1, index)
        gates = hard.detach() + soft - soft.detach()
        return Route(indices=selection.indices[t], gates=gates)

    def usage(self) -> torch.Tensor:
        """[num_tasks, num_layers, N] deterministic gate weights (0 for unselected), detached."""
        out = torch.zeros(len(self.task_names), self.num_layers, self.num_legos)
        with torch.no_grad():
            for t, name in enumerate(self.task_names):
                logits = self.logits[name].detach().float().cpu()
                if self._frozen_lists is not None:
                    index = self.frozen_index[t].cpu()
                else:
                    index = logits.topk(self.top_k, dim=-1).indices
                out[t].scatter_(-1, index, torch.softmax(logits.gather(-1, index), dim=-1))
        return out

    # --- regularizers -----------------------------------------------------------------------
    def probabilities(self) -> torch.Tensor:
        """[num_tasks, num_layers, N] softmax of the logits (differentiable)."""
        return torch.softmax(torch.stack([self.logits[n] for n in self.task_names]), dim=-1)

    def balance_loss(self) -> torch.Tensor:
        mean = self.probabilities().mean(dim=0)
        return (self.num_legos * (mean**2).sum(-1) - 1.0).mean()

    def sharing_loss(self) -> torch.Tensor:
        p = self.probabilities()
        num_tasks = p.shape[0]
        if num_tasks < 2:
            return p.sum() * 0.0
        unit = F.normalize(p, dim=-1)
        cos = torch.einsum("tln,sln->lts", unit, unit)
        off_diag = ~torch.eye(num_tasks, dtype=torch.bool, device=p.device)
        return (1.0 - cos[:, off_diag]).mean()

    def regularizer(self) -> torch.Tensor:
        """Weighted router regularizers: a scalar depending on router parameters only."""
        cfg = self.cfg
        total = self.probabilities().sum() * 0.0
        if cfg.balance_weight:
            total = total + cfg.balance_weight * self.balance_loss()
        if cfg.sharing_weight:
            total = total + cfg.sharing_weight * self.sharing_loss()
        return total
