"""A PgBouncer of the test's own in front of QUANDA_TEST_POSTGRES_URL's server, on a free port, in session or
transaction mode (Debian's pgbouncer; it refuses to run as root, so it runs as the `postgres` user)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.servers import free_port


class PgBouncer:
    def __init__(self, postgres_url: str, pool_mode: str):
        self.pool_mode, self.port = pool_mode, free_port()
        parts = urlsplit(postgres_url)
        self.database = parts.path.lstrip("/") or "postgres"
        self.target = (parts.hostname or "127.0.0.1", parts.port or 5432, parts.username or "postgres")

    def url(self, schema: str) -> str:
        """A store URL through this PgBouncer, in the given schema."""
        mode = "&pool_mode=transaction" if self.pool_mode == "transaction" else ""
        return f"postgresql://{self.target[2]}@127.0.0.1:{self.port}/{self.database}?schema={schema}{mode}"

    def __enter__(self) -> "PgBouncer":
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not os.path.exists(binary):
            pytest.skip("PgBouncer is not installed (apt-get install pgbouncer)")
        if os.geteuid() != 0 or shutil.which("runuser") is None:
            pytest.skip("PgBouncer refuses to run as root and this test cannot switch to the postgres user")
        host, port, user = self.target
        # a directory the postgres user can reach (pytest's are its owner's alone)
        self.workdir = Path(tempfile.mkdtemp(prefix="quanda-pgbouncer-"))
        self.workdir.chmod(0o777)
        config = self.workdir / "pgbouncer.ini"
        config.write_text(
            f"[databases]\n{self.database} = host={host} port={port} dbname={self.database} user={user}\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.port}\nauth_type = any\n"
            f"pool_mode = {self.pool_mode}\nmax_client_conn = 200\nunix_socket_dir =\n"
            # session mode: a server connection per client connection, as long as it lives; transaction mode:
            # a few server connections shared by every client between transactions
            f"default_pool_size = {40 if self.pool_mode == 'session' else 4}\n"
            f"logfile = {self.workdir}/pgbouncer.log\npidfile = {self.workdir}/pgbouncer.pid\n"
            f"ignore_startup_parameters = extra_float_digits,statement_timeout\n")
        config.chmod(0o644)
        self.proc = subprocess.Popen(["runuser", "-u", "postgres", "--", binary, str(config)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.proc.stderr.read().decode()[-2000:]}")
            try:
                import socket
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)  # waiting for a process to listen: there is no event to wait on
        raise RuntimeError("pgbouncer did not start listening")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.proc.stderr.close()
        shutil.rmtree(self.workdir, ignore_errors=True)
