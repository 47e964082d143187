"""DVC stage `eval`: score captured agent conversations with GEval, cached, tracked in MLflow."""

from __future__ import annotations

from custseg.config import load_params
from custseg.entrypoint import run, stage_parser
from custseg.errors import ConfigError
from custseg.evaluation.stage import evaluate, summary_lines


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    def body() -> None:
        outcome = evaluate(load_params(args.params), progress=not args.no_progress)
        print("\n".join(summary_lines(outcome)))
        if outcome.failure:
            raise ConfigError(outcome.failure)

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
