"""Policy name → factory. ``get_policy(name, params)`` is how the decision service and the simulator get a
policy for a deployment spec; unknown names and bad parameters raise ``InvalidArgument``.

Registration hook: ``POLICY_FACTORIES`` is the one table. The ``operator`` and ``model`` policies
(``opscale/policy/operator.py``, ``model_level.py``) add their entries to the literal below —
``"operator": OperatorPolicy.from_params`` — when they land; ``register_policy`` is for plug-ins
and tests. A factory takes the deployment's parameter mapping and returns a ready ``Policy``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opscale.errors import AlreadyExists, InvalidArgument
from opscale.policy.model_level import ModelPolicy
from opscale.policy.operator import OperatorPolicy
from opscale.policy.pd import PdPolicy
from opscale.policy.static import StaticPolicy
from opscale.policy.types import Policy
from opscale.policy.utilization import UtilizationPolicy

PolicyFactory = Callable[[Mapping[str, object] | None], Policy]

POLICY_FACTORIES: dict[str, PolicyFactory] = {
    PdPolicy.name: PdPolicy.from_params,
    UtilizationPolicy.name: UtilizationPolicy.from_params,
    StaticPolicy.name: StaticPolicy.from_params,
    OperatorPolicy.name: OperatorPolicy.from_params,
    ModelPolicy.name: ModelPolicy.from_params,
}


def register_policy(name: str, factory: PolicyFactory, *, replace: bool = False) -> None:
    if name in POLICY_FACTORIES and not replace:
        raise AlreadyExists(f"a policy named {name!r} is already registered", field="policy")
    POLICY_FACTORIES[name] = factory


def known_policies() -> list[str]:
    return sorted(POLICY_FACTORIES)


def get_policy(name: str, params: Mapping[str, object] | None = None) -> Policy:
    factory = POLICY_FACTORIES.get(name)
    if factory is None:
        raise InvalidArgument(
            f"unknown policy {name!r}; known policies: {', '.join(known_policies())}", field="policy"
        )
    return factory(params)
