"""Issue 3: two KServe workers serve the model (spawned by pickling it) and /metrics adds both up."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import httpx
import psutil
from prometheus_client.parser import text_string_to_metric_families

ROW = {"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}


def model_info_pids(url: str) -> set[str]:
    text = httpx.get(f"{url}/metrics").text
    return {
        s.labels.get("pid")
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "churnflow_model_info"
    }


def sockets_on_port(pid: int, port: int, status: str) -> set[int]:
    """The inodes of the TCP sockets process `pid` holds on local `port` in `status` (LISTEN, ESTABLISHED)."""
    inodes = set()
    for connection in psutil.Process(pid).connections(kind="tcp"):  # psutil 5.9 (pinned) has no net_connections
        if connection.laddr and connection.laddr.port == port and connection.status == status:
            inodes.add(int(os.readlink(f"/proc/{pid}/fd/{connection.fd}").strip("socket:[]")))
    return inodes


def test_two_workers_answer_and_aggregate_metrics(start_server, model_dir):
    server = start_server(model_dir, "--workers", "2")
    deadline = time.monotonic() + 60
    while len(model_info_pids(server.url)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # each worker process unpickles the model, loads it and reports itself
    assert len(model_info_pids(server.url)) == 2
    # Each worker listens on a socket of its own (SO_REUSEPORT), so the kernel spreads connections over
    # them; one shared socket goes to whichever worker wakes first (patches.workers_listen_on_their_own_sockets).
    listening: dict[int, set[int]] = {}
    while len(listening) < 2 and time.monotonic() < deadline:  # a worker listens once its app has started
        time.sleep(0.2)
        workers = [p.pid for p in psutil.Process(server.process.pid).children()]
        listening = {pid: sockets_on_port(pid, server.port, psutil.CONN_LISTEN) for pid in workers}
        listening = {pid: inodes for pid, inodes in listening.items() if inodes}
    assert len(listening) == 2, listening
    assert len(set.union(*listening.values())) == 2, f"the workers share one listening socket: {listening}"
    assert not sockets_on_port(server.process.pid, server.port, psutil.CONN_LISTEN)  # the parent never accepts
    clients = [httpx.Client(base_url=server.url) for _ in range(16)]  # 16 connections held open at once
    try:
        for client in clients:
            assert client.post("/v1/models/churn:predict", json={"instances": [ROW]}).status_code == 200
        held = {pid: len(sockets_on_port(pid, server.port, psutil.CONN_ESTABLISHED)) for pid in listening}
        assert sum(held.values()) == 16 and min(held.values()) > 0, f"connections per worker: {held}"
    finally:
        for client in clients:
            client.close()
    sent = 40
    for i in range(sent):  # a new connection each time, so both workers get requests
        if i % 2:
            answer = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]})
        else:
            inputs = [
                {"name": n, "shape": [1], "datatype": t, "data": [ROW[n]]}
                for n, t in (
                    ("tenure", "INT64"),
                    ("usage", "FP64"),
                    ("age", "INT64"),
                    ("monthly_charges", "FP64"),
                    ("contract_type", "BYTES"),
                )
            ]
            answer = httpx.post(f"{server.url}/v2/models/churn/infer", json={"inputs": inputs})
        assert answer.status_code == 200, answer.text
    assert httpx.post(f"{server.url}/predict", json=ROW).status_code == 200  # the extra routes in every worker
    text = httpx.get(f"{server.url}/metrics").text
    rows = [
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "churnflow_predicted_rows_total"
    ]
    assert sum(rows) == sent + 1 + len(clients), text[:3000]
    pids = {
        s.labels.get("pid")
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "churnflow_model_info"
    }
    assert len(pids) >= 2  # one model_info per worker process: both loaded the model


def test_one_worker_runs_on_the_event_loop_asked_for(start_server, model_dir):
    """KServe ignores its event-loop setting with one worker; churnflow applies it (asyncio by default)."""
    default = start_server(model_dir)
    fast = start_server(model_dir, "--event-loop", "uvloop")
    answers = []
    for server in (default, fast):
        response = httpx.post(f"{server.url}/v1/models/churn:predict", json={"instances": [ROW]})
        assert response.status_code == 200
        answers.append(response.json())
    assert answers[0] == answers[1]
    assert "event loop: asyncio" in default.log()
    assert "event loop: uvloop" in fast.log()


def test_connections_accepted_by_several_workers_disable_nagle():
    """The socket KServe binds for several workers must make asyncio set TCP_NODELAY on each connection;
    without it every keep-alive response waits ~40 ms on the client's delayed ACK (kserve#6050)."""
    from uvicorn.config import Config

    from churnflow.predictor.patches import listening_sockets_keep_tcp_nodelay

    listening_sockets_keep_tcp_nodelay()
    listening_sockets_keep_tcp_nodelay()  # idempotent: one wrapper, however often the server starts
    listener = Config(app=None, host="127.0.0.1", port=0).bind_socket()
    assert listener.proto == socket.IPPROTO_TCP

    async def nodelay_of_accepted_connection() -> int:
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        async with server:
            _, writer = await asyncio.open_connection(*listener.getsockname())
            nodelay = await asyncio.wait_for(accepted, 5)
            writer.close()
        return nodelay

    assert asyncio.run(nodelay_of_accepted_connection()) != 0
