"""The environment a job process starts with."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nai_server.core.spec_fields import SPEC_NAI_ENV


def build_job_env(
    *,
    job_id: int,
    job_dir: str,
    gpu_indices: Sequence[int],
    user_env: Mapping[str, str],
    base_env: Mapping[str, str],
    dataset_dir: str | None = None,
    model_dir: str | None = None,
) -> dict[str, str]:
    """Merge the launcher's base env, the job's own env and the variables nai sets.

    Later layers win: base_env < user_env < nai's NAI_* and CUDA_* variables, so a job can
    neither escape its GPUs nor point its outputs somewhere the daemon will not collect.
    """
    # Drop inherited NAI_* (e.g. a daemon started from inside a job) so only this job's
    # remain: of the job's own env, the few a spec may set (`nai submit --array`'s index).
    env = {key: value for key, value in base_env.items() if not key.startswith("NAI_")}
    env.update((key, value) for key, value in user_env.items()
               if not key.startswith("NAI_") or key in SPEC_NAI_ENV)
    root = job_dir.rstrip("/") or "/"
    env.update(
        NAI_JOB_ID=str(job_id),
        NAI_JOB_DIR=root,
        NAI_OUTPUT_DIR=f"{root.rstrip('/')}/output",
        NAI_METRICS_FILE=f"{root.rstrip('/')}/metrics.jsonl",
        # An empty list hides every GPU from a CPU job; unset would expose them all.
        CUDA_VISIBLE_DEVICES=",".join(str(index) for index in gpu_indices),
        # NVML and nai number GPUs in PCI bus order; CUDA's default is "fastest first".
        CUDA_DEVICE_ORDER="PCI_BUS_ID",
    )
    if dataset_dir is not None:
        env["NAI_DATASET_DIR"] = dataset_dir
    if model_dir is not None:
        env["NAI_MODEL_DIR"] = model_dir
    return env
