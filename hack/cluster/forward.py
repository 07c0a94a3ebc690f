"""The host's way in: a TCP forwarder from 127.0.0.1:<port> on the host to the API server inside the cluster's
network namespace. The listening socket is made before the process enters the namespace, so it stays on the host's
loopback while every connection it opens lands inside.

    python -m hack.cluster.forward --listen-port 16443 --target 10.213.0.2:6443
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket

from hack.cluster import config, netns


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            if writer.can_write_eof():
                writer.write_eof()


async def _serve(listener: socket.socket, host: str, port: int) -> None:
    async def handle(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(host, port)
        except OSError:
            client_writer.close()
            return
        try:
            await asyncio.gather(_pipe(client_reader, server_writer), _pipe(server_reader, client_writer))
        finally:
            for writer in (client_writer, server_writer):
                writer.close()

    server = await asyncio.start_server(handle, sock=listener)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--listen-port", type=int, default=config.HOST_API_PORT)
    parser.add_argument("--target", default=f"{config.NODE_IP}:{config.API_PORT}")
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.listen_port))
    listener.listen(128)
    listener.setblocking(False)
    netns.enter()
    asyncio.run(_serve(listener, host, int(port)))


if __name__ == "__main__":
    main()
