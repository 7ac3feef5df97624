"""The kernel's send queue as liveness reads it (the throttled and blackholed links are
proven end to end in tests-e2e/test_slow_link.py)."""

import socket

from remotellm_connector.liveness import unsent_in_kernel


def test_bytes_the_peer_has_not_acknowledged_are_counted_then_drained() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    with listener, socket.create_connection(listener.getsockname()) as sender:
        peer, _ = listener.accept()
        with peer:
            sender.setblocking(False)
            sent = 0
            try:
                while sent < 4 * 1024 * 1024:
                    sent += sender.send(b"x" * 65536)
            except BlockingIOError:
                pass  # the peer's window and our send buffer are full
            assert unsent_in_kernel(sender.fileno()) > 0
            received = 0
            peer.settimeout(5)
            while received < sent:
                received += len(peer.recv(1 << 20))
            assert received == sent


def test_an_unusable_descriptor_reads_as_nothing_queued() -> None:
    sock = socket.socket()
    fileno = sock.fileno()
    sock.close()
    assert unsent_in_kernel(fileno) == 0
