"""The ``debiasbench`` command.

Bad input (unknown name, wrong type, missing file) prints one line on stderr and exits
with code 2, never a traceback; every run option is parsed like a ``--set`` value so the
same validator words every message.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Any, Callable

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperCommand, TyperGroup

from debiasbench.core.errors import INTERRUPTED, Interrupted, UserError, one_line, redact_credentials, sentence
from debiasbench.core.resources import check_threads


class _QuietHelp:
    """``--help`` listed without a value type: typer 0.29 shows ``<bool>`` beside it, as
    beside any flag not given ``metavar=""``."""

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class _Group(_QuietHelp, TyperGroup):
    pass


class _Argument(TyperArgument):
    """An argument shown by its name alone (``FILE``): typer 0.29 adds its value type in the
    help (``FILE <path>``) and braces in the usage line (``{FILE}``)."""

    def display_type_rich(self, ctx: Any) -> str | None:
        return None

    def _usage_display_name(self) -> str:
        name = self.display_name_raw if self.required else f"[{self.display_name_raw}]"
        return name if self.nargs == 1 else f"{name}..."


class _Command(_QuietHelp, TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument):
                param.__class__ = _Argument


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode="markdown", cls=_Group,
                  help="Benchmark methods that unlearn a model's shortcuts.")
err = Console(stderr=True)


def _print_version(asked: bool) -> None:
    if asked:
        from importlib.metadata import version

        print(f"debiasbench {version('debiasbench')}")
        raise typer.Exit()


@app.callback()
def _options(
    version: bool = typer.Option(False, "--version", metavar="", callback=_print_version, is_eager=True,
                                 help="print the installed version and exit"),
) -> None:
    """Benchmark methods that unlearn a model's shortcuts."""


class _Work:
    """Whether the command under way did work (trained, ran a sweep, wrote files, served the
    UI) rather than only print: the exit code of work stays what the work makes it when
    standard output fails (``main``); a command that only prints exits 1 then."""

    done = False


def doing_work() -> None:
    """Mark the command under way as one that does work (``_Work``)."""
    _Work.done = True


def out() -> Console:
    """Stdout console; tables are not squeezed to 80 columns when piped or captured."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def print_error(message: str) -> None:
    """One line on stderr, ``error: ...``, cut to ``MESSAGE_LIMIT`` characters; credentials
    of any URI in it are shown as ``***``."""
    err.print(f"error: {sentence(one_line(redact_credentials(message)))}", markup=False, highlight=False,
              soft_wrap=True)


#: What a command says on Ctrl-C or SIGTERM, unless the interrupt says more itself
#: (``errors.Interrupted``: a run's epoch, a leaderboard written); others say "interrupted".
INTERRUPT_LINES = {
    "run": INTERRUPTED,
    "sweep": "interrupted; run the same command again to resume (finished jobs are skipped, finished epochs "
             "are kept as checkpoints)",
    "leaderboard": "interrupted; nothing was written",  # its files are renamed into place all at once
}


def user_errors(command: Callable) -> Callable:
    """Turn a ``UserError`` into one line and exit code 2, and Ctrl-C or SIGTERM
    (``debiasbench.core.interrupts``: taken as Ctrl-C) into one line and exit code 130 or
    143: the interrupt's own message, or the command's line (``INTERRUPT_LINES``)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from debiasbench.core import interrupts

        with interrupts.sigterm_as_interrupt():
            try:
                return command(*args, **kwargs)
            except UserError as exc:
                print_error(str(exc))
                raise typer.Exit(2) from None
            except KeyboardInterrupt as exc:
                message = (exc.message if isinstance(exc, Interrupted)
                           else INTERRUPT_LINES.get(command.__name__, "interrupted"))
                err.print(sentence(f"SIGTERM: {message}" if interrupts.terminated() else message), markup=False,
                          highlight=False, soft_wrap=True)
                raise typer.Exit(interrupts.exit_code()) from None

    return wrapper


SetOption = typer.Option(None, "--set", metavar="KEY=VALUE", help="override a config key (repeatable)")
TrackingOption = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", metavar="URI",
                              help="MLflow tracking URI (default: sqlite file mlflow.db here)")


ThreadsOption = typer.Option(None, "--threads", metavar="N",
                             help="torch threads (default: the cores this process may use)")


def use_threads(threads: int | None) -> None:
    """Give torch ``threads`` threads, or the cores this process may use (not the
    machine's: under ``taskset`` or a scheduler's limit more threads only contend), at
    most as many as it has (``core.resources.default_threads``)."""
    import torch

    from debiasbench.core.resources import default_threads

    torch.set_num_threads(default_threads() if threads is None else check_threads(threads))


def _default(key: str) -> str:
    """``(default: x)`` of a run key, from its declaration (so help and code agree)."""
    from debiasbench.contract.config import RUN_KEYS

    return f"(default: {RUN_KEYS[key].default})"


@app.command(cls=_Command)
@user_errors
def run(
    method: str | None = typer.Option(None, "--method", "-m", metavar="NAME",
                                      help=f"method name, see `debiasbench methods` {_default('method')}"),
    dataset: str | None = typer.Option(None, "--dataset", "-d", metavar="NAME",
                                       help=f"dataset name, see `debiasbench datasets` {_default('dataset')}"),
    model: str | None = typer.Option(None, "--model", metavar="ARCH", help=f"architecture {_default('model')}"),
    seed: str | None = typer.Option(None, "--seed", metavar="INTEGER", help=f"run seed {_default('seed')}"),
    config: Path | None = typer.Option(None, "--config", "-c", metavar="FILE", help="YAML file of run keys"),
    overrides: list[str] | None = SetOption,
    tracking_uri: str | None = TrackingOption,
    rerun: bool = typer.Option(False, "--rerun", metavar="",
                               help="train again where the store holds a finished run of this "
                                    "configuration (by default its metrics are shown)"),
    no_progress: bool = typer.Option(False, "--no-progress", metavar="",
                                     help="no progress on stderr (a bar per phase at a "
                                          "terminal, else one line per epoch)"),
    threads: int | None = ThreadsOption,
) -> None:
    """Train and evaluate one method on one dataset; print its metrics.

    A configuration the store has already finished (the same run key) is not trained
    again: its metrics are printed, as a sweep skips it; --rerun trains it anew.
    Progress goes to stderr: a bar per phase (epoch, step, rate, time left) at a
    terminal, else one line per epoch.
    """
    from debiasbench.core.startup import import_run_modules, long_lived_imports

    if threads is not None:
        check_threads(threads)  # before torch and MLflow are imported: a refusal does not wait for them
    doing_work()
    with long_lived_imports():
        from debiasbench.contract.config import load_config_file, merge, parse_overrides, resolve_config
        from debiasbench.report.tables import metrics_table
        from debiasbench.run.display import console_progress
        from debiasbench.run.runner import run as run_one
        from debiasbench.track.store import Tracker

        flags = parse_overrides(f"{k}={v}" for k, v in
                                {"method": method, "dataset": dataset, "model": model, "seed": seed}.items()
                                if v is not None)
        raw = merge(load_config_file(config) if config else {}, flags, parse_overrides(overrides or []))
        resolved = resolve_config(raw)
        tracker = Tracker(tracking_uri, resolved.experiment)
        import_run_modules(tracker.uri)  # after the input is checked: a refusal does not wait for them
    use_threads(threads)
    with console_progress(err, enabled=not no_progress) as reporter:
        result = _run_reporting_failure(functools.partial(run_one, skip_finished=not rerun, progress=reporter or False),
                                        resolved, tracker)
    if not result.ran:
        err.print(f"a finished run of this configuration is in the store (run {result.run_id}, run key "
                  f"{result.run_key}): its metrics, not trained again; --rerun trains it anew.",
                  markup=False, highlight=False, soft_wrap=True)
    out().print(metrics_table(resolved, result.metrics))
    out().print(sentence(f"run {result.run_id} {'logged to' if result.ran else 'found in'} {tracker.shown_uri}"),
                highlight=False, markup=False, soft_wrap=True)


def _run_reporting_failure(run_one: Callable, config: Any, tracker: Any) -> Any:
    """A run that fails after it started is already FAILED in the store with its reason:
    say why in one line and exit 1 (the traceback only with DEBIASBENCH_DEBUG=1)."""
    from debiasbench.core.errors import RunFailed

    try:
        return run_one(config, tracker)
    except RunFailed as exc:
        reason = exc.reason
    except (UserError, KeyboardInterrupt):
        raise
    except Exception as exc:
        if os.environ.get("DEBIASBENCH_DEBUG"):
            raise
        reason = f"{type(exc).__name__}: {exc} (DEBIASBENCH_DEBUG=1 shows the traceback)"
    err.print(f"run failed: {sentence(one_line(redact_credentials(reason)))}", markup=False, highlight=False,
              soft_wrap=True)
    raise typer.Exit(1)


@app.command(cls=_Command)
@user_errors
def sweep(
    file: Path = typer.Argument(..., metavar="FILE", help="sweep YAML (see benchmarks/)"),
    tracking_uri: str | None = TrackingOption,
    dry_run: bool = typer.Option(False, "--dry-run", metavar="",
                                 help="print the jobs and which the store has finished; "
                                      "run nothing, write nothing"),
    launcher: str | None = typer.Option(None, "--launcher", metavar="NAME",
                                        help="local (default), ray, slurm, or a plugin's (entry-point group "
                                             "debiasbench.launchers); also the sweep file's launcher.name"),
    workers: int | None = typer.Option(None, "--workers", "-j", metavar="N",
                                       help="local: parallel worker processes [default: 1]"),
    cpus_per_run: float | None = typer.Option(None, "--cpus-per-run", metavar="CPUS",
                                              help="ray: CPUs per run (fractions allowed); "
                                                   "slurm: CPUs per job [default: 1]"),
    gpus_per_run: float | None = typer.Option(None, "--gpus-per-run", metavar="GPUS",
                                              help="ray: GPUs per run (0.25 = four runs "
                                                   "share one); slurm: GPUs per job [default: 0]"),
    memory: str | None = typer.Option(None, "--mem", metavar="SIZE", help="slurm: memory per job (16G)"),
    partition: str | None = typer.Option(None, "--partition", metavar="NAME", help="slurm: partition"),
    time_limit: str | None = typer.Option(None, "--time", metavar="LIMIT", help="slurm: time limit per job "
                                          "(minutes, HH:MM:SS, D-HH:MM:SS; default: the partition's)"),
    account: str | None = typer.Option(None, "--account", metavar="NAME", help="slurm: account charged"),
    max_running: int | None = typer.Option(None, "--max-running", metavar="N", help="slurm: jobs of the sweep "
                                           "running at once (the job array's %N)"),
    sbatch: list[str] | None = typer.Option(None, "--sbatch", metavar="OPTION", help="slurm: another sbatch "
                                            "option, e.g. --sbatch=--qos=high (repeatable)"),
    log_folder: str | None = typer.Option(None, "--log-folder", metavar="DIR", help="slurm: folder of the jobs' "
                                          "logs (default: .debiasbench/slurm/HASH/logs)"),
    no_progress: bool = typer.Option(False, "--no-progress", metavar="",
                                     help="only one line per ended job (no bars per "
                                          "running job at a terminal, no epoch lines elsewhere)"),
    threads: int | None = typer.Option(None, "--threads", metavar="N",
                                       help="torch threads per job (default: the cores this process may "
                                            "use, divided among --workers; ray, slurm: --cpus-per-run)"),
) -> None:
    """Run every job of a sweep file that has not finished yet; print one table per dataset.

    Started again after a crash or a kill, it runs only what is missing.
    """
    if threads is not None:
        check_threads(threads)  # before the imports below: a refusal does not wait for them
    from debiasbench.sweep.launchers import make_launcher
    from debiasbench.report.comparison import print_comparison
    from debiasbench.report.tables import jobs_table
    from debiasbench.sweep.driver import load_launcher_section, load_sweep, run_sweep
    from debiasbench.sweep.monitor import sweep_view

    skipped: list[str] = []
    jobs = load_sweep(file, skipped)
    section = load_launcher_section(file)  # the command line's options win over the file's
    given = {"workers": workers, "cpus_per_run": cpus_per_run, "gpus_per_run": gpus_per_run, "memory": memory,
             "partition": partition, "time": time_limit, "account": account, "max_running": max_running,
             "sbatch": sbatch or None, "log_folder": log_folder}
    settings = {**{k: v for k, v in section.items() if k != "name"},
                **{k: v for k, v in given.items() if v is not None}}
    start = make_launcher(launcher or section.get("name", "local"), **settings)
    for reason in skipped:
        err.print(f"not a job: {sentence(reason)}", markup=False, highlight=False, soft_wrap=True)
    if dry_run:
        from debiasbench.track.store import finished_keys

        out().print(jobs_table(jobs, finished_keys(tracking_uri, {c.experiment for c in jobs})))
        return
    from debiasbench.sweep.preflight import check_jobs

    # what run refuses before it opens the store, for every job before the store is created
    check_jobs(jobs, tracking_uri, on_this_machine=(launcher or section.get("name", "local")) == "local")
    doing_work()
    tags = {"debiasbench.sweep_file": str(file), "debiasbench.command": f"debiasbench sweep {file}"}
    with sweep_view(err, not no_progress) as view:
        results = run_sweep(jobs, tracking_uri, log=_log_line, launcher=start, tags=tags, view=view,
                            threads=None if threads is None else check_threads(threads))
    print_comparison(out(), results)
    if any(r.status == "FAILED" for r in results):
        raise typer.Exit(1)


def _log_line(line: str) -> None:
    """A sweep's line on stderr (what it skips, each job that ends): one sentence on one
    line however wide, credentials of any URI in it shown as ``***``."""
    err.print(sentence(redact_credentials(line)), markup=False, highlight=False, soft_wrap=True)


@app.command(cls=_Command)
@user_errors
def leaderboard(
    tracking_uri: str | None = TrackingOption,
    out_dir: Path | None = typer.Option(None, "--out", metavar="DIR", help="folder of the files written (default: "
                                           "NAME-leaderboard here, NAME the store's: mlflow-leaderboard for "
                                           "mlflow.db; never the published leaderboard/)"),
    rules: list[str] | None = typer.Option(None, "--rule", metavar="RULE",
                                           help="selection rules shown (repeatable): val_acc, "
                                                "bias_annotated, oracle (default: all three)"),
    select_by: str | None = typer.Option(None, "--select", metavar="METRIC",
                                         help="also select by this one metric, as a rule "
                                              "of its own: val_worst_group_acc, ..."),
    oracle: bool = typer.Option(False, "--oracle", metavar="",
                                help="allow --select on a test metric (labelled ORACLE)"),
    experiments: list[str] | None = typer.Option(None, "--experiment", metavar="NAME",
                                                 help="only these experiments (repeatable)"),
    notes: Path | None = typer.Option(None, "--notes", metavar="FILE",
                                      help="a text file of paragraphs shown under the tables: "
                                           "what the ranking shows and what it does not"),
    force: bool = typer.Option(False, "--force", metavar="",
                               help="replace a leaderboard in --out built from another store"),
) -> None:
    """Select hparams under each rule, average over seeds, rank, and write results.csv,
    summary.csv, README.md, index.html and source.json (the store, experiments and sweep
    files it was built from).

    Without --out the files go to NAME-leaderboard in the working directory, NAME being the
    store's file or host name (mlflow-leaderboard for mlflow.db), never to the published
    leaderboard/. A leaderboard already in --out that was built from another store is not
    replaced unless --force is given.
    """
    from debiasbench.report.leaderboard import (NOT_INSTALLED_TEXT, add_verdict, build_info, finished_once,
                                                mark_installed, not_installed, read_notes, read_store,
                                                summary_metrics)
    from debiasbench.report.leaderboard import public_text
    from debiasbench.report.publish import (check_output_folder, check_same_source, default_out,
                                            leaderboard_source, write_leaderboard, written_interrupt)
    from debiasbench.track.store import absolute_tracking_uri
    from debiasbench.report.tables import leaderboard_table
    from debiasbench.report.selection import RULES, check_selection_metric, metric_rule, select_rules

    if out_dir is None:
        out_dir = default_out(absolute_tracking_uri(tracking_uri))
    check_output_folder(out_dir)
    notes_text = read_notes(notes)  # before the store is read: a bad --notes file fails at once
    unknown = [r for r in rules or () if r not in RULES]
    if unknown:
        raise UserError(f"--rule {unknown[0]!r} is not a rule; rules: {', '.join(RULES)}")
    runs, uri, read_from = read_store(tracking_uri, experiments)
    if runs.empty or not (runs["status"] == "FINISHED").any():
        raise UserError(f"no finished debiasbench runs in {uri!r}: run a sweep first")
    source = leaderboard_source(runs, uri, read_from)
    check_same_source(out_dir, runs, source, force)
    finished = finished_once(runs)
    chosen = [RULES[r] for r in dict.fromkeys(rules or RULES)]
    if select_by is not None:
        check_selection_metric(select_by, oracle, {c.removeprefix("metrics.") for c in finished.columns
                                                   if c.startswith("metrics.") and finished[c].notna().any()})
        extra = metric_rule(select_by, oracle)
        if extra.name not in {r.name for r in chosen}:
            chosen.append(extra)
    metrics = summary_metrics(finished)
    summary = mark_installed(add_verdict(select_rules(finished, chosen, metrics)))
    if summary.empty:
        raise UserError(f"no rule ({', '.join(r.name for r in chosen)}) selected a result: no finished run "
                        "logged a metric they select on")
    command = " ".join(["debiasbench leaderboard", *(f"--rule {r}" for r in rules or ()),
                        *([f"--select {select_by}"] if select_by else []), *(["--oracle"] if oracle else []),
                        *([f"--notes {notes}"] if notes else [])])
    info = build_info(finished, chosen, uri, command)
    info["notes"] = notes_text
    written = write_leaderboard(runs, summary, info, metrics, out_dir, source)
    doing_work()
    try:
        out().print(leaderboard_table(summary))
        if not_installed(summary):
            out().print(f"Not installed: {', '.join(not_installed(summary))}. {NOT_INSTALLED_TEXT}", highlight=False,
                        markup=False, soft_wrap=True)
        if info["non_finite"]:
            out().print(public_text(info["non_finite"]), highlight=False, markup=False, soft_wrap=True)
        out().print(sentence(f"{len(runs)} runs, {len(summary)} selected results under {len(chosen)} rules; "
                             f"wrote {', '.join(str(p) for p in written)}"), highlight=False, markup=False,
                    soft_wrap=True)
    except KeyboardInterrupt:
        raise written_interrupt(out_dir) from None


@app.command(cls=_Command)
@user_errors
def ui(
    tracking_uri: str | None = TrackingOption,
    experiment: str = typer.Option("debiasbench", "--experiment", metavar="NAME", help="experiment to open"),
    host: str = typer.Option("127.0.0.1", "--host", metavar="HOST", help="address the UI listens on"),
    port: int = typer.Option(5000, "--port", metavar="PORT", help="port the UI listens on"),
) -> None:
    """Open the store in MLflow's UI on the experiment's training runs.

    Prints the address to open (MLflow 3's UI otherwise opens an experiment on its GenAI
    traces) and serves the store with `mlflow ui` until Ctrl-C; for a tracking server, only
    prints the address on that server.
    """
    from debiasbench.track.store import absolute_tracking_uri
    from debiasbench.track.viewer import experiment_address, experiment_id_of, serve

    uri = absolute_tracking_uri(tracking_uri)
    remote = uri.startswith(("http://", "https://"))
    found = experiment_id_of(uri, experiment)
    address = experiment_address(uri if remote else f"http://{host}:{port}", found)
    missing = "" if found is not None else f" (the store has no experiment {experiment!r} yet)"
    out().print(f"open {address} in a browser{missing}.", highlight=False, markup=False, soft_wrap=True)
    if not remote:
        doing_work()
        raise typer.Exit(serve(uri, host, port))


@app.command(cls=_Command)
@user_errors
def methods() -> None:
    """List methods: requirements and hyper-parameters with defaults."""
    from debiasbench.core.registry import METHODS
    from debiasbench.report.tables import plugin_listing

    _print_listing(plugin_listing("method", METHODS, lambda cls: cls.hparams, lambda cls: cls.requires))


@app.command(cls=_Command)
@user_errors
def datasets() -> None:
    """List datasets: what they provide and their parameters with defaults."""
    from debiasbench.core.registry import DATASETS
    from debiasbench.report.tables import plugin_listing

    _print_listing(plugin_listing("dataset", DATASETS, lambda cls: cls.params, lambda cls: cls.provides))


@app.command(cls=_Command)
@user_errors
def models() -> None:
    """List architectures (--model): each registered builder and what it builds."""
    from debiasbench.models.architectures import TIMM_PREFIX
    from debiasbench.core.registry import MODELS

    lines = [f"{name}: {_summary(builder)}" for name, builder in MODELS.items()]
    lines += [f"{name}: failed to load: {reason}" for name, reason in MODELS.broken().items()]
    lines.append(f"{TIMM_PREFIX}<name>: any timm architecture, e.g. {TIMM_PREFIX}resnet50 (see timm.list_models())")
    _print_listing("\n".join(lines))


def _summary(obj: Any) -> str:
    """The first paragraph of ``obj``'s docstring on one line, or '-' without one: what a
    builder says it builds, read without building a network."""
    paragraph = (getattr(obj, "__doc__", None) or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split()) or "-"


def _print_listing(text: str) -> None:
    """A listing on stdout (``methods``, ``datasets``, ``models``), the whole of what such a
    command makes: one that could not be written (a full disk) exits 1 (``main``)."""
    print(text)


def main(argv: list[str] | None = None) -> None:
    """The console script. A usage error of the command line itself (``--workers abc``,
    an unknown option) is one line and exit 2, in the format of every other error,
    instead of typer's framed box; no arguments or ``--help`` print the help.

    Standard output that cannot be written (``> /dev/full``, a closed pipe) never gives a
    traceback or changes the exit code of finished work (``debiasbench.core.output``): a
    run that finished exits 0 with one line on stderr saying the output is incomplete
    (nothing for a reader that went away). A command that only prints (``--help``,
    ``--version``, the listings, ``sweep --dry-run``, ``ui`` for a tracking server) exits 1
    after that line, as its output was all it had to make (``_Work``)."""
    from debiasbench.core.output import broken_pipe, failure_text, guarded_streams
    from debiasbench.core.startup import command_of_this_process

    _Work.done = False
    # argv None: this process's own command line, so the process ends with the command
    with guarded_streams() as (stdout, _), command_of_this_process(argv is None):
        code = _main(argv)
        stdout.flush()
        if stdout.error is not None and not broken_pipe(stdout.error):
            print_error(failure_text(stdout.error))
            if code == 0 and not _Work.done:
                code = 1
    if argv is None:
        _ignore_ctrl_c_once_done()
    sys.exit(code)


def _ignore_ctrl_c_once_done() -> None:
    """Ctrl-C is ignored once the command has decided its exit code: what is left is the
    interpreter's shutdown (a second or so with torch loaded), where a KeyboardInterrupt
    printed a traceback from torch's teardown or ended the process by SIGINT (exit 130),
    although the command's work was complete. SIGTERM still ends it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _main(argv: list[str] | None) -> int:
    """The command's exit code (``main`` without its guarded streams)."""
    try:
        code = app(args=argv, prog_name="debiasbench", standalone_mode=False)
    except typer.TyperException as exc:  # typer's (vendored click's) usage errors
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
        else:
            command = ctx.command_path if ctx is not None else "debiasbench"
            message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
            print_error(f"{message.rstrip('.')} (see '{command} --help')")
        code = getattr(exc, "exit_code", 2)
    except typer.Abort:  # Ctrl-C before a command began (its own line is user_errors')
        err.print(sentence("interrupted"), markup=False)
        code = 130
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    main()
