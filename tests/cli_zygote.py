"""A warm `python -m spark_mail`: forks a real process for each command, imports paid once.

Starting the interpreter and importing typer, rich, jinja2, mjml, premailer and httpx costs
about half a second of CPU per command, and the suite runs a few hundred commands. This
script is started once per test worker (see `run_cli` in conftest.py). It imports all of
spark_mail, its CLI included (see warm_imports: nothing it imports reads the environment
or the terminal for the command), then reads one JSON request per line on stdin and forks a
child for each: the child takes the request's folder, environment, arguments and output
files and runs `main()` as `python -m spark_mail` would, so every command is still its own
process with its own exit code and a real pid the tests can signal (SIGKILL, SIGINT) while it runs.
This process has one thread, so forking it is safe.

Started as `cli_zygote.py esp_server`, it is the same for the fake ESP of
tests/esp_server.py instead (`python tests/esp_server.py ARGS`): that process imports
esp_server, jsonschema and the vendors' schemas; each child is one fresh server.

Children run side by side (a test may start two overlapping runs, or a server and the
commands that talk to it). Answers on stdout, one JSON line each, tagged with the
request's "id": {"id": I, "pid": N} when its child started, then {"id": I, "code": N}
when it ended (a negative N: killed by that signal, as subprocess reports it). A request
may also ask for a session of the child's own ("session"), a file for stdin ("stdin"; a
FIFO makes it a pipe), and Python code the child runs before the command ("prelude", with
its "params"), as a script that wraps the CLI would.
"""

from __future__ import annotations

import gc
import glob
import importlib
import importlib.util
import json
import os
import pkgutil
import select
import signal
import sys
import time


def warm_imports(package: str = "spark_mail") -> None:
    """Import `package` and everything under it, the CLI included, and the folders of
    modules without an __init__.py (namespace packages: spark_mail.drafting), which
    pkgutil does not list. Nothing spark_mail, typer or click imports reads the
    environment or the terminal for the command: the consoles are made on first use
    (cli/output.py's DeferredConsole), typer.rich_utils (which reads TERMINAL_WIDTH and
    others when imported) is never imported by a CLI with rich_markup_mode=None, and rich
    reads COLUMNS, NO_COLOR, TERM, ... when a Console is made, in the child."""
    module = importlib.import_module(package)
    for found in pkgutil.iter_modules(module.__path__, f"{package}."):
        if found.name == "spark_mail.__main__":  # runs the CLI
            continue
        if found.ispkg:
            warm_imports(found.name)
        else:
            importlib.import_module(found.name)
    for folder in module.__path__:
        for entry in os.scandir(folder):
            inner = os.path.join(entry.path, "__init__.py")
            if entry.is_dir() and not os.path.exists(inner) and glob.glob(f"{entry.path}/*.py"):
                warm_imports(f"{package}.{entry.name}")
    import rich.console  # noqa: F401 (the consoles import it when they are made)


# What spark_mail's commands import only when they need it (a cold start stays lean): the
# children of a warm process would each import it again (build, check and send: ~60-90 ms
# of CPU each). Modules only, no state: each command still reads its own files and caches.
LAZY_IMPORTS = (
    "lxml.etree", "lxml.html", "cssselect", "mjml", "zoneinfo", "gzip", "sysconfig",
    "encodings.utf_8_sig", "typer._click.decorators", "feedgen.feed", "dateutil.parser",
    "typer._click._textwrap", "anyio._backends._asyncio",
)  # fmt: skip


def warm_lazy_imports() -> None:
    for name in LAZY_IMPORTS:
        importlib.import_module(name)


def warm_tls_contexts() -> None:
    """spark_mail.tls's two contexts, which a process builds once (a CA store each, 25-50 ms
    of CPU) and every command that sends or checks links would build again. They are kept
    under SSL_CERT_FILE and SSL_CERT_DIR as this process has them: a child whose request
    names others builds its own, as a fresh process would."""
    from spark_mail.tls import https_context, system_context

    https_context()
    system_context()


def redirect(request: dict) -> None:
    """In a forked child: the request's folder, environment and output files; stdin empty."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    time.tzset()
    if request.get("session"):
        os.setsid()
    stdin = os.open(request.get("stdin") or os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    if request["stderr"] == request["stdout"]:  # stderr=subprocess.STDOUT
        stderr = os.dup(stdout)
    else:
        stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    for fd, target in ((stdin, 0), (stdout, 1), (stderr, 2)):
        os.dup2(fd, target)
        os.close(fd)


def run_child(request: dict) -> None:
    """In the forked child: become `python -m spark_mail ARGS` and never return."""
    code = 1
    try:
        redirect(request)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 (not the request pipe's buffer)
        sys.path[0] = os.getcwd()  # as `python -m` puts the current folder first
        # click names the program from __main__ and argv[0], as for `python -m spark_mail`;
        # multiprocessing's spawned children (serve's uvicorn workers) import __main__ by
        # its spec or file: spark_mail.__main__'s, which they skip, as for `python -m`
        main_module = sys.modules["__main__"]
        main_module.__package__ = "spark_mail"
        main_module.__spec__ = importlib.util.find_spec("spark_mail.__main__")
        main_module.__file__ = main_module.__spec__.origin
        sys.argv = [os.path.join(os.path.dirname(sys.modules["spark_mail"].__file__), "__main__.py"),
                    *request["args"]]  # fmt: skip
        try:
            if request.get("prelude"):  # a test's code to run first (test_attack_init.py)
                exec(request["prelude"], {"__name__": "__prelude__", "params": request["params"]})
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
        except KeyboardInterrupt:
            # as CPython ends on an uncaught Ctrl-C: the traceback, then killed by SIGINT
            sys.excepthook(*sys.exc_info())
            sys.stderr.flush()
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
        except BaseException:
            sys.excepthook(*sys.exc_info())
            code = 1
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code)


def run_esp(request: dict) -> None:
    """In the forked child: become `python tests/esp_server.py ARGS` and never return."""
    code = 1
    try:
        redirect(request)
        sys.argv = [sys.modules["esp_server"].__file__, *request["args"]]
        sys.modules["esp_server"].main(request["args"])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def warm_esp() -> None:
    """The fake ESP's imports and schemas, with their checks; one validation per schema
    loads what jsonschema loads on first use (every server of this process validates with
    the same schemas)."""
    import esp_server

    for name in esp_server._load_schemas():
        list(esp_server.schema_checks(name)[1].iter_errors({}))


def serve(program: str = "spark_mail") -> None:
    if program == "esp_server":
        warm_esp()
        child = run_esp
    else:
        warm_imports()
        warm_lazy_imports()
        warm_tls_contexts()
        child = run_child
    # What the children inherit stays out of their garbage collector's sight (and their
    # pages shared with this process: a collection would write to every object it visits).
    gc.freeze()
    running: dict[int, tuple[int, int]] = {}  # pidfd -> (request id, pid)
    pending = b""
    while True:
        ready = select.select([0, *running], [], [])[0]
        for fd in ready:
            if fd == 0:
                continue
            request_id, pid = running.pop(fd)
            os.close(fd)
            _, status = os.waitpid(pid, 0)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            print(json.dumps({"id": request_id, "code": code}), flush=True)
        if 0 not in ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                for fd in running:
                    os.close(fd)
                child(request)
            running[os.pidfd_open(pid)] = (request["id"], pid)
            print(json.dumps({"id": request["id"], "pid": pid}), flush=True)
    # The worker closed the pipe: its session is over. A child still running (a test that
    # failed before stopping its server) ends now; no interpreter shutdown (it took ~0.5 s
    # of CPU, with the worker and the run waiting for it).
    for fd, (_, pid) in running.items():
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        os.waitpid(pid, 0)
    os._exit(0)


if __name__ == "__main__":
    serve(*sys.argv[1:])
