"""Security settings of ``streamer run`` against real servers.

- Kafka SASL_PLAINTEXT with SCRAM-SHA-256 (the session broker's SASL listener) plus a Milvus
  server with authorization on (token): the service processes headlines, and neither the
  Kafka password nor the Milvus token appears in its logs or on /metrics.
- A wrong Kafka password: exit non-zero with a clear authentication error, no traceback, no
  password in the output.
- Kafka over TLS: a test CA and broker certificate made on the fly with the openssl CLI, a
  dedicated broker with an SSL listener (PEM key store), the service with
  ``security_protocol=SSL`` and ``ssl_cafile``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.test_faults import (
    arrival_counts,
    assert_nothing_lost,
    drop_collection,
    fault_settings,
    milvus_ids,
    patient,
    produce,
    report,
    uci_headlines,
    wait_for,
)
from tests.plugins.kafka_broker import KafkaBroker
from tests.plugins.streamer_fixtures import REPO, free_port, settings_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def _sasl(kafka_broker: Any, user: str, password: str) -> dict[str, Any]:
    return {
        "bootstrap_servers": kafka_broker.sasl_bootstrap_servers,
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_username": user,
        "sasl_password": password,
    }


def test_sasl_scram_and_milvus_token_work_and_are_never_shown(
    kafka_broker: Any, kafka_scram_credentials: tuple[str, str], milvus_server_with_auth: Any,
    service_factory: Any, tmp_path: Path,
) -> None:
    user, password = kafka_scram_credentials
    token = milvus_server_with_auth.token
    assert token == "root:Milvus"
    s = fault_settings(kafka_broker.bootstrap_servers, milvus_server_with_auth.uri,
                       milvus={"uri": milvus_server_with_auth.uri, "token": token})
    s["kafka"].update(_sasl(kafka_broker, user, password))
    headlines = uci_headlines(100, skip=1_500)
    try:
        svc = service_factory(s, name="secure")
        svc.start()
        # Headlines are written through the PLAINTEXT listener of the same broker.
        produce(kafka_broker.bootstrap_servers, s["kafka"]["input_topic"], headlines)
        wait_for(lambda: svc.metric_value("streamer_messages_processed_total") >= len(headlines), 120, "all processed")
        metrics = patient(svc.metrics)
        status, ready = patient(svc.readyz)
        assert status == 200
        assert svc.terminate() == 0
        counts = arrival_counts(kafka_broker.bootstrap_servers, s["kafka"]["assignments_topic"])
        lost, duplicates = assert_nothing_lost(counts, headlines)
        ids = milvus_ids(milvus_server_with_auth.uri, s["milvus"]["collection"], token)
        assert sorted(ids) == sorted(h["id"] for h in headlines)
    finally:
        drop_collection(milvus_server_with_auth.uri, s["milvus"]["collection"], token)
    logs = svc.log_path.read_text(errors="replace")
    for secret in (password, token):
        assert secret not in logs, f"{secret!r} in the service log"
        assert secret not in metrics, f"{secret!r} on /metrics"
        assert secret not in str(ready)
    report("SASL SCRAM + Milvus token", messages=len(headlines), lost=lost, duplicates=duplicates,
           secrets_in_logs=0, secrets_in_metrics=0)


def test_wrong_kafka_password_exits_with_an_authentication_error(
    kafka_broker: Any, kafka_scram_credentials: tuple[str, str], tmp_path: Path
) -> None:
    user, password = kafka_scram_credentials
    wrong = "not-the-password-42"
    s = fault_settings(kafka_broker.bootstrap_servers, str(tmp_path / "milvus.db"))
    s["kafka"].update(_sasl(kafka_broker, user, wrong))
    s["service"] = {"http_port": 0}
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMER_")}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "streamer", "run"], env={**env, **settings_env(s)}, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    output = proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("{")]
    assert proc.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and errors[0].startswith("error: "), output[-3000:]
    assert "SaslAuthenticationFailed" in errors[0] and "invalid credentials" in errors[0], errors[0]
    assert wrong not in output and password not in output
    assert seconds < 60
    report("wrong SASL password", exit_code=proc.returncode, seconds=round(seconds, 1), error=errors[0][:160])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_certs(d: Path) -> tuple[Path, Path]:
    """A throwaway CA and a broker certificate for 127.0.0.1 (SAN IP and DNS localhost)."""
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt", "-days", "1",
             "-subj", "/CN=streamer test CA", cwd=d)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "broker.key", "-out", "broker.csr",
             "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "broker.crt", "-days", "1", "-extfile", "san.ext", cwd=d)
    # Kafka's PEM key store: the (unencrypted PKCS#8) private key followed by the certificate chain.
    keystore = d / "broker-keystore.pem"
    keystore.write_text((d / "broker.key").read_text() + (d / "broker.crt").read_text() + (d / "ca.crt").read_text())
    return d / "ca.crt", keystore


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI to make test certificates")
def test_kafka_over_tls(service_factory: Any, tmp_path: Path) -> None:
    cafile, keystore = _make_certs(tmp_path / "certs")
    broker = KafkaBroker(tmp_path / "kafka-tls")
    ssl_port = free_port()
    p, c = broker.plaintext_port, broker.controller_port
    broker.extra_properties = {
        "listeners": f"PLAINTEXT://127.0.0.1:{p},CONTROLLER://127.0.0.1:{c},SSL://127.0.0.1:{ssl_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{p},SSL://127.0.0.1:{ssl_port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL",
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(keystore),
        "ssl.client.auth": "none",
    }
    broker.start(timeout_s=90)
    try:
        s = fault_settings(broker.bootstrap_servers, str(tmp_path / "milvus.db"))
        s["kafka"].update({
            "bootstrap_servers": f"127.0.0.1:{ssl_port}",
            "security_protocol": "SSL",
            "ssl_cafile": str(cafile),
        })
        headlines = uci_headlines(60, skip=1_700)
        svc = service_factory(s, name="tls").start()
        produce(broker.bootstrap_servers, s["kafka"]["input_topic"], headlines)
        wait_for(lambda: svc.metric_value("streamer_messages_processed_total") >= len(headlines), 120, "all processed")
        assert svc.terminate() == 0
        counts = arrival_counts(broker.bootstrap_servers, s["kafka"]["assignments_topic"])
        lost, duplicates = assert_nothing_lost(counts, headlines)
        report("Kafka over TLS", messages=len(headlines), lost=lost, duplicates=duplicates)
    finally:
        broker.kill()
