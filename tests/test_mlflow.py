"""``logger=mlflow`` against a real local MLflow tracking server (started on 127.0.0.1 and stopped here); the
run is read back through MLflow's client API: params, metric history, sample grids and checkpoints."""

import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from genlab.pipeline import train
from tests.conftest import compose_train, quick_run

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow


@pytest.fixture
def tracking_server(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination", str(tmp_path / "artifacts"),
            "--workers", "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                if urllib.request.urlopen(f"{uri}/health", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("the MLflow server did not start")
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_run_logged_to_a_local_mlflow_server_reads_back(tracking_server, tmp_path):
    overrides = [*quick_run("gan"), "logger=mlflow", f"logger.mlflow.tracking_uri={tracking_server}"]
    metrics = train(compose_train(overrides, tmp_path / "run"))

    client = mlflow.tracking.MlflowClient(tracking_server)
    (run,) = client.search_runs([client.get_experiment_by_name("genlab").experiment_id])
    assert run.data.params["model/lr"] == "0.0002" and run.data.params["seed"] == "12345"
    history = client.get_metric_history(run.info.run_id, "val/d_x")
    assert len(history) == 2 and history[-1].value == pytest.approx(metrics["val/d_x"], rel=1e-6)
    grids = [a.path for a in client.list_artifacts(run.info.run_id, "val/samples")]
    assert len(grids) == 2 and all(p.endswith(".png") for p in grids), grids
    folders = [a.path for a in client.list_artifacts(run.info.run_id) if a.is_dir]
    files = [a.path for f in folders for a in client.list_artifacts(run.info.run_id, f)]
    assert any(p.endswith(".ckpt") for p in files), files  # a folder per checkpoint, named after it
