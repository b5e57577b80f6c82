"""How the explain stage runs: :class:`ExplainSettings`, one declaration per setting."""

from __future__ import annotations

from dataclasses import dataclass

from auditor.settings import inherited, setting

__all__ = ["IG_BASELINES", "ExplainSettings"]

IG_BASELINES = ("black", "blur", "mean")


def _known_methods(keys: tuple[str, ...]) -> str | None:
    from auditor.explain import METHODS  # the registry imports the methods, which import this

    unknown = [key for key in keys if key not in METHODS]
    if unknown:
        return f"names an unknown method {unknown[0]!r}; choose from {', '.join(METHODS)}"
    if len(set(keys)) != len(keys):
        return f"has repeated names: {list(keys)}"
    if not keys:
        return "is empty; name at least one method, or leave it out to run every method"
    return None


def _gradient_method(key: str) -> str | None:
    from auditor.explain import METHODS
    from auditor.explain.base import GradientMethod

    gradient = [k for k, cls in METHODS.items() if issubclass(cls, GradientMethod)]
    if key in gradient:
        return None
    return f"{key!r} is not a gradient method; choose from {', '.join(gradient)}"


@dataclass(frozen=True)
class ExplainSettings:
    """How the explain stage runs: one declaration per setting (see :mod:`auditor.settings`).

    ``methods`` left empty means every method, in report order. ``seed`` is the run's:
    each image draws from ``seed + its index``.
    """

    methods: tuple[str, ...] = setting(
        (),
        help="Explanation methods to run, in report order (see `auditor methods`)",
        check=_known_methods,
        flag=True,
        items="method names",
        default_text="every method",
    )
    target_layer: str | None = setting(
        None,
        help="Dotted module path of the CAM family's layer",
        flag=True,
        default_text="the last spatial layer (a transformer's last token layer with gradient)",
    )
    ig_baseline: str = setting(
        "black",
        help="Integrated-gradients baseline: black, the image blurred (sigma 1/20 of its "
        "side), or the explained images' mean colour",
        choices=IG_BASELINES,
        flag=True,
    )
    ig_steps: int = setting(
        32, help="Integrated-gradients steps (Gauss-Legendre)", minimum=2, flag=True
    )
    smoothgrad_samples: int = setting(
        16, help="Noisy copies per image for SmoothGrad", minimum=1, flag=True
    )
    smoothgrad_noise: float = setting(
        0.15,
        help="SmoothGrad's noise standard deviation",
        unit="share of the value range",
        minimum=0.0,
        maximum=1.0,
        open_minimum=True,
        flag=True,
    )
    smoothgrad_base: str = setting(
        "saliency",
        help="The gradient method SmoothGrad averages",
        check=_gradient_method,
        flag=True,
    )
    occlusion_window: int | None = setting(
        None,
        help="Side of the occluding square",
        unit="pixels",
        minimum=1,
        flag=True,
        default_text="1/8 of the image side",
    )
    occlusion_stride: int | None = setting(
        None,
        help="Step between occluding windows",
        unit="pixels",
        minimum=1,
        flag=True,
        default_text="half the window",
    )
    superpixels: int = setting(
        50, help="SLIC superpixels for LIME and KernelSHAP (approximate)", minimum=2, flag=True
    )
    lime_samples: int = setting(
        256, help="Perturbed images per image for LIME", minimum=10, flag=True
    )
    shap_samples: int = setting(
        256, help="Coalitions per image for KernelSHAP", minimum=10, flag=True
    )
    token_prefix: int | None = setting(
        None,
        help="Leading tokens (class, register) dropped when a transformer's tokens are "
        "folded into a grid",
        unit="tokens",
        minimum=0,
        flag=True,
        default_text="what is left over above the largest square",
    )
    pass_batches: str = setting(
        "batch-size",
        help="Images per pass of the perturbation methods: `batch-size`, or the cheapest "
        "per image of 8 to 128, timed on the device (often faster; maps may then differ "
        "between two runs in their last digits)",
        choices=("batch-size", "measured"),
        flag=True,
    )
    seed: int = inherited("seed", 0)

    def __post_init__(self) -> None:
        if not self.methods:
            from auditor.explain import METHODS

            object.__setattr__(self, "methods", tuple(METHODS))
