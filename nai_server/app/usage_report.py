"""`GET /v1/usage`: each user's and group's GPU use, decayed usage and fair-share
standing, and use against quota, from the same accounting the scheduler plans with."""

from __future__ import annotations

from collections import Counter

from nai_server.core.fairshare import ratios
from nai_server.core.sched_types import HOUR
from nai_server.host.runtime import JobRuntime
from nai_server.protocol.usage import UsageReport, UsageRow


def usage_report(runtime: JobRuntime, now: float) -> UsageReport:
    """Everyone with usage, GPUs in use or a quota. Made from what the tick plans with
    (`JobRuntime.plan_inputs`): the usage book charged up to `now`, as the next tick
    would anyway, and the GPUs held by jobs and service replicas alike, on this host
    or (launcher: slurm) on Slurm's nodes."""
    with runtime.lock:
        _, cluster, accounting = runtime.plan_inputs(now, runtime.jobs.hot())
        users = runtime.usage.store.list_users()
        groups = runtime.usage.store.list_groups()
    in_use: Counter[str] = Counter()
    for held in cluster.running:  # on Slurm, GPUs counted but not placed by nai
        in_use[f"user:{held.user}"] += held.gpu_count
        if held.group is not None:
            in_use[f"group:{held.group}"] += held.gpu_count
    quotas = {f"{kind}:{doc['name']}": doc.get("quota") or {}
              for kind, docs in (("user", users), ("group", groups)) for doc in docs}
    rows = []
    for kind in ("user", "group"):
        active = [key.split(":", 1)[1] for key, n in in_use.items()
                  if n and key.startswith(f"{kind}:")]
        standing = ratios(accounting, kind, active)
        total = sum(v for k, v in accounting.usage.items() if k.startswith(f"{kind}:"))
        keys = set(standing) | {k for k, q in quotas.items() if k.startswith(f"{kind}:")
                                and (q.get("max_gpus") is not None
                                     or q.get("gpu_hours") is not None)}
        for key in sorted(keys):
            used = accounting.usage.get(key, 0.0)
            ratio = standing.get(key, 0.0)
            quota = quotas.get(key, {})
            has_hours = quota.get("gpu_hours") is not None
            rows.append(UsageRow(
                kind=kind, name=key.split(":", 1)[1], gpus_in_use=in_use.get(key, 0),
                usage_gpu_hours=used / HOUR, share=used / total if total else 0.0,
                standing=ratio, factor=2.0 ** -ratio, max_gpus=quota.get("max_gpus"),
                gpu_hours=quota.get("gpu_hours"),
                used_gpu_hours=accounting.used_hours.get(key, 0.0) if has_hours else None,
                period_days=int(quota.get("period_days") or 30) if has_hours else None))
    return UsageReport(half_life_hours=runtime.tuning.half_life / HOUR, rows=rows)
