"""Policy descriptors: the one place the rest of opscale learns what a policy is.

A policy is one module that defines a ``PolicyDescriptor`` — its name, the model of its parameters in a
deployment spec, how to build it from a spec, and the signals it reads — and registers it. Everything
else reads the registry: spec validation (is the name known, do the parameters validate, does the
serving mode suit it), the proto converters (a name and a parameter struct, no per-policy field), the
decision loop and the simulator (which windows to read), ``docs/spec.md`` and the what-if.

Built-in policies are listed in ``BUILTIN`` by module and loaded on first use (the policy modules
import this one, so importing them here eagerly would be a cycle). A plug-in or a test registers its
own with ``register``. Adding a policy is therefore one module, one line in ``BUILTIN`` (or one
``register`` call) and its tests.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, GetCoreSchemaHandler
from pydantic_core import core_schema

from opscale.errors import AlreadyExists, InvalidArgument
from opscale.policy.types import SLO, Limits, Policy, Signal
from opscale.pools import STAGES_FOR_MODE, PoolKey, ServingMode

if TYPE_CHECKING:
    from opscale.spec import DeploymentSpec

#: Modules of the built-in policies; each defines ``DESCRIPTOR``.
BUILTIN = (
    "opscale.policy.operator",
    "opscale.policy.model_level",
    "opscale.policy.pd",
    "opscale.policy.utilization",
    "opscale.policy.static",
)

#: Signals the counter store keeps per pool (queue and busy series): reading them costs ~10 series per
#: pool per tick on top of a deployment's 11, so windows include pools only for a policy that reads one.
POOL_SIGNALS = frozenset({Signal.QUEUE_DEPTH, Signal.KV_CACHE, Signal.BUSY_FRACTION})


@dataclass(frozen=True, slots=True)
class Built:
    """What a descriptor builds from a spec: the ready policy, the parameters it was built with (for the
    record), the pools it plans, and the signals it reads."""

    policy: Policy
    pools: tuple[PoolKey, ...]
    signals: frozenset[Signal]
    params: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PolicySetup:
    """A built policy with the spec's SLO and limits: everything a tick needs besides the load."""

    policy: Policy
    slo: SLO
    limits: Limits
    params: Mapping[str, object] = field(default_factory=dict)
    pools: tuple[PoolKey, ...] = ()
    signals: frozenset[Signal] = frozenset()

    @property
    def reads_pools(self) -> bool:
        return bool(self.signals & POOL_SIGNALS)


Build = Callable[["DeploymentSpec", Any], Built]


@dataclass(frozen=True, slots=True)
class PolicyDescriptor:
    """``params``: the model of the spec's ``params`` for this policy (``None``: it takes none);
    ``params_required``: a spec must give them. ``build(spec, params)`` gets the validated model, or
    ``None`` when the spec gives none (or is another policy's: the what-if tries other policies) and
    raises ``InvalidArgument`` when it cannot build. ``modes``: the serving modes it can scale, with
    ``mode_reason`` saying why when that is not all of them."""

    name: str
    summary: str
    build: Build
    params: type[BaseModel] | None = None
    params_required: bool = False
    modes: tuple[ServingMode, ...] = tuple(ServingMode)
    mode_reason: str = ""

    def parse_params(self, data: Mapping[str, Any] | None) -> BaseModel | None:
        """The validated parameters (pydantic ``ValidationError`` on bad ones), ``None`` when absent."""
        if self.params is None:
            if data:
                raise ValueError(f"policy {self.name!r} takes no params")
            return None
        if not data:
            if self.params_required:
                raise ValueError(f"policy {self.name!r} needs its parameters: params (or {self.name}_params)")
            return None
        return self.params.model_validate(dict(data))


_REGISTRY: dict[str, PolicyDescriptor] = {}
_LOADED = False


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    for module in BUILTIN:
        desc: PolicyDescriptor = importlib.import_module(module).DESCRIPTOR
        _REGISTRY.setdefault(desc.name, desc)


def register(desc: PolicyDescriptor, *, replace: bool = False) -> None:
    """Add a policy (a plug-in's, or a test's). A name taken is ``AlreadyExists`` unless ``replace``."""
    _load_builtin()
    if desc.name in _REGISTRY and not replace:
        raise AlreadyExists(f"a policy named {desc.name!r} is already registered", field="policy")
    _REGISTRY[desc.name] = desc


def unregister(name: str) -> None:
    _load_builtin()
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    _load_builtin()
    return list(_REGISTRY)


def descriptor(name: str) -> PolicyDescriptor:
    _load_builtin()
    found = _REGISTRY.get(name)
    if found is None:
        known = ", ".join(repr(n) for n in _REGISTRY)
        raise InvalidArgument(f"unknown policy {name!r}; known policies: {known}", field="policy")
    return found


def stages_of(spec: DeploymentSpec) -> tuple[str, ...]:
    return tuple(s.value for s in STAGES_FOR_MODE[spec.mode])


def base_params(spec: DeploymentSpec) -> dict[str, object]:
    """What every policy takes from the spec itself: its control interval, when it sets one."""
    return {"interval_s": spec.interval_s} if spec.interval_s > 0 else {}


def whole_pools(spec: DeploymentSpec) -> tuple[PoolKey, ...]:
    """One whole-model pool per stage of the spec's mode (the unit of model-level policies)."""
    return tuple(PoolKey(s, "model") for s in stages_of(spec))


class PolicyName(str):
    """A registered policy's name (a spec's ``policy``): a ``str`` in every way, checked against the
    registry when pydantic validates it. ``value`` is the plain name, so code written against the former
    ``PolicyKind`` enum keeps working; ``OPERATOR`` and ``MODEL`` are the planners the what-if compares a
    spec's own policy with by default."""

    __slots__ = ()
    OPERATOR: ClassVar[PolicyName]
    MODEL: ClassVar[PolicyName]

    @property
    def value(self) -> str:
        return str.__str__(self)

    @classmethod
    def check(cls, name: str) -> PolicyName:
        try:
            descriptor(name)
        except InvalidArgument as exc:
            raise ValueError(exc.message) from None
        return cls(name)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> Any:
        return core_schema.no_info_after_validator_function(
            cls.check, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )


PolicyName.OPERATOR = PolicyName("operator")
PolicyName.MODEL = PolicyName("model")
