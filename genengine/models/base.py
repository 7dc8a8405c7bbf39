"""The model protocol every family follows, the family registry, and saving/loading.

    class GaussianMixture(GenerativeModel):
        likelihood = "exact"            # "exact" | "lower_bound" | "estimate" | None (no density)
        conditional = False             # sample/log_prob take a condition (class, context, ...)
        def fit(self, data, *, max_iter=100, batch_size=None, progress=True, callback=None): ...; return self
        def sample(self, n, *, generator=None): ...   # (n, *sample_shape)
        def log_prob(self, x): ...                    # (N,) per sample, in nats

    model.save("gmm.pt"); same = GaussianMixture.load("gmm.pt")    # or ge.models.load("gmm.pt")
    ge.models.available()     # {name: {"sample", "likelihood", "conditional", "fit", "module"}}

The protocol:
- `sample(n, *, generator=None)` draws n samples; the same generator seed gives the same samples.
- `log_prob(x)` returns one log-density (or log-probability mass) per sample, in nats. The class
  attribute `likelihood` says honestly what it is: "exact", "lower_bound" (an ELBO), "estimate"
  (e.g. annealed importance sampling) or None, in which case log_prob raises NotImplementedError
  with a sentence saying why (a GAN's density is implicit).
- `fit(data, *, epochs= or max_iter=, batch_size=, progress=True, callback=None)` trains in place and
  returns self. `callback(model, info)` is called after every epoch / iteration with a dict of what
  was measured (at least "epoch" or "iter"); a callback that returns True stops training.
- Models are torch.nn.Modules: `.to(device)` moves them, `state_dict()`/`load_state_dict()` round-trip.
- `save(path)` writes the constructor arguments and the state dict in torch's zip format, loadable
  with `weights_only=True` (no pickled code). `Cls.load(path, **modules)` rebuilds the model;
  constructor arguments that are networks (a VAE's encoder, a GAN's generator, ...) are not
  stored and must be passed again by name. A truncated, corrupted or foreign file raises
  ModelFileError before any parameter is touched; a loaded model has bit-identical parameters.

Subclasses that keep fitted state outside parameters and buffers (Python numbers, flags) should
register it as buffers, list it in `FitRecord`'s `_fit_record`, or override `get_extra_state`/
`set_extra_state` (nn.Module's hook, part of the state dict) so that save/load keeps it.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import io
import numbers
import os
import zipfile

import torch
from torch import nn

__all__ = ["GenerativeModel", "FitRecord", "ModelFileError", "available", "load", "check_data", "LIKELIHOODS"]

LIKELIHOODS = ("exact", "lower_bound", "estimate", None)
_FORMAT = "genengine-model"
_FORMAT_VERSION = 2  # 2: the digest covers the class, configuration and modules too (1: the state only)
_READABLE_VERSIONS = (1, 2)
_REGISTRY: dict[str, type] = {}


class ModelFileError(ValueError):
    """A model file is truncated, corrupted, written by something else, or holds another model."""


class GenerativeModel(nn.Module):
    """Base class of the generative families: see the module docstring for the protocol."""

    likelihood: str | None = None
    conditional: bool = False
    abstract = True  # excluded from available(); concrete families set nothing (the default below)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.likelihood not in LIKELIHOODS:
            raise TypeError(f"{cls.__name__}.likelihood: expected one of {LIKELIHOODS}, got {cls.likelihood!r}")
        if "abstract" not in cls.__dict__:
            cls.abstract = False
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _recording_init(init)
        if not cls.abstract and not cls.__name__.startswith("_"):
            _REGISTRY[cls.__name__] = cls

    # ---- the protocol -------------------------------------------------------------------------
    def sample(self, n: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} does not implement sample()")

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no tractable likelihood, so it has no log_prob()")

    def fit(self, data, *, progress: bool = True, callback=None, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not implement fit()")

    @property
    def device(self) -> torch.device:
        for t in self.parameters():
            return t.device
        for t in self.buffers():
            return t.device
        return torch.device("cpu")

    # ---- saving and loading -------------------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments this model was built with (networks as their class names)."""
        return dict(getattr(self, "_ge_config", {}))

    def save(self, path) -> None:
        """Writes the constructor arguments and the state dict to `path` (torch zip format)."""
        config, modules = {}, []
        for k, v in self.get_config().items():
            if isinstance(v, nn.Module) or (callable(v) and not isinstance(v, (torch.Tensor, type))):
                modules.append(k)
            else:
                config[k] = _plain(f"{type(self).__name__}({k}=...)", v)
        state = {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in self.state_dict().items()}
        doc = {"format": _FORMAT, "version": _FORMAT_VERSION, "class": type(self).__name__,
               "config": config, "modules": modules, "state_dict": state}
        doc["digest"] = _digest_doc(doc)
        if os.path.isdir(path):
            raise IsADirectoryError(f"path: {os.fspath(path)!r} is a directory; expected a file name")
        tmp = f"{os.fspath(path)}.tmp-{os.getpid()}"
        try:
            torch.save(doc, tmp)
            os.replace(tmp, path)  # a crash mid-write never leaves a half-written file under `path`
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise

    @classmethod
    def load(cls, path, *, map_location="cpu", **modules):
        """Rebuilds the model saved at `path`; networks that were constructor arguments are passed
        again by name (e.g. VAE.load(path, encoder=enc, decoder=dec))."""
        doc = _read(path, map_location)
        name = doc["class"]
        target = cls
        if cls is GenerativeModel or cls.abstract:
            target = _REGISTRY.get(name)
            if target is None:
                raise ModelFileError(f"path: {os.fspath(path)!r} holds a {name!r}, which is not a genengine model family")
        elif name != cls.__name__:
            raise ModelFileError(f"path: {os.fspath(path)!r} holds a {name!r}, not a {cls.__name__}; "
                                 f"use genengine.models.load() or {name}.load()")
        missing = [k for k in doc["modules"] if k not in modules]
        if missing:
            raise TypeError(f"{name}.load: the saved model was built with network argument(s) {', '.join(missing)}, "
                            f"which are not stored in the file; pass them again, e.g. {name}.load(path, {missing[0]}=...)")
        unknown = [k for k in modules if k not in doc["modules"]]
        if unknown:
            raise TypeError(f"{name}.load: unexpected argument(s) {', '.join(unknown)} (the saved model's network "
                            f"arguments are: {', '.join(doc['modules']) or 'none'})")
        model = target(**_unplain(doc["config"]), **modules)
        model._load_saved_state(doc["state_dict"])
        return model

    def _load_saved_state(self, state):
        """Loads a saved state dict into a model rebuilt from the saved configuration: buffers fitted
        to the data's shape and every tensor's dtype follow the file (a model saved after .double()
        or .to(torch.bfloat16) loads bit for bit in that dtype, not cast to the default one), while a
        parameter of another shape raises as in torch (a network passed again that does not match).
        An `_extra_state` entry that a file saved before it existed lacks keeps the rebuilt default."""
        own = self.state_dict()
        saved = {v.dtype for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and k in own}
        mine = {v.dtype for k, v in own.items() if isinstance(v, torch.Tensor) and v.is_floating_point() and k in state}
        if len(saved) == 1 and len(mine) == 1 and saved != mine:
            self.to(saved.pop())  # the whole model, so that its unsaved buffers follow too
            own = self.state_dict()
        buffers = {k for k, _ in self.named_buffers()}
        for k, v in state.items():
            o = own.get(k)
            if not (isinstance(v, torch.Tensor) and isinstance(o, torch.Tensor)):
                continue
            # a parameter of another shape is a network that does not match the file: load_state_dict
            # raises on it (resizing would leave e.g. a Linear whose in_features disagree with its weight)
            if (o.shape != v.shape and k in buffers) or (o.shape == v.shape and o.dtype != v.dtype):
                _resize_buffer(self, k, v)
        missing = [k for k in own if k not in state]
        if missing and all(k.rsplit(".", 1)[-1] == "_extra_state" for k in missing):
            result = self.load_state_dict(state, strict=False)
            if result.unexpected_keys:
                raise RuntimeError(f"unexpected key(s) in the saved state: {', '.join(result.unexpected_keys)}")
        else:
            self.load_state_dict(state, strict=True)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """nn.Module's, plus: a buffer that is still empty because this model is unfitted takes the
        shape of the state's tensor (a fitted model's state dict loads into a fresh model of the
        same configuration). Other shape mismatches raise as in torch."""
        own = dict(self.named_buffers())
        for k, v in state_dict.items():
            b = own.get(k)
            if isinstance(v, torch.Tensor) and b is not None and b.numel() == 0 and b.shape != v.shape:
                _resize_buffer(self, k, v.to(b.dtype))
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class FitRecord:
    """Mixin (before GenerativeModel in the bases) for families whose fit leaves plain-Python results:
    `_fit_record` maps each attribute (an iteration count, a loss history) to its unfitted default.
    They travel in the state dict as nn.Module extra state, so save/load and load_state_dict keep
    them; a state dict from before a family kept them (no `_extra_state` entry) loads, strictly too,
    and resets them to the defaults (a model never shows a record its state did not hold)."""

    _fit_record: dict = {}

    def get_extra_state(self):
        return {k: copy.deepcopy(getattr(self, k)) for k in self._fit_record}

    def set_extra_state(self, state):
        state = state if isinstance(state, dict) else {}
        for k, default in self._fit_record.items():
            setattr(self, k, copy.deepcopy(state.get(k, default)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        key = prefix + "_extra_state"
        if key not in state_dict:
            if key in missing_keys:
                missing_keys.remove(key)
            self.set_extra_state({})


def _recording_init(init):
    sig = inspect.signature(init)

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "_ge_config" not in self.__dict__:  # the outermost (most derived) __init__ records
            bound = sig.bind(self, *args, **kwargs)
            bound.apply_defaults()
            config = {}
            for k, p in sig.parameters.items():
                if k == "self" or k not in bound.arguments:
                    continue
                if p.kind is p.VAR_KEYWORD:
                    config.update(bound.arguments[k])
                elif p.kind is p.VAR_POSITIONAL:
                    if bound.arguments[k]:
                        raise TypeError(f"{type(self).__name__}: *args constructors cannot be saved")
                else:
                    config[k] = bound.arguments[k]
            object.__setattr__(self, "_ge_config", config)
        init(self, *args, **kwargs)

    return __init__


def _resize_buffer(module, key, value):
    *path, leaf = key.split(".")
    owner = module.get_submodule(".".join(path)) if path else module
    if leaf in owner._buffers:
        old = owner._buffers[leaf]
        owner._buffers[leaf] = torch.empty_like(value, device=old.device if old is not None else "cpu")
    elif leaf in owner._parameters:
        old = owner._parameters[leaf]
        owner._parameters[leaf] = nn.Parameter(torch.empty_like(value, device=old.device), requires_grad=old.requires_grad)


_GENERATOR_TAG = "__torch.Generator__"


def _unplain(v):
    """The inverse of _plain: torch.Generators rebuilt from their saved state."""
    if isinstance(v, dict):
        if _GENERATOR_TAG in v:
            g = torch.Generator(device=v[_GENERATOR_TAG])
            g.set_state(v["state"])
            return g
        return {k: _unplain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return type(v)(_unplain(x) for x in v)
    return v


def _plain(where, v):
    """v if torch.save/weights_only can store and restore it exactly, else a TypeError."""
    if v is None or isinstance(v, (bool, str, numbers.Number, torch.dtype, torch.device)):
        return v
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().clone()
    if isinstance(v, (list, tuple)):
        return type(v)(_plain(where, x) for x in v)
    if isinstance(v, dict):
        return {k: _plain(where, x) for k, x in v.items()}
    if isinstance(v, torch.Generator):  # e.g. random_state=: stored as its device and current state
        return {_GENERATOR_TAG: str(v.device), "state": v.get_state()}
    raise TypeError(f"{where}: a {type(v).__name__} argument cannot be saved; pass numbers, strings, tensors or networks")


def _hash_tensor(h, t):
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def _digest(state):
    """Version 1's checksum: the state dict only."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k]
        h.update(k.encode())
        if isinstance(v, torch.Tensor):
            _hash_tensor(h, v)
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def _hash_value(h, v):
    if isinstance(v, torch.Tensor):
        h.update(b"T")
        _hash_tensor(h, v)
    elif isinstance(v, dict):
        h.update(f"D{len(v)}".encode())
        for k in sorted(v, key=repr):
            h.update(repr(k).encode())
            _hash_value(h, v[k])
    elif isinstance(v, (list, tuple)):
        h.update(f"{type(v).__name__}{len(v)}".encode())
        for x in v:
            _hash_value(h, x)
    else:
        h.update(f"{type(v).__name__}:{v!r};".encode())


def _digest_doc(doc):
    """Version 2's checksum: everything the model is rebuilt from (a flipped bit in a hyperparameter
    is caught, not loaded as another model)."""
    h = hashlib.sha256()
    for key in ("class", "config", "modules"):
        h.update(key.encode())
        _hash_value(h, doc[key])
    h.update(b"state_dict")
    _hash_value(h, doc["state_dict"])  # every tensor whole, also inside extra state (repr abbreviates)
    return h.hexdigest()


def _read(path, map_location):
    where = f"path: {os.fspath(path)!r}"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"{where}: no such file") from None
    try:
        is_zip = zipfile.is_zipfile(io.BytesIO(raw))
    except Exception:  # a corrupted end-of-archive record raises instead of answering
        is_zip = False
    if not is_zip:
        raise ModelFileError(f"{where} is not a genengine model file (not a torch zip archive; truncated or foreign)")
    try:
        doc = torch.load(io.BytesIO(raw), map_location=map_location, weights_only=True)
    except Exception as e:
        raise ModelFileError(f"{where} cannot be read as a genengine model file (truncated or corrupted?): {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
        raise ModelFileError(f"{where} is a torch file but not a genengine model file (saved by something else)")
    version = doc.get("version")
    if version not in _READABLE_VERSIONS:
        raise ModelFileError(f"{where} has format version {version!r}; this genengine reads versions "
                             f"{', '.join(map(str, _READABLE_VERSIONS))}")
    for key in ("class", "config", "modules", "state_dict", "digest"):
        if key not in doc:
            raise ModelFileError(f"{where} lacks its {key!r} entry (corrupted)")
    if not isinstance(doc["state_dict"], dict) or not isinstance(doc["config"], dict) or not isinstance(doc["modules"], list):
        raise ModelFileError(f"{where}: its entries have the wrong types (corrupted)")
    try:
        want = _digest(doc["state_dict"]) if version == 1 else _digest_doc(doc)
    except Exception:
        want = None
    if want != doc["digest"]:
        what = "parameters" if version == 1 else "configuration or parameters"
        raise ModelFileError(f"{where}: the stored {what} do not match their checksum (corrupted)")
    return doc


def load(path, *, map_location="cpu", **modules) -> GenerativeModel:
    """Loads any genengine model saved with `model.save(path)` (the class is read from the file)."""
    return GenerativeModel.load(path, map_location=map_location, **modules)


def available() -> dict[str, dict]:
    """Every model family with its capabilities, by class name."""
    out = {}
    for name, cls in sorted(_REGISTRY.items()):
        out[name] = {
            "sample": cls.sample is not GenerativeModel.sample,
            "likelihood": cls.likelihood,
            "conditional": cls.conditional,
            "fit": cls.fit is not GenerativeModel.fit,
            "module": cls.__module__,
        }
    return out


def check_data(x, name="data", *, ndim=None, features=None, dtype=None, finite=True, min_rows=1):
    """x as a tensor, checked: a TypeError/ValueError naming `name` for non-tensors, a wrong rank or
    feature count, NaN/inf (when `finite`) or fewer than `min_rows` rows. Returns the tensor
    (converted to `dtype` when one is given and x is floating point or not a tensor)."""
    if not isinstance(x, torch.Tensor):
        try:
            t = torch.as_tensor(x)
            if dtype is not None and not t.is_complex():
                t = torch.as_tensor(x, dtype=dtype)  # from the source: a list of floats keeps float64 digits
        except Exception:
            raise TypeError(f"{name}: expected a tensor or array, got {type(x).__name__}") from None
        x = t
    if x.is_complex():
        raise TypeError(f"{name}: expected real values, got a {x.dtype} tensor (the imaginary part would be dropped)")
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    if ndim is not None:
        ndims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.dim() not in ndims:
            raise ValueError(f"{name}: expected a {' or '.join(map(str, ndims))}-D tensor, got shape {tuple(x.shape)}")
    if features is not None and (x.dim() < 2 or x.shape[-1] != features):
        raise ValueError(f"{name}: expected {features} features (last dim), got shape {tuple(x.shape)}")
    if x.dim() >= 1 and x.shape[0] < min_rows:
        raise ValueError(f"{name}: expected at least {min_rows} sample(s), got {x.shape[0]}")
    if finite and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return x
