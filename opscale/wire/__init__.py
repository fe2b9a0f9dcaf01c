"""The one proto <-> domain converter, used by the services, the CLI, the SDK, the agent and the demo.

- ``enums``: every enum table, derived from the proto enums' own names (``STAGE_DECODE`` <-> ``decode``),
  so no table of numbers is written by hand anywhere.
- ``pools``: ``PoolKey``, pool plans, predictions, infeasibilities.
- ``specs``: deployment specs (a policy by name, its parameters as a struct: no per-policy code).
- ``decisions``: decisions, explanations, what-if plans.
- ``commands``: resizes and the typed replica commands placement sends node agents.

Every ``*_from_pb`` raises ``InvalidArgument`` naming the field and the allowed values.
"""
