"""Scaling policies: pure functions from one tick's input to a decision, its reasons and the next state.

Modules: ``types`` (inputs, outputs, state, the ``Policy`` protocol), ``queueing`` (M/M/R, Erlang-C),
``stabilizer`` (bounds, steps, windows, cooldowns, freeze, fail-static, coupled pools), ``pipeline``
(the tail every policy shares), the policies ``pd``, ``utilization``, ``static`` (and ``operator``,
``model_level``), and ``registry`` (name → policy). Nothing here reads a clock, randomness or the network.

This file deliberately imports nothing: policy modules import ``opscale.policy.types``, and the registry
imports the policy modules, so re-exporting here would make that a cycle.
"""
