"""A dataset processor's or an annotator's options, checked before it runs: a plugin that
declares the options it takes (`nai_plugin_options`) fails its job at once on any
other key, saying which, whence it came (the user's `-o` or the admin's
`plugins.NAME.options`), the closest option it takes, and all of them with their help;
a plugin without the hook gets every option as before. The first-party plugins declare
theirs, and their docstrings say the same options."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pluggy
import pytest

from nai_server.core.plugin_options import (
    OptionsError,
    UnknownOptions,
    check_options,
    declared_options,
)
from nai_server.core.processing import annotator_env, given_keys, processor_env
from nai_server.core.service_rules import NO_RESTART
from nai_server.plugins import annotator_replica
from nai_server.plugins.contracts import PROJECT, SPECS, Kind
from nai_server.testing.plugin_dist import write_dist

SPLIT = {"ratios": "weights of the parts (default 0.8,0.1,0.1)",
         "seed": "the shuffle's seed (default 0)"}
RUN = "nai dataset process DATASET --with split"


def refused(options: dict[str, str], given: list[str] | None,
            declared: dict[str, str] | None = None) -> UnknownOptions:
    with pytest.raises(UnknownOptions) as caught:
        check_options("split", SPLIT if declared is None else declared, options, given, RUN)
    return caught.value


def test_a_typo_given_with_o_names_the_key_the_closest_option_and_all_it_takes() -> None:
    error = refused({"ratio": "0.5", "seed": "1"}, given=["ratio", "seed"])
    assert [(u.key, u.origin, u.closest) for u in error.unknown] == [("ratio", "given",
                                                                       "ratios")]
    assert "\n" not in error.summary  # the log's last line, whole
    assert "'ratio' (given with -o; did you mean 'ratios'?)" in error.summary
    assert "it takes ratios, seed" in error.summary and RUN in error.summary
    assert "admin" not in error.summary  # the user's own mistake: theirs to fix
    assert error.table == ["split takes these options:",
                           "  ratios  weights of the parts (default 0.8,0.1,0.1)",
                           "  seed    the shuffle's seed (default 0)"]
    assert str(error).splitlines() == [error.summary, *error.table]


def test_a_bad_key_from_the_server_config_is_the_admins_to_fix() -> None:
    # seed came from -o; the admin's plugins.split.options holds `sed`.
    error = refused({"sed": "3", "seed": "1"}, given=["seed"])
    assert "'sed' (from the server config, plugins.split.options; did you mean 'seed'?)" \
        in error.summary
    assert "ask an admin to fix plugins.split.options" in error.summary
    assert "fix -o" not in error.summary
    # A key the user gave wins over the admin's: it is the user's value, and theirs.
    assert refused({"sed": "1"}, given=["sed"]).unknown[0].origin == "given"
    # Both at once: each named with its origin, both fixes said.
    both = refused({"sed": "3", "zzz": "1"}, given=["zzz"])
    assert [(u.key, u.origin, u.closest) for u in both.unknown] == [
        ("sed", "config", "seed"), ("zzz", "given", None)]
    assert "fix -o" in both.summary and "ask an admin" in both.summary
    assert "has no options 'sed'" in both.summary


def test_no_close_match_no_origin_known_and_a_plugin_that_takes_none() -> None:
    error = refused({"colour": "red"}, given=None)  # a job from an older daemon
    assert "'colour' (given with -o or from plugins.split.options)" in error.summary
    assert "did you mean" not in error.summary
    none = refused({"x": "1"}, given=["x"], declared={})
    assert none.table == ["split takes no options"] and "it takes none" in none.summary
    long = refused({"k" * 1000: "1"}, given=["k" * 1000])
    assert len(long.summary) < 400  # a 32 KiB key is not echoed whole


def test_a_plugin_without_the_hook_gets_every_option_and_a_declared_one_passes() -> None:
    check_options("who", None, {"anything": "1", "note": "x"}, ["anything"], RUN)
    check_options("split", SPLIT, {"seed": "1"}, ["seed"], RUN)
    check_options("split", SPLIT, {}, [], RUN)
    assert declared_options("split", None) is None
    assert declared_options("split", SPLIT) == SPLIT
    for broken in (["seed"], {"seed": 1}, {"": "help"}, "seed"):
        with pytest.raises(OptionsError, match=r"split.*nai_plugin_options"):
            declared_options("split", broken)


def test_the_job_and_the_session_are_told_which_keys_the_user_gave() -> None:
    env = processor_env("split", "1.0", {"seed": "3", "ratio": "1"}, {"ratio": "1"})
    assert given_keys(env, "PROCESSOR_GIVEN") == ["ratio"]
    env = annotator_env("labels", None, {"classes": "a"}, "/out", ["classes"])
    assert given_keys(env, "ANNOTATOR_GIVEN") == ["classes"]
    assert given_keys({}, "PROCESSOR_GIVEN") is None  # submitted before it was said
    assert given_keys({"PROCESSOR_GIVEN": "{"}, "PROCESSOR_GIVEN") is None


PLUGS = '''
from nai_server.plugins.contracts import hookimpl

class Strict:
    @hookimpl
    def nai_plugin_options(self):
        return {"seed": "the seed (default 0)", "ratios": "weights (default 1,1)"}

    @hookimpl
    def nai_process_dataset(self, source, target, options):
        (target / "ran").write_text(repr(sorted(options)))

    @hookimpl
    def nai_annotator_app(self, source, target, options):
        (target / "ran").write_text(repr(sorted(options)))
        return object()

class Loose:
    @hookimpl
    def nai_process_dataset(self, source, target, options):
        (target / "ran").write_text(repr(sorted(options)))

strict, loose = Strict(), Loose()
'''


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A distribution offering `strict` (it declares its options) and `loose` (it does
    not) as processors, and `strict` as an annotator, found as a job finds them."""
    root = write_dist(tmp_path / "site", "nai-t-opts", "1.0", {"t_opts": PLUGS}, {
        "nai.dataset_processors": {"strict": "t_opts:strict", "loose": "t_opts:loose"},
        "nai.annotators": {"strict": "t_opts:strict"}})
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    return root


def job(site: Path, tmp_path: Path, plugin: str, options: dict[str, str],
        given: list[str]) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The processing job as the daemon starts it: its own process and environment."""
    source = tmp_path / "src"
    source.mkdir(exist_ok=True)
    (source / "a.txt").write_text("a")
    target = Path(tempfile.mkdtemp(prefix=f"out-{plugin}-", dir=tmp_path))
    env = {**os.environ, **processor_env(plugin, "1.0", options, given),
           "NAI_DATASET_DIR": str(source), "NAI_OUTPUT_DIR": str(target),
           "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    done = subprocess.run([sys.executable, "-m", "nai_server.plugins.process_job"],
                          env=env, capture_output=True, text=True, timeout=60)
    return done, target


def test_a_processing_job_fails_on_a_typo_before_the_processor_runs(
        site: Path, tmp_path: Path) -> None:
    done, target = job(site, tmp_path, "strict", {"sed": "1", "ratios": "1,1"}, ["sed"])
    assert done.returncode == 1, done.stderr
    assert list(target.iterdir()) == []  # the processor never ran
    lines = done.stderr.rstrip().splitlines()
    assert lines[-1].startswith("nai: dataset processor failed: strict has no option "
                                "'sed' (given with -o; did you mean 'seed'?)"), lines
    assert "nai:   seed    the seed (default 0)" in lines  # what it takes, with help
    assert "Traceback" not in done.stderr  # the user's mistake, not the plugin's bug
    # Good options reach it; a processor without the hook gets any option, as before.
    done, target = job(site, tmp_path, "strict", {"seed": "1"}, ["seed"])
    assert done.returncode == 0, done.stderr
    assert (target / "ran").read_text() == "['seed']"
    done, target = job(site, tmp_path, "loose", {"sed": "1"}, ["sed"])
    assert done.returncode == 0, done.stderr
    assert (target / "ran").read_text() == "['sed']"


def test_an_annotate_session_fails_on_a_bad_key_of_the_admins_before_serving(
        site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bind(path: Path) -> None:  # serving would wait for a SIGTERM: fail instead
        raise AssertionError("the session served the annotator before its options passed")

    monkeypatch.setattr(annotator_replica, "bind", bind)
    source, target = tmp_path / "src", tmp_path / "labels"
    source.mkdir()
    target.mkdir()
    env = {**annotator_env("strict", "1.0", {"sed": "1", "ratios": "2"}, str(target),
                           ["ratios"]),
           "NAI_MODEL_DIR": str(source), "NAI_MODEL": "photos@3",
           "NAI_SERVE_SOCKET": str(tmp_path / "serve.sock")}
    with pytest.raises(UnknownOptions) as caught:
        annotator_replica.run(env)
    summary = caught.value.summary
    assert "'sed' (from the server config, plugins.strict.options" in summary
    assert "ask an admin" in summary
    assert list(target.iterdir()) == [] and not (tmp_path / "serve.sock").exists()

    # Its service is told not to start it again: the same options would fail the same.
    monkeypatch.setattr(annotator_replica.os, "environ", env)
    assert annotator_replica.main() == NO_RESTART == 78


FIRST_PARTY = ("split", "images", "dedupe", "labels")


@pytest.mark.parametrize("name", FIRST_PARTY)
def test_the_first_party_plugins_declare_the_options_they_read_and_document(
        name: str) -> None:
    module = importlib.import_module(f"nai_plugins.{name}")
    declared = declared_options(name, module.nai_plugin_options())
    assert declared, name
    read = set(re.findall(r'options(?:\.get\(|\[)"([a-z_]+)"', inspect.getsource(module)))
    assert read == set(declared), (name, read, sorted(declared))
    doc = module.__doc__ or ""
    options_section = doc[doc.index("Options ("):]
    for option in declared:  # each at the start of a line of the docstring's list
        assert re.search(rf"^    {option}\s", options_section, re.M), (name, option)
    assert all("default" in help_ or "required" in help_ for help_ in declared.values())
    # As the job calls it: through pluggy, with its kind's own contract.
    kind = Kind.ANNOTATOR if name == "labels" else Kind.DATASET_PROCESSOR
    manager = pluggy.PluginManager(PROJECT)
    manager.add_hookspecs(SPECS[kind])
    manager.register(module, name=name)
    assert manager.hook.nai_plugin_options() == declared
