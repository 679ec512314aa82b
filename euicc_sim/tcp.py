"""The software eUICC as a card in its own process, reachable over a loopback socket.

``kinsim euicc serve DIR --transport tcp [--address 127.0.0.1:PORT]`` listens on loopback only and
speaks vpcd's framing (2-byte length frames, 1-byte power controls; see euicc_sim.vpcd), with the
card as the listening side. ``kinsim lpa --card tcp:HOST:PORT`` (lpa/tcp.py) is the reader end.
It needs no pcscd, so three separate processes (SM-DP+, card, LPA) can run anywhere; PC/SC users
keep the vpcd transport. One connection at a time: the card is powered off when its reader leaves,
as when a card is pulled from a reader.
"""

from __future__ import annotations

import json
import socket
import sys

from euicc_sim.vpcd import VpcdError, VpcdSession, parse_address

LISTEN_HOST = "127.0.0.1"


def listen(host: str, port: int) -> socket.socket:
    if host not in ("127.0.0.1", "::1", "localhost"):
        raise VpcdError(f"the tcp transport serves loopback only, not {host}")
    try:
        server = socket.create_server((host, port))
    except OSError as exc:
        raise VpcdError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    server.settimeout(None)
    return server


def serve_connection(conn: socket.socket, session: VpcdSession) -> None:
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        while True:
            # Re-armed after every read: Linux clears TCP_QUICKACK, and a delayed ACK would stall
            # each APDU by ~40 ms (see bench/vpcd_quickack.py).
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            data = conn.recv(65536)
            if not data:
                return
            reply = session.receive(data)
            if reply:
                conn.sendall(reply)
    finally:
        conn.close()


def serve(card, server: socket.socket, *, once: bool = False) -> None:
    while True:
        conn, _ = server.accept()
        session = VpcdSession(card)
        try:
            serve_connection(conn, session)
        except (OSError, VpcdError) as exc:
            print(f"card link closed: {exc}", file=sys.stderr)
        if session.powered:
            card.power_off()
        if once:
            return


def serve_command(euicc, args) -> int:
    host, port = parse_address(args.address) if args.address else (LISTEN_HOST, 0)
    server = listen(host, port)
    bound = server.getsockname()[1]
    # One machine-readable line on stdout so a parent process can find the port.
    if getattr(args, "json", False):
        print(json.dumps({"card": f"tcp:{host}:{bound}", "eid": euicc.eid}), flush=True)
    else:
        print(f"listening tcp:{host}:{bound}", flush=True)
    print(f"eUICC {euicc.eid} serves APDUs on tcp:{host}:{bound}; Ctrl-C stops it", file=sys.stderr)
    try:
        serve(euicc.card, server)
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _register() -> None:
    from euicc_sim.cli import register_transport  # the CLI imports this module to collect it

    register_transport("tcp", serve_command)


_register()
