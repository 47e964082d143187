"""DVC stage `simulate`: write data/customers.csv (simulated, or read from simulate.source)."""

from __future__ import annotations

from pathlib import Path

from custseg.cli import run_cli, stage_parser
from custseg.config import load_params
from custseg.data import load_customers
from custseg.io import write_atomic

OUTPUT = Path("data/customers.csv")


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__).parse_args(argv)

    def body() -> None:
        params = load_params(args.params)
        customers = load_customers(params.simulate, params.base.seed)
        write_atomic(OUTPUT, lambda tmp: customers.to_csv(tmp, index=False, lineterminator="\n"))
        source = params.simulate.source or f"simulation (seed {params.base.seed})"
        print(f"simulate: {len(customers)} customers from {source} -> {OUTPUT}")

    return run_cli(body)


if __name__ == "__main__":
    raise SystemExit(main())
