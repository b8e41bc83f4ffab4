"""The `megawatt` command: a thin shell over the library. Every verb is a library call plus
rendering; errors go to stderr as one line, exit code 2, no traceback. Ctrl-C and SIGTERM stop
any verb the same way: `megawatt: interrupted` on stderr, exit code 130, worker processes
reaped, nothing written."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Column, Table
from rich.text import Text
from typer import Abort
from typer._click.exceptions import (  # typer is pinned; it no longer re-exports these
    BadParameter,
    ClickException,
    MissingParameter,
    NoArgsIsHelpError,
)

from megawatt.errors import InputError, MegawattError
from megawatt.hardware import Catalog, load_catalog
from megawatt.model import load_model
from megawatt.units import GB

MEMORY_LIMIT_GB = 4.0  # megawatt.study.MEMORY_LIMIT_BYTES, in the unit of --max-memory-gb

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="megawatt: what does this much compute buy? Simulate AI inference fleets from the chip up.",
)
hardware_app = typer.Typer(
    help="List the hardware catalog, or show one entry with its sources.",
    invoke_without_command=True,
)
models_app = typer.Typer(help="List the model catalog, or show one model.", invoke_without_command=True)
app.add_typer(hardware_app, name="hardware")
app.add_typer(models_app, name="models")

# Pipes and CI logs get a wide table instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 240)
HardwareOpt = Annotated[
    list[Path] | None,
    typer.Option("--hardware", "-H", help="extra hardware YAML file (repeatable)"),
]

WorkersOpt = Annotated[
    int | None, typer.Option(min=1, help="parallel processes, at least 1 (default: CPUs)")
]


def _catalog(files: list[Path] | None) -> Catalog:
    return load_catalog(*(files or []))


def _compact(n: float) -> str:
    """1,234,567 as 1.23M."""
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:.0f}"


class _CountColumn(ProgressColumn):
    """Done out of total: pools evaluated, or requests simulated and their rate."""

    def render(self, task: Task) -> Text:
        total = "?" if task.total is None else f"{task.total:,.0f}"
        if task.fields.get("unit") != "requests":
            return Text(f"{task.completed:,.0f}/{total}", style="progress.download")
        speed = task.finished_speed or task.speed
        rate = f" ({_compact(speed)}/s)" if speed else ""
        return Text(
            f"{_compact(task.completed)}/{_compact(task.total or 0)} req{rate}", style="progress.download"
        )


@contextmanager
def _progress(*, keep: bool = False) -> Iterator[Progress]:
    """A progress display on stderr when stderr is a terminal (pipes and logs get only the
    results, or the one-line error). `keep`: leave the finished bars on screen; a command that
    fails or is interrupted clears them, so its message stands alone."""
    console = Console(stderr=True)
    bar = Progress(
        TextColumn("[bold]{task.description}", table_column=Column(no_wrap=True, overflow="ellipsis")),
        BarColumn(bar_width=24),
        _CountColumn(table_column=Column(no_wrap=True)),
        TimeElapsedColumn(),
        console=console,
        transient=not keep,
        disable=not console.is_terminal,
    )
    with bar:
        try:
            yield bar
        except BaseException:
            bar.live.transient = True
            raise


# -- run ----------------------------------------------------------------------------------------
@app.command()
def run(
    scenario: Annotated[
        Path | None, typer.Argument(help="scenario YAML (default: the embedded 750 MW scenario)")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a field: key=value, e.g. budget.facility_mw=300"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out"),
    hardware: HardwareOpt = None,
    workers: WorkersOpt = None,
    max_memory_gb: Annotated[
        float,
        typer.Option(
            help="refuse a study estimated to need more memory than this (GB); see the estimate "
            "in the error"
        ),
    ] = MEMORY_LIMIT_GB,
) -> None:
    """Run a scenario end to end: table in the terminal, HTML report and JSON under --out.
    Everything is checked before the simulation starts; --out is written only at the end, all
    at once."""
    from megawatt.report import (
        check_output_dir,
        demand_sessions_table,
        demand_table,
        headline,
        images_line,
        results_table,
        sessions_table,
        write_outputs,
    )
    from megawatt.scenario import load_scenario
    from megawatt.study import LONG_RUN_S, check_memory, check_plans, estimate_cost, run_study

    check_output_dir(out, "--out")
    sc = load_scenario(scenario, list(set_ or []), hardware_files=hardware or ())
    check_plans(sc)
    limit = max_memory_gb * GB
    cost = estimate_cost(sc, workers=workers)
    check_memory(cost, limit, sc.name)
    if cost.wall_s > LONG_RUN_S:
        print(f"megawatt: note: this study will take a while: {cost.describe()}", file=sys.stderr)
    with _progress(keep=True) as bar:
        tasks = {"plans": bar.add_task("simulating", total=None)}

        def progress(phase: str, done: int, total: int, label: str) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(label, total=total, unit="requests")
            bar.update(
                tasks[phase],
                completed=done,
                total=total,
                description=f"simulated {label}" if done and phase == "plans" else label,
            )

        study = run_study(sc, progress=progress, workers=workers, memory_limit_bytes=limit)
    console.print(results_table(study))
    at_demand = demand_table(study)
    if at_demand is not None:
        console.print(at_demand)
    for extra in (sessions_table(study), demand_sessions_table(study), headline(study), images_line(study)):
        if extra is not None:
            console.print(extra)
    paths = write_outputs(study, out)
    console.print(
        f"Report: {paths['report']}  Results: {paths['results']}  "
        f"Scenario: {paths['scenario']}  ({study.wall_s:.0f} s)"
    )


# -- plan ---------------------------------------------------------------------------------------
@app.command()
def plan(
    plan_file: Annotated[
        Path | None,
        typer.Argument(metavar="PLAN", help="plan YAML (default: the embedded 750 MW Cerebras deal)"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", "-s", help="override a field: key=value, e.g. demand.growth_per_year=3"),
    ] = None,
    compare: Annotated[
        Path | None,
        typer.Option("--compare", help="a deal YAML to judge instead of the plan's own deal"),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder")] = Path("out"),
    workers: WorkersOpt = None,
    draws: Annotated[
        int | None, typer.Option(min=1, max=10_000, help="Monte Carlo draws (default: the plan's)")
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            help="folder keeping capacity runs (default: $XDG_CACHE_HOME/megawatt or ~/.cache/megawatt)"
        ),
    ] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="simulate every capacity run again")] = False,
) -> None:
    """Judge a multi-year compute deal: capacity per system and class from the simulator, an
    optimised supplier portfolio (MILP on HiGHS), the deal as announced and the best plan
    without it, under Monte Carlo draws of demand, prices, slips and the model's own error.
    Prints the build plan, NPV, P(shortfall) and the top tornado inputs; writes plan.json,
    plan.html and plan.resolved.yaml under --out, all at once."""
    import os
    import time

    from megawatt.deal import SimulatedCapacity, load_deal, load_plan, run_plan, with_deal
    from megawatt.report import check_output_dir
    from megawatt.report.cache import DiskCache, default_cache_dir
    from megawatt.report.plan import build_table, plans_table, verdict_lines, write_plan_outputs

    start = time.perf_counter()
    check_output_dir(out, "--out")
    store = None
    if not no_cache:
        if cache is not None:
            check_output_dir(cache, "--cache")
        store = DiskCache(cache or default_cache_dir())  # the default folder: kept where it can be
    the_plan = load_plan(plan_file, list(set_ or []))
    if compare is not None:
        the_plan = with_deal(the_plan, load_deal(compare), f"--compare {compare}")
    n_workers = workers or os.cpu_count() or 1
    source = SimulatedCapacity(n_workers, store)
    with _progress() as bar:
        tasks: dict[str, TaskID] = {}

        def progress(phase: str, done: int, total: int, label: str) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(label, total=total)
            bar.update(tasks[phase], completed=done, total=total, description=label)

        result = run_plan(the_plan, capacity=source, workers=n_workers, progress=progress, draws=draws)
    console.print(build_table(result.main))
    if "fixed" in result.outcomes:
        console.print(build_table(result.outcomes["fixed"]))
    console.print(plans_table(result))
    for line in verdict_lines(result):
        console.print(line, soft_wrap=True)
    for o in result.outcomes.values():
        if o.solution.status != "optimal":
            console.print(
                f"Note: the solver stopped early on the {o.label} plan ({o.solution.status}); its "
                f"cost is within {o.solution.gap:.2%} of the best."
            )
    paths = write_plan_outputs(result, out)
    solve_s = sum(v for k, v in result.timings.items() if k.startswith("solve_"))
    console.print(
        f"Report: {paths['html']}  Results: {paths['json']}  Plan: {paths['plan']}  "
        f"({time.perf_counter() - start:.0f} s: capacity {result.timings['capacity_s']:.0f} s, "
        f"{source.runs_} runs simulated, {source.hits_} from the cache; MILP {solve_s:.1f} s; "
        f"Monte Carlo {result.timings['risk_s']:.0f} s)"
    )


# -- hardware -----------------------------------------------------------------------------------
@hardware_app.callback()
def hardware_list(ctx: typer.Context, hardware: HardwareOpt = None) -> None:
    """List devices and systems."""
    if ctx.invoked_subcommand is not None:
        return
    from megawatt.report.catalog import hardware_tables

    for table in hardware_tables(_catalog(hardware)):
        console.print(table)


@hardware_app.command("show")
def hardware_show(
    id: Annotated[str, typer.Argument(help="device or system id")], hardware: HardwareOpt = None
) -> None:
    """Show one device (or system) with every figure's source; estimates are marked."""
    from megawatt.report.catalog import device_table, system_table

    cat = _catalog(hardware)
    if id in cat.systems and id not in cat.devices:
        console.print(system_table(cat, id))
        return
    console.print(device_table(cat, id))


# -- models -------------------------------------------------------------------------------------
@models_app.callback()
def models_list(ctx: typer.Context) -> None:
    """List the preset models."""
    if ctx.invoked_subcommand is not None:
        return
    from megawatt.report.catalog import models_table

    console.print(models_table())


@models_app.command("show")
def models_show(
    id: Annotated[str, typer.Argument(help="model id or path to a config.json")],
) -> None:
    """Show one model: layers, parameters by component, KV-cache bytes per token."""
    from megawatt.report.catalog import model_table

    console.print(model_table(load_model(id)))


# -- explain ------------------------------------------------------------------------------------
@app.command()
def explain(
    hardware_id: Annotated[str, typer.Argument(metavar="HARDWARE", help="system or device id")],
    model_id: Annotated[str, typer.Argument(metavar="MODEL", help="model id or config.json")],
    context: Annotated[
        int, typer.Option(min=1, help="context length per sequence, tokens")
    ] = 8192,
    weight_dtype: Annotated[str, typer.Option(help="auto, native, bf16, fp8, fp4")] = "auto",
    tp: Annotated[int | None, typer.Option(min=1, help="tensor-parallel width")] = None,
    pp: Annotated[int | None, typer.Option(min=1, help="pipeline stages / wafers")] = None,
    ep: Annotated[
        int | None, typer.Option(min=1, help="expert-parallel width (MoE; needs --tp)")
    ] = None,
    attention_dp: Annotated[
        bool, typer.Option(help="data-parallel attention over the tp devices (needs --tp)")
    ] = False,
    engine: Annotated[str | None, typer.Option(help="engine (default: per family)")] = None,
    weight_streaming: Annotated[
        bool, typer.Option(help="wafers: stream weights from MemoryX instead of SRAM")
    ] = False,
    draft: Annotated[
        str | None, typer.Option(help="wafers: speculative decoding with this draft model")
    ] = None,
    draft_tokens: Annotated[
        int, typer.Option(min=1, max=16, help="drafted tokens per verify step, 1 to 16")
    ] = 3,
    acceptance: Annotated[
        float, typer.Option(min=0.0, max=1.0, help="acceptance rate per drafted token, 0 to 1")
    ] = 0.8,
    hardware: HardwareOpt = None,
) -> None:
    """Why a model runs at its speed on some hardware: the memory plan and a decode step's time
    by operator and bound, alone and at the largest batch that fits at --context. Wafers: the
    SRAM of each wafer, a token's time by mesh component, and the alternatives (weight
    streaming; speculative decoding with --draft)."""
    from megawatt.explain import explain_deployment
    from megawatt.perf.speculative import Speculation
    from megawatt.report.explain import render_explanation

    cat = _catalog(hardware)
    text = render_explanation(
        explain_deployment(
            cat,
            hardware_id,
            model_id,
            context=context,
            weight_dtype=weight_dtype,
            tp=tp,
            pp=pp,
            engine=engine,
            weight_streaming=weight_streaming,
            draft=draft,
            speculation=Speculation(draft_tokens, acceptance),
            ep=ep,
            attention_dp=attention_dp,
        )
    )
    console.print(text)


# -- validate / calibrate -------------------------------------------------------------------------
DataOpt = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="measurements CSV, or a packaged one by name: measurements (the default: published "
        "figures), inferencex, inferencex-disagg (open engines, closed-loop benchmarks)",
    ),
]


@app.command()
def validate(
    data: DataOpt = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="also write every row and the summary as JSON")
    ] = None,
    workers: WorkersOpt = None,
    rows_shown: Annotated[
        str,
        typer.Option(
            "--rows",
            help="which rows to list: auto (all up to 150, else the 25 worst), all, worst",
        ),
    ] = "auto",
    images: Annotated[
        Path | None,
        typer.Option(
            "--images",
            help="image-generation rows CSV (default: the packaged MLPerf SDXL rows, "
            "data/validation/images.csv)",
        ),
    ] = None,
) -> None:
    """Replay published measurements through the simulator: measured vs predicted per row, the
    chosen plan, MAPE overall / per hardware / per metric, and the rows not predicted; then the
    image-generation rows against the image roofline with its fitted efficiency (MAPE and
    leave-one-out MAPE)."""
    if rows_shown not in ("auto", "all", "worst"):
        raise InputError(f"--rows must be auto, all or worst; got {rows_shown!r}.")
    from megawatt.calibration import Validation, calibration_cv, read_measurements, validate_images
    from megawatt.calibration import validate as run_validation
    from megawatt.report import check_output_file, write_atomic
    from megawatt.report.validation import (
        image_validation_table,
        validation_json,
        validation_summary,
        validation_table,
    )

    if json_path is not None:
        check_output_file(json_path, "--json")
    image_result = validate_images(images)  # before the long replay: a bad file fails fast
    rows, rejected = read_measurements(data)
    if not rows:
        raise InputError(
            f"no row of {data} could be read ({len(rejected)} refused); the first: "
            f"{rejected[0].reason}"
        )
    with _progress() as bar:
        task = bar.add_task("replaying", total=len(rows))

        def progress(done: int, total: int, rid: str) -> None:
            bar.update(task, completed=done, total=total, description=f"replayed {rid}" if rid else "")

        result = run_validation(rows, workers=workers, progress=progress)
    result = Validation((*result.rows, *(r.result() for r in rejected)))
    console.print(validation_table(result, rows_shown))
    console.print(validation_summary(result, calibration_cv()))
    console.print(image_validation_table(image_result))
    if json_path is not None:
        write_atomic(json_path, validation_json(result, image_result))
        console.print(f"JSON: {json_path}")


@app.command()
def calibrate(
    data: Annotated[
        list[Path] | None,
        typer.Option(
            "--data",
            help="measurements CSVs to fit together, paths or packaged names (default: "
            "measurements and inferencex); repeat the option for several",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="where to write (default: the package's calibration file)"),
    ] = None,
    workers: WorkersOpt = None,
) -> None:
    """Fit the efficiencies per hardware family and engine to the measurements and write the
    versioned calibration file (same input, same bytes); prints fit and cross-validated MAPE."""
    import json

    import megawatt
    from megawatt.calibration import (
        CALIBRATION_DATA,
        Calibrator,
        data_name,
        load_measurements,
        measurements_sha256,
        newest_date,
    )
    from megawatt.perf.efficiency import CALIBRATION_FILE
    from megawatt.report import check_output_file, write_atomic
    from megawatt.report.validation import calibration_table

    target = out or Path(megawatt.__file__).parent / CALIBRATION_FILE
    check_output_file(target, "--out")
    sources: list[str | Path] = list(data) if data else list(CALIBRATION_DATA)
    rows = tuple(row for source in sources for row in load_measurements(source))
    ids = [r.id for r in rows]
    if len(set(ids)) < len(ids):
        twice = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise InputError(
            f"calibrate --data: ids must be unique across the files; {', '.join(twice)} repeat. "
            "Give each file's rows their own ids."
        )
    with _progress() as bar:
        task = bar.add_task("simulating", total=len(rows))

        def progress(label: str, done: int, total: int, rid: str) -> None:
            bar.update(task, completed=done, total=total, description=f"{label}: {rid}")

        cal = Calibrator(workers=workers).fit(rows, progress=progress)
    document = cal.document(
        inputs=[(data_name(source), measurements_sha256(source)) for source in sources],
        data_date=newest_date(rows),
    )
    write_atomic(target, json.dumps(document, indent=1) + "\n")
    console.print(calibration_table(cal))
    console.print(f"Calibration file: {target}")


@app.command("calibrate-power")
def calibrate_power(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="power CSV in power.csv's schema (default: the packaged one)"),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="where to write (default: the package's power curves file)"),
    ] = None,
) -> None:
    """Fit each device family's power-against-load curve to measured GPU power and write the
    versioned curves file (same input, same bytes); prints the fit and cross-validated errors."""
    import json

    import megawatt
    from megawatt.fleet.power import (
        POWER_CSV,
        POWER_CURVES_FILE,
        PowerCurveFitter,
        load_power_records,
        power_records_sha256,
    )
    from megawatt.report import write_atomic

    fitter = PowerCurveFitter().fit(load_power_records(data))
    name = POWER_CSV if data is None else Path(data).name
    document = fitter.document(
        input_name=name, input_sha256=power_records_sha256(data), version=megawatt.__version__
    )
    target = out or Path(megawatt.__file__).parent / POWER_CURVES_FILE
    write_atomic(target, json.dumps(document, indent=1) + "\n")
    t = Table(title="Power against load: per-GPU power / TDP = idle + (full - idle) x u^exponent")
    for col in ("family", "hardware", "points", "idle", "full load", "exponent", "fit MAPE",
                "leave-one-out", "leave-one-config-out", "linear prior"):
        t.add_column(col)
    for fit in fitter.fits_.values():
        t.add_row(
            fit.family,
            ", ".join(fit.hardware),
            str(fit.n_points),
            f"{fit.idle_fraction:.3f}",
            f"{fit.full_load_fraction:.3f}",
            f"{fit.exponent:.3f}",
            f"{fit.fit_mape_pct:.1f}%",
            f"{fit.loo_mape_pct:.1f}%",
            f"{fit.loco_mape_pct:.1f}%",
            f"{fit.prior_mape_pct:.1f}%",
        )
    console.print(t)
    for row, why in fitter.excluded_:
        if "worker" not in why:
            console.print(f"left out: {row}: {why}")
    console.print(f"Power curves file: {target}")


INTERRUPTED = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM stops a command as Ctrl-C does (workers reaped, nothing written)."""
    raise KeyboardInterrupt


def _by_interrupt(exc: BaseException) -> bool:
    """True when `exc` was raised by Ctrl-C or SIGTERM, or on the way out of one (typer turns
    KeyboardInterrupt into exit code 130; numba's runtime can wrap it in a SystemError)."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt | Abort):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _given(exc: ClickException, argv: list[str]) -> str:
    """'; got VALUE' for a bad option value, found in the command line ('' if not found)."""
    param = getattr(exc, "param", None)
    opts = getattr(param, "opts", None) or []
    if not isinstance(exc, BadParameter) or isinstance(exc, MissingParameter):
        return ""
    for i, token in enumerate(argv):
        for opt in opts:
            if token == opt and i + 1 < len(argv) and opt.startswith("-"):
                return f"; got {argv[i + 1]!r}"
            if token.startswith(opt + "=") and opt.startswith("--"):
                return f"; got {token[len(opt) + 1:]!r}"
    return ""


def _usage_line(exc: ClickException, argv: list[str]) -> str:
    """A command-line mistake (unknown option, bad value, missing argument) as one line."""
    ctx = getattr(exc, "ctx", None)
    command = ctx.command_path if ctx is not None else "megawatt"
    message = " ".join(exc.format_message().split()).rstrip(".") + _given(exc, argv)
    return f"megawatt: error: {command}: {message}. See '{command} --help'."


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI, turning megawatt errors and command-line mistakes into one line
    on stderr and exit 2 (no traceback), and Ctrl-C or SIGTERM into `megawatt: interrupted` and
    exit 130."""
    previous = signal.getsignal(signal.SIGTERM)
    if previous == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        code = app(args=argv, standalone_mode=False)
    except NoArgsIsHelpError as exc:  # bare `megawatt` or a group: show the help
        print(exc.format_message(), file=sys.stderr)
        return 2
    except ClickException as exc:
        print(_usage_line(exc, sys.argv[1:] if argv is None else argv), file=sys.stderr)
        return exc.exit_code
    except MegawattError as exc:
        print(f"megawatt: error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Abort, SystemExit, SystemError) as exc:
        if _by_interrupt(exc):
            print("megawatt: interrupted", file=sys.stderr)
            return INTERRUPTED
        if not isinstance(exc, SystemExit):
            raise
        return int(exc.code or 0) if isinstance(exc.code, int | None) else 1
    finally:
        if previous == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if code == INTERRUPTED:  # typer returns Ctrl-C as exit code 130 outside standalone mode
        print("megawatt: interrupted", file=sys.stderr)
    return code if isinstance(code, int) else 0


def _console_main() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # one held back by the simulator, delivered after main said so
        code = INTERRUPTED
    if code == INTERRUPTED:
        # Nothing is left to write (outputs go in whole or not at all, workers are reaped), so
        # leave at once: a late Ctrl-C during the interpreter's shutdown could otherwise turn
        # exit code 130 into death by SIGINT.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
