"""Shared fixtures: the small real MNIST subset, offline data look-up, a CLI runner."""

import os
from pathlib import Path

import pytest

SMALL_MNIST = Path(__file__).parent / "data" / "mnist-small.npz"
SMALL_FASHION = Path(__file__).parent / "data" / "fashion-mnist-small"  # Keras' idx directory layout

# Set before anything imports Keras: the in-process backend is TensorFlow, and nothing downloads.
os.environ["KERAS_BACKEND"] = "tensorflow"
os.environ["REGBENCH_OFFLINE"] = "1"
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ.pop("REGBENCH_DATA", None)


@pytest.fixture(autouse=True)
def offline_home(tmp_path, monkeypatch):
    """Give every test an empty home (no Keras cache) and the small subset as $REGBENCH_DATA."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("REGBENCH_DATA", str(SMALL_MNIST))


@pytest.fixture(scope="session")
def images():
    from regbench.data import read_images

    return read_images(SMALL_MNIST)


@pytest.fixture(scope="session")
def split(images):
    from regbench.data import split_images

    return split_images(images, train_size=300)


@pytest.fixture
def runner():
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture
def listeners():
    """Three things on 127.0.0.1 that are not a Dask scheduler: an HTTP server, a listener that accepts and never
    answers, and one that answers at once with bytes of its own; yield their addresses by name."""
    import http.server
    import socket
    import threading

    class NotFound(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_error(404)

        def log_message(self, *args):  # quiet: this process's stderr is what the tests read
            pass

    http_server = http.server.HTTPServer(("127.0.0.1", 0), NotFound)
    silent, talker = (socket.create_server(("127.0.0.1", 0)) for _ in range(2))
    held = []

    def answer():
        while True:
            try:
                connection, _ = talker.accept()
            except OSError:
                return
            connection.sendall(b"SSH-2.0-OpenSSH_9.2\r\n")
            held.append(connection)

    threads = [threading.Thread(target=http_server.serve_forever, daemon=True), threading.Thread(target=answer,
                                                                                              daemon=True)]
    for thread in threads:
        thread.start()
    yield {name: f"tcp://127.0.0.1:{server.getsockname()[1]}"
           for name, server in (("http", http_server.socket), ("silent", silent), ("talker", talker))}
    http_server.shutdown()
    for server in (http_server.socket, silent, talker, *held):
        server.close()


# The test files' own share of `make test`, largest first (pytest --durations).
SLOWEST_FIRST = ["test_faults.py", "test_cli.py", "test_executors.py", "test_cpu_counts.py", "test_studies.py",
                 "test_fused.py", "test_notebook.py", "test_api.py", "test_studies_tuned.py", "test_tune.py",
                 "test_backend_paths.py", "test_checks.py"]


def pytest_collection_modifyitems(items):
    """Hand the slowest test files to pytest-xdist's workers first, so that no long one starts last."""
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
