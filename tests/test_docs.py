"""The docs cannot drift: every command in README.md and docs/*.md is checked against the code.

What counts as a command:
- every line of a fenced ```bash block (a trailing backslash joins the next line; a `# comment` and a
  trailing `&` are dropped; `&&`, `||`, `;`, `|` and `&` separate commands; a leading `VAR=value` or
  `time` is skipped; each `$(...)` is a command of its own);
- every inline code span whose first word is a command word: make, cat-serve, cat-eval, cat-train,
  cat-client, python, .venv/bin/python, bash, curl (so `make lab-search` in prose is checked too).
A `<placeholder>` in a command is a dummy word; `$(...)` inside one is checked, then replaced by one.

How each is checked (nothing long runs; the whole file takes seconds):
- make: `make -n TARGET... VAR=value...` must succeed: the target exists and the variables parse.
- cat-serve, cat-eval, cat-train, cat-client (the entry points of pyproject.toml's [project.scripts]) and
  `python -m MODULE`: `--help` must exit 0 (one subprocess per distinct command and subcommand). Where the
  parser has subcommands, the docs' first positional word must be one; every `--option` the docs use must
  appear in that (sub)command's --help; an option value that starts with `{` must be JSON.
  Modules without a command line (NO_CLI: running them does work) are only found, not run.
- `python FILE.py`: the file exists and `FILE.py --help` exits 0. `bash FILE`: the file exists and `bash -n`
  passes (never run: they are long jobs).
- curl: the URL's path is a route of the app (`create_app`), and a `-d` body is JSON. Not run: no server.
- ```python blocks must compile (the README's SDK example also runs against a real server, marked vllm);
  ```json blocks must parse. Other fences (```text or bare) are program output, not checked.
- docs/service.md: every `--flag` in its code spans must be a cat-serve flag (FLAG_DOCS).
- Paths: every word of a command or code span that starts at a tracked top-level entry (`cat_serve/`,
  `results/lab/...`, `Makefile`; not `runs/`, which is output) must exist; `file.py: name` must define name,
  `file.py::test` must define test; a `/v1/...`, `/health` or `/metrics` span must be a route; a relative
  Markdown link must point at a file that exists.
- A bash line whose first word is none of the above must be an EXTERNAL tool (named, not checked).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _console_scripts() -> dict[str, str]:
    """pyproject.toml's [project.scripts] (name -> "module:function"); tomllib is 3.11+, the project 3.10+."""
    section = re.search(r"^\[project\.scripts\]\n(.*?)(?=^\[|\Z)", (REPO / "pyproject.toml").read_text(), re.M | re.S)
    return dict(re.findall(r'^([\w-]+)\s*=\s*"([\w.]+:\w+)"', section.group(1), re.M))


SCRIPTS = _console_scripts()
PYTHONS = {"python", "python3", ".venv/bin/python"}
COMMAND_WORDS = {"make", "bash", "curl", *SCRIPTS, *PYTHONS}
EXTERNAL = {"docker", "podman", "ray", "debootstrap", "chroot", "pip", "accelerate", "trl", "git", "cd",
            "export", "nvidia-smi", "ls", "cat"}
NO_CLI = {"cat_serve.models": "prints the embedded checkpoint's path, converting the model first if needed"}
SEPARATORS = {"&&", "||", ";", "|", "&"}
DUMMY = "PLACEHOLDER"


@dataclass(frozen=True)
class Command:
    doc: str  # README.md:12
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.doc}: {shlex.join(self.words)}"


# ---- reading the docs


def _fences(text: str):
    """(language, first line number, lines) of each fenced block, and the text with fences blanked out."""
    blocks, outside, block = [], [], None
    for n, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w-]*)\s*$", line)
        if block is None and fence:
            block = (fence.group(1).lower(), n + 1, [])
            outside.append("")
        elif block is not None and re.match(r"^\s*```\s*$", line):
            blocks.append(block)
            block = None
            outside.append("")
        elif block is not None:
            block[2].append(line)
            outside.append("")
        else:
            outside.append(line)
    assert block is None, "an unclosed ``` fence"
    return blocks, "\n".join(outside)


def _spans(prose: str):
    """(line number, text) of each inline code span (a span may wrap onto the next line)."""
    for m in re.finditer(r"`([^`]+)`", prose):
        if "\n\n" not in m.group(1) and m.group(1).strip():
            yield prose.count("\n", 0, m.start()) + 1, " ".join(m.group(1).split())


def split_commands(line: str) -> list[tuple[str, ...]]:
    """The commands of one shell line, `$(...)` substitutions first, as word tuples."""
    inner = re.findall(r"\$\(([^()]*)\)", line)
    line = re.sub(r"\$\(([^()]*)\)", DUMMY, line)
    line = re.sub(r"<[^<>\n]*>", DUMMY, line)
    lex = shlex.shlex(line, posix=True, punctuation_chars=True)
    lex.whitespace_split = True
    commands, words = [], []
    for token in [*lex, ";"]:
        if token in SEPARATORS:
            while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) or words[0] == "time"):
                words.pop(0)
            if words:
                commands.append(tuple(words))
            words = []
        else:
            words.append(token)
    return [c for i in inner for c in split_commands(i)] + commands


def _bash_lines(lines: list[str]):
    """Logical lines of a bash block: continuations joined, blank lines skipped; (offset, text)."""
    start, buf = 0, ""
    for i, line in enumerate(lines):
        if not buf:
            start = i
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            yield start, buf
        buf = ""


def is_command(words: tuple[str, ...]) -> bool:
    """A command word with what it needs: `make` and the console scripts alone are commands (`make` dry-runs
    its default target, a script shows its --help); `python -m` needs a module, bash, curl and python an argument."""
    if words[0] in PYTHONS and words[1:2] == ("-m",):
        return len(words) >= 3
    return words[0] in COMMAND_WORDS and (len(words) >= 2 or words[0] == "make" or words[0] in SCRIPTS)


def read_docs():
    commands, python_blocks, json_blocks, spans, links, unknown = [], [], [], [], [], []
    for path in DOCS:
        name = path.relative_to(REPO).as_posix()
        blocks, prose = _fences(path.read_text(encoding="utf-8"))
        for lang, first, lines in blocks:
            where = f"{name}:{first}"
            if lang in ("bash", "sh", "shell"):
                for offset, line in _bash_lines(lines):
                    for words in split_commands(line):
                        if is_command(words):
                            commands.append(Command(f"{name}:{first + offset}", words))
                        elif words[0] not in EXTERNAL:
                            unknown.append(f"{name}:{first + offset}: {shlex.join(words)}")
            elif lang == "python":
                python_blocks.append((where, "\n".join(lines)))
            elif lang == "json":
                json_blocks.append((where, "\n".join(lines)))
        for n, span in _spans(prose):
            spans.append((f"{name}:{n}", span))
            if span.split()[0] in COMMAND_WORDS:
                commands.extend(Command(f"{name}:{n}", w) for w in split_commands(span) if is_command(w))
        for m in re.finditer(r"\]\(([^)\s]+)\)", prose):
            target = m.group(1).split("#")[0]
            if target and not re.match(r"^[a-z]+:", target):
                links.append((f"{name}:{prose.count(chr(10), 0, m.start()) + 1}", path.parent / target))
    return commands, python_blocks, json_blocks, spans, links, unknown


COMMANDS, PYTHON_BLOCKS, JSON_BLOCKS, SPANS, LINKS, UNKNOWN = read_docs()


# ---- checking one command


def _run(argv: list[str], timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)


# A program whose --help the checks read: ("script", "cat-eval"), ("module", "lab.recipe") or ("file", "scripts/x.py").
Program = tuple[str, str]

# Runs one program's `main` once per argv in ONE interpreter (imports paid once), printing [[exit code, stdout]...].
BATCH = """
import contextlib, importlib, io, json, runpy, sys
kind, target, name, argvs = json.load(sys.stdin)
results = []
for argv in argvs:
    out, code = io.StringIO(), 0
    sys.argv = [name, *argv]
    try:
        with contextlib.redirect_stdout(out):
            if kind == "script":
                module, func = target.split(":")
                code = getattr(importlib.import_module(module), func)()
            else:
                runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    except Exception as e:
        code = repr(e)
    results.append([code, out.getvalue()])
sys.__stdout__.write(json.dumps(results))
"""


def cli_of(words: tuple[str, ...]) -> tuple[Program, tuple[str, ...]] | None:
    """The program a command runs and its arguments; None for make, bash, curl and NO_CLI modules."""
    if words[0] in SCRIPTS:
        return ("script", words[0]), words[1:]
    if words[0] in PYTHONS and words[1] == "-m":
        module = words[2]
        scripts = [name for name, target in SCRIPTS.items() if target.split(":")[0] in (module, module + ".__main__")]
        if scripts:  # `python -m eval.cli` is `cat-eval`: one program, one interpreter
            return ("script", scripts[0]), words[3:]
        return None if module in NO_CLI else (("module", module), words[3:])
    if words[0] in PYTHONS:
        return ("file", words[1]), words[2:]
    return None


def program_name(program: Program) -> str:
    kind, target = program
    return {"script": target, "module": f"python -m {target}", "file": f"python {target}"}[kind]


class Helps:
    """`--help` of each (program, subcommand) the docs use, run once per test session: one interpreter per
    program runs the top-level --help and every subcommand's (files, which runpy cannot import cleanly, one
    subprocess per --help)."""

    def __init__(self, commands: list[Command]):
        self._cache: dict[tuple[Program, tuple[str, ...]], tuple[object, str]] = {}
        self._plan: dict[Program, set[tuple[str, ...]]] = {}
        for command in commands:
            cli = cli_of(command.words)
            if cli:
                program, args = cli
                positional = [a for a in args if not a.startswith("-")]
                subs = self._plan.setdefault(program, {()})
                if positional and re.match(r"^[a-z][a-z0-9-]*$", positional[0]):
                    subs.add((positional[0],))  # a subcommand, if the parser has subcommands

    def _fetch(self, program: Program, subs: list[tuple[str, ...]]) -> None:
        kind, target = program
        if kind == "file":
            for sub in subs:
                r = _run([sys.executable, target, *sub, "--help"])
                self._cache[program, sub] = (r.returncode, r.stdout + r.stderr[-2000:])
            return
        spec = [kind, SCRIPTS[target] if kind == "script" else target, target, [[*sub, "--help"] for sub in subs]]
        r = subprocess.run([sys.executable, "-c", BATCH], cwd=REPO, input=json.dumps(spec), capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, f"{program_name(program)}: {r.stderr[-3000:]}"
        for sub, (code, out) in zip(subs, json.loads(r.stdout)):
            self._cache[program, sub] = (code, out)

    def get(self, program: Program, sub: tuple[str, ...] = ()) -> str:
        if (program, sub) not in self._cache:
            self._fetch(program, sorted(self._plan.get(program, set()) | {(), sub}))
        code, out = self._cache[program, sub]
        assert code == 0 and "usage:" in out, \
            f"{program_name(program)} {shlex.join(sub)} --help failed ({code}):\n{out[-2000:]}"
        return out


@pytest.fixture(scope="session")
def helps():
    return Helps(COMMANDS)


def check_cli(program: Program, args: tuple[str, ...], helps: Helps) -> None:
    """`args` as the docs give them must fit the program's parser: subcommand, options, JSON values."""
    if program[0] == "file":
        assert (REPO / program[1]).is_file(), f"{program[1]} does not exist"
    top = helps.get(program)
    subs = re.search(r"positional arguments:\n\s+\{([^}]+)\}", top)
    sub: tuple[str, ...] = ()
    if subs:
        positional = [a for a in args if not a.startswith("-")]
        if positional:  # a bare `cat-eval` names the program; with words, the first must be a subcommand
            assert positional[0] in subs.group(1).split(","), f"{positional[0]!r} is not one of {{{subs.group(1)}}}"
            sub = (positional[0],)
    text = top + (helps.get(program, sub) if sub else "")
    for i, arg in enumerate(args):
        if not arg.startswith("--"):
            continue
        option, _, value = arg.partition("=")
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), \
            f"{option} is not an option of {' '.join((program_name(program), *sub))} (its --help does not list it)"
        value = value or (args[i + 1] if i + 1 < len(args) else "")
        if value.startswith("{"):
            json.loads(value)


def check_make(words: tuple[str, ...]) -> None:
    # under `make test` the parent's flags and command-line variables would reach this make through MAKEFLAGS
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    r = _run(["make", "-n", *words[1:]], env=env)
    assert r.returncode == 0, f"make -n {shlex.join(words[1:])}: {r.stderr[-2000:]}"


def check_bash(words: tuple[str, ...]) -> None:
    script = REPO / words[1]
    assert script.is_file(), f"{words[1]} does not exist"
    r = _run(["bash", "-n", str(script)])
    assert r.returncode == 0, r.stderr


@pytest.fixture(scope="session")
def routes() -> set[str]:
    from cat_serve.api.app import create_app
    from cat_serve.config import ServerConfig
    from tests.fakes import FakeEngine

    app = create_app(ServerConfig(), engine=FakeEngine())
    return {route.path for route in app.routes}


def check_curl(words: tuple[str, ...], routes: set[str]) -> None:
    urls = [w for w in words if w.startswith(("http://", "https://"))]
    assert len(urls) == 1, "a curl line names one URL"
    path = urlparse(urls[0]).path
    assert path in routes, f"{path} is not a route of the app ({sorted(routes)})"
    for flag, value in zip(words, words[1:]):
        if flag in ("-d", "--data", "--data-raw"):
            json.loads(value)


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_command(command: Command, helps, routes):
    words = command.words
    cli = cli_of(words) if words[0] in SCRIPTS or words[0] in PYTHONS else None
    if words[0] == "make":
        check_make(words)
    elif cli:
        check_cli(*cli, helps)
    elif words[0] in PYTHONS:  # a NO_CLI module: running it does work, so only find it
        assert importlib.util.find_spec(words[2]) is not None, f"no module {words[2]}"
    elif words[0] == "bash":
        check_bash(words)
    elif words[0] == "curl":
        check_curl(words, routes)
    for word in words:
        check_path(word.partition("=")[2] if re.match(r"^[A-Z_]+=", word) else word)


# ---- paths, links, blocks


def _top_level() -> set[str]:
    r = _run(["git", "ls-files"])
    names = r.stdout.split() if r.returncode == 0 and r.stdout else [p.name for p in REPO.iterdir()]
    return {n.split("/")[0] for n in names} - {".git", ".venv", "runs"}


TOP = _top_level()


def is_repo_path(word: str) -> bool:
    if re.search(r"[$<>…{}]|\.\.\.", word) or not re.match(r"^[\w.][\w.*/-]*$", word):
        return False
    first = word.split("/")[0]
    return first in TOP and ("/" in word or (REPO / first).is_file())


def check_path(word: str) -> None:
    word = word.rstrip(".,;:)")
    if is_repo_path(word):
        assert list(REPO.glob(word.rstrip("/"))), f"{word} does not exist"


def _defines(path: Path, name: str) -> bool:
    pattern = rf"^\s*((async\s+)?def|class)\s+{re.escape(name)}\b|^{re.escape(name)}\s*[:=]"
    return re.search(pattern, path.read_text(encoding="utf-8"), re.M) is not None


def check_span(span: str) -> None:
    symbol = re.match(r"^([\w/.-]+\.py)(: |::)(\w+)$", span)
    if symbol:
        path = REPO / symbol.group(1)
        assert path.is_file(), f"{symbol.group(1)} does not exist"
        assert _defines(path, symbol.group(3)), f"{symbol.group(1)} defines no {symbol.group(3)}"
        return
    for word in span.split():
        check_path(word)


def _failures(check, items) -> list[str]:
    failed = []
    for where, item in items:
        try:
            check(item)
        except (AssertionError, ValueError, SyntaxError) as e:
            failed.append(f"{where}: {str(e).splitlines()[0]}")
    return failed


def check_route_span(span: str, routes: set[str]) -> None:
    if re.match(r"^/(v1/[\w/.-]+|health|metrics|openapi\.json)$", span):
        assert span in routes, f"{span} is not a route of the app"


@pytest.mark.parametrize("doc", [d.relative_to(REPO).as_posix() for d in DOCS])
def test_paths_symbols_routes_and_links(doc, routes):
    """Every repository path, `file.py: name` and `/v1/...` route in the doc's code spans, and every relative
    link, exists."""
    mine = lambda items: [(w, x) for w, x in items if w.startswith(doc + ":")]  # noqa: E731
    failed = _failures(check_span, mine(SPANS)) + _failures(check_path_exists, mine(LINKS))
    failed += _failures(lambda span: check_route_span(span, routes), mine(SPANS))
    assert not failed, "\n".join(failed)


def check_path_exists(target: Path) -> None:
    assert target.exists(), f"the link target {target.relative_to(REPO)} does not exist"


# a doc whose option spans (`--max-n`, `--max-concurrent/--max-queue`) all name flags of one program
FLAG_DOCS = {"docs/service.md": "cat-serve"}


@pytest.mark.parametrize("doc,program", FLAG_DOCS.items())
def test_flags_named_in_prose_exist(doc, program, helps):
    text = helps.get(("script", program))
    spans = [span for where, span in SPANS
             if where.startswith(doc + ":") and span.split()[0] not in COMMAND_WORDS | EXTERNAL]
    flags = {flag for span in spans for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", span)}
    assert len(flags) >= 10, flags  # the service table alone names more
    missing = sorted(f for f in flags if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text))
    assert not missing, f"{doc} names flags that {program} --help does not list: {missing}"


def test_code_blocks_compile_and_parse():
    failed = _failures(lambda code: compile(code, "<doc>", "exec"), PYTHON_BLOCKS)
    failed += _failures(json.loads, JSON_BLOCKS)
    assert PYTHON_BLOCKS and not failed, "\n".join(failed)


def test_every_bash_line_is_checked_or_named_external():
    assert not UNKNOWN, "teach tests/test_docs.py to check these, or name them in EXTERNAL:\n" + "\n".join(UNKNOWN)


def test_the_rules_see_what_they_should():
    """The extraction itself, on a made-up doc line (expected words written out by hand)."""
    line = ("CAT_SERVE_DATA=x make serve MODEL=$(python -m lab.recipe path) & "
            "cat-eval run --out <dir> && curl -d '{\"a\": 1}' URL  # note")
    assert split_commands(line) == [("python", "-m", "lab.recipe", "path"), ("make", "serve", "MODEL=" + DUMMY),
                                    ("cat-eval", "run", "--out", DUMMY), ("curl", "-d", '{"a": 1}', "URL")]
    assert list(_bash_lines(["a \\", "  b", "", "c"])) == [(0, "a    b"), (3, "c")]
    assert not is_command(("python", "-m")) and not is_command(("bash",)) and is_command(("cat-eval",))
    assert is_repo_path("cat_serve/search/") and is_repo_path("Makefile") and is_repo_path("results/lab/*.md")
    assert not any(map(is_repo_path, ["runs/capo", "~/.cache/cat-serve", "eval", "$WORK/build.log", "a/b"]))
    # the docs hold commands of each kind, so an extraction that silently finds nothing fails here
    kinds = {c.words[0] for c in COMMANDS}
    assert {"make", "cat-eval", "cat-client", "curl", "bash", "python"} <= kinds, kinds
    assert len(COMMANDS) >= 30 and PYTHON_BLOCKS and SPANS and LINKS
    assert {"cat-serve", "cat-eval", "cat-train", "cat-client"} <= SCRIPTS.keys()
    assert SCRIPTS["cat-eval"] == "eval.cli:main"
    assert cli_of(("python", "-m", "cat_serve", "--help")) == (("script", "cat-serve"), ("--help",))
    assert cli_of(("python", "-m", "cat_serve.models")) is None


def test_the_checks_catch_drift(helps, routes):
    """Each check fails on a command, path or name that the code does not have."""
    cat_eval = ("script", "cat-eval")
    drifted = [
        lambda: check_make(("make", "no-such-target")),
        lambda: check_cli(cat_eval, ("bench", "--no-such-option", "1"), helps),
        lambda: check_cli(cat_eval, ("no-such-subcommand",), helps),
        lambda: check_cli(cat_eval, ("bench", "--search-params", "{not json"), helps),
        lambda: check_cli(("file", "scripts/no_such_script.py"), (), helps),
        lambda: check_cli(("module", "no_such_module"), (), helps),
        lambda: check_bash(("bash", "scripts/no_such_script.sh")),
        lambda: check_curl(("curl", "http://127.0.0.1:8000/v1/no-such-route"), routes),
        lambda: check_curl(("curl", "http://127.0.0.1:8000/health", "-d", "{not json"), routes),
        lambda: check_path("cat_serve/no_such_module.py"),
        lambda: check_span("cat_serve/api/serving.py: no_such_function"),
        lambda: check_route_span("/v1/no-such-route", routes),
    ]
    for i, check in enumerate(drifted):
        with pytest.raises((AssertionError, ValueError)):
            check()
            pytest.fail(f"drifted case {i} passed")


@pytest.mark.vllm
@pytest.mark.slow
def test_readme_sdk_example_runs(vllm_server):
    """The README's `openai` SDK example, as written, against a real server (only its URL changes)."""
    (code,) = [code for where, code in PYTHON_BLOCKS if where.startswith("README.md") and "OpenAI(" in code]
    assert 'base_url="http://127.0.0.1:8000/v1"' in code
    code = code.replace("http://127.0.0.1:8000/v1", vllm_server.base_url)
    scope: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), scope)
    r = scope["r"]
    assert r.model_extra["search"]["strategy"] == "cat"
    assert 0.0 <= r.choices[0].model_extra["confidence"] <= 1.0
    assert len(out.getvalue().splitlines()) >= 2
