"""Team mode: one MLflow server on PostgreSQL that a team's clones share.

`custseg team up` creates (once) a PostgreSQL cluster under the team folder with Debian's
`initdb`, starts it with `pg_ctl` on 127.0.0.1, and starts `mlflow server` on it with a shared
artifact root served by the server itself (`--serve-artifacts`), so a client needs nothing but
`MLFLOW_TRACKING_URI=http://127.0.0.1:PORT`. The database password comes from the environment
only (TEAM_PASSWORD_ENV); it is handed to PostgreSQL and MLflow through files and variables,
never on a command line and never committed.

PostgreSQL refuses to run as root: as root, its programs run as the `postgres` user.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from custseg.config import directory_from_env
from custseg.entrypoint import add_command, command_group, port
from custseg.errors import ServerNotUp, TeamError, require_extra
from custseg.net import answers, wait_until_answers
from custseg.telemetry import NO_TELEMETRY

TEAM_PASSWORD_ENV = "CUSTSEG_TEAM_DB_PASSWORD"
TEAM_DIR_ENV = "CUSTSEG_TEAM_DIR"
DEFAULT_DIR = Path(".team")
DEFAULT_PG_PORT = 5433  # not 5432: a machine's own PostgreSQL may hold it
DEFAULT_MLFLOW_PORT = 5010
DB_USER = "custseg"
DB_NAME = "mlflow"
PG_BIN_ROOT = Path("/usr/lib/postgresql")
EXIT_NOT_RUNNING = 3


@dataclass(frozen=True)
class Team:
    """Where the team server keeps its state, and its ports."""

    root: Path
    pg_port: int = DEFAULT_PG_PORT
    mlflow_port: int = DEFAULT_MLFLOW_PORT

    @property
    def pg_data(self) -> Path:
        return self.root / "postgres"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def pid_file(self) -> Path:
        return self.root / "mlflow.pid"

    @property
    def state_file(self) -> Path:
        return self.root / "team.json"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def backend_uri(self) -> str:
        # No password in the URI: libpq reads PGPASSWORD from the server's environment.
        return f"postgresql://{DB_USER}@127.0.0.1:{self.pg_port}/{DB_NAME}"


def team_dir() -> Path:
    return directory_from_env(TEAM_DIR_ENV, DEFAULT_DIR).resolve()


def password() -> str:
    secret = os.environ.get(TEAM_PASSWORD_ENV, "")
    if not secret.strip():
        raise TeamError(
            f"{TEAM_PASSWORD_ENV} is not set: export a password for the team database "
            "(it is never written to the repository)"
        )
    return secret


def pg_bin(program: str) -> Path:
    """A PostgreSQL server program from Debian's `postgresql` package (newest version)."""
    for version in sorted(
        PG_BIN_ROOT.glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    ):
        if (version / program).is_file():
            return version / program
    raise TeamError(f"{program} not found under {PG_BIN_ROOT}: run `apt-get install postgresql`")


def as_pg_user(command: list[str]) -> list[str]:
    """Run as the `postgres` user when we are root (PostgreSQL refuses root)."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def _give_to_pg_user(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


def _run(command: list[str], what: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines() or ["no output"]
        raise TeamError(f"{what} failed: {lines[-1]}")


def pg_running(team: Team) -> bool:
    if not (team.pg_data / "postmaster.pid").is_file():
        return False
    done = subprocess.run(
        [str(pg_bin("pg_isready")), "-h", "127.0.0.1", "-p", str(team.pg_port)],
        capture_output=True,
    )
    return done.returncode == 0


def start_postgres(team: Team, secret: str) -> None:
    """initdb (first time only), then start the cluster on 127.0.0.1 and create the database."""
    team.root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        team.root.chmod(0o755)  # the postgres user must reach its data folder inside
    if not (team.pg_data / "PG_VERSION").is_file():
        team.pg_data.mkdir(mode=0o700, exist_ok=True)
        _give_to_pg_user(team.pg_data)
        secret_file = team.root / ".initdb-password"  # initdb wants its folder empty
        secret_file.write_text(secret)
        secret_file.chmod(0o600)
        _give_to_pg_user(secret_file)
        try:
            _run(
                as_pg_user(
                    [
                        str(pg_bin("initdb")),
                        "-D",
                        str(team.pg_data),
                        "-U",
                        DB_USER,
                        "--auth=scram-sha-256",
                        f"--pwfile={secret_file}",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                "initdb",
            )
        finally:
            secret_file.unlink(missing_ok=True)
    if not pg_running(team):
        options = f"-c listen_addresses=127.0.0.1 -p {team.pg_port} -k {team.pg_data}"
        _run(
            as_pg_user(
                [
                    str(pg_bin("pg_ctl")),
                    "-D",
                    str(team.pg_data),
                    "-l",
                    str(team.pg_data / "server.log"),
                    "-o",
                    options,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ]
            ),
            f"starting PostgreSQL on 127.0.0.1:{team.pg_port} (log: {team.pg_data}/server.log)",
        )
    env = {**os.environ, "PGPASSWORD": secret}
    exists = subprocess.run(
        [str(pg_bin("psql")), "-h", "127.0.0.1", "-p", str(team.pg_port), "-U", DB_USER,
         "-d", "postgres", "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DB_NAME}'"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    if exists.returncode != 0:
        raise TeamError(f"PostgreSQL refused the team password: {exists.stderr.strip()[:200]}")
    if exists.stdout.strip() != "1":
        _run(
            [str(pg_bin("createdb")), "-h", "127.0.0.1", "-p", str(team.pg_port), "-U", DB_USER,
             DB_NAME],
            "createdb", env,
        )  # fmt: skip


def mlflow_pid(team: Team) -> int | None:
    """The team MLflow server's PID if that process still runs."""
    try:
        pid = int(team.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if alive(pid) else None


def alive(pid: int) -> bool:
    """Whether `pid` runs (a child of ours that exited is reaped here, not counted)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child: `custseg team up` ran in another process
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def healthy(url: str) -> bool:
    return answers(f"{url}/health")


def start_mlflow(team: Team, secret: str, timeout_s: float = 180.0) -> int:
    """`mlflow server` on the team database (its migrations run on first start)."""
    if pid := mlflow_pid(team):
        return pid
    team.artifacts.mkdir(parents=True, exist_ok=True)
    # No background job runner (it would start huey workers nobody uses), as `make ui` runs it.
    env = {
        **os.environ,
        **NO_TELEMETRY,
        "PGPASSWORD": secret,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        env.pop(key, None)
    with open(team.root / "mlflow.log", "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                team.backend_uri,
                "--artifacts-destination",
                str(team.artifacts),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(team.mlflow_port),
                "--workers",
                "2",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its workers form one group, stopped together
        )
    team.pid_file.write_text(f"{process.pid}\n")
    try:
        wait_for_server(team.url, process, timeout_s)
    except TeamError as error:
        raise TeamError(f"{error}: see {log.name}") from None
    return process.pid


def wait_for_server(url: str, process: subprocess.Popen, timeout_s: float) -> None:
    """Until an MLflow server started as `process` answers /health; TeamError (one line) if
    it exits or does not answer in time."""
    try:
        wait_until_answers(f"{url}/health", process, timeout_s, name="mlflow server")
    except ServerNotUp as error:
        raise TeamError(str(error)) from None


def team_up(team: Team) -> str:
    require_extra("psycopg", "team", "custseg team up (MLflow on PostgreSQL)")
    secret = password()
    start_postgres(team, secret)
    pid = start_mlflow(team, secret)
    team.state_file.write_text(
        json.dumps({"url": team.url, "pg_port": team.pg_port, "mlflow_pid": pid}) + "\n"
    )
    return team.url


def team_down(team: Team) -> list[str]:
    """Stop the MLflow server (its process group, by PID) and the PostgreSQL cluster."""
    stopped = []
    if pid := mlflow_pid(team):
        os.killpg(pid, signal.SIGTERM)
        for _ in range(60):
            if mlflow_pid(team) is None:
                break
            time.sleep(0.5)
        else:
            os.killpg(pid, signal.SIGKILL)
        stopped.append(f"mlflow server (pid {pid})")
    team.pid_file.unlink(missing_ok=True)
    if pg_running(team):
        _run(
            as_pg_user(
                [str(pg_bin("pg_ctl")), "-D", str(team.pg_data), "-m", "fast", "-w", "stop"]
            ),
            "stopping PostgreSQL",
        )
        stopped.append(f"PostgreSQL (127.0.0.1:{team.pg_port})")
    return stopped


def team_status(team: Team) -> tuple[bool, str]:
    pg = pg_running(team)
    pid = mlflow_pid(team)
    ok = pg and pid is not None and healthy(team.url)
    lines = [
        f"PostgreSQL 127.0.0.1:{team.pg_port}: {'running' if pg else 'stopped'} ({team.pg_data})",
        f"MLflow server {team.url}: "
        + (f"running (pid {pid})" if pid and healthy(team.url) else "stopped"),
    ]
    if ok:
        lines.append(f"clients: export MLFLOW_TRACKING_URI={team.url}")
    return ok, "\n".join(lines)


# --- `custseg team up | down | status` -------------------------------------------------------


def add_commands(commands: argparse._SubParsersAction) -> None:
    actions = command_group(
        commands,
        "team",
        "team mode: one MLflow server on PostgreSQL (127.0.0.1) for a team's clones",
        f"Start, stop or inspect the team MLflow server. The database password comes from "
        f"${TEAM_PASSWORD_ENV}; state lives in ${TEAM_DIR_ENV} (default {DEFAULT_DIR}/).",
    )
    for name, text in (
        ("up", "create the PostgreSQL cluster once, start it and the MLflow server on it"),
        ("down", "stop the MLflow server and PostgreSQL (by PID / pg_ctl)"),
        ("status", f"running or not, and the tracking URL (exit {EXIT_NOT_RUNNING}: not running)"),
    ):
        action = add_command(actions, name, text, _cli)
        action.add_argument("--pg-port", type=port, default=DEFAULT_PG_PORT, help="PostgreSQL port")
        action.add_argument(
            "--port", type=port, default=DEFAULT_MLFLOW_PORT, help="MLflow server port"
        )


def _cli(args: argparse.Namespace) -> int:
    team = Team(team_dir(), args.pg_port, args.port)
    if args.action == "up":
        url = team_up(team)
        print(f"team MLflow server: {url} (PostgreSQL 127.0.0.1:{team.pg_port})")
        print(f"clients: export MLFLOW_TRACKING_URI={url}")
        return 0
    if args.action == "down":
        stopped = team_down(team)
        print("stopped: " + ", ".join(stopped) if stopped else "nothing was running")
        return 0
    ok, text = team_status(team)
    print(text)
    return 0 if ok else EXIT_NOT_RUNNING
