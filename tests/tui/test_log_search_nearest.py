"""The log view asks the server for the nearest match only (limit 1): the server then
stops reading at the first match instead of scanning up to 64 MB for a hundred."""

from __future__ import annotations

from tui_kit import SIZE, settle

from nai_server.protocol import LogMatches
from nai_tui.testing import FakeServerClient
from nai_tui.tui.widgets.job_table import JobTable
from nai_tui.tui.widgets.log_view import LogView


class Recording(FakeServerClient):
    def __init__(self) -> None:
        super().__init__("lab")
        self.limits: list[int] = []

    def log_search(self, job_id: int, text: str, offset: int = 0, *, backward: bool = False,
                   limit: int = 100) -> LogMatches:
        self.limits.append(limit)
        return super().log_search(job_id, text, offset, backward=backward, limit=limit)


async def test_the_view_asks_for_one_match(make_app) -> None:
    fake = Recording()
    job = fake.add_job("logged", state="succeeded", started_at=1.0, ended_at=2.0,
                       exit_code=0)
    fake.append_log(job.id, "".join(f"line {i}\n" for i in range(500)))
    app = make_app(servers={"lab": fake})
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        app.screen.query_one(JobTable).select_job(job.id)
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("slash", *"line 7", "enter")
        await settle(pilot)
        assert app.screen.query_one(LogView).match_offset is not None
        assert fake.limits and set(fake.limits) == {1}
