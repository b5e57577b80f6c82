"""The trust stage's pass budget: the plan, and the checks run under sampled protocols.

The plan is arithmetic on pass counts (checked against the counts by hand); the checks
under a sampled protocol must give, for each method, exactly the rows of the full run
on the images, steps and noisy copies the protocol keeps.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from auditor.explain import ExplainSettings, PassCount
from auditor.explain.batching import attribute_batch
from auditor.explain.engine import build_context
from auditor.explain.store import MapStore
from auditor.images import Preprocessing
from auditor.load import OutputKind
from auditor.measure import TrustCase, TrustSettings
from auditor.measure.budget import Protocol, plan_text, plan_trust, protocol_text, units
from auditor.measure.checks import randomisation_check, stability_check
from auditor.measure.randomisation import cascade
from tests.helpers import loaded_model, smooth_images, torchscript_twin, varied_tiny_net

SIZE = 32

# The default methods' own passes per map at 96 px on a resnet18 (512 channels at layer4).
DEFAULT = {
    "saliency": PassCount(),
    "input-x-gradient": PassCount(),
    "guided-backprop": PassCount(),
    "integrated-gradients": PassCount(backward=32),
    "smoothgrad": PassCount(backward=16),
    "occlusion": PassCount(forward=226),
    "cam": PassCount(),
    "grad-cam": PassCount(),
    "grad-cam-plus-plus": PassCount(),
    "guided-grad-cam": PassCount(),
    "score-cam": PassCount(forward=513),
    "lime": PassCount(forward=256),
    "kernel-shap": PassCount(forward=256),
}
READERS = (*(k for k, p in DEFAULT.items() if p == PassCount()), "score-cam")


def test_without_a_budget_every_method_runs_the_full_protocol() -> None:
    full = Protocol(images=2, steps=4, copies=5)
    plan = plan_trust(0, full, DEFAULT, READERS, 5, explained=2, map_checks=1000)
    assert set(plan.protocols.values()) == {full}
    assert plan.sampled == () and plan.within
    own = sum(units(p) for p in DEFAULT.values())  # 32*3 + 16*3 + 226 + 513 + 256 + 256
    assert own == 1395
    assert plan.explain == 2 * (own + 5)
    assert plan.recompute == (own + 5) * 2 * (4 + 5)
    assert plan.total == 1000 + plan.recompute


def test_the_issue_s_small_audit_fits_three_times_its_explain_stage() -> None:
    # 9 images, 2 explained, trust on both: the full protocol is 9x the explain stage.
    full = Protocol(images=2, steps=4, copies=5)
    curves = 2 * (3 + 2 * 14 * 19)  # deletion and insertion of 13 maps + a random one
    unbudgeted = plan_trust(0, full, DEFAULT, READERS, 5, 2, curves)
    assert unbudgeted.ratio > 9 and unbudgeted.total == unbudgeted.full_total
    plan = plan_trust(3.0, full, DEFAULT, READERS, 5, 2, curves)
    assert plan.within and plan.ratio <= 3.0 and plan.full_total == unbudgeted.total
    assert set(plan.sampled) <= {k for k in DEFAULT if units(DEFAULT[k])}
    assert "score-cam" in plan.sampled  # the costliest per map
    assert all(plan.protocols[k] == full for k in READERS if not units(DEFAULT[k]))
    # Score-CAM's 513 passes a map took it to the smallest protocol; IG lost only the
    # intermediate cascade steps, which no verdict reads.
    assert plan.protocols["score-cam"] == Protocol(1, 1, 1)
    assert plan.protocols["integrated-gradients"] == Protocol(2, 1, 5)
    text = plan_text(plan)
    assert text.startswith(f"explain {plan.explain:,} passes, trust {plan.total:,}")
    assert "budget 3x" in text and "score-cam: " in text


def test_protocols_shrink_what_the_verdicts_do_not_read_first() -> None:
    full = Protocol(images=3, steps=4, copies=3)
    seen = [full]
    while (smaller := seen[-1].reduced()) is not None:
        seen.append(smaller)
    assert seen == [
        full,
        Protocol(3, 1, 3),  # the intermediate cascade steps
        Protocol(3, 1, 2),  # copies, then images, down to two
        Protocol(2, 1, 2),
        Protocol(2, 1, 1),  # then to one
        Protocol(1, 1, 1),
    ]
    assert full.smallest() == Protocol(1, 1, 1)
    full = Protocol(images=3, steps=4, copies=2)
    assert protocol_text(seen[-1], full) == (
        "1 of 3 images, 1 of 2 noisy copies, the last cascade step only"
    )


def test_a_budget_no_protocol_can_meet_is_said_and_the_smallest_protocols_run() -> None:
    full = Protocol(images=4, steps=3, copies=3)
    passes = {"score-cam": PassCount(forward=500), "saliency": PassCount()}
    readers = ("saliency", "score-cam")  # Score-CAM reads the shared activations too
    plan = plan_trust(0.5, full, passes, readers, 3, explained=1, map_checks=0)
    assert not plan.within
    assert plan.protocols == {"score-cam": Protocol(1, 1, 1), "saliency": full}
    # Score-CAM's own 2 maps, and the shared passes for saliency's 24 and again for its 2
    assert plan.recompute == 500 * 2 + 3 * (24 + 2)
    assert plan_text(plan).endswith("the smallest protocols do not fit the budget")


@pytest.fixture(scope="module")
def two_methods() -> tuple:
    model = loaded_model(torchscript_twin(varied_tiny_net(), "script", SIZE))
    settings = ExplainSettings(methods=("grad-cam", "occlusion"), occlusion_window=8)
    context, methods, _ = build_context(
        model, OutputKind.LOGITS, "features", settings, Preprocessing(3)
    )
    display = smooth_images(4, SIZE, seed=3)
    targets = torch.tensor([0, 1, 1, 0])
    maps = attribute_batch(context, methods, display, targets, list(range(4)))
    cases = [TrustCase(i, "sampled", "predicted", int(targets[i]), display[i]) for i in range(4)]
    original = MapStore()
    for key, found in maps.items():
        for case in cases:
            original.put(case, key, np.asarray(found)[case.index])
    return model, context, methods, cases, original


def _rows(frame: pd.DataFrame, method: str) -> pd.DataFrame:
    return frame[frame["method"] == method].reset_index(drop=True)


def test_a_sampled_method_gets_the_full_run_s_rows_on_what_its_protocol_keeps(
    two_methods: tuple,
) -> None:
    model, context, methods, cases, original = two_methods
    settings = TrustSettings(stability_samples=3)
    steps = cascade(model, {}, 3)
    full = Protocol(len(cases), len(steps), 3)
    sampled = {"grad-cam": full, "occlusion": Protocol(2, 1, 2)}
    args = (context, methods, cases, ("a", "b"), original)

    everything, _ = randomisation_check(*args, steps, settings, 4)
    fewer, example = randomisation_check(*args, steps, settings, 4, sampled)
    pd.testing.assert_frame_equal(_rows(fewer, "grad-cam"), _rows(everything, "grad-cam"))
    kept = _rows(everything, "occlusion")
    kept = kept[(kept["index"] < 2) & (kept["step"] == steps[-1].label)].reset_index(drop=True)
    pd.testing.assert_frame_equal(_rows(fewer, "occlusion"), kept)
    assert {s for s, k in example if k == "occlusion"} == {steps[-1].label}

    stable = stability_check(*args, settings, 4)
    sampled_stable = stability_check(*args, settings, 4, sampled)
    pd.testing.assert_frame_equal(_rows(sampled_stable, "grad-cam"), _rows(stable, "grad-cam"))
    two_copies = stability_check(*args, TrustSettings(stability_samples=2), 4)
    expected = _rows(two_copies, "occlusion").query("index < 2").reset_index(drop=True)
    pd.testing.assert_frame_equal(_rows(sampled_stable, "occlusion"), expected)


def test_without_trust_images_nothing_is_sampled() -> None:
    full = Protocol(images=0, steps=4, copies=5)
    assert full.reduced() is None
    plan = plan_trust(0.1, full, DEFAULT, READERS, 5, explained=2, map_checks=10_000)
    assert plan.sampled == () and plan.recompute == 0 and not plan.within


@pytest.mark.parametrize("seed", range(200))
def test_the_run_plan_s_trust_bound_holds_whether_or_not_the_budget_is_met(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keys = [f"m{i}" for i in range(int(rng.integers(1, 6)))]
    passes = {
        k: PassCount(forward=int(rng.choice([0, 1, 3, 8, 200])), backward=int(rng.choice([0, 16])))
        for k in keys
    }
    readers = tuple(k for k in keys if rng.random() < 0.5)
    full = Protocol(int(rng.integers(0, 5)), int(rng.integers(0, 5)), int(rng.integers(1, 6)))
    budget = float(rng.choice([0.0, 0.5, 1.0, 3.0]))
    shared = int(rng.integers(1, 6)) if readers else 0
    args = (full, passes, readers, shared, int(rng.integers(1, 5)), int(rng.integers(0, 500)))
    plan = plan_trust(budget, *args)
    unbudgeted = plan_trust(0, *args)
    assert plan.total <= unbudgeted.full_total == unbudgeted.total
    if budget:
        bound = max(math.ceil(budget * plan.explain), unbudgeted.unmet_total)
        assert plan.total <= bound
    assert plan.within or all(
        plan.protocols[k] == full.smallest() for k in keys if units(passes[k]) and k not in readers
    )
