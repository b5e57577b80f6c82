"""Cascading model-parameter randomisation (Adebayo et al., 2018).

"Sanity Checks for Saliency Maps", NeurIPS 2018: re-initialise the model's weights
layer by layer from the output down and recompute the maps; a method whose maps barely
change does not depend on what the model learned. Here a deep copy of the TorchScript
module is randomised in place, so no Python class is needed: each step draws every
parameter of the next modules afresh from a normal distribution with that tensor's own
mean and standard deviation (the learned structure goes, the scale stays, so
activations neither vanish nor explode; a constant tensor, such as an untrained
batch norm's, holds no learned structure and stays as it is); buffers such as batch-norm
running statistics stay. Quantus's ``MPRT`` calls ``reset_parameters`` on Python
modules, which a loaded TorchScript model does not have, hence own code.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pandas as pd
import torch

from auditor.load import LoadedModel
from auditor.measure.check import NOT_MEASURED, Check, Evidence
from auditor.measure.similarity import mean_ci
from auditor.taps import Model, tap_model

__all__ = ["CascadeStep", "Randomisation", "cascade", "randomised_models"]


@dataclass(frozen=True)
class CascadeStep:
    """One step of the cascade: every module down to ``label`` is randomised.

    Attributes:
        label: The deepest (earliest) module randomised at this step.
        modules: Module paths randomised at this step and before, output first.
        share: Share of the model's parameterised modules randomised so far.
    """

    label: str
    modules: tuple[str, ...]
    share: float


def _parameter_modules(module: Model) -> list[str]:
    """Paths of the modules that own parameters directly, in definition order."""
    owners = dict.fromkeys(name.rpartition(".")[0] for name, _ in module.named_parameters())
    return list(owners)


def cascade(model: LoadedModel, order: Mapping[str, int], steps: int) -> tuple[CascadeStep, ...]:
    """The randomisation steps, output layer first, the whole model last.

    Args:
        model: The model.
        order: Module path → execution order (later modules run later); modules
            missing from it keep their definition order.
        steps: Number of steps (the first randomises the last module alone, the last
            all of them; the others cut the modules in between evenly).

    Returns:
        The steps; empty when the model has no parameters (a frozen TorchScript model
        keeps its weights as constants of the graph).
    """
    owners = _parameter_modules(model.module)
    if not owners:
        return ()
    ranked = sorted(range(len(owners)), key=lambda i: (order.get(owners[i], 0), i), reverse=True)
    top_down = [owners[i] for i in ranked]
    n = len(top_down)
    if steps <= 1 or n == 1:
        cuts = [n]
    else:
        cuts = sorted({1 + round(j * (n - 1) / (steps - 1)) for j in range(steps)})
    return tuple(
        CascadeStep(
            label=top_down[cut - 1] or "(root)",
            modules=tuple(top_down[:cut]),
            share=cut / n,
        )
        for cut in cuts
    )


def randomised_models(
    model: LoadedModel, steps: tuple[CascadeStep, ...], seed: int
) -> Iterator[tuple[CascadeStep, LoadedModel]]:
    """One copy of ``model``, randomised further at each step (the original is untouched).

    The same copy is yielded at each step, randomised in place: use it before asking for
    the next step.
    """
    module = copy.deepcopy(model.module)
    randomised = dataclasses.replace(model, module=module, tapped=tap_model(module))
    generator = torch.Generator().manual_seed(seed)
    parameters = dict(module.named_parameters())
    done: set[str] = set()
    for step in steps:
        with torch.no_grad():
            for path in step.modules:
                if path in done:
                    continue
                done.add(path)
                prefix = f"{path}." if path else ""
                for name, tensor in parameters.items():
                    if name.startswith(prefix) and "." not in name[len(prefix) :]:
                        # drawn on the CPU's generator, so a GPU audit draws the same weights
                        values = tensor.detach().float().cpu()
                        mean, std = values.mean(), values.std(unbiased=False)
                        draw = torch.randn(tensor.shape, generator=generator) * std + mean
                        tensor.copy_(draw.to(tensor.device, tensor.dtype))
        yield step, randomised


class Randomisation(Check):
    """*Fails* when the mean rank correlation between the maps of the model and of its fully
    randomised copy is at least ``randomisation-threshold``. Measured by the measure
    stage's randomisation step (it recomputes every map on randomised copies)."""

    key = "randomisation"
    title = "Randomisation"
    columns: ClassVar[dict[str, str]] = {
        "randomisation_spearman": "float64",
        "randomisation_spearman_low": "float64",
        "randomisation_spearman_high": "float64",
        "randomisation_ssim": "float64",
        "randomisation": "string",
    }

    def summarise(self, evidence: Evidence, method: str) -> dict[str, object]:
        step = evidence.last_step
        if step is None:
            spearman: tuple[float, float, float] = (np.nan, np.nan, np.nan)
            ssim = np.nan
        else:
            spearman = mean_ci(evidence.values(method, "spearman", step).to_numpy(), evidence.seed)
            ssim = evidence.values(method, "ssim", step).mean()
        judged = (
            NOT_MEASURED
            if np.isnan(spearman[0])
            else "fails"
            if spearman[0] >= evidence.randomisation_threshold
            else "passes"
        )
        return dict(zip(self.columns, (*spearman, ssim, judged), strict=True))

    def describe(self, row: pd.Series) -> str:
        if row["randomisation"] == NOT_MEASURED:
            return NOT_MEASURED
        return (
            f"{row['randomisation']} (ρ = {row['randomisation_spearman']:.2f}, "
            f"SSIM {row['randomisation_ssim']:.2f})"
        )
