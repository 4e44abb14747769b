"""Two models side by side: POST /chat/side-by-side streams both answers and the judge's verdict; GET /chat/config
says what the comparison page offers; GET /reports/latest serves the latest experiment report."""
from __future__ import annotations

import time
from typing import get_args

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from gateway.access import CallerDep, is_unethical_constitution
from gateway.chat_models import call_chat, default_pair, served_models
from gateway.dependencies import ConstitutionsDep, JobsDep, LayoutDep, RolesDep, SettingsDep
from gateway.errors import APIError
from gateway.side_by_side import SIDES, SideStream, compare_request, merged_events, verdict
from gateway.validation import resolve_constitution
from ucai.schemas import ChatConfig, ErrorEnvelope, JudgeMethod, SideBySideJudge, SideBySideRequest

router = APIRouter(tags=["chat"])
METHODS = list(get_args(JudgeMethod))
CHARS_PER_TOKEN = 4  # rate-limit estimate of the prompt's tokens, before the engine counts them


@router.get("/chat/config", response_model=ChatConfig, responses={503: {"model": ErrorEnvelope}})
async def chat_config(roles: RolesDep, constitutions: ConstitutionsDep, layout: LayoutDep, settings: SettingsDep,
                      caller: CallerDep) -> ChatConfig:
    research = "research" in caller.scopes  # what this key may pick (the rest would answer 403)
    models = [m for m in await served_models(roles.chat) if caller.can_use_model(m)]
    left, right = default_pair(models)
    usable = [name for name, c in sorted(constitutions.items()) if research or not is_unethical_constitution(c)]
    return ChatConfig(models=models, defaults={"left": left, "right": right}, constitutions=usable,
                      judge=SideBySideJudge(constitution="ethical" if "ethical" in usable else usable[0],
                                            method=settings.judge.method),
                      methods=METHODS, report="/reports/latest" if layout.latest_report() else None)


@router.post("/chat/side-by-side", responses={
    200: {"content": {"text/event-stream": {}}, "description": "Events left/right (deltas, then each side's "
          "final event), error, verdict, done."}, **{c: {"model": ErrorEnvelope} for c in (400, 404, 422, 503)}})
async def side_by_side(body: SideBySideRequest, roles: RolesDep, jobs: JobsDep, constitutions: ConstitutionsDep,
                       caller: CallerDep) -> StreamingResponse:
    prompt = body.messages[-1].content
    for model in body.models:
        await caller.use_model(model, prompt=prompt, route="/chat/side-by-side")
    if body.judge is not None:
        constitution = resolve_constitution(constitutions, body.judge.constitution, None)
        await caller.use_constitution(constitution, prompt=prompt, route="/chat/side-by-side")
    await caller.charge_tokens(2 * body.max_tokens + sum(len(m.content) for m in body.messages) // CHARS_PER_TOKEN)

    payload = {"messages": [m.model_dump() for m in body.messages], "max_tokens": body.max_tokens,
               "temperature": body.temperature, "stream": True, "stream_options": {"include_usage": True},
               **({"seed": body.seed} if body.seed is not None else {})}
    streams: list[SideStream] = []
    try:  # both open before the answer starts, so a bad model name is a plain 404, not an event
        for side, model in zip(SIDES, body.models, strict=True):
            started = time.monotonic()
            streams.append(SideStream(side, model, await call_chat(roles.chat, model, payload, stream=True), started))
    except BaseException:
        for stream in streams:
            await stream.upstream.aclose()
        raise

    async def judge(answers: list[str]):
        # Scope checked and audited above; the job is the gateway's own (its verdict is in this stream).
        result = await jobs.run("compare", compare_request(body, answers), None)
        if isinstance(result, JSONResponse):  # still queued or running after the wait
            raise APIError(503, "the judge did not answer in time", code="judge_timeout")
        return verdict(body, result)

    return StreamingResponse(merged_events(streams, body, judge), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


@router.get("/reports/latest", response_class=FileResponse, responses={404: {"model": ErrorEnvelope}})
async def latest_report(layout: LayoutDep, caller: CallerDep) -> FileResponse:
    report = layout.latest_report()
    if report is None:
        raise APIError(404, "no experiment report yet (`ucai experiment run`)", code="report_not_found")
    return FileResponse(report, media_type="text/html")
