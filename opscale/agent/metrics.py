"""The node agent's Prometheus metrics, read from the agent at scrape time (nothing to keep in step):
whether it is connected to placement, its GPUs (busy or free; the last utilization, memory and power
sampled), the replicas it supervises by phase and their restarts, and the commands it has handled.

``opscale agent --metrics-port`` serves them at ``/metrics`` with the process collectors and
``opscale_build_info`` (``opscale.telemetry``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from opscale.agent.agent import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        agent = self._agent
        node = agent.config.node
        connected = GaugeMetricFamily(
            "opscale_agent_connected",
            "1 while the agent's stream to placement is registered",
            labels=["node"],
        )
        connected.add_metric([node], 1.0 if agent.connected else 0.0)
        yield connected
        registrations = CounterMetricFamily(
            "opscale_agent_registrations",
            "Registrations with placement (reconnects add one)",
            labels=["node"],
        )
        registrations.add_metric([node], agent.registrations)
        yield registrations

        busy = agent.supervisor.busy_gpus()
        gpus = GaugeMetricFamily(
            "opscale_agent_gpus", "GPUs on this node, by state", labels=["node", "state"]
        )
        gpus.add_metric([node, "busy"], len(busy))
        gpus.add_metric([node, "free"], len(agent.gpus) - len(busy))
        yield gpus
        per_gpu = ["node", "gpu"]
        utilization = GaugeMetricFamily(
            "opscale_agent_gpu_utilization_ratio", "Last sampled GPU utilization, in [0, 1]", labels=per_gpu
        )
        memory = GaugeMetricFamily(
            "opscale_agent_gpu_memory_used_bytes", "Last sampled GPU memory in use", labels=per_gpu
        )
        power = GaugeMetricFamily(
            "opscale_agent_gpu_power_watts", "Last sampled GPU power draw", labels=per_gpu
        )
        for sample in agent.gpu_samples:
            labels = [node, str(sample.index)]
            utilization.add_metric(labels, sample.utilization_fraction)
            memory.add_metric(labels, sample.memory_used_bytes)
            power.add_metric(labels, sample.power_watts)
        yield from (utilization, memory, power)

        phases = Counter(m.phase.name.lower() for m in agent.supervisor.replicas.values())
        replicas = GaugeMetricFamily(
            "opscale_agent_replicas", "Replicas this agent supervises, by phase", labels=["node", "phase"]
        )
        for phase, count in sorted(phases.items()):
            replicas.add_metric([node, phase], count)
        yield replicas
        restarts = CounterMetricFamily(
            "opscale_agent_replica_restarts",
            "Crash restarts of the replicas this agent supervises",
            labels=["node", "deployment", "replica_id"],
        )
        for managed in agent.supervisor.replicas.values():
            st = managed.state
            restarts.add_metric([node, st.deployment, st.replica_id], st.restarts)
        yield restarts
        commands = CounterMetricFamily(
            "opscale_agent_commands",
            "Commands from placement handled, by kind and ack status",
            labels=["node", "kind", "status"],
        )
        for (kind, status), count in sorted(agent.commands.items()):
            commands.add_metric([node, kind, status], count)
        yield commands
