"""The trust stage's pass budget: how many maps each method recomputes.

The randomisation and stability checks recompute every method's map on ``trust-images``
images, once per step of the randomisation cascade and once per noisy copy. For a
perturbation method that is hundreds of passes per map (Score-CAM one per channel,
LIME and KernelSHAP one per sample), so on a small audit the full protocol costs many
times the explain stage (about 17 minutes against 1 for a random-weight resnet18 at
96 px, 2 images explained, on 2 CPU cores). With ``trust-budget`` set, the costliest
methods are recomputed at the cascade's last step only (the whole model randomised,
the step the verdict reads), then on fewer noisy copies and images (down to two, then
to one), until the stage's passes fit ``trust-budget`` times the explain stage's. The
report states each method's protocol as a sampling of the full one.

Passes are counted in forward-pass units: a forward+backward pass counts as
:data:`BACKWARD_COST` forward passes (a backward pass costs about twice a forward one).
The count is the plan, made before the checks run; it depends only on the settings,
the model and the explained cases, so two runs sample the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from auditor.explain.base import Method, PassCount

__all__ = [
    "BACKWARD_COST",
    "Protocol",
    "TrustPlan",
    "curve_units",
    "plan_text",
    "plan_trust",
    "protocol_text",
    "shared_passes",
    "units",
]

BACKWARD_COST = 3
"""Forward-pass units of one forward+backward pass."""


def units(passes: PassCount) -> int:
    """``passes`` in forward-pass units."""
    return passes.forward + BACKWARD_COST * passes.backward


def shared_passes(methods: Sequence[Method]) -> tuple[tuple[str, ...], int]:
    """The methods that read the shared gradient passes, and those passes' units per
    image: one forward, a backward (two units) when a reader needs gradients, and a
    guided backward when one is guided (0 without a reader)."""
    readers = tuple(m.key for m in methods if m.needs_passes)
    if not readers:
        return readers, 0
    gradients = any(m.needs_passes and m.needs_gradients for m in methods)
    return readers, 1 + 2 * gradients + 2 * any(m.needs_guided for m in methods)


def curve_units(maps: int, deletion_steps: int) -> int:
    """Forward passes of one image's deletion and insertion curves for ``maps`` maps and a
    random order (:func:`~auditor.measure.faithfulness.curves`: ``3 + 2 M (S - 1)``)."""
    return 3 + 2 * (maps + 1) * (deletion_steps - 1) if deletion_steps else 0


@dataclass(frozen=True)
class Protocol:
    """How one method's maps are recomputed by the randomisation and stability checks.

    Attributes:
        images: The first explained images (of the trust images) it runs on.
        steps: Cascade steps it runs at: every step, or 1 (the last: the whole model).
        copies: Noisy copies per image for the stability check.
    """

    images: int
    steps: int
    copies: int

    @property
    def maps(self) -> int:
        """Maps recomputed: per image, one per cascade step and one per noisy copy."""
        return self.images * (self.steps + self.copies)

    def reduced(self) -> Protocol | None:
        """The next smaller protocol, or ``None`` at the smallest (or with no image).

        What the verdicts read goes last: first the intermediate cascade steps (the
        randomisation verdict reads the last step), then noisy copies down to 2, images
        down to 2, the last copy, the last image.
        """
        if self.images == 0:
            return None
        if self.steps > 1:
            return replace(self, steps=1)
        for copies, images in ((2, 2), (1, 1)):
            if self.copies > copies:
                return replace(self, copies=self.copies - 1)
            if self.images > images:
                return replace(self, images=self.images - 1)
        return None

    def smallest(self) -> Protocol:
        """The smallest protocol :meth:`reduced` reaches from this one."""
        protocol = self
        while (smaller := protocol.reduced()) is not None:
            protocol = smaller
        return protocol


@dataclass(frozen=True)
class TrustPlan:
    """The passes of the explain stage and of the trust checks, and each method's protocol.

    Attributes:
        budget: ``trust-budget`` (0: none, every method runs the full protocol).
        explain: Forward-pass units of the explain stage.
        map_checks: Units of the checks that read the explained maps (the deletion
            and insertion curves).
        full: The full protocol (``trust-images``, every cascade step, every copy).
        protocols: Method → its protocol, in the methods' order.
        costs: Method → units per recomputed map (its own passes).
        shared: Units per recomputed image of the gradient passes the gradient methods
            share (0 when no method reads them).
        readers: The methods that read the shared passes. Those with no passes of
            their own are never sampled (they cost their share of one pass); Score-CAM
            reads them and runs one pass per channel.
    """

    budget: float
    explain: int
    map_checks: int
    full: Protocol
    protocols: dict[str, Protocol]
    costs: dict[str, int]
    shared: int
    readers: tuple[str, ...]

    @property
    def recompute(self) -> int:
        """Units of the randomisation and stability checks under the protocols (a reader
        of the shared passes on a smaller protocol runs in batches of its own, which
        take those passes again)."""
        own = sum(self.costs[key] * p.maps for key, p in self.protocols.items())
        apart = sum(
            p.maps for k, p in self.protocols.items() if k in self.readers and p != self.full
        )
        return own + (self.shared * (self.full.maps + apart) if self.readers else 0)

    @property
    def full_total(self) -> int:
        """Units the whole trust stage would take with every method on the full protocol."""
        maps = self.full.maps
        own = sum(cost * maps for cost in self.costs.values())
        return self.map_checks + own + (self.shared * maps if self.readers else 0)

    @property
    def unmet_total(self) -> int:
        """At most the units the trust stage takes when no protocol fits the budget.

        Every method with passes of its own not on the shared passes then ends on its
        smallest protocol. A shared-pass reader with passes of its own (Score-CAM) may
        stop earlier, where a notch would not lower the total (its batches would take
        the shared passes again), so it is counted at the full protocol: each accepted
        notch lowers the total, so it never costs more than that.
        """
        smallest = self.full.smallest().maps
        own = sum(
            cost * (self.full.maps if key in self.readers else smallest)
            for key, cost in self.costs.items()
        )
        return self.map_checks + own + (self.shared * self.full.maps if self.readers else 0)

    @property
    def total(self) -> int:
        """Units of the whole trust stage."""
        return self.map_checks + self.recompute

    @property
    def ratio(self) -> float:
        """The trust stage's units over the explain stage's (NaN without explain passes)."""
        return self.total / self.explain if self.explain else float("nan")

    @property
    def sampled(self) -> tuple[str, ...]:
        """Methods recomputed on less than the full protocol."""
        return tuple(key for key, p in self.protocols.items() if p != self.full)

    @property
    def within(self) -> bool:
        """Whether the stage fits the budget (always, without one)."""
        return not self.budget or self.total <= self.budget * self.explain


def plan_trust(
    budget: float,
    full: Protocol,
    passes: Mapping[str, PassCount],
    readers: tuple[str, ...],
    shared: int,
    explained: int,
    map_checks: int,
) -> TrustPlan:
    """Each method's protocol: the full one, shrunk for the costliest until the budget fits.

    Args:
        budget: ``trust-budget`` times the explain stage's units (0: no budget).
        full: The full protocol.
        passes: Method → its own passes per map (beyond the shared passes).
        readers: Methods that read the shared gradient passes.
        shared: Units per image of those shared passes.
        explained: Explained maps sets (cases) of the explain stage.
        map_checks: Units of the checks that read the explained maps.

    The method whose recomputation costs most loses one notch of its protocol at a time
    (ties: the first in the methods' order) until the stage fits; methods with no passes
    of their own keep the full protocol. When even the smallest protocols do not fit, the
    plan says so (:attr:`TrustPlan.within`) and runs them.
    """
    costs = {key: units(p) for key, p in passes.items()}
    own = [key for key in passes if costs[key]]
    explain = explained * (sum(costs.values()) + (shared if readers else 0))
    plan = TrustPlan(
        budget, explain, map_checks, full, {k: full for k in passes}, costs, shared, readers
    )
    stuck: set[str] = set()  # a notch that would not lower the total (shared passes again)
    while not plan.within:
        shrinkable = [k for k in own if k not in stuck and plan.protocols[k].reduced() is not None]
        if not shrinkable:
            break
        costliest = max(shrinkable, key=lambda k: costs[k] * plan.protocols[k].maps)
        smaller = plan.protocols[costliest].reduced()
        assert smaller is not None
        candidate = replace(plan, protocols={**plan.protocols, costliest: smaller})
        if candidate.total < plan.total:
            plan = candidate
        else:
            stuck.add(costliest)
    return plan


def protocol_text(protocol: Protocol, full: Protocol) -> str:
    """What ``protocol`` keeps of the full one, in words, e.g. "2 of 8 images, 1 of 5
    noisy copies, the last cascade step only" (what it keeps whole is not named)."""
    parts = []
    if protocol.images < full.images:
        parts.append(f"{protocol.images} of {full.images} images")
    if protocol.copies < full.copies:
        parts.append(f"{protocol.copies} of {full.copies} noisy copies")
    if protocol.steps < full.steps:
        parts.append("the last cascade step only")
    return ", ".join(parts)


def plan_text(plan: TrustPlan) -> str:
    """The plan in one line: both stages' passes, the ratio, the budget and the sampling."""
    budget = f"budget {plan.budget:g}x" if plan.budget else "no budget"
    ratio = f"{plan.ratio:.2f}x" if plan.explain else "no explain passes"
    text = f"explain {plan.explain:,} passes, trust {plan.total:,} ({ratio}; {budget})"
    sampled = [f"{key}: {protocol_text(plan.protocols[key], plan.full)}" for key in plan.sampled]
    if sampled:
        text += "; sampled: " + "; ".join(sampled)
    if not plan.within:
        text += "; the smallest protocols do not fit the budget"
    return text
