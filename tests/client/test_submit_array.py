"""`nai submit --array` and `--after`/`--after-ok`: the indices a spec names (and the
ones it refuses before anything is sent), the jobs an array queues on the in-process
server (env, names, one upload), the report when the server refuses one midway, and
dependencies reaching the spec merged with nai.yaml's."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from nai_server.app.use_cases import UseCases
from nai_tui.cli.array_submit import MAX_ARRAY, array_indices, compact, element_name

Nai = Callable[..., tuple[int, str, str]]


@pytest.mark.parametrize(("text", "indices"), [
    ("0-4", [0, 1, 2, 3, 4]),
    ("0-9:3", [0, 3, 6, 9]),
    ("0,3,7", [0, 3, 7]),
    ("0-2,20", [0, 1, 2, 20]),
    ("7", [7]),
    ("5-6,0-1,6", [0, 1, 5, 6]),  # sorted, each once
    ("0-99999:10", list(range(0, 100000, 10))),  # 10,000 exactly
])
def test_array_specs(text: str, indices: list[int]) -> None:
    assert array_indices(text) == indices


@pytest.mark.parametrize(("text", "words"), [
    ("", "is not an index"),
    ("a-b", "is not an index"),
    ("-3", "is not an index"),
    ("0-", "is not an index"),
    ("9-0", "write the lower index first: 0-9"),
    ("0-9:0", "step 0"),
    ("0-10000", "names 10,001 jobs; one --array submits at most 10,000"),
    ("0-9999999999", "indices go up to"),
    ("0-999999999", "names 1,000,000,000 jobs"),  # counted, not listed
])
def test_bad_array_specs_are_refused_in_words(text: str, words: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        array_indices(text)
    assert MAX_ARRAY == 10_000


def test_names_and_compact_runs() -> None:
    assert element_name("sweep", 7) == "sweep-7"
    assert element_name("x" * 64, 1234) == "x" * 59 + "-1234"  # within 64
    assert compact([0, 1, 2, 5, 7, 8]) == "0-2,5,7-8"


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "sweep"
    folder.mkdir()
    (folder / "train.py").write_text("print('hi')\n")
    (folder / "nai.yaml").write_text("command: python train.py\ngpus: 0\nenv: {LR: '0.1'}\n")
    return folder


def test_an_array_queues_one_job_per_index(nai: Nai, service: UseCases, job_dir: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pushes: list[int] = []
    from nai_tui.sync import push as sync

    real_push = sync.push
    monkeypatch.setattr(sync, "push", lambda *a, **k: pushes.append(1) or real_push(*a, **k))
    status, out, err = nai("submit", str(job_dir), "--array", "0-2,7", "--name", "lr")
    assert status == 0, err
    ids = [int(line) for line in out.splitlines()]
    assert len(ids) == 4 and pushes == [1]  # the code went up once
    jobs = [service.runtime.jobs.get(i) for i in ids]
    assert [j.spec.name for j in jobs] == ["lr-0", "lr-1", "lr-2", "lr-7"]
    assert [j.spec.env for j in jobs] == [{"LR": "0.1", "NAI_ARRAY_INDEX": str(i)}
                                          for i in (0, 1, 2, 7)]
    assert len({j.code_tree for j in jobs}) == 1
    assert f"jobs {ids[0]}-{ids[-1]}" in err


def test_an_array_without_a_name_is_named_after_its_folder_and_lists_json(
        nai: Nai, service: UseCases, job_dir: Path) -> None:
    status, out, err = nai("submit", str(job_dir), "--array", "3,5", "--json")
    assert status == 0, err
    listed = json.loads(out)
    assert [j["name"] for j in listed] == ["sweep-3", "sweep-5"]
    assert [j["spec"]["env"]["NAI_ARRAY_INDEX"] for j in listed] == ["3", "5"]


def test_a_refusal_midway_says_what_is_queued_and_what_is_not(
        nai: Nai, service: UseCases, job_dir: Path) -> None:
    service.jobs.config.jobs.max_active_per_user = 3
    status, out, err = nai("submit", str(job_dir), "--array", "0-5")
    assert status == 4, err  # the server's 403: not allowed
    ids = [int(line) for line in out.splitlines()]
    assert len(ids) == 3 and len(service.runtime.jobs.hot()) == 3
    assert "index 3: you have 3 jobs queued or running" in err
    assert f"submitted 3 of 6: indices 0-2 as jobs {ids[0]}-{ids[-1]}" in err
    assert "not submitted: indices 3-5" in err and "--array 3-5" in err


def test_follow_and_bad_specs_are_refused_before_anything_is_sent(
        nai: Nai, service: UseCases, job_dir: Path) -> None:
    status, _, err = nai("submit", str(job_dir), "--array", "0-3", "--follow")
    assert status == 2 and "--follow follows one job and --array submits many" in err
    status, _, err = nai("submit", str(job_dir), "--array", "0-10000")
    assert status == 2 and "at most 10,000" in err
    assert service.runtime.jobs.hot() == []


def test_a_dry_run_checks_the_first_index(nai: Nai, service: UseCases, job_dir: Path) -> None:
    status, out, err = nai("submit", str(job_dir), "--array", "4-9", "--dry-run")
    assert status == 0, err
    assert "would submit sweep-4" in out and "NAI_ARRAY_INDEX" in out
    assert "dry run of the first of 6 jobs (NAI_ARRAY_INDEX=4)" in err and "sweep-9" in err
    assert service.runtime.jobs.hot() == []


def test_after_flags_reach_the_spec_merged_with_nai_yaml(
        nai: Nai, service: UseCases, job_dir: Path) -> None:
    ids = []
    for _ in range(4):
        status, out, err = nai("submit", str(job_dir))
        assert status == 0, err
        ids.append(int(out))
    (job_dir / "nai.yaml").write_text(f"command: python train.py\ngpus: 0\n"
                                      f"after: [{ids[0]}]\n")
    status, out, err = nai("submit", str(job_dir), "--after", f"{ids[1]},{ids[2]}",
                           "--after-ok", str(ids[3]), "--array", "0-1")
    assert status == 0, err
    for job_id in map(int, out.splitlines()):
        spec = service.runtime.jobs.get(job_id).spec
        assert spec.after == (ids[0], ids[1], ids[2]) and spec.after_ok == (ids[3],)


def test_a_bad_after_id_is_refused_in_words(nai: Nai, job_dir: Path) -> None:
    status, _, err = nai("submit", str(job_dir), "--after", "12,x")
    assert status == 2 and "give job ids, comma-separated, e.g. 12 or 12,13" in err
