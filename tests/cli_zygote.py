"""A warm `python -m spark_mail`: forks a real process for each command, imports paid once.

Starting the interpreter and importing typer, rich, jinja2, mjml, premailer and httpx costs
about half a second of CPU per command, and the suite runs a few hundred commands. This
script is started once per test worker (see `run_cli` in conftest.py). It imports all of
spark_mail except the CLI (whose consoles read the environment when they are made), then
reads one JSON request per line on stdin and forks a child for each: the child takes the
request's folder, environment, arguments and output files, imports the CLI and runs
`main()` as `python -m spark_mail` would, so every command is still its own process with
its own exit code. This process has one thread, so forking it is safe.

Answers on stdout, one JSON line each: {"pid": N} when the child started, then
{"code": N} when it ended (a negative N: killed by that signal, as subprocess reports it).
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import pkgutil
import sys
import time


def warm_imports(package: str = "spark_mail") -> None:
    """Import `package` and everything under it but the CLI (walk_packages would import
    spark_mail.cli to look inside it)."""
    module = importlib.import_module(package)
    for found in pkgutil.iter_modules(module.__path__, f"{package}."):
        if found.name in ("spark_mail.cli", "spark_mail.__main__"):
            continue
        if found.ispkg:
            warm_imports(found.name)
        else:
            importlib.import_module(found.name)
    import rich.console  # noqa: F401
    import typer  # noqa: F401


# What spark_mail's commands import only when they need it (a cold start stays lean): the
# children of a warm process would each import it again (build, check and send: ~60-90 ms
# of CPU each). Modules only, no state: each command still reads its own files and caches.
LAZY_IMPORTS = (
    "lxml.etree", "lxml.html", "cssselect", "mjml", "zoneinfo", "gzip", "sysconfig",
    "encodings.utf_8_sig", "typer._click.decorators", "feedgen.feed", "dateutil.parser",
)  # fmt: skip


def warm_lazy_imports() -> None:
    for name in LAZY_IMPORTS:
        importlib.import_module(name)


def run_child(request: dict) -> None:
    """In the forked child: become `python -m spark_mail ARGS` and never return."""
    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        time.tzset()
        stdin = os.open(os.devnull, os.O_RDONLY)
        stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (not the request pipe's buffer)
        sys.path[0] = os.getcwd()  # as `python -m` puts the current folder first
        # click names the program from __main__ and argv[0], as for `python -m spark_mail`
        sys.modules["__main__"].__package__ = "spark_mail"
        sys.argv = [os.path.join(os.path.dirname(sys.modules["spark_mail"].__file__), "__main__.py"),
                    *request["args"]]  # fmt: skip
        try:
            from spark_mail.cli import main

            main()
            code = 0
        except SystemExit as exc:
            if exc.code is None:
                code = 0
            elif isinstance(exc.code, int):
                code = exc.code
            else:
                print(exc.code, file=sys.stderr)
                code = 1
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def serve() -> None:
    warm_imports()
    warm_lazy_imports()
    # What the children inherit stays out of their garbage collector's sight (and their
    # pages shared with this process: a collection would write to every object it visits).
    gc.freeze()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            run_child(request)
        print(json.dumps({"pid": pid}), flush=True)
        _, status = os.waitpid(pid, 0)
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        print(json.dumps({"code": code}), flush=True)
    # The worker closed the pipe (its session is over) and every child has been waited
    # for: nothing is left to clean up, so no interpreter shutdown (it took ~0.5 s of CPU,
    # with the worker and the run waiting for it).
    os._exit(0)


if __name__ == "__main__":
    serve()
