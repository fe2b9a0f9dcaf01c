"""Agent building blocks: launch templates, the pid+start-time state file, back-off, fake GPUs."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from opscale.agent.backoff import Backoff
from opscale.agent.gpus import FakeGpus, make_discovery, parse_fake_gpus
from opscale.agent.state import ReplicaState, StateFile, proc_start_time, same_process
from opscale.agent.templates import WORKER, load_templates, parse_templates, placeholder_values, sharing_env
from opscale.errors import ConfigError, InvalidArgument


def values(**args: str) -> dict[str, str]:
    return placeholder_values(
        replica_id="r-1", generation=3, port=4711, deployment="d", stage="decode", operator="attention",
        gpu_indices=(2, 5), node="n1", args=args,
    )  # fmt: skip


def test_builtin_worker_template_renders_an_argv_list() -> None:
    argv, env = WORKER.render(
        values(model="llama3-8b", gpu_type="H100", gpus_per_replica="2", batch_size="8")
    )
    assert argv[:3] == [sys.executable, "-m", "opscale.worker"]
    assert argv[argv.index("--replica-id") + 1] == "r-1" and argv[argv.index("--port") + 1] == "4711"
    assert argv[argv.index("--gpus") + 1] == "2" and env == {}


def test_missing_placeholder_is_refused_naming_it() -> None:
    with pytest.raises(InvalidArgument, match="model"):
        WORKER.render(values(gpu_type="H100", gpus_per_replica="1"))


def test_command_args_cannot_override_identity() -> None:
    assert values(replica_id="evil", port="1")["replica_id"] == "r-1"
    assert values(replica_id="evil", port="1")["port"] == "4711"


def test_templates_file(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "templates:\n"
        "  vllm:\n"
        "    argv: [vllm, serve, '{model}', --port, '{port}']\n"
        "    readiness: {http: 'http://127.0.0.1:{port}/health'}\n"
        "    env: {VLLM_GPUS: '{gpu_indices}'}\n"
        "  sleeper: [sleep, '30']\n"
    )
    templates = load_templates(path)
    assert set(templates) == {"worker", "vllm", "sleeper"}
    argv, env = templates["vllm"].render(values(model="m"))
    assert argv == ["vllm", "serve", "m", "--port", "4711"] and env == {"VLLM_GPUS": "2,5"}
    assert templates["vllm"].url(templates["vllm"].readiness, values()) == "http://127.0.0.1:4711/health"


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"templates": {"x": "python -m worker"}}, "argv list"),
        ({"templates": {"x": {"argv": "python -m worker"}}}, "never a shell string"),
        ({"templates": {"x": ["python", "{replica_id.__class__}"]}}, "plain name"),
        ({"templates": {"x": ["python", "{port!r}"]}}, "plain name"),
        ({"templates": {"x": {"argv": ["a"], "readiness": {"grpc": 1}}}}, "readiness"),
        ({"templates": {"x": {"argv": ["a"], "drain": "sigusr1"}}}, "drain"),
        ({"templates": {"bad name!": ["a"]}}, "template name"),
        (["not", "a", "mapping"], "mapping"),
    ],
)
def test_bad_templates_stop_start_up(doc: object, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_templates(doc, "agent.yaml")


def test_proc_start_time_identifies_a_process_not_just_a_pid() -> None:
    me = proc_start_time(os.getpid())
    assert me is not None and same_process(os.getpid(), me)
    assert not same_process(os.getpid(), me + 1)  # same pid, another start time: a reused pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert proc_start_time(child.pid) is None  # gone (and reaped)
    assert not same_process(0, 0)


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "agent")
    assert state.load() == {}
    replica = ReplicaState("r", 2, "worker", "d", "decode", "ffn", [0, 1], {"model": "m"}, 5000, pid=42,
                           start_time=7)  # fmt: skip
    state.save({"r": replica})
    assert state.load() == {"r": replica}
    state.path.write_text("{torn")
    assert state.load() == {}


def test_backoff_grows_with_full_jitter_and_resets() -> None:
    backoff = Backoff(base_s=0.5, max_s=4.0, rng=random.Random(7))
    ceilings = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    delays = [backoff.next_delay() for _ in ceilings]
    assert all(0.0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not lock-step
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_fake_gpus_follow_the_catalog() -> None:
    gpus = parse_fake_gpus("2xH100, 1xA100", "n1")
    assert [(g.index, g.gpu_type) for g in gpus] == [(0, "H100"), (1, "H100"), (2, "A100")]
    assert len({g.uuid for g in gpus}) == 3 and gpus[0].memory_bytes > 70 * 10**9
    samples = FakeGpus("2xH100", "n1").sample(frozenset({1}))
    assert samples[0].utilization_fraction == 0 and samples[1].utilization_fraction > 0
    assert samples[1].power_watts > samples[0].power_watts > 0
    assert isinstance(make_discovery("1xH100", "n1"), FakeGpus)


@pytest.mark.parametrize("text", ["8H100", "0xH100", "2xNOPE", ""])
def test_bad_fake_gpus(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_fake_gpus(text, "n1")


def test_agent_and_placement_settings_are_checked_at_load() -> None:
    from opscale.config import load_settings

    cfg = load_settings(
        fake_gpus="2xH100,1xA100", node_labels={"zone": "z1"}, lost_timeout_s=3, heartbeat_interval_s=1
    )
    assert cfg.fake_gpus == "2xH100,1xA100" and cfg.node_labels == {"zone": "z1"}
    with pytest.raises(ConfigError, match="OPSCALE_FAKE_GPUS"):
        load_settings(fake_gpus="eight H100s")
    with pytest.raises(ConfigError, match="two heartbeat intervals"):
        load_settings(lost_timeout_s=2, heartbeat_interval_s=1)
    with pytest.raises(ConfigError, match="OPSCALE_AGENT_MAX_RESTARTS"):
        load_settings(agent_max_restarts=-1)
    with pytest.raises(ConfigError, match="OPSCALE_AGENT_RECONNECT_MAX_S"):
        load_settings(agent_reconnect_max_s=0)
    with pytest.raises(ConfigError, match="OPSCALE_PLACEMENT_LEASE_RENEW_S"):
        load_settings(placement_lease_renew_s=-1)


def test_a_share_of_a_gpu_runs_under_mps_with_that_share() -> None:
    assert sharing_env(values(gpu_share="0.25")) == {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": "25"}
    assert sharing_env(values()) == {} and values()["gpu_share"] == "1"
    argv, _ = WORKER.render(values(model="m", gpu_type="H100", gpus_per_replica="1", gpu_share="0.125"))
    assert argv[argv.index("--gpu-share") + 1] == "0.125"
    for bad in ("0", "1.5", "half"):
        with pytest.raises(InvalidArgument, match="gpu_share"):
            sharing_env(values(gpu_share=bad))
