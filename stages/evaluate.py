"""DVC stage `eval`: score captured agent conversations with GEval, cached, tracked in MLflow."""

from __future__ import annotations

from pathlib import Path

from custseg.config import load_params
from custseg.entrypoint import run, stage_parser
from custseg.errors import ConfigError
from custseg.evaluation.stage import evaluate, summary_lines
from custseg.paths import CONVERSATIONS, EVAL_METRICS, EVAL_RESULTS


def main(argv: list[str] | None = None) -> int:
    parser = stage_parser(__doc__)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--conversations",
        type=Path,
        default=CONVERSATIONS,
        help="captured conversations to score (default: %(default)s; another file, e.g. a "
        "variant's, leaves the committed judge replies alone)",
    )
    parser.add_argument(
        "--results", type=Path, default=EVAL_RESULTS, help="result rows (default: %(default)s)"
    )
    parser.add_argument(
        "--metrics", type=Path, default=EVAL_METRICS, help="summary (default: %(default)s)"
    )
    args = parser.parse_args(argv)

    def body() -> None:
        outcome = evaluate(
            load_params(args.params),
            progress=not args.no_progress,
            source=args.conversations,
            results=args.results,
            metrics=args.metrics,
        )
        print("\n".join(summary_lines(outcome)))
        if outcome.failure:
            raise ConfigError(outcome.failure)

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
