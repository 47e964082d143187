"""DVC stage `simulate`: write data/customers.csv, or .parquet with simulate.format: parquet
(simulated, or read from simulate.source)."""

from __future__ import annotations

from custseg.config import load_params
from custseg.entrypoint import run, stage_parser
from custseg.io import write_atomic
from custseg.paths import customers_path
from custseg.pipeline.data import load_customers, write_customers


def main(argv: list[str] | None = None) -> int:
    args = stage_parser(__doc__).parse_args(argv)

    def body() -> None:
        params = load_params(args.params)
        customers = load_customers(params.simulate, params.base.seed)
        data_format = params.simulate.format
        path = customers_path(data_format)
        write_atomic(path, lambda tmp: write_customers(customers, tmp, data_format))
        source = params.simulate.source or f"simulation (seed {params.base.seed})"
        print(f"simulate: {len(customers)} customers from {source} -> {path}")

    return run(body)


if __name__ == "__main__":
    raise SystemExit(main())
