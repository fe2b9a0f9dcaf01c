"""opscale client SDK: what a serving framework imports to report load and follow decisions.

``AsyncOpscaleClient`` (asyncio) and ``OpscaleClient`` (threads) share one behaviour: ``record_*``
calls stamp a sample and append it to a bounded buffer — they never wait on the network; a background
sender pushes batches (``batch_size``, or whatever is there every ``flush_interval_s``) with a batch
id so a retry counts once; when the control plane is unreachable the batch is retried with jittered
back-off, and once the buffer is full the oldest samples are dropped and counted. ``stats()`` says
what was sent and what was dropped, and why.

It needs a plain install only (grpcio, protobuf, opentelemetry-api): nothing it imports may reach the
server extra's libraries (tests/unit/test_sdk_imports.py holds it to that).
"""

from opscale.sdk.aio import AsyncOpscaleClient
from opscale.sdk.buffer import SdkStats
from opscale.sdk.recorder import OPERATORS, STAGES
from opscale.sdk.sync import OpscaleClient

__all__ = ["OPERATORS", "STAGES", "AsyncOpscaleClient", "OpscaleClient", "SdkStats"]
