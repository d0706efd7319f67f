"""``logger=mlflow`` against a real local MLflow tracking server (started on 127.0.0.1 and stopped here); the
run is read back through MLflow's client API: params, metric history, sample grids and checkpoints."""

import sys

import pytest

from genlab.pipeline import train
from tests.conftest import compose_train, local_server, quick_run

mlflow = pytest.importorskip("mlflow")
pytestmark = pytest.mark.slow


@pytest.fixture
def tracking_server(tmp_path):
    def argv(port: int) -> list[str]:
        return [
            sys.executable, "-m", "mlflow", "server",
            "--host", "127.0.0.1",
            "--port", str(port),
            "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
            "--artifacts-destination", str(tmp_path / "artifacts"),
            "--workers", "1",
        ]  # fmt: skip

    with local_server(argv, "/health") as uri:
        yield uri


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
