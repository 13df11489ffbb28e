"""The bare gRPC stack: a grpc.aio server that answers every PointsService call with a canned
response, parsing the request but doing no work. It is the baseline the gateway is measured
against: the same transport, the same message sizes, no database.

    python bench/echo_server.py RESPONSE_FILE     (prints "listening on PORT")
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from coalition.v1 import points_pb2


async def main() -> None:
    canned = Path(sys.argv[1]).read_bytes()

    async def earn(request: bytes, context: Any) -> bytes:
        points_pb2.EarnPointsRequest.FromString(request)  # what any server must do
        return canned

    transaction = points_pb2.EarnPointsResponse.FromString(canned).transaction

    async def stream(requests: Any, context: Any) -> Any:
        index = 0
        async for request in requests:
            item = points_pb2.StreamEarnPointsRequest.FromString(request)
            yield points_pb2.StreamEarnPointsResponse(
                index=index, transaction=transaction, request_id=item.request.request_id
            ).SerializeToString()
            index += 1

    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "coalition.v1.PointsService",
                {
                    "EarnPoints": grpc.unary_unary_rpc_method_handler(earn),
                    "StreamEarnPoints": grpc.stream_stream_rpc_method_handler(stream),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"listening on {port}", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(None)


if __name__ == "__main__":
    asyncio.run(main())
