from __future__ import annotations

from nai_server.core.env import build_job_env

BASE = {"PATH": "/usr/bin:/bin", "HOME": "/home/ada", "USER": "ada", "LANG": "C.UTF-8"}


def make(**kwargs: object) -> dict[str, str]:
    args: dict[str, object] = {
        "job_id": 42,
        "job_dir": "/var/lib/nai/jobs/42",
        "gpu_indices": [1, 3],
        "user_env": {"SEED": "1"},
        "base_env": BASE,
    }
    args.update(kwargs)
    return build_job_env(**args)  # type: ignore[arg-type]


def test_job_gets_base_user_and_nai_variables() -> None:
    env = make()
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["HOME"] == "/home/ada"
    assert env["SEED"] == "1"
    assert env["NAI_JOB_ID"] == "42"
    assert env["NAI_JOB_DIR"] == "/var/lib/nai/jobs/42"
    assert env["NAI_OUTPUT_DIR"] == "/var/lib/nai/jobs/42/output"
    assert env["NAI_METRICS_FILE"] == "/var/lib/nai/jobs/42/metrics.jsonl"
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"


def test_device_order_is_pci_bus_id_spelled_in_full() -> None:
    # task-spooler shipped "PCI_BUS_I"; CUDA silently ignores a misspelt value.
    assert list(make()["CUDA_DEVICE_ORDER"]) == list("PCI_BUS_ID")


def test_cpu_job_sees_no_gpu() -> None:
    env = make(gpu_indices=[])
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_nai_and_cuda_variables_win_over_user_and_base_env() -> None:
    env = make(
        user_env={"CUDA_VISIBLE_DEVICES": "0,1,2,3", "NAI_JOB_ID": "1", "NAI_OUTPUT_DIR": "/tmp"},
        base_env={**BASE, "CUDA_DEVICE_ORDER": "FASTEST_FIRST", "NAI_JOB_DIR": "/elsewhere"},
    )
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["NAI_JOB_ID"] == "42"
    assert env["NAI_OUTPUT_DIR"] == "/var/lib/nai/jobs/42/output"
    assert env["NAI_JOB_DIR"] == "/var/lib/nai/jobs/42"


def test_user_env_overrides_base_env() -> None:
    assert make(user_env={"LANG": "de_DE.UTF-8"})["LANG"] == "de_DE.UTF-8"


def test_dataset_and_model_dirs_only_when_given() -> None:
    env = make()
    assert "NAI_DATASET_DIR" not in env
    assert "NAI_MODEL_DIR" not in env
    env = make(dataset_dir="/data/cifar10/2", model_dir="/models/resnet18/3")
    assert env["NAI_DATASET_DIR"] == "/data/cifar10/2"
    assert env["NAI_MODEL_DIR"] == "/models/resnet18/3"


def test_inherited_nai_variables_do_not_leak_into_the_job() -> None:
    env = make(base_env={**BASE, "NAI_DATASET_DIR": "/from/the/daemon"})
    assert "NAI_DATASET_DIR" not in env


def test_inputs_are_not_modified() -> None:
    user = {"SEED": "1"}
    base = dict(BASE)
    make(user_env=user, base_env=base)
    assert user == {"SEED": "1"}
    assert base == BASE


def test_the_array_index_comes_from_the_job_alone() -> None:
    # `nai submit --array` sets it in the spec's env; a daemon started from inside an
    # array job must not hand its own index to every job it runs.
    env = make(user_env={"NAI_ARRAY_INDEX": "7", "NAI_OTHER": "x"},
               base_env={**BASE, "NAI_ARRAY_INDEX": "3"})
    assert env["NAI_ARRAY_INDEX"] == "7" and "NAI_OTHER" not in env
    assert "NAI_ARRAY_INDEX" not in make(base_env={**BASE, "NAI_ARRAY_INDEX": "3"})
