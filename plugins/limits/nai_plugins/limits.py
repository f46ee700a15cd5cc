"""Submit rules for common site policies (Slurm's job_submit/lua, as configuration).

`default_time_limit`: a job that names no time limit gets one.
    plugins: {default_time_limit: {options: {time_limit: 4h, groups: {vision: 12h}}}}
`max_gpus_per_user`: no job of a user asks for more GPUs than allowed (how many they
hold at once is the quotas' business: `nai-admin quota set --gpus`).
    plugins: {max_gpus_per_user: {options: {max_gpus: 2, groups: {vision: 4}}}}
`max_time_limit`: no job asks for a longer time limit than allowed (one that names
none is refused too, unless `default_time_limit`, which runs before it, gave one).
    plugins: {max_time_limit: {options: {time_limit: 24h, groups: {vision: 72h}}}}
A per-group value applies to jobs submitted for that group (`group:` in nai.yaml).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nai_server.core.units import format_duration, parse_duration
from nai_server.plugins.contracts import Refuse, Submission, hookimpl


def _for_group(options: Mapping[str, Any], key: str, group: str | None) -> Any:
    groups = options.get("groups") or {}
    if group is not None and group in groups:
        return groups[group]
    return options.get(key)


class DefaultTimeLimit:
    """Fill in `time_limit` when the spec has none."""

    @hookimpl
    def nai_submit_rule(self, submission: Submission,
                        options: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if submission.spec.get("time_limit") is not None:
            return None
        limit = _for_group(options, "time_limit", submission.spec.get("group"))
        if limit is None:
            return None
        return {"time_limit": parse_duration(limit) if isinstance(limit, str) else int(limit)}


class MaxGpusPerUser:
    """Refuse a job asking for more GPUs than `max_gpus`; admins' jobs pass unless
    `exempt_admins` is false."""

    @hookimpl
    def nai_submit_rule(self, submission: Submission,
                        options: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if submission.admin and options.get("exempt_admins", True):
            return None
        group = submission.spec.get("group")
        most = _for_group(options, "max_gpus", group)
        asked = int(submission.spec.get("gpus") or 0)
        if most is not None and asked > int(most):
            where = f"for group {group}" if group in (options.get("groups") or {}) else \
                "per job on this server"
            raise Refuse(f"at most {int(most)} GPU(s) {where}; you asked for {asked}. "
                         f"Ask for fewer (gpus: {int(most)})")
        return None


class MaxTimeLimit:
    """Refuse a job whose time limit is longer than `time_limit` (or has none); admins'
    jobs pass unless `exempt_admins` is false."""

    @hookimpl
    def nai_submit_rule(self, submission: Submission,
                        options: Mapping[str, Any]) -> Mapping[str, Any] | None:
        if submission.admin and options.get("exempt_admins", True):
            return None
        group = submission.spec.get("group")
        most = _for_group(options, "time_limit", group)
        if most is None:
            return None
        most = parse_duration(most) if isinstance(most, str) else int(most)
        asked = submission.spec.get("time_limit")
        where = f"for group {group}" if group in (options.get("groups") or {}) else \
            "on this server"
        if asked is None:
            raise Refuse(f"jobs need a time limit of at most {format_duration(most)} {where}; "
                         f"add one (time_limit: {format_duration(most)})")
        if int(asked) > most:
            raise Refuse(f"the longest time limit {where} is {format_duration(most)}; you "
                         f"asked for {format_duration(int(asked))}. Ask for less")
        return None


default_time_limit = DefaultTimeLimit()
max_time_limit = MaxTimeLimit()
max_gpus_per_user = MaxGpusPerUser()
