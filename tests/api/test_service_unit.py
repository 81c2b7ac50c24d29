"""Service layer pieces without a server: request caps, admission queue, counting engine, Dockerfile."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path

import pytest

from cat_serve.config import ServerConfig
from cat_serve.engine.counting import CountingEngine
from cat_serve.search import registry
from cat_serve.search.limits import LimitError, Limits, check_plain, check_search, search_paths
from cat_serve.search.types import GenParams
from tests.fakes import FakeGenerator, cont

REPO = Path(__file__).resolve().parents[2]
SMALL = Limits(max_n=4, max_branches=3, max_steps=5, max_tokens_paths=400)


def parse(strategy, raw):
    return registry.parse_params(strategy, raw, {})


def test_search_paths_by_strategy():
    assert search_paths(parse("self_consistency", {"n": 3})) == 3
    assert search_paths(parse("cat", {"branches": 3, "mode": "faithful"})) == 9  # 3 active x 3 children
    assert search_paths(parse("cat", {"branches": 3, "beam": 2, "mode": "adaptive"})) == 6  # beam x branches
    assert search_paths(parse("cat", {"branches": 3, "mode": "stream"})) == 3


@pytest.mark.parametrize("strategy,raw,limit,field", [
    ("self_consistency", {"n": 5, "max_tokens": 10}, "max_n", "n"),
    ("cat", {"branches": 4, "max_steps": 5, "max_tokens": 10}, "max_branches", "branches"),
    ("cat", {"branches": 2, "beam": 4, "max_steps": 5, "max_tokens": 10}, "max_branches", "beam"),
    ("cat", {"branches": 2, "max_steps": 6, "max_tokens": 10}, "max_steps", "max_steps"),
    ("self_consistency", {"n": 4, "max_tokens": 101}, "max_tokens_paths", "max_tokens"),  # 404 > 400
    ("cat", {"branches": 3, "max_steps": 5, "mode": "faithful", "max_tokens": 45}, "max_tokens_paths", "max_tokens"),  # 405
])
def test_search_over_a_limit_names_it(strategy, raw, limit, field):
    with pytest.raises(LimitError) as e:
        check_search(parse(strategy, raw), SMALL)
    assert e.value.limit == limit and e.value.field == field
    assert f"{limit}=" in str(e.value) and "--" + limit.replace("_", "-") in str(e.value)


def test_search_at_the_limits_passes():
    check_search(parse("self_consistency", {"n": 4, "max_tokens": 100}), SMALL)  # 400 == 400
    check_search(parse("cat", {"branches": 3, "max_steps": 5, "mode": "faithful", "max_tokens": 44}), SMALL)  # 396


def test_plain_limits():
    check_plain(4, 1, 100, SMALL)
    check_plain(2, 2, 100, SMALL)  # 2 prompts x n 2 = 4 paths x 100
    with pytest.raises(LimitError, match="max_n=4"):
        check_plain(5, 1, 1, SMALL)
    with pytest.raises(LimitError, match=r"max_tokens x paths \(101 x 4\)"):
        check_plain(2, 2, 101, SMALL)


async def test_admission_queue_bound():
    from cat_serve.api.service import Admission

    adm = Admission(running=1, queue=1)
    await adm.acquire()
    assert adm.running == 1 and not adm.full()
    waiter = asyncio.create_task(adm.acquire())
    await asyncio.sleep(0)
    assert adm.waiting == 1 and adm.full()  # the next one is refused
    adm.release()
    await waiter
    assert adm.waiting == 0 and adm.running == 1 and not adm.full()
    adm.release()
    assert adm.running == 0


async def test_counting_engine_reports_tokens_of_finished_calls():
    gen = FakeGenerator()
    prompt = gen.encode("Q")
    gen.script(prompt, cont("a", "b", "c"), cont("d"))
    seen = []
    eng = CountingEngine(gen, seen.append)
    rows = await eng.extend([prompt], 2, GenParams(max_tokens=8))
    assert [s.num_tokens for s in rows[0]] == [3, 1] and seen == [4]
    assert eng.decode(gen.encode("x", "y")) == "xy"  # everything else is the engine's own


# ---------------------------------------------------------------------- the image
def dockerfile() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_user_entrypoint_port_healthcheck_match_the_cli():
    ins = dockerfile()
    users = [v for k, v in ins if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must run as a non-root user"
    runs = " ".join(v for k, v in ins if k == "RUN")
    assert f"useradd" in runs and users[-1] in runs
    entry = json.loads([v for k, v in ins if k == "ENTRYPOINT"][-1])
    assert entry[:3] == ["python", "-m", "cat_serve"]
    config = ServerConfig.from_args(entry[3:])  # the entrypoint's own arguments parse with the real CLI
    assert config.host == "0.0.0.0"
    exposed = [int(v) for k, v in ins if k == "EXPOSE"]
    assert exposed == [config.port]
    health = [v for k, v in ins if k == "HEALTHCHECK"][-1]
    assert f"127.0.0.1:{config.port}/health" in health
    # appended `docker run` arguments override the entrypoint's (argparse: last one wins)
    assert ServerConfig.from_args(entry[3:] + ["--port", "9000"]).port == 9000
    # the build arguments scripts/build_image.sh hands in are declared
    args = {v.split("=")[0] for k, v in ins if k == "ARG"}
    assert {"BASE_IMAGE", "VLLM_DIST", "PIP_FIND_LINKS", "PIP_EXTRA_INDEX_URL", "PIP_CERT"} <= args


def test_build_script_runs_the_image_as_its_user_on_loopback():
    script = (REPO / "scripts" / "build_image.sh").read_text()
    for needle in ("debootstrap --variant=minbase", "podman import", "podman build --isolation=chroot",
                   "podman export", "chroot --userspec=", "--host 127.0.0.1", "mount -t proc"):
        assert needle in script, needle
    assert shlex.split("bash -n") and (REPO / "scripts" / "build_image.sh").stat().st_mode & 0o111


def test_vllm_options_reach_the_engine_only_when_set():
    """`engine_options` is what build_engine hands VLLMEngine.create: vLLM's defaults are not repeated."""
    assert ServerConfig.from_args([]).engine_options() == {}
    assert ServerConfig.from_args(["--enforce-eager", "-tp", "2"]).engine_options() == {
        "enforce_eager": True, "tensor_parallel_size": 2}
