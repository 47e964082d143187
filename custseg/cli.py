"""`custseg`: the project's commands. Each has `--help`; the DVC stages are `dvc repro`.

custseg submit | agents | capture      the agents over Kafka
custseg eval calibrate                 trust in the GEval judge
custseg llm fetch | models | serve | check
custseg kafka up | down | status | fetch
custseg team up | down | status        team mode: one MLflow server on PostgreSQL for a team
custseg mlflow template | restore      MLflow's empty store; re-register the pulled model
custseg pull [TARGET…] [--with-deps]   dvc pull, or one line saying what to do when it cannot
custseg plots template                 DVC's plots page with Vega inlined (offline)
custseg serve                          REST scoring (MLflow's protocol) of the registered model
custseg promote VERSION                make VERSION @champion by decision; shows the gate's verdict
custseg monitor                        drift of scored customers from the champion's training data
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from custseg import team
from custseg.agents import cli as agents_cli
from custseg.entrypoint import add_command, command_group, port, positive_int, run
from custseg.evaluation import cli as evaluation_cli
from custseg.kafka import cli as kafka_cli
from custseg.llm import cli as llm_cli
from custseg.monitoring import cli as monitoring_cli
from custseg.serving import DEFAULT_MAX_BODY_MB, DEFAULT_PORT


def _mlflow_template(_args: argparse.Namespace) -> None:
    from custseg.tracking import TEMPLATE_DIR_ENV, ensure_template

    path, built = ensure_template()
    state = "built" if built else "up to date"
    print(f"MLflow store template {state}: {path} (${TEMPLATE_DIR_ENV} moves it)")


def _mlflow_restore(args: argparse.Namespace) -> None:
    from custseg.config import load_params
    from custseg.pipeline.restore import restore

    print(restore(alias=load_params(args.params).export.alias))


def _pull(args: argparse.Namespace) -> None:
    from custseg.pipeline.pull import pull

    if output := pull([*args.targets, *(["--with-deps"] if args.with_deps else [])]):
        print(output)


def _plots_template(_args: argparse.Namespace) -> None:
    from custseg.pipeline.plots_page import write_template

    path = write_template()
    print(f"DVC plots page template: {path} ({path.stat().st_size // 1024} KiB, no network needed)")


def _serve(args: argparse.Namespace) -> None:
    from custseg.config import load_params
    from custseg.errors import ServingError, UserError
    from custseg.serving.rest import serve

    export = load_params(args.params).export
    try:
        serve(
            args.name or export.model_name,
            args.alias or export.alias,
            args.port,
            args.max_body_mb,
            args.record,
        )
    except ServingError as error:
        raise UserError(str(error)) from None


def _promote(args: argparse.Namespace) -> None:
    from custseg.config import load_params
    from custseg.pipeline.promote import promote

    print("\n".join(promote(args.version, load_params(args.params).export)))


def build_parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="custseg",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", required=True, metavar="COMMAND")
    agents_cli.add_commands(commands)
    evaluation_cli.add_commands(commands)
    llm_cli.add_commands(commands)
    kafka_cli.add_commands(commands)
    team.add_commands(commands)
    monitoring_cli.add_commands(commands)
    actions = command_group(commands, "mlflow", "MLflow set-up", "MLflow set-up for this project.")
    add_command(
        actions,
        "template",
        "build the migrated empty store that every new sqlite store copies (once per version)",
        _mlflow_template,
    )
    add_command(
        actions,
        "restore",
        "retrain and register the model models/model_info.json names if this registry lacks it "
        "(a clone after `dvc pull`, a new team server), then re-log the champion promoted by "
        "hand (models/champion); `make run` runs it first",
        _mlflow_restore,
        params=True,
    )
    pull = add_command(
        commands,
        "pull",
        "`dvc pull` (data and models from the DVC remote); when the remote lacks them (nothing "
        "pushed yet) one line says what to do instead: `make run`, then `dvc push`",
        _pull,
    )
    pull.add_argument(
        "targets", nargs="*", metavar="TARGET", help="stages or outputs (default: all of dvc.lock)"
    )
    pull.add_argument(
        "--with-deps", action="store_true", help="also what the targets depend on (as dvc pull)"
    )
    actions = command_group(commands, "plots", "DVC plots set-up", "DVC plots set-up.")
    add_command(
        actions,
        "template",
        "build .dvc/plots/offline.html from vendor/vega (run from the project root)",
        _plots_template,
    )
    serve = add_command(
        commands,
        "serve",
        "REST scoring of the registered model (MLflow's POST /invocations), values checked, "
        "127.0.0.1",
        _serve,
        params=True,
    )
    serve.add_argument("--port", type=port, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}")
    serve.add_argument(
        "--max-body-mb",
        type=positive_int,
        default=DEFAULT_MAX_BODY_MB,
        help=f"largest request body in MB; larger ones get 413 (default {DEFAULT_MAX_BODY_MB})",
    )
    serve.add_argument(
        "--record",
        type=Path,
        metavar="DIR",
        help="record each request's features and segments there (drift monitoring) instead of "
        "$CUSTSEG_RECORD_DIR or data/scored (CUSTSEG_RECORD_DIR=off: nowhere); a failing disk "
        "never fails a request",
    )
    serve.add_argument("--alias", help="default: params.yaml export.alias (champion)")
    serve.add_argument("--name", help="default: params.yaml export.model_name")
    promote = add_command(
        commands,
        "promote",
        "make VERSION of the registered model (export.model_name) its champion "
        "(export.alias), whatever the gate said: how an experiment or a new k reaches "
        "production; prints the gate's verdict on it",
        _promote,
        params=True,
    )
    promote.add_argument(
        "version", metavar="VERSION", type=positive_int, help="registered version number, e.g. 3"
    )
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run(lambda: args.run(args))
