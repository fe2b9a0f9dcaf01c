"""A placement server the agent should not trust cannot run code on its host through a start command's
environment (issue 13's repro): PYTHONWARNINGS naming ``antigravity.x`` makes a Python worker import
``antigravity``, which opens BROWSER, a command line of the caller's choosing. The real agent, talking
to a fake placement over real gRPC, refuses such a command with a REJECTED ack naming the variables,
and starts nothing; a variable its own ``agent_env_allowlist`` names does reach the replica.

Before the allowlist this test failed: the ack was ACCEPTED and the BROWSER command ran.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from opscale.agent.agent import Agent, AgentConfig
from opscale.agent.backoff import Backoff
from opscale.agent.gpus import FakeGpus
from opscale.agent.templates import Template
from opscale.api.agent.v1 import agent_pb2 as apb
from opscale.api.agent.v1 import agent_pb2_grpc
from opscale.api.common.v1 import common_pb2
from tests.builders import until


class FakePlacement(agent_pb2_grpc.AgentServiceServicer):
    """Registers the agent, sends one start command, and records the ack."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.acks: list[apb.CommandAck] = []

    async def Connect(
        self, request_iterator: AsyncIterator[apb.ConnectRequest], context: Any
    ) -> AsyncIterator[apb.ConnectResponse]:
        first = await anext(aiter(request_iterator))
        yield apb.ConnectResponse(register_ack=apb.RegisterAck(node_name=first.register.node_name))
        start = apb.StartReplica(
            deployment="d1",
            pool=common_pb2.PoolKey(stage=common_pb2.STAGE_SERVING, operator=common_pb2.OPERATOR_KIND_MODEL),
            template="worker",
            gpu_indices=[0],
            env=self.env,
        )
        yield apb.ConnectResponse(
            command=apb.Command(command_id="1", replica_id="r1", generation=1, start=start)
        )
        async for message in request_iterator:
            if message.WhichOneof("message") == "ack":
                self.acks.append(message.ack)


async def run_agent(
    tmp_path: Path,
    env: dict[str, str],
    template: Template,
    allow: frozenset[str],
    then: Callable[[], Awaitable[bool]] | None = None,
) -> tuple[Agent, FakePlacement]:
    """Run the agent against a fake placement until the start is acknowledged (and ``then`` holds)."""
    fake = FakePlacement(env)
    server = grpc.aio.server()
    agent_pb2_grpc.add_AgentServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    agent = Agent(
        AgentConfig(
            node="n1",
            placement_address=f"127.0.0.1:{port}",
            state_dir=tmp_path / "agent",
            templates={"worker": template},
            env_allowlist=allow,
        ),
        FakeGpus("1xH100", "n1"),
        backoff=Backoff(base_s=0.05, max_s=0.2, rng=random.Random(1)),
    )
    stopping = asyncio.Event()
    task = asyncio.create_task(agent.run(stopping))
    try:

        async def acked() -> bool:
            return bool(fake.acks)

        await until(acked, timeout_s=15.0)
        if then is not None:
            await until(then, timeout_s=15.0)
    finally:
        stopping.set()
        await task
        for managed in list(agent.supervisor.replicas.values()):
            await agent.supervisor.terminate(managed, 1.0)
        await server.stop(0)
    return agent, fake


async def test_a_start_command_cannot_inject_environment_variables(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    env = {
        "PYTHONWARNINGS": "ignore::antigravity.x",
        "BROWSER": f"touch {pwned} %s",
        "PERL5OPT": "-Mwarnings",
    }
    python = Template("worker", (sys.executable, "-c", "import time; time.sleep(30)"))
    agent, fake = await run_agent(tmp_path, env, python, frozenset())
    ack = fake.acks[0]
    assert ack.status == apb.ACK_STATUS_REJECTED, ack
    assert "BROWSER, PERL5OPT, PYTHONWARNINGS" in ack.message and "allows: none" in ack.message
    assert agent.supervisor.replicas == {}
    await asyncio.sleep(1.0)  # long enough for a started interpreter to have run BROWSER
    assert not pwned.exists()


async def test_an_allowlisted_variable_reaches_the_replica(tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    script = f"import os, time; open({str(seen)!r}, 'w').write(os.environ['HF_HOME']); time.sleep(30)"
    template = Template("worker", (sys.executable, "-c", script))

    async def written() -> bool:
        return seen.exists() and seen.read_text() == "/models"

    _agent, fake = await run_agent(
        tmp_path, {"HF_HOME": "/models"}, template, frozenset({"HF_HOME"}), written
    )
    assert fake.acks[0].status == apb.ACK_STATUS_ACCEPTED, fake.acks[0]
