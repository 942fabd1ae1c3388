#!/usr/bin/python3
"""The gateway over TLS (--tls-cert/--tls-key) with a self-signed certificate
made here: curl verifies it and gets answers, plain HTTP to the TLS port
fails, the connection limits and the request deadline still hold, unusable
certificate files stop the gateway at start (exit 2).

Usage: http_tls.py WORKDIR   (from the repository root, in tests/run-all's
environment)
"""
import json
import os
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_harness import (GATEWAY, Cluster, case, finish, note, problem, read_response,  # noqa: E402
                          report, send_request, start_gateway, stop_gateway)

WORK = sys.argv[1]


def curl(*args):
    r = subprocess.run(["curl", "-sS", "--max-time", "20"] + list(args), capture_output=True,
                       text=True, timeout=60)
    return r.returncode, r.stdout, r.stderr


def main():
    cert, key = os.path.join(WORK, "tls-cert.pem"), os.path.join(WORK, "tls-key.pem")
    other_key = os.path.join(WORK, "tls-other-key.pem")
    for k, c in ((key, cert), (other_key, os.path.join(WORK, "tls-other-cert.pem"))):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", k,
                        "-out", c, "-days", "2", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1"],
                       check=True, capture_output=True, timeout=60)
    cluster = Cluster.of_run()
    conninfo, api_key = cluster.api_database("http_tls")
    gw, port = start_gateway(WORK, "gw-tls", [
        "--database-url", conninfo, "--tls-cert", cert, "--tls-key", key,
        "--max-connections", "3", "--request-read-timeout-ms", "1000"])
    base = "https://127.0.0.1:%d" % port

    @case("tls_curl_verifies_the_certificate_and_gets_answers")
    def _():
        code, out, err = curl("--cacert", cert, "-i", base + "/healthz")
        assert code == 0, (code, err)
        assert out.startswith("HTTP/1.1 200"), out
        assert out.rstrip().endswith('{"status":"ok"}'), out
        code, out, err = curl("--cacert", cert, "-H", "Authorization: Bearer " + api_key,
                              "-w", "\n%{http_code}", base + "/v1/me")
        assert code == 0 and out.endswith("\n200"), (code, out, err)
        # Without the CA, curl refuses the self-signed certificate.
        code, _, err = curl(base + "/healthz")
        assert code == 60, (code, err)

    @case("tls_keep_alive_reuses_the_connection")
    def _():
        code, out, err = curl("--cacert", cert, "-v", "-o", "/dev/null", "-o", "/dev/null",
                              base + "/healthz", base + "/metrics")
        assert code == 0, (code, err)
        assert "Re-using existing connection" in err or "Reusing existing connection" in err, err

    @case("tls_errors_are_problem_json")
    def _():
        code, out, err = curl("--cacert", cert, "-w", "\n%{http_code}", base + "/no/such/route")
        assert code == 0 and out.endswith("\n404") and '"code":"not_found"' in out, (out, err)

    @case("tls_large_answers_and_bodies_cross_intact")
    def _():
        # The whole document in one answer; a body of 900 KiB: many TLS records.
        code, out, err = curl("--cacert", cert, base + "/openapi.json")
        assert code == 0, (code, err)
        doc = json.loads(out)
        assert doc["openapi"].startswith("3.") and "/v1/me" in doc["paths"], len(out)
        big = os.path.join(WORK, "tls-big-body")
        with open(big, "wb") as f:
            f.write(b"x" * 900 * 1024)
        # (not curl's default form type: cpp-httplib answers 413 to a form
        # body over 8 KiB)
        code, out, err = curl("--cacert", cert, "-w", "\n%{http_code}", "-X", "POST",
                              "-H", "Content-Type: application/octet-stream",
                              "--data-binary", "@" + big, base + "/healthz")
        assert code == 0 and out.endswith("\n405"), (code, out[-300:], err)

    @case("tls_plain_http_to_the_tls_port_fails")
    def _():
        code, out, err = curl("-w", "%{http_code}", "http://127.0.0.1:%d/healthz" % port)
        note("plain HTTP to the TLS port: curl exit %d, %s" % (code, err.strip()))
        assert code != 0, (code, out)
        assert not out.startswith("2"), out
        # And the gateway serves TLS as before.
        code, out, _ = curl("--cacert", cert, "-w", "%{http_code}", "-o", "/dev/null",
                            base + "/healthz")
        assert out == "200", out

    @case("tls_handshake_bounded_by_the_request_deadline")
    def _():
        # A client that connects and never starts the handshake is closed
        # after --request-read-timeout-ms (1 s here).
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        t0 = time.monotonic()
        try:
            got = s.recv(100)
        except ConnectionResetError:
            got = b""
        note("silent TLS client closed after %.2f s" % (time.monotonic() - t0))
        assert got == b"", got
        s.close()

    @case("tls_connection_limit_answers_503_over_tls")
    def _():
        ctx = ssl.create_default_context(cafile=cert)
        held = []
        for _ in range(3):
            raw = socket.create_connection(("127.0.0.1", port), timeout=10)
            s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            send_request(s, "GET", "/healthz")
            assert read_response(s)[0] == 200
            held.append(s)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        status, headers, body = read_response(s)  # sent before any request
        assert status == 503, (status, body)
        problem(503, headers, body, "too_many_connections")
        assert headers.get("retry-after") == "1", headers
        for c in held + [s]:
            c.close()

    @case("tls_sigterm_exits_0")
    def _():
        assert stop_gateway(gw) == 0

    @case("tls_unusable_certificate_exits_2")
    def _():
        base_args = [GATEWAY, "--port", "1", "--database-url", conninfo]
        for extra, needle in (
                (["--tls-cert", cert], "TLS needs both"),
                (["--tls-cert", os.path.join(WORK, "missing.pem"), "--tls-key", key],
                 "cannot load the TLS certificate"),
                (["--tls-cert", cert, "--tls-key", cert], "cannot load the TLS key"),
                (["--tls-cert", cert, "--tls-key", other_key], "mismatch")):
            r = subprocess.run(base_args + extra, capture_output=True, text=True, timeout=30)
            assert r.returncode == 2, (extra, r.returncode, r.stderr)
            assert needle in r.stderr, (needle, r.stderr)


if __name__ == "__main__":
    try:
        main()
    except Exception as e:
        report(False, "setup", "%s: %s" % (type(e).__name__, e))
    finish()
