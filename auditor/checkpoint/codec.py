"""A stage's result to files and back, exactly, without pickle.

A value becomes one JSON tree (``value.json``) and the arrays it holds (``arrays.npz``,
read with ``allow_pickle=False``). Dataclasses, enums and the few other classes named in
:data:`ADAPTERS` are rebuilt from their dotted names, and only from ``auditor``'s own
modules: a checkpoint folder edited by someone else can make a run fail, never run code.
Numbers round-trip exactly (floats as JSON's shortest repr, arrays bit for bit), and a
DataFrame keeps its columns' dtypes and its index, so a resumed run writes the same bytes
as an uninterrupted one.

Written by hand: ``pickle`` would do it in a line, but reading a pickle runs whatever it
says, and the run folder lives where a scheduler's other jobs may write.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from auditor.explain.store import MapStore, write_npz
from auditor.similarity.embeddings import EmbeddingStore

__all__ = ["ADAPTERS", "CheckpointError", "read_value", "write_value"]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read back (written by another version, or edited)."""


def _encode_maps(store: MapStore, encode: Callable[[Any], Any]) -> Any:
    return encode(list(store._maps.items()))


def _decode_maps(state: Any) -> MapStore:
    store = MapStore()
    for (index, role, method), value in state:
        store._maps[(index, role, method)] = value
    return store


def _encode_embeddings(store: EmbeddingStore, encode: Callable[[Any], Any]) -> Any:
    rows = store.all() if store.rows else np.zeros((0, 0), np.float32)
    return encode([store.capacity, np.asarray(rows)])


def _decode_embeddings(state: Any) -> EmbeddingStore:
    capacity, rows = state
    store = EmbeddingStore(capacity)
    if len(rows):
        store.add(torch.from_numpy(rows))
    return store


ADAPTERS: dict[type, tuple[Callable[[Any, Callable[[Any], Any]], Any], Callable[[Any], Any]]] = {
    MapStore: (_encode_maps, _decode_maps),
    EmbeddingStore: (_encode_embeddings, _decode_embeddings),
}
"""Classes that are neither dataclasses nor enums: how each is saved and rebuilt."""


def _name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _class(name: str) -> type:
    """The class named ``module:qualname``, from an ``auditor`` module only."""
    module_name, _, qualname = name.partition(":")
    if module_name.split(".")[0] != "auditor":
        raise CheckpointError(f"refused to rebuild {name!r}: not an Auditor class")
    owner: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        owner = getattr(owner, part)
    if not isinstance(owner, type):
        raise CheckpointError(f"{name!r} is not a class")
    return owner


class _Encoder:
    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, value: np.ndarray) -> dict[str, Any]:
        if value.dtype == object:
            return {"objects": [self(v) for v in value.tolist()], "shape": list(value.shape)}
        key = f"a{len(self.arrays)}"
        self.arrays[key] = value
        return {"array": key}

    def frame(self, frame: pd.DataFrame) -> dict[str, Any]:
        return {
            "frame": [self.series(frame.iloc[:, i]) for i in range(frame.shape[1])],
            "index": self.index(frame.index),
            "columns": self.index(frame.columns),
        }

    def series(self, series: pd.Series) -> dict[str, Any]:
        dtype = series.dtype
        if isinstance(dtype, pd.CategoricalDtype):
            return {
                "categories": self.index(dtype.categories),
                "ordered": bool(dtype.ordered),
                "codes": self.array(series.cat.codes.to_numpy()),
            }
        if isinstance(dtype, np.dtype) and dtype.kind != "O":
            return {"numpy": self.array(series.to_numpy())}
        values = [None if v is pd.NA or v is None else self(v) for v in series.astype(object)]
        return {"dtype": str(dtype), "values": values}

    def index(self, index: pd.Index) -> dict[str, Any]:
        if isinstance(index, pd.RangeIndex):
            return {"range": [index.start, index.stop, index.step], "name": self(index.name)}
        return {"values": self.series(pd.Series(index)), "name": self(index.name)}

    def __call__(self, value: Any) -> Any:
        if value is None or isinstance(value, bool | int | str):
            return value
        if isinstance(value, float):
            return {"float": repr(value)}
        if type(value) in ADAPTERS:
            return {"adapted": _name(type(value)), "state": ADAPTERS[type(value)][0](value, self)}
        if isinstance(value, enum.Enum):
            return {"enum": _name(type(value)), "value": self(value.value)}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            fields = {f.name: self(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return {"dataclass": _name(type(value)), "fields": fields}
        return self._container(value)

    def _container(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return self.array(value)
        if isinstance(value, np.generic):
            return {"scalar": self.array(np.asarray(value))}
        if isinstance(value, torch.Tensor):
            return {"tensor": self.array(value.detach().cpu().numpy())}
        if isinstance(value, torch.device):
            return {"device": str(value)}
        if isinstance(value, Path):
            return {"path": str(value)}
        if isinstance(value, pd.DataFrame):
            return self.frame(value)
        if isinstance(value, pd.Series):
            return {"series": self.series(value), "name": self(value.name)}
        if isinstance(value, tuple | list):
            return {"tuple" if isinstance(value, tuple) else "list": [self(v) for v in value]}
        if isinstance(value, dict):
            return {"dict": [[self(k), self(v)] for k, v in value.items()]}
        raise CheckpointError(f"cannot save a {type(value).__name__} in a checkpoint")


class _Decoder:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays

    def array(self, node: dict[str, Any]) -> np.ndarray:
        if "objects" in node:
            values = np.empty(len(node["objects"]), dtype=object)
            values[:] = [self(v) for v in node["objects"]]
            return values.reshape(node["shape"])
        return self.arrays[node["array"]]

    def series(self, node: dict[str, Any]) -> pd.Series:
        if "categories" in node:
            dtype = pd.CategoricalDtype(self.index(node["categories"]), node["ordered"])
            return pd.Series(pd.Categorical.from_codes(self.array(node["codes"]), dtype=dtype))
        if "numpy" in node:
            return pd.Series(self.array(node["numpy"]))
        values = [pd.NA if v is None else self(v) for v in node["values"]]
        if node["dtype"] == "object":
            values = [None if v is pd.NA else v for v in values]
        return pd.Series(values, dtype=node["dtype"])

    def index(self, node: dict[str, Any]) -> pd.Index:
        if "range" in node:
            start, stop, step = node["range"]
            return pd.RangeIndex(start, stop, step, name=self(node["name"]))
        return pd.Index(self.series(node["values"]), name=self(node["name"]))

    def frame(self, node: dict[str, Any]) -> pd.DataFrame:
        index = self.index(node["index"])
        columns = [self.series(series).set_axis(index) for series in node["frame"]]
        frame = pd.concat(columns, axis=1) if columns else pd.DataFrame(index=index)
        frame.columns = self.index(node["columns"])
        return frame

    def __call__(self, node: Any) -> Any:
        if node is None or isinstance(node, bool | int | str):
            return node
        if isinstance(node, list):
            raise CheckpointError("a bare list in a checkpoint: written by another version?")
        (kind, *_) = node
        if kind == "float":
            return float(node["float"])
        if kind == "adapted":
            return ADAPTERS[_class(node["adapted"])][1](self(node["state"]))
        if kind == "enum":
            return _class(node["enum"])(self(node["value"]))
        if kind == "dataclass":
            cls = _class(node["dataclass"])
            values = {name: self(v) for name, v in node["fields"].items()}
            init = {f.name for f in dataclasses.fields(cls) if f.init}
            made = cls(**{k: v for k, v in values.items() if k in init})
            for name in values.keys() - init:
                object.__setattr__(made, name, values[name])
            return made
        return self._container(kind, node)

    def _container(self, kind: str, node: dict[str, Any]) -> Any:
        simple: dict[str, Callable[[Any], Any]] = {
            "array": lambda _: self.array(node),
            "objects": lambda _: self.array(node),
            "scalar": lambda v: self.array(v)[()],
            "tensor": lambda v: torch.from_numpy(self.array(v).copy()),
            "device": torch.device,
            "path": Path,
            "frame": lambda _: self.frame(node),
            "series": lambda v: self.series(v).rename(self(node["name"])),
            "tuple": lambda v: tuple(self(x) for x in v),
            "list": lambda v: [self(x) for x in v],
            "dict": lambda v: {self(k): self(x) for k, x in v},
        }
        if kind not in simple:
            raise CheckpointError(f"unknown entry {kind!r} in a checkpoint")
        return simple[kind](node[kind])


def write_value(value: Any, folder: Path) -> None:
    """Save ``value`` in ``folder`` (created): ``value.json`` and ``arrays.npz``."""
    encode = _Encoder()
    tree = encode(value)
    folder.mkdir(parents=True, exist_ok=True)
    write_npz(folder / "arrays.npz", encode.arrays)
    (folder / "value.json").write_text(json.dumps(tree), encoding="utf-8")


def read_value(folder: Path) -> Any:
    """The value :func:`write_value` saved in ``folder``.

    Raises:
        CheckpointError: The files are not a checkpoint this version wrote.
    """
    try:
        tree = json.loads((folder / "value.json").read_text(encoding="utf-8"))
        with np.load(folder / "arrays.npz", allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        return _Decoder(arrays)(tree)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{folder.name}: {error}") from None
